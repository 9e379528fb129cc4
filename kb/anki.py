"""``kb export anki PATH``: the review cards as an Anki deck (``.apkg``, written by genanki).

Each card is one note whose GUID derives from the card's id, so importing a
newer export updates the notes instead of adding copies. Math keeps its TeX
with the delimiters Anki renders (``\\(…\\)``, ``\\[…\\]``).
"""

from __future__ import annotations

import hashlib
import html
import os
import re
import sqlite3
import tempfile
from pathlib import Path
from urllib.parse import urljoin

import genanki

from kb.model import KnowledgeBase
from kb.project import KbError, Project
from kb.site import Site
from kb.cards import cards

MODEL_ID = 1_718_302_611  # fixed: a re-import recognises the note type
DISPLAY = re.compile(r"\$\$(.+?)\$\$", re.S)
INLINE = re.compile(r"(?<![\\$])\$(?!\s)([^$\n]+?)(?<!\s)\$")
LINK = re.compile(r"\[([^\]]*)\]\(([^)]*)\)")


def anki_text(markdown_text: str) -> str:
    """Card text as Anki HTML: escaped, math with Anki's delimiters, links as their text, line breaks kept."""
    maths: list[str] = []

    def keep(m: re.Match, left: str, right: str) -> str:
        maths.append(f"{left}{html.escape(m.group(1))}{right}")
        return f"\x00{len(maths) - 1}\x00"

    text = DISPLAY.sub(lambda m: keep(m, "\\[", "\\]"), markdown_text)
    text = INLINE.sub(lambda m: keep(m, "\\(", "\\)"), text)
    text = LINK.sub(lambda m: m.group(1), text)
    text = html.escape(text).replace("\n", "<br>")
    text = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)
    return re.sub("\x00(\\d+)\x00", lambda m: maths[int(m.group(1))], text)


MODEL = genanki.Model(
    MODEL_ID, "Learning Notes card",
    fields=[{"name": "Front"}, {"name": "Back"}, {"name": "Card"}, {"name": "Link"}],
    templates=[{"name": "Card 1", "qfmt": "{{Front}}",
                "afmt": "{{FrontSide}}<hr id=answer>{{Back}}<p class=link>{{Link}}</p>"}],
)


def export(project: Project, path: Path) -> Path:
    if path.suffix != ".apkg":
        raise KbError(f"{path}: the Anki file must end in .apkg")
    deck_id = int(hashlib.sha256(str(project.config.get("site_name", "Learning Notes")).encode()).hexdigest()[:8], 16)
    deck = genanki.Deck(deck_id, str(project.config.get("site_name", "Learning Notes")))
    site = Site.load(project)
    base = str(site.config.site_url or "/")
    for card in cards(KnowledgeBase.load(project)):
        url = f"{urljoin(base, site.url(card.page))}#{card.anchor}"
        deck.add_note(genanki.Note(model=MODEL, guid=genanki.guid_for(card.id), tags=[card.topic.replace(" ", "_")],
                                   fields=[anki_text(card.front), anki_text(card.back), html.escape(card.id),
                                           f'<a href="{html.escape(url)}">{html.escape(url)}</a>']))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KbError(f"{path}: cannot write ({e.strerror or e})") from None
    write_atomically(path, lambda tmp: genanki.Package(deck).write_to_file(str(tmp)))
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
