"""Bad inputs to the probe command's data options (issue #22): one line `error: ...` saying
what is wrong and what would be right, exit status 2, nothing written."""

import pytest

from probes import __main__ as cli
from tests.clihelp import one_line


@pytest.mark.parametrize("extra, words", [
    (["--heldout", "--all-inputs"], ["--heldout and --all-inputs", "give one"]),
    # the small preset holds 21 held-out one-root inputs: 70 at its 50/30/20 mix
    (["--heldout", "--n", "200"], ["21 distinct held-out inputs of class 'one'", "n <= 70"]),
    # 200 one-root inputs in all: 666 at the mix
    (["--n", "2000"], ["200 distinct inputs of class 'one'", "n <= 666"]),
], ids=["heldout-and-all-inputs", "heldout-too-many", "unique-too-many"])
def test_data_options_refuse_in_one_line_and_write_nothing(tiny_checkpoints, tmp_path, capsys,
                                                          extra, words):
    out = tmp_path / "out"
    rc = cli.main([str(tiny_checkpoints["decoder"]), "--target", "D_sign", "--out", str(out),
                   "--quiet", *extra])
    one_line(rc, capsys.readouterr().err, *words)
    assert not out.exists() and list(tmp_path.iterdir()) == []
