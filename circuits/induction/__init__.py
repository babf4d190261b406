"""Induction heads: scores of every head, composition, mechanism checks (REFERENCE §3).

`python -m circuits.induction [CKPT]` (or `interp induction`) prints and writes them. The
functions live in `scores` (the head table; the attention scores themselves are
`interp.attention.induction`'s), `weights` (copying, OV eigenvalues, composition), `checks`
(interventions) and `analysis` (all of it as one result), and are re-exported here.

    res = analyse(bridge, meta)          # InductionResult: .frame(), .figure()
    heads = head_scores(bridge)          # DataFrame, one row per head
"""

from circuits.induction.analysis import *  # noqa: F401,F403
from circuits.induction.analysis import __all__ as _analysis
from circuits.induction.checks import *  # noqa: F401,F403
from circuits.induction.checks import __all__ as _checks
from circuits.induction.scores import *  # noqa: F401,F403
from circuits.induction.scores import __all__ as _scores
from circuits.induction.weights import *  # noqa: F401,F403
from circuits.induction.weights import __all__ as _weights

__all__ = [*_scores, *_weights, *_checks, *_analysis]
