"""The documentation site (mkdocs.yml, docs/) builds offline with `mkdocs build --strict`, its
API reference documents every function and class the packages export, and the build can
fail: a broken link or a missing reference planted in a copy of the docs makes it fail.

Oracles: MkDocs' own link and reference checks; the packages' export lists (`_API` of interp
and circuits, `__all__` of probes) read from their source, not from the docs."""

import ast
import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("interp", "circuits", "probes")


def _build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_MKDOCS_2_WARNING="1",
               # no proxy reachable: any network access fails the build instead of hanging
               http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
               HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")
    env.pop("PYTHONPATH", None)
    # never -q: it drops the warnings that --strict counts, and a broken link passes
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                           "-f", str(config), "-d", str(site)],
                          cwd=config.parent, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = _build(ROOT / "mkdocs.yml", out)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def _exports(pkg: str) -> dict[str, str]:
    """Public name -> "module.attribute" as the package's __init__ declares it."""
    src = (ROOT / pkg / "__init__.py").read_text()
    tree = ast.parse(src)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_API"
                                                for t in node.targets):
            return {k: ".".join(v) for k, v in ast.literal_eval(node.value).items()}
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__"
                                                for t in node.targets):
            return {k: f"{pkg}.{k}" for k in ast.literal_eval(node.value)}
    raise AssertionError(f"{pkg} declares no exports")


def test_the_site_builds_strictly_offline_with_every_page_in_the_nav(site):
    pages = sorted(p.relative_to(ROOT / "docs").with_suffix("")
                   for p in (ROOT / "docs").rglob("*.md"))
    for page in pages:
        assert (site / page / "index.html").is_file() or \
            (page.name == "index" and (site / "index.html").is_file()), page
    home = (site / "index.html").read_text()
    assert "fonts.googleapis.com" not in home and "fonts.gstatic.com" not in home
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in pages:
        assert f"{page.as_posix()}.md" in nav, f"docs/{page}.md is not in the nav"


@pytest.mark.parametrize("pkg", PACKAGES)
def test_the_api_reference_documents_every_exported_function_and_class(site, pkg):
    import importlib

    html = (site / "api" / pkg / "index.html").read_text()
    ids = set(re.findall(r'id="([\w.]+)"', html))
    for name, target in _exports(pkg).items():
        obj = getattr(importlib.import_module(pkg), name)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            assert f"{pkg}.{name}" in html, f"{pkg}.{name} is not mentioned"
            continue
        assert target in ids or f"{pkg}.{name}" in ids, f"{pkg}.{name} ({target}) undocumented"
        doc = inspect.getdoc(obj).split("\n", 1)[0]
        words = re.findall(r"[A-Za-z]{5,}", doc)[:3]
        assert all(w in html for w in words), (name, words)   # its docstring is rendered


@pytest.mark.parametrize("pkg", PACKAGES)
def test_the_api_reference_names_no_issue_number(site, pkg):
    """The docstrings the API pages show are user-facing text too (same rule as the pages)."""
    from test_docs_text import issue_numbers

    text = re.sub(r"<[^>]+>", " ", (site / "api" / pkg / "index.html").read_text())
    assert not issue_numbers(text), issue_numbers(text)


def _copy(tmp_path: Path) -> Path:
    work = tmp_path / "copy"
    shutil.copytree(ROOT / "docs", work / "docs")
    shutil.copy(ROOT / "mkdocs.yml", work / "mkdocs.yml")
    for pkg in PACKAGES:
        (work / pkg).symlink_to(ROOT / pkg, target_is_directory=True)
    return work


def test_a_planted_broken_link_fails_the_strict_build(tmp_path, site):
    work = _copy(tmp_path)
    page = work / "docs" / "results.md"
    page.write_text(page.read_text() + "\nSee [the lost page](no-such-page.md).\n")
    proc = _build(work / "mkdocs.yml", tmp_path / "out")
    assert proc.returncode != 0
    assert "no-such-page.md" in proc.stderr, proc.stderr[-2000:]


def test_a_planted_missing_reference_fails_the_strict_build(tmp_path, site):
    work = _copy(tmp_path)
    page = work / "docs" / "api" / "probes.md"
    page.write_text(page.read_text() + "\n::: probes.no_such_function\n")
    proc = _build(work / "mkdocs.yml", tmp_path / "out")
    assert proc.returncode != 0
    assert "no_such_function" in proc.stderr, proc.stderr[-2000:]
