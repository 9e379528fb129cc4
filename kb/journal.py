"""Append a dated note to the journal without ever losing one.

A day's post is ``<posts>/YYYY-MM-DD.md``. Creating writes front matter (date,
slug, categories) and the heading ``# YYYYMMDD``; if the post exists, the note
becomes a new section at its end. Every change happens under one lock for the
whole journal, re-reads the post under that lock, writes a temporary file in
the same folder, fsyncs it and renames it over the post, so that concurrent
``kb new`` runs (two terminals, an editor plugin, a script) all keep their
notes. The existing text is never rewritten: the new file must start with the
old one's body, and front matter edits touch only the ``categories`` line(s).
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
import re
import shlex
import stat
import tempfile
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from filelock import FileLock, Timeout

from kb import sources
from kb.project import KbError, SourceError

LOCK_NAME = ".kb-journal.lock"  # hidden: MkDocs leaves dot files out of the site
LOCK_TIMEOUT = 60.0


class JournalError(KbError):
    """A refused request: nothing was written."""


@dataclass
class Result:
    path: Path
    created: bool


# A journal date: a post is named by it (YYYYMMDD, four-digit year) and it is a day of the
# learner's life; outside this range it is a typo (0001-01-01 would be slug "10101").
FIRST_DAY, LAST_DAY = dt.date(1900, 1, 1), dt.date(2100, 12, 31)
NOTE_LIMIT = 100_000  # bytes of UTF-8: a day's note is a few KB; a pasted log or file is refused
ALLOWED_CONTROLS = "\n\t"
# Characters that show nothing on their own (besides the Unicode categories Z*, C*, M*): fillers.
BLANK_LETTERS = "\u115f\u1160\u3164\uffa0\u2800"


def parse_date(value: str | None, today: dt.date | None = None) -> dt.date:
    if value is None:
        return today or dt.date.today()
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise JournalError(f"malformed date '{value}': expected YYYY-MM-DD, e.g. 2026-01-02")
    try:
        day = dt.date.fromisoformat(value)
    except ValueError as e:
        raise JournalError(f"malformed date '{value}': {e}") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise JournalError(
            f"date '{value}' is outside the journal's range {FIRST_DAY.isoformat()} to "
            f"{LAST_DAY.isoformat()}; nothing written"
        )
    return day


def note_problem(body: str, limit: int | None = NOTE_LIMIT) -> str | None:
    """Why a note cannot be added as it is (None: it can): too large, a control character, nothing visible."""
    size = len(body.encode("utf-8", "surrogatepass"))
    if limit is not None and size > limit:
        return (
            f"the note is {size:,} bytes, over the limit of {limit:,} bytes for one note (a pasted file or log?); "
            "pass --allow-large to add it anyway"
        )
    for i, c in enumerate(body):
        if unicodedata.category(c) == "Cc" and c not in ALLOWED_CONTROLS:
            line = body.count("\n", 0, i) + 1
            column = i - (body.rfind("\n", 0, i) + 1) + 1
            return (
                f"the note has a control character U+{ord(c):04X} at line {line}, column {column} "
                "(only line breaks and tabs are allowed)"
            )
    if not any(unicodedata.category(c)[0] in "LNPS" and c not in BLANK_LETTERS for c in body):
        return "the note has no visible characters (only spaces, zero-width or other invisible characters)"
    for n, line in enumerate(body.split("\n"), 1):
        marker = sources.conflict_marker(line)
        if marker:  # the post would be refused by every build until it is resolved
            return (
                f"the note has a git merge conflict marker '{marker}' at line {n}: keep the side you mean "
                "(or indent the marker to quote it)"
            )
    return None


def check_topics(topics: list[str], allowed: list[str]) -> list[str]:
    for t in topics:
        if t not in allowed:
            # a near miss (case, a typo) is suggested; a different name is not (a new topic, say)
            close = [a for a in allowed if a.lower() == t.lower()] or difflib.get_close_matches(
                t, allowed, n=1, cutoff=0.75
            )
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise JournalError(
                f"unknown topic '{t}'{hint}; allowed: {', '.join(allowed)}; a new topic: kb topic new {shlex.quote(t)}"
            )
    return list(dict.fromkeys(topics))


class Journal:
    """The journal's posts folder, and the one safe way to add to it."""

    def __init__(self, posts_dir: Path, journal_dir: Path, allowed: list[str], shown=str):
        self.posts = Path(posts_dir)
        self.journal = Path(journal_dir)
        self.allowed = allowed
        self.shown = shown  # how a path is named in messages

    def path(self, day: dt.date) -> Path:
        """The day's post: the one whose front matter has that date, under any name (else ``<day>.md``)."""
        path = self.posts / f"{day.isoformat()}.md"
        if self.journal.is_symlink():
            raise JournalError(
                f"{self.shown(self.journal)}: the journal folder is a symlink (to "
                f"{os.readlink(self.journal)}); kb new writes only into the project's own folders"
            )
        if not self.posts.resolve().is_relative_to(self.journal.resolve()):
            raise JournalError(
                f"refusing to write into {self.posts}: it is outside the journal ({self.shown(self.journal)})"
            )
        through = self._symlink_on_the_way()
        if through:
            raise JournalError(
                f"refusing to write through the symlink {through} (to {os.readlink(through)}): "
                f"name the journal's posts folder itself ({self.shown(self.journal)}/...)"
            )
        if not self.posts.is_dir():
            raise JournalError(f"{self.shown(self.posts)}: the journal folder does not exist")
        path = self._day_post(day) or path
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise JournalError(f"{self.shown(path)}: not a regular file (kb new only writes plain posts)")
        if not os.access(self.posts, os.W_OK | os.X_OK):
            raise JournalError(f"{self.shown(self.posts)}: the folder is not writable")
        if path.exists() and not os.access(path, os.R_OK):
            raise JournalError(f"{self.shown(path)}: the post is not readable")
        return path

    def _day_post(self, day: dt.date) -> Path | None:
        """The post dated ``day`` whatever its file name or folder (the blog allows one per day).

        The learner may name a post otherwise (``sac-notes.md``, ``2026/jan-3.md``): a note for
        its day goes there, not into a second post the build would refuse. ``<day>.md`` dated
        another day is refused (a note there would belong to that other day).
        """
        found, named = [], None
        for candidate in sorted(self.posts.rglob("*.md")):
            if any(part.startswith(".") for part in candidate.relative_to(self.posts).parts):
                continue  # MkDocs leaves dot files out of the site (and kb's temporary files are such)
            if candidate.is_symlink() or not candidate.is_file():
                continue  # refused by path() when it is the day's own name; never written through
            date, line = _post_date(candidate, self.shown(candidate), day)
            if date == day:
                found.append(candidate)
            elif candidate.name == f"{day.isoformat()}.md" and date is not None:
                named = (candidate, date, line)
        if len(found) > 1:
            raise JournalError(
                f"{', '.join(self.shown(p) for p in found)}: {len(found)} posts dated {day.isoformat()} "
                "(the blog allows one per day): merge them; nothing written"
            )
        if not found and named:
            candidate, date, line = named
            raise JournalError(
                f"{self.shown(candidate)}:{line}: this post is dated {date.isoformat()}, not "
                f"{day.isoformat()} (its file name): fix its date or rename it; nothing written"
            )
        return found[0] if found else None

    def _symlink_on_the_way(self) -> Path | None:
        """A symlink among the folders from the journal down to the posts folder, as the path is written.

        Writing through one can land outside the project (or, through a link to the
        journal, leaves the project to reach it); only the project's own folders are used.
        """
        journal = self.journal.resolve()
        for folder in (self.posts, *self.posts.parents):
            if folder.is_symlink():
                return folder
            if folder.resolve() == journal:
                return None
        return None

    def check(self, day: dt.date, topics: list[str]) -> None:
        """Everything that can be refused before the note is written (so that --edit asks first)."""
        check_topics(topics, self.allowed)
        path = self.path(day)
        if path.exists():
            self._plan(path, sources.read_text(path, self.shown(path)), topics)

    def add(
        self, day: dt.date, topics: list[str], body: str, now: dt.datetime | None = None, limit: int | None = NOTE_LIMIT
    ) -> Result:
        """Create the day's post, or append a section to it. Raises JournalError, writing nothing.

        Line breaks are kept as MkDocs reads them (CRLF and CR become LF); a note over ``limit``
        bytes (None: no limit), with a control character or with nothing visible is refused.
        """
        topics = check_topics(topics, self.allowed)
        if not body.strip():
            raise JournalError("empty note: nothing to write")
        body = body.replace("\r\n", "\n").replace("\r", "\n")
        problem = note_problem(body, limit)
        if problem:
            raise JournalError(f"{problem}; nothing written")
        path = self.path(day)
        try:
            with FileLock(str(self.posts / LOCK_NAME), timeout=LOCK_TIMEOUT):
                return self._add_locked(path, day, topics, body, now)
        except Timeout:
            raise JournalError(
                f"{self.shown(self.posts)}: another kb new held the journal for {LOCK_TIMEOUT:g} s; "
                "nothing written, try again"
            ) from None
        except PermissionError as e:
            raise JournalError(
                f"{self.shown(Path(e.filename or self.posts))}: permission denied; nothing written"
            ) from None

    def put(self, day: dt.date, topics: list[str], first: str, then: Callable[[str], str | None]) -> Result | None:
        """The importer's write, under the same lock and with the same checks as add().

        No post for ``day``: create it with front matter and the body ``first`` as given.
        A post: append ``then(old body)`` to it (None: nothing to add, nothing written).
        """
        topics = check_topics(topics, self.allowed)
        path = self.path(day)
        try:
            with FileLock(str(self.posts / LOCK_NAME), timeout=LOCK_TIMEOUT):
                if not path.exists():
                    self._write(path, f"---\n{_front_matter(day, topics)}---\n{first}", mode=None)
                    return Result(path, created=True)
                old = sources.read_text(path, self.shown(path))  # re-read under the lock
                head, body_old = self._plan(path, old, topics)
                added = then(body_old)
                if added is None:
                    return None
                self._write(path, head + body_old + _gap(body_old) + added, mode=stat.S_IMODE(path.stat().st_mode))
                return Result(path, created=False)
        except Timeout:
            raise JournalError(
                f"{self.shown(self.posts)}: another kb command held the journal for "
                f"{LOCK_TIMEOUT:g} s; nothing written, try again"
            ) from None
        except PermissionError as e:
            raise JournalError(
                f"{self.shown(Path(e.filename or self.posts))}: permission denied; nothing written"
            ) from None

    # ---- under the lock --------------------------------------------------------------
    def _add_locked(self, path: Path, day: dt.date, topics: list[str], body: str, now: dt.datetime | None) -> Result:
        note = body.rstrip("\n") + "\n"
        if not path.exists():
            slug = day.strftime("%Y%m%d")
            self._write(path, f"---\n{_front_matter(day, topics)}---\n# {slug}\n\n{note}", mode=None)
            return Result(path, created=True)
        old = sources.read_text(path, self.shown(path))  # re-read under the lock
        head, body_old = self._plan(path, old, topics)
        stamp = (now or dt.datetime.now()).strftime("%H:%M")
        new = head + body_old + _gap(body_old) + f"## 补充 {stamp}\n\n" + note
        assert new[len(head) :].startswith(body_old)  # the learner's text is a prefix, byte for byte
        self._write(path, new, mode=stat.S_IMODE(path.stat().st_mode))
        return Result(path, created=False)

    def _plan(self, path: Path, text: str, topics: list[str]) -> tuple[str, str]:
        """(new front matter text, old body) for an append; refuses a post it cannot edit safely."""
        shown = self.shown(path)
        m = sources.YAML_RE.match(text)
        if not m:
            raise JournalError(f"{shown}:1: the post has no front matter closed by '---' or '...'; nothing written")
        doc = sources.read_document(text, shown)  # refuses invalid YAML, lists, ... with file:line
        head, body = text[: m.end()], text[m.end() :]
        missing = [t for t in topics if t not in _categories(doc.meta, shown)]
        if missing:
            head = add_categories(head, missing, shown)
        return head, body

    def _write(self, path: Path, text: str, mode: int | None) -> None:
        """Write through a temporary file in the same folder: fsync, rename, fsync the folder.

        An existing post keeps its bytes: saved with Windows line ends (every line break CRLF) or
        a byte order mark, the new text gets them too, so the old file is a prefix of the new one.
        """
        raw = path.read_bytes() if path.is_file() else b""
        if raw.startswith(b"\xef\xbb\xbf"):
            text = "\ufeff" + text
        if b"\r\n" in raw and raw.count(b"\n") == raw.count(b"\r\n"):
            text = text.replace("\n", "\r\n")
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=self.posts)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
                f.write(text)
                f.flush()
                os.fchmod(f.fileno(), mode)
                os.fsync(f.fileno())
            if path.exists():
                os.replace(tmp, path)
            else:
                os.link(tmp, path)  # never replaces: a post that appeared meanwhile stays
                os.unlink(tmp)
        except FileExistsError:
            Path(tmp).unlink(missing_ok=True)
            raise JournalError(f"{self.shown(path)} appeared while writing; nothing changed") from None
        except OSError as e:
            Path(tmp).unlink(missing_ok=True)
            raise JournalError(
                f"{self.shown(path)}: could not write ({e.strerror or e}); the post is unchanged"
            ) from None
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.posts, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _gap(body: str) -> str:
    """What goes between a post's body and a section appended to it: a blank line.

    A body that ends inside a code block (a note, or a hand edit, whose closing fence is
    missing) gets that fence closed first: otherwise the new section, and every later
    one, would be shown as code and their questions never gathered.
    """
    fence = sources.open_fence(body.split("\n"))
    close = f"{fence.indent}{fence.fence}\n" if fence else ""
    if close and not body.endswith("\n"):
        close = "\n" + close
    body += close
    return close + ("" if body.endswith("\n\n") or not body else "\n" if body.endswith("\n") else "\n\n")


