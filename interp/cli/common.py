"""What every command shares: one-line errors, the argument parser, the shared options
(checkpoint, --n, --seed, --out, --json, --quiet, --device, --dtype) defined once, and loading
the model they name. Output safety (atomic writes, checked folders, locks) is `interp.io`.

Every command runs through `run_cli`: a mistake in the input (an `InterpError`, an argparse
error, an unwritable path, a request too large for memory) becomes one line on stderr starting
`error: `, exit status 2 and no traceback; a long echoed input is shortened.
"""

from __future__ import annotations

import argparse
import sys
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
        where = f" {one_line(str(e.filename))}" if getattr(e, "filename", None) else ""
        print(f"error: cannot use{where}: {e.strerror or e}; check the path and its "
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


# -- shared options -----------------------------------------------------------------------
def add_options(p: argparse.ArgumentParser, *, checkpoint: str | None = None,
                n: tuple[int, str] | None = None, seed: tuple[int, str] | None = None,
                out: str | None = None, json: str | None = None, quiet: bool = True,
                device: bool = True) -> argparse.ArgumentParser:
    """Add the options every command spells the same way; each is added when its argument is
    given (its help text, or (default, help) for --n and --seed):

        checkpoint   positional, default the shipped `quadratic-small`
        --n N        how many examples / prompts
        --seed S     the seed of the examples
        --out DIR    the output folder (replaced whole, or written into by `train`)
        --json FILE  one JSON file
        --quiet      no progress on stderr
        --device     cpu (default), cuda, cuda:N, mps or auto
        --dtype      float32 (default), bfloat16 or float16
    """
    from interp.models import DEFAULT_MODEL

    if checkpoint is not None:
        p.add_argument("checkpoint", nargs="?", default=DEFAULT_MODEL,
                       help=checkpoint.format(default=DEFAULT_MODEL))
    if n is not None:
        p.add_argument("--n", type=int, default=n[0], help=n[1])
    if seed is not None:
        p.add_argument("--seed", type=int, default=seed[0], help=seed[1])
    if out is not None:
        p.add_argument("--out", metavar="DIR", help=out)
    if json is not None:
        p.add_argument("--json", metavar="FILE", help=json)
    if device:
        p.add_argument("--device", default="cpu",
                       help="cpu (default), cuda, cuda:N, mps, or auto (CUDA when present)")
        p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                       help="weights and activations (default float32)")
    if quiet:
        p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return p


def positive(option: str, value: int, limit: int | None = None, why: str = "") -> int:
    """Refuse a count below 1, or (with `limit`) above it."""
    if value < 1:
        raise InterpError(f"{option} must be at least 1, got {value}")
    return at_most(option, value, limit, why) if limit is not None else value


def check_device(args) -> None:
    """Fail before any work when --device or --dtype cannot be used on this machine."""
    from interp.models import resolve_device, resolve_dtype

    resolve_device(args.device)
    resolve_dtype(args.dtype)


def load(args):
    """The checkpoint the command line names, read once on --device with --dtype
    (`interp.models.Checkpoint`; `.bridge()` for the TransformerBridge)."""
    from interp.models import load_checkpoint

    return load_checkpoint(args.checkpoint, getattr(args, "device", "cpu"),
                           getattr(args, "dtype", None))


def check_outputs(args, marker: str, own) -> Path | None:
    """Check a command's --json file and --out folder before any work (see `interp.io`):
    the file must be writable and outside the folder, the folder new, empty or an earlier
    output of this command (recognised by `marker` and holding only `own` files). Returns
    the --out path, or None when no folder was asked for."""
    from interp.io import check_file_outside, check_replaceable_dir, check_writable

    if getattr(args, "json", None):
        check_file_outside(args.json, args.out)
        check_writable(args.json)
    return check_replaceable_dir(args.out, marker, "--out", own=own) if args.out else None
