"""``kb import FILE|DIR``: the learner's existing notes, as journal posts, verbatim.

A note file is cut at its date lines, in the forms learners write them:

    # 20251230            (the seed's form: a heading YYYYMMDD)
    ## 2026-01-02         (a heading with an ISO date; also 2026/01/02, 2026.01.02)
    2026年1月2日           (alone on its line, as a heading or not; a weekday may follow)
    ## 2026-01-02 读 SAC  (a heading whose date a title follows: its line is kept, as text)

Each section becomes its day's post: created (front matter, then the section: a
``# YYYYMMDD`` heading is kept as written, any other date line becomes one), or, when the
day already has a post, appended as a new section ``## 导入自 <file>``, never merged into
the text. A section whose text the post already holds adds nothing, so importing twice
changes nothing. A file with no date lines is one day's note when its name is a date
(``2026-01-02.md``, ``20260102.md``, ``2026年1月2日.md``). Text before the first date line
is reported and left out. Every section is checked first (dates, control characters,
size): one bad section refuses the import, naming file:line, before anything is written.
Writes go through Journal.put, under the lock ``kb new`` uses.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from kb import sources
from kb.journal import FIRST_DAY, LAST_DAY, NOTE_LIMIT, Journal, note_problem
from kb.project import KbError

_DATE = (
    r"(?P<compact>\d{8})"
    r"|(?P<y>\d{4})(?P<sep>[-/.])(?P<m>\d{1,2})(?P=sep)(?P<d>\d{1,2})"
    r"|(?P<cy>\d{4})年(?P<cm>\d{1,2})月(?P<cd>\d{1,2})[日号]"
)
_WEEKDAY = r"(?:[ \t]*[（(]?(?:星期|周|礼拜)[一二三四五六日天][)）]?)?"
DATE_LINE = re.compile(rf"^(?P<marks>#{{1,6}}[ \t]+)?(?:\*\*)?(?:{_DATE}){_WEEKDAY}(?:\*\*)?[ \t]*#*[ \t]*$")
# A heading that goes on with a title after its date (``## 2026-01-02 读 SAC``, ``### 2026年1月3日：GRPO``).
# Only a heading: a line of prose may start with a date. A date a digit follows (### 20260102-153000,
# a run's id) is no day.
TITLED_DATE_HEADING = re.compile(
    rf"^(?P<marks>#{{1,6}}[ \t]+)(?:\*\*)?(?:{_DATE})(?![-–—.:/]?\d){_WEEKDAY}(?:\*\*)?"
    rf"(?:[ \t]*[:：,，\-–—|·][ \t]*|[ \t]+)\S"
)
FILE_DATE = re.compile(rf"^(?:{_DATE}|(?P<uy>\d{{4}})_(?P<um>\d{{1,2}})_(?P<ud>\d{{1,2}}))$")
SUFFIXES = (".md", ".markdown", ".txt")


@dataclass
class Section:
    source: Path
    line: int  # 1-based line of the date line (of the file's first line for a whole-file note)
    day: dt.date
    heading: str | None  # the date line as written (None: the whole file, dated by its name)
    content: str  # the text after the date line, verbatim (from the line itself when it has a title)
    # A titled heading's section: the day of the section before it in its file. An import before titled
    # headings started days left the heading and its text in that day's post (where it is then found).
    earlier: dt.date | None = None

    @property
    def key(self) -> str:
        """What makes the import idempotent: a post holding this text already has the section."""
        return self.content.strip("\n")

    def first(self) -> str:
        """The body of a new post for this section."""
        title = f"# {self.day:%Y%m%d}"
        if self.heading == title:
            text = f"{self.heading}\n{self.content}"
        else:
            text = f"{title}\n\n{self.content.lstrip(chr(10))}"
        return text if text.endswith("\n") else text + "\n"

    def appended(self) -> str:
        return f"## 导入自 {self.source.name}\n\n{self.key}\n"

    def present_in(self, body: str) -> bool:
        """Whether a post body holds this section's text as whole lines (a part of a line is not it)."""
        return f"\n{self.key}\n" in f"\n{body}\n"

    def then(self, body: str) -> str | None:
        return None if self.present_in(body) else self.appended()


def _day(m: re.Match, where: str) -> dt.date:
    g = m.groupdict()
    if g.get("compact"):
        y, mo, d = int(g["compact"][:4]), int(g["compact"][4:6]), int(g["compact"][6:])
    elif g.get("y"):
        y, mo, d = int(g["y"]), int(g["m"]), int(g["d"])
    elif g.get("cy"):
        y, mo, d = int(g["cy"]), int(g["cm"]), int(g["cd"])
    else:
        y, mo, d = int(g["uy"]), int(g["um"]), int(g["ud"])
    try:
        day = dt.date(y, mo, d)
    except ValueError as e:
        raise KbError(f"{where}: '{m.group(0).strip()}' is not a date ({e}); nothing imported") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise KbError(
            f"{where}: {day.isoformat()} is outside the journal's range {FIRST_DAY.isoformat()} "
            f"to {LAST_DAY.isoformat()}; nothing imported"
        )
    return day


