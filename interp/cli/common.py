"""What every command shares: one-line errors, the argument parser, the shared options
(checkpoint, --n, --seed, --out, --json, --quiet, --device, --dtype, --plotly-js) defined
once, and loading the model they name. Output safety (atomic writes, checked folders, locks) is `interp.io`.

Every command runs through `run_cli`: a mistake in the input (an `InterpError`, an argparse
error, an unwritable path, a request too large for memory) becomes one line on stderr starting
`error: `, exit status 2 and no traceback; a long echoed input is shortened.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from pathlib import Path

from interp.errors import InterpError, InterpWarning, shorten_words


class UsageError(InterpError):
    """A command-line argument argparse could not read."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every `finally` (locks, temporaries) runs."""


#: the one domain of every seed option: what numpy, torch and Python's random all take
SEED_MAX = 2**63 - 1


def seed_value(text: str) -> int:
    """An argparse type: a seed is an integer from 0 to 2**63-1, in every command."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; a seed is an "
                                         "integer from 0 to 2**63-1") from None
    if not 0 <= v <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"{text} is outside 0 to 2**63-1 "
                                         f"({SEED_MAX:,}); give a seed in that range")
    return v


def path_value(text: str) -> str:
    """An argparse type: a path that is not empty (an empty string is no default)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; give a path, or leave the option out")
    return text


def nonempty(text: str) -> str:
    """An argparse type: a list or name that is not empty (leave the option out instead)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; give a value, or leave the option out "
                                         "for the default")
    return text


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `error: argument --mode: invalid choice: ... (see
    PROG --help)` instead of the usage block. `--help` is unchanged."""

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")


def one_line(message: str) -> str:
    """A message as one line. An unbroken run of over 1,000 characters (an echoed input the
    raising site did not `shorten`) is shortened, and a very long message keeps its head and
    tail; paths of ordinary length are shown whole."""
    text = shorten_words(" ".join(str(message).split()), longest=1000)
    if len(text) > 1200:
        text = f"{text[:700]} … {text[-450:]}"
    return text


def _show_warning(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, InterpWarning):
        print(f"warning: {one_line(str(message))}", file=sys.stderr, flush=True)
    else:
        _default_show(message, category, filename, lineno, file, line)


_default_show = warnings.showwarning


def _say(line: str, refusal: bool = False) -> None:
    """Print an `error: ` line on stderr; in a worker started by `--nproc` (interp.launch)
    hand it to the launcher instead, which prints one line for all the workers."""
    from interp import launch

    if not launch.worker_error(line[len("error: "):] if line.startswith("error: ") else line,
                               refusal):
        print(line, file=sys.stderr)


def run_cli(fn, argv) -> int:
    """Run fn(argv); an InterpError becomes one line on stderr and exit status 2.

    Also one line: an OSError (a path the system refuses) and a MemoryError. An
    `InterpWarning` raised on the way is printed as one `warning: ` line. In a worker started
    by `--nproc` (`interp.launch`) the line goes to the launcher, and so does any other
    exception (as one line naming where it was raised), so the run ends with one line, and
    such a worker that failed or was stopped leaves at once (`interp.launch.run_worker`)."""
    from interp import launch

    return launch.run_worker(_run_cli, fn, argv) if launch.in_worker() else _run_cli(fn, argv)


