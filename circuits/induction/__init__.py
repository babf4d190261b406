"""Induction heads: scores of every head, composition, mechanism checks (REFERENCE §3).

`python -m circuits.induction [CKPT]` (or `interp induction`) prints and writes them; the
functions live in `circuits.induction.scores` and are re-exported here.
"""

from circuits.induction.scores import *  # noqa: F401,F403
from circuits.induction.scores import __all__  # noqa: F401
