"""The `ablate` report: the terminal table, the JSON and the self-contained HTML page of an
`AblationResult` (pure: a result in, text/dict/Page out; `circuits.ablation` makes it)."""

from __future__ import annotations

import json

import pandas as pd

from interp.viz.figures import ablation_figure, sweep_figure
from interp.viz.page import Page


def _fmt(v, pct: bool) -> str:
    if v != v:  # NaN
        return "-"
    return f"{v:+.1%}" if pct else f"{v:+.3f}"


def format_summary(res, title: str) -> str:
    """The terminal table: one line per metric, then the sweep and the decoded run."""
    s = res.summary
    has_ctl = "difference" in s.columns
    lines = [title, "", "damage = how much worse than the clean run (loss up, accuracy down)"]
    head = f"  {'metric':<22}{'clean':>8}{'ablated':>9}{'damage':>9}"
    if has_ctl:
        head += f"   {'controls: mean [min, max]':<27}{'target - controls [95% CI]':<30}{'p':>6}"
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
        lines.append(line)
    if has_ctl:
        r = s.set_index("metric").loc["answer_loss"]
        more = r.ci_low > 0 and r.p_value < 0.05
        lines.append("")
        lines.append(f"  answer loss: the target positions matter "
                     f"{'MORE' if more else 'NOT more'} than as many random input positions "
                     f"(difference {r.difference:+.3f}, 95% CI [{r.ci_low:+.3f}, {r.ci_high:+.3f}],"
                     f" p = {r.p_value:.3f}, {res.meta['controls']} controls)")
    if len(res.sweep):
        lines += ["", "sweep: ablate from layer l on (answer loss damage)",
                  f"  {'from':<6}{'target':>9}{'controls mean':>15}{'difference [95% CI]':>32}"
                  f"{'p':>7}"]
        for _, r in res.sweep[res.sweep.metric == "answer_loss"].iterrows():
            ctl = r.get("control_damage_mean", float("nan"))
            diff = (f"{r.difference:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
                    if "difference" in r else "-")
            p = f"{r.p_value:.3f}" if "p_value" in r else "-"
            lines.append(f"  L{int(r.from_layer):<5}{r.target_damage:>+9.3f}{ctl:>+15.3f}"
                         f"{diff:>32}{p:>7}")
    if res.decoded:
        c, t = res.decoded["clean"], res.decoded["target"]
        lines += ["", "free-running greedy decoding (clean -> target ablated):",
                  f"  exact match {c['exact_match']:.1%} -> {t['exact_match']:.1%}   "
                  f"char accuracy {c['char_accuracy']:.1%} -> {t['char_accuracy']:.1%}",
                  "  checker, share right per step: " + ", ".join(
                      f"{k} {c['per_step'][k]:.0%}->{t['per_step'].get(k, float('nan')):.0%}"
                      for k in c["per_step"])]
    return "\n".join(lines)


def to_json(res) -> dict:
    """The machine-readable result: meta, summary, sweep, controls and decoded metrics."""
    out = {"meta": res.meta,
           "summary": json.loads(res.summary.to_json(orient="records")),
           "sweep": json.loads(res.sweep.to_json(orient="records")),
           "controls": json.loads(res.control_damage.to_json(orient="records"))}
    if res.decoded:
        out["decoded"] = {k: v for k, v in res.decoded.items() if k != "outputs"}
    return out


def build_page(res, title: str) -> Page:
    """The report page: the summary table and figure, the sweep, the decoded run."""
    page = Page(title)
    page.paragraph(
        "Damage is how much worse the ablated run is than the clean one (answer loss up, "
        "accuracies down), teacher-forced on the same examples. Each grey dot is one control: "
        "as many positions as the target, drawn at random among the other tokens of the same "
        "region. The difference target - controls has a 95% bootstrap interval over examples; "
        "p is the share of controls that damage at least as much as the target (plus one, "
        "over controls plus one).")
    page.table(res.summary.round(4))
    page.plotly(ablation_figure(res.summary, res.control_damage))
    if len(res.sweep):
        page.heading("Where is the information read? Ablating from layer l on")
        page.plotly(sweep_figure(res.sweep))
        page.table(res.sweep.round(4))
    if res.decoded:
        page.heading("Free-running greedy decoding")
        c, t = res.decoded["clean"], res.decoded["target"]
        rows = [{"measure": "exact_match", "clean": c["exact_match"], "target": t["exact_match"]},
                {"measure": "char_accuracy", "clean": c["char_accuracy"],
                 "target": t["char_accuracy"]}]
        rows += [{"measure": f"step {k}", "clean": v, "target": t["per_step"].get(k)}
                 for k, v in c["per_step"].items()]
        page.table(pd.DataFrame(rows).round(4))
    return page
