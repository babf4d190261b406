"""The ablate, route knockout and probe results, readable: no probe cell under the minimum of
distinct test equations is ever chosen (planted tiny cells that would win otherwise), the
maps' colour ranges and clipping by hand, one colour per knockout on every trace, findings
first, and terminal tables that fit 80 and 120 columns (--wide for every column). Bad input
(--wide where it does nothing) is one line, exit status 2."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from clihelp import one_line_error, run

MIN_TEST = 20          # the stated minimum (docs/probes.md)


def grid(rows) -> pd.DataFrame:
    """A probe grid: (layer, position, n_eq_test, score, baseline, selectivity) per row."""
    out = []
    for layer, pos, n, score, base, sel in rows:
        out.append({"site": "resid_pre", "stack": "decoder", "layer": layer, "position": pos,
                    "target": "t", "kind": "class", "n_train": 3 * n, "n_test": n,
                    "n_eq_test": n, "metric": "accuracy", "score": score,
                    "score_lo": score - 0.1, "score_hi": min(1.0, score + 0.1),
                    "baseline": base, "control": (score - sel) if sel == sel else np.nan,
                    "selectivity": sel, "positional": base, "within_r2": np.nan,
                    "class_r2": np.nan, "within_r2_by_class": "", "alpha": 1.0})
    return pd.DataFrame(out)


# in:b_sign#0 has 5 test equations, a perfect score and the largest selectivity: without the
# minimum it would be the most selective cell, the best over its baseline, and checked
PLANTED = [(0, "in:x#0", 30, 0.70, 0.50, 0.10), (0, "in:b_sign#0", 5, 1.00, 0.50, 0.90),
           (0, "in:c_digit#0", 40, 0.52, 0.50, 0.30), (1, "in:x#0", 30, 0.60, 0.50, np.nan),
           (1, "in:b_sign#0", 19, 0.95, 0.50, 0.80), (1, "in:c_digit#0", 20, 0.58, 0.50, 0.05)]


def test_planted_tiny_cells_are_never_the_most_selective_nor_the_best():
    from interp.viz.reports.probe import best_cells, findings
    from probes.scores import reliable_rows

    g = grid(PLANTED)
    assert list(reliable_rows(g).position) == ["in:x#0", "in:c_digit#0", "in:x#0",
                                               "in:c_digit#0"]      # 20 counts, 19 does not
    most, top = best_cells(g)
    assert (most.layer, most.position) == (0, "in:c_digit#0")        # selectivity 0.30
    assert (top.layer, top.position) == (0, "in:x#0")                # 0.70 - 0.50
    lines = findings(g)
    assert lines[0].startswith(f"probes: 2 of 6 cells have fewer than {MIN_TEST} distinct")
    assert "most selective reliable cell L0 in:c_digit#0: score 0.520" in lines[1]
    assert lines[2].startswith("  highest over its baseline: L0 in:x#0: 0.700")
    assert "b_sign" not in "\n".join(lines)


def test_the_causal_check_never_erases_at_a_tiny_cell(monkeypatch):
    """probes' own choice of cells (`python -m probes --causal` and --causal-at): the planted
    frame's holding cells are L0 in:x#0 (reliable) and in:b_sign#0 (5 and 19 equations)."""
    import probes.causal
    from probes import __main__ as cli

    calls = []

    def fake(bridge, task, acts, t, site, layer, keys, **kw):
        calls.append((layer, tuple(keys)))
        return SimpleNamespace(meta={})

    monkeypatch.setattr(probes.causal, "erasure_check", fake)
    keys = ["in:x#0", "in:b_sign#0", "in:c_digit#0"]
    acts = SimpleNamespace(keys=keys, key_stack=["decoder"] * 3, stacks=("decoder",),
                           layers={"decoder": [0, 1]})
    res = SimpleNamespace(frame=lambda: grid(PLANTED), parts=None)
    a = SimpleNamespace(causal_at=None, causal_layers=None, site="resid_pre",
                        causal_method="leace", controls=2, seed=0, causal_n=8, batch_size=8,
                        causal_margin=0.02)
    cli._causal(None, None, acts, {"t": res}, a, lambda m: None)
    # by hand: L0 holds at x (0.20) and b_sign (0.50, tiny); L1 at x (0.10), b_sign (0.45,
    # 19 equations) and c_digit (0.08); only the reliable ones are erased
    assert calls == [(0, ("in:x#0",)), (1, ("in:x#0", "in:c_digit#0"))]
    calls.clear()
    a.causal_at = "x,b_sign"
    cli._causal(None, None, acts, {"t": res}, a, lambda m: None)
    assert calls == [(0, ("in:x#0",)), (1, ("in:x#0",))]


