"""Routes, their baselines and the mutual information, against loops over hand-built patterns
(closed forms written here, sharing no code with `interp.attention.routes`)."""

import math
import random

import pytest
import torch

from interp.attention.groups import default_grouping, field_of_role, group_role, token_class
from interp.attention.routes import route_tables
from interp.attention.stats import HeadStats, Thresholds, role_index
from interp.attention.synthetic import NEAR_MISSES, make_head
from interp.attention.taxonomy import base_label, classify, head_features
from test_routes import planted  # noqa: F401  (the tiny model with a planted route)

ROLES = [["<bos>", "a_digit", "a_digit", "op", "b_sign", "b_digit", "=", "c_digit", "c_digit",
          "c_digit"],
         ["<bos>", "a_digit", "op", "b_digit", "b_digit", "=", "c_digit", "c_digit", "<pad>",
          "<pad>"]]


def causal_mask(lengths, T):
    m = torch.zeros(len(lengths), T, T, dtype=torch.bool)
    for b, n in enumerate(lengths):
        m[b, :n, :n] = torch.ones(n, n, dtype=torch.bool).tril()
    return m


def planted_pattern(seed=0):
    """Queries of field c read field a (uniformly); every other query reads random keys."""
    g = torch.Generator().manual_seed(seed)
    lengths = [10, 8]
    T = 10
    M = causal_mask(lengths, T)
    P = torch.zeros(1, 2, 1, T, T)
    for b, n in enumerate(lengths):
        r = ROLES[b][:n]
        for q in range(n):
            if r[q].startswith("c_"):
                row = torch.tensor([float(x.startswith("a_")) for x in r])
            else:
                row = torch.rand(n, generator=g) * M[b, q, :n]
            P[0, b, 0, q, :n] = row / row.sum()
    return P, M, [row[:n] for row, n in zip(ROLES, lengths)]


def stats_of(P, M, roles):
    names = sorted({x for row in roles for x in row})
    st = HeadStats(1, 1, names, names, causal=True, th=Thresholds())
    idx = role_index(roles, names, P.shape[-1])
    st.update(P, M, idx, idx)
    return st


def loops(P, M, roles, grouping="field"):
    """share, uniform, offset model and normalised MI by plain loops over queries and keys."""
    groups = lambda r: group_role(r, grouping)  # noqa: E731
    share, uni, count = {}, {}, {}
    prof, nq = {}, 0
    keys_at = {}   # (query group, offset) -> {key group: count}
    for b, row in enumerate(roles):
        n = len(row)
        for q in range(n):
            valid = [k for k in range(n) if M[b, q, k]]
            qg = groups(row[q])
            count[qg] = count.get(qg, 0) + 1
            nq += 1
            for k in valid:
                kg = groups(row[k])
                share[qg, kg] = share.get((qg, kg), 0) + float(P[0, b, 0, q, k])
                uni[qg, kg] = uni.get((qg, kg), 0) + 1 / len(valid)
                prof[q - k] = prof.get(q - k, 0) + float(P[0, b, 0, q, k])
                d = keys_at.setdefault((qg, q - k), {})
                d[kg] = d.get(kg, 0) + 1
    share = {k: v / count[k[0]] for k, v in share.items()}
    uni = {k: v / count[k[0]] for k, v in uni.items()}
    prof = {o: v / nq for o, v in prof.items()}
    model = {}
    for qg in count:
        num = {}
        for (g2, o), d in keys_at.items():
            if g2 == qg:
                for kg, c in d.items():
                    num[kg] = num.get(kg, 0) + prof.get(o, 0) * c
        tot = sum(num.values())
        for kg, v in num.items():
            model[qg, kg] = v / tot
    joint = {k: v * count[k[0]] / nq for k, v in share.items()}
    pq = {q: count[q] / nq for q in count}
    pk = {}
    for (q, k), v in joint.items():
        pk[k] = pk.get(k, 0) + v
    mi = sum(v * math.log(v / (pq[q] * pk[k])) for (q, k), v in joint.items() if v > 0)
    h = lambda p: -sum(v * math.log(v) for v in p.values() if v > 0)  # noqa: E731
    return share, uni, model, mi / min(h(pq), h(pk))


