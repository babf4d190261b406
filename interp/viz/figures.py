"""plotly figures of attention analyses (pure: data in, figure out).

Every string a figure draws (tick labels, hover text, titles, legend names) goes through
`esc`: plotly reads a small HTML subset in all of them (`<b>`, `<i>`, `<br>`, `<sup>`,
`<a href>` ...) and decodes entities, so a token `<b>bold</b>` would be drawn in bold and
`<br>` would empty its label. Escaped, every token is drawn as the text it is.
"""

from __future__ import annotations

from typing import Iterable

import pandas as pd
import torch

ARROW = "\u2192"   # hover "query -> key"; a literal ">" is markup to plotly


def esc(text) -> str:
    """Text for plotly to draw literally: &, < and > as entities (plotly decodes them once)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def esc_all(texts: Iterable) -> list[str]:
    """`esc` of every item (labels stay distinct: escaping is one-to-one)."""
    return [esc(t) for t in texts]


def token_labels(tokens: Iterable) -> list[str]:
    """Distinct axis labels for a token sequence, `position:token`, escaped."""
    return [esc(f"{i}:{t}") for i, t in enumerate(tokens)]


def heatmap(z, x: list[str], y: list[str], title: str, zmin=0.0, zmax=None):
    """One heatmap; x and y are raw text (escaped here) and always categories, so labels that
    look like numbers keep their order."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Heatmap(z=compact(z), x=esc_all(x), y=esc_all(y),
                               colorscale="Blues", zmin=zmin, zmax=zmax,
                               colorbar=dict(nticks=6, thickness=15),
                               hovertemplate=f"%{{y}} {ARROW} %{{x}}: %{{z}}<extra></extra>"))
    fig.update_layout(title=esc(title), height=max(300, 22 * len(y) + 120),
                      margin=dict(l=140, r=20, t=50, b=120), yaxis_autorange="reversed",
                      xaxis_type="category", yaxis_type="category")
    return fig


def label_counts_figure(counts: pd.DataFrame):
    """Stacked bars: number of heads of each class per (kind, layer)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    x = esc_all(f"{k} L{l}" for k, l in counts.index)
    for col in counts.columns:
        fig.add_bar(name=esc(col), x=x, y=counts[col].tolist())
    fig.update_layout(barmode="stack", title="Heads of each class per layer", height=380,
                      xaxis_type="category")
    return fig


def compact(z, decimals: int = 3):
    """Nested lists of rounded numbers (plotly/circuitsvis JSON stays small)."""
    if torch.is_tensor(z):
        return z.double().round(decimals=decimals).tolist()
    return z


def head_grid(P: torch.Tensor, tokens: list[str], kind: str, q_tokens: list[str] | None = None,
              key_title: str = "key", query_title: str = "query"):
    """Every head of every layer for one example: P [layer, head, query, key]. Key tokens
    label the bottom row, query tokens the left column (position:token, escaped); the figure
    takes the page's width."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    L, H = P.shape[:2]
    fig = make_subplots(rows=L, cols=H, subplot_titles=[f"L{l} H{h}" for l in range(L)
                                                         for h in range(H)],
                        horizontal_spacing=0.02, vertical_spacing=0.06 if L > 1 else 0.0,
                        shared_xaxes=True, shared_yaxes=True)
    x = token_labels(tokens)                        # unique labels: position:token
    y = token_labels(q_tokens or tokens)
    for l in range(L):
        for h in range(H):
            fig.add_trace(go.Heatmap(z=compact(P[l, h]), x=x, y=y, colorscale="Blues", zmin=0,
                                     zmax=1, showscale=False,
                                     hovertemplate=f"L{l} H{h}<br>%{{y}} {ARROW} %{{x}}: "
                                                   "%{z}<extra></extra>"),
                          row=l + 1, col=h + 1)
    fig.update_xaxes(type="category", tickfont_size=9, tickangle=-90)
    fig.update_yaxes(type="category", tickfont_size=9, autorange="reversed")
    fig.update_xaxes(title_text=esc(key_title), row=L, col=1)
    fig.update_yaxes(title_text=esc(query_title), row=1, col=1)
    fig.update_layout(title=esc(f"{kind}: every head of every layer"),
                      height=230 * L + 180, margin=dict(l=130, r=20, t=70, b=130))
    return fig


