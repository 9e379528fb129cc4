"""The site builds strictly, offline, with every page the learner expects."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kb.knowledge import KnowledgeBase

pytestmark = pytest.mark.xdist_group("site")

EXTERNAL = re.compile(r'<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)="(?:https?:)?//(?!127\.0\.0\.1)', re.I)


def html_pages(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


def test_strict_build_has_home_journal_and_foundations(built_site):
    assert (built_site / "index.html").is_file()
    assert (built_site / "foundations" / "mse-conditional-mean" / "index.html").is_file()
    posts = sorted(p.parent.parent.parent.name + p.parent.parent.name + p.parent.name
                   for p in (built_site / "journal").glob("20*/*/*/*/index.html"))
    assert len(posts) == len(KnowledgeBase().posts) >= 3, posts
    home = (built_site / "index.html").read_text(encoding="utf-8")
    assert "Not guaranteed to be correct" in home and "Learning Notes (Work in Progress)" in home


def test_no_page_loads_anything_from_another_host(built_site):
    offenders = {}
    for page in html_pages(built_site):
        hits = EXTERNAL.findall(page.read_text(encoding="utf-8"))
        if hits:
            offenders[str(page.relative_to(built_site))] = hits[:3]
    assert not offenders, f"pages load assets from other hosts: {offenders}"
    for asset in ("assets/vendor/katex/katex.min.js", "assets/vendor/katex/fonts",
                  "assets/vendor/mermaid/mermaid.min.js"):
        assert (built_site / asset).exists(), f"{asset} is not served by the site"


def test_search_index_segments_chinese(built_site):
    # Material runs jieba over Chinese text and joins the words with \u200b,
    # so a word from inside a sentence is a search term of its own.
    index = json.loads((built_site / "search" / "search_index.json").read_text(encoding="utf-8"))
    assert r"\u200b" in index["config"]["separator"]
    docs = [d for d in index["docs"] if d["location"].startswith("foundations/mse-conditional-mean/")]
    text = " ".join(d["text"] for d in docs)
    assert "\u200b均值\u200b" in text, "jieba did not segment the foundations page"


def test_every_category_page_lists_its_posts(built_site):
    kb = KnowledgeBase()
    for key, post in kb.posts.items():
        for category in post.meta["categories"]:
            slug = category.lower().replace(" ", "-")
            page = built_site / "journal" / "category" / slug / "index.html"
            assert page.is_file(), f"no category page for {category}"
            assert key in page.read_text(encoding="utf-8"), f"{category} page does not list post {key}"


def test_posts_link_to_their_topic_pages(built_site):
    kb = KnowledgeBase()
    topics = {p.meta["topic"] for p in kb.pages if p.meta.get("topic")}
    for key, post in kb.posts.items():
        html = next((built_site / "journal").glob(f"20*/*/*/{key}/index.html")).read_text(encoding="utf-8")
        for category in post.meta["categories"]:
            if category in topics:
                assert "相关主题页" in html, f"post {key} does not link its topic pages"
        lines = post.text.split("\n")
        breaks = [a for a, b in zip(lines, lines[1:])
                  if a.endswith("  ") and a.strip() and b.strip() and not re.match(r"\s*([-*+]|\d+\.)\s", b)]
        assert html.count("<br") >= len(breaks), f"post {key}: the learner's hard line breaks are lost"
