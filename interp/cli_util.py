"""Shared plumbing of the command-line entry points: one-line errors, argument parsing,
checked and atomic output files, a lock per output folder, stale temporary files.

Every command runs through `run_cli`: a mistake in the input (an `InterpError`, an argparse
error, an unwritable path, a request too large for memory) becomes one line on stderr starting
`error: `, exit status 2 and no traceback; a long echoed input is shortened.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import time
import warnings
from pathlib import Path

from interp.errors import InterpError, InterpWarning, shorten_words


class UsageError(InterpError):
    """A command-line argument argparse could not read."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `error: argument --mode: invalid choice: ... (see
    PROG --help)` instead of the usage block. `--help` is unchanged."""

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")


def one_line(message: str) -> str:
    """A message as one line; each long unbroken run of characters (an echoed input) is
    shortened, and a very long message keeps its head and tail."""
    text = shorten_words(" ".join(str(message).split()))
    if len(text) > 1200:
        text = f"{text[:700]} … {text[-450:]}"
    return text


def _show_warning(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, InterpWarning):
        print(f"warning: {one_line(str(message))}", file=sys.stderr, flush=True)
    else:
        _default_show(message, category, filename, lineno, file, line)


_default_show = warnings.showwarning


def run_cli(fn, argv) -> int:
    """Run fn(argv); an InterpError becomes one line on stderr and exit status 2.

    Also one line: an OSError (a path the system refuses) and a MemoryError. An
    `InterpWarning` raised on the way is printed as one `warning: ` line."""
    old_show = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        return fn(argv) or 0
    except InterpError as e:
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        print(f"error: cannot use{one_line(where)}: {e.strerror or e}; check the path and its "
              "permissions", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory; ask for less (a smaller --n or --batch-size)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = old_show


def at_most(option: str, value: int, limit: int, why: str) -> int:
    """Refuse a count above `limit` with a message that says what is possible."""
    if value > limit:
        raise InterpError(f"{option} {value} is more than {why}; ask for fewer "
                          f"({option} {limit})")
    return value


# -- temporary files ----------------------------------------------------------------------
# Our temporary names: `.NAME.tmp-PID` (files), `.NAME.tmp-PID-XXXX` (folders),
# `.NAME.old-PID` (a replaced folder), `.NAME.lock` (a folder's writer, holding its pid).
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)(?:-[A-Za-z0-9_]+)?$")


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temps(folder: str | os.PathLike, name: str | None = None) -> list[str]:
    """Remove our own temporary files and folders in `folder` whose writing process is gone
    (a run killed while writing); with `name`, only those of that target name. Returns the
    names removed. Files of other programs and of live runs are never touched."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TEMP_RE.match(p.name)
        if not m or (name is not None and m["name"] != name) or pid_alive(int(m["pid"])):
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p.name)
        except OSError:
            pass
    return removed


def probe_writable(folder: Path, what: str) -> None:
    """Create and remove a file in `folder`: the only sure test that it can be written."""
    probe = folder / f".interp-probe.tmp-{os.getpid()}"
    try:
        probe.touch()
    except OSError as e:
        raise InterpError(f"cannot write {what}: folder {folder} is not writable "
                          f"({e.strerror or e}); choose another path") from None
    with contextlib.suppress(OSError):
        probe.unlink()


def check_writable(path: str | os.PathLike) -> Path:
    """Fail early (before any slow work) when an output file cannot be written: its folder
    must exist and accept a file, and the path must not be a folder. Stale temporary files
    of this name left by a killed run are removed."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InterpError(f"cannot write {path}: folder {path.parent} does not exist; create "
                          "it or choose another path")
    if path.is_dir():
        raise InterpError(f"cannot write {path}: it is a directory; give a file name")
    if path.exists() and not path.is_file():
        raise InterpError(f"cannot write {path}: it is not a regular file; give a file name")
    probe_writable(path.parent, str(path))
    clean_stale_temps(path.parent, path.name)
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


def check_replaceable_dir(path: str | os.PathLike, marker: str, option: str,
                          own=None) -> Path:
    """Fail early unless `path` can be replaced whole by a command's output folder: it must
    not be a file, its parent must exist and be writable, and if it holds files it must be an
    earlier output of the same command (recognised by the file `marker`, and with `own` (a
    tuple of names or a test of a name), by holding nothing but the command's own files), so
    nothing else is lost. Stale
    temporary files of earlier killed runs are removed first."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InterpError(f"{option} {path} is a file; give a folder")
    if not path.parent.is_dir():
        raise InterpError(f"cannot create {option} {path}: folder {path.parent} does not exist")
    probe_writable(path.parent, f"{option} {path}")
    clean_stale_temps(path.parent, path.name)
    if path.is_dir():
        clean_stale_temps(path)
        names = sorted(p.name for p in path.iterdir())
        is_own = own if callable(own) else (lambda n: own is None or n in own)
        foreign = [n for n in names if not is_own(n)]
        if names and (not (path / marker).exists() or foreign):
            listed = foreign if (path / marker).exists() else names
            shown = ", ".join(listed[:3]) + (" ..." if len(listed) > 3 else "")
            raise InterpError(f"{option} {path} is a folder that holds other files ({shown}); "
                              "give a new folder or an earlier output of this command (it is "
                              "replaced whole)")
    return path


@contextlib.contextmanager
def output_lock(path: str | os.PathLike, option: str = "--out"):
    """Hold `.NAME.lock` beside the output `path` while a command computes and writes it: a
    second command on the same path refuses at once instead of mixing the two outputs. A lock
    left by a killed run (its pid is gone) is taken over."""
    path = Path(path)
    lock = path.with_name(f".{path.name}.lock")
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                text = lock.read_text().strip()
                pid = int(text or 0)
                fresh = not text and time.time() - lock.stat().st_mtime < 10
            except (OSError, ValueError):
                pid, fresh = 0, False
            if fresh or (pid and pid_alive(pid) and pid != os.getpid()):
                raise InterpError(f"{option} {path} is being written by another run (pid "
                                  f"{pid or '?'}); wait for it to finish or choose another folder"
                                  ) from None
            with contextlib.suppress(OSError):
                lock.unlink()
            continue
        except OSError as e:
            raise InterpError(f"cannot write {option} {path}: {e.strerror or e}; choose "
                              "another path") from None
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        break
    else:
        raise InterpError(f"{option} {path}: could not take the lock {lock}; remove it if no "
                          "run is writing there")
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