def _post_date(path: Path, shown: str, day: dt.date) -> tuple[dt.date | None, int]:
    """(the date a post's front matter gives, as the blog reads it, 1-based line of its key).

    Only ``<day>.md`` and posts whose front matter spells ``day`` (YAML also reads ``2026-1-2``)
    are parsed, so a long journal is cheap. A post that cannot be read is left to the build to
    name, unless it may be ``day``'s post.
    """
    try:
        text = sources.read_text(path, shown)
    except SourceError:
        return None, 1
    m = sources.YAML_RE.match(text)
    spelled = re.search(rf"(?<!\d){day.year}-0?{day.month}-0?{day.day}(?!\d)", m.group(1)) if m else None
    if not m or not (spelled or path.name == f"{day.isoformat()}.md"):
        return None, 1
    try:
        meta = sources.read_document(text, shown).meta
    except SourceError:
        if spelled:  # may be the day's post: appending elsewhere would make two
            raise
        return None, 1
    date = meta.get("date")
    if isinstance(date, dict):
        date = date.get("created")
    if isinstance(date, dt.datetime):
        date = date.date()
    if not isinstance(date, dt.date):
        return None, 1
    line = next((n for n, text_line in enumerate(m.group(1).split("\n"), 2) if text_line.startswith("date")), 1)
    return date, line


