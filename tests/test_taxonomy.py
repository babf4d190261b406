"""The head taxonomy on synthetic attention heads with known classes (held-out seed)."""

from collections import Counter

from interp.attention.synthetic import CLASSES, make_dataset, make_head
from interp.attention.taxonomy import (
    LABELS,
    Thresholds,
    base_label,
    classify,
    head_features,
)


def predict(h, th=Thresholds()):
    f = head_features(h.pattern, h.mask, h.roles, h.segments, h.segments, causal=h.causal, th=th)
    return {base_label(l) for l in classify(f, 0, 0, th)}


def macro_f1(data, th=Thresholds()):
    tp, fp, fn = Counter(), Counter(), Counter()
    for h in data:
        pred = predict(h, th)
        for c in LABELS:
            tp[c] += c in pred and c in h.truth
            fp[c] += c in pred and c not in h.truth
            fn[c] += c not in pred and c in h.truth
    f1 = {c: 2 * tp[c] / max(1, 2 * tp[c] + fp[c] + fn[c]) for c in LABELS}
    return sum(f1.values()) / len(f1), f1


def test_taxonomy_reaches_macro_f1_095_on_held_out_synthetic_heads():
    # thresholds were set on seed 1; this set (seed 7) was never looked at while tuning; it
    # holds every class (routed and broad too) and the near-misses, whose truth is
    # heterogeneous (a label firing on one is a false positive of that class)
    score, per_class = macro_f1(make_dataset(180, seed=7))
    assert score >= 0.95, per_class


def test_each_class_is_recognised_causal_and_bidirectional():
    import random

    rng = random.Random(3)
    for cls in CLASSES:
        for causal in (True, False):
            h = make_head(cls, rng, causal)
            assert predict(h) == h.truth, (cls, causal)


def test_thresholds_matter():
    """An impossible threshold removes the label: the decision is the thresholds'."""
    import random

    h = make_head("sharp_diagonal", random.Random(0), causal=True)
    assert "sharp_diagonal" in predict(h)
    assert "sharp_diagonal" not in predict(h, Thresholds(sharp=1.01))


def test_segments_from_roles():

    from interp.attention.taxonomy import segments_from_roles

    roles = [["<bos>", "a_digit", "x", "b_sign", "b_digit", "=", "0", "<sep>", "D", ";", "x"]]
    st = segments_from_roles(roles, 12, "statement")[0].tolist()
    assert st == [0, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, -1]
    num = segments_from_roles(roles, 11, "number")[0].tolist()
    assert num[3] == num[4] and num[1] != num[3] and len(set(num)) == 10


def test_head_table_labels_heads_of_a_cache(tiny_checkpoints):
    """Glue: a real cache whose patterns are replaced by synthetic heads of known class."""

    import torch

    from interp.attention.taxonomy import head_table
    from interp.cache import cache_attention
    from interp.models import load_model

    bridge, task = load_model(tiny_checkpoints["decoder"])
    ac = cache_attention(bridge, task, task.generate(4, seed=0))
    P, mask = ac.patterns["self"], ac.mask("self")
    T = P.shape[-1]
    prev = torch.diag(torch.ones(T - 1), -1)
    prev[0, 0] = 1
    P[0, :, 0] = prev * mask                    # layer 0 head 0: previous token
    eq = torch.zeros(P.shape[1], T, T)
    for b, roles in enumerate(ac.key("self").roles):
        e = roles.index("=")
        eq[b, :, e] = 1
        eq[b, :e, :] = 0
        eq[b, :e, 0] = 1                         # before '=' exists: first token
    P[1, :, 1] = eq * mask                       # layer 1 head 1: vertical stripe on '='
    table = head_table(ac)
    assert len(table) == 2 * 4 and set(table.kind) == {"self"}
    row = table[(table.layer == 0) & (table["head"] == 0)].iloc[0]
    assert "sharp_diagonal(1)" in row.labels
    row = table[(table.layer == 1) & (table["head"] == 1)].iloc[0]
    assert any(l.startswith("vertical(") for l in row.labels), row.labels
    assert "=" in row.vertical_roles
