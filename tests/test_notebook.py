"""The example notebook (docs/example.ipynb) runs from top to bottom, so it cannot rot.

It runs with nbclient on a kernel of this very interpreter: a kernelspec written to a
temporary folder on JUPYTER_PATH (nothing is registered for the user or the system), one
torch thread, the hub offline, a time limit per cell.
"""

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "docs" / "example.ipynb"
KERNEL = "interp-test"
CELL_TIMEOUT_S = 300
CDN_SCRIPT = re.compile(r"""<script[^>]*\bsrc\s*=\s*["']?(https?:)?//""", re.IGNORECASE)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook after running every cell (nbclient raises on the first failing cell)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    tmp = tmp_path_factory.mktemp("jupyter")
    spec = tmp / "data" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "interp test kernel", "language": "python",
        "env": {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_VERBOSITY": "error", "IPYTHONDIR": str(tmp / "ipython")}}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(tmp / "data"))
        mp.setenv("JUPYTER_RUNTIME_DIR", str(tmp / "runtime"))
        mp.setenv("JUPYTER_PLATFORM_DIRS", "1")
        nb = nbformat.read(NOTEBOOK, as_version=4)
        client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=CELL_TIMEOUT_S,
                                         startup_timeout=120,
                                         resources={"metadata": {"path": str(ROOT / "docs")}})
        client.execute()
    return nb


def outputs(nb, tag):
    """The outputs of the code cell tagged `tag`."""
    cells = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"one cell tagged {tag!r} expected, found {len(cells)}"
    return cells[0].outputs


def text_of(outs) -> str:
    """Everything a cell printed or displayed as plain text."""
    parts = []
    for o in outs:
        if o.output_type == "stream":
            parts.append(o.text)
        elif o.output_type in ("execute_result", "display_data"):
            parts.append(o.data.get("text/plain", ""))
    return "\n".join(parts)


def test_the_notebook_is_stored_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.id


@pytest.mark.slow
def test_every_cell_runs_without_an_error(executed):
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert code and all(c.execution_count for c in code)
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, errors


@pytest.mark.slow
def test_the_head_table_names_all_16_heads_of_the_shipped_model(executed):
    text = text_of(outputs(executed, "head-table"))
    heads = {(int(l), int(h)) for l, h in
             re.findall(r"^\s*\d+\s+self\s+(\d+)\s+(\d+)\s", text, re.MULTILINE)}
    assert heads == {(l, h) for l in range(4) for h in range(4)}, text


@pytest.mark.slow
def test_the_ablation_cell_shows_its_summary_with_controls(executed):
    text = text_of(outputs(executed, "ablation"))
    for word in ("answer_loss", "exact_match", "target_damage", "control_damage_mean",
                 "p_value"):
        assert word in text, text


@pytest.mark.slow
def test_the_view_is_circuitsvis_and_no_html_output_reaches_for_a_cdn(executed):
    view = [o.data["text/html"] for o in outputs(executed, "view") if "data" in o
            and "text/html" in o.data]
    assert view and "AttentionHeads" in view[0]
    for cell in executed.cells:
        for o in cell.get("outputs", []):
            html = o.get("data", {}).get("text/html", "")
            assert not CDN_SCRIPT.search(html), f"cell {cell.id} loads a script from the web"
