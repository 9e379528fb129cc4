"""A second reader's attacks on "a note appended any day, by any means, is never lost and never
breaks the suite" (README, Day to day / Growing). Each test is an attack that broke an earlier
version; the attacks that held are listed in the report, with the existing test that keeps them."""

from __future__ import annotations

import html
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ENV, ROOT, build_in_process, text_of
from filelock import FileLock

from kb import journal as jn
from kb import sources

POSTS = Path("docs/journal/posts")


def posts_of(root: Path) -> Path:
    return root / POSTS


def kept_notes(root: Path) -> list[bytes]:
    folder = root / ".kb" / "recovered"
    return [p.read_bytes() for p in sorted(folder.iterdir())] if folder.is_dir() else []


# ---- an unclosed code fence in one note swallowed every later note -----------------------------


@pytest.mark.parametrize("fence", ["```", "~~~~", "  ```"])
def test_a_note_that_leaves_a_fence_open_does_not_swallow_the_next_note(mini_project, kb_here, fence):
    """A note ending inside a code block (a pasted snippet without its closing fence): the next
    note's section was appended inside that block, shown as code, its question never gathered."""
    first = f"贴了一段代码：\n\n{fence}python\nx = 1\n"
    assert kb_here(mini_project, "new", "--date", "2026-01-02", "--topic", "SAC", stdin=first).returncode == 0
    r = kb_here(mini_project, "new", "--date", "2026-01-02", "--topic", "SAC", "-m", "后来的问题：为什么要两个 Q？")
    assert r.returncode == 0, r.stderr
    text = text_of(posts_of(mini_project) / "2026-01-02.md")
    assert first in text  # the first note, byte for byte
    lines = text.split("\n")
    later = next(i for i, line in enumerate(lines) if "后来的问题" in line)
    heading = next(i for i, line in enumerate(lines) if line.startswith("## 补充 "))
    in_code = sources.fenced(lines)
    assert not in_code[later] and not in_code[heading], text
    questions = kb_here(mini_project, "questions")
    assert "后来的问题：为什么要两个 Q？" in questions.stdout, questions.stdout + questions.stderr


def test_a_hand_edited_post_left_inside_a_fence_gets_its_fence_closed_before_an_import(mini_project, kb_here, tmp_path):
    post = posts_of(mini_project) / "2026-01-02.md"
    post.write_text('---\ndate: 2026-01-02\nslug: "20260102"\n---\n# 20260102\n\n````text\nlog\n', encoding="utf-8")
    notes = tmp_path / "2026-01-02.md"
    notes.write_text("导入的笔记：这个会被吞掉吗？\n", encoding="utf-8")
    assert kb_here(mini_project, "import", str(notes)).returncode == 0
    lines = text_of(post).split("\n")
    assert lines[:8] == ["---", "date: 2026-01-02", 'slug: "20260102"', "---", "# 20260102", "", "````text", "log"]
    imported = lines.index("导入的笔记：这个会被吞掉吗？")
    assert not sources.fenced(lines)[imported], lines
    assert kb_here(mini_project, "import", str(notes)).returncode == 0  # twice: nothing added
    assert text_of(post).count("导入的笔记") == 1


# ---- a day's post under another name: kb new made a second post for the day ------------------------

OTHER_NAMES = {
    "sac-notes.md": "---\ndate: 2026-01-02\ncategories:\n  - SAC\n---\n# 20260102\n手写的帖子\n",
    "2026/jan-3.md": "---\ndate: 2026-01-03 21:30:00\n---\n# 20260103\n子文件夹里的帖子\n",
    "2026-01-04.md": "---\ndate:\n  created: 2026-01-05\n---\n# 20260105\n文件名写错了一天\n",
}


