"""The journal keeps the learner's notes verbatim; `kb new` adds to it and never loses a note."""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import os
import re
import shutil
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import frontmatter
import pytest
from conftest import ENV, PROJECT, ROOT, kb, mkdocs_build, run_pytest, text_of

from kb import journal as jn

SEED = ROOT / "seed" / "learning-notes.md"
SEED_SHA256 = "4bba65836b53923ecfaec93926744df9d192a5703558114f85935840a62f5607"  # see seed/README.md


def seed_sections() -> dict[str, str]:
    """The seed split at its top-level headings: {'20251230': '# 20251230\\n...', ...}."""
    parts = re.split(r"(?m)^(?=# )", text_of(SEED))
    return {p.split("\n", 1)[0][2:].strip(): p for p in parts if p.startswith("# ")}


def dated(sections: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in sections.items() if re.fullmatch(r"\d{8}", k)}


def post_file(root: Path, key: str) -> Path:
    return root / "docs" / "journal" / "posts" / f"{key[:4]}-{key[4:6]}-{key[6:]}.md"


def check_verbatim(root: Path) -> list[str]:
    """Each seed section is the start of its post's body, byte for byte; later sections may follow."""
    problems = []
    for key, text in dated(seed_sections()).items():
        post = frontmatter.load(post_file(root, key))
        raw = text_of(post_file(root, key))
        body = raw[raw.index("\n# ", 3) + 1 :] if raw.startswith("---") else raw
        if not body.startswith(text):
            problems.append(f"{key}: the post's body does not start with the seed's section")
        if post["date"] != dt.date(int(key[:4]), int(key[4:6]), int(key[6:])) or str(post["slug"]) != key:
            problems.append(f"{key}: wrong date or slug")
    return problems


def test_the_committed_seed_is_the_learners_original():
    assert hashlib.sha256(SEED.read_bytes()).hexdigest() == SEED_SHA256
    assert len(dated(seed_sections())) == 3


def test_every_dated_section_is_a_post_with_its_text_verbatim():
    assert check_verbatim(ROOT) == []


def test_hard_line_breaks_survive():
    post = text_of(post_file(ROOT, "20251231"))
    assert post.count("  \n") == seed_sections()["20251231"].count("  \n") >= 5


def test_categories_are_topics_and_cover_the_content(model):
    expected = {
        "20251230": {"SAC"},
        "20251231": {"SAC", "NeoVerse"},
        "20260101": {"DPO", "GRPO", "Flow Matching", "Flow-GRPO"},
    }
    for key, cats in expected.items():
        assert set(model.posts[key].categories) >= cats  # the learner may add topics
    for post in model.posts.values():
        assert set(post.categories) <= set(PROJECT.allowed_topics)


def test_preamble_is_on_the_home_page():
    preamble = next(v for k, v in seed_sections().items() if k.startswith("Learning Notes"))
    home = text_of(ROOT / "docs" / "index.md")
    for line in preamble.strip().split("\n"):
        assert line.strip() in home, line


# ---- writing a note never breaks the suite ---------------------------------------------------


def test_notes_written_later_leave_the_checks_green_and_appear_in_the_site(mini_project):
    # Append a section to a seed day, add a topic to it, quote homework code that does not run.
    r = kb(
        mini_project,
        "new",
        "--date",
        "2025-12-31",
        "--topic",
        "DPO",
        stdin=(
            "今天重读了 critic 的作业代码：\n\n```python\nloss = critic_loss(q_values, target)  # 作业里的函数\n```\n\n"
            ">>> not a doctest either\n"
        ),
    )
    assert r.returncode == 0, r.stderr
    assert check_verbatim(mini_project) == []
    result = run_pytest(mini_project, "docs/journal", "tests/test_pages.py")
    assert result.returncode == 0, result.stdout[-3000:]
    # ... and a new day's note appears in the built site, its question gathered as open.
    r = kb(mini_project, "new", "--date", "2026-01-02", "--topic", "DPO", "-m", "DPO 的 β 越大，越靠近参考策略？")
    assert r.returncode == 0, r.stderr
    build = mkdocs_build(mini_project, mini_project / "site")
    assert build.returncode == 0, build.stdout + build.stderr
    page = text_of(next((mini_project / "site" / "journal").glob("2025/12/31/*/index.html")))
    shown = html.unescape(re.sub(r"<[^>]+>", "", page))
    assert "loss = critic_loss(q_values, target)  # 作业里的函数" in shown and "日志原文，未执行" in shown
    site = mini_project / "site"
    assert "DPO 的 β 越大，越靠近参考策略？" in text_of(site / "journal/2026/01/02/20260102/index.html")
    assert "DPO 的 β 越大，越靠近参考策略？" in text_of(site / "questions/index.html")
    assert "20260102" in text_of(site / "journal/category/dpo/index.html")


