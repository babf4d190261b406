"""Route knockout: does the answer need one head's reading of field K from the queries of
field Q? (the intervention beside every head label; over 400 lines because specs,
cuts, matched controls, the stacked runs and the label checks share one vocabulary.)

    res = ablate_route(bridge, task, examples, ["L2H0:D_value->b,c"], n_controls=20)
    res.frame()        # one row per knockout x measure: effect [CI], p, target/control mass
    verify_heads(bridge, task, examples, head_table)   # one row per head, its first label

The knockout: in ONE head at ONE (kind, layer) the attention from the selected query
positions to the selected key positions is set to zero and each affected row renormalised
(decoder: the pattern is edited; T5: the scores of those entries get -inf in that head, the
same renormalised weights). Nothing else changes: other heads, other queries, other layers.

Route specs (`parse_route`), `[kind.]L<layer>H<head>:<what>`:

- `L2H0:D_value->b,c`  queries of group D_value, keys of groups b or c
- `L2H0:->b`           every query, keys of group b (as `token=b`, except that a route
                       refuses a row left without keys where `token=` leaves it out)
- `L2H0:*->b`          the same, unless the grouping has a literal `*` group (the quadratic
                       solution's multiplication sign): then the queries of that group, as
                       the taxonomy's `routed(*->a,c)` means
- `L1H2:offset=1`      the key d = 1 positions back from each query (a diagonal; self kinds)
- `L1H2:token==`       every query, keys of group `=` (the text after `token=` is the group)
- `L1H2:x1->offset=0`  a query selection works before `offset=` and `token=` too

Decoder models have one kind (no prefix); T5 specs start with `enc.`, `dec.` or `cross.`
(encoder self, decoder self, cross attention; the prefixes of `circuits.patching` sites).
Groups are `interp.attention.groups.group_role` of each position's task role: by field
(`b_digit`, `b_sign` -> `b`; literals such as `x`, `^`, `=` stay themselves), or the fine
roles with grouping "fine".

Controls of equal attention mass (the default, `controls="mass"`; the rule and its
report are `circuits.ablation.masscut`'s): each control cuts, in each affected query row,
the same clean attention mass as the target, never the target's keys: other keys of the same
head (any number of them) where they can match it within [0.8, 1.25], else entries of the
other heads of the same layer in the same row. Reported: target_mass, control_mass,
mass_ratio, control_rule, other_heads, unmatched, ratio_min. The count rule
(`controls="count"`, `control_cuts`): as many other keys of the row, the closest in mass
among `DRAWS` random draws; kept for comparison.

With `reads=True` the value path patch (`circuits.ablation.reads`) runs beside each
knockout: the head's values at K, in the rows of Q only, from a same-layout donor, against
the same controls' entries resampled alike (`RouteResult.reads`).

Effect = damage(target) - mean damage(controls) per example, its bootstrap interval over
examples, the control-rank p-value (`circuits.stats`) and the verdict of
`circuits.stats.verdict` ("untestable" where the controls cannot reach p <= 0.05). Measures: teacher-forced answer
loss, its mean per solution field (`loss:<field>`), exact match and field correctness; with
`decode`, free-running greedy decoding under the knockout and the task checker per step.

All conditions (targets and controls of every knockout) run stacked along the batch: one
forward pass carries up to `max_rows` example x condition rows (default 128: on the CPU a
larger stack spends more in page faults on its large transient tensors than it saves; for 7
heads x 11 conditions x 100 examples of quadratic-small, 31 s at 128 rows against 66 s at
1,024, the same figures; on a GPU a larger value may pay).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from interp.attention.groups import group_role
from interp.attention.taxonomy import parse_label
from interp.errors import InterpError
from interp import distributed
from interp.hooks import KINDS, capture, hook_name, kinds_of, n_layers, run
from interp.tasks.base import Example, Task

from circuits.stats import testable, untestable_note, verdict

from .decoding import decode_route
from .experiment import compare
from .interventions import Scores, batches, forward, run_condition
from .masscut import MassControls, cut_hooks, equal_mass_controls
from .positions import Prepared, prepare
from .reads import donor_values, find_donors, z_delta, z_hook

#: the control rules: "mass" (equal mass, `circuits.ablation.masscut`), "count" (as many
#: other keys of the same head, the closest in mass: the count rule)
RULES = ("mass", "count")

#: random draws per control and query row; the one closest in attention mass is kept
DRAWS = 16
#: draws take keys with probability proportional to attention**beta, beta cycling these
BETAS = (0.0, 1.0, 2.0, 4.0)
CHUNK = 256     # query rows drawn for at once
PREFIX = {"enc": "encoder", "dec": "decoder_self", "cross": "cross"}
_SPEC = re.compile(r"^(?:(enc|dec|cross)\.)?L(\d+)H(\d+):(.+)$")
_EXAMPLE = {"decoder": "'L2H0:D_value->b,c', 'L1H2:offset=1' or 'L0H3:token=='",
            "t5": "'cross.L1H3:D_value->b', 'enc.L0H1:offset=1' or 'dec.L2H0:token=='"}


@dataclass(frozen=True)
class HeadKnockout:
    """What one route knockout cuts.

    Attributes
    ----------
    kind : "self", "encoder", "decoder_self" or "cross"
    layer, head : the head
    queries : query groups (None: every query)
    keys : key groups; or offset: cut the key q - offset of query q (self kinds only); or
        token: cut the key group `token` from every selected query (a `vertical(token)` head).
        Exactly one of keys, offset, token.
    grouping : "field" (default) or "fine"
    """

    kind: str
    layer: int
    head: int
    queries: tuple[str, ...] | None = None
    keys: tuple[str, ...] | None = None
    offset: int | None = None
    token: str | None = None
    grouping: str = "field"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InterpError(f"unknown attention kind {self.kind!r}; choose one of "
                              f"{', '.join(KINDS)}")
        if sum(x is not None for x in (self.keys, self.offset, self.token)) != 1:
            raise InterpError("a head knockout cuts keys, an offset or a token: give exactly "
                              "one of them, e.g. 'L2H0:D_value->b,c' or 'L1H2:offset=1'")
        if self.offset is not None and self.kind == "cross":
            raise InterpError("an offset knockout needs self attention (query and key on one "
                              "sequence); cross attention has no diagonal")
        if self.grouping not in ("field", "fine"):
            raise InterpError(f"unknown grouping {self.grouping!r}; choose field or fine")

    @property
    def key_groups(self) -> tuple[str, ...] | None:
        return (self.token,) if self.token is not None else self.keys

    @property
    def spec(self) -> str:
        """The spec `parse_route` reads back."""
        prefix = {v: k + "." for k, v in PREFIX.items()}.get(self.kind, "")
        q = "" if self.queries is None else ",".join(self.queries) + "->"
        if self.offset is not None:
            what = f"{q}offset={self.offset}"
        elif self.token is not None:
            what = f"{q}token={self.token}"
        else:
            what = f"{q or '->'}{','.join(self.keys)}"
        return f"{prefix}L{self.layer}H{self.head}:{what}"


def parse_route(spec: str, arch: str = "decoder", grouping: str = "field") -> HeadKnockout:
    """A `HeadKnockout` from a spec such as `L2H0:D_value->b,c` (see the module docstring);
    one-line `InterpError` for anything else."""
    m = _SPEC.match(spec.strip())
    if not m:
        raise InterpError(f"cannot read route {spec!r}; write e.g. {_EXAMPLE.get(arch, '')}")
    prefix, layer, head, body = m.groups()
    if arch == "t5" and prefix is None:
        raise InterpError(f"route {spec!r} names no attention kind; a T5 route starts with "
                          "enc., dec. or cross., e.g. 'cross.L1H3:D_value->b'")
    if arch != "t5" and prefix is not None:
        raise InterpError(f"route {spec!r}: this {arch} model has one attention kind; drop "
                          f"the {prefix}. prefix, e.g. 'L2H0:D_value->b,c'")
    kind = PREFIX[prefix] if prefix else ("encoder" if arch == "encoder" else "self")
    queries, rest = None, body
    if "->" in body:
        q, rest = body.split("->", 1)
        queries = None if not q.strip() else _names(q, spec)
    kw: dict = {}
    if rest.startswith("offset="):
        try:
            kw["offset"] = int(rest[len("offset="):])
        except ValueError:
            raise InterpError(f"route {spec!r}: offset must be an integer, e.g. "
                              "'L1H2:offset=1'") from None
    elif rest.startswith("token="):
        if not rest[len("token="):]:
            raise InterpError(f"route {spec!r} names no token; e.g. 'L1H2:token=x'")
        kw["token"] = rest[len("token="):]
    elif "->" not in body:
        raise InterpError(f"cannot read route {spec!r}; name queries and keys as 'Q->K', or "
                          f"'offset=d' or 'token=t', e.g. {_EXAMPLE.get(arch, '')}")
    else:
        kw["keys"] = _names(rest, spec)
    return HeadKnockout(kind, int(layer), int(head), queries, grouping=grouping, **kw)


def _names(text: str, spec: str, names=None) -> tuple[str, ...]:
    names = tuple(t.strip() for t in text.split(",")) if names is None else tuple(names)
    if "" in names:
        raise InterpError(f"route {spec!r} has an empty group name; separate groups with "
                          "single commas, e.g. 'D_value->b,c'")
    return names


def _groups(prep: Prepared, side: str, grouping: str) -> list[list[str]]:
    return [[group_role(r, grouping) for r in roles] for roles in prep.sides[side].roles]


def _select(groups: list[list[str]], width: int, want: Sequence[str] | None) -> torch.Tensor:
    """`[N, width]` True where a position's group is in `want` (every real one if None)."""
    out = torch.zeros(len(groups), width, dtype=torch.bool)
    for i, g in enumerate(groups):
        for p, name in enumerate(g):
            out[i, p] = want is None or name in want
    return out


