"""Equal-mass controls for a route knockout, and the hooks that cut several heads at once.

The rule (`control_cuts` in `circuits.ablation.routes` calls it):

A route knockout cuts, in one head h and one affected query row (example i, query q), the
target keys; their clean attention mass there is m. Each control cuts the SAME MASS in the
same row, by one of two pools, tried in this order:

1. same-head: the other keys of head h that the query may read (not the target's). A draw
   orders them at random (probability of coming first proportional to attention**beta,
   beta cycling through `BETAS`: uniform orders, and orders leaning to the heavier keys) and
   takes the prefix whose summed clean mass is closest to m (at least one key; any number of
   keys, so a control may cut more keys than the target); every second draw orders only
   the keys lighter than `HIGH` * m (a heavier key alone overshoots). Of `DRAWS` draws the
   one closest to m is kept. It MATCHES when its mass / m lies in [`LOW`, `HIGH`] = [0.8, 1.25].
2. other-heads, where the same head cannot match (its other keys hold less than 0.8 m, or
   no prefix of any draw lands in the band): the (head, key) entries of the OTHER heads of
   the same layer in the same query row, again not the target's keys, drawn and cut the same
   way (a draw may spread over several heads). A draw that would leave any head's row with
   less than `LEFT` of its attention is refused (renormalising such a row would blow up
   noise).

When neither pool matches, the closer of the two is kept and counted as unmatched. Every
control thus never touches the target's keys, keeps every row alive, and reports its mass.
What the analyses report per knockout: target_mass and control_mass (mean clean mass cut
per affected row), mass_ratio = control_mass / target_mass, other_heads (the share of
control rows that took other heads), unmatched (the share that matched neither) and
`rule` ("same-head", "other-heads", "mixed (x% other-heads)").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from interp.errors import InterpError
from interp.hooks import hook_name, module_at
from .interventions import cut_renormalised

#: random orders per control and row; the one closest in mass is kept
DRAWS = 16
#: draws order keys with probability proportional to attention**beta, beta cycling these
BETAS = (0.0, 1.0, 2.0, 4.0)
#: a control matches when control mass / target mass lies in [LOW, HIGH]
LOW, HIGH = 0.8, 1.25
#: a control leaves every head's row at least this much of its clean attention
LEFT = 1e-3
CHUNK = 32      # rows drawn for at once


@dataclass
class MassControls:
    """What `equal_mass_controls` drew.

    cuts : `[C, N, H, Wq, Wk]` bool, control c's (head, query, key) entries
    target_mass, control_mass : mean clean mass per affected row (control: over rows and
        controls)
    other_heads : share of (control, row) pairs cut in other heads
    unmatched : share of (control, row) pairs whose mass ratio is outside [LOW, HIGH]
    ratio_min : the smallest per-row control/target mass ratio (over controls and rows)
    """

    cuts: torch.Tensor
    target_mass: float
    control_mass: float
    other_heads: float
    unmatched: float
    ratio_min: float

    @property
    def mass_ratio(self) -> float:
        return self.control_mass / self.target_mass if self.target_mass > 0 else float("nan")

    @property
    def rule(self) -> str:
        if np.isnan(self.other_heads):
            return "none"
        if self.other_heads == 0:
            return "same-head"
        if self.other_heads == 1:
            return "other-heads"
        share = 100 * self.other_heads
        text = "<1" if share < 0.5 else ">99" if share > 99.5 else f"{share:.0f}"
        return f"mixed ({text}% other-heads)"


def _draw(a: torch.Tensor, pool: torch.Tensor, m: torch.Tensor, n_controls: int,
          gen: torch.Generator, draws: int, cap: torch.Tensor | None = None
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per control and row the best of `draws` random prefixes of `pool`: (selection
    `[C, r, E]` bool, its mass `[C, r]`). `a: [r, E]` clean mass per entry, `pool: [r, E]`,
    `m: [r]` the target mass; `cap`: `[r, E]` group id per entry (the head) and then a draw
    leaving any group with less than LEFT of its mass is refused (group totals are 1)."""
    r, e = a.shape
    betas = torch.tensor(np.resize(np.array(BETAS), draws))[:, None, None]     # [D, 1, 1]
    # every second draw leaves out the keys heavier than HIGH * m on their own (no prefix
    # holding one can match): orders of the lighter keys, where the mass can be met
    light = torch.arange(draws)[:, None, None] % 2 == 1
    pool = pool[None] & ~(light & (a > HIGH * m[:, None])[None])               # [D, r, E]
    u = torch.rand((n_controls, draws, r, e), generator=gen, dtype=torch.float64
                   ).clamp(1e-12, 1 - 1e-12)
    keys = betas * a.clamp_min(1e-30).log()[None] - (-u.log()).log()          # + Gumbel
    keys = keys.masked_fill(~pool[None], float("-inf"))
    order = keys.argsort(-1, descending=True)                                 # [C, D, r, E]
    a_s = (a * pool).expand(n_controls, draws, r, e).gather(-1, order)
    cum = a_s.cumsum(-1)
    npool = pool.sum(-1)                                                       # [D, r]
    k = torch.arange(e)
    bad = k[None, None, None, :] >= npool[None, :, :, None]
    if cap is not None:
        # the mass left to each group after cutting each prefix: refuse prefixes that leave
        # a group with less than LEFT (groups are few: loop over them)
        g_s = cap.expand(n_controls, draws, r, e).gather(-1, order)
        for g in torch.unique(cap).tolist():
            used = (a_s * (g_s == g)).cumsum(-1)
            total = (a * (cap == g)).sum(-1)[None, None, :, None]
            bad = bad | ((total > 0) & (total - used < LEFT))
    diff = (cum - m[None, None, :, None]).abs().masked_fill(bad, float("inf"))
    kbest = diff.argmin(-1)                                                    # [C, D, r]
    dbest = diff.gather(-1, kbest[..., None])[..., 0]
    mass = cum.gather(-1, kbest[..., None])[..., 0].masked_fill(dbest.isinf(), float("nan"))
    best = torch.where(dbest.isinf(), torch.full_like(dbest, float("inf")), dbest).argmin(1)
    kb = kbest.gather(1, best[:, None])[:, 0]                                  # [C, r]
    ob = order.gather(1, best[:, None, :, None].expand(-1, 1, r, e))[:, 0]     # [C, r, E]
    found = ~dbest.gather(1, best[:, None])[:, 0].isinf()                      # [C, r]
    take = (k[None, None, :] <= kb[..., None]) & found[..., None]
    sel = torch.zeros(n_controls, r, e, dtype=torch.bool).scatter_(-1, ob, take)
    return sel, mass.gather(1, best[:, None])[:, 0]


