"""Spaced repetition: cards from the notes' questions and claims, FSRS on a fixed clock, a safe log, Anki export."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import sqlite3
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fsrs
import pytest
from conftest import kb

from kb import cards, review
from kb.model import Status


def rewrite_reason(page: Path, claim_id: str) -> None:
    """Change the first line of a claim's explanation (what its card shows on the back)."""
    text = page.read_text(encoding="utf-8")
    at = text.index(f"    id: {claim_id}\n")
    body = text.index("\n\n    ", at) + 6
    page.write_text(text[:body] + "（改写过的理由）" + text[body:], encoding="utf-8")


T0 = dt.datetime(2026, 1, 10, 9, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def test_cards_are_every_claim_and_every_answered_question(model):
    deck = review.cards(model)
    claims = [c for c in deck if c.id.startswith("claim:")]
    questions = [c for c in deck if c.id.startswith("question:")]
    assert len(claims) == len(model.claims)
    assert len(questions) == sum(bool(q.answered_by) for q in model.questions)
    assert not [q for q in model.questions if not q.answered and any(c.front == q.text for c in questions)]
    assert len({c.id for c in deck}) == len(deck), "card ids are unique"
    by_id = {c.id: c for c in deck}
    for claim in model.claims:
        card = by_id[f"claim:{claim.id}"]
        assert card.front == cards.claim_question(claim.title) and card.answer.startswith(f"**{claim.status.label}**")


VERDICT = re.compile(r"^(?:你的说法)?(?:已验证|已证伪|部分成立|待解决)。")


def test_every_card_asks_one_thing_and_answers_it_short(model):
    """SuperMemo's minimum information principle: a question on the face, a short answer, no missing context."""
    deck = review.cards(model)
    for c in deck:
        if c.id.startswith("claim:"):
            assert c.front.startswith("对还是错：") and c.front.endswith("？"), c.front
            assert VERDICT.match(cards.plain_text(c.answer)), (c.id, c.answer)
        else:  # the learner's own words
            assert c.front in {q.text for q in model.questions}
        short = VERDICT.sub("", cards.plain_text(c.answer))
        assert 6 < len(short) <= cards.ANSWER_LIMIT, (c.id, len(short), short)
        assert short.endswith(("。", "？", "！", "……")), (c.id, short)
        for part in (c.front, c.context, c.answer, c.more):
            assert not cards.DEICTIC.search(part), (c.id, cards.DEICTIC.search(part).group(0), part)
            shown = cards.plain_text(part)
            assert "$" not in shown.replace("\\$", "") and "`" not in shown, (c.id, shown)
    assert not [c.id for c in deck if c.over_limit], "claims whose short answer had to be cut want a review: line"


def test_a_short_answer_is_derived_cut_or_written(mini_project, kb_here):
    long = "很长的理由，" * 40 + "结束。第二句。"
    short, cut = cards.short_answer(long)
    assert cut and cards.shown_length(short) <= cards.ANSWER_LIMIT and short.endswith("……")
    assert cards.short_answer("误差 $<10^{-12}$（见上表），所以成立。后面还有。") == (
        "误差 $<10^{-12}$，所以成立。",
        False,
    )
    assert (
        cards.resolve_context("整体被抵消（上一条），上一条说明了它；见下一节。")
        == "整体被抵消，原文中相邻的论断说明了它；见原文。"
    )
    assert cards.plain_text(r"$\beta\log Z$ 与 $10^{-12}$、`x`") == "β log Z 与 10⁻¹²、x"
    # a written `review:` line is the card's answer; a claim whose derived answer is cut is listed on the claims page
    page = mini_project / "docs/foundations/mse-conditional-mean.md"
    text = page.read_text(encoding="utf-8")
    text = text.replace(
        "    id: mse-predicts-conditional-mean\n",
        "    id: mse-predicts-conditional-mean\n    review: 每组只有一个自由参数，平方损失的最小值点就是该组的均值。\n",
        1,
    )
    at = text.index("    id: mse-bias-variance-decomposition\n")
    body = text.index("\n\n    ", at) + 6
    page.write_text(text[:body] + "一个不停的长句，" * 30 + text[body:], encoding="utf-8")
    from kb.model import KnowledgeBase
    from kb.project import Project

    model = KnowledgeBase.load(Project.find(mini_project))
    by_id = {c.id: c for c in review.cards(model)}
    written = by_id["claim:mse-predicts-conditional-mean"]
    assert written.written and written.answer == "**已验证**。每组只有一个自由参数，平方损失的最小值点就是该组的均值。"
    assert by_id["claim:mse-bias-variance-decomposition"].over_limit
    r = kb_here(mini_project, "claims")
    assert r.returncode == 0, r.stderr
    from kb.render import Layout, claims_page

    listed = claims_page(model, Layout(), lambda a, b, anchor="": b + ("#" + anchor if anchor else ""))
    assert "短答案超过 120 字的论断 1 条" in listed and "mse-bias-variance-decomposition" in listed


def test_a_cards_identity_survives_lines_moving(model):
    q = next(q for q in model.questions if q.answered_by and q.page.is_post)
    card = next(c for c in review.cards(model) if c.front == q.text)
    assert card.id == f"question:{q.page.rel}:" + hashlib.sha256(q.text.encode()).hexdigest()[:10]


def rev(card, when, grade, digest=None, status=None):
    return review.Review(when, card.id, review.GRADES[grade], digest or card.digest, status or card.status)


def test_fsrs_on_a_fixed_clock(model):
    card = review.cards(model)[0]
    states = review.schedule([card], [], T0)
    assert states[card.id].new and review.due(states, T0) == [states[card.id]], "a new card is due today"
    log = [rev(card, T0, "3")]
    s = review.schedule([card], log, T0)[card.id]
    assert T0 < s.due <= T0 + dt.timedelta(minutes=10), "Good on a new card: its next learning step"
    log.append(rev(card, s.due, "3"))
    s = review.schedule([card], log, T0)[card.id]
    assert s.due >= T0 + DAY, "Good again: pushed out by days"
    assert not review.due(review.schedule([card], log, s.due - dt.timedelta(hours=1)), s.due - dt.timedelta(hours=1))
    pushed = s.due
    log.append(rev(card, pushed, "1"))
    s = review.schedule([card], log, pushed)[card.id]
    assert s.fsrs_card.state == fsrs.State.Relearning and s.due <= pushed + dt.timedelta(minutes=10), "Again: back soon"
    assert review.retention(log) == pytest.approx(2 / 3)


def test_a_changed_claim_is_due_again_and_says_why(model):
    claim = next(c for c in model.claims if c.status is Status.VERIFIED)
    card = next(c for c in review.cards(model) if c.id == f"claim:{claim.id}")
    log = [rev(card, T0, "3"), rev(card, T0 + dt.timedelta(minutes=10), "4")]
    later = T0 + dt.timedelta(days=2)
    assert not review.due(review.schedule([card], log, later), later), "learned: not due two days later"
    changed = review.Card(
        card.id,
        card.topic,
        card.front,
        card.answer.replace("已验证", "部分成立", 1),
        card.more,
        "qualified",
        "部分成立",
        card.page,
        card.anchor,
        content=card.content.replace("\nverified\n", "\nqualified\n", 1),
    )
    s = review.schedule([changed], log, later)[card.id]
    assert review.due({card.id: s}, later) == [s]
    assert s.fsrs_card.state == fsrs.State.Relearning
    assert s.changed == "此论断已从 已验证 改为 部分成立"


def test_kb_review_session_changed_claim_and_stats(mini_project, kb_here):
    t0 = "2026-01-10T09:00"
    n = len(re.findall(r"^!!! claim", (mini_project / "docs/foundations/mse-conditional-mean.md").read_text(), re.M))
    r = kb_here(mini_project, "review", "--now", t0, "--topic", "基础", stdin="\n3\n" * 50)
    assert r.returncode == 0, r.stderr
    log = (mini_project / "review-log.tsv").read_text(encoding="utf-8")
    lines = [l for l in log.split("\n") if l and not l.startswith("#")]
    assert len(lines) >= n and all(l.split("\t")[2] == "3" for l in lines)
    assert "本次复习" in r.stdout and "24 小时内到期" in r.stdout
    # Two days later, after learning them, nothing is due...
    kb_here(mini_project, "review", "--now", "2026-01-10T09:11", stdin="\n4\n" * 50)
    r = kb_here(mini_project, "review", "--now", "2026-01-12T09:00", "--topic", "基础", stdin="q\n")
    assert "今天没有到期的卡片" in r.stdout, r.stdout
    # ...until a claim's reason is rewritten: its card comes back, saying so.
    rewrite_reason(mini_project / "docs/foundations/mse-conditional-mean.md", "mse-predicts-conditional-mean")
    r = kb_here(mini_project, "review", "--now", "2026-01-12T09:00", "--topic", "基础", stdin="\nq\n")
    shown = r.stdout.replace("\n", "")  # lines are wrapped to the terminal's width
    assert "！此论断的内容已改写" in shown and "MSE 回归的最优解是条件均值" in shown, r.stdout
    r = kb_here(mini_project, "review", "--stats", "--now", "2026-01-12T09:00")
    assert r.returncode == 0 and "未来 7 天每天到期" in r.stdout and "基础" in r.stdout


def test_two_sessions_at_once_keep_every_line(mini_project):
    def session(_):
        return kb(mini_project, "review", "--now", "2026-01-10T09:00", stdin="\n2\n" * 300)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(session, range(2)))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    reviewed = sum(int(re.search(r"本次复习 (\d+) 张", r.stdout).group(1)) for r in results)
    lines = [l for l in (mini_project / "review-log.tsv").read_text().split("\n") if l and not l.startswith("#")]
    assert len(lines) == reviewed > 0
    assert all(len(l.split("\t")) == 5 for l in lines)


