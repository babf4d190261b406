"""Induction-head weight scores against their definitions computed here with numpy and plain
loops: the copying score token by token, the OV eigenvalue positivity from numpy's
eigenvalues of the full vocabulary-by-vocabulary matrix."""

import numpy as np
import pytest
import torch

from circuits.induction import copying_from_weights, eigen_positivity
from interp.attention.induction import icl_positions


def weights(seed, d=6, v=9, heads=3):
    g = np.random.default_rng(seed)
    return g.normal(size=(v, d)), g.normal(size=(heads, d, d)), g.normal(size=(d, v))


def copying_by_loops(W_E, W_OV, W_U, tokens):
    scores = []
    for t in tokens:
        logits = W_E[t] @ W_OV @ W_U
        centred = [x - sum(logits) / len(logits) for x in logits]
        pos = [max(x, 0.0) for x in centred]
        scores.append(2 * pos[t] / sum(pos) - 1)
    return sum(scores) / len(scores)


@pytest.mark.parametrize("seed", [0, 1])
def test_copying_score_by_loops(seed):
    W_E, W_OV, W_U, = weights(seed)
    tokens = [0, 2, 3, 5, 8]
    got = copying_from_weights(*(torch.tensor(w, dtype=torch.float64) for w in (W_E, W_OV, W_U)),
                               torch.tensor(tokens))
    want = [copying_by_loops(W_E, W_OV[h], W_U, tokens) for h in range(len(W_OV))]
    assert got.tolist() == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eigen_positivity_from_numpy_eigenvalues_of_the_full_circuit(seed):
    W_E, W_OV, W_U = weights(seed)
    got = eigen_positivity(*(torch.tensor(w, dtype=torch.float32) for w in (W_E, W_OV, W_U)))
    for h in range(len(W_OV)):
        lam = np.linalg.eigvals(W_E @ W_OV[h] @ W_U)          # vocab x vocab
        if seed == 0:           # complex eigenvalues: |lambda| is not |Re lambda|
            assert np.abs(lam.imag).max() > 1e-3
        want = lam.sum().real / np.abs(lam).sum()
        assert float(got[h]) == pytest.approx(want, abs=1e-4)


def test_icl_positions_scale_olssons_50_and_500_and_stay_inside_the_context():
    assert icl_positions(512) == (50, 500) and icl_positions(1024) == (100, 1000)
    # 500 / 512 of 20 rounds to 20: capped at n_ctx - 2 (token n_ctx - 2's loss is column
    # n_ctx - 3, one before the last)
    assert icl_positions(20) == (2, 18)
    assert icl_positions(4) == (1, 2)