def test_maps_take_their_range_from_reliable_cells_clip_r2_and_mask_tiny_cells():
    from interp.viz.reports.probe import grid_figure

    # the case: tiny cells with R^2 -19 and selectivity -13 / +13
    g = grid([(0, "in:a_sign#0", 3, -19.0, -0.05, -13.0), (0, "in:x#0", 120, 0.62, -0.01, 0.41),
              (0, "in:=#0", 120, -3.0, -0.01, -0.6), (1, "in:a_sign#0", 7, 0.9, -0.05, 13.0),
              (1, "in:x#0", 120, 0.80, -0.01, 0.2), (1, "in:=#0", 120, 0.75, -0.01, np.nan)])
    g["metric"] = "r2"
    fig = grid_figure(g, "score", "t")
    heat, masked = fig.data[0], fig.data[1]
    assert (heat.zmin, heat.zmax) == (-1.0, 1.0)        # -3 is reliable: clipped at -1
    # rows L0, L1; columns a_sign, x, =: tiny cells blank, R^2 clipped to [-1, 1]
    assert [list(r) for r in heat.z] == [[None, 0.62, -1.0], [None, 0.8, 0.75]]
    assert [list(r) for r in masked.z] == [[1, None, None], [1, None, None]]
    assert [list(r)[0] for r in masked.text] == ["n=3", "n=7"]
    assert heat.customdata[0][2] == "-3.0000"              # the hover keeps the value
    sel = grid_figure(g, "selectivity", "t").data[0]
    assert (sel.zmin, sel.zmax) == (-0.6, 0.6)             # not +-13
    tight = g[g.position != "in:=#0"]
    assert (grid_figure(tight, "score", "t").data[0].zmin) == 0.0   # max(-1, min(0, 0.62))
    # an accuracy map: from the lowest reliable score or baseline to 1, the baseline marked
    acc = grid([(0, "in:x#0", 30, 0.70, 0.50, 0.10), (0, "in:c#0", 4, 0.10, 0.05, 0.0),
                (1, "in:x#0", 30, 0.90, 0.50, 0.30), (1, "in:c#0", 30, 0.62, 0.55, 0.1)])
    h = grid_figure(acc, "score", "t").data[0]
    assert (h.zmin, h.zmax) == (0.5, 1.0)
    assert "0.50 baseline" in h.colorbar.ticktext
    assert [list(r) for r in h.text] == [["+0.20", ""], ["+0.40", "+0.07"]]


def test_each_knockout_has_one_colour_set_on_every_trace():
    from interp.viz.reports.routes import colour, route_figure

    rows = []
    for k in ("L1H2:Dexpr_c->c", "L2H0:D_value->b,c", "L0H3:offset=1"):
        for m in ("answer_loss", "loss:c", "exact_match", "field:D_value"):
            rows.append({"knockout": k, "measure": m, "effect": 0.1, "ci_lo": 0.0,
                         "ci_hi": 0.2})
    fig = route_figure(pd.DataFrame(rows))
    by = {}
    for t in fig.data:
        assert t.marker.color is not None and t.marker.color == t.error_y.color
        by.setdefault(t.legendgroup, set()).add(t.marker.color)
    assert len(by) == 3 and all(len(c) == 1 for c in by.values())
    assert len({c.pop() for c in by.values()}) == 3
    assert sum(bool(t.showlegend) for t in fig.data) == 3          # one legend entry each
    assert len({colour(i) for i in range(64)}) == 64               # at most 64 routes a run


def _table_lines(text: str) -> list[str]:
    """The lines after the findings block (title and findings are sentences, not tables)."""
    lines = text.splitlines()
    start = lines.index("") + 1
    return lines[lines.index("", start):]


