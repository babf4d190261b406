"""classify_heads --prompts: a prompt is refused exactly when it does not fit the context,
counted as the model itself tokenizes it (TransformerLens's `to_tokens`, BOS included)."""

import pytest

from interp.classify_heads import _check_prompt_lengths
from interp.errors import InterpError
from interp.models import load_model


def test_a_prompt_that_exactly_fills_the_context_is_accepted_and_one_more_token_refused():
    bridge, _ = load_model("induction-attn1l")
    n_ctx = bridge.cfg.n_ctx
    words = " ".join(f"w{i}" for i in range(400))
    lengths = {}
    for end in range(1, len(words)):
        n = int(bridge.to_tokens(words[:end], truncate=False).shape[1])   # the oracle: BOS + the text
        lengths.setdefault(n, words[:end])
        if n > n_ctx + 1:
            break
    fits, over = lengths[n_ctx], lengths[n_ctx + 1]
    _check_prompt_lengths(bridge, [fits], "p.txt")
    with pytest.raises(InterpError, match=rf"prompt 2 .* is {n_ctx + 1} tokens"):
        _check_prompt_lengths(bridge, [fits, over], "p.txt")
    with pytest.raises(InterpError, match=r"is over [\d,]+ tokens"):
        _check_prompt_lengths(bridge, [words * 20], "p.txt")