def allowed(prep: Prepared, kind: str) -> torch.Tensor:
    """`[N, Wq, Wk]` True where a real query may read a real key (causal kinds: not later)."""
    k = KINDS[kind]
    vq, vk = prep.sides[_side(prep, k.query_side)].valid, prep.sides[_side(prep, k.key_side)].valid
    ok = vq[:, :, None] & vk[:, None, :]
    if k.causal:
        ok = ok & torch.ones(ok.shape[1:], dtype=torch.bool).tril()
    return ok


def _side(prep: Prepared, side: str) -> str:
    return "src" if side == "seq" and "seq" not in prep.sides else side


def target_cut(prep: Prepared, ko: HeadKnockout) -> torch.Tensor:
    """`[N, Wq, Wk]` the (query, key) entries `ko` cuts, per example; refuses a route that
    leaves a query row nothing to read (an offset or token knockout leaves such rows out)."""
    k = KINDS[ko.kind]
    qs, ks = _side(prep, k.query_side), _side(prep, k.key_side)
    ok = allowed(prep, ko.kind)
    qg, kg = _groups(prep, qs, ko.grouping), _groups(prep, ks, ko.grouping)
    queries = _queries(ko, qg)
    _check_groups(ko, queries, qg, kg)
    qsel = _select(qg, ok.shape[1], queries)
    if ko.offset is not None:
        cut = qsel[:, :, None] & _offset(ok.shape[1], ok.shape[2], ko.offset)[None] & ok
        if not bool(cut.any()):
            causal = KINDS[ko.kind].causal
            raise InterpError(
                f"route {ko.spec}: no selected query has a key at offset {ko.offset} "
                + ("(a key after its query, which causal attention never reads); "
                   if ko.offset < 0 and causal else
                   f"(these sequences are at most {ok.shape[2]} positions long); ")
                + "give an offset from 0 to the length minus 1, e.g. 'offset=1'")
    else:
        ksel = _select(kg, ok.shape[2], ko.key_groups)
        cut = qsel[:, :, None] & ksel[:, None, :] & ok
    dead = cut.any(-1) & ~(ok & ~cut).any(-1)
    if ko.offset is not None or ko.token is not None:
        # a diagonal or a stripe: a row whose only keys are the cut ones (the first position
        # reading itself at offset 0, or only <bos>) has nothing to renormalise to; left out
        cut = cut & ~dead[..., None]
        if not bool(cut.any()):
            raise InterpError(f"route {ko.spec} cuts nothing: every selected query reads only "
                              "the keys it would cut; choose another offset, token or queries")
        return cut
    if bool(dead.any()):
        i, q = torch.nonzero(dead)[0].tolist()
        raise InterpError(f"route {ko.spec} removes every key that position {q} of "
                          f"{prep.examples[i].src!r} may read; cut fewer keys or select "
                          "fewer queries")
    return cut


