"""Damaged files and hostile input get one line naming file and line (exit code 2), lose nothing,
and never stop `kb serve`. Each test is an attack found against an earlier version (issue 23)."""

from __future__ import annotations

import errno
import io
import json
import os
import re
import sys
import time
import zipfile
from pathlib import Path

import pytest
from conftest import kb, mkdocs_build, run, text_of

from kb import cli, review, sources
from kb.project import Project, SourceError

POST = "docs/journal/posts/2026-01-01.md"
OTHER_POST = "docs/journal/posts/2025-12-30.md"
PAGE = "docs/foundations/mse-conditional-mean.md"
LOG_LINE = "2026-01-10T09:00:00+00:00\tclaim:mse-predicts-conditional-mean\t3\tabcdef0123456789\tverified\n"
CONFLICT = "<<<<<<< HEAD\nmine\n=======\ntheirs\n>>>>>>> laptop\n"


def lines_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def no_traceback(r) -> None:
    assert "Traceback" not in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]


# ---- the review log ------------------------------------------------------------------------------


def test_a_bom_in_the_review_log_is_tolerated(tmp_path):
    """K3d: a UTF-8 byte order mark is valid UTF-8 with a signature (some Windows editors write it)."""
    log = tmp_path / "review-log.tsv"
    log.write_bytes("\ufeff".encode() + (review.LOG_HEADER + LOG_LINE).encode())
    assert [r.card for r in review.read_log(log)] == ["claim:mse-predicts-conditional-mean"]
    log.write_bytes("\ufeff".encode() + LOG_LINE.encode())  # a BOM before a review line, no header
    assert len(review.read_log(log)) == 1


@pytest.mark.parametrize(
    "damage, line, says",
    [
        (
            review.LOG_HEADER + LOG_LINE + "<<<<<<< HEAD\n" + LOG_LINE + "=======\n" + LOG_LINE + ">>>>>>> laptop\n",
            4,
            "git merge conflict marker '<<<<<<< HEAD'",
        ),
        (review.LOG_HEADER + LOG_LINE + "2026-01-10 claim:x three\n", 4, "not a review line"),
        (review.LOG_HEADER + "2026-01-10T09:00:00+00:00\t\t3\t\t\n", 3, "not a review line"),
    ],
)
def test_a_damaged_review_log_is_named_at_its_line(tmp_path, damage, line, says):
    log = tmp_path / "review-log.tsv"
    log.write_text(damage, encoding="utf-8")
    with pytest.raises(SourceError) as e:
        review.read_log(log, "review-log.tsv")
    assert (e.value.path, e.value.line) == ("review-log.tsv", line) and says in e.value.message
    assert text_of(log) == damage, "never rewritten"


def test_a_review_log_that_is_not_utf8_is_named_at_its_line(tmp_path):
    log = tmp_path / "review-log.tsv"
    data = (review.LOG_HEADER + LOG_LINE).encode() + "2026-01-11T09:00:00+00:00\tclaim:café\t3\n".encode("latin-1")
    log.write_bytes(data)
    with pytest.raises(SourceError) as e:
        review.read_log(log, "review-log.tsv")
    assert e.value.line == 4 and "not valid UTF-8 (byte 0xe9)" in e.value.message
    assert log.read_bytes() == data


def test_a_grade_appended_to_a_log_without_a_final_newline_is_its_own_line(tmp_path):
    log = tmp_path / "review-log.tsv"
    log.write_text(review.LOG_HEADER + LOG_LINE.rstrip("\n"), encoding="utf-8")
    first = review.read_log(log)[0]
    review.append(log, review.Review(first.time, "claim:other", first.rating, "0" * 16, "verified"))
    assert [r.card for r in review.read_log(log)] == ["claim:mse-predicts-conditional-mean", "claim:other"]


