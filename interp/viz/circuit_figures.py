"""The figures of a discovered circuit (pure: frames in, plotly figure out).

`circuit_figure` draws the circuit as a layered graph: columns are layers, input at the left
and logits at the right (for T5 the encoder's layers, then the decoder's, with each
cross-attention head beside the self-attention heads of its decoder layer). Heads are stacked
within a layer, the MLP below them. An edge ends at a port of its receiver (query above,
value below the node's centre) and its dash names the input it enters, its colour its sign,
its width its |score| (scaled to the largest drawn). With positions, the groups of one
sender->receiver pair are drawn as one line whose width is their summed |score|.

`faithfulness_figure` draws f against the percentage of edges kept, per method, with its
95% interval band and the reference lines f = 1 and f = 0.8.

Names follow the graph contract (`input`, `L{l}H{h}`, `MLP{l}`, `logits`; T5 with the
prefixes `enc.`, `dec.`, `cross.`); every string drawn goes through `esc`. The figures live
in `interp.viz` so that the discover report's page (interp.viz.reports.discover) draws them
itself (`interp` never imports `circuits`); `circuits.discovery.figures` is their public home
for the circuit code.
"""

from __future__ import annotations

import math
import re

import pandas as pd

from interp.viz.figures import ARROW, esc

#: colour of an edge by the sign of its score (explicit: plotly never cycles colours here)
SIGN_COLOURS = {"+": "#1f5fbf", "-": "#d62728"}
SIGN_NAMES = {"+": "score > 0: corrupting the edge raises the metric",
              "-": "score < 0: corrupting the edge lowers the metric"}
#: dash of an edge by the input of the receiver it enters
DASHES = {"q": "dot", "k": "dash", "v": "dashdot", "mlp": "solid", "logits": "solid"}
INPUT_NAMES = {"q": "into a query (q)", "k": "into a key (k)", "v": "into a value (v)",
               "mlp": "into an MLP or the logits"}
#: where an edge meets its receiver, above (+) or below (-) the node's centre
PORTS = {"q": 0.22, "k": 0.0, "v": -0.22, "mlp": 0.0, "logits": 0.0}
#: node styles: (marker symbol, colour) per kind
NODE_STYLE = {"input": ("square", "#555555"), "head": ("circle", "#2b6cb0"),
              "cross": ("diamond", "#8e44ad"), "mlp": ("square", "#2e8b57"),
              "logits": ("square", "#555555")}
NODE_NAMES = {"input": "input (embeddings)", "head": "attention head",
              "cross": "cross-attention head (T5)", "mlp": "MLP", "logits": "logits"}
FAINT = "rgba(150,150,150,0.35)"
#: method colours of the faithfulness figure; other methods take the spare ones in order
METHOD_COLOURS = {"exact": "#222222", "eap": "#e67e22", "eap-ig": "#1f77b4",
                  "known": "#2ca02c"}