def role_map_figure(rm: torch.Tensor, q_names: list[str], k_names: list[str], title: str,
                    max_cols: int = 3):
    """One layer's query role x key role maps: the mean over heads, then each head, in rows
    of at most `max_cols` panels, so the figure fits the page width.
    rm: [head, query role, key role]."""
    import math

    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    H = rm.shape[0]
    panels = [("mean over heads", rm.mean(0))] + [(f"head {h}", rm[h]) for h in range(H)]
    cols = min(max_cols, len(panels))
    rows = math.ceil(len(panels) / cols)
    panel_h = max(220, 13 * len(q_names))
    gap = 150                                       # room for the rotated key-role labels
    height = rows * panel_h + (rows - 1) * gap + 60 + 150
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[t for t, _ in panels],
                        horizontal_spacing=0.02,
                        vertical_spacing=gap / height if rows > 1 else 0.0,
                        shared_yaxes=True)
    top = max(float(rm.max()), 1e-6)   # one colour scale for all panels of the layer
    x, y = esc_all(k_names), esc_all(q_names)
    for i, (name, z) in enumerate(panels):
        r, c = divmod(i, cols)
        fig.add_trace(go.Heatmap(z=compact(z), x=x, y=y, colorscale="Blues",
                                 zmin=0, zmax=top, showscale=i == 0,
                                 colorbar=dict(nticks=6, thickness=15, yanchor="top", y=1,
                                               len=min(1.0, panel_h / (height - 210))),
                                 hovertemplate=f"{name}<br>query %{{y}} {ARROW} key %{{x}}: "
                                               "%{z}<extra></extra>"),
                      row=r + 1, col=c + 1)
    fig.update_xaxes(type="category", tickfont_size=9, tickangle=-90)
    fig.update_yaxes(type="category", tickfont_size=9, autorange="reversed")
    fig.update_layout(title=esc(title), height=height, margin=dict(l=140, r=20, t=60, b=150))
    return fig