def test_a_days_post_the_learner_named_otherwise_gets_the_note(mini_project, kb_here):
    """The build allows one post per day (any file name, any folder under posts/); kb new looked
    only at posts/<day>.md, so it made a second post for the day and the strict build failed."""
    for name, text in OTHER_NAMES.items():
        (posts_of(mini_project) / name).parent.mkdir(parents=True, exist_ok=True)
        (posts_of(mini_project) / name).write_text(text, encoding="utf-8")
    for day, name in (("2026-01-02", "sac-notes.md"), ("2026-01-03", "2026/jan-3.md"), ("2026-01-05", "2026-01-04.md")):
        r = kb_here(mini_project, "new", "--date", day, "--topic", "DPO", "-m", f"{day} 的新笔记")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == (POSTS / name).as_posix()
        text = text_of(posts_of(mini_project) / name)
        assert text.startswith(OTHER_NAMES[name].split("---\n", 2)[0]) and f"{day} 的新笔记" in text
        assert text.endswith(OTHER_NAMES[name].split("---\n", 2)[2] + f"\n## {text.rsplit('## ', 1)[1]}")
    assert not (posts_of(mini_project) / "2026-01-02.md").exists()
    assert not (posts_of(mini_project) / "2026-01-05.md").exists()
    # posts/2026-01-04.md is the post of 2026-01-05: a note for 2026-01-04 has no file to go to
    before = text_of(posts_of(mini_project) / "2026-01-04.md")
    r = kb_here(mini_project, "new", "--date", "2026-01-04", "--topic", "DPO", stdin="四号的笔记\n")
    assert r.returncode == 2 and len(r.stderr.strip().split("\n")) == 1, r.stderr
    assert "docs/journal/posts/2026-01-04.md:2: " in r.stderr and "2026-01-05" in r.stderr, r.stderr
    assert text_of(posts_of(mini_project) / "2026-01-04.md") == before
    assert kept_notes(mini_project) == ["四号的笔记\n".encode()]
    build = build_in_process(mini_project, mini_project / "site")
    assert build.returncode == 0, build.stderr[-3000:]


def test_two_posts_for_one_day_are_named_and_nothing_is_added(mini_project, kb_here):
    for name in ("a.md", "b.md"):
        (posts_of(mini_project) / name).write_text("---\ndate: 2026-01-02\n---\n# x\n", encoding="utf-8")
    r = kb_here(mini_project, "new", "--date", "2026-01-02", "-m", "笔记")
    assert r.returncode == 2 and "docs/journal/posts/a.md" in r.stderr and "docs/journal/posts/b.md" in r.stderr
    assert sorted(p.name for p in posts_of(mini_project).glob("*.md"))[-2:] == ["a.md", "b.md"]


# ---- kb new stopped while it waits for the journal: the typed note went with it ---------------------


def fake_editor(folder: Path, script: str) -> Path:
    editor = folder / "fake-editor"
    editor.write_text("#!/bin/sh\n" + script, encoding="utf-8")
    editor.chmod(0o755)
    return editor


