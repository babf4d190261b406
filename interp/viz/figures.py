"""plotly figures of attention analyses (pure: data in, figure out)."""

from __future__ import annotations

import pandas as pd
import torch


def heatmap(z, x: list[str], y: list[str], title: str, zmin=0.0, zmax=None):
    import plotly.graph_objects as go

    fig = go.Figure(go.Heatmap(z=z.tolist() if torch.is_tensor(z) else z, x=x, y=y,
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


def head_grid(P: torch.Tensor, tokens: list[str], kind: str, q_tokens: list[str] | None = None):
    """Every head of every layer for one example: P [layer, head, query, key]."""
    from plotly.subplots import make_subplots

    L, H = P.shape[:2]
    fig = make_subplots(rows=L, cols=H, subplot_titles=[f"L{l} H{h}" for l in range(L)
                                                         for h in range(H)],
                        horizontal_spacing=0.02, vertical_spacing=0.04)
    for l in range(L):
        for h in range(H):
            import plotly.graph_objects as go

            fig.add_trace(go.Heatmap(z=P[l, h].tolist(), x=list(range(len(tokens))),
                                     y=list(range(len(q_tokens or tokens))),
                                     colorscale="Blues", zmin=0, zmax=1, showscale=False,
                                     text=[[f"{(q_tokens or tokens)[q]} -> {tokens[k]}"
                                            for k in range(len(tokens))]
                                           for q in range(len(q_tokens or tokens))],
                                     hoverinfo="text+z"), row=l + 1, col=h + 1)
            fig.update_yaxes(autorange="reversed", showticklabels=False, row=l + 1, col=h + 1)
            fig.update_xaxes(showticklabels=False, row=l + 1, col=h + 1)
    fig.update_layout(title=f"{kind}: every head of every layer", height=230 * L + 80,
                      width=230 * H + 100)
    return fig
