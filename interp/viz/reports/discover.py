"""The report of `discover` (`python -m circuits.discover`): its terminal lines, its JSON and
its page, from a discovery result (any object with the attributes of
`circuits.discovery.DiscoveryResult`: method, positions, metric, ablation, n_pairs, m_full,
m_empty, cpr, cmd, circuit_f, circuit_edges, compare, frame(), nodes(), faithfulness(), and
figure() where the result draws its own circuit). Pure: nothing here runs a model, prints or
writes. Over 400 lines: the JSON, the terminal and the page of one report are built from the
same facts (the x/^/= count, the sizes, the tables) and are kept in one module.

The JSON (`summary`) holds the run's facts once; `lines` and `page` are both made from it, so
the terminal and the page say the same sentences. Several methods' summaries of one run merge
with `combine`. Findings come first: the gap the circuit is measured against, per method the
circuit chosen with its faithfulness and interval, the size that reaches f >= 0.8 (or the best
f reached), CPR and CMD, and whether an edge at the `x`, `^` or `=` positions carries into it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from interp.viz.circuit_figures import circuit_figure, faithfulness_figure
from interp.viz.reports import rounded
from interp.viz.termtable import decimals

WIDTH = 100                       # no terminal line is longer
TARGET = 0.8                      # the faithfulness the size is reported at
GUARD = ("x", "^", "=")           # the positions asked about: does the circuit use them?
TOP = 10                          # edges in the top-edges table


# ---------------------------------------------------------------------------------------
# JSON
def clean(obj):
    """JSON-ready: numpy and pandas scalars as floats/ints/bools, NaN and inf as None."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    try:
        v = float(obj)
    except (TypeError, ValueError):
        return str(obj)
    return v if math.isfinite(v) else None


def base_group(group: str) -> str:
    """A position group without a stack prefix ("enc:x" -> "x"); the solution's groups
    (`sol:=`) keep theirs: they are not the input's x, ^ and =."""
    g = str(group)
    return g if g.startswith("sol:") else g.rsplit(":", 1)[-1]


def _size_rows(faith: pd.DataFrame, target: float = TARGET):
    """(the smallest measured circuit with f >= target or None, the circuit of largest f)."""
    f = faith.sort_values("edges")
    reached = f[f.f >= target]
    at = reached.iloc[0] if len(reached) else None
    best = f.loc[f.f.idxmax()] if f.f.notna().any() else None
    def pick(r):
        if r is None:
            return None
        return {"percent": float(r["percent"]), "edges": int(r["edges"]),
                **{k: r[k] for k in ("f", "f_lo", "f_hi")}}
    return pick(at), pick(best)


def encoder_side(receiver: str) -> bool:
    """Whether a T5 receiver reads the encoder's positions: the encoder's own receivers and
    the keys and values of cross-attention (its queries read the decoder's)."""
    return receiver.startswith("enc.") or (receiver.startswith("cross.")
                                           and receiver.endswith((".k", ".v")))


def _guard(frame: pd.DataFrame, positions: str) -> dict:
    """The circuit's edges at the x, ^ and = groups: how many, their share of the circuit's
    |score|, the largest five. T5: only the encoder's groups count (the input's x, ^ and =;
    the decoder's `=` are the solution's). Decoder-only: the logits read the answer's
    position, so their edges all sit at its group (`answer_group`); where that is one of
    x, ^, =, the group mixes the input's tokens with the answer's position, and the other
    groups are counted alone (`apart`)."""
    if positions == "none" or not frame.edge.astype(str).str.contains("@", regex=False).any():
        return {"measured": False, "groups": list(GUARD)}
    t5 = bool(frame.receiver.astype(str).str.startswith(("enc.", "dec.", "cross.")).any())
    inc = frame[frame.in_circuit.astype(bool)]
    total = float(inc.abs_score.sum())
    side = inc.receiver.map(encoder_side) if t5 else pd.Series(True, index=inc.index)

    def count(groups):
        at = inc[side & inc.group.map(base_group).isin(groups)].sort_values("abs_score",
                                                                             ascending=False)
        return at, {"groups": list(groups), "n": len(at),
                    "share": float(at.abs_score.sum()) / total if total > 0 else None}

    at, out = count(GUARD)
    out.update(measured=True, of=len(inc), side="encoder" if t5 else "",
               edges=at.head(5)[["edge", "group", "score"]].to_dict(orient="records"))
    answer = sorted({base_group(g) for g in frame.group[frame.receiver == "logits"]})
    out["answer_group"] = answer[0] if len(answer) == 1 else None
    if not t5 and out["answer_group"] in GUARD:
        out["apart"] = count([g for g in GUARD if g != out["answer_group"]])[1]
    return out