def kb_process(root: Path, *args: str, **env: str) -> subprocess.Popen:
    """`kb ...` in its own process, SIGINT as from a terminal (a background test run inherits it ignored)."""
    return subprocess.Popen(
        [sys.executable, "-m", "kb.cli", *args],
        cwd=root,
        env={**ENV, "PYTHONPATH": str(ROOT), **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


@pytest.mark.parametrize("sig", ["INT", "TERM", "HUP", "KILL"])
def test_a_note_typed_in_the_editor_survives_kb_new_being_stopped_while_it_waits(mini_project, tmp_path, sig):
    """Another kb command holds the journal; the learner has typed the note and, while kb new waits
    for the lock, presses Ctrl-C, closes the terminal, or the process is killed. Ctrl-C said
    "interrupted; nothing written" and dropped the note; SIGTERM/SIGHUP/SIGKILL dropped it silently."""
    note = f"在编辑器里写了很久的笔记（{sig}）\n"
    # the editor saves the note and exits; 0.5 s later (kb new is waiting for the lock) kb new is stopped
    editor = fake_editor(tmp_path, f"printf '%s' '{note}' > \"$1\"\n(sleep 0.5; kill -{sig} $PPID) &\n")
    with FileLock(str(posts_of(mini_project) / jn.LOCK_NAME)):
        proc = kb_process(mini_project, "new", "--date", "2026-01-02", "--topic", "SAC", "--edit", EDITOR=str(editor))
        out, err = proc.communicate(timeout=30)  # well under the lock's 60 s: the signal ended it
    assert proc.returncode != 0 and not (posts_of(mini_project) / "2026-01-02.md").exists(), err
    assert kept_notes(mini_project) == [note.encode()], err
    if sig != "KILL":  # a killed process says nothing; every other stop names where the note is
        assert len(err.strip().split("\n")) == 1 and "your note is kept in" in err and "Traceback" not in err, err


def test_a_note_the_editor_has_saved_is_kept_when_kb_new_is_stopped_while_it_is_open(mini_project, tmp_path):
    note = "写到一半的笔记\n"
    editor = fake_editor(tmp_path, f"printf '%s' '{note}' > \"$1\"\nkill -TERM $PPID\nsleep 2\n")
    proc = kb_process(mini_project, "new", "--date", "2026-01-02", "--edit", EDITOR=str(editor))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and "your note is kept in" in err, err
    assert kept_notes(mini_project) == [note.encode()]


def test_an_added_note_leaves_nothing_in_recovered(mini_project, kb_here):
    assert kb_here(mini_project, "new", "--date", "2026-01-02", stdin="一条\n").returncode == 0
    assert kb_here(mini_project, "new", "--date", "2026-01-02", "-m", "两条").returncode == 0
    assert kept_notes(mini_project) == []


# ---- a link in a note to a page that is not there failed the strict build ----------------------------

LINKS_NOTE = """\
读了 [不存在的页面](missing.md)、![没有的图](img/nope.png) 和 [项目配置](../../../../mkdocs.yml)。
还有 [首页](../../index.md)、[外部](https://arxiv.org/abs/1801.01290) 与 [博客地址](../2025/12/31/20251231/)。
锚点：[本页](#no-such-heading)、[首页的某节](../../index.md#no-such-anchor)。
引用式：[参考][r1]

[r1]: ../../gone.md
"""


def test_a_note_linking_to_a_missing_page_image_or_anchor_does_not_fail_the_strict_build(mini_project, kb_here):
    """The learner's links are their words (pages get renamed after a note is written, imported
    notes link to files left behind): the build shows a link whose target is missing as typed."""
    for day in ("2026-01-02", "2025-12-31"):  # a new post, and a section appended to a seed post
        r = kb_here(mini_project, "new", "--date", day, "--topic", "SAC", stdin=LINKS_NOTE)
        assert r.returncode == 0, r.stderr
        assert LINKS_NOTE.rstrip("\n") in text_of(posts_of(mini_project) / f"{day}.md")
    build = build_in_process(mini_project, mini_project / "site")
    assert build.returncode == 0, build.stderr[-3000:]
    page = text_of(mini_project / "site" / "journal" / "2026" / "01" / "02" / "20260102" / "index.html")
    shown = html.unescape(re.sub(r"<[^>]+>", "", page))
    for typed in ("[不存在的页面](missing.md)", "![没有的图](img/nope.png)", "[项目配置](../../../../mkdocs.yml)"):
        assert typed in shown, typed
    assert re.search(r'<a href="[./]*"[^>]*>首页</a>', page), "a link to a page that exists stays a link"
    assert '<a href="https://arxiv.org/abs/1801.01290"' in page


# ---- kb import: a short note whose words the post already had somewhere was dropped ---------------------


def test_an_imported_note_whose_text_is_part_of_a_line_of_the_post_is_added(mini_project, kb_here, tmp_path):
    """kb import skipped a section when its text occurred anywhere in the post ("already there"), so a
    short note ("复习 SAC") was dropped for a day whose post had a line "今天复习 SAC 的 critic"."""
    r = kb_here(mini_project, "new", "--date", "2026-01-02", "--topic", "SAC", "-m", "今天复习 SAC 的 critic")
    assert r.returncode == 0, r.stderr
    notes = tmp_path / "2026-01-02.md"
    notes.write_text("复习 SAC\n", encoding="utf-8")
    r = kb_here(mini_project, "import", str(notes))
    assert r.returncode == 0 and "appended to" in r.stdout, r.stdout + r.stderr
    assert text_of(posts_of(mini_project) / "2026-01-02.md").endswith("## 导入自 2026-01-02.md\n\n复习 SAC\n")
    again = kb_here(mini_project, "import", str(notes))  # twice: the section is there now
    assert again.returncode == 0 and "already in" in again.stdout, again.stdout + again.stderr
    assert text_of(posts_of(mini_project) / "2026-01-02.md").count("复习 SAC\n") == 1


# ---- a post saved with Windows line ends (and a BOM) was rewritten whole by an append -------------------


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"], ids=["crlf", "bom-crlf"])
def test_an_append_keeps_a_windows_post_byte_for_byte(mini_project, kb_here, bom):
    """kb new and kb import rewrote every line end of a CRLF post (and dropped its BOM): the learner's
    text was unchanged for MkDocs, but every line of it changed for git and for the editor that saved it."""
    post = posts_of(mini_project) / "2026-01-02.md"
    old = (
        bom
        + '---\r\ndate: 2026-01-02\r\nslug: "20260102"\r\ncategories:\r\n  - SAC\r\n---\r\n# 20260102\r\n原文\r\n'.encode()
    )
    post.write_bytes(old)
    r = kb_here(mini_project, "new", "--date", "2026-01-02", "--topic", "SAC", stdin="新的一段\n第二行\n")
    assert r.returncode == 0, r.stderr
    new = post.read_bytes()
    assert new.startswith(old) and new.endswith("\r\n新的一段\r\n第二行\r\n".encode()), new
    assert b"\n" not in new.replace(b"\r\n", b"")


# ---- kb new killed at every step of its write --------------------------------------------------------

KILL_AT = r"""
import os, signal, sys

step, when = sys.argv[1], sys.argv[2]
real = getattr(os, step)

def killing(*args, **kwargs):
    if sys._getframe(1).f_globals.get("__name__") != "kb.journal":
        return real(*args, **kwargs)  # filelock's and tempfile's own calls
    if when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    result = real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
    return result

setattr(os, step, killing)
from kb import cli
sys.exit(cli.main(sys.argv[3:]))
"""


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("step", ["fchmod", "fsync", "replace", "link", "unlink"])
@pytest.mark.parametrize("exists", [True, False], ids=["append", "create"])
def test_kb_new_killed_at_any_step_of_its_write_leaves_the_post_whole_and_the_note_kept(
    mini_project, tmp_path, kb_here, step, when, exists
):
    day = "2026-01-02"
    post = posts_of(mini_project) / f"{day}.md"
    if exists:
        assert kb_here(mini_project, "new", "--date", day, "--topic", "SAC", "-m", "原来的一段").returncode == 0
    old = post.read_bytes() if exists else None
    note = f"被杀掉的那次写入（{step} {when}）\n"
    r = subprocess.run(
        [sys.executable, "-c", KILL_AT, step, when, "new", "--date", day, "--topic", "SAC"],
        cwd=mini_project,
        env={**ENV, "PYTHONPATH": str(ROOT)},
        input=note.encode(),
        capture_output=True,
        timeout=60,
    )
    now = post.read_bytes() if post.exists() else None
    if r.returncode == 0:  # this path never takes the step (create links, append replaces)
        assert now is not None and note.encode() in now and kept_notes(mini_project) == []
        return
    assert r.returncode == -signal.SIGKILL, r.stderr.decode()
    # the post is the old one or the old one with the note: never a part of either
    if now != old:
        assert now is not None and now.startswith(old or b"---\n") and now.endswith(note.encode()), now
    assert kept_notes(mini_project) == [note.encode()]  # and the note is kept either way
    later = kb_here(mini_project, "new", "--date", day, "--topic", "SAC", "-m", "之后的一段")
    assert later.returncode == 0, later.stderr
    assert "之后的一段" in text_of(post)
    leftovers = [p.name for p in posts_of(mini_project).iterdir() if p.name.startswith(".") and p.suffix == ".tmp"]
    assert all(not name.endswith(".md") for name in leftovers)  # a temporary file is never a page


def test_a_post_that_is_a_folder_is_refused_and_the_note_kept(mini_project, kb_here):
    (posts_of(mini_project) / "2026-01-02.md").mkdir()
    r = kb_here(mini_project, "new", "--date", "2026-01-02", stdin="笔记\n")
    assert r.returncode == 2 and "not a regular file" in r.stderr and "your note is kept in" in r.stderr, r.stderr
    assert kept_notes(mini_project) == ["笔记\n".encode()]


# ---- two notes of one day with the same footnote or link label: the later one replaced the earlier's -----

LABELLED_NOTE = "正文[^1]，代码 `[^1]`，[论文][r] 和 [r]。\n\n[^1]: {words}\n[r]: https://{host}.example/\n"


def test_each_notes_footnotes_and_reference_links_stay_its_own(mini_project, kb_here):
    """Python-Markdown keeps one definition per label in a page: a second note of the day using
    [^1] (or [r]: url) made the first note's footnote show the second note's text (the first
    one's was gone from the page) and sent the first note's links to the second note's address."""
    day = "2026-01-02"
    for words, host in (("甲：第一条笔记的脚注", "first"), ("乙：第二条笔记的脚注", "second")):
        note = LABELLED_NOTE.format(words=words, host=host)
        r = kb_here(mini_project, "new", "--date", day, "--topic", "SAC", stdin=note)
        assert r.returncode == 0, r.stderr
    build = build_in_process(mini_project, mini_project / "site")
    assert build.returncode == 0, build.stderr[-3000:]
    page = text_of(mini_project / "site" / "journal" / "2026" / "01" / "02" / "20260102" / "index.html")
    notes = re.search(r'<div class="footnote">.*?</div>', page, re.S).group(0)
    assert "甲：第一条笔记的脚注" in notes and "乙：第二条笔记的脚注" in notes, notes
    assert page.count("<code>[^1]</code>") == 2  # code shows what was typed
    first, second = page.split('<h2 id="补充', 1)  # the second note starts at its section heading
    assert first.count('href="https://first.example/"') == 2 and "second.example" not in first
    assert second.count('href="https://second.example/"') == 2 and "first.example" not in second
