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
from kb.model import Answer, Claim, KnowledgeBase, Question, Status
from kb.project import Project, SourceError

LOG_NAME = "review-log.tsv"
GRADES = {
    "1": fsrs.Rating.Again,
    "2": fsrs.Rating.Hard,
    "3": fsrs.Rating.Good,
    "4": fsrs.Rating.Easy,
    "a": fsrs.Rating.Again,
    "h": fsrs.Rating.Hard,
    "g": fsrs.Rating.Good,
    "e": fsrs.Rating.Easy,
}
SCHEDULER = fsrs.Scheduler(enable_fuzzing=False)  # deterministic: the same log gives the same schedule


ANSWER_LIMIT = 120  # characters of a card's short answer, as the learner reads it (formulas as Unicode text)

# Words that point at something beside the card (a table above, the previous claim, the next section):
# the card does not show it, so a card never says them (SuperMemo's rule: no missing context).
DEICTIC = re.compile(
    r"上表|下表|上图|下图|上一条|下一条|上一节|下一节|最后一节|本节|这一节|上一段|下一段|上式|下式"
    r"|上文|下文|前文|上述|见上|见下|如上|如下|同上|上面(?:的|说|一行|那)|下面(?:的|第|说|那)"
)
_RESOLVE = [  # what each pointer becomes: the linked source, named as such
    (re.compile(r"上表|下表"), "原文的表"),
    (re.compile(r"上图|下图"), "原文的图"),
    (re.compile(r"上式|下式"), "原文的式子"),
    (re.compile(r"上一条|下一条"), "原文中相邻的论断"),
    (re.compile(r"(?:见)?(?:上一节|下一节|最后一节|本节|这一节|上一段|下一段)"), "见原文"),
    (re.compile(r"上面一行"), "原文的另一行"),
    (re.compile(r"(?:上面|下面)(?=的|说|那|第)|上文|下文|前文|上述"), "原文中"),
    (re.compile(r"见上|见下|如上|如下|同上"), "见原文"),
]
_MATH = re.compile(r"\$\$.+?\$\$|\$[^$\n]+?\$|`[^`\n]+`", re.S)
_PAREN = re.compile(r"（[^（）]*）")  # an aside (full-width parentheses; ASCII ones are formulas and shapes)


def _drop_asides(text: str, only=None) -> str:
    """Asides removed (those matching ``only`` if given), where they hold whole formulas and code spans."""

    def drop(m: re.Match) -> str:
        inside = _MATH.sub("", m.group(0))
        whole = inside.count("$") % 2 == 0 and inside.count("`") % 2 == 0
        return "" if whole and (only is None or only.search(m.group(0))) else m.group(0)

    return _PAREN.sub(drop, text)


@dataclass(frozen=True)
class Card:
    id: str
    topic: str
    front: str  # Markdown: what the card asks
    answer: str  # Markdown: the verdict and one short sentence (at most ANSWER_LIMIT characters as shown)
    more: str  # Markdown, links relative to the docs folder's root: the full explanation, behind a "more" step
    status: str  # the status (or verdict) key the answer shows
    status_label: str
    page: str  # docs-relative page and anchor the card links to
    anchor: str
    content: str = ""  # what the card is about (claim or question words, status, explanation): the digest's input
    context: str = ""  # a question's preceding line in the notes, when the question leans on it
    written: bool = False  # the short answer is the claim's `review:` line, not derived
    over_limit: bool = False  # the derived short answer had to be cut: the claim wants a `review:` line

    @property
    def back(self) -> str:
        return f"{self.answer}\n\n{self.more}".strip()

    @property
    def digest(self) -> str:
        what = self.content or f"{self.front}\n{self.status}\n{self.back}"
        return hashlib.sha256(what.encode("utf-8")).hexdigest()[:16]

    @property
    def number(self) -> int:
        """A stable integer id for FSRS."""
        return int(hashlib.sha256(self.id.encode("utf-8")).hexdigest()[:12], 16)


def _reason(owner: Claim | Answer) -> str:
    """The first paragraph of a claim's or answer's explanation (Markdown), links made docs-relative."""
    page, block = owner.page, owner.block
    paragraph: list[str] = []
    for line in page.lines[block.body_start : block.end]:
        text = line[4:] if line.startswith("    ") else line.strip()
        if not text.strip():
            if paragraph and not all(p.lstrip().startswith("|") for p in paragraph):
                break  # a table alone is not yet the explanation: its reading follows
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