def _heads(frame: pd.DataFrame, heads: pd.DataFrame) -> list[dict]:
    """The heads in the circuit, each with its label and the summed |score| of the circuit's
    edges it sends or receives (its weight in the circuit), largest first."""
    inc = frame[frame.in_circuit.astype(bool)]
    node = inc.receiver.astype(str).str.replace(r"\.[qkv]$", "", regex=True)
    weight = (inc.abs_score.groupby(inc.sender).sum().add(
        inc.abs_score.groupby(node).sum(), fill_value=0.0))
    rows = [{"node": r.node, "label": r.label if isinstance(r.label, str) else "",
             "abs_score": float(weight.get(r.node, 0.0))} for r in heads.itertuples()]
    return sorted(rows, key=lambda h: -h["abs_score"])


def summary(res, checkpoint, extra: dict | None = None) -> dict:
    """The JSON of one result: the run (checkpoint, answer, positions, metric, ablation,
    pairs, m(full), m(empty) and their gap) and, under "methods", this method's circuit,
    sizes, areas, top edges, labelled heads, x/^/= edges and agreement with exact. `extra`
    (e.g. the answer, the pairs' description) is merged into the top level."""
    frame = res.frame()
    nodes = res.nodes()
    faith = res.faithfulness()
    target = getattr(res, "target", None) or TARGET
    at, best = _size_rows(faith, target)
    found = getattr(res, "at_target", None)
    if found is not None and getattr(res, "target", None) is not None:
        # the smallest circuit the run found by bisection (not the curve's first point)
        at = {"percent": round(100 * len(found) / max(len(frame), 1), 2),
              "edges": len(found), "f": found.f, "f_lo": found.f_lo, "f_hi": found.f_hi}
    f, lo, hi = (list(res.circuit_f or ()) + [None] * 3)[:3]
    heads = nodes[(nodes.kind == "head") & nodes.in_circuit.astype(bool)]
    top = frame.sort_values("rank").head(TOP)
    compare = getattr(res, "compare", None)
    method = {
        "graph_edges": len(frame), "circuit_edges": res.circuit_edges,
        "circuit_nodes": int(nodes.in_circuit.astype(bool).sum()),
        "f": f, "f_lo": lo, "f_hi": hi, "cpr": res.cpr, "cmd": res.cmd,
        "target": target, "at_target": at, "best": best,
        "faithfulness": faith.to_dict(orient="records"),
        "top_edges": top[["rank", "edge", "sender", "receiver", "group", "score", "abs_score",
                          "in_circuit"]].to_dict(orient="records"),
        "heads": _heads(frame, heads),
        "steps": getattr(res, "steps", None) if res.method == "eap-ig" else None,
        "guard": _guard(frame, res.positions),
        "compare": None if compare is None or not len(compare) else
        compare.to_dict(orient="records"),
    }
    m_full, m_empty = res.m_full, res.m_empty
    data = {"checkpoint": str(checkpoint), "answer": getattr(res, "answer", None),
            "positions": res.positions, "metric": res.metric, "ablation": res.ablation,
            "n_pairs": res.n_pairs, "m_full": m_full, "m_empty": m_empty,
            "gap": None if m_full is None or m_empty is None else m_full - m_empty,
            "methods": {res.method: method}}
    data.update(extra or {})
    return clean(data)


def combine(*datas: dict) -> dict:
    """One JSON from the summaries of several methods on the same run ("methods" merged)."""
    out = dict(datas[0])
    out["methods"] = {}
    for d in datas:
        for key in ("checkpoint", "positions", "metric", "n_pairs"):
            if d.get(key) != out.get(key):
                raise ValueError(f"summaries of different runs: {key} {d.get(key)!r} "
                                 f"against {out.get(key)!r}")
        out["methods"].update(d["methods"])
    return out


