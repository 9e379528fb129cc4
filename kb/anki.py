"""``kb export anki PATH``: the review cards as an Anki deck (``.apkg``, written by genanki).

Each card is one note whose GUID derives from the card's id, so importing a
newer export updates the notes instead of adding copies. Math keeps its TeX
with the delimiters Anki renders (``\\(…\\)``, ``\\[…\\]``); code is <code>, no
Markdown is left. The review log goes along: a revlog row per logged review, and
each card's due date, interval and FSRS memory state (``cards.data``) from the
FSRS replay, so AnkiDroid continues the schedule. The link to the card's page is
there only when ``site_url`` is a published (not local) address.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import os
import re
import sqlite3
import tempfile
from pathlib import Path
from urllib.parse import urljoin

import fsrs
import genanki

from kb import cards as cards_mod
from kb.cards import cards
from kb.model import KnowledgeBase
from kb.project import KbError, Project
from kb.site import Site

MODEL_ID = 1_718_302_611  # fixed: a re-import recognises the note type
DISPLAY = re.compile(r"\$\$(.+?)\$\$", re.S)
INLINE = re.compile(r"(?<![\\$])\$(?!\s)([^$\n]+?)(?<!\s)\$")
CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\[([^\]]*)\]\(([^)]*)\)")
LOCAL = re.compile(r"^https?://(?:127\.\d+\.\d+\.\d+|localhost|\[::1\]|0\.0\.0\.0)(?::\d+)?(?:/|$)")
DAY = 86_400


def anki_text(markdown_text: str) -> str:
    """Card Markdown as Anki HTML: escaped, math in ``\\(…\\)``/``\\[…\\]``, code as <code>, no Markdown left."""
    kept: list[str] = []

    def keep(value: str) -> str:
        kept.append(value)
        return f"\x00{len(kept) - 1}\x00"

    text = DISPLAY.sub(lambda m: keep(f"\\[{html.escape(m.group(1))}\\]"), markdown_text)
    text = INLINE.sub(lambda m: keep(f"\\({html.escape(m.group(1))}\\)"), text)
    text = CODE.sub(lambda m: keep(f"<code>{html.escape(m.group(1))}</code>"), text)
    text = LINK.sub(lambda m: m.group(1), text)
    text = re.sub(r"(?<!\n)\n(?!\n|\s*(?:[|*+-] |\d+\. ))", " ", text)  # Markdown's soft line breaks
    text = html.escape(text).replace("\n", "<br>")
    text = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)
    return re.sub("\x00(\\d+)\x00", lambda m: kept[int(m.group(1))], text)


MODEL = genanki.Model(
    MODEL_ID,
    "Learning Notes card",
    fields=[{"name": "Front"}, {"name": "Back"}, {"name": "Card"}, {"name": "Link"}],
    templates=[
        {
            "name": "Card 1",
            "qfmt": "{{Front}}",
            "afmt": "{{FrontSide}}<hr id=answer>{{Back}}{{#Link}}<p class=link>{{Link}}</p>{{/Link}}",
        }
    ],
)


def site_link(base: str, path: str, anchor: str) -> str:
    """The card's page on the published site; none when ``site_url`` is local (a link that works only while serving)."""
    if not base or LOCAL.match(base) or "://" not in base:
        return ""
    url = f"{urljoin(base, path)}#{anchor}"
    return f'<a href="{html.escape(url)}">{html.escape(url)}</a>'


class _Package(genanki.Package):
    """genanki's package, then each card's FSRS state and review history written into the collection."""

    def __init__(self, deck, states: dict, log: list):
        super().__init__(deck)
        self.states, self.log = states, log

    def write_to_db(self, cursor, timestamp, id_gen):
        super().write_to_db(cursor, timestamp, id_gen)
        write_schedule(cursor, self.states, self.log)