def test_kb_review_with_a_bom_or_a_conflict_in_the_log(mini_project):
    log = mini_project / "review-log.tsv"
    log.write_bytes("\ufeff".encode() + review.LOG_HEADER.encode())
    r = kb(mini_project, "review", "--now", "2026-01-10T09:00", "--topic", "基础", stdin="\n3\nq\n")
    assert r.returncode == 0 and "本次复习 1 张" in r.stdout, r.stderr
    assert log.read_bytes().startswith("\ufeff# kb review log".encode()), "the BOM stays: nothing is rewritten"
    damaged = text_of(log) + CONFLICT
    log.write_text(damaged, encoding="utf-8")
    for args in (("review", "--now", "2026-01-10T09:00"), ("review", "--stats")):
        r = kb(mini_project, *args, stdin="3\n")
        assert r.returncode == 2, r.stderr
        assert lines_of(r.stderr) == [
            f"kb review: error: review-log.tsv:{damaged.count(chr(10)) - 4}: git merge "
            "conflict marker '<<<<<<< HEAD': keep both sides' review lines (each is one "
            "review), delete the marker lines, then run kb again"
        ]
    assert text_of(log) == damaged


def test_ctrl_c_in_kb_review_says_how_many_grades_were_kept(mini_project, monkeypatch, capsys):
    """K11: the grades given before Ctrl-C are in the log; the message said "nothing written"."""
    answers = iter(["\n", "3\n", "\n", "4\n"])

    class Keyboard(io.StringIO):
        def readline(self, *args):
            try:
                return next(answers)
            except StopIteration:
                raise KeyboardInterrupt from None

    monkeypatch.chdir(mini_project)
    monkeypatch.setattr(sys, "stdin", Keyboard())
    code = cli.main(["review", "--now", "2026-01-10T09:00"])
    err = capsys.readouterr().err
    kept = [l for l in text_of(mini_project / "review-log.tsv").splitlines() if l and not l.startswith("#")]
    assert code == 130 and len(kept) == 2
    assert lines_of(err) == ["kb review: interrupted; 2 grades of this session kept in review-log.tsv"]


# ---- the strict build ----------------------------------------------------------------------------


def test_the_strict_build_names_each_damaged_file_in_one_line(mini_project):
    """K1b, M6a, M6b, N5, N6: a conflicted log, a Latin-1 snippet, conflict markers in a post (also in
    a fence) and an impossible date gave tracebacks, or passed with '>>>>>>> laptop' as a question."""
    root = mini_project
    (root / "review-log.tsv").write_text(review.LOG_HEADER + LOG_LINE + CONFLICT, encoding="utf-8")
    (root / "snippets" / "foundations" / "latin.py").write_bytes("# café\nX = 1\n".encode("latin-1"))
    post = text_of(root / POST)
    (root / POST).write_text(post + "\n" + CONFLICT, encoding="utf-8")
    fenced = text_of(root / OTHER_POST) + "\n```python\n<<<<<<< HEAD\nx = 1\n=======\nx = 2\n>>>>>>> laptop\n```\n"
    (root / OTHER_POST).write_text(fenced, encoding="utf-8")
    page = root / "docs" / "foundations" / "setext.md"  # "=======" under a line is a heading, not a conflict
    page.write_text("# 标题\n\n第二个标题\n=======\n\n正文。\n", encoding="utf-8")
    dated = root / "docs" / "journal" / "posts" / "2026-02-28.md"
    dated.write_text(
        '---\ndate: 2026-02-30\nslug: "20260228"\ncategories: [SAC]\n---\n# 20260228\n\n笔记\n', encoding="utf-8"
    )
    build = mkdocs_build(root, root / "site")
    out = build.stdout + build.stderr
    no_traceback(build)
    assert build.returncode != 0
    # MkDocs prints the plugin's error after "ERROR -"; its other lines follow, one problem each
    errors = out[out.index("ERROR   -  ") + 11 :].split("\n\n")[0].splitlines()
    post_line = post.count("\n") + 2
    fence_line = fenced.count("\n") - 6 + 1
    assert set(errors) >= {
        f"review-log.tsv:{review.LOG_HEADER.count(chr(10)) + 2}: git merge conflict marker '<<<<<<< HEAD': keep both "
        "sides' review lines (each is one review), delete the marker lines, then run kb again",
        "snippets/foundations/latin.py:1: not valid UTF-8 (byte 0xe9); save the file as UTF-8",
        f"{POST}:{post_line}: git merge conflict marker '<<<<<<< HEAD': resolve the conflict (keep what each side "
        "should keep) and delete the marker lines",
        f"{OTHER_POST}:{fence_line}: git merge conflict marker '<<<<<<< HEAD': resolve the conflict (keep what each "
        "side should keep) and delete the marker lines",
        "docs/journal/posts/2026-02-28.md:2: front matter value '2026-02-30' is invalid (day is out of range for month)",
    }, out[-4000:]
    assert not [e for e in errors if "setext.md" in e], errors
    assert (root / "snippets" / "foundations" / "latin.py").read_bytes() == "# café\nX = 1\n".encode("latin-1")
    r = kb(root, "questions")
    assert "laptop" not in r.stdout and r.returncode == 0  # the conflicted post is refused, not read as questions


