"""Shared plumbing of the command-line entry points: one-line errors, atomic output files."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from interp.errors import InterpError


def run_cli(fn, argv) -> int:
    """Run fn(argv); an InterpError becomes one line on stderr and exit status 2."""
    try:
        return fn(argv) or 0
    except InterpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def check_writable(path: str | os.PathLike) -> Path:
    """Fail early (before any slow work) when an output file cannot be written."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InterpError(f"cannot write {path}: folder {path.parent} does not exist; create "
                          "it or choose another path")
    if path.is_dir():
        raise InterpError(f"cannot write {path}: it is a directory; give a file name")
    return path


def write_json(path: str | os.PathLike, obj) -> None:
    """Write JSON atomically: a temp file beside the target, then a rename."""
    path = check_writable(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_replaceable_dir(path: str | os.PathLike, marker: str, option: str) -> Path:
    """Fail early unless `path` can be replaced whole by a command's output folder: it must
    not be a file, its parent must exist, and if it holds files it must be an earlier output
    of the same command (recognised by the file `marker`), so nothing else is lost."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InterpError(f"{option} {path} is a file; give a folder")
    if not path.parent.is_dir():
        raise InterpError(f"cannot create {option} {path}: folder {path.parent} does not exist")
    if path.is_dir() and any(path.iterdir()) and not (path / marker).exists():
        raise InterpError(f"{option} {path} is a folder that holds other files; give a new "
                          f"folder or an earlier output of this command (it is replaced whole)")
    return path
