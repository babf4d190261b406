"""`import probes` (and interp, circuits) in a folder that holds output folders of the same
names: the editable install must put the source before the current folder's namespace
packages, so the real package is imported, not an empty namespace package.

Oracle: Python's own import system, in a fresh interpreter started in such a folder, against
the source files of this checkout (a namespace package has no __file__ and no `collect`)."""

import json
import os
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"interp": "load_model", "circuits": "discover", "probes": "collect"}

PROBE = """
import importlib.util, json, sys
out = {}
for name in %r:
    spec = importlib.util.find_spec(name)
    out[name] = spec.origin if spec and spec.origin not in (None, "namespace") else None
import probes
out["probes.collect"] = hasattr(probes, "collect")
print(json.dumps(out))
"""


def _shadowed_folder(tmp_path: Path) -> Path:
    """A working folder holding output folders named like the packages (no __init__.py)."""
    work = tmp_path / "work"
    for name in PACKAGES:
        (work / name).mkdir(parents=True)
        (work / name / "heads.csv").write_text("layer,head\n0,0\n")
    return work


def _run(work: Path, prefix: str = "") -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}   # the install alone
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run([sys.executable, "-c", prefix + PROBE % list(PACKAGES)], cwd=work,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_editable_wheel_of_this_checkout_wins_over_output_folders(tmp_path):
    """Build the editable wheel pip builds from pyproject.toml (setuptools' PEP 660 hook), add
    its contents as a site folder in a fresh interpreter started in a folder that holds
    `interp/`, `circuits/` and `probes/` output folders: each import resolves to this
    checkout's package, and `probes.collect` exists."""
    build = subprocess.run(
        [sys.executable, "-c", "import sys, setuptools.build_meta as b; "
         "print(b.build_editable(sys.argv[1]))", str(tmp_path / "wheel")],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = tmp_path / "wheel" / build.stdout.strip().splitlines()[-1]
    site_dir = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site_dir)
    got = _run(_shadowed_folder(tmp_path), f"import site; site.addsitedir({str(site_dir)!r})\n")
    for name in PACKAGES:
        assert got[name] == str(ROOT / name / "__init__.py"), (name, got)
    assert got["probes.collect"] is True


def _editable_source() -> Path | None:
    """The folder the running interpreter's `interp` was installed from in editable mode."""
    for dist in metadata.distributions(name="interp"):   # an egg-info beside it has none
        info = json.loads(dist.read_text("direct_url.json") or "{}")
        url = info.get("url", "")
        if info.get("dir_info", {}).get("editable") and url.startswith("file://"):
            return Path(url.removeprefix("file://")).resolve()
    return None


def test_the_installed_packages_win_over_output_folders(tmp_path):
    """The environment that runs this suite (the README's `pip install -e`): in a folder that
    holds output folders named like the packages, each import is the installed source."""
    src = _editable_source()
    if src is None or src != ROOT.resolve():
        pytest.skip(f"interp is not installed in editable mode from this checkout ({src})")
    got = _run(_shadowed_folder(tmp_path))
    for name, attr in PACKAGES.items():
        assert got[name] == str(src / name / "__init__.py"), (
            f"{name} resolves to {got[name]}: reinstall with pip install -c constraints.txt "
            f"-e \".[test]\"")
    assert got["probes.collect"] is True
