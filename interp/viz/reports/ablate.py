"""The `ablate` report: the terminal table, the JSON and the self-contained HTML page of an
`AblationResult` (pure: a result in, text/dict/Page out; `circuits.ablation` makes it)."""

from __future__ import annotations

import json

import pandas as pd

from interp.viz.figures import ablation_figure, sweep_figure
from interp.viz.page import Page
from interp.viz.termtable import interval, signed


def _fmt(v, pct: bool) -> str:
    if v != v:  # NaN
        return "-"
    return f"{v:+.1%}" if pct else f"{v:+.3f}"


def controls_frame(res) -> pd.DataFrame:
    """Every control's mean damage per metric, with its kind ("random" or "role")."""
    parts = [d.assign(kind=kind) for kind, d in (("random", res.control_damage),
                                                 ("role", getattr(res, "role_damage", None)))
             if d is not None]
    if not parts:
        return pd.DataFrame(columns=["kind", "control", "metric", "damage"])
    return pd.concat(parts, ignore_index=True)[["kind", "control", "metric", "damage"]]


def verdict_lines(res, metric: str = "answer_loss") -> list[str]:
    """Which control the target beats on `metric`, each with effect [CI], p and verdict."""
    s = res.summary.set_index("metric")
    if metric not in s.index or "difference" not in s.columns:
        return []
    r = s.loc[metric]
    n = res.meta.get("controls", 0)
    beats, lines = [], []
    for pre, name, tests, how in (("", "as many random input positions", n, "controls"),
                                  ("role_", "as many role-matched structural positions "
                                   "(never a digit)", None, "sign patterns")):
        if f"{pre}difference" not in r.index or r.get(f"{pre}verdict") != r.get(f"{pre}verdict"):
            continue
        k = int(r[f"{pre}tests"]) if tests is None else tests
        v = r[f"{pre}verdict"]
        word = {"confirmed": "the target matters MORE than", "not confirmed":
                "the target matters NOT more than"}.get(v, "the target against")
        diff = interval(r[f"{pre}difference"], r[f"{pre}ci_low"], r[f"{pre}ci_high"])
        lines.append(f"  {metric.replace('_', ' ')}: {word} {name}: "
                     f"{v} (difference {diff.replace(' [', ', 95% CI [')}, p = "
                     f"{r[f'{pre}p_value']:.3f}, {k} {how})")
        if v == "untestable":
            lines.append("    " + res.meta.get(f"{pre}untestable_note", f"untestable at {k}"))
        if v == "confirmed":
            beats.append("random positions" if pre == "" else "role-matched positions")
    if lines:
        lines.append("  the target beats: " + (" and ".join(beats) if beats else "neither"))
    why = res.meta.get("role", {}).get("why")
    if why and res.meta.get("role", {}).get("drawn", 0) == 0:
        lines.append(f"  role-matched controls: none ({why})")
    return lines


def findings(res, metric: str = "answer_loss") -> list[str]:
    """The verdict sentences, first on the terminal and on the page: what ablating the
    target costs on `metric`, then which control it beats (`verdict_lines`), then the sweep's
    layers where it still beats the random controls."""
    s = res.summary.set_index("metric")
    if metric not in s.index:
        return []
    r = s.loc[metric]
    tokens = ",".join(res.meta.get("tokens", [])) or "the target"
    out = [f"ablating {tokens} ({res.meta.get('mode', '?')}): {metric.replace('_', ' ')} "
           f"{r.clean:.3f} -> {r.ablated:.3f} (damage {signed(r.target_damage)}) on "
           f"{res.meta.get('n', '?')} equations"]
    out += verdict_lines(res, metric)
    sw = res.sweep[res.sweep.metric == metric] if len(res.sweep) else res.sweep
    if len(sw) and "verdict" in sw.columns:
        beats = [f"L{int(x.from_layer)}" for x in sw.itertuples() if x.verdict == "confirmed"]
        out.append(f"  sweep (ablated from layer l on): beats random positions for "
                   f"{'l = ' + ', '.join(beats) if beats else 'no l'} (of "
                   f"{', '.join(f'L{int(x)}' for x in sw.from_layer)})")
    return out


