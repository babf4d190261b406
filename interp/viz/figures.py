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
TICK_FONT = 10     # px: the smallest tick label a map draws
ROW_PX = 13        # px per labelled row or column of a map: every tick fits at TICK_FONT
PAGE_PX = 1300     # the width a report's figure is laid out for (the page is 1,400 px wide)
KIND_NAMES = {"self": "self", "encoder": "encoder", "decoder_self": "decoder self",
              "cross": "cross"}


def kind_name(kind: str) -> str:
    """An attention kind as a title writes it: `decoder_self` -> "decoder self"."""
    return KIND_NAMES.get(kind, str(kind))


def every_tick(labels: list[str]) -> dict:
    """Axis settings that label every category (plotly otherwise skips ticks it thinks
    crowded): `labels` already escaped."""
    return {"type": "category", "tickmode": "array", "tickvals": list(labels),
            "ticktext": list(labels), "tickfont": {"size": TICK_FONT}}


def _label_px(labels) -> int:
    """About how many px the longest of `labels` takes at TICK_FONT."""
    return int(0.62 * TICK_FONT * max((len(str(t)) for t in labels), default=1)) + 8


def esc(text) -> str:
    """Text for plotly to draw literally: &, < and > as entities (plotly decodes them once)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def esc_all(texts: Iterable) -> list[str]:
    """`esc` of every item (labels stay distinct: escaping is one-to-one)."""
    return [esc(t) for t in texts]


def token_labels(tokens: Iterable) -> list[str]:
    """Distinct axis labels for a token sequence, `position:token`, escaped."""
    return [esc(f"{i}:{t}") for i, t in enumerate(tokens)]


def heatmap(z, x: list[str], y: list[str], title: str, zmin=0.0, zmax=None,
            x_title: str | None = None, y_title: str | None = None, all_ticks: bool = False):
    """One heatmap; x and y are raw text (escaped here) and always categories, so labels that
    look like numbers keep their order. all_ticks: label every row and column (at least
    TICK_FONT px); x_title / y_title: the axis titles."""
    import plotly.graph_objects as go

    xs, ys = esc_all(x), esc_all(y)
    fig = go.Figure(go.Heatmap(z=compact(z), x=xs, y=ys,
                               colorscale="Blues", zmin=zmin, zmax=zmax,
                               colorbar=dict(nticks=6, thickness=15),
                               hovertemplate=f"%{{y}} {ARROW} %{{x}}: %{{z}}<extra></extra>"))
    fig.update_layout(title=esc(title), height=max(300, 22 * len(y) + 120),
                      margin=dict(l=140, r=20, t=50, b=120), yaxis_autorange="reversed",
                      xaxis_type="category", yaxis_type="category")
    if all_ticks:
        fig.update_xaxes(**every_tick(xs), tickangle=-90)
        fig.update_yaxes(**every_tick(ys))
        b = _label_px(xs) + 50
        fig.update_layout(margin=dict(l=_label_px(ys) + 40, r=20, t=50, b=b),
                          height=max(160, ROW_PX * len(ys)) + 50 + b)
    if x_title:
        fig.update_xaxes(title_text=esc(x_title))
    if y_title:
        fig.update_yaxes(title_text=esc(y_title))
    return fig


CLASS_COLOURS = {"sharp_diagonal": "#1f77b4", "blurred_diagonal": "#9ecae1",
                 "vertical": "#ff7f0e", "sparse_block": "#2ca02c", "routed": "#d62728",
                 "broad": "#9467bd", "heterogeneous": "#8c8c8c"}
_SPARE = ["#8c564b", "#e377c2", "#bcbd22", "#17becf"]


def label_counts_figure(counts: pd.DataFrame):
    """Stacked bars: number of heads of each class per (kind, layer)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    x = esc_all(f"{k} L{l}" for k, l in counts.index)
    for i, col in enumerate(counts.columns):       # one fixed colour per class, as in the legend
        fig.add_bar(name=esc(col), x=x, y=counts[col].tolist(),
                    marker_color=CLASS_COLOURS.get(str(col), _SPARE[i % len(_SPARE)]))
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
    label the bottom row, query tokens the left column (position:token, escaped); each panel
    is named with the attention kind ("cross L0 H1") and gives every query row at least
    ROW_PX px; the figure takes the page's width."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    L, H = P.shape[:2]
    x = token_labels(tokens)                        # unique labels: position:token
    y = token_labels(q_tokens or tokens)
    name = kind_name(kind)
    panel_h, gap = max(200, ROW_PX * len(y)), 50
    height = L * panel_h + (L - 1) * gap + 70 + _label_px(x) + 60
    fig = make_subplots(rows=L, cols=H, subplot_titles=[f"{esc(name)} L{l} H{h}"
                                                         for l in range(L) for h in range(H)],
                        horizontal_spacing=0.02, vertical_spacing=gap / height if L > 1 else 0.0,
                        shared_xaxes=True, shared_yaxes=True)
    for l in range(L):
        for h in range(H):
            fig.add_trace(go.Heatmap(z=compact(P[l, h]), x=x, y=y, colorscale="Blues", zmin=0,
                                     zmax=1, showscale=False,
                                     hovertemplate=f"{esc(name)} L{l} H{h}<br>%{{y}} {ARROW} "
                                                   "%{x}: %{z}<extra></extra>"),
                          row=l + 1, col=h + 1)
    fig.update_xaxes(type="category", tickfont_size=TICK_FONT, tickangle=-90)
    fig.update_yaxes(**every_tick(y), autorange="reversed")
    fig.update_xaxes(title_text=esc(key_title), row=L, col=1)
    fig.update_yaxes(title_text=esc(query_title), row=1, col=1)
    fig.update_layout(title=esc(f"{kind}: every head of every layer"), height=height,
                      margin=dict(l=_label_px(y) + 50, r=20, t=70, b=_label_px(x) + 50))
    return fig