# ---------------------------------------------------------------------------------------
# terminal
def fit(line: str, width: int = WIDTH) -> str:
    """`line` cut to `width` characters (an ellipsis marks the cut)."""
    return line if len(line) <= width else line[:width - 3] + "..."


def _num(v, fmt: str = ".3f") -> str:
    return "-" if v is None else format(v, fmt)


def _f(d: dict | None) -> str:
    if d is None or d.get("f") is None:
        return "f -"
    return f"f {d['f']:.3f} [{_num(d.get('f_lo'))}, {_num(d.get('f_hi'))}]"


def _arrow(edge: str) -> str:
    return edge.replace("->", " -> ")


def findings(data: dict) -> list[str]:
    """The findings, first on the terminal and on the page: the run, the gap, and per method
    the circuit chosen, its size at f >= 0.8 (or the best f), CPR and CMD, its x/^/= edges
    and, against exact, the Spearman correlation per component type."""
    ans = f"answer {data['answer']}, " if data.get("answer") else ""
    out = [f"circuit of {data['checkpoint']}: {ans}{data['n_pairs']} pairs",
           f"  metric {data['metric']}, {data['ablation']} ablation outside the circuit, "
           f"positions {data['positions']}"]
    gap = data.get("gap")
    if gap is None or gap == 0:
        out.append(f"  m(full) {_num(data.get('m_full'), '+.3f')}, m(empty) "
                   f"{_num(data.get('m_empty'), '+.3f')}: no gap, faithfulness is undefined")
    else:
        out.append(f"  gap m(full) - m(empty) = {data['m_full']:+.3f} - ({data['m_empty']:+.3f})"
                   f" = {gap:+.3f} (f = 1: the full model, f = 0: empty)")
    for name, m in data["methods"].items():
        out.append(f"  {name}: circuit of {m['circuit_edges']} of {m['graph_edges']} edges, "
                   f"{m['circuit_nodes']} nodes: {_f(m)}")
        at, best = m.get("at_target"), m.get("best")
        if at is not None:
            size = (f"f >= {m['target']:g} from {at['edges']} edges ({at['percent']:g}% of the "
                    f"graph), {_f(at)}")
        elif best is not None:
            size = (f"f never reaches {m['target']:g}: best {_f(best)} at {best['edges']} edges "
                    f"({best['percent']:g}%)")
        else:
            size = "faithfulness not measured"
        out.append(f"    {size}")
        out.append(f"    CPR {_num(m.get('cpr'))} (area under f, higher is better), CMD "
                   f"{_num(m.get('cmd'))} (area between f and 1, 0 is best)")
        out += ["    " + x for x in _guard_text(m["guard"])]
        if m.get("compare"):
            rho = ", ".join(f"{r['component']} {_num(r.get('spearman'), '.2f')}"
                            for r in m["compare"])
            out.append(f"    against exact, Spearman per component: {rho}")
    return [fit(x) for x in out]


def _guard_text(g: dict) -> list[str]:
    names = ", ".join(g["groups"])
    if not g["measured"]:
        return [f"{names}: not measured (positions none sums edges over positions; use "
                "--positions field)"]
    if not g["n"]:
        where = " (encoder)" if g.get("side") == "encoder" else ""
        return [f"{names}{where}: no edge at {names} is in the circuit ({g['of']} edges)"]
    top = ""
    for e in g["edges"][:3]:                     # as many as fit the line
        item = f"{e['edge']} {e['score']:+.3g}"
        if top and len(top) + len(item) + 2 > WIDTH - 22:
            break
        top += (", " if top else "") + item
    where = " (encoder)" if g.get("side") == "encoder" else ""
    out = [f"{names}{where}: {g['n']} of the circuit's {g['of']} edges sit there{_share(g)}"]
    if g.get("apart"):
        a = g["apart"]
        share = "" if a.get("share") is None else f" ({a['share']:.0%})"
        out.append(f"  {g['answer_group']} also holds the answer's position (the logits read it); "
                   f"{' and '.join(a['groups'])} alone: {a['n']} edges{share}")
    return out + [f"  the largest: {top}"]


