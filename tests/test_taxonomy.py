"""The head taxonomy on synthetic attention heads with known classes (held-out seed)."""

from collections import Counter

from interp.attention.synthetic import CLASSES, make_dataset, make_head
from interp.attention.taxonomy import LABELS, Thresholds, base_label, classify, head_features


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
    # thresholds were set on seed 1; this set (seed 7) was never looked at while tuning
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
