"""The one exception type for errors a user of `interp` can cause.

Every message says what was wrong and what would be right. Command-line entry points turn an
`InterpError` into a single line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations


class InterpError(Exception):
    """A mistake in the input (a path, a token, an equation, an option), not a bug."""


class TaskError(InterpError, ValueError):
    """Input that a task cannot read or solve (an equation, a solution string)."""


class InterpWarning(UserWarning):
    """Input that works but probably not as meant (e.g. an equation outside the model's
    training ranges). The command lines print it as one line starting `warning: `."""


def warn(message: str) -> None:
    """Issue an `InterpWarning` (one `warning: ` line on stderr from a command line)."""
    import warnings

    warnings.warn(InterpWarning(message), stacklevel=2)


def shorten(text: str, keep: int = 40) -> str:
    """`text` itself when short; else its first `keep` characters, an ellipsis and its length
    (for messages that echo a user's input: a 10,000-character input stays one short line)."""
    text = str(text)
    if len(text) <= keep + 20:
        return text
    return f"{text[:keep]}… ({len(text):,} characters)"


def shorten_words(message: str, longest: int = 120) -> str:
    """Shorten every unbroken run of more than `longest` characters in a message."""
    import re

    return re.sub(r"[^\s'\"(),;]{%d,}" % (longest + 1), lambda m: shorten(m.group(0)),
                  message)
