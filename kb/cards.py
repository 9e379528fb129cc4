"""The review cards: what the notes ask and claim, as cards, and each card's FSRS state.

Cards come from the knowledge model:

- a **claim** card: front the claim's sentence, back its status, the first
  paragraph of its reason and a link; its id is ``claim:<claim id>``;
- a **question** card, for each question that has an answer (a claim or an
  answer box): front the question, back each answer with its verdict; its id
  is ``question:<file>:<digest of the question's words>``, so it survives
  lines moving around it. Open questions are not cards.

Every card carries a digest of what it shows. The review log is a plain,
versioned text file (``review-log.tsv``), one line per review. Replaying it
through FSRS gives each card's state; a card whose digest changed since its
last review (its claim was refuted, its answer rewritten) is due again as a
relearning card, with the reason shown.

The ``kb review`` command, the review page, the pages' card counts and the
Anki export all read the deck from here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import fsrs

from kb import sources
from kb.model import Answer, Claim, KnowledgeBase, Question
from kb.project import KbError, Project, SourceError

LOG_NAME = "review-log.tsv"
GRADES = {"1": fsrs.Rating.Again, "2": fsrs.Rating.Hard, "3": fsrs.Rating.Good, "4": fsrs.Rating.Easy,
          "a": fsrs.Rating.Again, "h": fsrs.Rating.Hard, "g": fsrs.Rating.Good, "e": fsrs.Rating.Easy}
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