SPARE_COLOURS = ["#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
PERCENT_TICKS = [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100]

_NODE = re.compile(r"^(?:(enc|dec|cross)\.)?(?:L(\d+)H(\d+)|MLP(\d+)|(input)|(logits))$")


def parse_node(name: str) -> dict:
    """A node's place from its name: stack ("" | enc | dec | cross), kind (input, head,
    cross, mlp, logits), layer (-1 for input), head (-1 unless a head)."""
    m = _NODE.match(name)
    if m is None:
        raise ValueError(f"not a node of the circuit graph: {name!r} (expected e.g. input, "
                         "L0H3, MLP1, logits, enc.L0H1, cross.L1H2)")
    stack, hl, hh, ml, inp, logits = m.groups()
    stack = stack or ""
    if hl is not None:
        return {"stack": stack, "kind": "cross" if stack == "cross" else "head",
                "layer": int(hl), "head": int(hh)}
    if ml is not None:
        return {"stack": stack, "kind": "mlp", "layer": int(ml), "head": -1}
    if inp:
        return {"stack": stack, "kind": "input", "layer": -1, "head": -1}
    return {"stack": stack, "kind": "logits", "layer": -1, "head": -1}


def split_receiver(receiver: str) -> tuple[str, str]:
    """("L1H3", "k") from "L1H3.k"; ("MLP1", "mlp"); ("logits", "logits")."""
    base, _, port = receiver.rpartition(".")
    if port in ("q", "k", "v") and base:
        return base, port
    return receiver, "logits" if parse_node(receiver)["kind"] == "logits" else "mlp"


def layout(names) -> dict[str, tuple[float, float]]:
    """(x, y) of every node: x the column (input 0, layer l at l + 1, logits last; T5: the
    encoder's columns, then the decoder's), y the head stacked downwards, the MLP below the
    heads; cross-attention heads sit beside the self-attention heads of their layer."""
    info = {n: parse_node(n) for n in names}
    t5 = any(i["stack"] for i in info.values())

    def layers(stacks):
        ls = [i["layer"] for i in info.values() if i["stack"] in stacks and i["layer"] >= 0]
        return max(ls) + 1 if ls else 0

    n_heads = max([i["head"] + 1 for i in info.values()] + [1])
    mid = -(n_heads - 1) / 2
    if t5:
        n_enc, n_dec = layers({"enc"}), layers({"dec", "cross"})
        start = {"enc": 1, "dec": n_enc + 2, "cross": n_enc + 2}
        inputs = {"enc": 0.0, "dec": n_enc + 1.0}
        last = n_enc + n_dec + 2.0
    else:
        start, inputs, last = {"": 1}, {"": 0.0}, layers({""}) + 1.0
    pos = {}
    for n, i in info.items():
        if i["kind"] == "input":
            pos[n] = (inputs.get(i["stack"], 0.0), mid)
        elif i["kind"] == "logits":
            pos[n] = (last, mid)
        else:
            x = start.get(i["stack"], 1) + i["layer"]
            if i["kind"] == "cross":
                pos[n] = (x + 0.4, -float(i["head"]))
            elif i["kind"] == "head":
                pos[n] = (float(x), -float(i["head"]))
            else:
                pos[n] = (x + 0.16, -n_heads + 0.3)
    return pos


def column_ticks(pos: dict) -> tuple[list[float], list[str]]:
    """x ticks at each column, named by the column (input, L0 ... / enc L0 ..., dec L0 ...)."""
    ticks = {}
    for n, (x, _) in pos.items():
        i = parse_node(n)
        col = math.floor(x + 1e-9)
        if i["kind"] == "input":
            name = "input" if not i["stack"] else f"{i['stack']} input"
        elif i["kind"] == "logits":
            name = "logits"
        else:
            stack = {"cross": "dec"}.get(i["stack"], i["stack"])
            name = f"{stack} L{i['layer']}".strip()
        ticks.setdefault(col, name)
    cols = sorted(ticks)
    return [c + 0.1 for c in cols], [esc(ticks[c]) for c in cols]


def merge_groups(edges: pd.DataFrame) -> pd.DataFrame:
    """One row per sender->receiver: score and abs_score summed over groups, `groups` the
    groups with their scores (largest |score| first), `n_groups`."""
    rows = []
    for (s, r), d in edges.groupby(["sender", "receiver"], sort=False):
        d = d.sort_values("abs_score", ascending=False)
        rows.append({"sender": s, "receiver": r, "score": float(d.score.sum()),
                     "abs_score": float(d.abs_score.sum()), "n_groups": len(d),
                     "groups": [(str(g), float(v)) for g, v in zip(d.group, d.score)]})
    cols = ["sender", "receiver", "score", "abs_score", "n_groups", "groups"]
    return pd.DataFrame(rows, columns=cols)


def _edge_hover(row, positions: bool) -> str:
    base, port = split_receiver(row.receiver)
    text = f"{esc(row.sender)} {ARROW} {esc(row.receiver)}<br>score {row.score:+.4g}"
    if positions:
        parts = [f"{esc(g)} {v:+.3g}" for g, v in row.groups[:12]]
        more = len(row.groups) - 12
        text += (f" (summed over {row.n_groups} group{'s' * (row.n_groups > 1)})<br>groups: "
                 + ", ".join(parts) + (f", +{more} more" if more > 0 else ""))
    return text


def circuit_figure(edges: pd.DataFrame, nodes: pd.DataFrame, title: str = "",
                   max_edges: int = 60):
    """The circuit as a layered graph (see the module's docstring). `edges`: the result's
    frame (edge, sender, receiver, group, score, abs_score, in_circuit); `nodes`: its nodes
    (node, label, in_circuit). Draws the in-circuit edges, at most `max_edges` of them by
    |score| (summed over groups with positions), one trace per edge; the title says how many
    are drawn of how many."""
    import plotly.graph_objects as go

    inc = edges[edges.in_circuit.astype(bool)]
    positions = bool(inc.edge.astype(str).str.contains("@", regex=False).any())
    merged = merge_groups(inc).sort_values("abs_score", ascending=False, kind="stable")
    drawn = merged.head(max_edges)
    names = set(nodes.node.astype(str)) | set(drawn.sender) | {
        split_receiver(r)[0] for r in drawn.receiver}
    pos = layout(sorted(names))
    labels = dict(zip(nodes.node.astype(str), nodes.label.fillna("").astype(str)))
    in_nodes = set(nodes.node[nodes.in_circuit.astype(bool)].astype(str)) | set(
        drawn.sender) | {split_receiver(r)[0] for r in drawn.receiver}

    fig = go.Figure()
    top = float(drawn.abs_score.max()) if len(drawn) else 1.0
    top = top if top > 0 else 1.0
    for row in drawn.itertuples():
        base, port = split_receiver(row.receiver)
        (x0, y0), (x1, y1) = pos[row.sender], pos[base]
        y1 += PORTS[port]
        sign = "+" if row.score >= 0 else "-"
        hover = _edge_hover(row, positions)
        fig.add_trace(go.Scatter(
            x=[x0, (x0 + x1) / 2, x1], y=[y0, (y0 + y1) / 2, y1], mode="lines",
            line=dict(color=SIGN_COLOURS[sign], width=1 + 7 * row.abs_score / top,
                      dash=DASHES[port]),
            opacity=0.8, hoverinfo="text", text=[hover] * 3, showlegend=False,
            name=esc(f"{row.sender}->{row.receiver}"),
            meta={"edge": esc(f"{row.sender}->{row.receiver}"), "sign": sign,
                  "input": port}))
    # the legend: one entry per colour and per dash, drawn exactly as the edges are
    for sign in ("+", "-"):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=esc(SIGN_NAMES[sign]),
                                 line=dict(color=SIGN_COLOURS[sign], width=4, dash="solid"),
                                 legendgroup="sign", meta={"legend": "sign", "sign": sign}))
    for port, text in INPUT_NAMES.items():
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=esc(text),
                                 line=dict(color="#444444", width=2, dash=DASHES[port]),
                                 legendgroup="input", meta={"legend": "input", "input": port}))
    # nodes: one trace per kind in the circuit, one faint trace for the rest
    faint = [n for n in pos if n not in in_nodes]
    if faint:
        fig.add_trace(go.Scatter(
            x=[pos[n][0] for n in faint], y=[pos[n][1] for n in faint], mode="markers",
            marker=dict(size=9, color=FAINT, symbol=[NODE_STYLE[parse_node(n)["kind"]][0]
                                                     for n in faint]),
            name="not in the circuit", hoverinfo="text",
            text=[_node_hover(n, labels) for n in faint], meta={"legend": "faint"}))
    for kind in NODE_STYLE:
        ns = [n for n in pos if n in in_nodes and parse_node(n)["kind"] == kind]
        if not ns:
            continue
        symbol, colour = NODE_STYLE[kind]
        fig.add_trace(go.Scatter(
            x=[pos[n][0] for n in ns], y=[pos[n][1] for n in ns], mode="markers+text",
            marker=dict(size=16, color=colour, symbol=symbol, line=dict(color="white", width=1)),
            text=[_node_text(n, labels) for n in ns], textfont=dict(size=10), cliponaxis=False,
            textposition="bottom center" if kind == "cross" else "top center",
            hovertext=[_node_hover(n, labels) for n in ns], hoverinfo="text",
            name=esc(NODE_NAMES[kind]), meta={"legend": "node", "kind": kind}))
    tickvals, ticktext = column_ticks(pos)
    unit = "sender->receiver pairs" if positions else "edges"
    count = (f"{len(drawn)} of {len(merged)} circuit {unit} drawn"
             + (" (largest |score|)" if len(drawn) < len(merged) else "")
             + (f"; {len(inc)} edge{'s' * (len(inc) != 1)} over position groups"
                if positions else ""))
    n_rows = max(1, len({round(y, 2) for _, y in pos.values()}))
    fig.update_layout(
        title=esc(title) + "<br>" + esc(count) if title else esc(count),
        height=max(480, 70 * n_rows + 160), plot_bgcolor="white",
        margin=dict(l=30, r=30, t=70, b=60), hovermode="closest",
        legend=dict(orientation="v", yanchor="top", y=1, x=1.02, font=dict(size=11)),
        xaxis=dict(tickvals=tickvals, ticktext=ticktext, showgrid=False, zeroline=False,
                   title=esc("layer (residual stream flows left to right)")),
        yaxis=dict(showticklabels=False, showgrid=False, zeroline=False))
    return fig