def ablation_figure(summary: pd.DataFrame, control_damage: pd.DataFrame):
    """Damage per metric: the target (red diamond) against each control set (grey dots).
    Loss is on its own axis (left), accuracies in percentage points (right panel)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, column_widths=[0.15, 0.85],
                        subplot_titles=("answer loss (up)", "accuracies (points lost)"))
    for col, metrics in ((1, ["answer_loss"]),
                         (2, [m for m in summary.metric if m != "answer_loss"])):
        scale = 1.0 if col == 1 else 100.0
        names = esc_all(m.replace("field:", "") for m in metrics)
        if len(control_damage):
            cd = control_damage[control_damage.metric.isin(metrics)]
            fig.add_scatter(x=esc_all(m.replace("field:", "") for m in cd.metric),
                            y=(cd.damage * scale).round(4).tolist(), mode="markers",
                            marker=dict(color="rgba(120,120,120,0.5)", size=6),
                            name="controls", showlegend=col == 1, row=1, col=col)
        tgt = summary.set_index("metric").loc[metrics, "target_damage"] * scale
        fig.add_scatter(x=names, y=tgt.round(4).tolist(), mode="markers",
                        marker=dict(color="crimson", size=11, symbol="diamond"),
                        name="target", showlegend=col == 1, row=1, col=col)
    fig.update_xaxes(type="category")
    fig.update_layout(height=420, title="Damage of the ablation: target vs random controls")
    return fig


def sweep_figure(sweep: pd.DataFrame):
    """Answer-loss damage when ablating from layer l on: target line, controls mean ± sd."""
    import plotly.graph_objects as go

    s = sweep[sweep.metric == "answer_loss"]
    fig = go.Figure()
    if "control_damage_mean" in s:
        fig.add_scatter(x=s.from_layer.tolist(), y=s.control_damage_mean.round(4).tolist(),
                        error_y=dict(array=s.control_damage_sd.round(4).tolist()),
                        name="controls (mean ± sd)", line=dict(color="grey"))
    fig.add_scatter(x=s.from_layer.tolist(), y=s.target_damage.round(4).tolist(),
                    name="target", line=dict(color="crimson"))
    fig.update_layout(height=380, title="Answer-loss damage, ablating from layer l on",
                      xaxis_title="first ablated layer", yaxis_title="answer loss increase",
                      xaxis=dict(dtick=1))
    return fig


def patch_heatmap(values: torch.Tensor, axes: tuple, labels: dict, title: str):
    """A patching result as a heatmap (diverging, centred on 0): [layer, pos] and
    [layer, head] directly, [layer, head, pos] as one row per head. The colour bar reads
    the share of the gap in percent, with a few ticks however short the figure."""
    import plotly.graph_objects as go

    if len(axes) == 3:
        z = values.reshape(-1, values.shape[-1])
        y = [f"L{l} H{h}" for l in labels["layer"] for h in labels["head"]]
    else:
        z = values
        y = [f"L{l}" for l in labels["layer"]]
    if axes[-1] == "pos":
        x = token_labels(labels["pos"])
    else:
        x = [f"H{h}" for h in labels["head"]]
    height = max(340, 20 * len(y) + 180)
    fig = go.Figure(go.Heatmap(
        z=compact(z), x=x, y=y, colorscale="RdBu", zmid=0,
        colorbar=dict(title=dict(text="share", side="top"), tickformat=".0%",
                      nticks=max(6, min(10, (height - 190) // 25)), thickness=15),
        hovertemplate="%{y}, %{x}: %{z:.1%}<extra></extra>"))
    fig.update_layout(title=esc(title), height=height,
                      margin=dict(l=80, r=20, t=50, b=140), yaxis_autorange="reversed",
                      xaxis_type="category", yaxis_type="category")
    return fig


def _lines(title: str) -> str:
    """A long panel title ("A | B | C") escaped, one part a line."""
    return "<br>".join(esc(part.strip()) for part in str(title).split(" | "))


def route_maps_figure(maps: pd.DataFrame, heads: list[tuple[str, int, int]],
                      titles: dict | None = None, max_heads: int = 16):
    """Small multiples: each head's query group x key group map, one colour scale 0..1.

    Parameters
    ----------
    maps : long form, columns kind, layer, head, query, key, share (each query's shares sum
        to 1); groups are drawn in the frame's order of appearance (per attention kind)
    heads : (kind, layer, head) to draw, in this order; the first `max_heads` are drawn
    titles : {(kind, layer, head): panel title}; " | " separates the title's lines. Default
        "kind LlHh".
    """
    import math

    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    heads = [tuple(h) for h in heads][:max_heads]
    titles = titles or {}
    cols = min(4, max(1, len(heads)))
    rows = max(1, math.ceil(len(heads) / cols))
    order = {kind: (list(dict.fromkeys(part["query"])), list(dict.fromkeys(part["key"])))
             for kind, part in maps.groupby("kind", sort=False)}
    n_q = max((len(q) for q, _ in order.values()), default=1)
    panel_h, gap = max(200, 16 * n_q), 150
    height = rows * panel_h + (rows - 1) * gap + 120 + 130
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.06,
                        vertical_spacing=gap / height if rows > 1 else 0.0,
                        subplot_titles=[_lines(titles.get(h, f"{h[0]} L{h[1]}H{h[2]}"))
                                        for h in heads] or [""])
    for i, (kind, layer, head) in enumerate(heads):
        part = maps[(maps["kind"] == kind) & (maps["layer"] == layer) & (maps["head"] == head)]
        qs, ks = order.get(kind, ([], []))
        grid = part.pivot_table(index="query", columns="key", values="share", aggfunc="sum",
                                sort=False).reindex(index=qs, columns=ks)
        seen = grid.notna().any(axis=1)
        grid.loc[seen] = grid.loc[seen].fillna(0.0)       # a query's missing cells: share 0
        r, c = divmod(i, cols)
        fig.add_trace(go.Heatmap(z=compact(torch.tensor(grid.to_numpy(dtype=float))),
                                 x=esc_all(ks), y=esc_all(qs), colorscale="Blues", zmin=0,
                                 zmax=1, showscale=i == 0,
                                 colorbar={"nticks": 6, "thickness": 15, "yanchor": "top",
                                           "y": 1, "len": min(1.0, panel_h / (height - 250))},
                                 hovertemplate=f"{esc(kind)} L{layer}H{head}<br>query %{{y}} "
                                               f"{ARROW} key %{{x}}: %{{z}}<extra></extra>"),
                      row=r + 1, col=c + 1)
    fig.update_xaxes(type="category", tickfont_size=9, tickangle=-90)
    fig.update_yaxes(type="category", tickfont_size=9, autorange="reversed")
    fig.update_annotations(font_size=10)
    fig.update_layout(title="What each head reads: query group x key group (share of the "
                            "query's attention)", height=height,
                      margin={"l": 140, "r": 20, "t": 120, "b": 130})
    return fig


def flow_figure(flow: torch.Tensor, rollout: torch.Tensor, tokens: list[str],
                title: str = "attention rollout and attention flow"):
    """Rollout and attention flow (max-flow) of one example side by side, query x key
    ([query, key] each, or [1, query, key]). Each panel has its own colour scale from 0 to
    its maximum: flow is a capacity (up to 1 per cell), rollout a share (rows sum to 1), so
    one scale would leave rollout pale. Rows that were not computed (NaN) stay blank."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    flow, rollout = (t[0] if t.dim() == 3 else t for t in (flow, rollout))
    labels = token_labels(tokens)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, shared_yaxes=True,
                        subplot_titles=("attention rollout", "attention flow (max-flow)"))
    for c, (name, z) in enumerate((("rollout", rollout), ("flow", flow))):
        top = max(float(torch.nan_to_num(z.float()).max()), 1e-6)
        fig.add_trace(go.Heatmap(z=compact(z), x=labels, y=labels, colorscale="Blues",
                                 zmin=0, zmax=top,
                                 colorbar={"nticks": 6, "thickness": 12, "x": 0.45 + 0.55 * c},
                                 hovertemplate=f"{name}<br>%{{y}} {ARROW} %{{x}}: "
                                               "%{z}<extra></extra>"),
                      row=1, col=c + 1)
    fig.update_xaxes(type="category", tickfont_size=9, tickangle=-90, title_text="input (key)")
    fig.update_yaxes(type="category", tickfont_size=9, autorange="reversed")
    fig.update_yaxes(title_text="output (query)", row=1, col=1)
    fig.update_layout(title=esc(title), height=max(420, 14 * len(tokens)
                                                                     + 220),
                      margin={"l": 130, "r": 20, "t": 60, "b": 130})
    return fig
