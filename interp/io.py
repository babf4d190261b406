"""Safe output: atomic writes, checked destinations, a lock per output, stale temporaries.

    write_atomic(path, text_or_bytes)       # temp file beside it, then one rename
    write_json(path, obj)                   # the same, after checking the destination
    replace_dir_atomic(fill, folder)        # build a folder beside it, then swap it in
    with output_lock(folder): ...           # one writer per output at a time

A crash leaves the old output or the new one, never half of one; nothing that is not
provably ours is ever deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
from pathlib import Path

from interp.errors import InterpError

# -- temporary files ----------------------------------------------------------------------
# Our temporary names, distinctive so that no user's file matches them:
#   `.NAME.interp-tmp-PID-XXXXXXXX`  a file or folder being written for NAME,
#   `.NAME.interp-old-PID-XXXXXXXX`  a replaced output folder, between two renames,
#   `.NAME.interp-lock`              the lock of NAME's writer (see `output_lock`).
# A temporary folder holds the sentinel file PARTIAL while it is ours to delete; a folder
# without it is never removed, whatever its name.
PARTIAL = ".interp-partial"
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.interp-(?P<kind>tmp|old)-(?P<pid>\d+)-[0-9a-f]{8}$")

# Files an operating system or an editor drops into a folder that a user merely browsed:
# they do not make an earlier output someone else's folder. A replaced output folder drops
# them (the new folder is built from scratch).
# Folders a user may have put work in (.ipynb_checkpoints, .vscode, .idea) are not here:
# they count as someone else's files.
OS_METADATA = frozenset({".DS_Store", "Thumbs.db", "ehthumbs.db", "desktop.ini",
                         "Desktop.ini", ".directory", ".localized"})


def is_os_metadata(name: str) -> bool:
    """A file an OS creates by itself when a folder is browsed (`.DS_Store`, `._x`)."""
    return name in OS_METADATA or name.startswith("._")


def temp_path(target: str | os.PathLike, kind: str = "tmp") -> Path:
    """A fresh temporary name beside `target` (kind "tmp" or "old"), ours by its form."""
    target = Path(os.path.abspath(target))
    return target.with_name(f".{target.name}.interp-{kind}-{os.getpid()}-"
                            f"{secrets.token_hex(4)}")


def make_temp_dir(target: str | os.PathLike) -> Path:
    """Create a temporary folder beside `target` holding the sentinel PARTIAL (the folder
    is the umask's mode, like mkdir's). `replace_dir_atomic` removes PARTIAL only once the folder
    has become the output, so a killed run never leaves a temporary that is not provably ours."""
    tmp = temp_path(target)
    tmp.mkdir()
    (tmp / PARTIAL).touch()
    return tmp


def _own_temp(p: Path):
    """(kind, pid) when `p` is provably one of our temporaries: a regular file of our name
    form, or a folder of our name form holding PARTIAL; None otherwise."""
    m = _TEMP_RE.match(p.name)
    if not m or p.is_symlink():
        return None
    if p.is_file() and m["kind"] == "tmp":
        return m
    if p.is_dir() and (m["kind"] == "old" or (p / PARTIAL).is_file()):
        return m
    return None


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
    """Remove our own temporaries in `folder` whose writing process is gone (a run killed
    while writing); with `name`, only those of that target name. Returns the names removed.

    Only provably own entries are touched: files of our distinctive name form, folders of
    that form holding the sentinel PARTIAL. A replaced output (`.NAME.interp-old-*`) without
    PARTIAL was left between the two renames of `replace_dir_atomic`: it is renamed back to
    NAME when NAME is missing, and otherwise left alone. Call it while holding the lock."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _own_temp(p)
        if not m or (name is not None and m["name"] != name) or pid_alive(int(m["pid"])):
            continue
        try:
            if p.is_dir():
                if m["kind"] == "old" and not os.path.lexists(folder / m["name"]):
                    os.rename(p, folder / m["name"])        # restore an interrupted swap:
                    continue                                # never delete the only copy
                if (p / PARTIAL).is_file():
                    shutil.rmtree(p)
                else:
                    continue
            else:
                p.unlink()
            removed.append(p.name)
        except OSError:
            pass
    return removed


def probe_writable(folder: Path, what: str) -> None:
    """Create and remove a file in `folder`: the only sure test that it can be written."""
    probe = temp_path(Path(folder) / "probe")
    try:
        probe.touch()
    except OSError as e:
        raise InterpError(f"cannot write {what}: folder {folder} is not writable "
                          f"({e.strerror or e}); choose another path") from None
    with contextlib.suppress(OSError):
        probe.unlink()