def write_schedule(cursor, states: dict, log: list) -> None:
    """Anki's card columns from the FSRS state, and a revlog row per logged review (replayed through FSRS)."""
    crt = cursor.execute("select crt from col").fetchone()[0]
    by_guid = {genanki.guid_for(card_id): card_id for card_id in states}
    rows = cursor.execute("select cards.id, notes.guid from cards join notes on cards.nid = notes.id").fetchall()
    used: set[int] = set()
    for cid, guid in rows:
        state = states.get(by_guid.get(guid))
        if state is None or not state.reviews:
            continue
        fc = state.fsrs_card
        card = fsrs.Card(card_id=state.card.number, due=state.reviews[0].time)
        lapses = 0
        for r in state.reviews:  # the revlog: one row per review, with the interval it gave
            before = card.state
            last_ivl = _ivl(card)
            card, _ = cards_mod.SCHEDULER.review_card(card, r.rating, review_datetime=r.time)
            lapses += before == fsrs.State.Review and r.rating == fsrs.Rating.Again
            rid = int(r.time.timestamp() * 1000)
            while rid in used:
                rid += 1
            used.add(rid)
            kind = {fsrs.State.Learning: 0, fsrs.State.Review: 1, fsrs.State.Relearning: 2}[before]
            cursor.execute(
                "insert into revlog (id, cid, usn, ease, ivl, lastIvl, factor, time, type) "
                "values (?, ?, -1, ?, ?, ?, ?, 0, ?)",
                (rid, cid, int(r.rating), _ivl(card), last_ivl, int(round((card.difficulty or 0) * 100)), kind),
            )
        if fc.state == fsrs.State.Review:
            ivl = max(1, (fc.due - (fc.last_review or fc.due)).days)
            ctype = queue = 2
            due = (fc.due.date() - dt.datetime.fromtimestamp(crt, dt.UTC).date()).days
        else:  # learning or relearning (a changed card): due at a time, in seconds
            ivl = max(0, (fc.due - (fc.last_review or fc.due)).days)
            ctype, queue = (1, 1) if fc.state == fsrs.State.Learning else (3, 1)
            due = int(fc.due.timestamp())
        data = json.dumps(
            {
                "s": round(fc.stability, 4),
                "d": round(fc.difficulty, 4),
                "dr": 0.9,
                "lrt": int(fc.last_review.timestamp()) if fc.last_review else None,
            }
        )
        cursor.execute(
            "update cards set type=?, queue=?, due=?, ivl=?, factor=2500, reps=?, lapses=?, left=0, data=? where id=?",
            (ctype, queue, due, ivl, len(state.reviews), lapses, data, cid),
        )


def _ivl(card: fsrs.Card) -> int:
    """Anki's revlog interval: days for a review card, negative seconds for a learning step."""
    if card.last_review is None:
        return 0
    if card.state == fsrs.State.Review:
        return max(1, (card.due - card.last_review).days)
    return -int((card.due - card.last_review).total_seconds())


def export(project: Project, path: Path, now: dt.datetime | None = None) -> Path:
    if path.suffix != ".apkg":
        raise KbError(f"{path}: the Anki file must end in .apkg")
    now = now or dt.datetime.now(dt.UTC)
    deck_id = int(hashlib.sha256(str(project.config.get("site_name", "Learning Notes")).encode()).hexdigest()[:8], 16)
    deck = genanki.Deck(deck_id, str(project.config.get("site_name", "Learning Notes")))
    site = Site.load(project)
    base = str(site.config.site_url or "")
    kb = KnowledgeBase.load(project)
    log = cards_mod.project_log(project)
    all_cards = cards(kb)
    states = cards_mod.schedule(all_cards, log, now)
    for card in all_cards:
        back = anki_text(card.answer) + (
            f"<details><summary>更多</summary>{anki_text(card.more)}</details>" if card.more else ""
        )
        front = anki_text(card.front) + (
            f"<p class=context>笔记里的上一句：{anki_text(card.context)}</p>" if card.context else ""
        )
        deck.add_note(
            genanki.Note(
                model=MODEL,
                guid=genanki.guid_for(card.id),
                tags=[card.topic.replace(" ", "_")],
                fields=[front, back, html.escape(card.id), site_link(base, site.url(card.page), card.anchor)],
            )
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KbError(f"{path}: cannot write ({e.strerror or e})") from None
    write_atomically(path, lambda tmp: _Package(deck, states, log).write_to_file(str(tmp)))
    return path


def write_atomically(path: Path, write) -> None:
    """``write(tmp)`` into a temporary file beside ``path``, then rename it over ``path``.

    A failure (a full disk, Ctrl-C) leaves the previous file as it was and no partial file.
    """
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except (OSError, sqlite3.Error) as e:  # genanki builds the deck in SQLite: "database or disk is full"
        tmp.unlink(missing_ok=True)
        reason = getattr(e, "strerror", None) or e
        raise KbError(f"{path}: cannot write ({reason}); the previous file is unchanged") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
