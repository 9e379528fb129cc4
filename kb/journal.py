"""Append a dated note to the journal, safely.

A day's post is ``docs/journal/posts/YYYY-MM-DD.md``. Creating writes front
matter (date, slug, categories) and the heading ``# YYYYMMDD``; if the post
exists, the note becomes a new section at its end. Nothing is ever
overwritten: the new file must start with the old one's body, and it is
written to a temporary file and renamed over the old one in one step.
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import frontmatter
import yaml

from kb.project import allowed_topics

class JournalError(Exception):
    """A refused request: nothing was written."""


@dataclass
class Result:
    path: Path
    created: bool


def parse_date(value: str | None, today: dt.date | None = None) -> dt.date:
    if value is None:
        return today or dt.date.today()
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise JournalError(f"malformed date '{value}': expected YYYY-MM-DD, e.g. 2026-01-02")
    try:
        return dt.date.fromisoformat(value)
    except ValueError as e:
        raise JournalError(f"malformed date '{value}': {e}") from None


def check_topics(topics: list[str], allowed: list[str]) -> list[str]:
    for t in topics:
        if t not in allowed:
            close = [a for a in allowed if a.lower() == t.lower()] or difflib.get_close_matches(t, allowed, n=1, cutoff=0.5)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise JournalError(f"unknown topic '{t}'{hint}; allowed: {', '.join(allowed)}")
    return list(dict.fromkeys(topics))


def post_path(posts_dir: Path, journal_dir: Path, day: dt.date) -> Path:
    path = (posts_dir / f"{day.isoformat()}.md").resolve()
    if not path.is_relative_to(journal_dir.resolve()):
        raise JournalError(f"refusing to write {path}: it is outside the journal ({journal_dir})")
    return path


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _front_matter(day: dt.date, slug: str, topics: list[str]) -> str:
    meta = {"date": day, "slug": slug, "categories": topics}
    return "---\n" + yaml.safe_dump(meta, allow_unicode=True, sort_keys=False) + "---\n"


def new_note(
    posts_dir: Path,
    journal_dir: Path,
    *,
    day: dt.date,
    topics: list[str],
    body: str,
    allowed: list[str] | None = None,
    now: dt.datetime | None = None,
) -> Result:
    """Create the day's post, or append a section to it. Raises JournalError, writing nothing."""
    topics = check_topics(topics, allowed if allowed is not None else allowed_topics())
    if not body.strip():
        raise JournalError("empty note: nothing to write")
    path = post_path(posts_dir, journal_dir, day)
    slug = day.strftime("%Y%m%d")
    if not path.exists():
        if not path.parent.is_dir():
            raise JournalError(f"journal directory {path.parent} does not exist")
        text = _front_matter(day, slug, topics) + f"# {slug}\n\n" + body.rstrip("\n") + "\n"
        # O_EXCL: if someone created the post meanwhile, fail rather than overwrite it.
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise JournalError(f"{path} appeared while writing; nothing changed") from None
        finally:
            Path(tmp).unlink(missing_ok=True)
        return Result(path, created=True)

    old = path.read_text(encoding="utf-8")
    lines = old.split("\n")
    if not lines or lines[0].strip() != "---":
        raise JournalError(f"{path}:1: the post has no front matter (expected '---'); nothing changed")
    end = next((i for i in range(1, len(lines)) if lines[i].strip() in ("---", "...")), None)
    if end is None:
        raise JournalError(f"{path}:1: front matter is not closed by '---'; nothing changed")
    try:
        meta = frontmatter.loads(old).metadata
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 2 if mark else 1
        raise JournalError(f"{path}:{line}: front matter is not valid YAML ({e.__class__.__name__}); nothing changed") from None
    categories = list(meta.get("categories") or [])
    missing = [t for t in topics if t not in categories]
    head = "\n".join(lines[: end + 1])
    if missing:
        # Only the category list changes; the body is kept byte for byte.
        meta["categories"] = categories + missing
        head = "---\n" + yaml.safe_dump(dict(meta), allow_unicode=True, sort_keys=False) + "---"
    stamp = (now or dt.datetime.now()).strftime("%H:%M")
    body_old = "\n".join(lines[end + 1:])
    section = f"\n\n## 补充 {stamp}\n\n" + body.rstrip("\n") + "\n"
    new = head + "\n" + body_old.rstrip("\n") + section
    _atomic_write(path, new)
    return Result(path, created=False)