def _node_text(name: str, labels: dict, width: int = 22) -> str:
    """The text drawn at a node in the circuit: its name, and under it its taxonomy label
    (cut to `width` characters; the hover has it whole)."""
    label = labels.get(name, "")
    if not label:
        return esc(name)
    short = label if len(label) <= width else label[:width - 1] + "…"
    return esc(name) + "<br>" + esc(short)


def _node_hover(name: str, labels: dict) -> str:
    label = labels.get(name, "")
    return esc(name) + (f"<br>{esc(label)}" if label else "")


def method_colours(methods) -> dict[str, str]:
    """An explicit colour per method: the fixed ones, then the spares in order."""
    out, spare = {}, iter(SPARE_COLOURS)
    for m in methods:
        out[m] = METHOD_COLOURS.get(m) or next(spare, "#333333")
    return out


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def faithfulness_figure(curves: dict, title: str = "", areas: dict | None = None):
    """f against the percentage of edges kept (log axis, ticks 0.1 ... 100), one line per
    method with its 95% interval as a band, and reference lines at f = 1 (the full model)
    and f = 0.8. `curves`: {method: frame with percent, edges, f, f_lo, f_hi};
    `areas`: {method: (cpr, cmd)}, named in the legend."""
    import plotly.graph_objects as go

    areas = areas or {}
    colours = method_colours(curves)
    fig = go.Figure()
    for m, df in curves.items():
        df = df.sort_values("percent")
        x = [float(p) for p in df.percent]
        name = m
        if m in areas:
            cpr, cmd = areas[m]
            name += f" (CPR {_num(cpr)}, CMD {_num(cmd)})"
        band = df[["f_lo", "f_hi"]].notna().all(axis=1)
        if band.any():
            xb = [float(p) for p in df.percent[band]]
            fig.add_trace(go.Scatter(
                x=xb + xb[::-1], y=list(df.f_hi[band]) + list(df.f_lo[band])[::-1],
                fill="toself", fillcolor=_rgba(colours[m], 0.18), line=dict(width=0),
                hoverinfo="skip", showlegend=False, legendgroup=esc(m),
                name=esc(f"{m}: 95% interval"), meta={"method": m, "band": True}))
        hover = [f"{esc(m)}: {p:g}% of edges ({int(k)})<br>f {f:.3f} [{lo:.3f}, {hi:.3f}]"
                 for p, k, f, lo, hi in zip(x, df.edges, df.f, df.f_lo, df.f_hi)]
        fig.add_trace(go.Scatter(x=x, y=[float(v) for v in df.f], mode="lines+markers",
                                 line=dict(color=colours[m], width=2),
                                 marker=dict(color=colours[m], size=7), name=esc(name),
                                 legendgroup=esc(m), hoverinfo="text", text=hover,
                                 meta={"method": m, "band": False}))
    for level, text in ((1.0, "f = 1: the full model"), (0.8, "f = 0.8")):
        fig.add_hline(y=level, line=dict(color="#777777", width=1,
                                         dash="solid" if level == 1 else "dash"),
                      annotation_text=esc(text), annotation_position="top left")
    fig.update_layout(
        title=esc(title or "Faithfulness against circuit size"), height=460,
        plot_bgcolor="white", legend=dict(orientation="h", yanchor="top", y=-0.2, x=0),
        margin=dict(l=60, r=30, t=60, b=120),
        xaxis=dict(type="log", tickvals=PERCENT_TICKS, ticktext=[f"{p:g}" for p in PERCENT_TICKS],
                   title="edges kept (% of all edges, log scale)", gridcolor="#eeeeee"),
        yaxis=dict(title=esc("faithfulness f = (m(C) - m(empty)) / (m(full) - m(empty))"),
                   gridcolor="#eeeeee", zeroline=True, zerolinecolor="#bbbbbb"))
    return fig


def _num(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):.3f}"


def result_figures(res, title: str = "", max_edges: int = 60):
    """(circuit figure, faithfulness figure) of a discovery result (its frame(), nodes(),
    faithfulness(), method, cpr and cmd): what `DiscoveryResult.figure()` and the page draw."""
    name = getattr(res, "method", "circuit")
    circuit = circuit_figure(res.frame(), res.nodes(), title or f"{name} circuit", max_edges)
    faith = faithfulness_figure({name: res.faithfulness()}, f"Faithfulness of the {name} "
                                "circuits by size", {name: (res.cpr, res.cmd)})
    return circuit, faith