def _share(g: dict) -> str:
    return "" if g.get("share") is None else f" ({g['share']:.0%} of its |score|)"


def _bare(r: dict) -> str:
    """The edge without its "@group" (the table has a group column), arrow spaced."""
    edge, group = str(r["edge"]), str(r["group"])
    if edge.endswith("@" + group):
        edge = edge[:-len(group) - 1]
    return _arrow(edge)


def top_table(m: dict) -> list[str]:
    """The top edges as an aligned table: rank, edge, group, score, in the circuit."""
    rows = m["top_edges"]
    if not rows:
        return ["    (no edges)"]
    d = decimals(*(r["score"] for r in rows))
    w = min(44, max(len("edge"), *(len(_bare(r)) for r in rows)))
    g = min(12, max(len("group"), *(len(str(r["group"])) for r in rows)))
    s = max(len("score"), *(len(f"{r['score']:+.{d}f}") for r in rows if r["score"] is not None))
    out = [f"    {'rank':>4}  {'edge':<{w}}  {'group':<{g}}  {'score':>{s}}  in circuit"]
    for r in rows:
        score = "-" if r["score"] is None else f"{r['score']:+.{d}f}"
        out.append(f"    {r['rank']:>4}  {_bare(r)[:w]:<{w}}  {str(r['group'])[:g]:<{g}}"
                   f"  {score:>{s}}  {'yes' if r['in_circuit'] else 'no'}")
    return out


def heads_lines(m: dict) -> list[str]:
    if not m["heads"]:
        return ["    none"]
    w = max(len("head"), *(len(h["node"]) for h in m["heads"]))
    d = decimals(*(h.get("abs_score") for h in m["heads"]))
    s = max(len("|score|"), *(len(f"{h.get('abs_score') or 0:.{d}f}") for h in m["heads"]))
    return [f"    {'head':<{w}}  {'|score|':>{s}}  label (|score|: the circuit's edges it sends "
            "or receives)"] + [f"    {h['node']:<{w}}  {h.get('abs_score') or 0:>{s}.{d}f}  "
                               f"{h['label'] or '(no label)'}" for h in m["heads"]]


def compare_lines(m: dict) -> list[str]:
    """Agreement with exact per component type, as an aligned table."""
    rows = m.get("compare") or []
    w = max([len("component")] + [len(str(r["component"])) for r in rows])
    out = [f"    {'component':<{w}}  Spearman  Pearson  top-10  top-20  worst underestimate "
           "(exact -> estimated)"]
    for r in rows:
        worst = (f"{_num(r.get('worst_exact_share'), '.1%')} -> "
                 f"{_num(r.get('worst_attributed_share'), '.1%')}")
        if r.get("worst_edge"):
            worst += f" ({_arrow(str(r['worst_edge']))})"
        out.append(f"    {str(r['component']):<{w}}  {_num(r.get('spearman')):>8}  "
                   f"{_num(r.get('pearson')):>7}  {_num(r.get('recall10'), '.2f'):>6}  "
                   f"{_num(r.get('recall20'), '.2f'):>6}  {worst}")
    return out


def lines(data: dict, width: int = WIDTH) -> list[str]:
    """The terminal summary: the findings, then per method the top edges, the heads in the
    circuit with their taxonomy labels and, when measured, the agreement with exact. Every
    line fits `width` columns (100 by default)."""
    out = findings(data)
    for name, m in data["methods"].items():
        out.append(f"  {name}: top {len(m['top_edges'])} edges (score: the change of "
                   f"{data['metric']} when that edge alone is corrupted)")
        out += top_table(m)
        out.append(f"  {name}: heads in the circuit ({len(m['heads'])}), largest |score| first, "
                   "with their labels")
        out += heads_lines(m)
        if m.get("compare"):
            out.append(f"  {name}: agreement with exact per component type")
            out += compare_lines(m)
    return [fit(x, width) for x in out]


# ---------------------------------------------------------------------------------------
# page
SECTIONS = ["The circuit", "Faithfulness", "Top edges", "Details"]