@pytest.mark.parametrize("grouping", ["field", "fine"])
def test_route_tables_equal_loops(grouping):
    P, M, roles = planted_pattern()
    t = route_tables(stats_of(P, M, roles), grouping)
    share, uni, model, nmi = loops(P, M, roles, grouping)
    for (q, k), v in share.items():
        a, b = t.query_groups.index(q), t.key_groups.index(k)
        assert float(t.share[0, 0, a, b]) == pytest.approx(v, abs=1e-5), (q, k)
        assert float(t.uniform[a, b]) == pytest.approx(uni[q, k], abs=1e-5), (q, k)
        assert float(t.offset_model[0, 0, a, b]) == pytest.approx(model.get((q, k), 0),
                                                                  abs=1e-5), (q, k)
    assert float(t.mi[0, 0]) == pytest.approx(nmi, abs=1e-5)
    # each query group's shares sum to 1 over the key groups
    assert torch.allclose(t.share[0, 0].sum(-1), torch.ones(len(t.query_groups)), atol=1e-5)


def test_planted_route_is_found_and_named_by_field():
    P, M, roles = planted_pattern()
    f = head_features(P, M, roles, causal=True)
    routes = f["routes"][0][0]
    assert (routes[0].query, routes[0].key) == ("c", "a")
    assert routes[0].share == pytest.approx(1.0, abs=1e-6)
    assert routes[0].lift > 2 and routes[0].specific > 1.5
    assert "routed(c->a)" in classify(f, 0, 0)


def test_closed_forms_of_the_mutual_information():
    """A head whose queries all read the same key group has MI 0; a head whose query group
    determines the key group has MI 1."""
    roles = [["<bos>", "a_digit", "b_digit", "a_digit", "b_digit"]]
    M = causal_mask([5], 5)
    same = torch.zeros(1, 1, 1, 5, 5)
    same[0, 0, 0, :, 0] = 1.0                       # every query reads <bos>
    t = route_tables(stats_of(same, M, roles))
    assert float(t.mi[0, 0]) == pytest.approx(0.0, abs=1e-6)
    det = torch.zeros(1, 1, 1, 5, 5)
    det[0, 0, 0, 0, 0] = 1.0                        # <bos> -> <bos>
    det[0, 0, 0, 1, 0] = 1.0                        # a -> <bos>
    det[0, 0, 0, 3, 0] = 1.0                        # a -> <bos>
    det[0, 0, 0, 2, 1] = 1.0                        # b -> a
    det[0, 0, 0, 4, 3] = 1.0                        # b -> a
    t = route_tables(stats_of(det, M, roles))
    # query groups <bos>, a, b with p = 1/5, 2/5, 2/5; key groups <bos> (3/5) and a (2/5):
    # MI = H(key) since the key is a function of the query; normalised by min(H) = H(key)
    assert float(t.mi[0, 0]) == pytest.approx(1.0, abs=1e-6)


def test_vertical_stripe_is_no_route_and_offsets_explain_a_diagonal():
    roles = [["<bos>", "=", "a_digit", "b_digit", "b_digit", "c_digit", "c_digit", "c_digit"]]
    M = causal_mask([8], 8)
    stripe = torch.zeros(1, 1, 1, 8, 8)
    stripe[0, 0, 0, 0, 0] = 1.0
    stripe[0, 0, 0, 1:, 1] = 1.0                    # every query that can, reads '='
    f = head_features(stripe, M, roles, causal=True)
    assert f["routes"][0][0] == []
    assert any(lab.startswith("vertical(") for lab in classify(f, 0, 0))
    prev = torch.zeros(1, 1, 1, 8, 8)
    prev[0, 0, 0, 0, 0] = 1.0
    for q in range(1, 8):
        prev[0, 0, 0, q, q - 1] = 1.0               # previous token: b reads a, c reads b
    f = head_features(prev, M, roles, causal=True)
    labels = classify(f, 0, 0)
    assert labels == ["sharp_diagonal(1)"]
    # offsets explain its reads: b's first digit reading a (share 0.5, 0.44 from the
    # offset-only model) is no route, however far above the uniform head it stands; only
    # the first queries, where the profile's offset-0 weight (<bos> reading itself) leaves
    # the model 0.125 short, keep a route
    routes = f["routes"][0][0]
    assert not any(r.query in ("b", "c") for r in routes), routes
    assert all(r.share - r.offset_model >= 0.1 for r in routes)