def matches(ratio: torch.Tensor) -> torch.Tensor:
    """True where a control/target mass ratio is inside [LOW, HIGH]."""
    return (ratio >= LOW) & (ratio <= HIGH)


def equal_mass_controls(cut: torch.Tensor, ok: torch.Tensor, patterns: torch.Tensor, head: int,
                        n_controls: int, rng: np.random.Generator, draws: int = DRAWS,
                        other_heads: bool = True) -> MassControls:
    """`n_controls` control cuts of the same clean attention mass as `cut` (the rule of the
    module docstring).

    Parameters
    ----------
    cut : `[N, Wq, Wk]` bool, the target's (query, key) entries in head `head`
    ok : `[N, Wq, Wk]` bool, the entries a query may read
    patterns : `[N, H, Wq, Wk]` the clean attention of every head of the layer
    other_heads : allow the other-heads pool (False: same head only, as a comparison)
    """
    n, h_all, wq, wk = patterns.shape
    if not 0 <= head < h_all:
        raise InterpError(f"head {head} is out of range; the layer has heads 0-{h_all - 1}")
    out = torch.zeros(n_controls, n, h_all, wq, wk, dtype=torch.bool)
    rows = torch.nonzero(cut.any(-1))                                       # [R, 2]
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    t_mass, c_mass, other, ratios = [], [], [], []
    others = [g for g in range(h_all) if g != head]
    for s in range(0, len(rows), CHUNK):
        i, q = rows[s:s + CHUNK].T
        tk = cut[i, q]                                                      # [r, Wk]
        pat = patterns[i, :, q].double()                                    # [r, H, Wk]
        m = (pat[:, head] * tk).sum(-1)                                     # [r]
        t_mass.append(m)
        if n_controls == 0:
            continue
        pool = ok[i, q] & ~tk
        sel, mass = _draw(pat[:, head], pool, m, n_controls, gen, draws)    # [C, r, Wk]
        ratio = mass / m
        full = torch.zeros(n_controls, len(i), h_all, wk, dtype=torch.bool)
        full[:, :, head] = sel
        need = ~matches(ratio).all(0) if other_heads and others else torch.zeros(
            len(i), dtype=torch.bool)
        took = torch.zeros(n_controls, len(i), dtype=torch.bool)
        if bool(need.any()):
            j = torch.nonzero(need).flatten()
            a2 = pat[j][:, others].reshape(len(j), -1)                     # [r', (H-1) Wk]
            p2 = (ok[i[j], q[j]] & ~tk[j])[:, None, :].expand(-1, len(others), -1
                                                              ).reshape(len(j), -1)
            grp = torch.arange(len(others))[:, None].expand(-1, wk).reshape(1, -1
                                                                            ).expand(len(j), -1)
            sel2, mass2 = _draw(a2, p2, m[j], n_controls, gen, draws, cap=grp)
            r2 = mass2 / m[j]
            for c in range(n_controls):
                # per control: the other heads where the same head misses and they match,
                # or where neither matches and they come closer
                same_ok = matches(ratio[c, j])
                d1 = (ratio[c, j] - 1).abs().nan_to_num(float("inf"))
                d2 = (r2[c] - 1).abs().nan_to_num(float("inf"))
                use = ~same_ok & (matches(r2[c]) | (d2 < d1))
                jj = j[use]
                tmp = torch.zeros(len(jj), h_all, wk, dtype=torch.bool)
                tmp[:, others] = sel2[c, use].reshape(-1, len(others), wk)
                full[c, jj] = tmp
                ratio[c, jj] = r2[c, use]
                mass[c, jj] = mass2[c, use]
                took[c, jj] = True
        out[:, i, :, q] = full.permute(1, 0, 2, 3)      # [r, C, H, Wk] order
        c_mass.append(mass.flatten())
        ratios.append(ratio.flatten())
        other.append(took.flatten().double())
    cat = lambda v: torch.cat(v) if v else torch.zeros(0, dtype=torch.float64)  # noqa: E731
    tm, cm, rt, ot = cat(t_mass), cat(c_mass), cat(ratios), cat(other)
    mean = lambda x: float(x.nanmean()) if len(x) else float("nan")  # noqa: E731
    unmatched = float((~matches(rt)).double().mean()) if len(rt) else float("nan")
    return MassControls(out, mean(tm), mean(cm), mean(ot), unmatched,
                        float(rt.nan_to_num(0).min()) if len(rt) else float("nan"))