@pytest.mark.parametrize("width", [80, 120])
def test_probe_tables_fit_the_terminal_and_wide_shows_every_column(tiny_checkpoints, tmp_path,
                                                                  monkeypatch, capsys, width):
    from probes import __main__ as cli

    monkeypatch.setenv("COLUMNS", str(width))
    argv = [str(tiny_checkpoints["decoder"]), "--target", "D_sign,D_value", "--n", "120",
            "--positions", "input", "--layers", "1", "--causal-at", "x", "--causal-n", "8",
            "--controls", "1", "--quiet"]
    assert cli.main(argv + ["--out", str(tmp_path / "p")]) == 0
    text = capsys.readouterr().out
    rest = _table_lines(text)
    assert max(map(len, rest)) <= width, [x for x in rest if len(x) > width]
    probes = pd.read_csv(tmp_path / "p" / "probes.csv")
    for p in probes.position:                               # every position whole
        assert any(x.startswith(f"L1     {p} ") or f" {p} " in x for x in rest), p
    if width == 80:
        assert "--wide shows every column" in text
    assert cli.main(argv + ["--wide"]) == 0
    wide = capsys.readouterr().out
    header = [x for x in wide.splitlines() if x.startswith("layer")]
    assert header and all(c in header[-1] for c in ("n_test", "within", "class"))
    assert "--wide shows" not in wide


@pytest.mark.parametrize("width", [80, 120])
def test_route_table_fits_the_terminal_and_wide_shows_every_column(tiny_checkpoints, tmp_path,
                                                                  monkeypatch, capsys, width):
    from circuits.ablate import main

    monkeypatch.setenv("COLUMNS", str(width))
    argv = [str(tiny_checkpoints["decoder"]), "--route", "L1H0:D_value->b,c;L0H1:offset=1",
            "--n", "6", "--controls", "2", "--quiet"]
    assert main(argv + ["--out", str(tmp_path / "r")]) == 0
    text = capsys.readouterr().out
    rest = _table_lines(text)
    assert max(map(len, rest)) <= width, [x for x in rest if len(x) > width]
    assert "L1H0:D_value->b,c" in rest and "L0H1:offset=1" in rest   # names whole
    routes = pd.read_csv(tmp_path / "r" / "routes.csv")
    loss = routes[routes.measure == "answer_loss"].set_index("knockout")
    from interp.viz.termtable import signed

    for k, r in loss.iterrows():                # the effect and its interval, as numbers
        i = rest.index(k)
        row = rest[i + 1].split()
        assert row[:4] == ["answer_loss", signed(r.effect), signed(r.ci_lo), signed(r.ci_hi)]
    html = (tmp_path / "r" / "report.html").read_text()
    order = [html.index(s) for s in ('<section class="findings"', '<nav class="toc"',
                                     '<h2 id="s-effects', "<details>")]
    assert order == sorted(order)
    assert main(argv + ["--wide"]) == 0
    wide = capsys.readouterr().out
    assert "mass_c" in wide and "--wide shows" not in wide


def test_ablate_tokens_leads_with_its_verdicts_on_the_terminal_and_the_page(tiny_checkpoints,
                                                                           tmp_path, capsys):
    from circuits.ablate import main

    assert main([str(tiny_checkpoints["decoder"]), "--tokens", "x,^,=", "--n", "6",
                 "--controls", "2", "--no-decode", "--out", str(tmp_path / "a"),
                 "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    summary = pd.read_csv(tmp_path / "a" / "summary.csv").set_index("metric")
    r = summary.loc["answer_loss"]
    assert lines[1] == "" and lines[2].startswith("ablating x,^,= (knockout): answer loss "
                                                  f"{r.clean:.3f} -> {r.ablated:.3f}")
    block = lines[2:lines.index("", 2)]
    assert any(f"random input positions: {r.verdict}" in x for x in block)
    assert block[-1].startswith("  sweep (ablated from layer l on): beats random positions")
    html = (tmp_path / "a" / "report.html").read_text()
    order = [html.index(s) for s in ('<section class="findings"', '<nav class="toc"',
                                     '<h2 id="s-damage', "<details>")]
    assert order == sorted(order)


def test_wide_with_tokens_is_one_line_and_writes_nothing(tiny_checkpoints, tmp_path):
    out = tmp_path / "never"
    one_line_error(run("circuits.ablate", str(tiny_checkpoints["decoder"]), "--tokens", "x",
                       "--wide", "--out", str(out)), "--wide applies to --route")
    assert not out.exists()