def test_conflict_markers_are_defined_precisely():
    lines = [
        "标题",
        "=======",
        "",
        "<<<<<<<< eight is not a marker",
        " <<<<<<< indented is not Git's",
        ">>>>>>>no space is not one",
        "<<<<<<< HEAD",
        "a",
        "||||||| base",
        "=======",
        "b",
        ">>>>>>> laptop",
        "=======",
        "<<<<<<<",
        ">>>>>>>",
    ]
    assert sources.conflict_markers(lines) == [
        (7, "<<<<<<< HEAD"),
        (9, "||||||| base"),
        (10, "======="),
        (12, ">>>>>>> laptop"),
        (14, "<<<<<<<"),
        (15, ">>>>>>>"),
    ]


def test_kb_new_will_not_append_to_a_conflicted_post(mini_project):
    post = mini_project / POST
    damaged = text_of(post).rstrip("\n") + "\n" + CONFLICT
    post.write_text(damaged, encoding="utf-8")
    r = kb(mini_project, "new", "--date", "2026-01-01", "--topic", "SAC", stdin="新的笔记\n")
    line = damaged.count("\n") - 4
    said = lines_of(r.stderr)
    assert (
        r.returncode == 2
        and len(said) == 1
        and said[0].startswith(
            f"kb new: error: {POST}:{line}: git merge conflict marker '<<<<<<< HEAD': resolve the conflict "
            "(keep what each side should keep) and delete the marker lines; your note is kept in "
        )
    ), said
    # the piped note was read before the refusal, so it is kept, not lost
    kept = Path(said[0].rsplit(" ", 1)[-1])
    assert kept.read_text(encoding="utf-8") == "新的笔记\n"
    assert text_of(post) == damaged


# ---- kb serve ------------------------------------------------------------------------------------

SERVE_BUILD = r"""
import json, os, re, sys
from pathlib import Path
from mkdocs.commands.build import build
from mkdocs.config import load_config

root = Path.cwd()
status = root / ".kb" / "status.json"
os.environ["KB_LIVE_STATUS"] = str(status)  # what kb serve sets
config = None

def rebuild():  # as mkdocs serve rebuilds: not strict, dirty, one plugin instance
    global config
    fresh = load_config(str(root / "mkdocs.yml"), site_dir=str(root / "site"), strict=False)
    if config is None:
        fresh.plugins.on_startup(command="serve", dirty=True)
    config = fresh
    build(config, dirty=True)

report = {}
rebuild()
report["damaged"] = json.loads(status.read_text(encoding="utf-8")).get("_build")
report["pages"] = sorted(p.parent.relative_to(root / "site").as_posix() for p in (root / "site").glob("foundations/*/index.html"))
for path, text in json.loads(sys.argv[1]).items():
    Path(path).write_bytes(bytes.fromhex(text))
rebuild()
report["fixed"] = json.loads(status.read_text(encoding="utf-8")).get("_build")
print(json.dumps(report, ensure_ascii=False))
"""


def test_kb_serve_keeps_building_and_shows_the_problems_until_they_are_fixed(mini_project):
    """K1b, M6a, M6b: a failed rebuild leaves mkdocs serve "stuck until build errors are resolved"
    (every request waits). A rebuild as kb serve runs it must not fail, and the status line gets the
    problems: those of no page on every page, a page's own on that page; fixing them clears them."""
    root = mini_project
    log, snippet, page = root / "review-log.tsv", root / "snippets" / "foundations" / "latin.py", root / PAGE
    originals = {
        str(page): page.read_bytes(),
        str(log): (review.LOG_HEADER + LOG_LINE).encode(),
        str(snippet): b"X = 1\n",
    }
    log.write_text(review.LOG_HEADER + LOG_LINE + CONFLICT, encoding="utf-8")
    snippet.write_bytes("# café\nX = 1\n".encode("latin-1"))
    page.write_bytes(page.read_bytes() + b"\n\xff\xfe not UTF-8\n")
    fixed = {k: v.hex() for k, v in originals.items()}
    r = run([sys.executable, "-c", SERVE_BUILD, json.dumps(fixed)], root)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    damaged = {d["problem"].split(":")[0]: d["page"] for d in report["damaged"]}
    assert damaged == {"review-log.tsv": None, "snippets/foundations/latin.py": None, PAGE: None}, report
    assert "foundations/mse-conditional-mean" not in report["pages"], "the unreadable page is left out"
    assert report["fixed"] is None, "fixed files clear the status line"


