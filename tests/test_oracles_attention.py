"""Attention scores, their uniform baselines and the taxonomy's thresholds against planted
heads and hand-written feature values: closed forms computed here with plain loops, never with
the package's score functions."""

import math

import pytest
import torch

from interp.attention.routes import Route
from interp.attention.stats import Thresholds, segments_from_roles
from interp.attention.taxonomy import classify, head_features
from interp.attention import scores as S

N = 12
ROLES = [["<bos>", "=", "=", "x", "=", "x", "x", "c", "d", "e", "f", "g"]]


def causal(n=N):
    return torch.ones(1, n, n, dtype=torch.bool).tril()


def previous_token_head(n=N):
    P = torch.zeros(1, 1, 1, n, n)
    P[0, 0, 0, 0, 0] = 1
    for q in range(1, n):
        P[0, 0, 0, q, q - 1] = 1
    return P


def features(P, mask=None, roles=ROLES, seg=None, causal_=True):
    return head_features(P, causal() if mask is None else mask, roles, seg, seg, causal=causal_)


def test_uniform_baselines_are_their_closed_forms():
    f = features(previous_token_head())
    # the uniform head over q + 1 keys: first-token mass 1/(q+1), entropy log(q+1) nats
    assert f["first_token_uniform"][0, 0] == pytest.approx(sum(1 / (q + 1) for q in range(N)) / N)
    assert f["entropy_uniform"][0, 0] == pytest.approx(sum(math.log(q + 1) for q in range(N)) / N)
    # the head's best offset is 1; the uniform head puts 1/(q+1) there for q >= 1
    assert int(f["sharp_offset"][0, 0]) == 1
    assert f["sharp_mass"][0, 0] == pytest.approx((N - 1) / N)
    assert f["sharp_uniform"][0, 0] == pytest.approx(sum(1 / (q + 1) for q in range(1, N)) / N)
    # vertical: the head's two top key roles, and the uniform head's mass on those roles
    mass = {}
    for q in range(N):
        k = q - 1 if q else 0
        mass[ROLES[0][k]] = mass.get(ROLES[0][k], 0) + 1 / N
    top = sorted(mass, key=lambda r: -mass[r])[:2]
    assert sorted(f["vertical_roles"][0][0]) == sorted(top)
    uni = sum(sum(1 / (q + 1) for k in range(q + 1) if ROLES[0][k] in top) for q in range(N)) / N
    assert f["vertical_uniform"][0, 0] == pytest.approx(uni)
    assert f["vertical_share"][0, 0] == pytest.approx(sum(mass[r] for r in top))


def test_a_sharp_head_has_the_narrowest_band_centred_on_its_offset():
    f = features(previous_token_head())
    assert f["band_mass"][0, 0] == pytest.approx(1.0)
    assert int(f["band_centre"][0, 0]) == 1 and int(f["band_halfwidth"][0, 0]) == 1


def test_a_blurred_head_band_is_centred_on_its_middle_offset():
    """Queries 5.. spread their attention over offsets 3, 4, 5; queries 0-4 are masked out."""
    P = torch.zeros(1, 1, 1, N, N)
    mask = causal()
    mask[0, :5] = False
    for q in range(5, N):
        for k in (q - 3, q - 4, q - 5):
            P[0, 0, 0, q, k] = 1 / 3
    f = features(P, mask)
    assert f["band_mass"][0, 0] == pytest.approx(1.0)
    assert int(f["band_centre"][0, 0]) == 4 and int(f["band_halfwidth"][0, 0]) == 1


def test_offset_profile_by_loops_including_offsets_out_of_range():
    torch.manual_seed(0)
    n = 6
    P = torch.rand(1, 2, 1, n, n)
    P = P / P.sum(-1, keepdim=True)
    M = torch.ones(2, n, n, dtype=torch.bool)
    offs = list(range(-n - 1, n + 2))
    got = S.offset_profile(P, M, offs)[0, 0]
    for i, d in enumerate(offs):
        want = sum(float(P[0, b, 0, q, q - d]) for b in range(2) for q in range(n)
                   if 0 <= q - d < n) / (2 * n)
        assert float(got[i]) == pytest.approx(want, abs=1e-6), d


def test_number_segments_start_at_every_sign():
    roles = [["a_digit", "a_sign", "a_digit", "x", "b_digit", "b_digit"]]
    assert segments_from_roles(roles, 6, "number")[0].tolist() == [1, 2, 2, 3, 4, 4]


# ------------------------------------------------------------------ thresholds, planted
TH = Thresholds(sharp=0.5, band=0.75, band_excess=0.25, vertical=0.5, vertical_lift=2.0,
                block=0.75, block_lift=1.5, block_excess=0.125)