def _offset(wq: int, wk: int, d: int) -> torch.Tensor:
    """`[wq, wk]` True at (q, q - d)."""
    q = torch.arange(wq)[:, None]
    return torch.arange(wk)[None, :] == q - d


def _queries(ko: HeadKnockout, qg) -> tuple[str, ...] | None:
    """The query groups `ko` selects: a lone `*` is every query unless `*` is a group of
    these examples (a literal multiplication sign), which it then names."""
    if ko.queries == ("*",) and not any("*" in row for row in qg):
        return None
    return ko.queries


def _check_groups(ko: HeadKnockout, queries, qg, kg) -> None:
    for what, want, have in (("query", queries, qg), ("key", ko.key_groups, kg)):
        names = {g for row in have for g in row}
        bad = [w for w in (want or ()) if w not in names]
        if bad:
            raise InterpError(f"route {ko.spec}: no {what} position of these examples is in "
                              f"group {', '.join(map(repr, bad))}; the {what} groups are: "
                              f"{' '.join(sorted(names))}")


def clean_pattern(bridge, prep: Prepared, ko: HeadKnockout, batch_size: int = 128
                  ) -> torch.Tensor:
    """`[N, Wq, Wk]` float32: the clean attention of `ko`'s head."""
    return clean_patterns(bridge, prep, ko.kind, ko.layer, batch_size)[:, ko.head]


def clean_patterns(bridge, prep: Prepared, kind: str, layer: int, batch_size: int = 128
                   ) -> torch.Tensor:
    """`[N, H, Wq, Wk]` float32: the clean attention of every head of `kind` at `layer`."""
    k = KINDS[kind]
    qs, ks = _side(prep, k.query_side), _side(prep, k.key_side)
    name = hook_name(bridge, kind, layer, "hook_pattern")
    out = None
    for index, widths, ids, valid, _, _ in batches(prep, batch_size):
        kw = {"attention_mask": valid[prep.main_side].long()}
        if prep.arch == "t5":
            kw["decoder_input"] = ids["tgt"]
        p = capture(bridge, ids[prep.main_side], names=[name], **kw)[name]
        if out is None:
            out = torch.zeros(prep.n, p.shape[1], prep.sides[qs].ids.shape[1],
                              prep.sides[ks].ids.shape[1])
        out[index, :, : p.shape[2], : p.shape[3]] = p.float().cpu()
    return out