def wait_for(path: Path, key: str, timeout: float = 30) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and isinstance(data.get(key), dict) and "passed" in data[key]:
                return data[key]
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise AssertionError(
        f"{path} never got a result for {key}: {path.read_text(encoding='utf-8') if path.exists() else '-'}"
    )


@pytest.mark.parametrize("status", ["", "[1, 2]", '{"foundations/mse-conditional-mean.md": 7}'])
def test_a_page_kb_check_refuses_says_why_instead_of_running_forever(mini_project, status):
    """M6c: the page stayed "running"; M7: a status.json that is not a mapping (or an entry that is
    not one) killed the checker thread for good."""
    from kb.serve import Checker, status_file

    project = Project.find(mini_project)
    page = mini_project / PAGE
    page.write_text(text_of(page) + "\n" + CONFLICT, encoding="utf-8")
    if status:
        status_file(project).parent.mkdir(parents=True, exist_ok=True)
        status_file(project).write_text(status, encoding="utf-8")
    checker = Checker(project, debounce=0.0)
    checker.touched(str(page))
    got = wait_for(status_file(project), "foundations/mse-conditional-mean.md")
    assert not got["passed"] and not got.get("running")
    assert got["problems"][0].startswith(f"{PAGE}:") and "merge conflict marker" in got["problems"][0]


# ---- kb export anki ------------------------------------------------------------------------------


def test_a_full_disk_keeps_the_previous_anki_deck(mini_project, tmp_path, monkeypatch, capsys):
    """K14: genanki opened the deck for writing, then the disk filled: the old deck was gone."""
    monkeypatch.chdir(mini_project)
    deck = tmp_path / "out" / "cards.apkg"
    assert cli.main(["export", "anki", str(deck)]) == 0
    before = deck.read_bytes()
    real_write = zipfile.ZipFile.write

    def full_disk(self, *args, **kwargs):
        self.fp.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(zipfile.ZipFile, "write", full_disk)
    capsys.readouterr()
    assert cli.main(["export", "anki", str(deck)]) == 2
    err = capsys.readouterr().err
    assert lines_of(err) == [
        f"kb export: error: {deck}: cannot write (No space left on device); the previous file is unchanged"
    ]
    assert deck.read_bytes() == before and sorted(p.name for p in deck.parent.iterdir()) == ["cards.apkg"]
    monkeypatch.setattr(zipfile.ZipFile, "write", real_write)
    assert cli.main(["export", "anki", str(deck)]) == 0 and zipfile.is_zipfile(deck)


# ---- kb new: hostile notes -----------------------------------------------------------------------


def posts(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "docs" / "journal" / "posts").iterdir())}


@pytest.mark.parametrize(
    "note, says",
    [
        ("\u200b\u200b\u200c\u2060\ufeff \u3000\n", "the note has no visible characters"),  # B16
        ("正常的一行\nNUL \x00 here\n", "control character U+0000 at line 2, column 5"),  # B18
        ("颜色 \x1b[31m红\x1b[0m\n", "control character U+001B at line 1, column 4"),
        ("\x01start\n", "control character U+0001 at line 1, column 1"),
        ("x" * 100_001, "the note is 100,001 bytes, over the limit of 100,000 bytes for one note"),  # B17
        ("长" * 4_000_000, "the note is 12,000,000 bytes, over the limit of 100,000 bytes"),
    ],
)
def test_kb_new_refuses_a_hostile_note_and_keeps_it(mini_project, note, says):
    before = posts(mini_project)
    r = kb(mini_project, "new", "--date", "2026-03-01", "--topic", "SAC", stdin=note)
    assert r.returncode == 2 and len(lines_of(r.stderr)) == 1 and says in r.stderr, r.stderr
    no_traceback(r)
    assert posts(mini_project) == before
    kept = Path(re.search(r"your note is kept in (\S+)$", r.stderr.strip()).group(1))
    assert kept.read_bytes() == note.encode("utf-8")