# ---- kb new ---------------------------------------------------------------------------------


@pytest.fixture
def journal(tmp_path) -> Path:
    """An empty project: mkdocs.yml and an empty journal."""
    (tmp_path / "docs" / "journal" / "posts").mkdir(parents=True)
    shutil.copy2(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    return tmp_path


def posts_of(root: Path) -> Path:
    return root / "docs" / "journal" / "posts"


def test_new_creates_the_post_with_front_matter(journal):
    r = kb(journal, "new", "--date", "2026-01-02", "--topic", "DPO", "--topic", "GRPO", "-m", "今天复习 DPO。")
    assert r.returncode == 0, r.stderr
    path = posts_of(journal) / "2026-01-02.md"
    assert r.stdout.strip() == "docs/journal/posts/2026-01-02.md"
    post = frontmatter.load(path)
    assert post["date"] == dt.date(2026, 1, 2) and str(post["slug"]) == "20260102"
    assert post["categories"] == ["DPO", "GRPO"]
    assert post.content == "# 20260102\n\n今天复习 DPO。"


def test_new_finds_the_project_from_a_subfolder_and_reads_stdin(journal):
    r = kb(posts_of(journal), "new", stdin="从标准输入来的笔记\n")
    assert r.returncode == 0, r.stderr
    assert "从标准输入来的笔记" in text_of(posts_of(journal) / f"{dt.date.today().isoformat()}.md")


def test_new_appends_a_section_and_keeps_the_old_text_as_a_prefix(journal):
    assert kb(journal, "new", "--date", "2026-01-02", "--topic", "DPO", "-m", "第一条  \n第二行").returncode == 0
    path = posts_of(journal) / "2026-01-02.md"
    before = text_of(path)
    r = kb(journal, "new", "--date", "2026-01-02", "--topic", "GRPO", "-m", "补充的内容")
    assert r.returncode == 0, r.stderr
    after = text_of(path)
    assert after.split("---\n", 2)[2].startswith(before.split("---\n", 2)[2]), "the existing text changed"
    assert re.search(r"\n\n## 补充 \d\d:\d\d\n\n补充的内容\n$", after)
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
def test_new_refuses_bad_input_in_one_line_and_writes_nothing(journal, args, message):
    before = sorted(journal.rglob("*"))
    r = kb(journal, "new", *(["--date", "2026-01-03"] if "--date" not in args else []), *args, "-m", "x")
    assert r.returncode == 2 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert r.stdout == "" and sorted(journal.rglob("*")) == before


def test_the_topics_are_listed_by_help(journal):
    r = kb(journal, "new", "--help")
    assert r.returncode == 0 and all(f"'{t}'" in r.stdout for t in PROJECT.allowed_topics), r.stdout


def run_many(n: int, args) -> list[subprocess.CompletedProcess]:
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(args, range(n)))


@pytest.mark.parametrize("exists", [True, False], ids=["append", "create"])
def test_twenty_concurrent_notes_are_all_kept(journal, exists):
    path = posts_of(journal) / "2026-01-08.md"
    if exists:
        assert kb(journal, "new", "--date", "2026-01-08", "-m", "第 0 条").returncode == 0
    results = run_many(
        20,
        lambda i: kb(
            journal, "new", "--date", "2026-01-08", "--topic", ["SAC", "DPO", "GRPO"][i % 3], "-m", f"并发笔记 #{i:02d}"
        ),
    )
    assert [r.returncode for r in results] == [0] * 20, [r.stderr for r in results if r.returncode]
    text = text_of(path)
    assert sorted(re.findall(r"并发笔记 #(\d\d)", text)) == [f"{i:02d}" for i in range(20)]
    assert set(frontmatter.load(path)["categories"]) == {"SAC", "DPO", "GRPO"}
    assert not [p.name for p in posts_of(journal).iterdir() if p.name.endswith(".tmp")]


