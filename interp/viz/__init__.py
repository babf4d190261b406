"""Pictures: plotly figures, circuitsvis views and the self-contained HTML report."""
