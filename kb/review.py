"""Spaced repetition of what the notes ask and claim, scheduled with FSRS.

Cards come from the knowledge model:

- a **claim** card: front the claim's sentence, back its status, the first
  paragraph of its reason and a link; its id is ``claim:<claim id>``;
- a **question** card, for each question that has an answer (a claim or an
  answer box): front the question, back each answer with its verdict; its id
  is ``question:<file>:<digest of the question's words>``, so it survives
  lines moving around it. Open questions are not cards.

Every card carries a digest of what it shows. The review log is a plain,
versioned text file (``review-log.tsv``): one line per review, appended under
a lock. Replaying it through FSRS gives each card's state; a card whose
digest changed since its last review (its claim was refuted, its answer
rewritten) is due again as a relearning card, with the reason shown.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import fsrs
from filelock import FileLock
from wcwidth import wcswidth

from kb import sources
from kb.model import Answer, Claim, KnowledgeBase, Question
from kb.project import KbError, Project, SourceError

LOG_NAME = "review-log.tsv"
LOG_HEADER = ("# kb review log: one line per review, appended by `kb review` (tab-separated):\n"
              "# time (UTC)\tcard\tgrade (1 again, 2 hard, 3 good, 4 easy)\tdigest of the card\tstatus shown\n")
GRADES = {"1": fsrs.Rating.Again, "2": fsrs.Rating.Hard, "3": fsrs.Rating.Good, "4": fsrs.Rating.Easy,
          "a": fsrs.Rating.Again, "h": fsrs.Rating.Hard, "g": fsrs.Rating.Good, "e": fsrs.Rating.Easy}
GRADE_NAMES = {fsrs.Rating.Again: "重来", fsrs.Rating.Hard: "困难", fsrs.Rating.Good: "良好", fsrs.Rating.Easy: "简单"}
SCHEDULER = fsrs.Scheduler(enable_fuzzing=False)  # deterministic: the same log gives the same schedule


@dataclass(frozen=True)
class Card:
    id: str
    topic: str
    front: str
    back: str  # Markdown, links relative to the docs folder's root
    status: str  # the status (or verdict) key the back shows
    status_label: str
    page: str  # docs-relative page and anchor the card links to
    anchor: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(f"{self.front}\n{self.status}\n{self.back}".encode("utf-8")).hexdigest()[:16]

    @property
    def number(self) -> int:
        """A stable integer id for FSRS."""
        return int(hashlib.sha256(self.id.encode("utf-8")).hexdigest()[:12], 16)


def _reason(owner: Claim | Answer) -> str:
    """The first paragraph of a claim's or answer's explanation (Markdown), links made docs-relative."""
    page, block = owner.page, owner.block
    paragraph: list[str] = []
    for line in page.lines[block.body_start:block.end]:
        text = line[4:] if line.startswith("    ") else line.strip()
        if not text.strip():
            if paragraph:
                break
            continue
        if text.lstrip().startswith(("```", "~~~", "--8<--", "!!!", "???")):
            if paragraph:
                break
            continue
        paragraph.append(text)
    base = Path(page.src_uri).parent.as_posix()

    def absolute(m: re.Match) -> str:
        url = m.group("url")
        if "://" in url or url.startswith(("#", "/", "mailto:")):
            return m.group(0)
        return m.group(0).replace(f"({url}", f"(/{sources.normalise_uri(f'{base}/{url}')}", 1)

    return sources.LINK.sub(absolute, "\n".join(paragraph))


def cards(kb: KnowledgeBase) -> list[Card]:
    """The deck (made once per model)."""
    deck = kb.__dict__.get("_review_cards")
    if deck is None:
        deck = kb.__dict__["_review_cards"] = _make_cards(kb)
    return deck


def _make_cards(kb: KnowledgeBase) -> list[Card]:
    out: list[Card] = []
    for c in kb.claims:
        back = f"**{c.status.label}**。{_reason(c)}".strip()
        out.append(Card(f"claim:{c.id}", c.page.section, c.title, back, c.status.key, c.status.label,
                        c.page.src_uri, c.anchor))
    for q in kb.questions:
        if not q.answered_by:
            continue
        parts, verdicts = [], []
        for owner in q.answered_by:
            ref = next((r for r in owner.answers if r.post is q.page and r.line == q.line), None)
            verdict = ref.verdict if ref else None
            if verdict:
                verdicts.append(verdict)
            label = f"论断（{owner.status.label}）" if isinstance(owner, Claim) else "解答"
            parts.append(f"{label}：{owner.title}" + (f" —— 对这句话的判定：{verdict.label}" if verdict else "")
                         + f"\n\n{_reason(owner)}")
        status = verdicts[0] if verdicts else None
        digest = hashlib.sha256(q.text.encode("utf-8")).hexdigest()[:10]
        topic = _question_topic(kb, q)
        out.append(Card(f"question:{q.page.rel}:{digest}", topic, q.text, "\n\n".join(parts).strip(),
                        status.key if status else "answered", status.label if status else "已解答",
                        q.page.src_uri, q.anchor))
    return sorted(out, key=lambda c: (c.topic, c.id))


def _question_topic(kb: KnowledgeBase, q: Question) -> str:
    """A question is filed under the topic of what answers it (a post has several topics)."""
    sections = Counter(o.page.section for o in q.answered_by)
    return sections.most_common(1)[0][0] if sections else q.page.section


# ---- the log ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Review:
    time: dt.datetime
    card: str
    rating: fsrs.Rating
    digest: str
    status: str


def log_path(project: Project) -> Path:
    return project.root / LOG_NAME


def project_log(project: Project) -> list[Review]:
    """The project's review log (a damaged one is a SourceError naming file and line)."""
    path = log_path(project)
    return read_log(path, project.rel(path))


