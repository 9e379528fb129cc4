"""A second reader's attacks on "a note appended any day, by any means, is never lost and never
breaks the suite" (README, Day to day / Growing). Each test is an attack that broke an earlier
version; the attacks that held are listed in the report, with the existing test that keeps them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
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
