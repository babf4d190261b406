"""The one exception type for errors a user of `interp` can cause.

Every message says what was wrong and what would be right. Command-line entry points turn an
`InterpError` into a single line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations


class InterpError(Exception):
    """A mistake in the input (a path, a token, an equation, an option), not a bug."""


class TaskError(InterpError, ValueError):
    """Input that a task cannot read or solve (an equation, a solution string)."""