# ---- card text -----------------------------------------------------------------------------------


def _outside_math(text: str, change) -> str:
    """``change`` applied to the text between formulas and code spans (those are kept as they are)."""
    out, at = [], 0
    for m in _MATH.finditer(text):
        out += [change(text[at : m.start()]), m.group(0)]
        at = m.end()
    return "".join(out + [change(text[at:])])


def resolve_context(text: str) -> str:
    """Pointers to what the card does not show: an aside holding one is dropped, others name the source."""

    def change(part: str) -> str:
        for pattern, replacement in _RESOLVE:
            part = pattern.sub(replacement, part)
        return part

    return _outside_math(_drop_asides(text, DEICTIC), change)


_TEX2TEXT = None


def tex_text(tex: str) -> str:
    """A formula as Unicode text (pylatexenc), e.g. ``\\beta\\log Z`` -> ``β log Z``."""
    global _TEX2TEXT
    if _TEX2TEXT is None:
        from pylatexenc import latexwalker, macrospec
        from pylatexenc.latex2text import LatexNodes2Text, MacroTextSpec, get_default_latex_context_db

        spaced = ["log", "exp", "min", "max", "sin", "cos", "det", "arg", "sup", "inf", "lim", "tanh"]
        text_db = get_default_latex_context_db().filter_context()  # a copy, with the macros below first
        text_db.add_context_category(
            "kb",
            prepend=True,
            macros=[
                *[MacroTextSpec(name, f" {name} ") for name in spaced],
                MacroTextSpec("|", "‖"),
                MacroTextSpec("lVert", "‖"),
                MacroTextSpec("rVert", "‖"),
                MacroTextSpec("tfrac", "%(1)s/%(2)s"),
                MacroTextSpec("dfrac", "%(1)s/%(2)s"),
                MacroTextSpec("operatorname", "%(1)s"),
                MacroTextSpec("top", "ᵀ"),
            ],
        )
        parse_db = latexwalker.get_default_latex_context_db().filter_context()
        parse_db.add_context_category(
            "kb",
            prepend=True,
            macros=[
                macrospec.MacroSpec("tfrac", "{{"),
                macrospec.MacroSpec("dfrac", "{{"),
                macrospec.MacroSpec("operatorname", "{"),
            ],
        )
        _TEX2TEXT = (LatexNodes2Text(latex_context=text_db, math_mode="text", strict_latex_spaces=False), parse_db)
    converter, parse_db = _TEX2TEXT
    from pylatexenc.latexwalker import LatexWalker

    nodes = LatexWalker(_scripts(tex), latex_context=parse_db, tolerant_parsing=True).get_latex_nodes()[0]
    return re.sub(r"[ ]{2,}", " ", converter.nodelist_to_text(nodes)).strip()


_SUP = dict(zip("0123456789+-=()n*", "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁼⁽⁾ⁿ*"))
_SUB = dict(zip("0123456789+-=()aeioxtkijn", "₀₁₂₃₄₅₆₇₈₉₊₋₌₍₎ₐₑᵢₒₓₜₖᵢⱼₙ"))


def _scripts(tex: str) -> str:
    """Superscripts and subscripts made of digits and signs as Unicode (``10^{-12}`` -> ``10⁻¹²``)."""

    def convert(m: re.Match, table: dict) -> str:
        body = m.group(1) or m.group(2)
        return "".join(table[ch] for ch in body) if all(ch in table for ch in body) else m.group(0)

    tex = re.sub(r"\^(?:\{([^{}]+)\}|([0-9n*]))", lambda m: convert(m, _SUP), tex)
    return re.sub(r"_(?:\{([^{}]+)\}|([0-9]))", lambda m: convert(m, _SUB), tex)


def plain_text(markdown_text: str) -> str:
    """Card Markdown as the learner reads it: formulas as Unicode text, code and emphasis marks dropped."""
    text = re.sub(r"\$\$(.+?)\$\$", lambda m: tex_text(m.group(1)), markdown_text, flags=re.S)
    text = re.sub(r"(?<![\\$])\$([^$\n]+?)\$", lambda m: tex_text(m.group(1)), text)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"\1", text)
    return re.sub(r"`([^`\n]+)`", r"\1", text)


