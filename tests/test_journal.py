"""The journal keeps the learner's notes verbatim; kb new adds to it safely."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path

import frontmatter
import pytest

from kb.journal import JournalError, new_note
from kb.knowledge import KnowledgeBase, split_front_matter
from kb.project import DOCS, JOURNAL_POSTS, MKDOCS_YML, ROOT, allowed_topics

SEED = ROOT.parent / "shared" / "seed" / "learning-notes.md"


def seed_sections() -> dict[str, str]:
    """The seed split at its top-level headings: {'20251230': '# 20251230\\n...', ...}."""
    text = SEED.read_text(encoding="utf-8")
    parts = re.split(r"(?m)^(?=# )", text)
    return {p.split("\n", 1)[0][2:].strip(): p for p in parts if p.startswith("# ")}


@pytest.fixture(scope="module")
def sections():
    if not SEED.is_file():
        pytest.fail(f"the seed notes are missing: {SEED}")
    return seed_sections()


def test_every_dated_section_is_a_post_with_its_text_verbatim(sections):
    dated = {k: v for k, v in sections.items() if re.fullmatch(r"\d{8}", k)}
    assert len(dated) == 3
    for key, text in dated.items():
        post = JOURNAL_POSTS / f"{key[:4]}-{key[4:6]}-{key[6:]}.md"
        raw = post.read_text(encoding="utf-8")
        meta, body_start = split_front_matter(raw)
        body = "\n".join(raw.split("\n")[body_start:])
        assert body == text, f"{post.name} differs from the seed's section {key}"
        assert meta["date"] == dt.date(int(key[:4]), int(key[4:6]), int(key[6:]))
        assert str(meta["slug"]) == key


def test_hard_line_breaks_survive(sections):
    post = (JOURNAL_POSTS / "2025-12-31.md").read_text(encoding="utf-8")
    assert post.count("  \n") == sections["20251231"].count("  \n") >= 5


def test_categories_are_topics_and_match_the_content():
    expected = {"20251230": {"SAC"}, "20251231": {"SAC", "NeoVerse"},
                "20260101": {"DPO", "GRPO", "Flow Matching", "Flow-GRPO"}}
    posts = KnowledgeBase().posts
    for key, cats in expected.items():
        assert set(posts[key].meta["categories"]) == cats
    for post in posts.values():
        assert set(post.meta["categories"]) <= set(allowed_topics())


def test_preamble_is_on_the_home_page(sections):
    preamble = next(v for k, v in sections.items() if k.startswith("Learning Notes"))
    home = (DOCS / "index.md").read_text(encoding="utf-8")
    for line in preamble.strip().split("\n"):
        assert line.strip() in home, line


def test_unknown_category_fails_the_build(project_copy):
    from conftest import mkdocs_build

    post = project_copy / "docs" / "journal" / "posts" / "2025-12-30.md"
    post.write_text(post.read_text(encoding="utf-8").replace("  - SAC", "  - RLHF"), encoding="utf-8")
    result = mkdocs_build(project_copy, project_copy / "site")
    assert result.returncode != 0
    assert "category 'RLHF' not in allow list" in result.stdout + result.stderr


# ---- kb new -----------------------------------------------------------------

@pytest.fixture
def journal(tmp_path):
    (tmp_path / "docs" / "journal" / "posts").mkdir(parents=True)
    (tmp_path / "mkdocs.yml").write_text(MKDOCS_YML.read_text(encoding="utf-8"), encoding="utf-8")
    return tmp_path


def kb_new(root: Path, *args: str, stdin: str | None = None, env: dict | None = None):
    return subprocess.run(
        [sys.executable, "-m", "kb.cli", "new", "--root", str(root), *args],
        input=stdin, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=60,
    )


def test_new_creates_the_post_with_front_matter(journal):
    r = kb_new(journal, "--date", "2026-01-02", "--topic", "DPO", "--topic", "GRPO", "-m", "今天复习 DPO。")
    assert r.returncode == 0, r.stderr
    path = journal / "docs/journal/posts/2026-01-02.md"
    assert r.stdout.strip() == str(path)
    post = frontmatter.load(path)
    assert post["date"] == dt.date(2026, 1, 2) and str(post["slug"]) == "20260102"
    assert post["categories"] == ["DPO", "GRPO"]
    assert post.content == "# 20260102\n\n今天复习 DPO。"


def test_new_defaults_to_today_and_reads_stdin(journal):
    r = kb_new(journal, stdin="从标准输入来的笔记\n")
    assert r.returncode == 0, r.stderr
    today = dt.date.today().isoformat()
    assert Path(r.stdout.strip()).name == f"{today}.md"
    assert "从标准输入来的笔记" in Path(r.stdout.strip()).read_text(encoding="utf-8")


def test_new_appends_a_section_and_never_loses_text(journal):
    assert kb_new(journal, "--date", "2026-01-02", "--topic", "DPO", "-m", "第一条  \n第二行").returncode == 0
    path = journal / "docs/journal/posts/2026-01-02.md"
    before = path.read_text(encoding="utf-8")
    r = kb_new(journal, "--date", "2026-01-02", "--topic", "GRPO", "-m", "补充的内容")
    assert r.returncode == 0, r.stderr
    after = path.read_text(encoding="utf-8")
    body_before = before.split("---\n", 2)[2]
    body_after = after.split("---\n", 2)[2]
    assert body_after.startswith(body_before.rstrip("\n")), "the existing text changed"
    assert re.search(r"\n## 补充 \d\d:\d\d\n\n补充的内容\n$", body_after)
    assert frontmatter.load(path)["categories"] == ["DPO", "GRPO"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--date", "2026-1-2"], "malformed date"),
        (["--date", "2026-02-30"], "malformed date"),
        (["--date", "yesterday"], "malformed date"),
        (["--topic", "sac"], "unknown topic 'sac' (did you mean 'SAC'?)"),
        (["--topic", "RLHF"], "unknown topic 'RLHF'"),
        (["--posts-dir", "/tmp"], "outside the journal"),
        (["--posts-dir", "docs/journal/posts/../../.."], "outside the journal"),
    ],
)
def test_new_refuses_bad_input_and_writes_nothing(journal, args, message):
    before = sorted(p for p in journal.rglob("*"))
    r = kb_new(journal, "--date", "2026-01-03", *args, "-m", "x") if "--date" not in args else kb_new(journal, *args, "-m", "x")
    assert r.returncode == 2
    assert message in r.stderr
    assert r.stdout == ""
    assert sorted(p for p in journal.rglob("*")) == before


def test_new_names_file_and_line_of_a_broken_post(journal):
    path = journal / "docs/journal/posts/2026-01-04.md"
    text = "---\ndate: 2026-01-04\ncategories: [SAC\n---\n# 20260104\n原文\n"
    path.write_text(text, encoding="utf-8")
    r = kb_new(journal, "--date", "2026-01-04", "-m", "新的一段")
    assert r.returncode == 2
    assert f"{path}:" in r.stderr and "front matter" in r.stderr
    assert path.read_text(encoding="utf-8") == text, "a broken post must be left as it was"


def test_new_edit_uses_editor(journal, tmp_path):
    editor = tmp_path / "fake-editor"
    editor.write_text("#!/bin/sh\nprintf '在编辑器里写的笔记\\n' > \"$1\"\n")
    editor.chmod(0o755)
    r = kb_new(journal, "--date", "2026-01-05", "--edit", env={"EDITOR": str(editor)})
    assert r.returncode == 0, r.stderr
    assert "在编辑器里写的笔记" in (journal / "docs/journal/posts/2026-01-05.md").read_text(encoding="utf-8")
    r = kb_new(journal, "--date", "2026-01-06", "--edit", env={"EDITOR": "", "VISUAL": ""})
    assert r.returncode == 2 and "EDITOR" in r.stderr
    assert not (journal / "docs/journal/posts/2026-01-06.md").exists()


def test_new_writes_atomically(journal, monkeypatch):
    # If the write fails half-way, the old post is intact and no temp file remains.
    posts = journal / "docs/journal/posts"
    new_note(posts, journal / "docs/journal", day=dt.date(2026, 1, 7), topics=["SAC"], body="原文", allowed=["SAC"])
    path = posts / "2026-01-07.md"
    before = path.read_text(encoding="utf-8")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        new_note(posts, journal / "docs/journal", day=dt.date(2026, 1, 7), topics=[], body="新", allowed=["SAC"])
    assert path.read_text(encoding="utf-8") == before
    assert [p.name for p in posts.iterdir()] == ["2026-01-07.md"]
    with pytest.raises(JournalError, match="empty note"):
        new_note(posts, journal / "docs/journal", day=dt.date(2026, 1, 7), topics=[], body="  \n", allowed=["SAC"])


def test_a_new_note_appears_in_the_built_site(project_copy):
    from conftest import mkdocs_build

    r = kb_new(project_copy, "--date", "2026-01-02", "--topic", "DPO", "-m", "DPO 的 β 越大，越靠近参考策略？")
    assert r.returncode == 0, r.stderr
    result = mkdocs_build(project_copy, project_copy / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    post = project_copy / "site" / "journal" / "2026" / "01" / "02" / "20260102" / "index.html"
    assert "DPO 的 β 越大，越靠近参考策略？" in post.read_text(encoding="utf-8")
    questions = (project_copy / "site" / "questions" / "index.html").read_text(encoding="utf-8")
    assert "DPO 的 β 越大，越靠近参考策略？" in questions  # its question is gathered as open
    category = (project_copy / "site" / "journal" / "category" / "dpo" / "index.html").read_text(encoding="utf-8")
    assert "20260102" in category
