"""Train a small language model on the Python standard library's own source (REFERENCE §3).

    cfg = TextTrainConfig(model="attn2l", steps=3000)
    bridge, meta = train_text(cfg, "runs/induction-attn2l")      # saved atomically

Models (`PRESETS`): `attn2l` (2 layers, attention only), `smeared1l` (1 layer, smeared keys),
`conv1l` (1 layer after a causal depthwise convolution), `attn1l` (1 plain layer: the control).

The corpus is every `.py` file of the running interpreter's `Lib/` (tests excluded), split
into training and validation files by a hash of their paths; a byte-level BPE is trained on
the training files and saved with the checkpoint. With `mix` f, a share f of the rows of
every batch is replaced by random tokens repeated with a random period (8 .. n_ctx / 2):
synthetic data that rewards induction directly. Training records, every `eval_every` steps,
the induction score of every head, the in-context-learning score on validation text, the
validation loss and (smeared/conv) the mixing weights, with the CPU time, so that the phase
change can be plotted (`python -m circuits.induction CKPT` does). The command is
`python -m interp.train_text`.

`device` and `dtype` (of `TextTrainer` and `train_text`): the model trains on `device`; with a
reduced `dtype` the forward passes of training run under autocast in it while the weights and
the optimizer stay float32 (the saved checkpoint is float32).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from interp.attention.induction import (
    icl_positions,
    icl_score,
    induction_score,
    model_patterns,
    score_prompts,
    token_losses,
)
from interp.errors import InterpError
from interp.training.recipe import fold_seed

PRESETS = {
    "attn2l": {"n_layers": 2, "mixing": "none"},
    "smeared1l": {"n_layers": 1, "mixing": "smeared"},
    "conv1l": {"n_layers": 1, "mixing": "conv"},
    "attn1l": {"n_layers": 1, "mixing": "none"},
}


@dataclass
class TextTrainConfig:
    model: str = "attn2l"
    steps: int = 3000
    batch_size: int = 32
    n_ctx: int = 128
    d_model: int = 128
    n_heads: int = 4
    vocab: int = 512
    conv_width: int = 3
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 100
    mix: float = 0.5
    seed: int = 0
    eval_every: int = 100
    eval_windows: int = 64
    threads: int = 1
    files: int = 0           # 0 = the whole corpus; tests use a few files

    def check(self):
        if self.model not in PRESETS:
            raise InterpError(f"unknown model {self.model!r}; choose one of "
                              f"{', '.join(PRESETS)}")
        if not 0 <= self.mix < 1:
            raise InterpError(f"--mix is the share of synthetic rows, in [0, 1); got {self.mix}")
        for name in ("steps", "batch_size", "eval_every", "eval_windows", "threads"):
            if getattr(self, name) < 1:
                raise InterpError(f"--{name.replace('_', '-')} must be at least 1, got "
                                  f"{getattr(self, name)}")
        if self.n_ctx < 16:
            raise InterpError(f"--n-ctx must be at least 16 tokens, got {self.n_ctx}")
        if not 0 < self.lr < math.inf:
            raise InterpError(f"--lr must be a positive number, e.g. 1e-3, got {self.lr}")
        if not 0 <= self.weight_decay < math.inf or self.warmup < 0:
            raise InterpError(f"--weight-decay and --warmup must be 0 or more, got "
                              f"{self.weight_decay} and {self.warmup}")
        if self.vocab < 16:
            raise InterpError(f"--vocab must be at least 16 tokens, got {self.vocab}")
        for name, limit in (("batch_size", 4096), ("n_ctx", 4096), ("d_model", 4096),
                            ("vocab", 65_536), ("eval_windows", 16_384)):
            if getattr(self, name) > limit:
                raise InterpError(f"--{name.replace('_', '-')} {getattr(self, name)} is more "
                                  f"than this command trains on a CPU; ask for fewer "
                                  f"(--{name.replace('_', '-')} {limit})")


def synthetic_rows(vocab: int, special: set[int], n: int, width: int, bos: int,
                   generator: torch.Generator) -> torch.Tensor:
    """[n, width]: BOS, then a random block of random period in [8, width // 2) repeated
    to fill the row.

    Not built on `interp.tokens.repeated_tokens` (the same pool, BOS and repeated block):
    that draws from its own generator seeded by `seed`, while training draws every batch's
    rows from one running `generator`; the shipped text models' training must reproduce
    byte for byte.
    """
    pool = torch.tensor([i for i in range(vocab) if i not in special])
    period = int(torch.randint(8, max(9, (width - 1) // 2), (1,), generator=generator))
    block = pool[torch.randint(len(pool), (n, period), generator=generator)]
    reps = math.ceil((width - 1) / period)
    return torch.cat([torch.full((n, 1), bos), block.repeat(1, reps)[:, :width - 1]], 1)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10%."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))


class TextTrainer:
    """One training run: the corpus, tokenizer and model are made on construction; `run()`
    trains, recording `evaluate()` rows in `history`; `meta()` is the checkpoint's
    interp.json. `device`/`dtype` as in the module docstring."""

    def __init__(self, cfg: TextTrainConfig, progress: bool = False, device: str = "cpu",
                 dtype=None):
        from interp.models import resolve_device, resolve_dtype
        from interp.models.native import NativeSpec, build_native
        from interp.tasks import text as T

        cfg.check()
        self.cfg, self.progress = cfg, progress
        self.device, self.dtype = resolve_device(device), resolve_dtype(dtype)
        torch.set_num_threads(cfg.threads)
        t0 = time.process_time()
        files = T.stdlib_files()
        if cfg.files:
            files = files[:cfg.files]
        train_files, val_files = T.split_files(files)
        if not train_files or not val_files:
            raise InterpError(f"{len(files)} corpus files leave no training or validation "
                              "files; use more files")
        bpe = T.train_bpe(train_files, cfg.vocab)
        self.train_ids = T.encode_files(bpe, train_files)
        self.val_ids = T.encode_files(bpe, val_files)
        self.corpus = T.corpus_fingerprint(files)
        self.corpus.update(train_files=len(train_files), val_files=len(val_files),
                           train_tokens=len(self.train_ids), val_tokens=len(self.val_ids),
                           vocab=bpe.get_vocab_size())
        self.tokenizer = T.hf_text_tokenizer(bpe)
        self.bos = bpe.token_to_id("<bos>")
        self.special = {bpe.token_to_id(t) for t in T.SPECIALS}
        spec = NativeSpec(d_model=cfg.d_model, n_heads=cfg.n_heads, n_ctx=cfg.n_ctx,
                          d_vocab=bpe.get_vocab_size(), conv_width=cfg.conv_width,
                          **PRESETS[cfg.model])
        self.bridge = build_native(spec, seed=cfg.seed, tokenizer=self.tokenizer)
        self.bridge.to(self.device)           # in place: native_params stay the parameters
        self.params = list(self.bridge.native_params.values())
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        g = torch.Generator().manual_seed(fold_seed(cfg.seed + 1))
        self.val_windows = T.sample_windows(self.val_ids, cfg.eval_windows, cfg.n_ctx - 1, g,
                                            self.bos)
        self.setup_cpu_s = time.process_time() - t0
        self.history: list[dict] = []

    def batch(self, step: int) -> torch.Tensor:
        from interp.tasks.text import sample_windows

        cfg = self.cfg
        g = torch.Generator().manual_seed(fold_seed(cfg.seed * 1_000_003 + step))
        x = sample_windows(self.train_ids, cfg.batch_size, cfg.n_ctx - 1, g, self.bos)
        k = int(round(cfg.batch_size * cfg.mix))
        if k:
            x[:k] = synthetic_rows(int(self.bridge.cfg.d_vocab), self.special, k, cfg.n_ctx,
                                   self.bos, g)
        return x

    @torch.no_grad()
    def evaluate(self, step: int, train_loss: float | None, cpu_s: float) -> dict:
        from interp.models.native import mixing_weights

        ids, half, _, _ = score_prompts(self.bridge, n=16, seed=0)
        ind = induction_score(model_patterns(self.bridge, ids), half)
        losses = token_losses(self.bridge, self.val_windows)
        early, late = icl_positions(self.cfg.n_ctx)
        icl, icl_se = icl_score(losses, early, late)
        row = {"step": step, "cpu_seconds": round(cpu_s, 1), "train_loss": train_loss,
               "val_loss": float(losses.mean()), "icl": icl, "icl_se": icl_se,
               "icl_positions": [early, late], "induction": ind.tolist(),
               "induction_max": float(ind.max())}
        mix = mixing_weights(self.bridge)
        if "smear" in mix:                       # [layer, head] sigmoid(alpha)
            row["smear"] = mix["smear"].tolist()
        if "conv" in mix:                        # the kernel is in the weights; the curve
            row["conv_tap_abs_mean"] = mix["conv"].abs().mean(0).tolist()   # per tap
        return row

    def train_step(self, step: int) -> float:
        """One optimizer step on `batch(step)` (the training forward pass, in train mode);
        returns the batch's loss."""
        cfg = self.cfg
        for group in self.opt.param_groups:
            group["lr"] = cfg.lr * lr_factor(step, cfg.steps, cfg.warmup)
        self.bridge.train()
        x = self.batch(step).to(self.device)                          # [batch, n_ctx]
        with torch.autocast(self.device.type, dtype=self.dtype,
                            enabled=self.dtype != torch.float32):
            logits = self.bridge(x[:, :-1])                           # [batch, pos, vocab]
        V = logits.shape[-1]
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, V),
                                                 x[:, 1:].reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        return loss.item()

    def run(self) -> dict:
        cfg = self.cfg
        t0 = time.process_time()
        total = cfg.steps
        self.history.append(self.evaluate(0, None, 0.0))     # no training loss yet
        loss_sum, n_loss = 0.0, 0
        bar = None
        if self.progress:
            from tqdm import tqdm
            bar = tqdm(total=total, desc=f"train {cfg.model}", file=sys.stderr)
        for step in range(total):
            loss_sum, n_loss = loss_sum + self.train_step(step), n_loss + 1
            if (step + 1) % cfg.eval_every == 0 or step + 1 == total:
                cpu = time.process_time() - t0
                row = self.evaluate(step + 1, loss_sum / n_loss, cpu)
                loss_sum, n_loss = 0.0, 0
                self.history.append(row)
                if bar is not None:
                    bar.set_postfix(loss=f"{row['train_loss']:.2f}",
                                    ind=f"{row['induction_max']:.2f}", icl=f"{row['icl']:.2f}")
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        self.bridge.eval()
        self.train_cpu_s = time.process_time() - t0
        return self.history[-1]

    def meta(self) -> dict:
        return {"task": {"task": "text", "corpus": self.corpus},
                "recipe": asdict(self.cfg),
                "history": self.history,
                "cpu_minutes": {"setup": round(self.setup_cpu_s / 60, 2),
                                "training": round(self.train_cpu_s / 60, 2),
                                "threads": self.cfg.threads},
                "metrics": {k: v for k, v in self.history[-1].items()
                            if k not in ("step",)},
                "interp_version": __import__("interp").__version__}


def train_text(cfg: TextTrainConfig, out: str | Path | None = None,
               progress: bool = False, device: str = "cpu", dtype=None):
    """Train; save to `out` (atomically) when given. Returns (bridge, meta): the trained
    TransformerBridge (eval mode, on `device`) and its interp.json."""
    from interp.models.native import save_native

    trainer = TextTrainer(cfg, progress, device, dtype)
    trainer.run()
    meta = trainer.meta()
    if out is not None:
        save_native(trainer.bridge, out, meta)
    return trainer.bridge, meta


__all__ = ["PRESETS", "TextTrainConfig", "TextTrainer", "synthetic_rows", "lr_factor",
           "train_text"]