def shown_length(markdown_text: str) -> int:
    return len(plain_text(markdown_text))


def _sentences(markdown_text: str) -> list[str]:
    """Sentences of prose (tables, lists and headings left out), formulas and code kept whole."""
    prose = " ".join(
        line.strip()
        for line in markdown_text.split("\n")
        if line.strip() and not re.match(r"\s*(\||[-*+] |\d+\. |#)", line)
    )
    out = []
    pieces = _MATH.split(prose)
    spans = _MATH.findall(prose)
    current, depth = "", 0
    for k, piece in enumerate(pieces):
        for ch in piece:
            current += ch
            depth += (ch in "（(") - (ch in "）)")
            if ch in "。！？；" and depth <= 0:
                depth = 0
                out.append(current.strip())
                current = ""
        if k < len(spans):
            current += spans[k]
    if current.strip():
        out.append(current.strip())
    return [s for s in out if s.strip("。；！？ ")]


def _end(sentence: str) -> str:
    sentence = sentence.strip().rstrip("；;，,：: ")
    return sentence if sentence.endswith(("。", "！", "？", ".")) else sentence + "。"


def _cut(sentence: str, limit: int) -> str:
    """The sentence cut at its last clause boundary that keeps it within ``limit`` characters as shown."""
    best = ""
    for m in re.finditer(r"[，：、—]", _outside_math(sentence, lambda p: p.replace("\x00", ""))):
        head = sentence[: m.start()]
        if _MATH_OPEN(head):
            continue
        if shown_length(head) + 2 <= limit:
            best = head
    if best:
        return best.rstrip("，：、— ") + "……"
    text = plain_text(sentence)
    return text[: limit - 2] + "……"


def _MATH_OPEN(head: str) -> bool:
    """Whether a cut here would split a formula or a code span."""
    rest = _MATH.sub("", head)
    return rest.count("$") % 2 == 1 or rest.count("`") % 2 == 1


def short_answer(explanation: str, limit: int = ANSWER_LIMIT) -> tuple[str, bool]:
    """One sentence of the explanation saying why, within ``limit``; and whether it had to be cut."""
    candidates = [_end(resolve_context(_drop_asides(s))) for s in _sentences(explanation)]
    candidates = [c for c in candidates if shown_length(c) > 6]
    if not candidates:
        return "", False
    first = candidates[0]
    return (first, False) if shown_length(first) <= limit else (_cut(first, limit), True)


def _fit(text: str, limit: int = ANSWER_LIMIT) -> tuple[str, bool]:
    text = _end(resolve_context(text))
    return (text, False) if shown_length(text) <= limit else (_cut(text, limit), True)


# ---- the deck -----------------------------------------------------------------------------------------


def cards(kb: KnowledgeBase) -> list[Card]:
    """The deck (made once per model)."""
    deck = kb.__dict__.get("_review_cards")
    if deck is None:
        deck = kb.__dict__["_review_cards"] = _make_cards(kb)
    return deck


def claim_question(title: str) -> str:
    """A claim's sentence, asked: the learner decides whether it holds before seeing the verdict."""
    return f"对还是错：{title.strip().rstrip('。.；;，,')}？"


LEANS_ON = re.compile(r"^(?:那|这|它|其|此|但|所以|还是|或者|然后|而且|为什么(?:在|是)?这)")


def _context(q: Question) -> str:
    """The line before a question that starts by pointing back at it (那…、这样…、它…)."""
    if not LEANS_ON.match(q.text.strip()):
        return ""
    lines = q.page.lines
    k = q.page.index(q.line) - 1
    while 0 <= k < len(lines):
        line = re.sub(r"^\s*(?:[-*+]|\d+\.|>+)\s*", "", lines[k]).strip().lstrip("> ").strip()
        if line and not line.startswith(("#", "```", "!!!", "???")):
            return line
        k -= 1
    return ""


