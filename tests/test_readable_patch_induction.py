"""The patching and induction reports read right: terminal tables that fit 80 and 120
columns (`--wide` for every column), heads named L0H3, baselines on one line, small effects
with their significant digits, one colour range for exact and attribution maps, one axis per
score, and top cells whose shares and intervals match planted per-pair data."""

import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from clihelp import run


def planted(values, clean, corrupt, axes=("layer", "head"), direction="denoise",
            method="exact", site="head"):
    """A PatchResult from per-pair metrics: values [*axes, pairs], clean/corrupt [pairs]."""
    from circuits.patching import PatchResult

    values = torch.as_tensor(values, dtype=torch.float32)
    shape = dict(zip(axes, values.shape))
    labels = {"layer": [str(i) for i in range(shape.get("layer", 0))],
              "head": [str(i) for i in range(shape.get("head", 0))],
              "pos": [f"Dexpr_c_digit {i}" for i in range(shape.get("pos", 0))]}
    return PatchResult(site, axes, values.mean(-1), values, float(np.mean(clean)),
                       float(np.mean(corrupt)), "logit_diff", direction,
                       {a: labels[a] for a in axes}, method)


# -- patch ---------------------------------------------------------------------------------
def test_top_cells_are_the_largest_shares_with_intervals_from_the_pairs():
    from interp.viz.reports.patch import top_cells

    rng = np.random.default_rng(1)
    clean, bad = rng.normal(3, 0.5, 12), rng.normal(-1, 0.5, 12)
    share = np.array([[0.05, -0.7, 0.3], [0.9, 0.0, -0.2]])      # planted, exact per pair
    vals = bad + share[..., None] * (clean - bad)                  # [layer, head, pairs]
    res = planted(vals, clean, bad)
    top = top_cells(res, top=4, baseline=(clean, bad))
    assert top.cell.tolist() == ["L1 H0", "L0 H1", "L0 H2", "L1 H2"]
    assert top.share.values == pytest.approx([0.9, -0.7, 0.3, -0.2], abs=1e-5)
    # every pair has the same share: every resample gives it, so the interval is a point
    assert top.ci_lo.values == pytest.approx(top.share.values, abs=1e-5)
    assert top.ci_hi.values == pytest.approx(top.share.values, abs=1e-5)
    # noise: the shares differ by pair; the interval holds the estimate and stays within
    # the pairs' own shares (each pair's gap is the same here)
    per = share[..., None] + rng.normal(0, 0.3, (2, 3, 12))
    clean2, bad2 = np.full(12, 2.0), np.zeros(12)
    res = planted(bad2 + per * 2.0, clean2, bad2)
    top = top_cells(res, top=6, baseline=(clean2, bad2))
    flat = per.reshape(6, 12)
    order = np.argsort(-np.abs(flat.mean(1)))
    assert top.share.values == pytest.approx(flat.mean(1)[order], abs=1e-5)
    for r, i in zip(top.itertuples(), order):
        assert r.ci_lo < r.share < r.ci_hi
        assert flat[i].min() <= r.ci_lo and r.ci_hi <= flat[i].max()
    assert top_cells(res, top=2).ci_lo.isna().all()               # no baseline, no interval


def test_noise_direction_shares_are_the_removed_part_of_the_gap():
    from interp.viz.reports.patch import top_cells

    clean, bad = np.array([2.0, 4.0]), np.array([0.0, 1.0])
    removed = 0.25                                                 # the patch removes 25%
    vals = np.broadcast_to(clean - removed * (clean - bad), (1, 2, 2)).copy()
    res = planted(vals, clean, bad, direction="noise")
    top = top_cells(res, top=1, baseline=(clean, bad))
    assert top.share[0] == pytest.approx(removed) and top.ci_lo[0] == pytest.approx(removed)


