"""Write constraints.txt, the lock: the exact versions of every package (transitive ones
included) that the README's commands install, resolved in a fresh virtual environment.

    python scripts/lock.py            # resolve anew from pyproject's ranges, write constraints.txt
    python scripts/lock.py --check    # install with the current lock in a fresh env, run pytest

Why `pip freeze` of a fresh environment (and not pip-tools or `uv pip compile`): the lock is
then exactly what the README's own commands (plain pip, torch's local CPU build first) put
on a machine of this kind, the CPU torch included; a resolver of its own would look only at
the registry, where an unpinned torch is a multi-GB CUDA build. Local version labels
(`2.13.0+cpu`) are dropped, since `==2.13.0` matches them and the README installs torch
first. The package itself (editable) and the installer's own tools are left out.

Refresh on purpose: run it, then `python scripts/lock.py --check` (or the README's test
command), and commit constraints.txt only with the suite green.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "constraints.txt"
TORCH = "torch==2.13.0"
SKIP = {"interp", "pip", "setuptools", "wheel"}


def fresh_env(where: Path, constraints: Path | None) -> Path:
    """A new venv with torch, then the package and its test extra; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    py = where / "bin" / "python"
    pip = [str(py), "-m", "pip", "install", "-q"]
    subprocess.run(pip + [TORCH], check=True)
    extra = ["-c", str(constraints)] if constraints else []
    subprocess.run(pip + extra + ["-e", f"{ROOT}[test]"], check=True)
    return py


def frozen(py: Path) -> list[str]:
    out = subprocess.run([str(py), "-m", "pip", "freeze", "--exclude-editable"], check=True,
                         capture_output=True, text=True).stdout
    lines = []
    for line in out.splitlines():
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^+\s]+)(\+\S+)?", line.strip())
        if not m:  # a direct URL or an editable install: not a registry pin
            continue
        if m.group(1).lower().replace("_", "-") in SKIP:
            continue
        lines.append(f"{m.group(1)}=={m.group(2)}")
    return sorted(lines, key=str.lower)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="install with the current lock in a fresh env and run the suite")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="interp-lock-") as tmp:
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        if a.check:
            if not LOCK.is_file():
                print(f"error: no {LOCK.name}; run python scripts/lock.py first", file=sys.stderr)
                return 2
            py = fresh_env(Path(tmp) / "venv", LOCK)
            return subprocess.run([str(py), "-m", "pytest", "-n", "2"], cwd=ROOT,
                                  env=env).returncode
        py = fresh_env(Path(tmp) / "venv", None)
        pins = frozen(py)
        py_version = subprocess.run([str(py), "-c", "import platform; "
                                     "print(platform.python_version())"],
                                    capture_output=True, text=True).stdout.strip()
        head = ("# The lock: exact versions the suite passed with (written by scripts/lock.py "
                f"in a fresh venv, Python {py_version}).\n"
                "# Install torch==2.13.0 first (the CPU build), then: "
                "pip install -c constraints.txt -e \".[test]\"\n")
        tmp_lock = LOCK.with_name(f".{LOCK.name}.tmp-{os.getpid()}")
        tmp_lock.write_text(head + "\n".join(pins) + "\n")
        os.replace(tmp_lock, LOCK)
        print(f"wrote {LOCK.name}: {len(pins)} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