def _front_matter(day: dt.date, topics: list[str]) -> str:
    return yaml.safe_dump(
        {"date": day, "slug": day.strftime("%Y%m%d"), "categories": topics},
        allow_unicode=True,
        sort_keys=False,
        default_flow_style=False,
    )


def _categories(meta: dict, shown: str) -> list[str]:
    cats = meta.get("categories")
    if cats is None:
        return []
    if isinstance(cats, str):
        return [cats]
    if isinstance(cats, list) and all(isinstance(c, str) for c in cats):
        return cats
    raise JournalError(f"{shown}: categories must be a topic or a list of topics; nothing written")


CATEGORIES_KEY = re.compile(r"^categories[ \t]*:(?P<rest>.*)$")
LIST_ITEM = re.compile(r"^(?P<indent>[ \t]*)-([ \t]|$)")


def add_categories(head: str, topics: list[str], shown: str) -> str:
    """Front matter text with ``topics`` added to its categories, everything else byte for byte.

    The list keeps its form: a block list gets new ``- item`` lines like its
    own, a flow list gets new items before ``]``, a single scalar becomes a
    flow list, a missing key is added before the closing line.
    """
    lines = head.split("\n")  # head ends with "\n": the last element is ""
    close = len(lines) - 2  # the closing '---' / '...'
    key = next((i for i in range(1, close) if CATEGORIES_KEY.match(lines[i])), None)
    quoted = [_yaml_scalar(t) for t in topics]
    if key is None:
        lines[close:close] = ["categories:", *(f"  - {q}" for q in quoted)]
    else:
        rest = CATEGORIES_KEY.match(lines[key]).group("rest")
        value, comment = _split_comment(rest)
        if not value.strip():  # a block list (or nothing yet): items on the lines below
            end = key + 1
            while end < close and lines[end].startswith((" ", "\t", "-")):
                end += 1
            first = next((m for j in range(key + 1, end) if (m := LIST_ITEM.match(lines[j]))), None)
            indent = first.group("indent") if first else "  "
            lines[end:end] = [f"{indent}- {q}" for q in quoted]
        elif value.strip().startswith("["):
            inner = value.strip()
            if not inner.endswith("]"):
                raise JournalError(
                    f"{shown}:{key + 1}: a multi-line [..] category list cannot be edited safely; "
                    "add the topic by hand; nothing written"
                )
            body = inner[1:-1].strip()
            new = f"[{body}{', ' if body else ''}{', '.join(quoted)}]"
            lines[key] = f"categories:{rest[: len(rest) - len(rest.lstrip())]}{new}{comment}"
        else:  # one scalar topic
            lines[key] = f"categories: [{value.strip()}, {', '.join(quoted)}]{comment}"
    new = "\n".join(lines)
    before, after = yaml.safe_load(_yaml_part(head)) or {}, yaml.safe_load(_yaml_part(new))
    expected = dict(before)
    expected["categories"] = _categories(before, shown) + topics
    if after != expected:
        raise JournalError(
            f"{shown}: could not add {', '.join(topics)} to the categories without touching "
            "anything else; add them by hand; nothing written"
        )
    return new


def _yaml_part(head: str) -> str:
    return head.split("\n", 1)[1].rsplit("\n", 2)[0] + "\n"


def _split_comment(rest: str) -> tuple[str, str]:
    m = re.search(r"[ \t]+#.*$", rest)
    return (rest[: m.start()], rest[m.start() :]) if m else (rest, "")


def _yaml_scalar(text: str) -> str:
    dumped = yaml.safe_dump(text, default_flow_style=True, allow_unicode=True).strip()
    return dumped.removesuffix("\n...").removesuffix("...").strip()


def recovery_file(root: Path, text: str | bytes, day: dt.date) -> Path:
    """Keep a typed note that could not be added: in the project's .kb/recovered/ (or the temp folder)."""
    name = f"{day.isoformat()}-{dt.datetime.now().strftime('%H%M%S')}-{os.getpid()}.md"
    data = text.encode("utf-8") if isinstance(text, str) else text
    for folder in (root / ".kb" / "recovered", Path(tempfile.gettempdir()) / "kb-recovered"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_bytes(data)
            return path
        except OSError:
            continue
    raise SourceError(name, None, "could not save the note anywhere (disk full?)")
