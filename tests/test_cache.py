"""Cached attention patterns: equal to unpadded single-example runs, padding masked."""

import pytest
import torch

from interp.cache import cache_attention
from interp.errors import InterpError
from interp.models import load_model
from interp.tasks import get_task


@pytest.mark.parametrize("arch", ["decoder", "t5"])
def test_batched_cache_equals_one_example_at_a_time(tiny_checkpoints, arch):
    bridge, task = load_model(tiny_checkpoints[arch])
    task = get_task("quadratic", "small")
    examples = task.generate(7, seed=3)  # different lengths in one batch
    ac = cache_attention(bridge, task, examples, batch_size=4)
    kinds = ("self",) if arch == "decoder" else ("encoder", "decoder_self", "cross")
    assert ac.kinds == kinds
    for i, ex in enumerate(examples):
        one = cache_attention(bridge, task, [ex])
        for k in kinds:
            q, kk = int(ac.query(k).lengths[i]), int(ac.key(k).lengths[i])
            assert one.patterns[k].shape[-2:] == (q, kk)
            assert torch.allclose(ac.patterns[k][:, i, :, :q, :kk], one.patterns[k][:, 0],
                                  atol=1e-5)
            # nothing outside the real positions
            assert ac.patterns[k][:, i, :, q:].abs().sum() == 0
            assert ac.patterns[k][:, i, :, :, kk:].abs().sum() == 0
            rows = ac.patterns[k][:, i, :, :q, :kk].sum(-1)
            assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)
    # tokens and roles line up with the sequence
    side = ac.query(kinds[0])
    for toks, roles, n in zip(side.tokens, side.roles, side.lengths.tolist()):
        assert len(toks) == len(roles) == n


def test_decoder_sequence_roles_cover_prompt_and_solution(tiny_checkpoints):
    bridge, _ = load_model(tiny_checkpoints["decoder"])
    task = get_task("quadratic", "seed")
    from interp.tasks.base import Example

    ex = Example("7x^2+3556x+451612=0", task.solve("7x^2+3556x+451612=0"), "one")
    ac = cache_attention(bridge, task, [ex], kinds=["self"])
    side = ac.query("self")
    assert side.tokens[0][:3] == ["<bos>", "7", "x"] and side.roles[0][:3] == ["<bos>", "a_digit", "x"]
    sep = side.tokens[0].index("<sep>")
    assert "".join(side.tokens[0][1:sep]) == ex.src
    assert side.roles[0][-1] == "<eos>"


def test_unknown_kind_and_empty_input_are_errors(tiny_checkpoints):
    bridge, task = load_model(tiny_checkpoints["decoder"])
    with pytest.raises(InterpError, match="kinds are self"):
        cache_attention(bridge, task, task.generate(2, 0), kinds=["cross"])
    with pytest.raises(InterpError, match="at least one"):
        cache_attention(bridge, task, [])


def test_bert_encoder_padding_never_counts_as_attention(tiny_bert_dir):
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(str(tiny_bert_dir))
    texts = ["a b c d e f", "g h"]
    ac = cache_attention(bridge, None, texts)
    assert ac.kinds == ("encoder",)
    toks = ac.query("encoder").tokens[1]
    assert len(toks) == 4 and toks[0] == "[CLS]" and toks[-1] == "[SEP]"
    short = cache_attention(bridge, None, texts[1:])
    assert torch.allclose(ac.patterns["encoder"][:, 1, :, :4, :4], short.patterns["encoder"][:, 0],
                          atol=1e-5)
    assert ac.patterns["encoder"][:, 1, :, :, 4:].abs().sum() == 0


@pytest.mark.parametrize("arch", ["decoder", "t5"])
def test_early_stopped_forward_leaves_no_hooks_behind(tiny_checkpoints, arch):
    """The caching pass stops the forward after the last wanted pattern: the model must come
    out of it unchanged, with no hook left attached."""
    bridge, task = load_model(tiny_checkpoints[arch])
    ex = task.generate(3, seed=1)
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    kw = {"decoder_input": torch.tensor([[0, 5, 6]])} if arch == "t5" else {}
    with torch.no_grad():
        before = bridge(ids, **kw)
        cache_attention(bridge, task, ex, kinds=["encoder"] if arch == "t5" else None)
        after = bridge(ids, **kw)
    assert torch.equal(before, after)
    assert all(len(hp.fwd_hooks) == 0 for hp in bridge.hook_dict.values())
