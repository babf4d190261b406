"""Head scores measured by running the model on synthetic prompts, on the scale of
TransformerLens's head detector (`detect_head`): the share of a head's attention that falls
where a planted pattern says it should.

    score, uniform = induction_scores(bridge)     # [layer, head], and the uniform head's
"""

from __future__ import annotations

import torch

from interp.attention.scores import detection_score, induction_pattern, uniform_like
from interp.errors import InterpError
from interp.hooks import arch_of, capture, hook_name, n_layers
from interp.tokens import repeated_random_tokens


def induction_scores(bridge, n: int = 32, half: int | None = None, seed: int = 0
                     ) -> tuple[torch.Tensor, float]:
    """Induction score per head of a decoder-only model ([layer, head]) and the uniform
    head's score, on `repeated_random_tokens(bridge, n, half, seed)`: the attention a
    second-half token pays to the token after its first copy, on the scale of
    TransformerLens's head detector ("mul", BOS kept). The model may sit on any device and
    dtype; the scores come back on the CPU as float32 (the `induction_detector` column of
    the head taxonomy).

    Returns
    -------
    score : [layer, head] float32 tensor
    uniform : the score of a head attending uniformly over its valid keys
    """
    if arch_of(bridge) != "decoder":
        raise InterpError("the induction score needs a decoder-only (causal) model")
    ids = repeated_random_tokens(bridge, n, half, seed)
    name = [hook_name(bridge, "self", l) for l in range(n_layers(bridge, "self"))]
    cache = capture(bridge, ids, names=name)
    P = torch.stack([cache[x].to("cpu", torch.float32) for x in name])  # [layer, n, head, q, k]
    width = ids.shape[1]
    mask = torch.ones(width, width, dtype=torch.bool).tril().expand(n, width, width)
    detect = induction_pattern(ids) * mask
    score = detection_score(P, mask, detect)
    uniform = float(detection_score(uniform_like(mask), mask, detect)[0, 0])
    return score, uniform
