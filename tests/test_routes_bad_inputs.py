"""Bad input to the equal-mass route checks (issue #22): one line `error: ...` naming what is
wrong and what would be right, exit status 2, nothing written."""

import pytest

from clihelp import one_line
from interp.errors import InterpError
from interp.models import load_checkpoint


def test_reads_with_tokens_is_one_line(tiny_checkpoints, tmp_path, capsys):
    from circuits.ablate import main

    out = tmp_path / "o"
    rc = main([str(tiny_checkpoints["decoder"]), "--tokens", "x", "--reads", "--n", "3",
               "--controls", "0", "--out", str(out)])
    one_line(rc, capsys.readouterr().err, "--reads", "--route")
    assert not out.exists()


def test_verify_n_beyond_the_held_out_inputs_is_one_line(tiny_checkpoints, tmp_path, capsys):
    """The small preset holds 21 held-out one-root inputs: 100 distinct held-out equations at
    the 50/30/20 mix cannot be drawn; the error names the largest n that can."""
    from interp.classify_heads import _main
    from interp.cli.common import run_cli

    out = tmp_path / "v"
    rc = run_cli(_main, [str(tiny_checkpoints["decoder"]), "--n", "4", "--out", str(out),
                         "--quiet", "--verify", "--verify-n", "100", "--controls", "2",
                         "--no-report"])
    one_line(rc, capsys.readouterr().err, "n <= 70", "held-out")
    assert not (out / "heads.csv").exists()


def test_unknown_control_rule_is_one_line(tiny_checkpoints):
    from circuits.ablation import ablate_route

    ckpt = load_checkpoint(tiny_checkpoints["decoder"])
    with pytest.raises(InterpError, match="mass, count") as e:
        ablate_route(ckpt.bridge(), ckpt.task, ckpt.task.generate(3, seed=0),
                     ["L1H0:D_value->b"], n_controls=0, controls="equal")
    assert "\n" not in str(e.value)
