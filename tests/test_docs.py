"""The documentation hangs together: the README stays a short landing page that links every
page of docs/, mkdocs.yml lists every page, and every relative link (and its #anchor) leads
somewhere."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """The anchors mkdocs and GitHub give the page's headings."""
    found = set()
    for heading in re.findall(r"^#+ (.*)$", page.read_text(), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).strip().replace(" ", "-")
        found.add(slug)
    return found


def test_the_readme_is_short_and_links_every_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    linked = {target.split("#")[0] for target in LINK.findall(readme)}
    pages = {f"docs/{page.name}" for page in DOCS.glob("*.md") if page.name != "index.md"}
    assert pages <= linked


def test_mkdocs_lists_every_page():
    listed = set(re.findall(r":\s*(\S+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M))
    assert listed == {page.name for page in DOCS.glob("*.md")}


def test_every_relative_link_resolves():
    for source in [ROOT / "README.md", *DOCS.glob("*.md")]:
        for target in LINK.findall(source.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            path, _, anchor = target.partition("#")
            page = (source.parent / path).resolve() if path else source
            assert page.exists(), f"{source.name}: {target}"
            if anchor and page.suffix == ".md":
                assert anchor in anchors(page), f"{source.name}: {target}"
