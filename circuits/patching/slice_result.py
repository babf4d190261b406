"""The result of `circuits.patching.slices.slice_patch`: shares of the gap per layout group
and pooled, with intervals over equations and verdicts against equal-size controls."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from circuits.stats import bootstrap_ci, distinct, rank_p_value, untestable_note, verdict


def layout_name(pairs) -> str:
    """A short name of a pair group's layout: the first clean input with its digits as `d`
    and the signs of b and c as `±`, and the index of the answer token in the solution."""
    src = pairs.examples[0][0].src
    t = re.sub(r"[0-9]", "d", src[:-1]) + src[-1]
    t = t[0] + re.sub(r"[+-]", "±", t[1:])
    return f"{t} @{pairs.answer_index}"


def _control_size(runs, label: str) -> int:
    """The number of positions in each control set of `label` (joint: its control sets;
    a single position: one), -1 if they differ (they never should)."""
    if label != "joint" or not runs[0].sets:
        return 1
    sizes = {len(r.sets[r.n_targets + 1 + r.n_singles + k]) for r in runs
             for k in range(r.n_controls)}
    return sizes.pop() if len(sizes) == 1 else -1


@dataclass
class SliceResult:
    """Position-set patching over layout groups (`slice_patch`).

    Attributes
    ----------
    runs : list of GroupRun
        One per layout group (patched metrics [layer, set, batch] and their labels).
    targets : tuple of str
    direction, metric : str
    drawn : dict of str to int
        Class -> distinct problems drawn.
    dropped : int
        Pairs in groups too small to patch.
    """

    runs: list
    targets: tuple
    direction: str
    metric: str
    drawn: dict
    dropped: int = 0

    @property
    def n_layers(self) -> int:
        return int(self.runs[0].cells.shape[0])

    def _share(self, run, patched: torch.Tensor, gap: float) -> np.ndarray:
        if self.direction == "denoise":
            v = (patched - run.corrupt) / gap
        else:
            v = (run.clean - patched) / gap
        return v.double().numpy()

    def _scope_rows(self, scope: str, runs: list, n_boot: int) -> list[dict]:
        clean = torch.cat([r.clean for r in runs])
        corrupt = torch.cat([r.corrupt for r in runs])
        gap = float((clean - corrupt).mean())
        eqs = [e for r in runs for e in r.eqs]
        classes = sorted({c.cls for r in runs for c, _ in r.pairs.examples})
        base = {"scope": scope, "groups": len(runs), "pairs": len(eqs),
                "distinct": distinct(eqs), "classes": ",".join(classes),
                "clean": float(clean.mean()), "corrupt": float(corrupt.mean())}
        rows = []
        tlabels = list(dict.fromkeys(lab for r in runs for lab in r.labels[:r.n_targets]))
        n_ctrl = min(r.n_controls for r in runs)
        n_single = min(r.n_singles for r in runs)
        for l in range(self.n_layers):
            for lab in tlabels + ["joint"]:
                have = [r for r in runs if lab in r.labels]
                v = np.concatenate([self._share(r, r.cells[l, r.labels.index(lab)], gap)
                                    for r in have])
                g = [e for r in have for e in r.eqs]
                if lab == "joint":
                    start = [r.n_targets + 1 + r.n_singles for r in have]
                    # one group: its distinct sets; pooled: control k joins every group's
                    # k-th set (distinct joint choices while the product of the groups'
                    # distinct counts reaches the number of controls)
                    k_used = have[0].distinct_controls if len(have) == 1 else \
                        int(min(n_ctrl, np.prod([float(r.distinct_controls) for r in have])))
                    ctrl = np.stack([np.concatenate([
                        self._share(r, r.cells[l, s + k], gap) for r, s in zip(have, start)])
                        for k in range(k_used if len(have) == 1 else n_ctrl)])
                    # [controls, pairs]
                else:
                    # per pair: the mean over its group's single other positions
                    per = [np.stack([self._share(r, r.cells[l, r.n_targets + 1 + j], gap)
                                     for j in range(r.n_singles)]).mean(0) for r in have]
                    ctrl = np.concatenate(per)[None]
                    k_used = n_single
                cmean = ctrl.mean(0)
                eff = v - cmean
                lo, hi = bootstrap_ci(v, n_boot=n_boot, groups=g)
                elo, ehi = bootstrap_ci(eff, n_boot=n_boot, groups=g)
                if distinct(g) < 2:   # one equation: no interval, so no verdict either
                    lo = hi = elo = ehi = float("nan")
                if lab == "joint":
                    p = rank_p_value(float(v.mean()), ctrl.mean(1))
                elif len(have) == 1:   # exact: the target among every other single position
                    r = have[0]
                    p = rank_p_value(float(v.mean()), [
                        float(self._share(r, r.cells[l, r.n_targets + 1 + j], gap).mean())
                        for j in range(r.n_singles)])
                else:
                    p = float("nan")
                word = verdict(elo, p, k_used)
                rows.append({**base, "layer": l, "cell": lab,
                             "size": len(have[0].sets[have[0].labels.index(lab)])
                             if have[0].sets else 1,
                             "control_size": _control_size(have, lab),
                             "restored": float(v.mean()), "lo": lo, "hi": hi,
                             "control": float(cmean.mean()), "effect": float(eff.mean()),
                             "effect_lo": elo, "effect_hi": ehi, "p": p,
                             "n_controls": k_used, "verdict": word,
                             "note": untestable_note(k_used) if word == "untestable" else ""})
        return rows

    def frame(self, groups: bool = True, n_boot: int = 2000):
        """One row per (scope, layer, cell): scope ("pooled" or a layout group's name,
        `layout_name`), the counts (groups, pairs, distinct equations, classes), the
        unpatched clean and corrupted metrics, `restored` (share of the scope's gap, with
        `lo`/`hi`), `control` (the mean share of the controls: the joint patch's equal-size
        sets; a single position's other input positions), `effect` = restored - control with
        `effect_lo`/`effect_hi`, `p` (control rank; NaN for a pooled single position),
        `n_controls`, `verdict` and `note` (the line an untestable verdict prints)."""
        import pandas as pd

        rows = self._scope_rows("pooled", self.runs, n_boot)
        if groups and len(self.runs) > 1:
            for r in self.runs:
                rows += self._scope_rows(layout_name(r.pairs), [r], n_boot)
        return pd.DataFrame(rows)

    def figure(self, title: str | None = None):
        """The pooled shares by layer: a bar per target cell, the joint patch and its mean
        control, with their intervals."""
        import plotly.graph_objects as go

        df = self.frame(groups=False, n_boot=500)
        fig = go.Figure()
        for cell, d in df.groupby("cell", sort=False):
            fig.add_bar(name=cell, x=d.layer, y=d.restored,
                        error_y=dict(type="data", symmetric=False, array=d.hi - d.restored,
                                     arrayminus=d.restored - d.lo))
        j = df[df.cell == "joint"]
        fig.add_bar(name="joint controls (mean)", x=j.layer, y=j.control)
        fig.update_layout(barmode="group", title=title or "share of the gap restored, pooled",
                          xaxis_title="layer (residual stream entering it)",
                          yaxis_title="share of the gap")
        return fig
