"""python -m interp.train_text MODEL --out DIR: train a small language model on the Python
standard library's own source (REFERENCE §3).

    python -m interp.train_text attn2l --out runs/induction-attn2l
    python -m interp.train_text smeared1l --steps 1500 --out runs/induction-smeared1l

Models: `attn2l` (2 layers, attention only), `smeared1l` (1 layer, smeared keys), `conv1l`
(1 layer after a causal depthwise convolution), `attn1l` (1 plain layer: the control).

The corpus is every `.py` file of the running interpreter's `Lib/` (tests excluded), split
into training and validation files by a hash of their paths; a byte-level BPE is trained on
the training files and saved with the checkpoint. With `--mix f`, a share f of the rows of
every batch is replaced by random tokens repeated with a random period (8 .. n_ctx / 2):
synthetic data that rewards induction directly. Training records, every `--eval-every` steps,
the induction score of every head, the in-context-learning score on validation text, the
validation loss and (smeared/conv) the mixing weights, with the CPU time, so that the phase
change can be plotted (`python -m circuits.induction CKPT` does). `--dtype bfloat16` runs the
training forward passes under autocast; the weights stay float32. The trainer is
`interp.training.text`.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from interp.cli.common import Parser, add_options, seed_value
    from interp.training.text import PRESETS, TextTrainConfig

    d = TextTrainConfig()
    p = Parser(prog="python -m interp.train_text", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", choices=list(PRESETS))
    p.add_argument("--out", required=True, help="checkpoint folder to write (replaced "
                   "atomically at the end)")
    for name in ("steps", "batch_size", "n_ctx", "d_model", "n_heads", "vocab", "conv_width",
                 "warmup", "seed", "eval_every", "eval_windows", "threads"):
        p.add_argument(f"--{name.replace('_', '-')}", default=getattr(d, name),
                       type=seed_value if name == "seed" else int)
    for name in ("lr", "weight_decay", "mix"):
        p.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(d, name))
    add_options(p, device_map=False)                         # --device, --dtype, --quiet
    return p


def _own_file(name: str) -> bool:
    """The files of a native checkpoint (an earlier output of this command)."""
    return name in ("config.json", "model.safetensors", "interp.json") or \
        name.startswith(("tokenizer", "special_tokens", "vocab", "merges", "added_tokens"))


def _main(argv) -> int:
    from interp.cli.common import check_device
    from interp.io import check_replaceable_dir, output_lock
    from interp.training.text import TextTrainConfig, train_text

    a = build_parser().parse_args(argv)
    from interp.distributed import one_process_only

    one_process_only("python -m interp.train_text")
    cfg = TextTrainConfig(**{k: v for k, v in vars(a).items()
                             if k not in ("out", "quiet", "device", "dtype")})
    cfg.check()
    check_device(a)
    check_replaceable_dir(a.out, "interp.json", "--out", own=_own_file)
    with output_lock(a.out):
        _, meta = train_text(cfg, a.out, progress=not a.quiet and sys.stderr.isatty(),
                             device=a.device, dtype=a.dtype)
    m = meta["metrics"]
    print(f"{cfg.model}: {cfg.steps} steps in {meta['cpu_minutes']['training']:.1f} CPU-min "
          f"({cfg.threads} thread); validation loss {m['val_loss']:.3f}; ICL {m['icl']:+.3f}; "
          f"best induction score {m['induction_max']:.2f}; saved {a.out}")
    return 0


def main(argv=None) -> int:
    from interp.cli.common import run_cli

    return run_cli(_main, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