def test_a_large_note_is_added_when_asked_and_crlf_becomes_lf(mini_project):
    note = "大段的笔记\r\n" * 20_000  # 340 KB
    r = kb(mini_project, "new", "--date", "2026-03-01", "--topic", "SAC", "--allow-large", stdin=note)
    assert r.returncode == 0, r.stderr
    text = text_of(mini_project / "docs" / "journal" / "posts" / "2026-03-01.md")
    assert "\r" not in text and text.count("大段的笔记\n") == 20_000


@pytest.mark.parametrize(
    "args, says",
    [
        (("--date", "0001-01-01"), "date '0001-01-01' is outside the journal's range 1900-01-01 to 2100-12-31"),  # B7
        (("--date", "2101-01-01"), "outside the journal's range"),
        (("--date", "1899-12-31"), "outside the journal's range"),
        (("-m", "\u200b"), "the note has no visible characters"),
        (("-m", "响铃\x07"), "control character U+0007 at line 1, column 3"),
    ],
)
def test_kb_new_refuses_a_bad_date_or_message(mini_project, args, says):
    before = posts(mini_project)
    r = kb(mini_project, "new", "--topic", "SAC", *(args if "-m" in args else (*args, "-m", "笔记")))
    assert r.returncode == 2 and len(lines_of(r.stderr)) == 1 and says in r.stderr, r.stderr
    assert posts(mini_project) == before


def test_kb_new_with_a_message_that_is_not_utf8(mini_project):
    """N3a: bytes that are not UTF-8 on the command line reach Python as surrogate escapes."""
    import subprocess

    from conftest import ENV, ROOT

    before = posts(mini_project)
    r = subprocess.run(
        [sys.executable, "-m", "kb.cli", "new", "--date", "2026-03-01", "--topic", "SAC", "-m", b"caf\xe9 \xff"],
        cwd=mini_project,
        env={**ENV, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=120,
    )
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 2 and lines_of(err) == ["kb new: error: -m: the note is not UTF-8 (byte 0xe9 at offset 3)"]
    assert posts(mini_project) == before


def test_kb_new_will_not_write_through_a_symlinked_journal(mini_project, tmp_path):
    """C5: docs/journal a symlink to a folder outside the project: kb new wrote there."""
    outside = tmp_path / "elsewhere"
    (mini_project / "docs" / "journal").rename(outside)
    (mini_project / "docs" / "journal").symlink_to(outside, target_is_directory=True)
    before = posts(mini_project)
    r = kb(mini_project, "new", "--date", "2026-03-01", "--topic", "SAC", "-m", "笔记")
    assert r.returncode == 2 and len(lines_of(r.stderr)) == 1
    assert "docs/journal: the journal folder is a symlink" in r.stderr, r.stderr
    assert posts(mini_project) == before and not (outside / "posts" / "2026-03-01.md").exists()


@pytest.mark.parametrize("where", ["outside", "inside"])
def test_kb_new_will_not_write_through_a_symlinked_posts_dir(mini_project, tmp_path, where):
    """C6: --posts-dir through a symlink (from outside to the posts, or a link inside the journal)."""
    real = mini_project / "docs" / "journal" / "posts"
    link = tmp_path / "link" if where == "outside" else mini_project / "docs" / "journal" / "alias"
    link.symlink_to(real, target_is_directory=True)
    before = posts(mini_project)
    r = kb(mini_project, "new", "--date", "2026-03-01", "--topic", "SAC", "--posts-dir", str(link), "-m", "笔记")
    assert r.returncode == 2 and len(lines_of(r.stderr)) == 1 and f"through the symlink {link}" in r.stderr, r.stderr
    assert posts(mini_project) == before


def test_kb_questions_and_claims_print_no_terminal_commands(mini_project):
    """B18: an ESC written into a post before kb new refused them reached the terminal raw."""
    post = mini_project / POST
    post.write_text(text_of(post) + "\n- 为什么 \x1b]0;pwned\x07 标题变了？\u202e\n", encoding="utf-8")
    r = kb(mini_project, "questions")
    assert r.returncode == 0, r.stderr
    line = next(l for l in r.stdout.splitlines() if "pwned" in l)
    assert line.endswith("为什么 \\x1b]0;pwned\\x07 标题变了？\\u202e")
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e]", r.stdout)
