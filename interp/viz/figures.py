"""plotly figures of attention analyses (pure: data in, figure out)."""

from __future__ import annotations

import pandas as pd
import torch


def heatmap(z, x: list[str], y: list[str], title: str, zmin=0.0, zmax=None):
    import plotly.graph_objects as go

    fig = go.Figure(go.Heatmap(z=compact(z), x=x, y=y,
                               colorscale="Blues", zmin=zmin, zmax=zmax))
    fig.update_layout(title=title, height=max(300, 22 * len(y) + 120),
                      margin=dict(l=140, r=20, t=50, b=120), yaxis_autorange="reversed")
    return fig


def label_counts_figure(counts: pd.DataFrame):
    """Stacked bars: number of heads of each class per (kind, layer)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    x = [f"{k} L{l}" for k, l in counts.index]
    for col in counts.columns:
        fig.add_bar(name=col, x=x, y=counts[col].tolist())
    fig.update_layout(barmode="stack", title="Heads of each class per layer", height=380)
    return fig


def compact(z, decimals: int = 3):
    """Nested lists of rounded numbers (plotly/circuitsvis JSON stays small)."""
    if torch.is_tensor(z):
        return z.double().round(decimals=decimals).tolist()
    return z


def head_grid(P: torch.Tensor, tokens: list[str], kind: str, q_tokens: list[str] | None = None):
    """Every head of every layer for one example: P [layer, head, query, key]."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    L, H = P.shape[:2]
    fig = make_subplots(rows=L, cols=H, subplot_titles=[f"L{l} H{h}" for l in range(L)
                                                         for h in range(H)],
                        horizontal_spacing=0.02, vertical_spacing=0.04)
    x = [f"{i}:{t}" for i, t in enumerate(tokens)]        # unique labels: position:token
    y = [f"{i}:{t}" for i, t in enumerate(q_tokens or tokens)]
    for l in range(L):
        for h in range(H):
            fig.add_trace(go.Heatmap(z=compact(P[l, h]), x=x, y=y, colorscale="Blues", zmin=0,
                                     zmax=1, showscale=False,
                                     hovertemplate="%{y} -> %{x}: %{z}<extra></extra>"),
                          row=l + 1, col=h + 1)
            fig.update_yaxes(autorange="reversed", showticklabels=False, row=l + 1, col=h + 1)
            fig.update_xaxes(showticklabels=False, row=l + 1, col=h + 1)
    fig.update_layout(title=f"{kind}: every head of every layer", height=230 * L + 80,
                      width=230 * H + 100)
    return fig


def role_map_figure(rm: torch.Tensor, q_names: list[str], k_names: list[str], title: str):
    """One layer's query role x key role maps: the mean over heads, then each head.
    rm: [head, query role, key role]."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    H = rm.shape[0]
    panels = [("mean over heads", rm.mean(0))] + [(f"head {h}", rm[h]) for h in range(H)]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[t for t, _ in panels],
                        horizontal_spacing=0.015, shared_yaxes=True)
    top = max(float(rm.max()), 1e-6)   # one colour scale for all panels of the layer
    for i, (_, z) in enumerate(panels):
        fig.add_trace(go.Heatmap(z=compact(z), x=k_names, y=q_names, colorscale="Blues",
                                 zmin=0, zmax=top, showscale=i == 0,
                                 hovertemplate="query %{y} -> key %{x}: %{z}<extra></extra>"),
                      row=1, col=i + 1)
        fig.update_yaxes(autorange="reversed", row=1, col=i + 1)
    fig.update_layout(title=title, height=max(360, 16 * len(q_names) + 160),
                      width=max(900, 330 * len(panels)), margin=dict(l=140, b=120))
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
        names = [m.replace("field:", "") for m in metrics]
        if len(control_damage):
            cd = control_damage[control_damage.metric.isin(metrics)]
            fig.add_scatter(x=[m.replace("field:", "") for m in cd.metric],
                            y=(cd.damage * scale).round(4).tolist(), mode="markers",
                            marker=dict(color="rgba(120,120,120,0.5)", size=6),
                            name="controls", showlegend=col == 1, row=1, col=col)
        tgt = summary.set_index("metric").loc[metrics, "target_damage"] * scale
        fig.add_scatter(x=names, y=tgt.round(4).tolist(), mode="markers",
                        marker=dict(color="crimson", size=11, symbol="diamond"),
                        name="target", showlegend=col == 1, row=1, col=col)
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
    [layer, head] directly, [layer, head, pos] as one row per head."""
    import plotly.graph_objects as go

    if len(axes) == 3:
        z = values.reshape(-1, values.shape[-1])
        y = [f"L{l} H{h}" for l in labels["layer"] for h in labels["head"]]
    else:
        z = values
        y = [f"L{l}" for l in labels["layer"]]
    x = labels[axes[-1]] if axes[-1] == "pos" else [f"H{h}" for h in labels["head"]]
    x = [f"{i}: {t}" for i, t in enumerate(x)] if axes[-1] == "pos" else x
    fig = go.Figure(go.Heatmap(z=compact(z), x=x, y=y, colorscale="RdBu", zmid=0,
                               colorbar=dict(title="share")))
    fig.update_layout(title=title, height=max(260, 20 * len(y) + 160),
                      margin=dict(l=80, r=20, t=50, b=140), yaxis_autorange="reversed")
    return fig
