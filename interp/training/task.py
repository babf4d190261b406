"""Task training with an answer-only loss, periodic evaluation, pauses and exact resume (the
recipe and its batches are `interp.training.recipe`). Over 400 lines: the loop, its pauses,
its resume and its evaluations share one Trainer's state.

    cfg = TrainConfig(task="arithmetic", steps=3000, model=ModelConfig(n_layers=2))
    meta = train(cfg, "runs/arith")                  # the best checkpoint's interp.json
    Trainer.resume("runs/arith").run()               # continue an interrupted run

`out` becomes a checkpoint directory holding the best model by exact match on held-out
examples; `out/resume/` holds the last weights, the optimiser state and the recipe
(`interp.models.checkpoint.save_resume_state`). Every batch is a function of (seed, step), so
a resumed run reaches the same weights, bit for bit on the CPU, as one that was never
interrupted. `device`/`dtype` choose where the steps run; with `dtype="bfloat16"` the forward
and backward passes run under autocast while the weights and the optimiser state stay float32.
The command line is `interp/train.py`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import torch

from interp.errors import InterpError
from interp.hooks import eval_mode
from interp.metrics import answer_loss, on_device
from interp.models import resolve_device, resolve_dtype
from interp.models.checkpoint import (
    RESUME,
    load_resume_weights,
    read_resume_state,
    resume_damaged,
    save_checkpoint,
    save_resume_state,
)
from interp.models.config import build_model, n_params
from interp.tasks import CharCodec, get_task
from interp.tokens import IGNORE, Batch, make_batch
from interp.training.recipe import Data, TrainConfig, fold_seed, lr_at, rank

def scheduled_sampling(model, arch: str, batch: Batch, share: float, gen: torch.Generator
                       ) -> Batch:
    """Replace a `share` of answer-token inputs by the model's own greedy predictions.

    One teacher-forced forward pass and the argmax of its logits (not a decoding: the greedy
    decoder is `interp.models.generate.greedy_decode`). `batch` is on the model's device;
    `gen` is a CPU generator, so the tokens replaced do not depend on the device.
    """
    if share <= 0:
        return batch
    with torch.no_grad():
        if arch == "decoder":
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            pred = logits.argmax(-1)  # pred[:, i] is the guess for token i+1
            # inputs that are answer tokens: positions whose label is not ignored
            answer = batch.labels != IGNORE
            answer[:, 0] = False
            guess = torch.zeros_like(batch.input_ids)
            guess[:, 1:] = pred[:, :-1]
            flip = answer & (torch.rand(answer.shape, generator=gen) < share).to(answer.device)
            ids = torch.where(flip, guess, batch.input_ids)
            return Batch(ids, batch.attention_mask, batch.labels)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       decoder_input_ids=batch.decoder_input_ids).logits
        pred = logits.argmax(-1)
        guess = batch.decoder_input_ids.clone()
        guess[:, 1:] = pred[:, :-1]
        valid = torch.zeros_like(guess, dtype=torch.bool)
        valid[:, 1:] = batch.labels[:, :-1] != IGNORE
        flip = valid & (torch.rand(valid.shape, generator=gen) < share).to(valid.device)
        dec = torch.where(flip, guess, batch.decoder_input_ids)
        return Batch(batch.input_ids, batch.attention_mask, batch.labels, dec)


class Trainer:
    """One run: the model, its optimiser, the data and the loop, saving into `out`.

    device : where the steps run ('cpu', 'cuda', ... as `interp.models.resolve_device`)
    dtype : None/'float32', or 'bfloat16': forward and backward under autocast, the weights,
        gradients and AdamW state stay float32 (the checkpoint too); evaluation is float32
    """

    def __init__(self, cfg: TrainConfig, out: Path, quiet: bool = False, log=None,
                 device="cpu", dtype=None):
        cfg.validate()
        self.device, self.dtype = resolve_device(device), resolve_dtype(dtype)
        if self.dtype == torch.float16:
            raise InterpError("train --dtype float16 is not supported: float16 gradients "
                              "underflow without loss scaling; use bfloat16 or float32")
        self.cfg, self.out, self.quiet = cfg, Path(out), quiet
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.task = get_task(cfg.task, cfg.preset)
        self.codec = CharCodec()
        self.model = build_model(cfg.model, seed=cfg.seed)
        if cfg.init_from and cfg.init_weights_sha256 is None:
            self._warm_start(cfg.init_from)
        self.model.to(self.device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr,
                                     weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
        self.data = Data(cfg, self.task)
        self.step = 0
        self.total: int | None = cfg.steps
        if cfg.epochs is not None:
            self.total = max(1, math.ceil(cfg.epochs * len(self.data.train) / cfg.batch_size))
        self.best: dict | None = None
        self.history: list[dict] = []
        self.plateau = {"scale": 1.0, "best_loss": None, "bad": 0}
        self.wall = 0.0
        self.cpu = 0.0

    def _warm_start(self, name_or_path: str) -> None:
        """Copy the weights of a checkpoint with the same architecture and size."""
        import hashlib

        from interp.models import load_checkpoint

        src = load_checkpoint(name_or_path)
        task = src.task              # first: a language model or HF directory has none
        if src.config.to_dict() != self.cfg.model.to_dict():
            raise InterpError(f"--init-from {name_or_path}: its model {src.config.to_dict()} "
                              f"differs from this run's {self.cfg.model.to_dict()}; give the "
                              "same architecture and size flags")
        if task.describe() != self.task.describe():
            raise InterpError(f"--init-from {name_or_path} was trained on "
                              f"{task.describe()}, not {self.task.describe()}")
        self.model.load_state_dict(src.model.state_dict())
        self.cfg.init_weights_sha256 = hashlib.sha256(
            (src.path / "model.safetensors").read_bytes()).hexdigest()
        self.cfg.init_from = str(name_or_path)

    def autocast(self):
        """bfloat16 compute for the training steps (a no-op in float32)."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _dtype_note(self) -> dict:
        """{"dtype": name} for a reduced-precision run; float32 runs record nothing."""
        return {} if self.dtype == torch.float32 else \
            {"dtype": str(self.dtype).removeprefix("torch.")}

    # -- persistence ----------------------------------------------------------------------
    def state(self) -> dict:
        return {"config": self.cfg.to_dict(), "step": self.step, "total": self.total,
                "best": self.best, "history": self.history, "plateau": self.plateau,
                "wall_seconds": self.wall, "cpu_seconds": self.cpu, **self._dtype_note()}

    def save_resume(self) -> None:
        save_resume_state(self.out, self.model, self.opt, self.state())

    @classmethod
    def resume(cls, out: Path, quiet: bool = False, log=None, device="cpu",
               dtype=None) -> "Trainer":
        """The run in `out` as its last save left it (weights, optimiser, step, history)."""
        st = read_resume_state(out)
        try:
            cfg = TrainConfig.from_dict(st["config"])
            step, total, best = int(st["step"]), st["total"], st["best"]
            history, plateau = list(st["history"]), dict(st["plateau"])
            wall, cpu = float(st["wall_seconds"]), float(st["cpu_seconds"])
            recorded = st.get("dtype", "float32")
        except InterpError as e:
            raise resume_damaged(out, f"state.json records an invalid recipe: {e}") from None
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise resume_damaged(out, "state.json is unreadable", e) from None
        if resolve_dtype(dtype) != resolve_dtype(recorded):
            raise InterpError(f"{out} trains in {recorded}; resume it with --dtype {recorded}")
        self = cls(cfg, Path(out), quiet, log, device, dtype)
        load_resume_weights(out, self.model, self.opt)
        self.step, self.total, self.best = step, total, best
        self.history, self.plateau = history, plateau
        self.wall, self.cpu = wall, cpu
        return self

    def meta(self, metrics: dict, step: int) -> dict:
        return {"task": self.task.describe(), "model": self.cfg.model.to_dict(),
                "arch": self.cfg.model.arch, "params": n_params(self.model), "seed": self.cfg.seed,
                "training": {"recipe": self.cfg.to_dict(), "step": step, "total_steps": self.total,
                             "wall_minutes": round(self.wall / 60, 2),
                             "cpu_minutes": round(self.cpu / 60, 2),
                             "threads": torch.get_num_threads(),
                             "examples_seen": step * self.cfg.batch_size,
                             **self._dtype_note()},
                "metrics": metrics, "history": self.history,
                "interp_version": __import__("interp").__version__}

    # -- the loop -------------------------------------------------------------------------
    def evaluate(self) -> dict:
        from interp.metrics import evaluate

        arch, n_ctx = self.cfg.model.arch, self.cfg.model.n_ctx
        metrics, _ = evaluate(self.model, arch, self.task, self.data.eval_set, n_ctx)
        with torch.no_grad(), eval_mode(self.model):
            b = make_batch(arch, self.codec, [(e.src, e.tgt) for e in self.data.eval_set], n_ctx)
            metrics["loss"] = float(answer_loss(self.model, arch, b))
        return metrics

    def run(self, stop_at: int | None = None, pause_at: int | None = None,
            pause_after: float | None = None) -> dict:
        """Train to the end. stop_at: behave as if interrupted (Ctrl-C) after that step.
        pause_at (a step) / pause_after (wall minutes of this call): save the resume state
        and return early, `meta["training"]["paused"]` set; `Trainer.resume` continues."""
        cfg = self.cfg
        if pause_at is not None and pause_at <= self.step:
            raise InterpError(f"--until-step {pause_at} is not after the run's step {self.step}; "
                              f"give a later step (up to {self.total})")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        from tqdm.auto import tqdm

        self.model.train()
        arch, n_ctx = cfg.model.arch, cfg.model.n_ctx
        bar = tqdm(total=self.total, initial=self.step, disable=self.quiet or not sys.stderr.isatty(),
                   desc=f"train {cfg.task}/{cfg.preset} {arch}", dynamic_ncols=True)
        t0, c0 = time.time(), time.process_time()
        wall0, cpu0 = self.wall, self.cpu
        calib_from = None
        running, count = 0.0, 0
        # Ctrl-C / SIGTERM only sets a flag: the step in flight finishes (a signal in the
        # middle of opt.step() would otherwise save half-updated weights), then the run saves
        # and stops. A second signal stops at once; the last periodic save stays valid.
        stop = {"asked": False}

        def ask_stop(signum, frame):
            if stop["asked"]:
                raise KeyboardInterrupt
            stop["asked"] = True

        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, ask_stop)
        try:
            while self.total is None or self.step < self.total:
                step = self.step
                if self.total is None and step >= 3 and calib_from is None:
                    calib_from = (step, time.time())
                if calib_from and self.total is None and step - calib_from[0] >= 10:
                    per_step = (time.time() - calib_from[1]) / (step - calib_from[0])
                    budget = cfg.minutes * 60 - self.wall
                    self.total = max(step + 1, step + int(0.85 * budget / per_step))
                    bar.total = self.total
                    bar.refresh()
                torch.manual_seed(fold_seed(cfg.seed * 1_000_003 + step))
                lr = lr_at(cfg, step, self.total, self.plateau["scale"])
                for g in self.opt.param_groups:
                    g["lr"] = lr
                batch = on_device(make_batch(arch, self.codec, [(e.src, e.tgt) for e in
                                                                self.data.examples(step)], n_ctx),
                                  self.device)
                with self.autocast():
                    if cfg.scheduled_sampling and self.total:
                        share = cfg.scheduled_sampling * min(1.0, step / self.total)
                        gen = torch.Generator().manual_seed(fold_seed(cfg.seed * 7919 + step))
                        batch = scheduled_sampling(self.model, arch, batch, share, gen)
                    loss = answer_loss(self.model, arch, batch)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.clip:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip)
                self.opt.step()
                self.step = step + 1
                running += loss.item()
                count += 1
                bar.update(1)
                self.wall = wall0 + time.time() - t0
                self.cpu = cpu0 + time.process_time() - c0
                last = self.total is not None and self.step >= self.total
                if self.step % cfg.eval_every == 0 or last:
                    m = self.evaluate()
                    rec = {"step": self.step, "train_loss": running / max(count, 1), "lr": lr,
                           "eval_loss": m["loss"], "exact_match": m["exact_match"],
                           "char_accuracy": m["char_accuracy"],
                           "per_class": {c: v["exact_match"] for c, v in m["per_class"].items()},
                           "wall_minutes": round(self.wall / 60, 2),
                           "cpu_minutes": round(self.cpu / 60, 2)}
                    if self.data.novel_set is not None:
                        nm = self.evaluate_novel()
                        rec.update(novel_exact_match=nm["exact_match"],
                                   novel_char_accuracy=nm["char_accuracy"])
                    running, count = 0.0, 0
                    self.history.append(rec)
                    self._plateau(m["loss"])
                    bar.set_postfix(loss=f"{rec['train_loss']:.3f}", exact=f"{m['exact_match']:.1%}")
                    if not self.quiet and bar.disable:
                        self.log(f"step {self.step}/{self.total}  loss {rec['train_loss']:.4f}  "
                                 f"eval exact {m['exact_match']:.1%}  char {m['char_accuracy']:.1%}"
                                 f"  {rec['per_class']}  {self.wall / 60:.1f} min")
                    if self.best is None or rank(m) > rank(self.best):
                        self.best = {"step": self.step, "exact_match": m["exact_match"],
                                     "char_accuracy": m["char_accuracy"]}
                        save_checkpoint(self.model, self.out, self.meta(m, self.step))
                    self.save_resume()
                elif self.step % cfg.save_every == 0:
                    self.save_resume()
                done = self.total is not None and self.step >= self.total
                if not done and ((pause_at is not None and self.step >= pause_at) or
                                 (pause_after is not None and
                                  time.time() - t0 >= pause_after * 60)):
                    self.save_resume()
                    bar.close()
                    return self._paused()
                if stop["asked"] or (stop_at is not None and self.step >= stop_at):
                    self.save_resume()
                    bar.close()
                    raise InterpError(f"interrupted after step {self.step}; continue with "
                                      f"python -m interp.train --resume {self.out}")
        except KeyboardInterrupt:
            bar.close()
            raise InterpError(f"stopped at once; continue from the last save (every "
                              f"{cfg.save_every} steps) with python -m interp.train --resume "
                              f"{self.out}") from None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        bar.close()
        # refresh the best checkpoint's timings (weights and metrics unchanged)
        meta_path = self.out / "interp.json"
        meta = json.loads(meta_path.read_text())
        meta["training"].update(wall_minutes=round(self.wall / 60, 2),
                                cpu_minutes=round(self.cpu / 60, 2), total_steps=self.total,
                                finished=True)
        meta["history"] = self.history
        from interp.io import write_json

        write_json(meta_path, meta, sort_keys=True, check=False)
        return meta

    def _paused(self) -> dict:
        """The best checkpoint's interp.json after a pause (none yet: the resume state's)."""
        meta_path = self.out / "interp.json"
        meta = (json.loads(meta_path.read_text()) if meta_path.exists()
                else {"training": {}, "metrics": None})
        meta["training"].update(paused=True, paused_at_step=self.step, total_steps=self.total,
                                wall_minutes=round(self.wall / 60, 2),
                                cpu_minutes=round(self.cpu / 60, 2))
        return meta

    def evaluate_novel(self) -> dict:
        from interp.metrics import evaluate

        metrics, _ = evaluate(self.model, self.cfg.model.arch, self.task, self.data.novel_set,
                              self.cfg.model.n_ctx)
        return metrics

    def reselect(self) -> dict:
        """Keep the better of the stored best checkpoint and the last weights, by `rank`.

        For runs made before character accuracy broke ties: a run whose every evaluation
        scored 0% exact kept its first evaluation."""

        m = self.evaluate()
        meta_path = self.out / "interp.json"
        stored = json.loads(meta_path.read_text())
        if rank(m) > rank(stored["metrics"]):
            self.best = {"step": self.step, "exact_match": m["exact_match"],
                         "char_accuracy": m["char_accuracy"]}
            meta = self.meta(m, self.step)
            meta["training"].update(finished=stored["training"].get("finished", False))
            save_checkpoint(self.model, self.out, meta)
            self.save_resume()
            return meta
        return stored

    def _plateau(self, loss: float) -> None:
        p = self.plateau
        if p["best_loss"] is None or loss < p["best_loss"] - 1e-4:
            p["best_loss"], p["bad"] = loss, 0
        else:
            p["bad"] += 1
            if p["bad"] >= self.cfg.plateau_patience:
                p["scale"] *= self.cfg.plateau_factor
                p["bad"] = 0


