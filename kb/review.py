"""``kb review``: today's due cards in the terminal, graded and logged; ``--stats``.

The cards and their FSRS states come from ``kb.cards``. Each grade is one line
appended to the review log (``review-log.tsv``) under a lock, so concurrent
sessions keep every line.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

import fsrs
from filelock import FileLock
from wcwidth import wcswidth

from kb.cards import GRADES, LOG_NAME, Card, Review, State, cards, log_path, project_log, read_log, schedule  # noqa: F401 (the deck, as before)
from kb.model import KnowledgeBase
from kb.project import KbError, Project

LOG_HEADER = (
    "# kb review log: one line per review, appended by `kb review` (tab-separated):\n"
    "# time (UTC)\tcard\tgrade (1 again, 2 hard, 3 good, 4 easy)\tdigest of the card\tstatus shown\n"
)
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
            f.write(
                f"{review.time.isoformat(timespec='seconds')}\t{review.card}\t{int(review.rating)}\t"
                f"{review.digest}\t{review.status}\n"
            )
            f.flush()
            os.fsync(f.fileno())


NEW_PER_DAY = 20  # new cards a day, Anki's default; `kb review --new-per-day N` changes it


def introduced_on(states: dict[str, State], day: dt.date) -> int:
    """How many cards had their first review on ``day`` (they count against that day's new-card limit)."""
    return sum(bool(s.reviews) and s.reviews[0].time.date() == day for s in states.values())


def due(
    states: dict[str, State], now: dt.datetime, topic: str | None = None, new_per_day: int | None = NEW_PER_DAY
) -> list[State]:
    """Cards due now: every review, and new cards up to what is left of today's limit (``None``: no limit)."""
    chosen = [s for s in states.values() if s.due <= now and (topic is None or s.card.topic == topic)]
    chosen.sort(key=lambda s: (not s.changed, s.new, s.due, s.card.id))
    if new_per_day is None:
        return chosen
    left = max(0, new_per_day - introduced_on(states, now.date()))
    new = [s for s in chosen if s.new][:left]
    return [s for s in chosen if not s.new or s in new]


def forecast(
    states: dict[str, State], now: dt.datetime, days: int = 7, new_per_day: int | None = NEW_PER_DAY
) -> list[tuple[int, int]]:
    """(reviews, new cards) due on each of the next days (day 0: today), new cards held to the daily limit."""
    counts = [[0, 0] for _ in range(days)]
    waiting = 0
    for s in states.values():
        if s.new:
            waiting += 1
            continue
        k = max(0, (s.due.date() - now.date()).days)
        if k < days:
            counts[k][0] += 1
    for k in range(days):
        room = (
            waiting
            if new_per_day is None
            else max(0, new_per_day - (introduced_on(states, now.date()) if k == 0 else 0))
        )
        counts[k][1] = min(waiting, room)
        waiting -= counts[k][1]
    return [tuple(c) for c in counts]


def retention(log: list[Review]) -> float | None:
    """Share of reviews answered Hard, Good or Easy (remembered), not Again."""
    return sum(r.rating != fsrs.Rating.Again for r in log) / len(log) if log else None


def stats(states: dict[str, State], log: list[Review], now: dt.datetime, new_per_day: int | None = NEW_PER_DAY) -> str:
    by_topic: dict[str, Counter] = defaultdict(Counter)
    today = {s.card.id for s in due(states, now, None, new_per_day)}
    for s in states.values():
        t = by_topic[s.card.topic]
        t["cards"] += 1
        t["new"] += s.new
        t["due"] += s.card.id in today
        t["changed"] += bool(s.changed)

    def cell(text, width: int, right: bool = True) -> str:  # pad by display width (a CJK character is 2 columns)
        pad = " " * max(0, width - wcswidth(str(text)))
        return pad + str(text) if right else str(text) + pad

    lines = [cell("主题", 15, False) + "".join(cell(h, 7) for h in ("卡片", "新", "今天", "改动"))]
    for topic in sorted(by_topic):
        t = by_topic[topic]
        lines.append(cell(topic, 15, False) + "".join(cell(t[k], 7) for k in ("cards", "new", "due", "changed")))
    days = forecast(states, now, 7, new_per_day)
    limit = "不限" if new_per_day is None else f"{new_per_day} 张"
    lines.append(
        f"未来 7 天每天到期（复习+新卡片，每天新卡片上限 {limit}）："
        + " ".join(f"{(now + dt.timedelta(days=k)).strftime('%m-%d')}:{r}+{n}" for k, (r, n) in enumerate(days))
    )
    waiting = sum(s.new for s in states.values()) - sum(n for _, n in days)
    if waiting > 0:
        lines.append(f"7 天后还有 {waiting} 张新卡片未开始")
    r = retention(log)
    lines.append(f"已复习 {len(log)} 次" + (f"，记住的比例 {r:.0%}" if r is not None else ""))
    return "\n".join(lines)


# ---- the terminal session -----------------------------------------------------------------------------

VERDICT_STYLE = {
    "verified": "bold green",
    "refuted": "bold red",
    "qualified": "bold yellow",
    "open": "bold blue",
    "answered": "bold cyan",
}
SERVE_FILE = (
    "serve.json"  # written by `kb serve` into .kb/ (kb.review_server): where it serves and its process, never the token
)
_SPAN = re.compile(
    r"\$\$(?P<display>.+?)\$\$|(?<![\\$])\$(?P<math>[^$\n]+?)\$|`(?P<code>[^`\n]+)`"
    r"|\*\*(?P<bold>[^*]+)\*\*|!?\[(?P<link>[^\]]*)\]\([^)]*\)",
    re.S,
)


def rich_text(markdown_text: str, style: str = ""):
    """Card Markdown as rich Text: formulas as Unicode (pylatexenc), code as code, bold as bold, links as text."""
    from rich.text import Text

    from kb.cards import tex_text

    out = Text(style=style)
    at = 0
    for m in _SPAN.finditer(markdown_text):
        out.append(markdown_text[at : m.start()])
        if m.group("display") or m.group("math"):
            out.append(tex_text(m.group("display") or m.group("math")), style="italic")
        elif m.group("code"):
            out.append(m.group("code"), style="bold cyan on grey15")
        elif m.group("bold"):
            out.append(m.group("bold"), style="bold")
        else:
            out.append(m.group("link"), style="underline")
        at = m.end()
    out.append(markdown_text[at:])
    return out


def plain(markdown_text: str) -> str:
    """Card text for a terminal without styles: formulas as Unicode text, no Markdown marks."""
    return rich_text(markdown_text).plain


def served(project: Project) -> dict | None:
    """What `kb serve` wrote into .kb/serve.json, if that server is still running."""
    import json

    try:
        info = json.loads((project.root / ".kb" / SERVE_FILE).read_text(encoding="utf-8"))
        os.kill(int(info["pid"]), 0)
        return info if isinstance(info.get("url"), str) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def card_link(project: Project, card: Card, server: dict | None) -> tuple[str, str]:
    """(shown text, URL) of the card's source: the served page while `kb serve` runs, else the file."""
    if server:
        from kb.site import Site

        url = server["url"].rstrip("/") + "/" + Site.load(project).url(card.page).lstrip("/") + f"#{card.anchor}"
        return url, url
    path = project.docs_dir / card.page
    return f"{project.rel(path)}#{card.anchor}", path.resolve().as_uri() + f"#{card.anchor}"


def session(
    project: Project, now: dt.datetime, topic: str | None, ask=None, say=None, new_per_day: int | None = NEW_PER_DAY
) -> int:
    """Review today's due cards: question, recall, short answer (and more on request), grade; a log line per grade."""
    from rich.console import Console

    # The terminal's own width when there is one (COLUMNS inherited from another program can be stale)
    try:
        width = os.get_terminal_size(sys.stdout.fileno()).columns if sys.stdout.isatty() else None
    except (OSError, ValueError):
        width = None
    console = Console(highlight=False, emoji=False, width=width)
    say = say or console.print
    ask = ask or console.input
    kb = KnowledgeBase.load(project)
    deck = cards(kb)
    path = log_path(project)
    states = schedule(deck, project_log(project), now)
    if topic is not None and topic not in {c.topic for c in deck}:
        raise KbError(f"no cards for topic '{topic}' (topics: {', '.join(sorted({c.topic for c in deck}))})")
    todo = due(states, now, topic, new_per_day)
    if not todo:
        say("今天没有到期的卡片。" + (f"（主题 {topic}）" if topic else ""))
    done: list[Review] = []
    try:
        _grade(project, todo, path, now, done, ask, say, served(project))
    except KeyboardInterrupt:  # Ctrl-C: every grade given so far is already in the log, and stays
        raise KbInterrupted(
            f"interrupted; {len(done)} grade{'s' if len(done) != 1 else ''} of this session kept in {project.rel(path)}"
        ) from None
    log = project_log(project)
    after = schedule(deck, log, now)
    soon = sum(now < st.due <= now + dt.timedelta(days=1) for st in after.values())
    r = retention(log)
    say(
        f"\n本次复习 {len(done)} 张；24 小时内到期 {soon} 张"
        + (f"；至今记住的比例 {r:.0%}" if r is not None else "")
        + "。"
    )
    return 0


class KbInterrupted(KbError):
    """Ctrl-C in a session: what was saved is said (exit code 130)."""

    exit_code = 130


def _grade(
    project: Project,
    todo: list[State],
    path: Path,
    now: dt.datetime,
    done: list[Review],
    ask,
    say,
    server: dict | None = None,
) -> None:
    from rich.text import Text

    for k, s in enumerate(todo, 1):
        card = s.card
        say(Text(f"\n[{k}/{len(todo)}] {card.topic} · {'新卡片' if s.new else '复习'}", style="dim"))
        if s.changed:
            say(Text(f"！{s.changed}", style="bold magenta"))
        if card.context:
            say(Text.assemble(("笔记里的上一句：", "dim"), rich_text(card.context, "dim")))
        say(Text.assemble(("问：", "bold"), rich_text(card.front)))
        try:
            if ask("（回车看答案，q 结束）").strip().lower() == "q":
                break
            style = VERDICT_STYLE.get(card.status, "bold")
            say(Text.assemble(("答：", "bold"), _verdict_first(card.answer, style)))
            shown_more = False
            while True:
                answer = ask("评分 1 重来 2 困难 3 良好 4 简单（m 详情，q 结束）：").strip().lower()
                if answer in GRADES or answer == "q":
                    break
                if answer == "m" and not shown_more:
                    shown_more = True
                    say(rich_text(re.sub(r"(?<!\n)\n(?!\n|\s*(?:[|*+-] |\d+\. ))", " ", card.more)))
                    text, url = card_link(project, card, server)
                    say(Text.assemble(("原文：", "dim"), (text, f"link {url} underline")))
                    continue
                say("请输入 1、2、3、4（或 a/h/g/e），m 看完整说明，q 结束。")
        except EOFError:
            break
        if answer == "q":
            break
        review = Review(now, card.id, GRADES[answer], card.digest, card.status)
        append(path, review)
        done.append(review)


def _verdict_first(answer: str, style: str):
    """The answer with its leading verdict (the first bold span) in the verdict's colour."""
    from rich.text import Text

    m = re.match(r"\*\*([^*]+)\*\*", answer)
    if not m:
        return rich_text(answer)
    return Text.assemble((m.group(1), style), rich_text(answer[m.end() :]))