def format_summary(res, title: str) -> str:
    """The terminal table: one line per metric (target, random controls, role-matched
    controls), the verdicts, then the sweep and the decoded run."""
    s = res.summary
    has_ctl = "difference" in s.columns
    has_role = "role_difference" in s.columns
    lines = [title, "", *findings(res), "",
             "damage = how much worse than the clean run (loss up, accuracy down)"]
    lines += _notes(res)
    head = f"  {'metric':<22}{'clean':>8}{'ablated':>9}{'damage':>9}"
    if has_ctl:
        head += f"   {'random: mean [min, max]':<27}{'target - random [95% CI]':<30}{'p':>6}"
    if has_role:
        head += f"   {'role-matched: mean':<19}{'target - role [95% CI]':<30}{'p':>6}"
    lines.append(head)
    for _, r in s.iterrows():
        pct = r.metric != "answer_loss"
        c = (lambda v: f"{v:.1%}") if pct else (lambda v: f"{v:.3f}")
        line = (f"  {r.metric.replace('field:', 'field ') :<22}{c(r.clean):>8}{c(r.ablated):>9}"
                f"{_fmt(r.target_damage, pct):>9}")
        if has_ctl:
            ctl = (f"{_fmt(r.control_damage_mean, pct)} [{_fmt(r.control_damage_min, pct)}, "
                   f"{_fmt(r.control_damage_max, pct)}]")
            diff = f"{_fmt(r.difference, pct)} [{_fmt(r.ci_low, pct)}, {_fmt(r.ci_high, pct)}]"
            line += f"   {ctl:<27}{diff:<30}{r.p_value:>6.3f}"
        if has_role:
            diff = (f"{_fmt(r.role_difference, pct)} [{_fmt(r.role_ci_low, pct)}, "
                    f"{_fmt(r.role_ci_high, pct)}]")
            line += f"   {_fmt(r.role_damage_mean, pct):<19}{diff:<30}{r.role_p_value:>6.3f}"
        lines.append(line)
    if len(res.sweep):
        sw = res.sweep[res.sweep.metric == "answer_loss"]
        lines += ["", "sweep: ablate from layer l on (answer loss damage)",
                  f"  {'from':<6}{'target':>9}{'random mean':>13}{'target - random [95% CI]':>32}"
                  f"{'p':>7}" + (f"{'role mean':>11}{'target - role [95% CI]':>32}{'p':>7}"
                                 if "role_difference" in sw else "")]
        for _, r in sw.iterrows():
            ctl = r.get("control_damage_mean", float("nan"))
            diff = (f"{r.difference:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
                    if "difference" in r else "-")
            p = f"{r.p_value:.3f}" if "p_value" in r else "-"
            line = f"  L{int(r.from_layer):<5}{r.target_damage:>+9.3f}{ctl:>+13.3f}{diff:>32}{p:>7}"
            if "role_difference" in r:
                rd = f"{r.role_difference:+.3f} [{r.role_ci_low:+.3f}, {r.role_ci_high:+.3f}]"
                line += f"{r.role_damage_mean:>+11.3f}{rd:>32}{r.role_p_value:>7.3f}"
            lines.append(line)
    if res.decoded:
        c, t = res.decoded["clean"], res.decoded["target"]
        lines += ["", "free-running greedy decoding (clean -> target ablated):",
                  f"  exact match {c['exact_match']:.1%} -> {t['exact_match']:.1%}   "
                  f"char accuracy {c['char_accuracy']:.1%} -> {t['char_accuracy']:.1%}",
                  "  checker, share right per step: " + ", ".join(
                      f"{k} {c['per_step'][k]:.0%}->{t['per_step'].get(k, float('nan')):.0%}"
                      for k in c["per_step"])]
    return "\n".join(lines)


