"""Every relative link in the project's own markdown (README.md, CONTRIBUTING.md, docs/*.md) points at a
file or folder that exists, and a `#section` part names a heading of the markdown file it points at.

Reference text moves between the README and docs/ often; a link left behind is only found by a reader
clicking it, so the check is mechanical. Links inside fenced code blocks are code, not links.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

PAGES = sorted([ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "docs").glob("*.md")])
# [text](target) and ![alt](target); the target ends at whitespace or ')'; an optional "title" follows.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, ...


def without_fences(text: str) -> str:
    """The text with fenced code blocks blanked out."""
    return re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.MULTILINE | re.DOTALL)


def outside_code(text: str) -> str:
    """The text with fenced code blocks and inline code spans blanked out."""
    return re.sub(r"`[^`\n]*`", "", without_fences(text))


def links(page: Path) -> list[str]:
    """The relative link targets of one markdown page."""
    return [t for t in LINK.findall(outside_code(page.read_text(encoding="utf-8"))) if not EXTERNAL.match(t)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())  # a link's text only
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a markdown page's headings (duplicates get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    out = set()
    for line in without_fences(page.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1).replace("`", ""))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken(page: Path) -> list[str]:
    """The links of `page` whose file is missing, or whose #anchor is no heading of its markdown target."""
    bad = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {path or page.name}")
    return bad


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    assert page.exists(), page
    assert broken(page) == []


def test_the_checker_finds_broken_links(tmp_path):
    """The check itself can fail: a missing file, a missing heading and a link hidden in code."""
    (tmp_path / "other.md").write_text("# A heading\n\n## `code` in a heading\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md) [ok](other.md#a-heading) [ok](other.md#code-in-a-heading) [ok](#mine)\n"
                    "# Mine\n[gone](missing.md) [bad](other.md#nope) ![img](pics/x.png) [web](https://x.org/y)\n"
                    "```\n[in code](nowhere.md)\n```\n`[inline](nowhere.md)`\n")
    assert broken(page) == ["missing.md: no such file", "other.md#nope: no heading #nope in other.md",
                            "pics/x.png: no such file"]