# ---- hooks that cut (head, query, key) entries of several heads ----------------------------

def _knock(sel: torch.Tensor):
    """A pattern hook: zero the entries `sel: [rows, H, Q, K]` of `pattern` and renormalise
    the rows that lost any; every other entry is returned as it was."""
    def hook(pattern, hook):
        return cut_renormalised(
            pattern, sel[:, :, : pattern.shape[2], : pattern.shape[3]].to(pattern.device),
            hook.name)
    return hook


def _t5_knock(sel: torch.Tensor):
    """A forward pre-hook for HF's T5Attention: the scores of the entries `sel: [rows, H, Q,
    K]` get -inf (softmax over the remaining keys: the renormalised weights of `_knock`;
    T5's hook_pattern fires after HF used the weights, so its scores are masked instead)."""
    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        s = sel.to(hidden.device)
        q, k = s.shape[2:]
        m = kwargs.get("mask")
        if m is None:
            m = torch.zeros((1, 1, q, k), dtype=hidden.dtype, device=hidden.device)
            if getattr(module, "is_causal", False):
                m = m.masked_fill(torch.ones(q, k, dtype=torch.bool,
                                             device=hidden.device).triu(1), float("-inf"))
        m = m[..., :k].expand(s.shape)
        kwargs["mask"] = m & ~s if m.dtype == torch.bool else m.masked_fill(s, float("-inf"))
        return args, kwargs
    return hook


def cut_hooks(bridge, arch: str, cuts: dict[tuple[str, int], torch.Tensor]) -> tuple[list, list]:
    """Hooks for `interp.hooks.run` cutting `cuts`: (kind, layer) -> `[rows, H, Q, K]` bool
    entries (Q, K the batch's widths): (hook name, fn) pairs for decoders, (T5 attention
    module, pre-hook) pairs for T5. A (kind, layer) that cuts nothing gets no hook."""
    tl, pre = [], []
    for (kind, layer), sel in cuts.items():
        if not bool(sel.any()):
            continue
        name = hook_name(bridge, kind, layer, "hook_pattern")
        if arch == "decoder":
            tl.append((name, _knock(sel)))
        else:
            pre.append((module_at(bridge, name.rsplit(".", 1)[0]).original_component,
                        _t5_knock(sel)))
    return tl, pre


__all__ = ["DRAWS", "BETAS", "LOW", "HIGH", "LEFT", "MassControls", "equal_mass_controls",
           "cut_hooks", "matches"]
