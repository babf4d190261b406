# Over 400 lines: the trainer and its command line (with the checks of --out and of a
# damaged resume state) live together until issue #12 splits training/ and cli/.
"""Train a model on a task, with an answer-only loss, periodic evaluation and exact resume.

    python -m interp.train quadratic --preset small --arch decoder --minutes 20 --out DIR
    python -m interp.train arithmetic --steps 3000 --out DIR
    python -m interp.train --resume DIR            # continue an interrupted run

`DIR` becomes a checkpoint directory holding the best model by exact match on held-out
examples; `DIR/resume/` holds the last weights, the optimiser state and the recipe. Every
batch is a function of (seed, step), so a resumed run reaches the same weights, bit for bit on
the CPU, as one that was never interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from interp.errors import InterpError
from interp.metrics import answer_loss
from interp.io import replace_dir_atomic
from interp.models.checkpoint import save_checkpoint
from interp.models.config import ModelConfig, build_model, n_params
from interp.tasks import CharCodec, Task, get_task, is_heldout, split_examples
from interp.tasks.base import Example, sample_class
from interp.tokens import IGNORE, Batch, make_batch

RESUME = "resume"
MAX_BATCH = 8_192        # examples per optimiser step
MAX_EVAL_N = 100_000     # held-out examples decoded at each evaluation
MAX_ROWS = 2_000_000     # --data fixed: examples generated and held in memory


@dataclass
class TrainConfig:
    """The whole recipe of a run; stored in the checkpoint's interp.json."""

    task: str = "quadratic"
    preset: str = "small"
    seed: int = 0
    steps: int | None = None          # total optimiser steps; or
    minutes: float | None = None      # a time budget, turned into steps after a timing run; or
    epochs: float | None = None       # passes over the fixed training set (--data fixed)
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 200
    schedule: str = "cosine"          # cosine | plateau | constant
    plateau_patience: int = 3
    plateau_factor: float = 0.5
    clip: float = 1.0
    scheduled_sampling: float = 0.0   # final share of answer inputs replaced by predictions
    data: str = "fresh"               # fresh: new samples every step; fixed: the seed protocol
    rows: int = 100_000               # fixed: dataset size before the 80/20 split
    test_fraction: float = 0.2
    holdout: bool = True              # never train on the held-out input partition
    eval_every: int = 250
    eval_n: int = 500
    save_every: int = 50
    threads: int | None = None
    init_from: str | None = None      # start from a checkpoint's weights (a new schedule)
    init_weights_sha256: str | None = None  # recorded so a warm start can be checked
    model: ModelConfig = field(default_factory=ModelConfig)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known and k != "model"}
        return cls(**kw, model=ModelConfig.from_dict(d.get("model", {})))

    def validate(self) -> None:
        if sum(v is not None for v in (self.steps, self.minutes, self.epochs)) != 1:
            raise InterpError("give exactly one of --steps N, --minutes M or --epochs E")
        if self.epochs is not None and (self.data != "fixed" or self.epochs <= 0):
            raise InterpError("--epochs needs --data fixed and a positive number of epochs")
        if self.steps is not None and self.steps < 1:
            raise InterpError(f"--steps must be at least 1, got {self.steps}")
        if self.minutes is not None and self.minutes <= 0:
            raise InterpError(f"--minutes must be positive, got {self.minutes}")
        if self.schedule not in ("cosine", "plateau", "constant"):
            raise InterpError(f"unknown schedule {self.schedule!r}; choose cosine, plateau or "
                              "constant")
        if self.data not in ("fresh", "fixed"):
            raise InterpError(f"unknown data mode {self.data!r}; choose fresh or fixed")
        if not 0 <= self.scheduled_sampling < 1:
            raise InterpError("--scheduled-sampling must be in [0, 1)")
        if self.batch_size < 1 or self.eval_n < 1 or self.eval_every < 1 or self.save_every < 1:
            raise InterpError("--batch-size, --eval-n, --eval-every and --save-every must be "
                              "positive")
        checks = [("--lr", self.lr, self.lr > 0 and math.isfinite(self.lr), "a positive number, "
                   "e.g. 1e-3"),
                  ("--weight-decay", self.weight_decay, 0 <= self.weight_decay < math.inf,
                   "0 or more"),
                  ("--warmup", self.warmup, self.warmup >= 0, "0 or more steps"),
                  ("--clip", self.clip, 0 <= self.clip < math.inf, "0 (off) or more"),
                  ("--plateau-factor", self.plateau_factor, 0 < self.plateau_factor < 1,
                   "in (0, 1)"),
                  ("--plateau-patience", self.plateau_patience, self.plateau_patience >= 1,
                   "at least 1"),
                  ("--rows", self.rows, self.rows >= 2, "at least 2"),
                  ("test fraction", self.test_fraction, 0 < self.test_fraction < 1, "in (0, 1)"),
                  ("--threads", self.threads, self.threads is None or self.threads >= 1,
                   "at least 1"),
                  ("--dropout", self.model.dropout, 0 <= self.model.dropout < 1, "in [0, 1)")]
        for option, value, ok, right in checks:
            if not ok:
                raise InterpError(f"{option} must be {right}, got {value}")
        for option, value, limit in (("--batch-size", self.batch_size, MAX_BATCH),
                                     ("--eval-n", self.eval_n, MAX_EVAL_N),
                                     ("--rows", self.rows, MAX_ROWS)):
            if value > limit:
                raise InterpError(f"{option} {value} is more than a run holds in memory; ask "
                                  f"for fewer ({option} {limit})")


