"""A task-training recipe (`TrainConfig`: plain values, checked), the batches it draws (`Data`:
a function of seed and step, so a resumed run sees the same batches) and the learning-rate
schedule.

    cfg = TrainConfig(task="arithmetic", steps=3000, model=ModelConfig(n_layers=2))
    Data(cfg, task).examples(step)          # the batch of one step
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field, fields

from interp.errors import InterpError, TaskError
from interp.models.config import ModelConfig
from interp.tasks import Task, is_heldout, split_examples
from interp.tasks.base import Example, sample_class


def fold_seed(x: int) -> int:
    """A derived seed (seed * k + step) folded into 0..2**63-1, which torch's generators
    take; unchanged for every seed below about 9e12 / k (the runs made so far)."""
    return x % 2**63

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
    split: str = "distinct"           # fixed: distinct (no input in both) | seed (as generated)
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
        if self.split not in ("distinct", "seed"):
            raise InterpError(f"unknown split {self.split!r}; choose distinct or seed")
        if self.split == "seed" and self.data != "fixed":
            raise InterpError("the seed's split needs --data fixed (a fixed set of --rows)")
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
            self.train, self.test = fixed_split(cfg)
            if cfg.split == "seed" and cfg.eval_n >= len(self.test):
                raise InterpError(f"--eval-n {cfg.eval_n} takes every one of the {len(self.test)} "
                                  "test rows to choose the checkpoint, leaving none to score; "
                                  f"give --eval-n below {len(self.test)} or more --rows")
            self.eval_set = self.test[:cfg.eval_n]
        else:
            self.train = self.test = None
            self.eval_set = task.generate(cfg.eval_n, seed=cfg.seed + 1_000_003,
                                          heldout=True if cfg.holdout else None)

        # the seed's split lets test equations repeat training ones; equations never trained
        # on are measured beside it: distinct inputs of the held-out partition
        self.novel_set = None
        if cfg.split == "seed" and cfg.holdout:
            try:
                self.novel_set = task.generate(cfg.eval_n, seed=cfg.seed + 2_000_003,
                                               heldout=True, unique=True)
            except TaskError as e:
                raise InterpError(f"--eval-n {cfg.eval_n} is more distinct held-out equations "
                                  f"than the preset has for the novel set ({e}); give a smaller "
                                  "--eval-n") from None

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


def fixed_split(cfg: TrainConfig) -> tuple[list[Example], list[Example]]:
    """The (train, test) lists of a --data fixed recipe, regenerated from its seed.

    The task is built afresh from the recipe, as training builds it: a checkpoint's own task
    object (read back from interp.json) may list its class mix in another order, and the
    order of the classes changes which rows a seed draws."""
    from interp.tasks import get_task

    task = get_task(cfg.task, cfg.preset)
    rows = task.generate(cfg.rows, cfg.seed, heldout=False if cfg.holdout else None)
    train, test = split_examples(rows, cfg.test_fraction, dedup=cfg.split != "seed")
    if not train or not test:
        raise InterpError(f"--rows {cfg.rows} leaves an empty train or test split; use more "
                          "rows")
    return train, test


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