def test_visible_counts_a_field_once_when_every_query_sees_every_key():
    """Bidirectional, every query sees every key: the attention of a group's queries that
    see a key group is their share (a field's sign and digits counted once, not twice), and
    the head-wide figure is the mean over all queries (oracle: plain sums)."""
    g = torch.Generator().manual_seed(5)
    roles = [["<bos>", "b_sign", "b_digit", "b_digit", "=", "c_sign", "c_digit", "<eos>"]] * 3
    T = 8
    M = torch.ones(3, T, T, dtype=torch.bool)
    P = torch.rand(1, 3, 1, T, T, generator=g)
    P = P / P.sum(-1, keepdim=True)
    names = sorted({x for row in roles for x in row})
    st = HeadStats(1, 1, names, names, causal=False, th=Thresholds())
    idx = role_index(roles, names, T)
    st.update(P, M, idx, idx)
    t = route_tables(st, "field")
    assert torch.allclose(t.visible[0, 0], t.share[0, 0], atol=1e-6)
    fields = {"b_sign": "b", "b_digit": "b", "c_sign": "c", "c_digit": "c"}   # by hand
    for b, k in enumerate(t.key_groups):
        cols = [j for j, r in enumerate(roles[0]) if fields.get(r, r) == k]
        want = float(P[0, :, 0][:, :, cols].sum()) / (3 * T)
        assert float(t.head_visible[0, 0, b]) == pytest.approx(want, abs=1e-6), k


@pytest.mark.parametrize("kind", NEAR_MISSES)
def test_near_misses_stay_unlabelled(kind):
    rng = random.Random(11)
    for causal in (True, False):
        for _ in range(3):
            h = make_head(kind, rng, causal)
            f = head_features(h.pattern, h.mask, h.roles, h.segments, h.segments,
                              causal=causal)
            assert [base_label(x) for x in classify(f, 0, 0)] == ["heterogeneous"], kind


def test_route_thresholds_decide():
    P, M, roles = planted_pattern()
    assert "routed(c->a)" in classify(head_features(P, M, roles), 0, 0)
    th = Thresholds(route_lift=1e6)
    assert not any(x.startswith("routed") for x in classify(head_features(P, M, roles, th=th),
                                                           0, 0, th))


def test_groups():
    assert [field_of_role(r) for r in ("b_digit", "b_sign", "x1expr_s_digit", "=", "x")] == \
        ["b", "b", "x1expr_s", "=", "x"]
    assert [token_class(t) for t in ("[CLS]", "<|endoftext|>", "Ġ,", "##ing", "Ġ1984",
                                     "hello", "Ċ")] == \
        ["special", "special", "punctuation", "subword", "digit", "word", "whitespace"]

    class S:
        def __init__(self, tokens, roles):
            self.tokens, self.roles = tokens, roles

    assert default_grouping({"seq": S([["a", "b"]], [["a", "b"]])}) == "class"
    assert default_grouping({"seq": S([["1", "x"]], [["a_digit", "x"]])}) == "field"


def test_a_planted_route_is_found_by_the_classifier_and_confirmed_by_the_knockout(planted):  # noqa: F811
    """The route planted in a tiny model's head (tests/test_routes.py: Dexpr_b queries put
    0.35 on b and 0.35 on the decoy x) is labelled by the taxonomy; its top route, knocked
    out, damages the answer beyond mass-matched controls, while a random route in the same
    head does not."""
    from circuits.ablation import ablate_route
    from interp.attention.taxonomy import head_table
    from interp.cache import cache_attention

    bridge, task, examples = planted   # (its hooks know these examples only: no induction run)
    table = head_table(cache_attention(bridge, task, examples, batch_size=20))
    row = table[(table.layer == 1) & (table["head"] == 0)].iloc[0]
    # a random tiny model: near-uniform elsewhere, so `broad` holds beside the route
    assert row.labels[0] in ("routed(Dexpr_b->b,x)", "routed(Dexpr_b->x,b)"), row.labels
    top = {(r.query, r.key): r for r in row.routes}
    assert top["Dexpr_b", "b"].share == pytest.approx(0.35, abs=0.01)
    assert top["Dexpr_b", "b"].lift > 2
    others = table[(table.layer != 1) | (table["head"] != 0)]
    assert not any(lab.startswith("routed(Dexpr_b") for labs in others.labels for lab in labs)
    res = ablate_route(bridge, task, examples, ["L1H0:Dexpr_b->b", "L1H0:x1->a"],
                       n_controls=19, seed=0, batch_size=20)
    s = res.frame().set_index(["knockout", "measure"])
    hit = s.loc[("L1H0:Dexpr_b->b", "loss:Dexpr_b")]
    assert hit.ci_lo > 0 and hit.p <= 0.05
    miss = s.loc[("L1H0:x1->a", "answer_loss")]
    assert not (miss.ci_lo > 0 and miss.p <= 0.05)