def control_cuts(cut: torch.Tensor, ok: torch.Tensor, pattern: torch.Tensor, n_controls: int,
                 rng: np.random.Generator, draws: int = DRAWS
                 ) -> tuple[list[torch.Tensor], float, float]:
    """`n_controls` cuts like `cut: [N, Wq, Wk]`, matched in mass, with the mean target and
    control mass per affected row. `ok`: the allowed entries; `pattern`: the clean attention
    of the head, both `[N, Wq, Wk]`.

    Per affected row and control: `draws` random key sets of the target's size among the
    row's other allowed keys, drawn without replacement with probability proportional to
    attention**beta (beta cycling through `BETAS`: uniform draws, and draws leaning towards
    the heavier keys, so that a heavy target can be matched); the set whose clean mass is
    closest to the target's is kept."""
    out = torch.zeros(n_controls, *cut.shape, dtype=torch.bool)
    rows = torch.nonzero(cut.any(-1))                                     # [R, 2]
    t_mass, c_mass = [], []
    betas = torch.tensor(np.resize(np.array(BETAS), draws))[:, None, None]  # [D, 1, 1]
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    for s in range(0, len(rows), CHUNK):
        i, q = rows[s:s + CHUNK].T
        tk, a = cut[i, q], pattern[i, q].double()                          # [r, Wk]
        pool = ok[i, q] & ~tk
        m_t = (a * tk).sum(-1)                                            # [r]
        size = torch.minimum(tk.sum(-1), pool.sum(-1))
        t_mass.append(m_t)
        if n_controls == 0:
            continue
        u = torch.rand((n_controls, draws, *a.shape), generator=gen).clamp(1e-12, 1 - 1e-7)
        keys = (betas * a.clamp_min(1e-30).log()[None]).float() - (-u.log()).log()  # + Gumbel
        keys = keys.masked_fill(~pool, float("-inf"))                     # [C, D, r, Wk]
        kmax = max(1, int(size.max()))
        top = keys.topk(kmax, -1).indices                                 # [C, D, r, kmax]
        take = (torch.arange(kmax) < size[:, None]).expand(top.shape)
        sel = torch.zeros(keys.shape, dtype=torch.bool).scatter_(-1, top, take)
        mass = (sel * a).sum(-1)                                          # [C, D, r]
        best = (mass - m_t).abs().argmin(1)                               # [C, r]
        out[:, i, q] = sel.gather(1, best[:, None, :, None].expand(-1, 1, *a.shape))[:, 0]
        c_mass.append(mass.gather(1, best[:, None])[:, 0].flatten())
    cat = lambda v: torch.cat(v).tolist() if v else []  # noqa: E731
    return list(out), _mean(cat(t_mass)), _mean(cat(c_mass))


def _mean(v: list) -> float:
    return float(np.mean(v)) if v else float("nan")


def run_cuts(bridge, prep: Prepared, conditions: Sequence[tuple[HeadKnockout, torch.Tensor]],
             batch_size: int = 128, max_rows: int = 128, progress=None) -> list:
    """Teacher-forced `Run` of each (knockout, cut) condition: cut `[N, Wq, Wk]` (entries of
    the knockout's head) or `[N, H, Wq, Wk]` (entries of any heads of its layer: an
    equal-mass control). Conditions are stacked along the batch, up to `max_rows` rows per
    forward pass. Decoder models start each pass at the knockout's layer from the clean
    residual stream there (the layers below are the clean run's, computed once per batch)."""
    n_heads = int(bridge.cfg.n_heads)

    def hooks(part, index, widths, ids, valid):
        return cut_hooks(bridge, prep.arch, _stack(prep, part, index, widths, n_heads))
    return _run_stacked(bridge, prep, conditions, hooks, batch_size, max_rows, progress)


def run_reads(bridge, prep: Prepared, conditions: Sequence[tuple[HeadKnockout, torch.Tensor]],
              v_donor: dict[tuple[str, int], torch.Tensor], batch_size: int = 128,
              max_rows: int = 128, progress=None) -> list:
    """Teacher-forced `Run` of each (knockout, cut) condition under the value path patch
    (`circuits.ablation.reads`): the clean attention kept, the values at the cut (head,
    query, key) entries read from the donor's values `v_donor[(kind, layer)]: [N, Wk, H, d]`."""
    n_heads = int(bridge.cfg.n_heads)
    state: dict = {}

    def hooks(part, index, widths, ids, valid):
        key = tuple(index.tolist())
        if state.get("index") != key:           # a new batch: its clean patterns and values
            names = {kl: (hook_name(bridge, kl[0], kl[1], "hook_pattern"),
                          hook_name(bridge, kl[0], kl[1], "hook_v")) for kl in v_donor}
            kw = {"attention_mask": valid[prep.main_side].long()}
            if prep.arch == "t5":
                kw["decoder_input"] = ids["tgt"]
            got = capture(bridge, ids[prep.main_side],
                          names=[n for pair in names.values() for n in pair], **kw)
            state.clear()
            state.update(index=key, clean={kl: (got[a].float().cpu(), got[b].float().cpu())
                                           for kl, (a, b) in names.items()})
        tl = []
        for (kind, layer), sel in _stack(prep, part, index, widths, n_heads).items():
            pat, v = state["clean"][(kind, layer)]
            reps = len(sel) // len(index)
            vd = v_donor[(kind, layer)][index, : v.shape[1]]
            delta = z_delta(sel[:, :, : pat.shape[2], : pat.shape[3]], pat.repeat(reps, 1, 1, 1),
                            v.repeat(reps, 1, 1, 1), vd.repeat(reps, 1, 1, 1))
            tl.append((hook_name(bridge, kind, layer, "hook_z"), z_hook(delta)))
        return tl, []
    return _run_stacked(bridge, prep, conditions, hooks, batch_size, max_rows, progress)