FRONT_MATTERS = {
    "dots": (
        '---\ndate: 2026-01-09\nslug: "20260109"  # keep me\ncategories:\n- SAC\n...\n',
        '---\ndate: 2026-01-09\nslug: "20260109"  # keep me\ncategories:\n- SAC\n- DPO\n...\n',
    ),
    "scalar": (
        "---\ndate: 2026-01-09\ncategories: SAC # one topic\n---\n",
        "---\ndate: 2026-01-09\ncategories: [SAC, DPO] # one topic\n---\n",
    ),
    "flow": (
        "---\ndate: 2026-01-09\ncategories: [SAC]\nslug: x\n---\n",
        "---\ndate: 2026-01-09\ncategories: [SAC, DPO]\nslug: x\n---\n",
    ),
    "none": (
        "---\ndate: 2026-01-09\n# a comment\n---\n",
        "---\ndate: 2026-01-09\n# a comment\ncategories:\n  - DPO\n---\n",
    ),
    "indented": (
        "---\ndate: 2026-01-09\ncategories:\n    - SAC\n    - NeoVerse\ntags: [a]\n---\n",
        "---\ndate: 2026-01-09\ncategories:\n    - SAC\n    - NeoVerse\n    - DPO\ntags: [a]\n---\n",
    ),
}


@pytest.mark.parametrize("name", FRONT_MATTERS)
def test_adding_a_topic_changes_only_the_categories(journal, name):
    old, new = FRONT_MATTERS[name]
    path = posts_of(journal) / "2026-01-09.md"
    path.write_text(old + "# 20260109\n原文\n", encoding="utf-8")
    r = kb(journal, "new", "--date", "2026-01-09", "--topic", "DPO", "-m", "新的一段")
    assert r.returncode == 0, r.stderr
    assert text_of(path).startswith(new + "# 20260109\n原文\n"), text_of(path)


@pytest.mark.parametrize(
    "text, words",
    [
        ("---\ndate: 2026-01-04\ncategories: [SAC\n---\n# 20260104\n原文\n", "front matter is not valid YAML"),
        ("---\n- a list\n---\n# x\n", "front matter must be a mapping"),
        ("# no front matter\n", "no front matter"),
        ("---\ndate: 2026-01-04\ncategories: {a: 1}\n---\n# x\n", "categories must be"),
    ],
)
def test_a_broken_post_is_refused_with_file_and_line_and_left_as_it_was(journal, text, words):
    path = posts_of(journal) / "2026-01-04.md"
    path.write_text(text, encoding="utf-8")
    r = kb(journal, "new", "--date", "2026-01-04", "--topic", "DPO", "-m", "新的一段")
    assert r.returncode == 2 and "docs/journal/posts/2026-01-04.md" in r.stderr and words in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and text_of(path) == text


def fake_editor(tmp_path: Path, script: str) -> Path:
    editor = tmp_path / "fake-editor"
    editor.write_text("#!/bin/sh\n" + script)
    editor.chmod(0o755)
    return editor


def test_new_edit_uses_the_editor(journal, tmp_path):
    editor = fake_editor(tmp_path, "printf '在编辑器里写的笔记\\n' > \"$1\"\n")
    r = kb(journal, "new", "--date", "2026-01-05", "--edit", EDITOR=str(editor))
    assert r.returncode == 0, r.stderr
    assert "在编辑器里写的笔记" in text_of(posts_of(journal) / "2026-01-05.md")


@pytest.mark.parametrize(
    "editor, words",
    [("", "needs $EDITOR"), ("vim '", "cannot be read as a command"), ("no-such-editor-kb", "not there")],
)
def test_a_missing_or_broken_editor_is_refused_before_typing(journal, editor, words):
    r = kb(journal, "new", "--date", "2026-01-06", "--edit", EDITOR=editor, VISUAL="")
    assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (posts_of(journal) / "2026-01-06.md").exists()


def test_edit_refuses_a_broken_post_before_the_editor_opens(journal, tmp_path):
    path = posts_of(journal) / "2026-01-04.md"
    path.write_text("---\ndate: [broken\n---\n# x\n", encoding="utf-8")
    opened = tmp_path / "opened"
    editor = fake_editor(tmp_path, f"touch {opened}\nprintf 'typed' > \"$1\"\n")
    r = kb(journal, "new", "--date", "2026-01-04", "--edit", EDITOR=str(editor))
    assert r.returncode == 2 and "front matter" in r.stderr
    assert not opened.exists(), "the editor opened although the note could not be added"