@pytest.mark.parametrize("width", [80, 120])
def test_the_patch_table_fits_the_terminal(monkeypatch, width):
    from interp.viz.reports.patch import site_lines, top_cells

    monkeypatch.setenv("COLUMNS", str(width))
    rng = np.random.default_rng(0)
    clean, bad = rng.normal(1, 0.2, 8), rng.normal(-1, 0.2, 8)
    vals = rng.normal(0, 1, (2, 4, 30, 8))
    res = planted(vals, clean, bad, axes=("layer", "head", "pos"), site="head_pos")
    att = planted(vals * 0.9, clean, bad, axes=("layer", "head", "pos"), site="head_pos",
                  method="attribution")
    top = top_cells(res, att, baseline=(clean, bad))
    lines = site_lines(res, 0.5, True, top)
    table = [l for l in lines if l.startswith("    ")]
    assert max(map(len, table)) <= width
    assert table[0].split()[:2] == ["cell", "role"] and len(table) >= 9
    wide = site_lines(res, 0.5, True, top, wide=True)
    assert re.split(r"\s{2,}", [l for l in wide if l.startswith("    ")][0].strip()) == \
        ["cell", "role", "share", "95% CI", "logit_diff", "attribution"]
    over = max(map(len, wide)) > width                 # the full row is wider at 80
    assert over == (width == 80)
    assert over == any("--wide shows every column" in l or "~" in l for l in table)


def test_small_shares_keep_their_significant_digits():
    from interp.viz.reports.patch import ci, pct

    assert pct(0.00042) == "+0.042%" and pct(-0.5) == "-50.0%" and pct(-0.0) == "+0.0%"
    assert ci(-0.000031, 0.0004) == "[-0.0031%, +0.040%]"


def test_the_maps_share_one_symmetric_range_and_one_colour_bar():
    from interp.viz.reports.patch import colour_range, pair_figure

    rng = np.random.default_rng(2)
    clean, bad = np.full(4, 1.0), np.zeros(4)
    exact = planted(rng.normal(0, 0.3, (2, 4, 4)), clean, bad)
    att = planted(rng.normal(0, 2.0, (2, 4, 4)), clean, bad, method="attribution")
    other = planted(rng.normal(0, 0.1, (2, 4, 4)), clean, bad)
    results = {"head": (exact, att), "other": (other, None)}
    want = max(np.abs(exact.values.numpy()).max(), np.abs(att.values.numpy()).max())
    lim = colour_range(results)
    assert lim == pytest.approx(want, rel=1e-6)            # the attribution map's largest
    fig = pair_figure(exact, att, lim, 0.9)
    assert [t.type for t in fig.data] == ["heatmap", "heatmap"]
    assert all(t.zmin == -lim and t.zmax == lim for t in fig.data)
    assert [t.showscale for t in fig.data] == [True, False]
    alone = pair_figure(other, None, lim)
    assert len(alone.data) == 1 and alone.data[0].zmax == lim