def notes_of(apkg: Path) -> list[tuple[str, str]]:
    with zipfile.ZipFile(apkg) as z:
        data = z.read("collection.anki2")
    db = apkg.with_suffix(".sqlite")
    db.write_bytes(data)
    with sqlite3.connect(db) as con:
        return con.execute("select guid, flds from notes order by guid").fetchall()


def test_anki_export_has_one_note_per_card_with_stable_guids(mini_project, tmp_path, kb_here):
    from kb.model import KnowledgeBase
    from kb.project import Project

    deck = review.cards(KnowledgeBase.load(Project.find(mini_project)))
    assert kb_here(mini_project, "export", "anki", str(tmp_path / "a.apkg")).returncode == 0
    rewrite_reason(mini_project / "docs/foundations/mse-conditional-mean.md", "mse-predicts-conditional-mean")
    assert kb_here(mini_project, "export", "anki", str(tmp_path / "b.apkg")).returncode == 0
    a, b = notes_of(tmp_path / "a.apkg"), notes_of(tmp_path / "b.apkg")
    assert len(a) == len(b) == len(deck)
    assert [g for g, _ in a] == [g for g, _ in b], "re-importing updates notes instead of adding copies"
    assert a != b, "the changed card's text is in the second export"
    fields = " ".join(f for _, f in a)
    assert "\\(" in fields and "$" not in re.sub(r"\$\$", "", fields).replace("\\$", ""), "math uses Anki's delimiters"
    assert "`" not in fields and "**" not in fields and "<code>" in fields, "clean HTML: no Markdown left"
    # site_url is local (127.0.0.1): a link would work only while serving, so there is none
    assert not re.findall(r'<a href="', fields)
    config = mini_project / "mkdocs.yml"
    config.write_text(
        config.read_text().replace("site_url: http://127.0.0.1:8000/", "site_url: https://example.org/notes/")
    )
    assert kb_here(mini_project, "export", "anki", str(tmp_path / "d.apkg")).returncode == 0
    d = notes_of(tmp_path / "d.apkg")
    assert [g for g, _ in d] == [g for g, _ in a]
    links = re.findall(r'<a href="([^"]+)">', " ".join(f for _, f in d))
    assert len(links) == len(deck)
    assert any(c.page.startswith("journal/posts/") for c in deck), "the mini project has a card on a post"
    for url in links:  # posts at the blog's dated URLs, pages as directories
        assert (
            re.fullmatch(r"https://example\.org/notes/(journal/\d{4}/\d{2}/\d{2}/[^/#]+|[^#]*[^/#]|)/#[^#]+", url)
            and "/posts/" not in url
        ), url
    r = kb_here(mini_project, "export", "anki", str(tmp_path / "c.txt"))
    assert r.returncode == 2 and "must end in .apkg" in r.stderr