def _run_stacked(bridge, prep, conditions, make_hooks, batch_size, max_rows, progress) -> list:
    """The stacked teacher-forced runs of `conditions` with `make_hooks(part, index, widths,
    ids, valid) -> (hooks, pre_hooks)` building each stacked pass's intervention."""
    scores = [Scores(prep) for _ in conditions]
    skip = prep.arch == "decoder"
    by_layer: dict[int, list[int]] = {}
    for j, (ko, _) in enumerate(conditions):
        by_layer.setdefault(ko.layer if skip else 0, []).append(j)
    names = {l: hook_name(bridge, "self", l, "hook_resid_pre") for l in by_layer if l > 0}
    for index, widths, ids, valid, _, _ in batches(prep, batch_size):
        b = len(index)
        step = max(1, max_rows // b)
        mask = valid[prep.main_side].long()
        resid = capture(bridge, ids["seq"], names=names.values(), attention_mask=mask) \
            if names else {}
        for layer, members in sorted(by_layer.items()):
            for start in range(0, len(members), step):
                part = members[start:start + step]
                if progress:
                    progress(f"{len(part)} conditions at layer {layer}, {b} examples")
                hooks = make_hooks([conditions[j] for j in part], index, widths, ids, valid)
                if layer in names:
                    logits = run(bridge, resid[names[layer]].repeat(len(part), 1, 1),
                                 hooks=hooks[0], start_at_layer=layer,
                                 attention_mask=mask.repeat(len(part), 1)).float().cpu()
                else:
                    logits = forward(bridge, prep.arch, {s: v.repeat(len(part), 1)
                                                         for s, v in ids.items()},
                                     {s: v.repeat(len(part), 1) for s, v in valid.items()},
                                     hooks)
                for r, j in enumerate(part):
                    scores[j].add(index, logits[r * b:(r + 1) * b])
    return [s.run() for s in scores]


def _stack(prep: Prepared, conds, index: torch.Tensor, widths: dict[str, int], n_heads: int
           ) -> dict:
    """(kind, layer) -> `[rows, H, Wq, Wk]` the entries cut by the conditions stacked on the
    examples `index`, cut to the batch's widths (a `[N, Wq, Wk]` cut is its knockout's head)."""
    b = len(index)
    out: dict = {}
    for r, (ko, cut) in enumerate(conds):
        k = KINDS[ko.kind]
        wq, wk = widths[_side(prep, k.query_side)], widths[_side(prep, k.key_side)]
        if (ko.kind, ko.layer) not in out:
            out[(ko.kind, ko.layer)] = torch.zeros(b * len(conds), n_heads, wq, wk,
                                                   dtype=torch.bool)
        c = out[(ko.kind, ko.layer)]
        if cut.dim() == 3:
            c[r * b:(r + 1) * b, ko.head] = cut[index, :wq, :wk]
        else:
            c[r * b:(r + 1) * b] = cut[index, :, :wq, :wk]
    return out


@dataclass
class RouteResult:
    """What `ablate_route` found.

    Attributes
    ----------
    summary : DataFrame
        One row per knockout x measure: knockout (spec), measure, clean, target (the measure
        under the knockout), control (its mean under the controls), target_damage,
        control_damage, effect (target - control damage, mean over examples), ci_lo, ci_hi
        (95% bootstrap over examples), p (control rank), verdict (`circuits.stats.verdict`:
        "confirmed", "not confirmed" or "untestable" when the controls cannot reach p <=
        0.05), target_mass, control_mass (mean clean attention mass cut per affected query
        row), mass_ratio (control / target), control_rule ("same-head", "other-heads",
        "mixed (x% other-heads)" or "count"), other_heads and unmatched (shares of control
        rows cut in other heads / outside the [0.8, 1.25] mass band), ratio_min (the
        smallest per-row mass ratio), rows (affected query rows per example).
    meta : dict
        What was run (knockouts, n, distinct equations, controls, seed, family, decode, rule).
    decoded : dict
        knockout spec -> {"clean", "target"}: greedy outputs under the knockout (with decode).
    reads : DataFrame or None
        With `reads`: the value path patch (`circuits.ablation.reads`), one row per knockout
        x measure with the same columns as `summary` (the same controls' entries resampled
        instead of cut) and `donors`, the examples that had a same-layout donor.
    """

    summary: pd.DataFrame
    meta: dict = field(default_factory=dict)
    decoded: dict = field(default_factory=dict)
    reads: pd.DataFrame | None = None

    def frame(self) -> pd.DataFrame:
        """The summary table (see the class docstring for its columns)."""
        return self.summary

    def figure(self):
        """Effect per measure with its 95% interval, one trace per knockout (plotly)."""
        from interp.viz.reports.routes import route_figure

        return route_figure(self.summary)


def ablate_route(bridge, task: Task, examples: Sequence[Example],
                 knockouts: Sequence[HeadKnockout | str], n_controls: int = 20, seed: int = 0,
                 decode: bool = False, batch_size: int = 128, max_rows: int = 128,
                 grouping: str = "field", progress=None, controls: str = "mass",
                 reads: bool = False) -> RouteResult:
    """Knock out each route in one head and measure the damage against equal-mass controls.

    Parameters
    ----------
    bridge : TransformerBridge of a decoder-only or T5 task model
    task, examples : the task and its examples (`task.generate(...)`)
    knockouts : `HeadKnockout`s or specs for `parse_route` (e.g. "L2H0:D_value->b,c")
    n_controls : control cuts per knockout (19 or more for p <= 0.05 to be reachable; fewer
        give the verdict "untestable")
    decode : also greedy-decode under each knockout, with the checker per step (slower)
    max_rows : example x condition rows stacked into one forward pass
    controls : "mass" (equal mass in the same rows: `circuits.ablation.masscut`) or "count"
        (as many other keys of the same head, closest in mass: the earlier rule)
    reads : also the value path patch (does the head read K?), in `RouteResult.reads`

    Returns
    -------
    RouteResult
        `.frame()` one row per knockout x measure, `.figure()` the effects.
    """
    say = progress or (lambda _m: None)
    if n_controls < 0:
        raise InterpError(f"the number of controls must be 0 or more, got {n_controls}")
    if controls not in RULES:
        raise InterpError(f"unknown control rule {controls!r}; choose one of {', '.join(RULES)}")
    prep = prepare(bridge, task, examples)
    kos = [parse_route(k, prep.arch, grouping) if isinstance(k, str) else k for k in knockouts]
    if not kos:
        raise InterpError("no route to knock out; give at least one, e.g. 'L2H0:D_value->b,c'")
    conds, info = _conditions(bridge, prep, kos, n_controls, seed, batch_size, say, controls)
    say("clean run")
    clean = run_condition(bridge, prep, batch_size=batch_size)
    runs = run_cuts(bridge, prep, conds, batch_size, max_rows, say)
    names = prep.field_names
    cm = clean.metrics(names, field_loss=True)
    decoded, rows = {}, []
    for j, ko in enumerate(kos):
        at = j * (1 + n_controls)
        target, ctl = runs[at], runs[at + 1: at + 1 + n_controls]
        tm, cms = target.metrics(names, field_loss=True), [r.metrics(names, field_loss=True)
                                                            for r in ctl]
        c0, t0, cs = dict(cm), dict(tm), [dict(c) for c in cms]
        if decode:
            say(f"free-running decoding under {ko.spec}")
            dec = decode_route(bridge, prep, task, clean, ko.kind, ko.layer, ko.head,
                               [(runs[at + x], conds[at + x][1]) for x in range(1 + n_controls)],
                               batch_size)
            decoded[ko.spec] = dec["outputs"]
            c0.update(dec["clean"])
            t0.update(dec["conditions"][0])
            for c, d in zip(cs, dec["conditions"][1:]):
                c.update(d)
        table = compare(c0, t0, cs, seed, groups=[e.src for e in prep.examples])
        for _, r in table.iterrows():
            rows.append(_row(ko, r, info[j], n_controls))
    meta = {"knockouts": [k.spec for k in kos], "n": prep.n,
            "distinct": len({e.src for e in prep.examples}), "controls": n_controls,
            "seed": seed, "family": prep.arch, "decode": decode, "draws": DRAWS,
            "rule": controls,
            "note": "" if testable(n_controls) else untestable_note(n_controls)}
    read_rows = _reads(bridge, task, prep, kos, conds, info, clean, n_controls, seed,
                       batch_size, max_rows, say) if reads else None
    return RouteResult(pd.DataFrame(rows), meta, decoded, read_rows)


def _reads(bridge, task, prep, kos, conds, info, clean, n_controls, seed, batch_size, max_rows,
           say) -> pd.DataFrame:
    """The value path patch of every knockout against its controls' entries, one row per
    knockout x measure (over the examples that have a same-layout donor)."""
    names = prep.field_names
    cm = clean.metrics(names, field_loss=True)
    rows = []
    for j, ko in enumerate(kos):
        at = j * (1 + n_controls)
        k = KINDS[ko.kind]
        side = _side(prep, k.key_side)
        cut = conds[at][1]
        say(f"{ko.spec}: same-layout donors and their values")
        donors, has = find_donors(bridge, task, prep, side, cut.any(1), seed)
        vd = {(ko.kind, ko.layer): donor_values(bridge, prep, donors, ko.kind, ko.layer,
                                                batch_size)}
        keep = torch.nonzero(has).flatten()
        runs = run_reads(bridge, prep, conds[at:at + 1 + n_controls], vd, batch_size,
                         max_rows, say) if len(keep) else []
        sub = lambda d: {m: v[keep] for m, v in d.items()}  # noqa: E731
        mets = [sub(r.metrics(names, field_loss=True)) for r in runs]
        if not len(keep):          # K holds only literals: no donor can differ there
            nan = float("nan")
            rows.append({"knockout": ko.spec, "kind": ko.kind, "layer": ko.layer,
                         "head": ko.head, "measure": "answer_loss", "effect": nan,
                         "ci_lo": nan, "ci_hi": nan, "p": nan, "verdict": None, **info[j],
                         "donors": 0})
            continue
        table = compare(sub(cm), mets[0], mets[1:], seed,
                        groups=[prep.examples[int(i)].src for i in keep])
        for _, r in table.iterrows():
            rows.append({**_row(ko, r, info[j], n_controls), "donors": int(len(keep))})
    return pd.DataFrame(rows)


def _conditions(bridge, prep, kos, n_controls, seed, batch_size, say, rule="mass"):
    """The target and control cuts of every knockout, in order, and their masses."""
    conds, info = [], []
    for ko in kos:
        _check_head(bridge, ko)
        cut = target_cut(prep, ko)
        rng = np.random.default_rng([seed, zlib.crc32(ko.spec.encode())])
        rows = float(cut.any(-1).sum()) / prep.n
        ok = allowed(prep, ko.kind)
        if rule == "count":
            say(f"{ko.spec}: clean attention and {n_controls} count-matched controls")
            pattern = clean_pattern(bridge, prep, ko, batch_size)
            ctl, tm, cmass = control_cuts(cut, ok, pattern, n_controls, rng)
            info.append({"target_mass": tm, "control_mass": cmass,
                         "mass_ratio": cmass / tm if tm > 0 else float("nan"),
                         "control_rule": "count", "other_heads": 0.0,
                         "unmatched": float("nan"), "ratio_min": float("nan"), "rows": rows})
        else:
            say(f"{ko.spec}: clean attention and {n_controls} equal-mass controls")
            pats = clean_patterns(bridge, prep, ko.kind, ko.layer, batch_size)
            mc: MassControls = equal_mass_controls(cut, ok, pats, ko.head, n_controls, rng)
            ctl = list(mc.cuts)
            info.append({"target_mass": mc.target_mass, "control_mass": mc.control_mass,
                         "mass_ratio": mc.mass_ratio, "control_rule": mc.rule,
                         "other_heads": mc.other_heads, "unmatched": mc.unmatched,
                         "ratio_min": mc.ratio_min, "rows": rows})
        conds += [(ko, cut)] + [(ko, c) for c in ctl]
    return conds, info


def _check_head(bridge, ko: HeadKnockout) -> None:
    if ko.kind not in kinds_of(bridge):
        raise InterpError(f"route {ko.spec}: this model has no {ko.kind!r} attention; its "
                          f"kinds are {', '.join(kinds_of(bridge))}")
    n, h = n_layers(bridge, ko.kind), int(bridge.cfg.n_heads)
    if not (0 <= ko.layer < n and 0 <= ko.head < h):
        raise InterpError(f"route {ko.spec}: no head L{ko.layer}H{ko.head}; this model has "
                          f"layers 0-{n - 1} and heads 0-{h - 1}")


def _row(ko, r, info, n_controls) -> dict:
    nan = float("nan")
    clean, target = r["clean"], r["ablated"]
    td = r["target_damage"]
    cd = r.get("control_damage_mean", nan) if n_controls else nan
    sign = 1 if r["metric"] == "answer_loss" or r["metric"].startswith("loss:") else -1
    lo, p = r.get("ci_low", nan), r.get("p_value", nan)
    return {"knockout": ko.spec, "kind": ko.kind, "layer": ko.layer, "head": ko.head,
            "measure": r["metric"], "clean": clean, "target": target,
            "control": clean + sign * cd if not np.isnan(cd) else nan,
            "target_damage": td, "control_damage": cd,
            "effect": r.get("difference", nan), "ci_lo": lo,
            "ci_hi": r.get("ci_high", nan), "p": p, "verdict": verdict(lo, p, n_controls),
            **info}


CHECKABLE = ("routed", "vertical", "sharp_diagonal", "blurred_diagonal")


def label_knockout(row, grouping: str = "field", groups: set | None = None
                   ) -> HeadKnockout | None:
    """The knockout that checks a head table row's first label (None if it has no check):
    `routed(Q->K)` cuts K from Q, `vertical(t)` cuts t from every query, `sharp_diagonal(d)`
    the offset d, `blurred_diagonal` the offset `band_centre`. A vertical role that is no
    group under `grouping` (e.g. `b_digit` under "field") is cut as a fine role."""
    labels = row["labels"]
    label = str(labels if isinstance(labels, str) else labels[0]).strip()
    # the taxonomy's own reader: groups that are no plain name come quoted, `routed('-'->b)`
    try:
        name, args = parse_label(label)
    except ValueError:
        return None
    if name not in CHECKABLE:
        return None
    head = {"kind": row["kind"], "layer": int(row["layer"]), "head": int(row["head"]),
            "grouping": grouping}
    if name == "routed":
        q, k = args
        queries = None if not q else _names(",".join(q), label, q)   # `*`: see _queries
        return HeadKnockout(queries=queries, keys=_names(",".join(k), label, k), **head)
    if name == "vertical":
        arg = args[0]
        if groups is not None and arg not in groups:
            head["grouping"] = "fine"
        return HeadKnockout(token=arg, **head)
    if name == "sharp_diagonal":
        return HeadKnockout(offset=int(args[0]), **head)
    return HeadKnockout(offset=round(float(row["band_centre"])), **head)


def _stderr_progress():
    """A progress function printing `[12 s] message` lines on stderr."""
    import sys
    import time

    t0 = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:.0f} s] {msg}", file=sys.stderr, flush=True)
    return say


