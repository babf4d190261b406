"""Rebuild the models shipped in interp/checkpoints/ from their recorded recipes.

    python scripts/train_shipped.py                 # all of them (hours of CPU)
    python scripts/train_shipped.py --only arithmetic
    python scripts/train_shipped.py --resume        # continue interrupted runs in --work

Each model trains with `interp.train` into WORK/NAME (best checkpoint + resume state), is then
evaluated on 1,000 fresh held-out examples, and its checkpoint files (not the resume state)
are copied into interp/checkpoints/NAME. Same seed and steps give the same weights on the CPU
with the same thread count.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "interp" / "checkpoints"

# name -> arguments of `python -m interp.train` (the recipe that produced the shipped weights)
RECIPES: dict[str, list[str]] = {
    "quadratic-small": ["quadratic", "--preset", "small", "--arch", "decoder", "--layers", "4",
                        "--d-model", "128", "--heads", "4", "--steps", "3400",
                        "--eval-every", "250", "--eval-n", "500", "--seed", "0"],
    "quadratic-t5-small": ["quadratic", "--preset", "small", "--arch", "t5", "--layers", "3",
                           "--d-model", "128", "--heads", "4", "--steps", "3000",
                           "--eval-every", "250", "--eval-n", "500", "--seed", "0"],
    "arithmetic": ["arithmetic", "--arch", "decoder", "--layers", "2", "--d-model", "64",
                   "--heads", "4", "--n-ctx", "16", "--lr", "2e-3", "--steps", "12000",
                   "--eval-every", "1000", "--eval-n", "1000", "--seed", "0"],
    "quadratic-seed": ["quadratic", "--preset", "seed", "--arch", "decoder", "--layers", "4",
                       "--d-model", "128", "--heads", "4", "--n-ctx", "160", "--data", "fixed",
                       "--rows", "100000", "--steps", "1900", "--eval-every", "250",
                       "--eval-n", "500", "--seed", "0"],
}

KEEP = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
        "tokenizer_config.json", "interp.json")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=sorted(RECIPES), help="models to rebuild")
    p.add_argument("--work", default=str(ROOT / "runs"), help="folder for training runs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--resume", action="store_true", help="continue runs found in --work")
    p.add_argument("--install-only", action="store_true",
                   help="only evaluate and copy finished runs from --work into the package")
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    for name in args.only or RECIPES:
        run_dir = work / name
        if not args.install_only:
            cmd = [sys.executable, "-m", "interp.train"]
            cmd += (["--resume", str(run_dir)] if args.resume and (run_dir / "resume").exists()
                    else RECIPES[name] + ["--out", str(run_dir)])
            cmd += ["--threads", str(args.threads)]
            print("+", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
        report = work / f"{name}.eval.json"
        subprocess.run([sys.executable, "-m", "interp.evaluate", str(run_dir), "--n", "1000",
                        "--json", str(report), "--quiet"], check=True, cwd=work)
        dest = SHIPPED / name
        tmp = SHIPPED / f".{name}.new"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for f in KEEP:
            if (run_dir / f).exists():
                shutil.copy2(run_dir / f, tmp / f)
        meta = json.loads((tmp / "interp.json").read_text())
        meta["evaluation"] = json.loads(report.read_text())
        meta["evaluation"]["checkpoint"] = name  # not the build machine's path
        (tmp / "interp.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        old = SHIPPED / f".{name}.old"
        if dest.exists():
            dest.rename(old)
        tmp.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
        print(f"installed {dest.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