def _make_cards(kb: KnowledgeBase) -> list[Card]:
    out: list[Card] = []
    for c in kb.claims:
        reason = _reason(c)
        if c.card_answer:
            short, written = _end(c.card_answer), True
            cut = shown_length(short) > ANSWER_LIMIT  # written too long: listed on the claims page like a cut one
        else:
            short, cut = short_answer(reason)
            written = False
        if not short and c.status is Status.OPEN and c.missing:
            short, cut = _fit(f"还缺：{c.missing}")
        if not short:  # nothing to derive from: the claim wants a `review:` line
            short, cut = _fit(c.title), True
        out.append(
            Card(
                f"claim:{c.id}",
                c.page.section,
                claim_question(c.title),
                f"**{c.status.label}**。{short}",
                resolve_context(reason),
                c.status.key,
                c.status.label,
                c.page.src_uri,
                c.anchor,
                content=f"{c.title}\n{c.status.key}\n{reason}\n{c.card_answer or ''}",
                written=written,
                over_limit=cut,
            )
        )
    for q in kb.questions:
        if not q.answered_by:
            continue
        parts, verdicts, shorts = [], [], []
        cut = False
        for owner in q.answered_by:
            ref = next((r for r in owner.answers if r.post is q.page and r.line == q.line), None)
            verdict = ref.verdict if ref else None
            if verdict:
                verdicts.append(verdict)
            reason = _reason(owner)
            if isinstance(owner, Claim):
                label = f"论断（{owner.status.label}）"
                said = (
                    owner.title
                    if owner.status is Status.VERIFIED
                    else f"{owner.title if owner.title.startswith('“') else f'“{owner.title}”'}{owner.status.label}"
                )
            else:
                label, said = "解答", owner.title
            short, over = _fit(said)
            shorts.append(short)
            cut = cut or over
            parts.append(f"**{label}**：{owner.title}\n\n{resolve_context(reason)}")
        status = verdicts[0] if verdicts else None
        judged = status is not None and status.key in ("verified", "refuted", "qualified")
        answer = (f"**你的说法{status.label}**。" if judged else "") + shorts[0]
        digest = hashlib.sha256(q.text.encode("utf-8")).hexdigest()[:10]
        topic = _question_topic(kb, q)
        more = "\n\n".join(parts).strip()
        out.append(
            Card(
                f"question:{q.page.rel}:{digest}",
                topic,
                q.text,
                answer,
                more,
                status.key if status else "answered",
                status.label if status else "已解答",
                q.page.src_uri,
                q.anchor,
                content=f"{q.text}\n{status.key if status else ''}\n{more}",
                context=resolve_context(_context(q)),
                over_limit=cut,
            )
        )
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
            raise SourceError(
                shown,
                n,
                f"git merge conflict marker '{marker}': keep both sides' review lines "
                "(each is one review), delete the marker lines, then run kb again",
            )
        parts = line.split("\t")
        try:
            time = dt.datetime.fromisoformat(parts[0])
            rating = GRADES[parts[2]]
            if not parts[1].strip():
                raise ValueError("no card")
        except (IndexError, ValueError, KeyError):
            raise SourceError(shown, n, "not a review line (time, card, grade 1-4, digest, status)") from None
        time = time.replace(tzinfo=dt.UTC) if time.tzinfo is None else time.astimezone(dt.UTC)
        if not 1970 <= time.year <= 2200:  # a typo'd year: FSRS's next due date would overflow
            raise SourceError(shown, n, f"review time {parts[0]} is outside 1970-2200")
        out.append(
            Review(time, parts[1], rating, parts[3] if len(parts) > 3 else "", parts[4] if len(parts) > 4 else "")
        )
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
    labels = {
        "verified": "已验证",
        "refuted": "已证伪",
        "qualified": "部分成立",
        "open": "待解决",
        "answered": "已解答",
    }
    for s in states.values():
        if s.reviews and s.reviews[-1].digest != s.card.digest:
            last = s.reviews[-1].status
            what = "此论断" if s.card.id.startswith("claim:") else "此问题的解答"
            s.changed = (
                f"{what}已从 {labels.get(last, last)} 改为 {s.card.status_label}"
                if last and last != s.card.status
                else f"{what}的内容已改写"
            )
            s.fsrs_card.state, s.fsrs_card.step = fsrs.State.Relearning, 0
            s.fsrs_card.due = min(s.fsrs_card.due, now)
    return states