def verify_heads(bridge, task: Task, examples: Sequence[Example], table: pd.DataFrame,
                 n_controls: int = 20, seed: int = 0, grouping: str = "field",
                 batch_size: int = 128, max_rows: int = 128, progress=None,
                 controls: str = "mass", reads: bool = True, quiet: bool = False
                 ) -> pd.DataFrame:
    """Check each head's first label by knocking out what it claims the head reads, and
    (with `reads`) whether the head reads K's content (the value path patch).

    Parameters
    ----------
    table : a head table (`interp.head_taxonomy(...).frame()`): columns kind, layer, head,
        labels (list of strings), and band_centre for `blurred_diagonal`
    n_controls : equal-mass controls per head (19 or more for p <= 0.05 to be reachable;
        fewer: every verdict is "untestable")
    controls : "mass" (the default) or "count" (the earlier, count-matched rule), see
        `ablate_route`
    progress : a function called with a short line per step (each head's conditions, each
        stacked batch); default: those lines on stderr with the seconds since the start,
        unless `quiet`

    Returns
    -------
    DataFrame
        One row per head of `table`: kind, layer, head, label, knockout (spec), measure (the
        effect's measure: `loss:<Q>` for a route from a solution field Q, else answer_loss),
        effect, ci_lo, ci_hi, p, verdict ("confirmed", "not confirmed", "untestable"; None
        when the label has no check), supported (ci_lo > 0 and p <= 0.05; None when the
        label has no check or the controls cannot reach p <= 0.05), answer_loss_effect (mean
        over the solution tokens), target_mass, control_mass, mass_ratio, control_rule,
        other_heads, unmatched, ratio_min (see `RouteResult`), and with `reads`
        reads_effect, reads_ci_lo, reads_ci_hi, reads_p, reads_verdict, reads_n (the value
        path patch on the same measure, over the reads_n examples with a donor). Every
        head's targets and controls run stacked (`ablate_route`). Under a launcher
        (`interp.distributed`) the knockouts are shared out over the processes in groups that
        keep every stacked pass whole (`circuits.ablation.route_shards`): the same frame.
    """
    if progress is None and not quiet:
        progress = _stderr_progress()
    prep = prepare(bridge, task, examples)
    groups = {g for s in prep.sides for g in _groups_set(prep, s, grouping)}
    kos = [label_knockout(r, grouping, groups) for _, r in table.iterrows()]
    todo = list(dict.fromkeys(k for k in kos if k is not None))
    if progress:
        progress(f"verify_heads: {len(todo)} labels to check on {len(examples)} examples, "
                 f"{n_controls} controls each")
    if todo and distributed.launched():   # knockouts shared out over processes, in groups
        from circuits.ablation.route_shards import ablate_route_shared

        res = ablate_route_shared(bridge, task, examples, todo, n_controls, seed, batch_size,
                                  max_rows, grouping, progress, controls=controls, reads=reads)
    else:
        res = ablate_route(bridge, task, examples, todo, n_controls, seed, False, batch_size,
                           max_rows, grouping, progress, controls=controls, reads=reads) \
            if todo else None
    nan = np.nan
    rows = []
    for (_, r), ko in zip(table.iterrows(), kos):
        labels = r["labels"]
        out = {"kind": r["kind"], "layer": int(r["layer"]), "head": int(r["head"]),
               "label": labels if isinstance(labels, str) else labels[0], "knockout": None,
               "measure": None, "effect": nan, "ci_lo": nan, "ci_hi": nan,
               "p": nan, "verdict": None, "supported": None, "answer_loss_effect": nan,
               "target_mass": nan, "control_mass": nan, "mass_ratio": nan,
               "control_rule": None, "other_heads": nan, "unmatched": nan, "ratio_min": nan}
        if reads:
            out.update(reads_effect=nan, reads_ci_lo=nan, reads_ci_hi=nan, reads_p=nan,
                       reads_verdict=None, reads_n=0)
        if ko is not None:
            s = res.summary[res.summary.knockout == ko.spec].set_index("measure")
            measure = "answer_loss"
            if ko.queries and len(ko.queries) == 1 and f"loss:{ko.queries[0]}" in s.index:
                measure = f"loss:{ko.queries[0]}"
            e = s.loc[measure]
            word = e.get("verdict", verdict(e.ci_lo, e.p, n_controls))
            out.update(knockout=ko.spec, measure=measure, effect=e.effect, ci_lo=e.ci_lo,
                       ci_hi=e.ci_hi, p=e.p, verdict=word,
                       supported=word == "confirmed",
                       answer_loss_effect=s.loc["answer_loss", "effect"],
                       target_mass=e.target_mass, control_mass=e.control_mass,
                       **{c: e.get(c, nan) for c in ("mass_ratio", "other_heads", "unmatched",
                                                     "ratio_min")},
                       control_rule=e.get("control_rule", None))
            if word == "untestable":
                out["supported"] = None          # never a silent "not supported"
            rd = res.reads
            if reads and rd is not None and len(rd) and (rd.knockout == ko.spec).any():
                g = rd[rd.knockout == ko.spec].set_index("measure")
                if measure in g.index:
                    x = g.loc[measure]
                    out.update(reads_effect=x.effect, reads_ci_lo=x.ci_lo,
                               reads_ci_hi=x.ci_hi, reads_p=x.p, reads_verdict=x.verdict,
                               reads_n=int(x.donors))
        rows.append(out)
    return pd.DataFrame(rows)


def _groups_set(prep: Prepared, side: str, grouping: str) -> set:
    return {g for row in _groups(prep, side, grouping) for g in row}


__all__ = ["DRAWS", "RULES", "HeadKnockout", "RouteResult", "parse_route", "ablate_route",
           "verify_heads", "label_knockout", "target_cut", "control_cuts", "clean_pattern",
           "clean_patterns", "allowed", "run_cuts", "run_reads"]