class Data:
    """Batches as a pure function of the step, and the held-out evaluation set."""

    def __init__(self, cfg: TrainConfig, task: Task):
        self.cfg, self.task = cfg, task
        if cfg.data == "fixed":
            rows = task.generate(cfg.rows, cfg.seed, heldout=False if cfg.holdout else None)
            self.train, self.test = split_examples(rows, cfg.test_fraction)
            if not self.train or not self.test:
                raise InterpError(f"--rows {cfg.rows} leaves an empty train or test split; "
                                  "use more rows")
            self.eval_set = self.test[:cfg.eval_n]
        else:
            self.train = self.test = None
            self.eval_set = task.generate(cfg.eval_n, seed=cfg.seed + 1_000_003,
                                          heldout=True if cfg.holdout else None)

    def examples(self, step: int) -> list[Example]:
        cfg = self.cfg
        if cfg.data == "fixed":
            n = len(self.train)
            start = step * cfg.batch_size
            out = []
            for pos in range(start, start + cfg.batch_size):
                epoch, i = divmod(pos, n)
                out.append(self.train[self._order(epoch)[i]])
            return out
        rng = random.Random(f"{cfg.seed}:{step}")
        mix = self.task.default_mix
        out = []
        while len(out) < cfg.batch_size:
            ex = self.task.sample(rng, sample_class(rng, mix))
            if cfg.holdout and is_heldout(ex.src):
                continue
            out.append(ex)
        return out

    def _order(self, epoch: int) -> list[int]:
        if getattr(self, "_cached_epoch", None) != epoch:
            order = list(range(len(self.train)))
            random.Random(f"{self.cfg.seed}:epoch:{epoch}").shuffle(order)
            self._cached_epoch, self._cached_order = epoch, order
        return self._cached_order

    @property
    def epoch_steps(self) -> float | None:
        return len(self.train) / self.cfg.batch_size if self.train else None


def rank(metrics: dict) -> tuple[float, float]:
    """Which evaluation is better: exact match first, character accuracy to break ties
    (early in training every evaluation may score 0% exact)."""
    return metrics["exact_match"], metrics.get("char_accuracy", 0.0)


def lr_at(cfg: TrainConfig, step: int, total: int | None, plateau_scale: float) -> float:
    warm = min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else 1.0
    if cfg.schedule == "cosine" and total and step >= cfg.warmup:
        frac = (step - cfg.warmup) / max(1, total - cfg.warmup)
        return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))
    if cfg.schedule == "plateau":
        return cfg.lr * warm * plateau_scale
    return cfg.lr * warm


def scheduled_sampling(model, arch: str, batch: Batch, share: float, gen: torch.Generator
                       ) -> Batch:
    """Replace a `share` of answer-token inputs by the model's own greedy predictions."""
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
            flip = answer & (torch.rand(answer.shape, generator=gen) < share)
            ids = torch.where(flip, guess, batch.input_ids)
            return Batch(ids, batch.attention_mask, batch.labels)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       decoder_input_ids=batch.decoder_input_ids).logits
        pred = logits.argmax(-1)
        guess = batch.decoder_input_ids.clone()
        guess[:, 1:] = pred[:, :-1]
        valid = torch.zeros_like(guess, dtype=torch.bool)
        valid[:, 1:] = batch.labels[:, :-1] != IGNORE
        flip = valid & (torch.rand(valid.shape, generator=gen) < share)
        dec = torch.where(flip, guess, batch.decoder_input_ids)
        return Batch(batch.input_ids, batch.attention_mask, batch.labels, dec)


