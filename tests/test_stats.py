"""Streamed per-head statistics equal the plain definitions in interp.attention.scores and
the role maps computed one cell at a time (tests/test_maps.py).

The oracle is the one-shot computation over the whole padded cache; HeadStats sees the same
patterns in batches of different widths (sorted by length, unpadded to the dataset's width).
"""

import pytest
import torch

from interp.attention.detect import induction_scores
from interp.attention.stats import (
    Thresholds,
    collect_stats,
    input_keys,
    segments_from_roles,
)
from interp.attention.taxonomy import head_table
from interp.cache import ShardedCache, cache_attention, save_shards, stream_attention
from interp.attention import scores as S
from interp.hooks import KINDS
from interp.models import load_model
from interp.tokens import repeated_random_tokens
from test_maps import role_map_loops, summary_map_loops


def oracle(ac, kind, th=Thresholds()):
    """Every feature from the plain functions over the full cache."""
    P, M = ac.patterns[kind], ac.mask(kind)
    q, k = ac.query(kind), ac.key(kind)
    same = KINDS[kind].query_side == KINDS[kind].key_side
    out = {}
    # the statistics name the task role `nan` (the letters of `x=nan;`) `no_root`
    renamed = {"nan": "no_root"}
    q = type(q)(q.ids, q.lengths, q.tokens, [[renamed.get(r, r) for r in row] for row in q.roles])
    k = type(k)(k.ids, k.lengths, k.tokens, [[renamed.get(r, r) for r in row] for row in k.roles])
    roles, rm = S.role_mass(P, M, k.roles)
    out["role_mass"] = (roles, rm)
    out["entropy"] = S.entropy(P, M)
    first = torch.zeros(M.shape[0], M.shape[-1], dtype=torch.bool)
    first[:, 0] = True
    out["first_token"] = S.key_mass(P, M, first)
    qn, kn, rmap = role_map_loops(P, M, q.roles, k.roles)
    out["role_map"] = qn, kn, torch.tensor(rmap, dtype=torch.float32)
    names, summ = summary_map_loops(P, M, k.roles, input_keys(k.tokens, P.shape[-1]))
    out["summary"] = names, torch.tensor(summ, dtype=torch.float32)
    if same:
        lo = 0 if KINDS[kind].causal else -min(P.shape[-1] - 1, th.max_offset)
        offs = list(range(lo, min(P.shape[-2], th.max_offset + 1)))
        prof = S.offset_profile(P, M, offs)
        out["profile"] = (offs, prof)
        seg = segments_from_roles(q.roles, P.shape[-1])
        out["block_share"] = S.segment_share(P, M, seg, seg)
        out["block_offset_model"] = S.segment_share(S.offset_model(prof, M, offs), M, seg, seg)
        out["block_uniform"] = S.segment_share(S.uniform_like(M), M, seg, seg)[0, 0]
        ids = q.ids
        out["previous_token"] = S.detection_score(P, M, S.previous_token_pattern(ids) * M)
        out["duplicate_token"] = S.detection_score(P, M, S.duplicate_token_pattern(ids) * M)
        out["induction_on_data"] = S.detection_score(P, M, S.induction_pattern(ids) * M)
    return out


@pytest.mark.parametrize("arch", ["decoder", "t5"])
def test_streamed_stats_equal_the_plain_definitions(tiny_checkpoints, arch):
    bridge, task = load_model(tiny_checkpoints[arch])
    examples = task.generate(11, seed=5)           # mixed lengths; batches of 4 differ in width
    ac = cache_attention(bridge, task, examples, batch_size=4)
    stats = collect_stats(stream_attention(bridge, task, examples, batch_size=4))
    assert set(stats) == set(ac.kinds)
    close = dict(atol=2e-5, rtol=1e-4)
    for kind, st in stats.items():
        want = oracle(ac, kind)
        f = st.features()
        roles, rm = want["role_mass"]
        assert st.key_names == roles
        assert torch.allclose(st.role_masses()[0], rm, **close)
        assert torch.allclose(f["entropy"], want["entropy"], **close)
        assert torch.allclose(f["first_token"], want["first_token"], **close)
        qn, kn, rmap = want["role_map"]
        assert st.query_names == qn and st.key_names == kn
        assert torch.allclose(st.query_role_map(), rmap, **close)
        names, summ = want["summary"]
        keep = [st.key_names.index(n) for n in names]
        assert torch.allclose(st.summary_map()[:, keep], summ, **close)
        assert float(st.summary_map().sum()) == pytest.approx(float(summ.sum()), abs=1e-4)
        if "profile" in want:
            offs, prof = want["profile"]
            got_offs, got, _ = st.offset_profile()
            assert got_offs == offs and torch.allclose(got, prof, **close)
            for name in ("block_share", "block_offset_model", "previous_token",
                         "duplicate_token", "induction_on_data"):
                assert torch.allclose(f[name], want[name], **close), (kind, name)
            assert f["block_uniform"][0, 0] == pytest.approx(float(want["block_uniform"]),
                                                             abs=1e-5)
        else:
            assert "sharp_mass" not in f and "block_share" not in f


def test_same_table_from_memory_stream_and_shards(tiny_checkpoints, tmp_path):
    bridge, task = load_model(tiny_checkpoints["t5"])
    examples = task.generate(9, seed=2)
    ac = cache_attention(bridge, task, examples, batch_size=3)
    sharded = save_shards(stream_attention(bridge, task, examples, batch_size=3),
                          tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("shard-*.safetensors"))) == 3
    again = ShardedCache(tmp_path / "cache")
    assert again.kinds == ac.kinds and again.sides["src"].tokens == ac.sides["src"].tokens
    a = head_table(ac)
    for other in (head_table(stream_attention(bridge, task, examples, batch_size=5)),
                  head_table(again), head_table(sharded)):
        assert list(other.label) == list(a.label)
        num = a.select_dtypes("number").columns
        assert ((other[num] - a[num]).abs().max().max()) < 1e-4
    with pytest.raises(Exception, match="not an attention cache folder"):
        ShardedCache(tmp_path)


def test_induction_score_matches_transformer_lens_on_repeated_tokens(tiny_checkpoints):
    from transformer_lens.head_detector import detect_head

    bridge, _ = load_model(tiny_checkpoints["decoder"])
    score, uniform = induction_scores(bridge, n=6, half=9, seed=4)
    # the same sequences, as text (to_tokens adds BOS), through TransformerLens's detector
    ids = repeated_random_tokens(bridge, n=6, half=9, seed=4)
    assert ids.shape == (6, 19) and torch.equal(ids[:, 1:10], ids[:, 10:])
    assert not set(ids[:, 1:].flatten().tolist()) & set(bridge.tokenizer.all_special_ids)
    texts = [bridge.tokenizer.decode(row[1:].tolist()) for row in ids]
    want = detect_head(bridge, texts, "induction_head")
    assert torch.allclose(score, want.float(), atol=1e-5)
    # the uniform head: the copy's successor is one key out of q + 1 for a second-half query
    assert 0 < uniform < 0.2
    with pytest.raises(Exception, match="decoder-only"):
        induction_scores(load_model(tiny_checkpoints["t5"])[0])