def _read(path: Path) -> str:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise KbError(f"{path}:{line}: not UTF-8 (byte 0x{data[e.start]:02x}); nothing imported") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def sections(path: Path, notes: list[str]) -> list[Section]:
    """The dated sections of one file (``notes`` collects what is left out, as file:line messages)."""
    text = _read(path)
    lines = text.split("\n")
    in_code = sources.fenced(lines)
    starts = []  # (index of the date line, its day, whether its line is text too: a title follows the date)
    for i, line in enumerate(lines):
        m = None if in_code[i] else DATE_LINE.match(line)
        # a bare 8-digit number is data, not a date line: YYYYMMDD needs its heading marks
        if m and not (m.group("compact") and not m.group("marks")):
            starts.append((i, _day(m, f"{path}:{i + 1}"), False))
        elif not in_code[i] and (m := TITLED_DATE_HEADING.match(line)):
            try:
                starts.append((i, _day(m, f"{path}:{i + 1}"), True))
            except KbError as e:  # no such day (## 2026-02-30 的计划): the heading is text, as before, said
                reason = str(e).split(": ", 1)[1].removesuffix("; nothing imported")
                notes.append(f"{path}:{i + 1}: a heading that names no day ({reason}): kept as text")
    if not starts:
        m = FILE_DATE.match(path.stem)
        if not m:
            raise KbError(
                f"{path}:1: no date line (# 20251230, ## 2026-01-02, 2026年1月2日) and the file name "
                "is not a date (2026-01-02.md); nothing imported"
            )
        day = _day(m, f"{path}:1")
        return [Section(path, 1, day, None, text)] if text.strip() else []
    if "".join(lines[: starts[0][0]]).strip():
        notes.append(f"{path}:1-{starts[0][0]}: text before the first date line is not imported")
    out = []
    for n, (i, day, titled) in enumerate(starts):
        end = starts[n + 1][0] if n + 1 < len(starts) else len(lines)
        content = "\n".join(lines[i + (not titled) : end]) + ("\n" if end < len(lines) else "")
        if not "\n".join(lines[i + 1 : end]).strip() and not titled:
            notes.append(f"{path}:{i + 1}: {day.isoformat()} has no text; skipped")
            continue
        earlier = out[-1].day if titled and out else None
        out.append(Section(path, i + 1, day, lines[i], content, earlier))
    return out


def collect(target: Path, notes: list[str]) -> list[Section]:
    """Every section of a file, or of a folder's note files (sorted by name), checked."""
    if target.is_dir():
        files = sorted(p for p in target.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
        if not files:
            raise KbError(f"{target}: no note files ({', '.join(SUFFIXES)}) in this folder; nothing imported")
    elif target.is_file():
        files = [target]
    else:
        raise KbError(f"{target}: no such file or folder; nothing imported")
    found = [s for f in files for s in sections(f, notes)]
    for s in found:
        problem = note_problem(s.content, NOTE_LIMIT)
        if problem:
            if " at line " in problem:  # the note's line -> the file's line
                inner = int(re.search(r" at line (\d+)", problem).group(1))
                problem = re.sub(r" at line \d+,", ",", problem)
                raise KbError(f"{s.source}:{s.line + inner}: {problem}; nothing imported")
            raise KbError(f"{s.source}:{s.line}: {problem}; nothing imported")
    return found


@dataclass
class Planned:
    section: Section
    action: str  # "create", "append" or "present"
    day: dt.date | None = None  # the day whose post holds it or gets it (None: the section's own)


def _body(journal: Journal, day: dt.date) -> str | None:
    """A day's post without its front matter, or None when the day has no post."""
    path = journal.path(day)
    if not path.exists():
        return None
    text = sources.read_text(path, journal.shown(path))
    m = sources.YAML_RE.match(text)
    return text[m.end() :] if m else text


def _imported_before(journal: Journal, s: Section, bodies: dict | None = None) -> bool:
    """Whether a titled section is in the post of the day before it in its file, whole, as an import made
    before titled headings started days put it there (importing again then adds nothing)."""
    if s.earlier is None:
        return False
    body = bodies.get(s.earlier) if bodies is not None and s.earlier in bodies else _body(journal, s.earlier)
    return body is not None and s.present_in(body)


def plan(journal: Journal, found: list[Section]) -> list[Planned]:
    """What importing would do, section by section (nothing is written)."""
    bodies: dict[dt.date, str] = {}
    out = []
    for s in found:
        if _imported_before(journal, s, bodies):
            out.append(Planned(s, "present", s.earlier))
            continue
        if s.day not in bodies and (body := _body(journal, s.day)) is not None:
            bodies[s.day] = body
        if s.day not in bodies:
            bodies[s.day] = s.first()
            out.append(Planned(s, "create"))
        elif s.present_in(bodies[s.day]):
            out.append(Planned(s, "present"))
        else:
            bodies[s.day] += s.appended()
            out.append(Planned(s, "append"))
    return out


def run(journal: Journal, found: list[Section], topics: list[str]) -> list[Planned]:
    """Write every section (each under the journal's lock); what was done, section by section."""
    done = []
    for s in found:
        if _imported_before(journal, s):
            done.append(Planned(s, "present", s.earlier))
            continue
        result = journal.put(s.day, topics, s.first(), s.then)
        done.append(Planned(s, "present" if result is None else "create" if result.created else "append"))
    return done
