"""``kb review``: today's due cards in the terminal, graded and logged; ``--stats``.

The cards and their FSRS states come from ``kb.cards``. Each grade is one line
appended to the review log (``review-log.tsv``) under a lock, so concurrent
sessions keep every line.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections import Counter, defaultdict
from pathlib import Path

import fsrs
from filelock import FileLock
from wcwidth import wcswidth

from kb.cards import GRADES, LOG_NAME, Card, Review, State, cards, log_path, project_log, read_log, schedule  # noqa: F401 (the deck, as before)
from kb.model import KnowledgeBase
from kb.project import KbError, Project

LOG_HEADER = ("# kb review log: one line per review, appended by `kb review` (tab-separated):\n"
              "# time (UTC)\tcard\tgrade (1 again, 2 hard, 3 good, 4 easy)\tdigest of the card\tstatus shown\n")
GRADE_NAMES = {fsrs.Rating.Again: "重来", fsrs.Rating.Hard: "困难", fsrs.Rating.Good: "良好", fsrs.Rating.Easy: "简单"}


def append(path: Path, review: Review) -> None:
    """Add one line to the log under a lock, flushed to disk: concurrent sessions keep every line."""
    lock_dir = path.parent / ".kb"
    lock_dir.mkdir(exist_ok=True)
    with FileLock(str(lock_dir / "review-log.lock"), timeout=30):
        new = not path.exists() or path.stat().st_size == 0
        ended = True
        if not new:  # a last line without its newline must not swallow the new one
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                ended = f.read(1) in (b"\n", b"\r")
        with open(path, "a", encoding="utf-8", newline="\n") as f:
            if new:
                f.write(LOG_HEADER)
            elif not ended:
                f.write("\n")
            f.write(f"{review.time.isoformat(timespec='seconds')}\t{review.card}\t{int(review.rating)}\t"
                    f"{review.digest}\t{review.status}\n")
            f.flush()
            os.fsync(f.fileno())


def due(states: dict[str, State], now: dt.datetime, topic: str | None = None) -> list[State]:
    chosen = [s for s in states.values() if s.due <= now and (topic is None or s.card.topic == topic)]
    return sorted(chosen, key=lambda s: (not s.changed, s.new, s.due, s.card.id))


def forecast(states: dict[str, State], now: dt.datetime, days: int = 7) -> list[int]:
    """How many cards fall due on each of the next days (day 0: due now or later today)."""
    counts = [0] * days
    for s in states.values():
        k = max(0, (s.due.date() - now.date()).days)
        if k < days:
            counts[k] += 1
    return counts


def retention(log: list[Review]) -> float | None:
    """Share of reviews answered Hard, Good or Easy (remembered), not Again."""
    return sum(r.rating != fsrs.Rating.Again for r in log) / len(log) if log else None


def stats(states: dict[str, State], log: list[Review], now: dt.datetime) -> str:
    by_topic: dict[str, Counter] = defaultdict(Counter)
    for s in states.values():
        t = by_topic[s.card.topic]
        t["cards"] += 1
        t["new"] += s.new
        t["due"] += s.due <= now
        t["changed"] += bool(s.changed)
    def cell(text, width: int, right: bool = True) -> str:  # pad by display width (a CJK character is 2 columns)
        pad = " " * max(0, width - wcswidth(str(text)))
        return pad + str(text) if right else str(text) + pad

    lines = [cell("主题", 15, False) + "".join(cell(h, 7) for h in ("卡片", "新", "到期", "改动"))]
    for topic in sorted(by_topic):
        t = by_topic[topic]
        lines.append(cell(topic, 15, False) + "".join(cell(t[k], 7) for k in ("cards", "new", "due", "changed")))
    days = forecast(states, now)
    lines.append("未来 7 天每天到期：" + " ".join(f"{(now + dt.timedelta(days=k)).strftime('%m-%d')}:{n}"
                                            for k, n in enumerate(days)))
    r = retention(log)
    lines.append(f"已复习 {len(log)} 次" + (f"，记住的比例 {r:.0%}" if r is not None else ""))
    return "\n".join(lines)


# ---- the terminal session -----------------------------------------------------------------------------


def plain(markdown_text: str) -> str:
    """Card text for a terminal: links shown as their text, emphasis marks dropped."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", markdown_text)
    return re.sub(r"\*\*([^*]+)\*\*", r"\1", text)


def session(project: Project, now: dt.datetime, topic: str | None, ask=input, say=print) -> int:
    """Review today's due cards: front, wait, back, grade; the log gets a line per grade."""
    kb = KnowledgeBase.load(project)
    deck = cards(kb)
    path = log_path(project)
    states = schedule(deck, project_log(project), now)
    if topic is not None and topic not in {c.topic for c in deck}:
        raise KbError(f"no cards for topic '{topic}' (topics: {', '.join(sorted({c.topic for c in deck}))})")
    todo = due(states, now, topic)
    if not todo:
        say("今天没有到期的卡片。" + (f"（主题 {topic}）" if topic else ""))
    done: list[Review] = []
    try:
        _grade(project, todo, path, now, done, ask, say)
    except KeyboardInterrupt:  # Ctrl-C: every grade given so far is already in the log, and stays
        raise KbInterrupted(f"interrupted; {len(done)} grade{'s' if len(done) != 1 else ''} of this session kept in "
                            f"{project.rel(path)}") from None
    log = project_log(project)
    after = schedule(deck, log, now)
    soon = sum(now < st.due <= now + dt.timedelta(days=1) for st in after.values())
    r = retention(log)
    say(f"\n本次复习 {len(done)} 张；24 小时内到期 {soon} 张" + (f"；至今记住的比例 {r:.0%}" if r is not None else "") + "。")
    return 0


class KbInterrupted(KbError):
    """Ctrl-C in a session: what was saved is said (exit code 130)."""

    exit_code = 130


def _grade(project: Project, todo: list[State], path: Path, now: dt.datetime, done: list[Review], ask, say) -> None:
    for k, s in enumerate(todo, 1):
        say(f"\n[{k}/{len(todo)}] {s.card.topic} · {'新卡片' if s.new else '复习'}")
        if s.changed:
            say(f"！{s.changed}")
        say(f"问：{plain(s.card.front)}")
        try:
            ask("（回车看答案）")
            say(f"答：{plain(s.card.back)}\n见 {project.rel(project.docs_dir)}/{s.card.page}#{s.card.anchor}")
            while True:
                answer = ask("评分 1 重来 · 2 困难 · 3 良好 · 4 简单（q 结束）：").strip().lower()
                if answer in GRADES or answer == "q":
                    break
                say("请输入 1、2、3、4（或 a/h/g/e），q 结束。")
        except EOFError:
            break
        if answer == "q":
            break
        review = Review(now, s.card.id, GRADES[answer], s.card.digest, s.card.status)
        append(path, review)
        done.append(review)