def read_log(path: Path, shown: str | None = None) -> list[Review]:
    """The reviews of the log, oldest first; a damaged log is refused at its first bad line.

    A UTF-8 byte order mark is tolerated (it is valid UTF-8 with a signature, as
    some Windows editors save it); bytes that are not UTF-8, git's merge conflict
    markers and a line that is not a review are errors naming the line. The file
    is never rewritten here: the learner resolves it, nothing is lost.
    """
    shown = shown or path.name
    if not path.is_file():
        return []
    out = []
    for n, line in enumerate(sources.read_text(path, shown).split("\n"), 1):
        if not line.strip() or line.startswith("#"):
            continue
        marker = sources.conflict_marker(line)
        if marker:
            raise SourceError(shown, n, f"git merge conflict marker '{marker}': keep both sides' review lines "
                              "(each is one review), delete the marker lines, then run kb again")
        parts = line.split("\t")
        try:
            time = dt.datetime.fromisoformat(parts[0])
            rating = GRADES[parts[2]]
            if not parts[1].strip():
                raise ValueError("no card")
        except (IndexError, ValueError, KeyError):
            raise SourceError(shown, n, "not a review line (time, card, grade 1-4, digest, status)") from None
        if time.tzinfo is None:
            time = time.replace(tzinfo=dt.timezone.utc)
        out.append(Review(time, parts[1], rating, parts[3] if len(parts) > 3 else "", parts[4] if len(parts) > 4 else ""))
    return sorted(out, key=lambda r: r.time)


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


# ---- scheduling -----------------------------------------------------------------------------------


@dataclass
class State:
    card: Card
    fsrs_card: fsrs.Card
    reviews: list[Review] = field(default_factory=list)
    changed: str = ""  # why the card came back although it was learned

    @property
    def due(self) -> dt.datetime:
        return self.fsrs_card.due

    @property
    def new(self) -> bool:
        return not self.reviews


def schedule(deck: list[Card], log: list[Review], now: dt.datetime) -> dict[str, State]:
    """Each card's FSRS state after replaying the log; changed cards are due again."""
    states = {c.id: State(c, fsrs.Card(card_id=c.number, due=now)) for c in deck}
    for r in log:
        s = states.get(r.card)
        if s is None:  # a card that no longer exists
            continue
        s.fsrs_card, _ = SCHEDULER.review_card(s.fsrs_card, r.rating, review_datetime=r.time)
        s.reviews.append(r)
    labels = {"verified": "已验证", "refuted": "已证伪", "qualified": "部分成立", "open": "待解决", "answered": "已解答"}
    for s in states.values():
        if s.reviews and s.reviews[-1].digest != s.card.digest:
            last = s.reviews[-1].status
            what = "此论断" if s.card.id.startswith("claim:") else "此问题的解答"
            s.changed = (f"{what}已从 {labels.get(last, last)} 改为 {s.card.status_label}" if last and last != s.card.status
                         else f"{what}的内容已改写")
            s.fsrs_card.state, s.fsrs_card.step = fsrs.State.Relearning, 0
            s.fsrs_card.due = min(s.fsrs_card.due, now)
    return states


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
