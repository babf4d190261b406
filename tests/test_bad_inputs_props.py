"""Option domains, property-based (issue #23): for every command, values drawn from outside
each shared option's domain (seeds below 0 or above 2**63-1, or not numbers; counts below 1;
empty output paths) give exactly one `error:` line and exit status 2, before any model is
loaded (the loader is replaced by one that fails the test if called)."""

from __future__ import annotations

import importlib

import pytest
from clihelp import one_line
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# (module, argv before the bad option, the options it takes)
COMMANDS = [
    ("interp.evaluate", ["quadratic-small"], {"--seed", "--n", "--json", "--batch-size"}),
    ("interp.classify_heads", ["quadratic-small"], {"--seed", "--n", "--out", "--batch-size"}),
    ("circuits.ablate", ["quadratic-small", "--tokens", "x"],
     {"--seed", "--data-seed", "--n", "--out", "--json", "--batch-size"}),
    ("circuits.patch", ["quadratic-small"], {"--seed", "--n", "--out", "--json"}),
    ("circuits.induction.__main__", ["induction-attn1l"], {"--seed", "--out"}),
    ("probes.__main__", ["quadratic-small", "--target", "D_sign"],
     {"--seed", "--data-seed", "--n", "--out", "--json", "--batch-size"}),
    ("interp.train", ["arithmetic", "--steps", "1"], {"--seed"}),
    ("interp.train_text", ["attn1l", "--steps", "1", "--out", "o"], {"--seed"}),
]

BAD_SEEDS = st.one_of(st.integers(max_value=-1), st.integers(min_value=2**63, max_value=2**200),
                      st.sampled_from(["one", "1.5", "0x10", "", " "]))
BAD_COUNTS = st.integers(min_value=-10**12, max_value=0)


@pytest.fixture
def no_loading(monkeypatch):
    """Any attempt to load a model fails the test: a bad option must be refused first."""
    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the bad option was refused")

    import interp.models as models

    monkeypatch.setattr(models, "load_checkpoint", refuse)
    monkeypatch.setattr("interp.cli.common.load", refuse)


def _call(module, argv, capsys):
    capsys.readouterr()
    rc = importlib.import_module(module).main(list(argv))
    return rc, capsys.readouterr().err


def _check(module, base, option, value, capsys, tmp_path, monkeypatch, *words):
    monkeypatch.chdir(tmp_path)
    rc, err = _call(module, base + [f"{option}={value}"], capsys)
    one_line(rc, err, option, *words)
    assert list(tmp_path.iterdir()) == []


SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


SEEDS = [(m, b, o) for m, b, opts in COMMANDS for o in ("--seed", "--data-seed") if o in opts]


@pytest.mark.parametrize("module, base, option", SEEDS, ids=[f"{m}{o}" for m, _, o in SEEDS])
@SETTINGS
@given(value=BAD_SEEDS)
def test_a_seed_outside_0_to_2_63_is_refused_in_one_line(module, base, option, value, capsys,
                                                         tmp_path, monkeypatch, no_loading):
    _check(module, base, option, value, capsys, tmp_path, monkeypatch)


COUNTS = [(m, b, o) for m, b, opts in COMMANDS for o in ("--n", "--batch-size") if o in opts]


@pytest.mark.parametrize("module, base, option", COUNTS, ids=[f"{m}{o}" for m, _, o in COUNTS])
@SETTINGS
@given(value=BAD_COUNTS)
def test_a_count_below_one_is_refused_in_one_line(module, base, option, value, capsys,
                                                  tmp_path, monkeypatch, no_loading):
    _check(module, base, option, value, capsys, tmp_path, monkeypatch, "at least 1")


CONTROLS = [("circuits.ablate", ["quadratic-small", "--tokens", "x"]),
            ("probes.__main__", ["quadratic-small", "--target", "D_sign"])]


@pytest.mark.parametrize("module, base", CONTROLS, ids=[c[0] for c in CONTROLS])
@SETTINGS
@given(value=st.integers(min_value=-10**9, max_value=-1))
def test_negative_controls_are_refused_in_one_line(module, base, value, capsys, tmp_path,
                                                   monkeypatch, no_loading):
    _check(module, base, "--controls", value, capsys, tmp_path, monkeypatch, "0 or more")


@pytest.mark.parametrize("module, base, option",
                         [(m, b, o) for m, b, opts in COMMANDS for o in ("--out", "--json")
                          if o in opts])
@pytest.mark.parametrize("value", ["", " ", "\t"])
def test_an_empty_output_path_is_refused_in_one_line(module, base, option, value, capsys,
                                                     tmp_path, monkeypatch, no_loading):
    _check(module, base, option, value, capsys, tmp_path, monkeypatch, "is empty")
