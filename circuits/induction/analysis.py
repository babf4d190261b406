"""The whole induction analysis of one decoder, as one result (what `python -m
circuits.induction` prints and writes).

    ckpt = interp.load_checkpoint("induction-attn2l")
    res = analyse(ckpt.bridge(), ckpt.meta, n=32)
    res.frame()          # the head table (DataFrame)
    res.figure()         # the scores per head (plotly)
    res.composition      # Q/K/V composition against random heads (DataFrame; 2+ layers)
    res.mechanism        # ablating the previous-token head (dict; 2+ layers)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch

from circuits.induction.checks import mechanism_check, unmixing_check
from circuits.induction.scores import head_scores
from circuits.induction.weights import composition_table
from interp.attention.induction import (
    icl_positions,
    icl_score,
    model_patterns,
    score_prompts,
    token_losses,
)


@dataclass
class InductionResult:
    """The induction analysis of one model.

    heads : one row per head (`head_scores`)
    composition : `composition_table` (None for one layer)
    mechanism : `mechanism_check` (None for one layer)
    unmixing : `unmixing_check` (native models with smeared keys or conv, else None)
    mixing : `interp.models.native.mixing_weights` ({} for other models)
    icl : `icl_on_corpus` (text models, else None)
    history : the training curves `interp.train_text` recorded (text models, else [])
    example : one repeated random sequence: {"ids": [pos], "half": int,
        "pattern": [layer, head, query, key] CPU float32}
    """

    heads: pd.DataFrame
    composition: pd.DataFrame | None = None
    mechanism: dict | None = None
    unmixing: dict | None = None
    mixing: dict = field(default_factory=dict)
    icl: dict | None = None
    history: list = field(default_factory=list)
    example: dict | None = None

    def frame(self) -> pd.DataFrame:
        """The head table: one row per head.

        Returns
        -------
        DataFrame
            `heads`: layer, head, induction, prefix_matching, previous_token,
            duplicate_token, copying, ov_eigen_positivity and their baselines
            (`circuits.induction.head_scores`).
        """
        return self.heads

    def figure(self):
        """Every score per head as grouped bars.

        Returns
        -------
        plotly.graph_objects.Figure
            `interp.viz.reports.induction.scores_figure` of `heads`.
        """
        from interp.viz.reports.induction import scores_figure

        return scores_figure(self.heads)


def icl_on_corpus(bridge, meta: dict, n_windows: int = 1024, seed: int = 0) -> dict | None:
    """Per-position validation loss and the ICL score on the corpus a text model was trained
    on (rebuilt from this machine's standard library; its fingerprint is compared). None for
    other models."""
    from interp.tasks import text as T

    if meta.get("task", {}).get("task") != "text":
        return None
    ids = T.validation_ids(bridge.tokenizer)
    n_ctx = int(bridge.cfg.n_ctx)
    g = torch.Generator().manual_seed(seed)
    windows = T.sample_windows(ids, n_windows, n_ctx - 1, g, bridge.tokenizer.bos_token_id)
    losses = token_losses(bridge, windows)                          # [window, pos - 1]
    early, late = icl_positions(n_ctx)
    score, se = icl_score(losses, early, late)
    here = T.corpus_fingerprint(T.stdlib_files())
    trained = meta["task"].get("corpus", {})
    return {"early": early, "late": late, "icl": score, "icl_se": se, "windows": n_windows,
            "val_tokens": len(ids), "per_position_loss": losses.mean(0).tolist(),
            "same_corpus_as_training": here.get("sha256") == trained.get("sha256"),
            "python_here": here.get("python"), "python_trained": trained.get("python")}


def analyse(bridge, meta: dict | None = None, n: int = 32, seed: int = 0,
            icl_windows: int = 1024) -> InductionResult:
    """Every induction measure of a decoder: head scores; for 2+ layers composition and the
    mechanism check; for native models the mixing weights and the un-mixing check; for text
    models (`meta` is the checkpoint's interp.json) the ICL score and the training curves."""
    from interp.models.native import is_native, mixing_weights

    meta = meta or {}
    text = meta.get("task", {}).get("task") == "text"
    heads = head_scores(bridge, n=n, seed=seed)
    # interp.train_text's curves (a task model's interp.json has other histories)
    res = InductionResult(heads, icl=icl_on_corpus(bridge, meta, icl_windows, seed),
                          history=meta.get("history", []) if text else [])
    if int(bridge.cfg.n_layers) >= 2:
        res.composition = composition_table(bridge, seed=seed)
        res.mechanism = mechanism_check(bridge, heads, n=n, seed=seed,
                                        composition=res.composition)
    if is_native(bridge):
        res.mixing = mixing_weights(bridge)
        if bridge.native_spec.mixing != "none":
            res.unmixing = unmixing_check(bridge, heads, n=n, seed=seed)
    ids, half, _, _ = score_prompts(bridge, 1, seed=seed)
    res.example = {"ids": ids[0].tolist(), "half": half,
                   "pattern": model_patterns(bridge, ids)[:, 0]}     # [layer, head, q, k]
    return res


__all__ = ["InductionResult", "icl_on_corpus", "analyse"]
