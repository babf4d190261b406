"""interp.viz.termtable.fit: rows that fit the width, numbers right and text left, cuts marked."""

import pandas as pd
import pytest

from interp.viz.termtable import fit


@pytest.fixture
def df():
    return pd.DataFrame({"head": ["L0H0", "L10H11"], "label": ["routed('-'->D_value)", "broad"],
                         "reads": ["x1 -> Dexpr_c, b -> a, c -> = and so on " * 3, "b"],
                         "score": [0.5, 12.25], "n": [3, 140]})


@pytest.mark.parametrize("width", [40, 60, 80, 120])
def test_every_line_fits_the_width(df, width):
    lines = fit(df, width=width).splitlines()
    assert all(len(line) <= width for line in lines), [len(x) for x in lines]
    assert lines[0].split()[0] == "head"


def test_wide_keeps_every_cell_whole(df):
    text = fit(df, wide=True)
    for v in df["reads"]:
        assert v.strip() in text
    assert "--wide" not in text


def test_a_cut_text_is_marked_and_numbers_stay_whole(df):
    lines = fit(df, width=80).splitlines()
    assert "~" in lines[1] and "0.500" in lines[1] and "140" in lines[2]
    # text is left-aligned (starts at its column), numbers right-aligned (end at theirs)
    start = lines[0].index("label")
    assert lines[2][start:].startswith("broad")
    end = lines[0].index(" n") + 2
    assert lines[1][:end].endswith("  3") and lines[2][:end].endswith("140")


def test_columns_that_cannot_fit_are_named(df):
    text = fit(df, width=30)
    note = text[text.index("\n("):].replace("\n", " ")
    assert "--wide" in note and (": n;" in note or ", n;" in note)
    assert all(len(line) <= 30 for line in text.splitlines())


def test_nan_prints_as_a_dash():
    out = fit(pd.DataFrame({"a": [1.0, float("nan")]}), width=80).splitlines()
    assert out[2].strip() == "-"


def test_width_follows_the_terminal(df, monkeypatch):
    monkeypatch.setenv("COLUMNS", "50")
    assert max(map(len, fit(df).splitlines())) <= 50


def test_small_effects_keep_significant_digits():
    from interp.viz.termtable import interval, signed

    assert signed(0.1234) == "+0.123" and signed(-2.5) == "-2.500" and signed(0.0) == "+0.000"
    assert signed(-0.0) == "+0.000"
    assert signed(0.00042) == "+0.00042" and signed(-0.000012345) == "-0.000012"
    assert float(signed(0.00042)) == 0.00042
    # the example: one number of decimals, set by the largest of the three
    assert interval(0.0, 0.0, 0.0012) == "+0.0000 [+0.0000, +0.0012]"
    assert interval(0.0031, -0.0002, 0.0064) == "+0.0031 [-0.0002, +0.0064]"
    assert interval(0.346, 0.310, 0.384) == "+0.346 [+0.310, +0.384]"