def recovered(stderr: str) -> Path:
    m = re.search(r"your note is kept in (\S+)$", stderr.strip())
    assert m, stderr
    return Path(m.group(1))


def test_a_note_the_editor_saved_as_latin1_is_kept(journal, tmp_path):
    editor = fake_editor(tmp_path, "printf 'caf\\351 note' > \"$1\"\n")  # Latin-1 é
    r = kb(journal, "new", "--date", "2026-01-05", "--edit", EDITOR=str(editor))
    assert r.returncode == 2 and "not UTF-8" in r.stderr and "Traceback" not in r.stderr
    assert recovered(r.stderr).read_bytes() == b"caf\xe9 note"
    assert not (posts_of(journal) / "2026-01-05.md").exists()


def test_invalid_utf8_on_stdin_leaves_nothing_in_the_journal_and_keeps_the_note(journal):
    r = kb(journal, "new", "--date", "2026-01-05", stdin=b"bad \xff\xfe bytes")
    assert r.returncode == 2 and "not UTF-8" in r.stderr
    assert list(posts_of(journal).iterdir()) in ([], [posts_of(journal) / jn.LOCK_NAME])
    assert recovered(r.stderr).read_bytes() == b"bad \xff\xfe bytes"


def test_a_failed_write_leaves_the_post_intact_no_temp_file_and_keeps_the_note(journal, monkeypatch, capsys):
    from kb import cli

    assert kb(journal, "new", "--date", "2026-01-07", "-m", "原文").returncode == 0
    path = posts_of(journal) / "2026-01-07.md"
    before = text_of(path)

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    monkeypatch.chdir(journal)
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # replaced below
    monkeypatch.setattr(cli, "_read_body", lambda args: cli.Typed("新的一段", precious=True))
    assert cli.main(["new", "--date", "2026-01-07"]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "the post is unchanged" in err
    assert text_of(path) == before
    assert sorted(p.name for p in posts_of(journal).iterdir() if not p.name.startswith(".kb")) == ["2026-01-07.md"]
    assert text_of(recovered(err)) == "新的一段"


def test_modes_new_posts_are_0644_and_an_append_keeps_the_mode(journal):
    assert kb(journal, "new", "--date", "2026-01-10", "-m", "a").returncode == 0
    path = posts_of(journal) / "2026-01-10.md"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    path.chmod(0o640)
    assert kb(journal, "new", "--date", "2026-01-10", "-m", "b").returncode == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_a_read_only_journal_is_refused_in_one_line(journal):
    posts = posts_of(journal)
    cmd = [sys.executable, "-m", "kb.cli", "new", "--date", "2026-01-11", "-m", "x"]
    if os.geteuid() == 0:  # root ignores permission bits: make the folder a read-only mount
        can_mount = subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0
        assert can_mount, "as root this test needs `unshare -m` (a private mount namespace) to make a folder read-only"
        cmd = ["unshare", "-m", "sh", "-c", f'mount --bind -o ro "{posts}" "{posts}" && exec "$@"', "sh", *cmd]
    else:
        posts.chmod(0o555)
    try:
        r = subprocess.run(
            cmd, cwd=journal, env={**ENV, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, input="", timeout=60
        )
    finally:
        posts.chmod(0o755)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "docs/journal/posts" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_a_symlinked_post_is_not_followed(journal, tmp_path):
    target = tmp_path / "elsewhere.md"
    target.write_text("---\ndate: 2026-01-12\n---\n# secret\n", encoding="utf-8")
    (posts_of(journal) / "2026-01-12.md").symlink_to(target)
    r = kb(journal, "new", "--date", "2026-01-12", "-m", "x")
    assert r.returncode == 2 and "not a regular file" in r.stderr
    assert text_of(target) == "---\ndate: 2026-01-12\n---\n# secret\n"


@pytest.mark.parametrize(
    "args, words",
    [
        (["--root", "/tmp", "claims"], "no mkdocs.yml there"),
        (["claims"], "not inside a Learning Notes project"),
    ],
)
def test_outside_a_project_kb_says_so_in_one_line(tmp_path, args, words):
    r = kb(tmp_path, *args)
    assert r.returncode == 2 and words in r.stderr and r.stderr.count("\n") == 1, r.stderr