def role_map_figure(rm: torch.Tensor, q_names: list[str], k_names: list[str], title: str,
                    max_cols: int = 3):
    """One layer's query role x key role maps: the mean over heads, then each head, in rows
    of at most `max_cols` panels (fewer when the roles need the room), every role labelled,
    so the figure fits the page width. rm: [head, query role, key role]; roles are drawn in
    the order given."""
    import math

    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    H = rm.shape[0]
    x, y = esc_all(k_names), esc_all(q_names)
    panels = [("mean over heads", rm.mean(0))] + [(f"head {h}", rm[h]) for h in range(H)]
    fit = max(1, PAGE_PX // (ROW_PX * len(x) + _label_px(y) + 20))
    cols = max(1, min(max_cols, len(panels), fit))
    rows = math.ceil(len(panels) / cols)
    panel_h = max(220, ROW_PX * len(q_names))
    gap = _label_px(x) + 70                        # the rotated key-role labels, a title
    height = rows * panel_h + (rows - 1) * gap + 60 + gap
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[t for t, _ in panels],
                        horizontal_spacing=min(0.3, (_label_px(y) + 20) / PAGE_PX),
                        vertical_spacing=gap / height if rows > 1 else 0.0)
    top = max(float(rm.max()), 1e-6)   # one colour scale for all panels of the layer
    for i, (name, z) in enumerate(panels):
        r, c = divmod(i, cols)
        fig.add_trace(go.Heatmap(z=compact(z), x=x, y=y, colorscale="Blues",
                                 zmin=0, zmax=top, showscale=i == 0,
                                 colorbar=dict(nticks=6, thickness=15, yanchor="top", y=1,
                                               len=min(1.0, panel_h / (height - 60 - gap))),
                                 hovertemplate=f"{name}<br>query %{{y}} {ARROW} key %{{x}}: "
                                               "%{z}<extra></extra>"),
                      row=r + 1, col=c + 1)
    fig.update_xaxes(**every_tick(x), tickangle=-90, title_text="key role")
    fig.update_yaxes(**every_tick(y), autorange="reversed", title_text="query role")
    fig.update_layout(title=esc(title), height=height,
                      margin=dict(l=_label_px(y) + 50, r=20, t=60, b=gap))
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
                      titles: dict | None = None, max_heads: int = 16,
                      order: dict | None = None, title: str | None = None):
    """Small multiples: each head's query group x key group map, one colour scale 0..1,
    every group labelled (ROW_PX px a group at TICK_FONT; fewer panels a row when the groups
    need the room), axes titled "key group" and "query group".

    Parameters
    ----------
    maps : long form, columns kind, layer, head, query, key, share (each query's shares sum
        to 1); groups are drawn in `order` or else in the frame's order of appearance (per
        attention kind)
    heads : (kind, layer, head) to draw, in this order; the first `max_heads` are drawn
    titles : {(kind, layer, head): panel title}; " | " separates the title's lines. Default
        "kind LlHh".
    order : {kind: (query groups, key groups)}, the order to draw them in (groups the frame
        does not hold are left out; groups it holds that `order` misses come last)
    title : the figure's title (default names the attention kinds drawn)
    """
    import math

    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    heads = [tuple(h) for h in heads][:max_heads]
    titles = titles or {}
    seen = {kind: (list(dict.fromkeys(part["query"])), list(dict.fromkeys(part["key"])))
            for kind, part in maps.groupby("kind", sort=False)}
    order = {kind: tuple(_ordered(have, (order or {}).get(kind, ((), ()))[i])
                         for i, have in enumerate(qk)) for kind, qk in seen.items()}
    drawn = [order.get(h[0], ([], [])) for h in heads] or [([], [])]
    n_q = max(len(q) for q, _ in drawn) or 1
    n_k = max(len(k) for _, k in drawn) or 1
    q_px = max(_label_px(esc_all(q)) for q, _ in drawn)
    k_px = max(_label_px(esc_all(k)) for _, k in drawn)
    cols = max(1, min(4, len(heads), PAGE_PX // (ROW_PX * n_k + q_px + 60)))
    rows = max(1, math.ceil(len(heads) / cols))
    lines = max((len(str(titles.get(h, "")).split(" | ")) for h in heads), default=1)
    panel_h = max(200, ROW_PX * n_q)
    gap = k_px + 30 + 14 * lines + 20               # key labels, axis title, panel title
    height = rows * panel_h + (rows - 1) * gap + 60 + 14 * lines + gap
    fig = make_subplots(rows=rows, cols=cols,
                        horizontal_spacing=min(0.3, (q_px + 50) / PAGE_PX),
                        vertical_spacing=gap / height if rows > 1 else 0.0,
                        subplot_titles=[_lines(titles.get(h, f"{kind_name(h[0])} L{h[1]}H{h[2]}"))
                                        for h in heads] or [""])
    for i, (kind, layer, head) in enumerate(heads):
        part = maps[(maps["kind"] == kind) & (maps["layer"] == layer) & (maps["head"] == head)]
        qs, ks = order.get(kind, ([], []))
        grid = part.pivot_table(index="query", columns="key", values="share", aggfunc="sum",
                                sort=False).reindex(index=qs, columns=ks)
        shown = grid.notna().any(axis=1)
        grid.loc[shown] = grid.loc[shown].fillna(0.0)     # a query's missing cells: share 0
        r, c = divmod(i, cols)
        x, y = esc_all(ks), esc_all(qs)
        fig.add_trace(go.Heatmap(z=compact(torch.tensor(grid.to_numpy(dtype=float))),
                                 x=x, y=y, colorscale="Blues", zmin=0,
                                 zmax=1, showscale=i == 0,
                                 colorbar={"nticks": 6, "thickness": 15, "yanchor": "top",
                                           "y": 1, "len": min(1.0, panel_h / (height - 2 * gap))},
                                 hovertemplate=f"{esc(kind_name(kind))} L{layer}H{head}<br>"
                                               f"query %{{y}} {ARROW} key %{{x}}: "
                                               "%{z}<extra></extra>"),
                      row=r + 1, col=c + 1)
        fig.update_xaxes(**every_tick(x), tickangle=-90, title_text="key group",
                         title_standoff=6, row=r + 1, col=c + 1)
        fig.update_yaxes(**every_tick(y), autorange="reversed", title_text="query group",
                         title_standoff=4, row=r + 1, col=c + 1)
    fig.update_annotations(font_size=TICK_FONT)
    kinds = ", ".join(dict.fromkeys(kind_name(h[0]) for h in heads))
    fig.update_layout(title=esc(title or f"What each head reads ({kinds} attention): query "
                                         "group x key group (share of the query's attention)"),
                      height=height, margin={"l": q_px + 50, "r": 20,
                                             "t": 60 + 14 * lines, "b": gap})
    return fig


def _ordered(have: list, order) -> list:
    """The items of `have` in `order`, then those `order` misses in their own order."""
    want = [g for g in order if g in set(have)]
    return want + [g for g in have if g not in set(want)]


def flow_figure(flow: torch.Tensor, rollout: torch.Tensor, tokens: list[str],
                title: str = "attention rollout and attention flow"):
    """Rollout and attention flow (max-flow) of one example, query x key ([query, key] each,
    or [1, query, key]): rollout over every query (top), flow below over the query rows that
    were computed only (rows of NaN are left out, so the flow panel is sized to its content).
    Each panel has its own colour scale from 0 to its maximum: flow is a capacity (up to 1 per
    cell), rollout a share (rows sum to 1), so one scale would leave rollout pale."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    flow, rollout = (t[0] if t.dim() == 3 else t for t in (flow, rollout))
    labels = token_labels(tokens)
    rows = [i for i in range(flow.shape[0]) if not bool(torch.isnan(flow[i].float()).all())]
    n_all, n_rows = len(labels), max(1, len(rows))
    h_roll, h_flow = max(200, ROW_PX * n_all), max(160, ROW_PX * n_rows)
    gap = _label_px(labels) + 70
    height = h_roll + h_flow + gap + 60 + gap
    fig = make_subplots(rows=2, cols=1, row_heights=[h_roll, h_flow],
                        vertical_spacing=gap / height,
                        subplot_titles=("attention rollout (every query)",
                                        f"attention flow (max-flow), the {len(rows)} query "
                                        "rows computed"))
    for r, (name, z, y) in enumerate((("rollout", rollout, labels),
                                      ("flow", flow[rows], [labels[i] for i in rows]))):
        top = max(float(torch.nan_to_num(z.float()).max()), 1e-6) if z.numel() else 1.0
        fig.add_trace(go.Heatmap(z=compact(z), x=labels, y=y, colorscale="Blues",
                                 zmin=0, zmax=top,
                                 colorbar={"nticks": 6 if r == 0 else 5, "thickness": 12,
                                           "yanchor": "top", "y": 1.0 if r == 0 else
                                           (h_flow + gap) / (height - 60),
                                           "len": (h_roll if r == 0 else h_flow)
                                           / (height - 60)},
                                 hovertemplate=f"{name}<br>%{{y}} {ARROW} %{{x}}: "
                                               "%{z}<extra></extra>"),
                      row=r + 1, col=1)
        fig.update_yaxes(**every_tick(y), autorange="reversed", title_text="output (query)",
                         row=r + 1, col=1)
    fig.update_xaxes(type="category", tickfont_size=TICK_FONT, tickangle=-90,
                     title_text="input (key)")
    fig.update_layout(title=esc(title), height=height,
                      margin={"l": _label_px(labels) + 50, "r": 20, "t": 60, "b": gap})
    return fig