def test_patch_command_tables_fit_80_columns_and_wide_shows_all(tiny_checkpoints, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    args = ("circuits.patch", str(tiny_checkpoints["decoder"]), "--n", "2", "--sites",
            "resid_pre", "--quiet")
    narrow, wide = run(*args), run(*args, "--wide")
    assert narrow.returncode == wide.returncode == 0, narrow.stderr + wide.stderr
    table = [l for l in narrow.stdout.splitlines() if l.startswith("    ")]
    assert len(table) >= 9 and max(map(len, table)) <= 80
    head = [l for l in wide.stdout.splitlines() if l.startswith("    cell")][0]
    assert re.split(r"\s{2,}", head.strip())[-1] == "attribution"
    verdict = [l for l in narrow.stdout.splitlines() if ": largest share " in l]
    assert len(verdict) == 1 and re.search(r"[-+][\d.]+% \[[-+][\d.e-]+%, [-+][\d.e-]+%\] at "
                                           r"L\d p\d+", verdict[0]), verdict


# -- induction -----------------------------------------------------------------------------
def heads_frame(n_layers=2, n_heads=8):
    rng = np.random.default_rng(3)
    n = n_layers * n_heads
    df = pd.DataFrame({"layer": np.repeat(np.arange(n_layers), n_heads),
                       "head": np.tile(np.arange(n_heads), n_layers)})
    for c in ["induction", "prefix_matching", "previous_token", "duplicate_token"]:
        df[c] = rng.uniform(0, 1, n)
    df["copying"] = rng.uniform(-1, -0.9, n)
    df["ov_eigen_positivity"] = rng.uniform(-1, 1, n)
    for c, v in {"induction_uniform": 0.017, "prefix_matching_uniform": 0.02,
                 "previous_token_uniform": 0.049, "duplicate_token_uniform": 0.03,
                 "copying_random": -0.996, "copying_random_sd": 0.002,
                 "ov_eigen_positivity_random": -0.016, "ov_eigen_positivity_random_sd": 0.058
                 }.items():
        df[c] = v
    return df


def test_the_heads_table_names_heads_and_puts_constant_baselines_on_one_line():
    from interp.viz.reports.induction import baseline_line, heads_table

    h = heads_frame()
    t = heads_table(h)
    assert t["head"].tolist() == [f"L{l}H{k}" for l in range(2) for k in range(8)]
    assert list(t.columns) == ["head", "induction", "prefix", "prev_tok", "dup_tok", "copying",
                               "ov_eig_pos"]
    assert t["copying"].tolist() == h.copying.round(3).tolist()
    line = baseline_line(h)
    assert "induction 0.017" in line and "copying -0.996\u00a0±\u00a00.002" in line
    h.loc[3, "induction_uniform"] = 0.5                  # not constant: it stays a column
    assert "induction_uniform" in heads_table(h).columns


@pytest.mark.parametrize("width", [80, 120])
def test_the_induction_summary_tables_fit_the_terminal(monkeypatch, width):
    from interp.viz.reports.induction import summary_lines

    monkeypatch.setenv("COLUMNS", str(width))
    mech = {"previous_token_head": [0, 3], "previous_token_score": 0.579,
            "induction_head": [1, 3], "induction_score": 0.92,
            "induction_after_ablation": 0.9197, "induction_after_mean_ablation": 0.91,
            "drop": 0.00031, "drop_ci": [-0.00012, 0.0008], "control_head": [0, 2],
            "control_previous_token_score": 0.05, "induction_after_control_ablation": 0.909,
            "control_drop": 0.011, "control_drop_ci": [0.008, 0.015], "prompts": 32,
            "k_composition": 0.163, "k_composition_z": 32.2}
    res = SimpleNamespace(heads=heads_frame(), composition=None, mechanism=mech,
                          unmixing=None, mixing={}, icl=None, history=[])
    lines = summary_lines("m", res, {})
    start = next(i for i, l in enumerate(lines) if l.startswith("head "))
    end = next(i for i, l in enumerate(lines) if l.startswith("best induction head"))
    table = lines[start:end]
    assert len(table) == 17 and max(map(len, table)) <= width
    assert all(len(l) <= width for l in lines[:start])   # the baselines, wrapped
    text = "\n".join(lines)
    assert "previous-token head L0H3 (0.579) -> induction head L1H3 (0.920)" in text
    assert "drop +0.00031 [-0.00012, +0.00080], 95% CI" in text        # not +0.000
    assert "[0, 3]" not in text


def test_every_score_has_its_own_panel_axis_and_baseline():
    from interp.viz.reports.induction import scores_figure

    h = heads_frame()
    fig = scores_figure(h)
    cols = ["induction", "prefix_matching", "previous_token", "duplicate_token", "copying",
            "ov_eigen_positivity"]
    bars = [t for t in fig.data if t.type == "bar"]
    assert len({t.yaxis for t in bars}) == 6
    lay = fig.to_dict()["layout"]
    for t, c in zip(bars, cols):
        tops = np.array(t.y) + t.base
        assert tops == pytest.approx(h[c].values, abs=2e-4)
        lo, hi = lay["yaxis" + t.yaxis[1:]]["range"]
        own = [*h[c], t.base]
        assert lo < min(own) and hi > max(own)
        assert hi - lo <= 1.2 * (max(own) - min(own)) + 1e-3           # its own values only
    assert len(fig.layout.shapes) == 6                                  # a baseline each


def test_induction_command_table_fits_80_columns(tiny_checkpoints, monkeypatch, tmp_path):
    monkeypatch.setenv("COLUMNS", "80")
    proc = run("circuits.induction", str(tiny_checkpoints["decoder"]), "--n", "2", "--out",
               str(tmp_path / "i"), "--no-report", "--quiet")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("head "))
    table = lines[start:start + 9]
    assert max(map(len, table)) <= 80
    assert [l.split()[0] for l in table[1:]] == [f"L{a}H{b}" for a in range(2) for b in range(4)]
    heads = pd.read_csv(tmp_path / "i" / "heads.csv")                  # the figures printed
    assert [float(l.split()[1]) for l in table[1:]] == pytest.approx(
        heads.induction.round(3).tolist(), abs=1e-9)
