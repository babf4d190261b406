"""Bad inputs of the erasure check (`python -m probes --causal ...`): exactly one line
`error: ...` saying what is wrong and what would be right, exit status 2, nothing written."""

import pytest

from probes import __main__ as cli
from tests.clihelp import one_line

CASES = [
    (["--causal-margin", "0"], ["--causal-margin must lie between 0 and 1", "got 0.0"]),
    (["--causal-margin", "1.5"], ["--causal-margin must lie between 0 and 1", "got 1.5"]),
    (["--causal-margin", "nan"], ["--causal-margin must lie between 0 and 1", "got nan"]),
    (["--causal-margin", "two"], ["--causal-margin", "'two'"]),
    (["--causal-method", "pca"], ["--causal-method", "'pca'", "leace", "inlp"]),
]


@pytest.mark.parametrize("extra, words", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_a_bad_erasure_option_is_one_line_exit_2_and_nothing_written(
        extra, words, tiny_checkpoints, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main([str(tiny_checkpoints["decoder"]), "--target", "D_sign", "--n", "60",
                   "--causal", "--out", str(out), "--json", str(tmp_path / "p.json")] + extra)
    one_line(rc, capsys.readouterr().err, *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
