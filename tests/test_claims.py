"""Claims are valid, their status agrees with their test, and the generated pages count them."""

from __future__ import annotations

import functools
import re
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from kb.knowledge import KnowledgeBase
from kb.project import ROOT

FOUNDATIONS = "docs/foundations/mse-conditional-mean.md"


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_all_claims_and_answers_are_valid():
    errors = KnowledgeBase().errors()
    assert not errors, "\n".join(errors)


def test_foundations_page_has_a_verified_and_a_refuted_claim():
    kb = KnowledgeBase()
    statuses = {b.get("status") for b in kb.claims if str(b.path).endswith(FOUNDATIONS)}
    assert {"verified", "refuted"} <= statuses


BAD_CLAIMS = """

!!! claim "a claim whose test does not exist"
    id: ghost-test
    status: verified
    test: snippets/foundations/mse.py::test_no_such_test

!!! claim "a claim without a status"
    id: no-status
    test: snippets/foundations/mse.py::test_mse_minimiser_is_conditional_mean

!!! claim "a verified claim decided by a refuting test"
    id: wrong-direction
    status: verified
    test: snippets/foundations/mse.py::test_refutes_l1_also_predicts_conditional_mean

!!! claim "a refuted claim whose test verifies"
    id: wrong-direction-2
    status: refuted
    test: snippets/foundations/mse.py::test_mse_minimiser_is_conditional_mean

!!! answer "an answer to a sentence the journal does not have"
    answers: 20251230 "no such sentence"
"""


def test_bad_claims_are_reported_with_file_and_line(project_copy):
    page = project_copy / FOUNDATIONS
    start = page.read_text(encoding="utf-8").count("\n") + 1
    page.write_text(page.read_text(encoding="utf-8") + BAD_CLAIMS, encoding="utf-8")
    errors = "\n".join(KnowledgeBase(project_copy / "docs").errors())
    line = lambda title: start + BAD_CLAIMS.split("\n").index(next(l for l in BAD_CLAIMS.split("\n") if title in l))  # noqa: E731
    assert f"mse-conditional-mean.md:{line('test does not exist') + 3}: claim 'ghost-test': test " in errors
    assert f"mse-conditional-mean.md:{line('without a status')}: claim 'no-status' has no status" in errors
    assert "claim 'wrong-direction' says verified but its test test_refutes_l1" in errors
    assert "claim 'wrong-direction-2' says refuted but its test test_mse_minimiser" in errors
    assert "fragment \"no such sentence\" occurs on 0 lines" in errors


def test_a_bad_claim_fails_the_build(project_copy):
    from conftest import mkdocs_build

    page = project_copy / FOUNDATIONS
    page.write_text(page.read_text(encoding="utf-8") + BAD_CLAIMS, encoding="utf-8")
    result = mkdocs_build(project_copy, project_copy / "site")
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "no-status' has no status" in out and "docs/foundations/mse-conditional-mean.md:" in out


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])


@functools.lru_cache(maxsize=None)
def parse(path: Path) -> Links:
    p = Links()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def resolve(site: Path, page: Path, href: str) -> tuple[Path, str]:
    url = urlparse(href)
    target = (page.parent / unquote(url.path)).resolve()
    if target.is_dir():
        target = target / "index.html"
    return target, unquote(url.fragment)


def check_links(site: Path, page: Path, prefixes: tuple[str, ...]) -> int:
    """Every internal link of a page to these sections lands on an existing page and anchor."""
    checked = 0
    for href in parse(page).links:
        if href.startswith(("http", "#", "mailto:")):
            continue
        target, anchor = resolve(site, page, href)
        if not str(target.relative_to(site)).startswith(prefixes):
            continue
        assert target.is_file(), f"{page.relative_to(site)}: broken link {href}"
        if anchor:
            assert anchor in parse(target).ids, f"{page.relative_to(site)}: {href}: no #{anchor} there"
        checked += 1
    return checked


@pytest.mark.xdist_group("site")
def test_every_internal_link_of_the_site_resolves(built_site):
    # Evidence is one click away only if every link lands: pages, claims, questions,
    # journal markers, source lines of the deciding tests, notebook figures.
    sections = ("index.html", "foundations", "topics", "journal", "claims", "questions", "code", "tags")
    pages = [p for p in built_site.rglob("index.html") if str(p.relative_to(built_site)).startswith(sections)]
    assert sum(check_links(built_site, p, sections) for p in pages) > 1000


@pytest.mark.xdist_group("site")
def test_claims_page_counts_every_claim(built_site):
    kb = KnowledgeBase()
    html = (built_site / "claims" / "index.html").read_text(encoding="utf-8")
    assert f"共 <strong>{len(kb.claims)}</strong> 条论断" in html
    for status, label in (("verified", "已验证"), ("refuted", "已证伪")):
        n = sum(b.get("status") == status for b in kb.claims)
        assert f"{label} {n}" in html
    assert check_links(built_site, built_site / "claims" / "index.html", ("foundations", "topics", "code")) >= len(kb.claims)


@pytest.mark.xdist_group("site")
def test_questions_page_lists_journal_questions_with_working_links(built_site):
    kb = KnowledgeBase()
    journal_qs = [q for q in kb.questions if q.page.is_post]
    assert len(journal_qs) >= 25, [q.text for q in journal_qs]
    page = built_site / "questions" / "index.html"
    html = page.read_text(encoding="utf-8")
    assert f"共 <strong>{len(kb.questions)}</strong> 个问题" in html
    restart = [q for q in journal_qs if "num_actor_samples" in q.text or "作业文档里找" in q.text]
    assert len(restart) == 2  # restart points are questions too
    assert check_links(built_site, page, ("journal",)) >= len(journal_qs)


@pytest.mark.xdist_group("site")
def test_journal_shows_later_checked_markers_without_changing_words(built_site):
    kb = KnowledgeBase()
    for b in kb.claims:
        for f in b.all("journal"):
            key, fragment = re.match(r'(\d{8}) "(.*)"', f.value).groups()
            html = next((built_site / "journal").glob(f"20*/*/*/{key}/index.html")).read_text(encoding="utf-8")
            words = squash(re.sub(r"^\s*(?:[-*+]|\d+\.)\s+|^>+\s*", "", fragment))
            assert words in squash(unescape(re.sub(r"<[^>]+>", "", html))), f"the learner's words '{words}' are not on the page"
            assert "后来核对" in html, f"post {key} has no marker for claim {b.get('id')}"


def test_kb_questions_prints_open_questions_with_file_and_line(capsys):
    from kb.cli import main

    assert main(["questions"]) == 0
    out = capsys.readouterr().out.strip().split("\n")
    kb = KnowledgeBase()
    assert len(out) == sum(not q.answered for q in kb.questions)
    for line in out:
        m = re.match(r"^(docs/[^:]+\.md):(\d+): (.+)$", line)
        assert m, line
        source = (ROOT / m.group(1)).read_text(encoding="utf-8").split("\n")[int(m.group(2)) - 1]
        assert m.group(3)[:6] in source
