"""Running the command lines in a subprocess, and the one-line error they must give."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def run_here(module, *args):
    """`run`, in this process: the command's `main(argv)` with stdout and stderr captured (a
    bad-input check costs no interpreter start-up). Returns what `run` returns; an exit
    through SystemExit gives its status."""
    import contextlib
    import importlib
    import io

    mod = importlib.import_module(module if module != "probes" else "probes.__main__")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = mod.main(list(args))
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return subprocess.CompletedProcess([module, *args], rc, out.getvalue(), err.getvalue())


def one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    for n in needles:
        assert n in lines[0], lines[0]


def one_line(rc, stderr, *needles, kind="error"):
    """The promise to a user, for a command run in or out of process: exit status 2 and
    exactly one line on stderr, `error: ...`, naming every needle; no traceback. With
    kind="warning": exit status 0 and exactly one `warning: ...` line among stderr's lines."""
    lines = [l for l in stderr.strip().splitlines() if l.strip()]
    assert "Traceback" not in stderr, stderr
    if kind == "error":
        assert rc == 2, (rc, stderr)
        assert len(lines) == 1, stderr
    else:
        assert rc == 0, (rc, stderr)
        lines = [l for l in lines if l.startswith("warning: ")]
        assert len(lines) == 1, stderr
    assert lines[0].startswith(f"{kind}: "), lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


HOLD = """
import sys
from interp.io import output_lock
with output_lock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
"""


def hold_lock(path, cwd=None):
    """Another process (a real second run) holding the output lock of `path` through
    `interp.io.output_lock`, the helper every command uses; it returns once the lock is
    held. Release it with `release(proc)`."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env, cwd=cwd)
    assert proc.stdout.readline().strip() == "held"
    return proc


def release(proc):
    """End a `hold_lock` process the way a finished run ends: it leaves the lock."""
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0