# -- optimiser state without pickle -------------------------------------------------------
def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            t = v if torch.is_tensor(v) else torch.tensor(v)
            tensors[f"{pid}.{k}"] = t.contiguous()
    return tensors, {"param_groups": sd["param_groups"]}


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: dict):
    state: dict[int, dict] = {}
    for key, t in tensors.items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = t
    opt.load_state_dict({"state": state, "param_groups": groups["param_groups"]})


class Trainer:
    def __init__(self, cfg: TrainConfig, out: Path, quiet: bool = False, log=None):
        cfg.validate()
        self.cfg, self.out, self.quiet = cfg, Path(out), quiet
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.task = get_task(cfg.task, cfg.preset)
        self.codec = CharCodec()
        self.model = build_model(cfg.model, seed=cfg.seed)
        if cfg.init_from and cfg.init_weights_sha256 is None:
            self._warm_start(cfg.init_from)
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
        if src.config.to_dict() != self.cfg.model.to_dict():
            raise InterpError(f"--init-from {name_or_path}: its model {src.config.to_dict()} "
                              f"differs from this run's {self.cfg.model.to_dict()}; give the "
                              "same architecture and size flags")
        if src.task.describe() != self.task.describe():
            raise InterpError(f"--init-from {name_or_path} was trained on "
                              f"{src.task.describe()}, not {self.task.describe()}")
        self.model.load_state_dict(src.model.state_dict())
        self.cfg.init_weights_sha256 = hashlib.sha256(
            (src.path / "model.safetensors").read_bytes()).hexdigest()
        self.cfg.init_from = str(name_or_path)

    # -- persistence ----------------------------------------------------------------------
    def state(self) -> dict:
        return {"config": self.cfg.to_dict(), "step": self.step, "total": self.total,
                "best": self.best, "history": self.history, "plateau": self.plateau,
                "wall_seconds": self.wall, "cpu_seconds": self.cpu}

    def save_resume(self) -> None:
        from safetensors.torch import save_file

        tensors, groups = optimizer_tensors(self.opt)
        weights = {k: v.detach().clone().contiguous()
                   for k, v in self.model.state_dict().items()}

        def fill(tmp: Path) -> None:
            # tied weights (GPT-2 wte/lm_head) are stored once, under their first name
            seen, unique = {}, {}
            for k, v in weights.items():
                key = (v.data_ptr(), v.shape)
                if key not in seen:
                    seen[key] = k
                    unique[k] = v
            save_file(unique, str(tmp / "model.safetensors"))
            save_file(tensors, str(tmp / "optimizer.safetensors"))
            (tmp / "optimizer.json").write_text(json.dumps(groups))
            (tmp / "state.json").write_text(json.dumps(self.state(), indent=1))

        replace_dir_atomic(fill, self.out / RESUME)

    @classmethod
    def resume(cls, out: Path, quiet: bool = False, log=None) -> "Trainer":
        from safetensors.torch import load_file

        rdir = Path(out) / RESUME
        if not (rdir / "state.json").is_file():
            raise InterpError(f"{out} holds no resumable run (no {RESUME}/state.json); start "
                              "a run with --out DIR first")

        def damaged(what: str, e: BaseException | None = None) -> InterpError:
            lines = [] if e is None else str(e).strip().splitlines() or [""]
            line = next((x.strip() for x in lines if "size mismatch" in x), lines[0]
                        if lines else "")
            detail = "" if e is None else f" ({type(e).__name__}: {line[:200]})"
            return InterpError(f"cannot resume {out}: {what}{detail}; the resume state in "
                               f"{rdir} is damaged. Its best checkpoint is separate: continue "
                               f"from it with --init-from {out} --out NEW_DIR (a fresh "
                               "schedule), or start again")

        try:
            st = json.loads((rdir / "state.json").read_text())
            cfg = TrainConfig.from_dict(st["config"])
            step, total, best = int(st["step"]), st["total"], st["best"]
            history, plateau = list(st["history"]), dict(st["plateau"])
            wall, cpu = float(st["wall_seconds"]), float(st["cpu_seconds"])
        except InterpError as e:
            raise damaged(f"state.json records an invalid recipe: {e}") from None
        except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError,
                AttributeError) as e:
            raise damaged("state.json is unreadable", e) from None
        self = cls(cfg, Path(out), quiet, log)
        try:
            weights = load_file(str(rdir / "model.safetensors"))
        except Exception as e:  # safetensors raises its own types for truncated files
            raise damaged("model.safetensors is missing or truncated", e) from None
        try:
            missing, unexpected = self.model.load_state_dict(weights, strict=False)
        except RuntimeError as e:   # size mismatch: the recipe's model differs
            raise damaged("model.safetensors does not match the model recorded in "
                          "state.json", e) from None
        if unexpected or any("lm_head" not in k for k in missing):
            raise damaged("model.safetensors does not match the model recorded in state.json")
        self.model.tie_weights()
        try:
            tensors = load_file(str(rdir / "optimizer.safetensors"))
            groups = json.loads((rdir / "optimizer.json").read_text())
        except Exception as e:
            raise damaged("the optimiser state (optimizer.safetensors, optimizer.json) is "
                          "missing or truncated", e) from None
        params = list(self.model.parameters())
        try:
            for key, t in tensors.items():
                pid, name = key.split(".", 1)
                if name.startswith("exp_avg") and t.shape != params[int(pid)].shape:
                    raise ValueError(f"{key} has shape {tuple(t.shape)}, the parameter "
                                     f"{tuple(params[int(pid)].shape)}")
            load_optimizer(self.opt, tensors, groups)
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise damaged("the optimiser state does not match the model", e) from None
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
                             "examples_seen": step * self.cfg.batch_size},
                "metrics": metrics, "history": self.history,
                "interp_version": __import__("interp").__version__}

    # -- the loop -------------------------------------------------------------------------
    def evaluate(self) -> dict:
        from interp.metrics import evaluate

        metrics, _ = evaluate(self.model, self.cfg.model.arch, self.task, self.data.eval_set,
                              self.cfg.model.n_ctx)
        with torch.no_grad():
            self.model.eval()
            b = make_batch(self.cfg.model.arch, self.codec,
                           [(e.src, e.tgt) for e in self.data.eval_set], self.cfg.model.n_ctx)
            metrics["loss"] = float(answer_loss(self.model, self.cfg.model.arch, b))
            self.model.train()
        return metrics

    def run(self, stop_at: int | None = None) -> dict:
        """Train to the end. stop_at: behave as if interrupted (Ctrl-C) after that step."""
        cfg = self.cfg
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
                torch.manual_seed(cfg.seed * 1_000_003 + step)
                lr = lr_at(cfg, step, self.total, self.plateau["scale"])
                for g in self.opt.param_groups:
                    g["lr"] = lr
                batch = make_batch(arch, self.codec, [(e.src, e.tgt) for e in
                                                      self.data.examples(step)], n_ctx)
                if cfg.scheduled_sampling and self.total:
                    share = cfg.scheduled_sampling * min(1.0, step / self.total)
                    gen = torch.Generator().manual_seed(cfg.seed * 7919 + step)
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
                           "wall_minutes": round(self.wall / 60, 2)}
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