def check_writable(path: str | os.PathLike) -> Path:
    """Fail early (before any slow work) when an output file cannot be written: its folder
    must exist and accept a file, and the path must not be a folder. Our own stale temporary
    files of this name left by a killed run are removed."""
    path = Path(path)
    parent = Path(os.path.abspath(path)).parent
    if not parent.is_dir():
        raise InterpError(f"cannot write {path}: folder {path.parent} does not exist; create "
                          "it or choose another path")
    if path.is_dir():
        raise InterpError(f"cannot write {path}: it is a directory; give a file name")
    if path.exists() and not path.is_file():
        raise InterpError(f"cannot write {path}: it is not a regular file; give a file name")
    probe_writable(parent, str(path))
    clean_stale_temps(parent, Path(os.path.abspath(path)).name)
    return path


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write text (UTF-8) or bytes atomically: a temp file of ours beside the target, then a
    rename, so a crash leaves the old file or the new one, never half of one."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


#: --json files a command checked (`claim_json`): absolute path -> owner; `write_json` marks
#: what it writes there with `OWNER_KEY`, so a later run recognises its own earlier output
_CLAIMED: dict[str, str] = {}
OWNER_KEY = "interp_output"
#: an existing --json file larger than this is nobody's earlier output (not read whole)
EARLIER_MAX = 256 * 2**20


def claim_json(path: str | os.PathLike, owner: str) -> None:
    """Mark `path` as a --json output of `owner` (e.g. "probes.json"): `write_json` adds
    `{"interp_output": owner}` to the object it writes there."""
    _CLAIMED[os.path.abspath(path)] = owner


def earlier_output(path: str | os.PathLike, owner: str) -> bool:
    """Whether the file at `path` is a JSON object that `owner` wrote (its `interp_output`
    field); anything else -- a user's file, a checkpoint's config, another command's
    output -- is not."""
    p = Path(path)
    try:
        if p.stat().st_size > EARLIER_MAX:
            return False
        obj = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(obj, dict) and obj.get(OWNER_KEY) == owner


def write_json(path: str | os.PathLike, obj, sort_keys: bool = False, check: bool = True
               ) -> None:
    """Write JSON (indented) atomically; with `check`, after checking the destination. A
    path claimed by a command (`claim_json`) gets the owner field in its object."""
    path = check_writable(path) if check else Path(path)
    owner = _CLAIMED.get(os.path.abspath(path))
    if owner is not None and isinstance(obj, dict):
        obj = {OWNER_KEY: owner, **obj}
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n")


def ignorable(folder: Path, name: str) -> bool:
    """An entry of `folder` that says nothing about whose folder it is: OS or editor
    metadata, or one of our own temporaries (removed or restored under the lock)."""
    p = folder / name
    if name == PARTIAL:            # a sentinel left by a run killed right after its rename
        return p.is_file() and not p.is_symlink()
    if is_os_metadata(name):
        return p.is_file() and not p.is_symlink()
    return _own_temp(p) is not None


def check_replaceable_dir(path: str | os.PathLike, marker: str, option: str,
                          own=None, replaced: bool = True) -> Path:
    """Fail early unless `path` can be replaced whole by a command's output folder: it must
    not be a file, its parent must exist and be writable, and if it holds files it must be an
    earlier output of the same command (recognised by the file `marker`, and with `own` (a
    tuple of names or a test of a name), by holding nothing but the command's own files), so
    nothing else is lost. OS/editor metadata (`.DS_Store`, `.ipynb_checkpoints`, ...) and our
    own temporaries are ignored; the replaced folder drops the metadata. The folder must not
    hold the current folder (`--out .`): swapping it would leave the user's shell in a
    deleted folder (`replaced=False` for a command that writes into the folder instead).
    Nothing is deleted here: `output_lock` removes stale temporaries once it holds the
    lock."""
    path = Path(path)
    full = Path(os.path.abspath(path))
    if full.is_symlink():
        raise InterpError(f"{option} {path} is a symbolic link; give the folder itself "
                          f"({os.path.realpath(full)}) or a new folder")
    if path.exists() and not path.is_dir():
        raise InterpError(f"{option} {path} is a file; give a folder")
    if not full.parent.is_dir():
        raise InterpError(f"cannot create {option} {path}: folder {path.parent} does not "
                          "exist")
    probe_writable(full.parent, f"{option} {path}")
    if full.is_dir():
        probe_writable(full, f"{option} {path}")
        names = sorted(n for n in os.listdir(full) if not ignorable(full, n))
        is_own = own if callable(own) else (lambda n: own is None or n in own)
        foreign = [n for n in names if not is_own(n)]
        if names and (not (full / marker).exists() or foreign):
            listed = foreign if (full / marker).exists() else names
            shown = ", ".join(listed[:3]) + (" ..." if len(listed) > 3 else "")
            raise InterpError(f"{option} {path} is a folder that holds other files ({shown}); "
                              "give a new folder or an earlier output of this command (it is "
                              "replaced whole)")
    if replaced and same_or_inside(os.getcwd(), full):
        raise InterpError(f"{option} {path} is the current folder or holds it, and the output "
                          f"replaces it whole; give a folder inside it (e.g. {option} "
                          "results)")
    return path


