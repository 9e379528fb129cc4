"""The knowledge model on small projects: every problem is found in one pass, with file:line."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import ROOT

from kb import render
from kb.model import KnowledgeBase, Status, Verdict
from kb.project import Project
from kb.site import Site

POST = """\
---
date: 2025-12-31
slug: "20251231"
categories: [SAC]
---
# 20251231
1. target_Q_valule = r(s_t,a_t) + discount * Q(s_t+1, a_t+1)
2. 为什么使用double-Q？
"""

SNIPPET = """\
import pytest


# --8<-- [start:sec]
def f():
    return 1
# --8<-- [end:sec]


def test_f(g=f):
    assert g() == 1


def test_refutes_f_is_two():
    assert f() != 2


@pytest.mark.parametrize("x", [1, 2])
def test_param(x, shift=0):
    assert x + shift > 0


@pytest.mark.skip(reason="later")
def test_skipped():
    assert False


def two():
    return 2
"""


def make(tmp_path: Path, page: str, extra: dict[str, str] | None = None) -> KnowledgeBase:
    """A tiny project: the real mkdocs.yml, one topic page, one post, one snippet module."""
    (tmp_path / "mkdocs.yml").write_text((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "overrides").mkdir(exist_ok=True)  # the theme's custom_dir, which MkDocs requires
    files = {
        "docs/topics/t.md": page,
        "docs/journal/posts/2025-12-31.md": POST,
        "snippets/t/m.py": SNIPPET,
        **(extra or {}),
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    return KnowledgeBase.load(Project.at(tmp_path / "mkdocs.yml"))


def claim(**fields) -> str:
    title = fields.pop("title", "a claim")
    lines = [f'!!! claim "{title}"'] + [f"    {k.rstrip('_')}: {v}" for k, v in fields.items()]
    return "\n".join(lines) + "\n\n    Why.\n"


def page(*blocks: str) -> str:
    return "---\ntitle: T\ntopic: SAC\n---\n# T\n\n" + "\n".join(blocks)


def errors(kb: KnowledgeBase) -> str:
    return "\n".join(str(e) for e in kb.errors)


def test_a_claim_resolves_in_one_pass(tmp_path):
    kb = make(
        tmp_path,
        page(
            claim(
                id="c",
                status="verified",
                test="snippets/t/m.py::test_f",
                counterfactual='g=two "若 f 返回 2"',
                evidence="snippets/t/m.py:sec",
                journal='20251231 "target_Q_valule = r(s_t,a_t)" qualified',
                answers='20251231 "为什么使用double-Q" answered',
            )
        ),
    )
    assert not kb.errors, errors(kb)
    c = kb.claim_by_id["c"]
    assert c.status is Status.VERIFIED and c.anchor == "claim-c" and c.where == "docs/topics/t.md:7"
    assert (c.test.code.path, c.test.code.line, c.test.function) == ("snippets/t/m.py", 10, "test_f")
    assert (c.evidence[0].line, c.evidence[0].name) == (5, "sec")
    j, a = c.journal[0], c.answers[0]
    assert (j.post.key, j.line, j.verdict, j.anchor) == ("20251231", 7, Verdict.QUALIFIED, "j-7")
    assert (a.line, a.verdict, a.anchor) == (8, Verdict.ANSWERED, "q-8")
    q = next(q for q in kb.questions if q.line == 8)
    assert q.answered_by == [c]


@pytest.mark.parametrize(
    "journal, words",
    [
        ('20251231 "target_Q_valule"', "has no verdict"),
        ('20251231 "target_Q_valule" answered', "has 'answered'"),
        ('20251231 "target_Q_valule" right', "has 'right'"),
        ('20251231 "no such words" verified', "occurs on 0 lines"),
        ('20251231 "1" verified', "occurs on 2 lines"),
        ('20260101 "x" verified', "no journal post 20260101"),
        ('2025-12-31 "x" verified', "journal must read"),
    ],
)
def test_every_journal_reference_carries_its_own_verdict(tmp_path, journal, words):
    kb = make(tmp_path, page(claim(id="c", status="verified", test="snippets/t/m.py::test_f", journal=journal)))
    assert "docs/topics/t.md:11: " in errors(kb) and words in errors(kb), errors(kb)


def test_an_open_claim_cannot_settle_a_line(tmp_path):
    kb = make(
        tmp_path, page(claim(id="c", status="open", missing="a test", journal='20251231 "target_Q_valule" verified'))
    )
    assert "docs/topics/t.md:11: journal reference has 'verified'" in errors(kb)


@pytest.mark.parametrize(
    "test, words",
    [
        ("/etc/passwd.py::test_x", "outside snippets/"),
        ("../outside/m.py::test_x", "outside snippets/"),
        ("snippets/../tests/m.py::test_x", "outside snippets/"),
        ("tests/test_x.py::test_x", "outside snippets/"),
        ("snippets/t/link.py::test_f", "outside snippets/"),  # a symlink out of the folder
        ("snippets/t/_helpers.py::test_f", "pytest does not collect"),
        ("snippets/t/missing.py::test_f", "does not exist"),
        ("snippets/t/m.py::test_nope", "no function test_nope"),
        ("snippets/t/m.py::f", "is not a test"),
        ("snippets/t/m.py", "pytest node id"),
        ("snippets/t/m.py::test_refutes_f_is_two", "decides 'refuted'"),
        ("snippets/t/m.py::test_f[1]", "is not parametrized"),
        ("snippets/t/m.py::test_skipped", "can be skipped"),
    ],
)
def test_a_deciding_test_must_be_a_collected_snippet_test(tmp_path, test, words):
    outside = tmp_path.parent / f"{tmp_path.name}-outside.py"
    outside.write_text(SNIPPET, encoding="utf-8")
    (tmp_path / "snippets" / "t").mkdir(parents=True)
    (tmp_path / "snippets" / "t" / "link.py").symlink_to(outside)
    kb = make(tmp_path, page(claim(id="c", status="verified", test=test)), {"snippets/t/_helpers.py": SNIPPET})
    assert re.search(rf"docs/topics/t.md:10: .*{re.escape(words)}", errors(kb)), errors(kb)


def test_parametrized_ids_are_accepted(tmp_path):
    cf = 'shift=-5 "若平移 -5"'
    kb = make(
        tmp_path,
        page(
            claim(id="c", status="verified", test="snippets/t/m.py::test_param[2]", counterfactual=cf),
            claim(id="d", status="verified", test="snippets/t/m.py::test_param", counterfactual=cf),
        ),
    )
    assert not kb.errors, errors(kb)
    c, d = kb.claim_by_id["c"].test, kb.claim_by_id["d"].test
    assert c.matches("snippets/t/m.py::test_param[2]") and not c.matches("snippets/t/m.py::test_param[1]")
    assert d.matches("snippets/t/m.py::test_param[1]") and not d.matches("snippets/t/m.py::test_paramx")


def test_claim_fields_are_checked(tmp_path):
    kb = make(
        tmp_path,
        page(
            claim(id="dup", status="verified", test="snippets/t/m.py::test_f"),
            claim(id="dup", status="verified", test="snippets/t/m.py::test_f"),
            claim(id="no-status", test="snippets/t/m.py::test_f"),
            claim(id="Bad_ID", status="verified", test="snippets/t/m.py::test_f"),
            claim(id="no-test", status="qualified"),
            claim(id="open-silent", status="open"),
            claim(id="weird", status="maybe", test="snippets/t/m.py::test_f"),
        ),
    )
    e = errors(kb)
    for words in (
        "claim id 'dup' is already used at docs/topics/t.md:7",
        "claim 'no-status' has no status",
        "id must be lowercase",
        "claim 'no-test' is qualified but names no test",
        "claim 'open-silent' is open: say what is missing",
        "unknown status 'maybe'",
    ):
        assert words in e, e


def test_blocks_are_top_level_and_answers_answer_something(tmp_path):
    kb = make(tmp_path, page('- item\n\n    !!! claim "nested"\n        id: n\n', '!!! answer "nothing"\n    Body.\n'))
    assert "a claim block must start at the beginning of the line" in errors(kb)
    assert "answer 'nothing' answers nothing" in errors(kb)


def test_posts_need_a_date_one_per_day_and_unique_slugs(tmp_path):
    kb = make(
        tmp_path,
        page(),
        {
            "docs/journal/posts/copy.md": POST,
            "docs/journal/posts/undated.md": "---\nslug: x\n---\n# x\n",
            "docs/journal/posts/2026-01-01.md": '---\ndate: 2026-01-01\nslug: "20251231"\n---\n# y\n',
            "docs/journal/posts/2026-01-02.md": "---\ndate: 2026-01-02\ncategories: [RLHF]\n---\n# z\n",
        },
    )
    e = errors(kb)
    assert re.search(
        r"docs/journal/posts/(copy|2025-12-31)\.md:1: a second post for 2025-12-31: "
        r"docs/journal/posts/(copy|2025-12-31)\.md has that date",
        e,
    ), e
    assert "docs/journal/posts/undated.md:1: a journal post needs a date" in e
    assert re.search(r"slug '20251231' is already used by docs/journal/posts/", e), e
    assert "docs/journal/posts/2026-01-02.md:1: category 'RLHF' is not one of the topics" in e


def test_invalid_front_matter_is_an_error_with_file_and_line(tmp_path):
    kb = make(tmp_path, "---\ntitle: [broken\n---\n# T\n")
    assert "docs/topics/t.md:3: front matter is not valid YAML" in errors(kb)


def test_includes_come_only_from_snippets(tmp_path):
    (tmp_path / "snippets" / "t").mkdir(parents=True)
    (tmp_path / "snippets" / "t" / "etc").symlink_to("/etc")
    body = (
        '```python\n--8<-- ".git/config"\n```\n\n```python\n--8<-- "snippets/t/etc/passwd"\n```\n\n'
        '```python\n--8<-- "snippets/t/m.py:nope"\n```\n'
    )
    kb = make(tmp_path, page(body))
    e = errors(kb)
    assert "docs/topics/t.md:8: include of .git/config is outside snippets/" in e
    assert "docs/topics/t.md:12: include of snippets/t/etc/passwd is outside snippets/" in e
    assert "docs/topics/t.md:16: include of snippets/t/m.py:nope: no section 'nope'" in e


def test_a_note_in_the_journal_is_never_a_claim(tmp_path):
    note = POST + '\n!!! claim "written in a note"\n    id: sneaky\n    status: verified\n'
    kb = make(tmp_path, page(), {"docs/journal/posts/2025-12-31.md": note})
    assert not kb.errors and not kb.claims


class Tags(HTMLParser):
    """Every element and attribute of a page: what a browser would run or follow."""

    def __init__(self):
        super().__init__()
        self.names, self.attrs = [], []

    def handle_starttag(self, tag, attrs):
        self.names.append(tag)
        self.attrs += attrs


HOSTILE = [
    "<script>alert(1)</script>",
    "x](javascript:alert(1))",
    "[a](javascript:alert(2))",
    "y {: onclick=alert(3)}",
    "`<img src=x onerror=alert(4)>`",
    "z {: .x onerror=alert(5) }",
    r"\(x\) and $a<b$",
]


def as_html(site: Site, md_text: str) -> str:
    return site.markdown().convert(md_text)


@pytest.mark.parametrize("title", HOSTILE)
def test_hostile_titles_render_as_text_on_every_generated_page(tmp_path, title):
    kb = make(
        tmp_path,
        page(
            claim(
                id="c",
                status="verified",
                test="snippets/t/m.py::test_f",
                title=title,
                counterfactual='g=two "若 f 返回 2"',
                answers='20251231 "为什么使用double-Q" answered',
            )
        ),
    )
    assert not kb.errors, errors(kb)
    site = Site.load(kb.project)  # the extensions and URLs of the real mkdocs.yml
    layout = site.layout
    pages = {
        "claims": render.claims_page(kb, layout, site.href),
        "questions": render.questions_page(kb, layout),
        "topic": render.page_markdown(kb, layout, kb.pages["topics/t.md"], kb.pages["topics/t.md"].doc.body),
        "post": render.page_markdown(kb, layout, kb.posts["20251231"], kb.posts["20251231"].doc.body),
    }
    for name, md_text in pages.items():
        out = as_html(site, md_text.split("---\n", 2)[-1] if md_text.startswith("---") else md_text)
        tags = Tags()
        tags.feed(out)
        assert "script" not in tags.names, (name, out)
        bad = [
            (k, v) for k, v in tags.attrs if k.startswith("on") or (v or "").strip().lower().startswith("javascript:")
        ]
        assert not bad, (name, bad)
    if "$" not in title:  # and the title still reads as written
        visible = html.unescape(re.sub(r"<[^>]+>", "", as_html(site, pages["claims"])))
        assert title.strip("`") in visible, (title, visible)


def test_a_malformed_claim_header_is_an_error(tmp_path):
    kb = make(tmp_path, page('!!! claim "a "quoted" title"\n    id: q\n'))
    assert 'docs/topics/t.md:7: a claim header must read: !!! claim "<one sentence' in errors(kb), errors(kb)
