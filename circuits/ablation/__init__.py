"""Token ablation: does the model's answer depend on what is stored at some input tokens?

    bridge, task = interp.load_model("quadratic-small")
    examples = task.generate(500, seed=12345, heldout=True)
    res = ablate_tokens(bridge, task, examples, ["x", "^", "="], mode="knockout")
    res.summary      # one row per metric: clean, target, controls, difference [CI], p
    res.sweep        # ablate from layer l on, for each l
    res.decoded      # free-running greedy decoding, clean and target, checker per step
    res.frame()      # the summary table; res.figure(): target against controls (plotly)

Modes (REFERENCE §5; seed 001's hypothesis that `x ^ =` store intermediate results):

- `knockout`: at the chosen layers no head may read the target positions: their attention
  weight is set to 0 and each row renormalised (T5: encoder self attention and cross
  attention; with scope `all` also the decoder's self attention). A query row whose every key
  is knocked out is an error, not a NaN.
- `mean` / `zero` / `resample`: at each chosen layer the residual stream entering the block
  (`hook_resid_pre`) at the target positions is replaced by its dataset mean, by zero, or by
  its value in another equation of the dataset. Positions are matched across equations of
  different lengths by key: role and occurrence for input positions (`in:x#1` is the second
  `x` of the equation, `in:b_digit#0` the first digit of b), token and occurrence for
  solution positions (`out:=#3`). `mean` writes the dataset mean of the key; `resample` the
  value at the same key in a donor equation (donors: a random derangement of the dataset),
  or the key's mean when the donor lacks it.

Scope `input` touches the equation's tokens only, `all` also their occurrences in the solution.

Every condition is measured teacher-forced against the clean run of the same examples:
answer loss, exact match (identical to greedy decoding's exact match: greedy decoding
reproduces the solution iff the argmax is right at every answer position given the right
prefix), token accuracy, and the share of examples whose every token of a solution field
(`D_value`, `x1`, ...) is right. Controls ablate as many positions, chosen at random among
the other tokens of the same region, `n_controls` times; the difference between the target's
damage and the controls' comes with a bootstrap interval over examples and a control-rank
permutation p-value (`circuits.stats`). Free-running greedy decoding (clean and target) adds
character accuracy and the task checker's verdict per step.

Route knockout (`routes`): in one head, cut the attention from the queries of one field to
the keys of another (`ablate_route(bridge, task, examples, ["L2H0:D_value->b,c"])`), against
controls that cut the same attention mass in the same rows (`masscut`), and (`reads=True`)
the head's values at K resampled from a same-layout donor (`reads`); `verify_heads` checks
each head's taxonomy label so.

Modules: `positions` (the dataset prepared once, targets, controls, layers), `interventions`
(hooks, one forward pass, teacher-forced runs, replacement residuals), `decoding` (greedy
decoding under an intervention), `experiment` (`ablate_tokens`, `AblationResult`, `compare`),
`routes` (`ablate_route`, `verify_heads`, `HeadKnockout`, `parse_route`, `RouteResult`).
"""

from .decoding import EXTRA_TOKENS, decode_condition
from .experiment import HIGHER_IS_WORSE, AblationResult, ablate_tokens, compare, means_at
from .interventions import (
    MODES,
    Run,
    build_hooks,
    clean_residuals,
    derangement,
    forward,
    replacement_values,
    run_condition,
)
from .routes import (
    HeadKnockout,
    RouteResult,
    ablate_route,
    label_knockout,
    parse_route,
    verify_heads,
)
from .positions import (
    SCOPES,
    Prepared,
    control_masks,
    field_of,
    occurrence_key,
    parse_layers,
    prepare,
    target_masks,
    token_ids,
)

__all__ = ["MODES", "SCOPES", "EXTRA_TOKENS", "HIGHER_IS_WORSE", "Prepared", "Run",
           "AblationResult", "prepare", "token_ids", "target_masks", "control_masks",
           "parse_layers", "occurrence_key", "build_hooks", "forward", "run_condition",
           "clean_residuals", "replacement_values", "derangement", "decode_condition",
           "compare", "means_at", "ablate_tokens", "field_of", "HeadKnockout", "RouteResult",
           "parse_route", "ablate_route", "verify_heads", "label_knockout"]