def test_a_damaged_log_line_is_named_with_its_line(mini_project, kb_here):
    (mini_project / "review-log.tsv").write_text(
        review.LOG_HEADER + "2026-01-10T09:00:00+00:00\tclaim:x\t9\n", encoding="utf-8"
    )
    r = kb_here(mini_project, "review", "--now", "2026-01-10T09:00", stdin="q\n")
    assert r.returncode == 2 and "review-log.tsv:3: not a review line" in r.stderr and "Traceback" not in r.stderr


ANSI = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b\[[0-9;?]*[A-Za-z]")


def _spawn(root: Path, *args: str, width: int):
    import io
    import signal
    import sys

    pexpect = pytest.importorskip("pexpect")
    from conftest import ENV, ROOT

    child = pexpect.spawn(
        sys.executable,
        ["-m", "kb.cli", "review", "--now", "2026-01-10T09:00", *args],
        cwd=str(root),
        env={**ENV, "PYTHONPATH": str(ROOT), "TERM": "xterm-256color"},
        encoding="utf-8",
        dimensions=(40, width),
        timeout=60,
        # A learner's terminal delivers Ctrl-C. A run started as a background job of a script inherits
        # SIGINT ignored (POSIX), and Python then never raises KeyboardInterrupt: the session would
        # wait for good (found when `make bench` ran the suite from a background job).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    child.logfile_read = io.StringIO()  # everything the terminal showed
    return child


def _log_lines(root: Path) -> list[str]:
    path = root / "review-log.tsv"
    return [l for l in path.read_text().split("\n") if l and not l.startswith("#")] if path.exists() else []


def test_a_terminal_session_of_ten_cards_in_a_pty(project_copy):
    """Through a real terminal (pty, 60 columns): formulas as text, code without backticks, lines within the width."""
    from wcwidth import wcswidth

    width = 60
    child = _spawn(project_copy, width=width)
    for _ in range(10):
        child.expect("回车看答案")
        child.sendline("")
        child.expect("评分")
        child.sendline("m")  # the full explanation and the link, too
        child.expect("原文")
        child.expect("评分")
        child.sendline("3")
    child.expect("回车看答案")
    child.sendline("q")
    child.expect("本次复习 10 张")
    child.expect(pytest.importorskip("pexpect").EOF)
    raw = child.logfile_read.getvalue()
    lines = ANSI.sub("", raw).replace("\r", "").split("\n")
    out = Path(__file__).resolve().parents[1] / "artifacts" / "review-session.txt"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")
    assert len(_log_lines(project_copy)) == 10
    shown = "\n".join(lines)
    assert shown.count("问：") == 11 and "$" not in shown and "`" not in shown, shown
    wide = [line for line in lines if wcswidth(line) > width]
    assert not wide, wide
    assert "\x1b]8;" in raw, "the source link is an OSC 8 hyperlink"


def test_ctrl_c_after_three_grades_keeps_three_lines(project_copy):
    child = _spawn(project_copy, width=80)
    for _ in range(3):
        child.expect("回车看答案")
        child.sendline("")
        child.expect("评分")
        child.sendline("2")
    child.expect("回车看答案")
    child.sendintr()
    child.expect("3 grades of this session kept")
    child.wait()
    child.close()
    assert child.exitstatus == 130 or child.signalstatus is None
    assert len(_log_lines(project_copy)) == 3


def test_the_daily_limit_holds_new_cards_back(project_copy, kb_here):
    r = kb_here(project_copy, "review", "--now", "2026-01-10T09:00", stdin="\n3\n" * 300)
    assert "本次复习 20 张" in r.stdout, r.stdout[-300:]
    r = kb_here(project_copy, "review", "--now", "2026-01-10T18:00", "--new-per-day", "25", stdin="\n3\n" * 300)
    reviewed = int(re.search(r"本次复习 (\d+) 张", r.stdout).group(1))
    assert reviewed >= 5, "5 more new cards (25 a day), plus the learning steps of the morning's cards"
    lines = _log_lines(project_copy)
    assert len({l.split("\t")[1] for l in lines}) == 25, "25 distinct cards introduced on one day"
    r = kb_here(project_copy, "review", "--stats", "--now", "2026-01-10T19:00")
    assert r.returncode == 0 and "每天新卡片上限 20 张" in r.stdout
    days = re.findall(r"\d\d-\d\d:(\d+)\+(\d+)", r.stdout)
    assert [int(n) for _, n in days] == [0, 20, 20, 20, 20, 20, 0] or all(int(n) <= 20 for _, n in days), r.stdout
    assert int(days[0][1]) == 0, "today's 20 are used up (25 were introduced)"
    assert int(days[1][1]) == 20
    r = kb_here(project_copy, "review", "--new-per-day", "x", "--now", "2026-01-10T19:00")
    assert r.returncode == 2 and "--new-per-day" in r.stderr


def test_anki_export_keeps_the_review_history_and_the_fsrs_schedule(mini_project, tmp_path, kb_here):
    """Opened with sqlite3: a revlog row per logged review, card intervals and due dates from the FSRS state."""
    from kb.model import KnowledgeBase
    from kb.project import Project

    kb_here(mini_project, "review", "--now", "2026-01-10T09:00", stdin="\n3\n" * 50)
    kb_here(mini_project, "review", "--now", "2026-01-10T09:30", stdin="\n3\n" * 50)
    kb_here(mini_project, "review", "--now", "2026-01-10T09:40", stdin="\n1\n\n3\n" * 50)
    now = dt.datetime(2026, 1, 11, 9, 0, tzinfo=dt.UTC)
    assert kb_here(mini_project, "export", "anki", str(tmp_path / "a.apkg"), "--now", now.isoformat()).returncode == 0
    project = Project.find(mini_project)
    log = review.project_log(project)
    deck = review.cards(KnowledgeBase.load(project))
    states = review.schedule(deck, log, now)
    with zipfile.ZipFile(tmp_path / "a.apkg") as z:
        (tmp_path / "a.sqlite").write_bytes(z.read("collection.anki2"))
    with sqlite3.connect(tmp_path / "a.sqlite") as con:
        crt = con.execute("select crt from col").fetchone()[0]
        revlog = con.execute("select cid, ease from revlog").fetchall()
        rows = con.execute(
            "select notes.guid, cards.id, type, queue, due, ivl, reps, cards.data from cards "
            "join notes on cards.nid = notes.id"
        ).fetchall()
    assert len(log) > 0 and len(revlog) == len(log), "one revlog row per logged review"
    import genanki

    by_guid = {genanki.guid_for(c.id): states[c.id] for c in deck}
    checked = 0
    for guid, cid, ctype, queue, due, ivl, reps, data in rows:
        s = by_guid[guid]
        assert reps == len(s.reviews)
        assert sorted(e for c, e in revlog if c == cid) == sorted(int(r.rating) for r in s.reviews)
        if not s.reviews:
            assert ctype == 0 and queue == 0, "a card never reviewed is new"
            continue
        fc = s.fsrs_card
        if fc.state == fsrs.State.Review:
            crt_day = dt.datetime.fromtimestamp(crt, dt.UTC).date()
            assert (ctype, queue) == (2, 2) and due == (fc.due.date() - crt_day).days
            assert ivl == max(1, (fc.due - fc.last_review).days)
            checked += 1
        else:
            assert queue == 1 and due == int(fc.due.timestamp())
        import json

        assert json.loads(data)["s"] == pytest.approx(fc.stability, abs=1e-4)
    assert checked > 0, "some cards reached the review state"
