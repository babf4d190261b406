"""User-facing text: no page names an issue number (a reader has no tracker to look it up
in), and the README stays a short guide whose links all lead somewhere.

docs/mutation.md is left out on purpose: it is the engineering log of the mutation pass,
kept batch by batch, where the batch a mutant came with is part of the record."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOGS = {"mutation.md"}
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").rglob("*.md")
                                     if p.name not in LOGS)]

# "#12", "(#22;", "issue 12", "Issues #13 and #14" in prose; not an occurrence key such as
# `in:x#1`, `out:=#0` or a table header x#0 (a word or an operator right before the #).
ISSUE = re.compile(r"(?<![\w\]&=*^+\-/:<>])#\d+\b|\b[Ii]ssues?\s+#?\d+\b")


def prose(text: str) -> str:
    """The text without fenced code blocks and code spans (keys and commands live there)."""
    text = re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "``", text)


def issue_numbers(text: str) -> list[str]:
    return [m.group(0) for m in ISSUE.finditer(prose(text))]


def test_the_pattern_finds_issue_numbers_and_not_occurrence_keys():
    planted = ("Before #22 it took 139 s (issue 12; Issues #13 and #14), see #5.\n"
               "| layer | x#0 | ^ | x#1 |\nthe key `in:x#1`, `out:=#0` and `(#0`\n"
               "```\n# 5 controls #7\n```\n## Heading")
    assert issue_numbers(planted) == ["#22", "issue 12", "Issues #13", "#14", "#5"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_user_facing_page_names_an_issue_number(page):
    found = issue_numbers(page.read_text())
    assert not found, f"{page.relative_to(ROOT)} names {found}"


def test_the_readme_is_a_short_guide_with_its_picture_and_every_link_resolving():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    pictures = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", text)
    assert len(pictures) == 1 and (ROOT / pictures[0]).is_file(), pictures
    links = re.findall(r"(?<!!)\[[^\]]+\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [l for l in links if not re.match(r"[a-z]+://", l)]
    assert len(local) >= 10
    for link in local:
        assert (ROOT / link).exists(), f"README links to {link}, which does not exist"
    analyses = text.split("## Analyses", 1)[1].split("\n## ", 1)[0]
    rows = [r for r in analyses.splitlines() if r.startswith("| ") and "](docs/" in r]
    pages = {p for r in rows for p in re.findall(r"\]\(docs/([\w-]+\.md)\)", r)}
    analysis_pages = {"taxonomy.md", "routes.md", "causal.md", "ablation.md", "patching.md",
                      "probing.md", "probes.md", "erasure.md", "circuits.md", "induction.md"}
    assert analysis_pages <= pages, analysis_pages - pages
    assert "```python" in text and "import interp" in text      # the notebook block