def _notes(res) -> list[str]:
    """What the controls are and which examples a rule left out, in words."""
    m, out = res.meta, []
    role = m.get("role") or {}
    if role.get("drawn"):
        out.append(f"role-matched controls: {role['positions_per_example']:.2f} positions per "
                   "equation, as many as the target, drawn among its other structural (non-"
                   f"digit) positions ({role['pool_per_example']:.2f} per equation; "
                   f"{role['distinct_sets_min']:.0f}-{role['distinct_sets_max']:.0f} distinct "
                   f"sets per equation, a single one for {role['single_set_examples']}): p is "
                   "a paired sign-flip test over equations")
    if m.get("donors"):
        out.append(f"resample donors: {m['donors']}" + (
            f"; {m['no_donor']} of {m['n_asked']} equations are alone in their layout (no "
            "same-layout donor among them) and are left out of every condition"
            if m.get("no_donor") else ""))
    if "distinct" in m:
        out.append(f"{m['n']} equations, {m['distinct']} distinct; intervals resample "
                   "equations")
    return out


def to_json(res) -> dict:
    """The machine-readable result: meta, summary, sweep, both kinds of controls and the
    decoded metrics."""
    out = {"meta": res.meta,
           "summary": json.loads(res.summary.to_json(orient="records")),
           "sweep": json.loads(res.sweep.to_json(orient="records")),
           "controls": json.loads(res.control_damage.to_json(orient="records"))}
    role = getattr(res, "role_damage", None)
    if role is not None:
        out["role_controls"] = json.loads(role.to_json(orient="records"))
    if res.decoded:
        out["decoded"] = {k: v for k, v in res.decoded.items() if k != "outputs"}
    return out


SECTIONS = ["Damage against the controls", "Sweep: ablating from layer l on",
            "Free-running greedy decoding", "Details"]
METHOD = ("Damage is how much worse the ablated run is than the clean one (answer loss up, "
          "accuracies down), teacher-forced on the same examples. Two kinds of controls, each "
          "removing as many positions as the target in every equation: random positions "
          "(drawn among the other tokens of the same region; mostly digits) and role-matched "
          "positions (drawn among the other structural, non-digit positions: signs, the 2 of "
          "^2, the trailing 0; never a target). The differences target - controls have 95% "
          "bootstrap intervals over equations; p against random controls is the share of "
          "controls that damage at least as much as the target (plus one, over controls plus "
          "one); p against role-matched controls is a paired sign-flip test over equations "
          "(their few distinct sets make a rank among them no test).")


def build_page(res, title: str) -> Page:
    """The report page: the findings (the terminal's verdict sentences), a table of
    contents, the summary table and a figure per control kind, the sweep, the decoded run,
    and folded away how it is measured and the controls' notes."""
    page = Page(title)
    page.findings(findings(res))
    shown = [SECTIONS[0]] + ([SECTIONS[1]] if len(res.sweep) else []) + \
        ([SECTIONS[2]] if res.decoded else []) + [SECTIONS[3]]
    page.toc(shown)
    page.section(SECTIONS[0])
    page.table(res.summary.round(4))
    page.plotly(ablation_figure(res.summary, res.control_damage).update_layout(
        title="Damage of the ablation: target vs random-position controls"))
    role = getattr(res, "role_damage", None)
    if role is not None and len(role):
        page.plotly(ablation_figure(res.summary, role).update_layout(
            title="Damage of the ablation: target vs role-matched controls"))
    if len(res.sweep):
        page.section(SECTIONS[1])
        page.paragraph("Where is the information read? The target ablated in layer l and "
                       "every later layer, against the same controls.")
        page.plotly(sweep_figure(res.sweep))
        sub = Page("")
        sub.table(res.sweep.round(4))
        page.details(f"The sweep's table ({len(res.sweep)} rows, sweep.csv)", sub)
    if res.decoded:
        page.section(SECTIONS[2])
        c, t = res.decoded["clean"], res.decoded["target"]
        rows = [{"measure": "exact_match", "clean": c["exact_match"], "target": t["exact_match"]},
                {"measure": "char_accuracy", "clean": c["char_accuracy"],
                 "target": t["char_accuracy"]}]
        rows += [{"measure": f"step {k}", "clean": v, "target": t["per_step"].get(k)}
                 for k, v in c["per_step"].items()]
        page.table(pd.DataFrame(rows).round(4))
    page.section(SECTIONS[3])
    sub = Page("")
    for line in [METHOD, *_notes(res)]:
        sub.paragraph(line.strip())
    page.details("How it is measured: damage, the two kinds of controls, the examples", sub)
    return page