def planted(sharp=0.0, band=0.0, band_u=0.0, vert=0.0, vert_u=0.25, block=None,
            block_u=0.25, block_model=0.0, entropy=1.0, routes=()):
    t = lambda v: torch.tensor([[float(v)]])  # noqa: E731
    f = {"entropy": t(entropy), "entropy_uniform": t(3.0), "routes": [[list(routes)]],
         "sharp_mass": t(sharp), "sharp_offset": t(1), "sharp_uniform": t(0.1),
         "band_mass": t(band), "band_centre": t(2), "band_halfwidth": t(1),
         "band_uniform": t(band_u), "vertical_share": t(vert), "vertical_uniform": t(vert_u),
         "vertical_roles": [[["=", "x"]]], "vertical_top_share": t(vert), "vertical_top_uniform": t(1.0)}
    if block is not None:
        f.update(block_share=t(block), block_uniform=t(block_u),
                 block_offset_model=t(block_model))
    return classify(f, 0, 0, TH)


ROUTE = Route("D_value", "b", share=0.4, uniform=0.1, offset_model=0.1, weight=0.1,
              visible=0.4, head_visible=0.1)
ROUTE_C = Route("D_value", "c", share=0.3, uniform=0.1, offset_model=0.1, weight=0.1,
                visible=0.3, head_visible=0.1)


@pytest.mark.parametrize("kw,labels", [
    ({}, ["heterogeneous"]),
    ({"sharp": 0.5}, ["sharp_diagonal(1)"]),                     # exactly at the threshold
    ({"sharp": 0.49}, ["heterogeneous"]),
    ({"sharp": 0.9, "band": 1.0}, ["sharp_diagonal(1)"]),         # sharp wins over blurred
    ({"band": 0.75, "band_u": 0.5}, ["blurred_diagonal"]),        # at both thresholds
    ({"band": 0.74, "band_u": 0.0}, ["heterogeneous"]),           # below the band share
    ({"band": 0.9, "band_u": 0.7}, ["heterogeneous"]),            # not above uniform enough
    ({"vert": 0.5, "vert_u": 0.25}, ["vertical('=')"]),             # at share and lift
    ({"vert": 0.9, "vert_u": 0.5}, ["heterogeneous"]),            # lift 1.8 < 2
    ({"vert": 0.49, "vert_u": 0.1}, ["heterogeneous"]),
    ({"block": 0.75, "block_u": 0.5, "block_model": 0.625}, ["sparse_block"]),   # at all three
    ({"block": 0.74, "block_u": 0.25}, ["heterogeneous"]),        # share below 0.75
    ({"block": 0.9, "block_u": 0.75}, ["heterogeneous"]),         # lift 1.2 < 1.5
    ({"block": 0.9, "block_u": 0.25, "block_model": 0.8}, ["heterogeneous"]),   # offsets explain it
    ({"block": 0.9, "block_u": 0.7, "vert_u": 0.1}, ["heterogeneous"]),   # lift is block's own
    ({"sharp": 0.9, "block": 0.9}, ["sparse_block"]),             # block suppresses sharp
    ({"sharp": 0.9, "vert": 0.6, "vert_u": 0.1}, ["sharp_diagonal(1)", "vertical('=')"]),
    ({"entropy": 2.7}, ["broad"]),                                # 0.9 of uniform's 3.0
    ({"entropy": 2.69}, ["heterogeneous"]),
    ({"entropy": 2.8, "sharp": 0.9}, ["broad"]),                  # broad rules out shapes
    ({"entropy": 2.8, "routes": [ROUTE]}, ["routed(D_value->b)", "broad"]),   # not routes
    ({"routes": [ROUTE]}, ["routed(D_value->b)"]),                # share 0.4 = route_share
    ({"routes": [ROUTE, ROUTE_C]}, ["routed(D_value->b,c)"]),
    ({"routes": [ROUTE_C]}, ["heterogeneous"]),                   # 0.3 < route_share
    ({"routes": [ROUTE], "sharp": 0.9}, ["sharp_diagonal(1)"]),   # a diagonal is no route
    ({"routes": [ROUTE], "vert": 0.6, "vert_u": 0.1}, ["vertical('=')", "routed(D_value->b)"]),
])
def test_labels_from_planted_features(kw, labels):
    assert planted(**kw) == labels


def test_segment_share_by_loops_with_positions_in_no_segment():
    """-1 means "in no segment": such a query keeps nothing in its own segment."""
    torch.manual_seed(2)
    n = 7
    P = torch.rand(1, 1, 1, n, n).tril()
    P = P / P.sum(-1, keepdim=True)
    M = causal(n)
    seg = torch.tensor([[0, 0, -1, 1, 1, -1, 1]])
    got = float(S.segment_share(P, M, seg, seg)[0, 0])
    s = seg[0].tolist()
    want = sum(sum(float(P[0, 0, 0, q, k]) for k in range(q + 1) if s[k] == s[q] and s[q] >= 0)
               for q in range(n)) / n
    assert got == pytest.approx(want, abs=1e-6)