def check_file_outside(path: str | os.PathLike | None, out: str | os.PathLike | None,
                       option: str = "--json") -> None:
    """Refuse an output file inside an output folder that is replaced whole (it would be
    written, then swapped away)."""
    if path and out and same_or_inside(Path(os.path.abspath(path)).parent, out):
        raise InterpError(f"{option} {path} lies inside --out {out}, which is replaced whole; "
                          f"give a path outside it")


def same_or_inside(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether path `a` is `b` or lies inside it (symbolic links resolved)."""
    a, b = Path(os.path.realpath(a)), Path(os.path.realpath(b))
    return a == b or b in a.parents


@contextlib.contextmanager
def output_lock(path: str | os.PathLike, option: str = "--out", clean: bool = True):
    """Hold an exclusive lock on `.NAME.interp-lock` beside the output `path` while a command
    computes and writes it: a second command on the same path (in this process or another)
    refuses at once instead of mixing the two outputs. The kernel frees the lock when its
    holder dies, so a killed run never blocks the next one. Once the lock is held, our own
    stale temporaries of `path` (beside it, and with `clean` inside it) are removed. With
    `path` None (no output asked for) nothing is locked."""
    import fcntl

    if path is None:
        yield None
        return

    full = Path(os.path.abspath(path))
    lock = full.with_name(f".{full.name}.interp-lock")
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as e:
            raise InterpError(f"cannot write {option} {path}: {e.strerror or e}; choose "
                              "another path") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid = "?"
            with contextlib.suppress(OSError, ValueError):
                pid = int(os.read(fd, 32).decode().strip() or 0) or "?"
            os.close(fd)
            raise InterpError(f"{option} {path} is being written by another run (pid {pid}); "
                              "wait for it to finish or choose another folder") from None
        try:                       # the file we locked must still be the one at `lock`
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except OSError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        clean_stale_temps(full.parent, full.name)
        if clean:
            clean_stale_temps(full)
        yield path
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()              # while still holding it: the next run makes a new one
        os.close(fd)


def current_umask() -> int:
    """The process's umask, read without changing it where /proc says it (Linux); else by
    the set-and-restore dance (not thread-safe, used only where /proc is absent)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def umask_modes(folder: Path) -> None:
    """Give every regular file under `folder` the mode a plain `open` would (0666 less the
    umask): some writers (safetensors) create 0600 files, which left a shared checkpoint's
    weights unreadable to the others who may read its config."""
    mode = 0o666 & ~current_umask()
    for p in Path(folder).rglob("*"):
        if p.is_file() and not p.is_symlink() and (p.stat().st_mode & 0o777) != mode:
            with contextlib.suppress(OSError):
                os.chmod(p, mode)


def replace_dir_atomic(fill, target: Path) -> None:
    """Build a directory with `fill(tmpdir)` next to `target`, then swap it into place.

    A crash leaves either the old directory or the new one, never a half-written one, and a
    failure of the swap itself puts the old directory back. Stray temporary folders start
    with a dot and have a form no user's file has: `.NAME.interp-tmp-PID-XXXXXXXX` (holding
    the sentinel `.interp-partial` while it is being filled) and `.NAME.interp-old-PID-...`
    (the previous output between the two renames). The loader ignores them; the next command
    line that writes `target` removes the first and puts the second back when `target` is
    missing (``clean_stale_temps``). The new folder replaces the old one whole:
    nothing of the old folder (OS metadata such as `.DS_Store` included) is carried over.
    """
    target = Path(os.path.abspath(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(target)
    old = temp_path(target, "old")
    moved = False
    try:
        fill(tmp)
        umask_modes(tmp)
        if os.path.lexists(target):
            # a complete output still holding a sentinel (its writer was killed right after
            # its rename): the sentinel goes first, so the copy set aside is never deletable
            with contextlib.suppress(OSError):
                (target / PARTIAL).unlink(missing_ok=True)
            os.rename(target, old)
            moved = True
        os.rename(tmp, target)
        # the sentinel leaves only now: a run killed before the rename left a temporary
        # that is still provably ours (the next run removes it), never an orphan without it
        (target / PARTIAL).unlink(missing_ok=True)
    except BaseException:
        if moved and os.path.lexists(old) and not os.path.lexists(target):
            try:
                os.rename(old, target)            # the previous output, back in its place
            except OSError:
                pass                              # left as .NAME.interp-old-*: restored later
        if os.path.lexists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if moved:
        try:
            (old / PARTIAL).touch()               # provably ours to delete from now on
        except OSError:
            return
        shutil.rmtree(old, ignore_errors=True)