def train(cfg: TrainConfig, out: str | os.PathLike, quiet: bool = False) -> dict:
    """Train from scratch into `out`; returns the best checkpoint's interp.json content."""
    out = Path(out)
    check_new_out(out)
    return Trainer(cfg, out, quiet).run()


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


def build_parser() -> argparse.ArgumentParser:
    from interp.cli.common import Parser

    p = Parser(prog="python -m interp.train", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    d = TrainConfig()
    m = ModelConfig()
    p.add_argument("task_pos", nargs="?", metavar="TASK", choices=["quadratic", "arithmetic"],
                   help="quadratic or arithmetic (same as --task)")
    p.add_argument("--task", choices=["quadratic", "arithmetic"])
    p.add_argument("--preset", help="task preset: quadratic seed|small|medium (default small)")
    p.add_argument("--arch", choices=["decoder", "t5"], default=m.arch)
    p.add_argument("--out", help="output checkpoint directory")
    p.add_argument("--resume", metavar="DIR", help="continue the interrupted run in DIR")
    p.add_argument("--reselect", metavar="DIR", help="keep the better of DIR's best and last "
                   "weights (exact match, then character accuracy)")
    p.add_argument("--steps", type=int)
    p.add_argument("--minutes", type=float)
    p.add_argument("--epochs", type=float, help="passes over the training set (--data fixed)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--layers", type=int, default=m.n_layers)
    p.add_argument("--d-model", type=int, default=m.d_model)
    p.add_argument("--heads", type=int, default=m.n_heads)
    p.add_argument("--d-ff", type=int, default=None, help="default 4 * d_model")
    p.add_argument("--n-ctx", type=int, default=None,
                   help="context length (default: 128, or 192 for the seed preset)")
    p.add_argument("--dropout", type=float, default=m.dropout)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--schedule", default=d.schedule, help="cosine | plateau | constant")
    p.add_argument("--clip", type=float, default=d.clip)
    p.add_argument("--scheduled-sampling", type=float, default=d.scheduled_sampling,
                   help="final share of answer inputs replaced by the model's predictions")
    p.add_argument("--data", default=d.data, help="fresh (new samples every step) or fixed "
                   "(the seed protocol: --rows examples, 80/20 split, epochs)")
    p.add_argument("--rows", type=int, default=d.rows)
    p.add_argument("--no-holdout", action="store_true",
                   help="also train on the held-out input partition")
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--eval-n", type=int, default=d.eval_n)
    p.add_argument("--save-every", type=int, default=d.save_every)
    p.add_argument("--threads", type=int)
    p.add_argument("--init-from", metavar="CKPT",
                   help="start from this checkpoint's weights (same size flags) with a fresh "
                        "optimiser and schedule, e.g. to continue a finished run")
    p.add_argument("--quiet", action="store_true")
    return p


def _main(argv) -> int:
    from interp.io import check_replaceable_dir, output_lock, probe_writable

    args = build_parser().parse_args(argv)
    if sum(bool(x) for x in (args.resume, args.reselect, args.out)) > 1:
        raise InterpError("give one of --out DIR (a new run), --resume DIR or --reselect DIR")
    if not (args.resume or args.reselect or args.out):
        raise InterpError("give --out DIR for the checkpoint (or --resume DIR)")
    target = Path(args.reselect or args.resume or args.out)
    if args.reselect or args.resume:
        if not target.is_dir():
            raise InterpError(f"no run folder {target}; give the --out folder of an earlier run")
        probe_writable(target, f"--resume {target}")
    else:
        check_new_out(target)
        check_replaceable_dir(target, "interp.json", "--out",   # its parent is writable
                              replaced=False)
    if args.threads is not None and args.threads < 1:
        raise InterpError(f"--threads must be at least 1, got {args.threads}")
    # the lock removes our own debris of a killed run: beside the folder and inside it
    # (`.resume.interp-tmp-*`, `.interp.json.interp-tmp-*`)
    with output_lock(target, "--resume" if args.resume or args.reselect else "--out"):
        return _train(args)


def _train(args) -> int:
    if args.reselect:
        trainer = Trainer.resume(Path(args.reselect), quiet=args.quiet)
        meta = trainer.reselect()
        args.resume = args.reselect
    elif args.resume:
        trainer = Trainer.resume(Path(args.resume), quiet=args.quiet)
        if args.threads:
            trainer.cfg.threads = args.threads
        meta = trainer.run()
    else:
        task = args.task or args.task_pos or "quadratic"
        if not args.out:
            raise InterpError("give --out DIR for the checkpoint (or --resume DIR)")
        preset = args.preset or ("small" if task == "quadratic" else "default")
        n_ctx = args.n_ctx or (192 if preset == "seed" else 128)
        mcfg = ModelConfig(arch=args.arch, n_layers=args.layers, d_model=args.d_model,
                           n_heads=args.heads, d_ff=args.d_ff or 4 * args.d_model, n_ctx=n_ctx,
                           dropout=args.dropout)
        cfg = TrainConfig(task=task, preset=preset, seed=args.seed, steps=args.steps,
                          minutes=args.minutes, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          weight_decay=args.weight_decay, warmup=args.warmup,
                          schedule=args.schedule, clip=args.clip,
                          scheduled_sampling=args.scheduled_sampling, data=args.data,
                          rows=args.rows, holdout=not args.no_holdout,
                          eval_every=args.eval_every, eval_n=args.eval_n,
                          save_every=args.save_every, threads=args.threads,
                          init_from=args.init_from, model=mcfg)
        meta = train(cfg, args.out, quiet=args.quiet)
    tr = meta["training"]
    print(f"best exact match {meta['metrics']['exact_match']:.1%} at step {tr['step']} of "
          f"{tr['total_steps']}; {tr['wall_minutes']} wall minutes; saved to "
          f"{args.resume or args.out}")
    return 0


def main(argv=None) -> int:
    from interp.cli.common import run_cli

    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
