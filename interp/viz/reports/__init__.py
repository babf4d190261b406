"""One report module per command: the terminal text, the JSON and the self-contained HTML page
of its result (pure: a result in, text/dict/Page out)."""


def rounded(frame):
    """A table's floats with at least two significant digits (a small effect is not a zero):
    below 0.01 three significant digits, else four decimals."""
    import pandas as pd

    out = frame.copy()
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].map(lambda x: x if pd.isna(x) else float(f"{x:.3g}")
                                if abs(x) < 0.01 else round(x, 4))
    return out
