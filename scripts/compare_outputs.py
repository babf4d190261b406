"""Record the machine outputs of the main commands, and compare two recordings.

    python scripts/compare_outputs.py record DIR     # runs the commands below, writes DIR/
    python scripts/compare_outputs.py compare A B    # every CSV/JSON and stdout, A against B

Used to show that a refactor changes no figure: record before, record after, compare. Values
are compared exactly; fields that measure time are skipped; columns renamed on purpose
(`RENAMED`) are matched under their new names. Exit status 1 when anything
differs (each difference is printed), 0 when all agree.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

ABLATE = ["--tokens", "x,^,=", "--controls", "5"]
COMMANDS = {
    "classify-qs": ["interp.classify_heads", "quadratic-small", "--n", "128", "--no-report"],
    "classify-t5": ["interp.classify_heads", "quadratic-t5-small", "--n", "48", "--no-report"],
    "classify-attn2l": ["interp.classify_heads", "induction-attn2l", "--n", "16", "--no-report"],
    "ablate-qs": ["circuits.ablate", "quadratic-small", *ABLATE, "--n", "96"],
    "ablate-t5": ["circuits.ablate", "quadratic-t5-small", *ABLATE, "--n", "48", "--no-decode"],
    "ablate-ar": ["circuits.ablate", "arithmetic", "--tokens", "+,=", "--controls", "5",
                  "--n", "64", "--mode", "mean"],
    "patch-qs": ["circuits.patch", "quadratic-small", "--n", "8"],
    "patch-t5": ["circuits.patch", "quadratic-t5-small", "--n", "6"],
    "induction-attn2l": ["circuits.induction", "induction-attn2l", "--n", "16",
                         "--icl-windows", "64", "--no-report"],
    "induction-smeared1l": ["circuits.induction", "induction-smeared1l", "--n", "16",
                            "--icl-windows", "64", "--no-report"],
    "evaluate-qs": ["interp.evaluate", "quadratic-small", "--n", "200"],
    "evaluate-t5": ["interp.evaluate", "quadratic-t5-small", "--n", "60"],
}
# intended renames, applied to the recording made before them: {folder prefix: {old: new}}
RENAMED = {"classify-": {"induction": "induction_detector",          # issue #12: two scores
                         "induction_uniform": "induction_detector_uniform"}}  # had one name
# run-to-run variation: wall and CPU clocks
SKIP = ("seconds", "time", "wall", "cpu_s", "elapsed")
OUTS = {"interp.evaluate": "--json"}


def record(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=False)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    for name, (module, *args) in COMMANDS.items():
        dest = folder / name
        out = ["--json", str(dest) + ".json"] if module in OUTS else ["--out", str(dest)]
        r = subprocess.run([sys.executable, "-m", module, *args, *out, "--quiet"], env=env,
                           capture_output=True, text=True)
        (folder / f"{name}.stdout").write_text(r.stdout)
        print(f"{name}: exit {r.returncode}", flush=True)
        if r.returncode:
            print(r.stderr[-2000:])


def _skip(key: str) -> bool:
    return any(s in key.lower() for s in SKIP)


def _diff(a, b, where: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if _skip(str(k)):
                continue
            if k not in a or k not in b:
                out.append(f"{where}.{k}: only in {'after' if k not in a else 'before'}")
            else:
                _diff(a[k], b[k], f"{where}.{k}", out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{where}: length {len(a)} != {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, f"{where}[{i}]", out)
    elif isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return
    elif a != b:
        out.append(f"{where}: {a!r} != {b!r}")


def _renamed(x, names: dict):
    if isinstance(x, dict):
        return {names.get(k, k): _renamed(v, names) for k, v in x.items()}
    if isinstance(x, list):
        return [_renamed(v, names) for v in x]
    return x


def _load(p: Path, names: dict | None = None):
    if p.suffix == ".json":
        return _renamed(json.loads(p.read_text()), names or {})
    if p.suffix == ".csv":
        return _renamed(list(csv.DictReader(io.StringIO(p.read_text()))), names or {})
    # stdout: drop lines that report time
    return [ln for ln in p.read_text().splitlines() if not _skip(ln.replace(" s ", " seconds "))
            and " s)" not in ln and "min" not in ln]


def compare(a: Path, b: Path) -> int:
    files = sorted({p.relative_to(a) for p in a.rglob("*") if p.is_file()} |
                   {p.relative_to(b) for p in b.rglob("*") if p.is_file()})
    problems: list[str] = []
    n = 0
    for rel in files:
        if rel.suffix not in (".json", ".csv", ".stdout"):
            continue
        if not (a / rel).exists() or not (b / rel).exists():
            problems.append(f"{rel}: only in {'after' if not (a / rel).exists() else 'before'}")
            continue
        n += 1
        names = {k: v for prefix, m in RENAMED.items() if str(rel).startswith(prefix)
                 for k, v in m.items()}
        _diff(_load(a / rel, names), _load(b / rel), str(rel), problems)
    for p in problems:
        print(p)
    print(f"{n} files compared, {len(problems)} differences")
    return 1 if problems else 0


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "record":
        record(Path(argv[1]))
        return 0
    if len(argv) == 3 and argv[0] == "compare":
        return compare(Path(argv[1]), Path(argv[2]))
    print("error: use `record DIR` or `compare A B`", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