def _run_cli(fn, argv) -> int:
    from interp import distributed, launch

    old_show = warnings.showwarning
    warnings.showwarning = _show_warning
    old_term = _catch_sigterm()
    quiet = None
    try:
        quiet = distributed.quiet_unless_main()
        return fn(argv) or 0
    except InterpError as e:
        _say(f"error: {one_line(str(e))}", refusal=True)
        return 2
    except OSError as e:
        where = f" {one_line(str(e.filename))}" if getattr(e, "filename", None) else ""
        _say(f"error: cannot use{where}: {e.strerror or e}; check the path and its "
             "permissions")
        return 2
    except MemoryError:
        _say(f"error: {OUT_OF_MEMORY}")
        return 2
    except Terminated:
        if launch.worker_error(launch.STOPPED):
            return 143
        print("terminated: stopped by SIGTERM; nothing half-written was left",
              file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        if launch.worker_error(launch.STOPPED):
            return 130
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:             # torch's allocators: CPU (a RuntimeError), CUDA (OOM)
        size = out_of_memory(e)
        if size is not None:
            _say(f"error: {OUT_OF_MEMORY}{size}")
            return 2
        if launch.worker_error(unexpected(e)):
            return 1
        raise
    finally:
        if quiet is not None:
            old, sink = quiet
            if sys.stdout is sink:
                sys.stdout = old
            sink.close()
        warnings.showwarning = old_show
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


def unexpected(e: BaseException) -> str:
    """An exception no check foresaw, as one line: its type, message and where it was
    raised (the innermost frame of the traceback)."""
    import traceback

    frames = traceback.extract_tb(e.__traceback__)
    at = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return one_line(f"{type(e).__name__}: {e}{at}")


OUT_OF_MEMORY = ("out of memory; ask for less (a smaller --n or --batch-size, fewer positions, "
                 "layers or targets)")


def out_of_memory(e: BaseException) -> str | None:
    """" (N GB asked)" (or "") when `e` is an allocator's out-of-memory error; None else."""
    import re

    text = str(e)
    if type(e).__name__ != "OutOfMemoryError" and "can't allocate memory" not in text:
        return None
    m = re.search(r"allocate (\d+) bytes", text)
    return f" (one allocation of {int(m[1]) / 2**30:,.1f} GiB was refused)" if m else ""


def _on_sigterm(signum, frame):
    raise Terminated()


def _catch_sigterm():
    """SIGTERM handled like SIGINT: raised as an exception, so locks and temporaries are
    removed by the code that made them. Returns the handler to restore (None off the main
    thread, where Python cannot set one)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        return signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):
        return None


def at_most(option: str, value: int, limit: int, why: str) -> int:
    """Refuse a count above `limit` with a message that says what is possible."""
    if value > limit:
        raise InterpError(f"{option} {value} is more than {why}; ask for fewer "
                          f"({option} {limit})")
    return value


# -- shared options -----------------------------------------------------------------------
def add_options(p: argparse.ArgumentParser, *, checkpoint: str | None = None,
                n: tuple[int, str] | None = None, seed: tuple[int, str] | None = None,
                out: str | None = None, json: str | None = None, quiet: bool = True,
                device: bool = True, report: bool = False,
                device_map: bool = True, nproc: bool = False) -> argparse.ArgumentParser:
    """Add the options every command spells the same way; each is added when its argument is
    given (its help text, or (default, help) for --n and --seed):

        checkpoint   positional, default the shipped `quadratic-small`
        --n N        how many examples / prompts (also --count N: under torchrun, whose
                     own options make `--n` ambiguous)
        --seed S     the seed of the examples
        --out DIR    the output folder (replaced whole, or written into by `train`)
        --json FILE  one JSON file
        --quiet      no progress on stderr
        --device     cpu (default), cuda, cuda:N, mps or auto
        --dtype      float32 (default), bfloat16 or float16
        --device-map (device_map=True, with --device) auto, balanced, sequential, or module
                     name -> device as JSON or a .json file: the model split across devices
        --plotly-js  (report=True) inline (default) or file: how report.html gets plotly.js
                     (`write_page` writes it)
        --nproc N    (nproc=True) share the sweep over N processes (`interp.launch`; the
                     command then calls `interp.launch.relaunch` before it loads anything)
    """
    from interp.models import DEFAULT_MODEL

    if checkpoint is not None:
        p.add_argument("checkpoint", nargs="?", default=DEFAULT_MODEL,
                       help=checkpoint.format(default=DEFAULT_MODEL))
    if n is not None:
        # --count: the same option, for launchers (torchrun) that take --n as their own
        p.add_argument("--n", "--count", dest="n", type=int, default=n[0], help=n[1])
    if seed is not None:
        p.add_argument("--seed", type=seed_value, default=seed[0],
                       help=f"{seed[1] + ' ' if seed[1] else ''}(0 to 2**63-1)")
    if out is not None:
        p.add_argument("--out", metavar="DIR", type=path_value, help=out)
    if json is not None:
        p.add_argument("--json", metavar="FILE", type=path_value, help=json)
        p.add_argument("--force", action="store_true",
                       help="let --json overwrite an existing file that is not an earlier "
                            "output of this command")
    if device:
        p.add_argument("--device", default="cpu",
                       help="cpu (default), cuda, cuda:N, mps, or auto (CUDA when present)")
        p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                       help="weights and activations (default float32)")
        if device_map:
            p.add_argument("--device-map", metavar="MAP", type=nonempty, default=None,
                           help="split the model across devices, each module run where its "
                                "weights are: auto (= balanced), balanced, sequential, or a "
                                'JSON object (or .json file) of module -> device, e.g. '
                                '{"transformer.h.0": "cuda:0", "transformer.h.1": "cpu", '
                                '...}; instead of --device; not for native models')
    if quiet:
        p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    if report:
        from interp.viz.page import PLOTLY_FILE, PLOTLY_JS

        p.add_argument("--plotly-js", choices=PLOTLY_JS, default="inline",
                       help="inline (default): report.html holds plotly.js and opens alone; "
                            f"file: it loads {PLOTLY_FILE} written beside it (3.5 MB saved "
                            "per report when many reports share a folder's copy)")
    if nproc:
        from interp.launch import add_option

        add_option(p)
    return p


#: what a command's --out folder may hold besides its own files when --plotly-js file
REPORT_FILES = ("plotly.min.js",)


def write_page(page, path, args) -> Path:
    """Write a report page as the command line asks (--plotly-js; inline without it)."""
    return page.write(path, plotly_js=getattr(args, "plotly_js", "inline") or "inline")


def positive(option: str, value: int, limit: int | None = None, why: str = "") -> int:
    """Refuse a count below 1, or (with `limit`) above it."""
    if value < 1:
        raise InterpError(f"{option} must be at least 1, got {value}")
    return at_most(option, value, limit, why) if limit is not None else value


def check_device(args) -> None:
    """Fail before any work when --device or --dtype cannot be used on this machine."""
    from interp import distributed
    from interp.models import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    resolve_dtype(args.dtype)
    distributed.use_device(device)               # gloo for a CPU sweep, NCCL for CUDA
    if getattr(args, "device_map", None) is not None:    # its devices; its modules at load
        from interp.models.devmap import parse_device_map

        if getattr(args, "nproc", 1) > 1 or distributed.launched():
            raise InterpError("--device-map splits one model across the devices; under --nproc "
                              "or a launcher each process would hold a split copy: give one")
        if args.device != "cpu":
            raise InterpError(f"--device {args.device} and --device-map both given; give one "
                              "(the map names every module's device)")
        args.device_map = parse_device_map(args.device_map)


def load(args):
    """The checkpoint the command line names, read once on --device with --dtype
    (`interp.models.Checkpoint`; `.bridge()` for the TransformerBridge)."""
    from interp.models import load_checkpoint

    return load_checkpoint(args.checkpoint, getattr(args, "device", "cpu"),
                           getattr(args, "dtype", None), getattr(args, "device_map", None))


def check_outputs(args, marker: str, own) -> Path | None:
    """Check a command's --json file and --out folder before any work (see `interp.io`):
    the file must be writable and outside the folder, the folder new, empty or an earlier
    output of this command (recognised by `marker` and holding only `own` files). Returns
    the --out path, or None when no folder was asked for."""
    from interp.io import check_file_outside, check_replaceable_dir

    if getattr(args, "json", None):
        check_file_outside(args.json, args.out)
        check_json(args, marker)
    if args.out:
        outside_checkpoint(args, args.out, "--out")
    out = check_replaceable_dir(args.out, marker, "--out", own=own) if args.out else None
    from interp import distributed

    if not distributed.is_main():       # launched: every process checks, the main one writes
        args.json = None
        if hasattr(args, "quiet"):      # and reports progress
            args.quiet = True
        return None
    return out


def checkpoint_dir(args) -> Path | None:
    """The folder of the checkpoint a command line names (None when it names none, or one
    the loader will refuse with its own message)."""
    name = getattr(args, "checkpoint", None)
    if not name:
        return None
    from interp.models.checkpoint import resolve

    try:
        return resolve(name)
    except InterpError:
        return None


def outside_checkpoint(args, path, option: str) -> None:
    """Refuse an output path inside the checkpoint being analysed (it would overwrite or
    clutter the model: a `--json CKPT/config.json` replaced the model's config)."""
    from interp.io import same_or_inside

    ckpt = checkpoint_dir(args)
    full = Path(os.path.abspath(path))
    if ckpt is not None and (same_or_inside(full, ckpt) or same_or_inside(full.parent, ckpt)):
        raise InterpError(f"{option} {path} lies inside the checkpoint {ckpt} that this "
                          "command reads; write it outside the checkpoint folder")


def check_json(args, owner: str) -> Path:
    """The one check of a --json FILE, before any work: not empty, not inside the loaded
    checkpoint, writable, and either new or an earlier output of the same command
    (recognised by its `interp_output` field) unless --force; the file is then marked as
    this command's (`interp.io.claim_json`)."""
    from interp.io import check_writable, claim_json, earlier_output

    path = Path(args.json)
    outside_checkpoint(args, path, "--json")
    check_writable(path)
    if path.is_file() and not getattr(args, "force", False) and \
            not earlier_output(path, owner):
        raise InterpError(f"--json {args.json} exists and is not an earlier output of this "
                          "command; give a new file name, or add --force to overwrite it")
    claim_json(path, owner)
    return path