def _top_frame(data: dict) -> pd.DataFrame:
    """The top edges of every method, scores as text with at least two significant digits."""
    rows = []
    for name, m in data["methods"].items():
        d = decimals(*(r["score"] for r in m["top_edges"]))
        rows += [{"method": name, "rank": r["rank"], "edge": _bare(r), "group": r["group"],
                  "score": "-" if r["score"] is None else f"{r['score']:+.{d}f}",
                  "in circuit": "yes" if r["in_circuit"] else "no"} for r in m["top_edges"]]
    return pd.DataFrame(rows, columns=["method", "rank", "edge", "group", "score",
                                       "in circuit"])


def page(data: dict, res, circuit=None, faithfulness=None):
    """The HTML page: the findings (the terminal's sentences), a table of contents, the
    circuit figure (`circuit`, else `res.figure()`, else drawn from res's frames), the
    faithfulness figure of every method in `data` (or `faithfulness`), the top edges, and
    folded away every circuit edge, the nodes, the faithfulness table, the agreement with
    exact and the run's settings."""
    from interp.viz.page import Page

    methods = ", ".join(data["methods"])
    ans = f", answer {data['answer']}" if data.get("answer") else ""
    out = Page(f"Circuit of {data['checkpoint']}{ans} ({methods}, positions "
               f"{data['positions']})")
    out.findings(findings(data))
    out.toc(SECTIONS)
    out.section(SECTIONS[0])
    out.paragraph("Layers run left to right (input at the left, logits at the right), heads "
                  "stacked within a layer, the MLP below. Width: |score|; colour: its sign; "
                  "dash: the input the edge enters (q, k, v, or an MLP / the logits). Hover a "
                  "node for its taxonomy label, an edge for its score and position groups.")
    if circuit is None:
        circuit = res.figure() if hasattr(res, "figure") else circuit_figure(
            res.frame(), res.nodes(), f"{getattr(res, 'method', '')} circuit")
    out.plotly(circuit)
    out.section(SECTIONS[1])
    out.paragraph("f = (m(C) - m(empty)) / (m(full) - m(empty)), measured by running each "
                  "circuit; the band is its 95% interval over pairs.")
    out.plotly(faithfulness if faithfulness is not None else faith_figure(data))
    out.section(SECTIONS[2])
    out.table(_top_frame(data))
    for name, m in data["methods"].items():
        if m["heads"]:
            out.details(f"{name}: heads in the circuit ({len(m['heads'])}) and their labels",
                        _sub(lambda p, m=m: p.table(pd.DataFrame(m["heads"]))))
    out.section(SECTIONS[3])
    frame = res.frame()
    inc = frame[frame.in_circuit.astype(bool)].sort_values("rank")
    out.details(f"{getattr(res, 'method', '')}: every edge of the circuit ({len(inc)})",
                _sub(lambda p: p.table(rounded(inc), max_rows=2000)))
    out.details("Nodes", _sub(lambda p: p.table(res.nodes())))
    for name, m in data["methods"].items():
        out.details(f"{name}: faithfulness at each size",
                    _sub(lambda p, m=m: p.table(rounded(pd.DataFrame(m["faithfulness"])))))
        if m.get("compare"):
            out.details(f"{name}: agreement with exact per component type",
                        _sub(lambda p, m=m: p.table(rounded(pd.DataFrame(m["compare"])))))
    settings = {k: v for k, v in data.items() if k != "methods"}
    out.details("Run settings", _sub(lambda p: p.table(pd.DataFrame(
        {"setting": list(settings), "value": [str(v) for v in settings.values()]}))))
    return out


def faith_figure(data: dict):
    """The faithfulness figure of every method in the JSON `data`, CPR and CMD in the legend."""
    curves = {name: pd.DataFrame(m["faithfulness"]).apply(pd.to_numeric, errors="coerce")
              for name, m in data["methods"].items() if m.get("faithfulness")}
    areas = {name: (m.get("cpr"), m.get("cmd")) for name, m in data["methods"].items()}
    return faithfulness_figure(curves, f"Faithfulness against circuit size ({data['metric']}, "
                               f"{data['ablation']} ablation)", areas)


def _sub(fill):
    from interp.viz.page import Page

    p = Page("")
    fill(p)
    return p
