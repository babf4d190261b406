"""Induction scores read from the weights alone (REFERENCE §3; Elhage et al. 2021).

    copying_scores(bridge)               # copying and OV eigenvalue positivity per head
    composition_table(bridge)            # Q/K/V composition with z against random heads

- copying (Olsson, as REFERENCE §3 puts it): for ordinary tokens t, the head's direct-path
  logits W_E[t] W_V W_O W_U minus their mean, through a ReLU; the share that falls on t itself,
  rescaled from [0, 1] to [-1, 1]. Layer norms are left out, as in Elhage et al.
- ov_eigen_positivity (Elhage et al. 2021): sum / sum of absolute values of the eigenvalues
  of W_E W_V W_O W_U; 1 when the head only copies.
- composition: TransformerLens's K/Q/V composition score of every earlier/later head pair,
  next to the mean and spread of the same score for random Gaussian heads of the same shapes.

The two OV scores come with heads whose W_V, W_O are random (`*_random`, `*_random_sd`).
Weights are read as CPU float32 whatever the model's device and dtype.
"""

from __future__ import annotations

import pandas as pd
import torch

from interp.attention.induction import check_decoder
from interp.errors import InterpError
from interp.tokens import token_pool


def random_composition_baseline(d_model: int, d_head: int, mode: str = "K", n: int = 200,
                                seed: int = 0) -> tuple[float, float]:
    """(mean, standard deviation) of the composition score (Elhage et al. 2021, as computed
    by TransformerLens) between heads whose W_Q, W_K, W_V, W_O are random Gaussian matrices
    of the given shapes: the score a pair of unrelated heads gets by chance."""
    from transformer_lens import FactoredMatrix
    from transformer_lens.utilities.matrix import composition_scores

    if mode not in ("Q", "K", "V"):
        raise InterpError(f"composition mode must be Q, K or V, got {mode!r}")
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(n, *shape, generator=g)
    left = FactoredMatrix(rnd(d_model, d_head), rnd(d_head, d_model))      # W_V W_O
    right = FactoredMatrix(rnd(d_model, d_head), rnd(d_head, d_model))     # W_Q W_K^T or W_V W_O
    if mode == "K":
        right = right.T
    s = composition_scores(left, right, broadcast_dims=False)
    return float(s.mean()), float(s.std())


def copying_from_weights(W_E: torch.Tensor, W_OV: torch.Tensor, W_U: torch.Tensor,
                         tokens: torch.Tensor) -> torch.Tensor:
    """Copying score per head. W_E: [vocab, d_model]; W_OV: [..., d_model, d_model] (W_V W_O);
    W_U: [d_model, vocab]; tokens: [n]. Returns [...]: the mean over tokens t of
    2 * relu(l - mean l)[t] / sum relu(l - mean l) - 1, with l = W_E[t] W_OV W_U."""
    logits = W_E[tokens] @ W_OV @ W_U                              # [..., n, vocab]
    x = torch.relu(logits - logits.mean(-1, keepdim=True))
    own = x[..., torch.arange(len(tokens)), tokens]
    share = own / x.sum(-1).clamp_min(1e-30)
    return (2 * share - 1).mean(-1)


def eigen_positivity(W_E: torch.Tensor, W_OV: torch.Tensor, W_U: torch.Tensor
                     ) -> torch.Tensor:
    """Elhage et al.'s copying measure of the OV circuit W_E W_OV W_U: sum(eigenvalues) /
    sum(|eigenvalues|), in [-1, 1] (1 = every eigenvalue positive: the head copies). Computed
    on the d_model x d_model matrix W_OV W_U W_E, which has the same nonzero eigenvalues.
    Shapes as in `copying_from_weights`; returns [...]."""
    lam = torch.linalg.eigvals((W_OV @ W_U @ W_E).double())
    return (lam.sum(-1).real / lam.abs().sum(-1).clamp_min(1e-30)).float()


def _weights(bridge, *names: str) -> list[torch.Tensor]:
    return [getattr(bridge, n).detach().float().cpu() for n in names]


@torch.no_grad()
def copying_scores(bridge, n_tokens: int = 512, n_random: int = 20, seed: int = 0
                   ) -> dict:
    """{"copying": [layer, head], "ov_eigen_positivity": [layer, head], and for each the
    mean and sd over random heads ("<name>_random", "<name>_random_sd")}: random heads have
    Gaussian W_V, W_O of the model's shapes and scale, and the model's W_E, W_U."""
    check_decoder(bridge)
    g = torch.Generator().manual_seed(seed)
    vocab, special, _ = token_pool(bridge)
    pool = torch.tensor([i for i in range(vocab) if i not in special])
    tokens = pool[torch.randperm(len(pool), generator=g)[:n_tokens]]
    W_E, W_U, W_V, W_O = _weights(bridge, "W_E", "W_U", "W_V", "W_O")
    rv = torch.randn(n_random, *W_V.shape[-2:], generator=g) * W_V.std()
    ro = torch.randn(n_random, *W_O.shape[-2:], generator=g) * W_O.std()
    out = {}
    for name, fn in (("copying", lambda ov: copying_from_weights(W_E, ov, W_U, tokens)),
                     ("ov_eigen_positivity", lambda ov: eigen_positivity(W_E, ov, W_U))):
        out[name] = fn(W_V @ W_O)
        rand = fn(rv @ ro)
        out[f"{name}_random"], out[f"{name}_random_sd"] = float(rand.mean()), float(rand.std())
    return out


def composition_table(bridge, n_random: int = 200, seed: int = 0) -> pd.DataFrame:
    """Q/K/V composition of every (earlier head -> later head) pair, with the random
    baseline: columns mode, layer_from, head_from, layer_to, head_to, score,
    random_mean, random_sd, z ((score - random_mean) / random_sd)."""
    check_decoder(bridge)
    L, H = int(bridge.cfg.n_layers), int(bridge.cfg.n_heads)
    d_model, d_head = int(bridge.cfg.d_model), int(bridge.cfg.d_head)
    rows = []
    for mode in ("Q", "K", "V"):
        scores = bridge.all_composition_scores(mode).scores.detach().float().cpu()
        mean, sd = random_composition_baseline(d_model, d_head, mode, n_random, seed)
        for l1 in range(L):
            for l2 in range(l1 + 1, L):
                for h1 in range(H):
                    for h2 in range(H):
                        v = float(scores[l1, h1, l2, h2])
                        rows.append({"mode": mode, "layer_from": l1, "head_from": h1,
                                     "layer_to": l2, "head_to": h2, "score": v,
                                     "random_mean": mean, "random_sd": sd,
                                     "z": (v - mean) / sd})
    return pd.DataFrame(rows, columns=["mode", "layer_from", "head_from", "layer_to", "head_to",
                                       "score", "random_mean", "random_sd", "z"])


__all__ = ["random_composition_baseline", "copying_from_weights", "eigen_positivity",
           "copying_scores", "composition_table"]