def train(cfg: TrainConfig, out: str | os.PathLike, quiet: bool = False, device="cpu",
          dtype=None, pause_at: int | None = None, pause_after: float | None = None) -> dict:
    """Train from scratch into `out`; returns the best checkpoint's interp.json content
    (`Trainer.run`'s pause options pass through)."""
    out = Path(out)
    check_new_out(out)
    return Trainer(cfg, out, quiet, device=device, dtype=dtype).run(
        pause_at=pause_at, pause_after=pause_after)


def check_new_out(out: Path) -> None:
    """Refuse an --out that is a file, lies in a missing folder, or already holds files (a
    training run or someone else's): a run writes into its folder step by step. OS/editor
    metadata (`.DS_Store`, ...) and our own temporaries (debris of a killed run, removed
    once the lock is held) do not count; the metadata stays where it is."""
    from interp.io import ignorable, probe_writable

    full = Path(os.path.abspath(out))
    if out.exists() and not out.is_dir():
        raise InterpError(f"--out {out} is a file; give a new folder for the checkpoint")
    if (out / RESUME).exists() or (out / "interp.json").exists():
        raise InterpError(f"{out} already holds a training run; continue it with --resume "
                          f"{out} or choose a new --out")
    names = sorted(n for n in os.listdir(full) if not ignorable(full, n)) \
        if full.is_dir() else []
    if names:
        raise InterpError(f"--out {out} is a folder that holds other files "
                          f"({', '.join(names[:3])}); give a new or empty folder")
    if not full.parent.is_dir():
        raise InterpError(f"cannot create --out {out}: folder {out.parent} does not exist")
    probe_writable(full if full.is_dir() else full.parent, f"--out {out}")


