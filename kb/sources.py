"""Reading the Markdown sources: pure functions of text, no MkDocs and no model.

- front matter, through MkDocs' own reader, so that file line numbers agree
  with what MkDocs renders;
- fenced code spans (so nothing below touches code);
- the kb blocks (``!!! claim``, ``!!! answer``, ``??? question``), their
  ``key: value`` lines and journal references;
- pymdownx.snippets include lines, found with pymdownx's own pattern;
- the questions a journal line asks;
- the rendering-only transforms of the learner's text: list re-indent and
  "show as text" protection.
"""

from __future__ import annotations

import html
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import yaml
from mkdocs.utils.meta import YAML_RE, get_data
from pymdownx.snippets import SnippetPreprocessor

from kb.project import SourceError

# ---- files and front matter ---------------------------------------------------


def read_text(path: Path, shown: str) -> str:
    """A source file as MkDocs reads it (UTF-8, BOM dropped, universal newlines)."""
    try:
        with open(path, encoding="utf-8-sig", errors="strict") as f:
            return f.read()
    except UnicodeDecodeError as e:
        line = e.object[: e.start].count(b"\n") + 1
        raise SourceError(
            shown, line, f"not valid UTF-8 (byte 0x{e.object[e.start]:02x}); save the file as UTF-8"
        ) from None
    except OSError as e:
        raise SourceError(shown, None, f"cannot read: {e.strerror or e}") from None


@dataclass(frozen=True)
class Document:
    meta: dict
    body: str  # the Markdown MkDocs renders (front matter removed)
    body_line: int  # 1-based file line of the body's first line

    @property
    def lines(self) -> list[str]:
        return self.body.split("\n")


# Git's merge conflict markers (conflict-marker-size 7): "<<<<<<< ours", "||||||| base" (diff3),
# "=======", ">>>>>>> theirs". The "<", "|" and ">" markers are exactly seven characters followed by
# a space or the end of the line; Git writes all of them at the start of a line. "=======" alone is
# also a Markdown setext heading underline, so it is only a marker after an opening "<<<<<<<" line.
CONFLICT_OPEN = re.compile(r"^(?:<{7}|\|{7})(?= |$)")
CONFLICT_CLOSE = re.compile(r"^>{7}(?= |$)")


def conflict_marker(line: str) -> str | None:
    """The merge conflict marker a line starts with (the "<", "|" or ">" kind), or None."""
    m = CONFLICT_OPEN.match(line) or CONFLICT_CLOSE.match(line)
    return line.rstrip()[:40] if m else None


def conflict_markers(lines: list[str], first_line: int = 1) -> list[tuple[int, str]]:
    """(file line, marker) of every merge conflict marker line, "=======" only inside a conflict.

    Fenced code is not exempt: Git writes its markers wherever the two versions differ,
    and a conflict inside a code block is as unresolved as one in prose (a page that
    shows a conflict on purpose can indent the marker lines, which Git never does).
    """
    text = "\n".join(lines)
    if "<<<<<<<" not in text and "|||||||" not in text and ">>>>>>>" not in text:
        return []  # no opening or closing marker anywhere (every page but a conflicted one): no line scan
    out, inside = [], False
    for i, line in enumerate(lines):
        marker = conflict_marker(line)
        if marker:
            out.append((first_line + i, marker))
            inside = not line.startswith(">")
        elif inside and line.rstrip() == "=" * 7:
            out.append((first_line + i, "======="))
    return out


# Front matter read as MkDocs reads it (mkdocs.utils.meta: libyaml's safe loader where PyYAML has it,
# as PyPI's wheels do); several times faster than the pure-Python loader on a journal of 1,000 posts.
FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def yaml_error(e: yaml.YAMLError, text: str) -> tuple[int | None, str]:
    """(1-based line within ``text``, what is wrong) of a YAML error. A character YAML refuses (NUL)
    is a ``ReaderError`` without a mark: its position counts bytes with libyaml, characters otherwise."""
    if isinstance(e, yaml.reader.ReaderError):
        before = text.encode("utf-8")[: e.position] if FAST_LOADER is not yaml.SafeLoader else text[: e.position]
        return before.count(
            b"\n" if isinstance(before, bytes) else "\n"
        ) + 1, f"character U+{e.character:04X}: {e.reason}"
    mark = getattr(e, "problem_mark", None)
    return (mark.line + 1 if mark else None), str(getattr(e, "problem", None) or "syntax error")


def invalid_value_line(front: str) -> tuple[int, str]:
    """(1-based line within the YAML text, value) of the first scalar YAML cannot construct (2026-02-30).
    Read by the loader that refused the value (FAST_LOADER): libyaml accepts tabs PyYAML's own scanner
    refuses, so a pure-Python reading of the same text could fail on them instead."""
    loader = FAST_LOADER(front)
    try:
        root = loader.get_single_node()
    finally:
        loader.dispose()
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop(0)
        if isinstance(node, yaml.ScalarNode):
            try:
                FAST_LOADER("").construct_object(node, deep=True)
            except Exception:  # noqa: BLE001 - whatever the constructor raises, this is the value
                return node.start_mark.line + 1, node.value
        elif isinstance(node, yaml.MappingNode):
            stack.extend(n for pair in node.value for n in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return 1, ""


def read_document(text: str, shown: str) -> Document:
    """Split front matter from body exactly as MkDocs does, but refuse what MkDocs would silently ignore."""
    for line, marker in conflict_markers(text.split("\n"))[:1]:
        raise SourceError(
            shown,
            line,
            f"git merge conflict marker '{marker}': resolve the conflict "
            "(keep what each side should keep) and delete the marker lines",
        )
    m = YAML_RE.match(text)
    if m:
        try:
            data = yaml.load(m.group(1), Loader=FAST_LOADER)
        except yaml.YAMLError as e:
            line, problem = yaml_error(e, m.group(1))
            raise SourceError(shown, line + 1 if line else 1, f"front matter is not valid YAML ({problem})") from None
        except (ValueError, TypeError, OverflowError) as e:  # a well-formed value that is no value: date: 2026-02-30
            line, value = invalid_value_line(m.group(1))
            raise SourceError(shown, line + 1, f"front matter value '{value}' is invalid ({e})") from None
        if not isinstance(data, dict):
            raise SourceError(shown, 1, "front matter must be a mapping of keys (key: value)")
    body, meta = get_data(text)
    if not text.endswith(body):  # pragma: no cover - MkDocs keeps the body as a suffix
        raise SourceError(shown, 1, "could not locate the body after the front matter")
    return Document(meta=meta, body=body, body_line=text[: len(text) - len(body)].count("\n") + 1)


# ---- fenced code ------------------------------------------------------------------

FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


@dataclass(frozen=True)
class Fence:
    start: int  # 0-based index of the opening line
    end: int  # 0-based index of the closing line (the last line if never closed)
    indent: str
    fence: str
    info: str
    closed: bool = True  # False: the block runs to the end of the text


def fences(lines: list[str]) -> list[Fence]:
    # Every opening and closing fence line holds three backticks or tildes in a row: only those lines
    # are read (a journal post of 60 lines has none or a few; most have no fence at all).
    text = "\n".join(lines)
    if "```" not in text and "~~~" not in text:
        return []
    candidates = [i for i, line in enumerate(lines) if "```" in line or "~~~" in line]
    out: list[Fence] = []
    k = 0
    while k < len(candidates):
        i = candidates[k]
        m = FENCE_OPEN.match(lines[i])
        if not m or (m.group("fence")[0] == "`" and "`" in m.group("info")):
            k += 1
            continue
        fence = m.group("fence")
        k += 1
        while k < len(candidates):
            c = lines[candidates[k]].strip()
            if c.startswith(fence[0] * len(fence)) and not c.lstrip(fence[0]):
                break
            k += 1
        j = candidates[k] if k < len(candidates) else len(lines)
        out.append(Fence(i, min(j, len(lines) - 1), m.group("indent"), fence, m.group("info").strip(), j < len(lines)))
        k += 1
    return out


def open_fence(lines: list[str]) -> Fence | None:
    """The code block the text leaves open at its end (its closing fence is missing), or None."""
    found = fences(lines)
    return found[-1] if found and not found[-1].closed else None


def fenced(lines: list[str]) -> list[bool]:
    """For each line, whether it is part of a fenced code block (fence lines included)."""
    inside = [False] * len(lines)
    for f in fences(lines):
        for k in range(f.start, f.end + 1):
            inside[k] = True
    return inside


# ---- kb blocks ----------------------------------------------------------------------

KINDS = ("claim", "answer", "question")
KEYS = (
    "id",
    "status",
    "test",
    "evidence",
    "journal",
    "answers",
    "missing",
    "counterfactual",
    "quote",
    "basis",
    "review",
)
HEADER = re.compile(
    r'^(?P<indent>[ \t]*)(?P<marker>!!!|\?\?\?\+?)[ ]+(?P<kind>[a-z]+)\b(?P<classes>[^"\n]*)'
    r'(?:"(?P<title>[^"\n]*)")?[ ]*$'
)
ANY_HEADER = re.compile(r"^[ \t]*(?:!!!|\?\?\?\+?)[ ]*(?P<kind>claim|answer|question)\b")
KEY_LINE = re.compile(r"^(?P<key>[a-z]+):[ ]*(?P<value>.*?)[ ]*$")


@dataclass(frozen=True)
class Field:
    key: str
    value: str
    line: int  # 1-based file line


@dataclass
class RawBlock:
    kind: str
    title: str
    marker: str
    line: int  # 1-based file line of the header
    start: int  # 0-based index (in the lines given) of the header
    end: int  # one past the block's last non-blank line
    body_start: int  # first line after the key lines
    indent: str
    fields: list[Field] = field(default_factory=list)

    def values(self, key: str) -> list[Field]:
        return [f for f in self.fields if f.key == key]


def malformed_headers(lines: list[str], first_line: int = 1) -> list[tuple[int, str]]:
    """(file line, kind) of block headers that look like kb blocks but do not parse."""
    in_code = fenced(lines)
    return [
        (first_line + i, m.group("kind"))
        for i, line in enumerate(lines)
        if not in_code[i] and (m := ANY_HEADER.match(line)) and not HEADER.match(line)
    ]


def parse_blocks(lines: list[str], first_line: int = 1) -> list[RawBlock]:
    """The claim/answer/question admonitions of a page body (never inside code)."""
    in_code = fenced(lines)
    blocks: list[RawBlock] = []
    for i, line in enumerate(lines):
        m = HEADER.match(line) if not in_code[i] else None
        if not m or m.group("kind") not in KINDS:
            continue
        inner = m.group("indent") + "    "
        j, end = i + 1, i + 1
        while j < len(lines) and (not lines[j].strip() or lines[j].startswith(inner)):
            if lines[j].strip():
                end = j + 1
            j += 1
        block = RawBlock(
            m.group("kind"),
            (m.group("title") or "").strip(),
            m.group("marker"),
            first_line + i,
            i,
            end,
            i + 1,
            m.group("indent"),
        )
        k = i + 1
        while k < end:
            km = KEY_LINE.match(lines[k][len(inner) :]) if lines[k].startswith(inner) else None
            if not km or km.group("key") not in KEYS:
                break
            block.fields.append(Field(km.group("key"), km.group("value"), first_line + k))
            k += 1
        block.body_start = k
        blocks.append(block)
    return blocks


# `20251231 "fragment" qualified`: a post, an exact fragment of one of its lines,
# and the verdict on the learner's line.
REF = re.compile(r'^(?P<post>\d{8})[ ]+"(?P<fragment>[^"]+)"(?:[ ]+(?P<verdict>\S+))?$')


@dataclass(frozen=True)
class RawRef:
    post: str
    fragment: str
    verdict: str | None


def parse_ref(value: str) -> RawRef | None:
    m = REF.match(value.strip())
    return RawRef(m.group("post"), m.group("fragment"), m.group("verdict")) if m else None


# ---- includes -----------------------------------------------------------------------

SNIPPET_LINE = SnippetPreprocessor.RE_ALL_SNIPPETS  # pymdownx's own pattern, so we see what it sees
SECTION_TARGET = re.compile(r"^(?P<path>.*?):(?P<section>[a-z][-_0-9a-z]*)$", re.I)
LINES_TARGET = re.compile(r"^(?P<path>.*?)(?::-?[0-9]*){1,2}(?:,-?[0-9]*(?::-?[0-9]*)?)*$")


@dataclass(frozen=True)
class Include:
    line: int  # 1-based file line of the path
    target: str  # as written: path, path:section or path:lines
    path: str
    section: str | None


def split_target(target: str) -> tuple[str, str | None]:
    m = SECTION_TARGET.match(target)
    if m:
        return m.group("path"), m.group("section")
    m = LINES_TARGET.match(target)
    return (m.group("path") if m and m.group("path") else target), None


def includes(lines: list[str], first_line: int = 1) -> list[Include]:
    """Every file pymdownx.snippets would include (inline ``--8<-- "x"`` lines and ``--8<--`` blocks)."""
    out: list[Include] = []
    in_block = False
    for i, line in enumerate(lines):
        m = SNIPPET_LINE.match(line)
        if m and not m.group("escape"):
            if m.group("block_marker"):
                in_block = not in_block
            else:
                target = m.group("snippet")[1:-1]
                out.append(Include(first_line + i, target, *split_target(target)))
            continue
        if in_block and line.strip() and not line.strip().startswith(";"):
            target = line.strip()
            out.append(Include(first_line + i, target, *split_target(target)))
    return out


# ---- links ----------------------------------------------------------------------------

LINK = re.compile(r"!?\[(?:[^\]\n]|\](?!\())*\]\((?P<url>[^)\s]+)(?:\s+\"[^\"]*\")?\)")


def normalise_uri(uri: str) -> str:
    """``topics/sac/../dpo.md`` -> ``topics/dpo.md`` (a docs-relative path, without ``.`` and ``..``)."""
    parts: list[str] = []
    for part in uri.split("/"):
        if part == "..":
            parts = parts[:-1]
        elif part not in ("", "."):
            parts.append(part)
    return "/".join(parts)


# ---- questions in the learner's lines ------------------------------------------------

LIST_ITEM = re.compile(r"^(?P<indent>[ ]*)(?:[-*+]|\d+\.)[ ]+(?P<text>.*)$")
TASK_ITEM = re.compile(r"^(?P<indent>[ ]*)[-*+][ ]+\[(?P<mark>[ xX])\][ ]+(?P<text>.*)$")
INTERROGATIVES = ("？", "?", "为什么", "什么", "怎么", "如何", "哪", "吗", "么")
ASK_HEADERS = ("问：", "问:")


# What a line needs to ask anything when not under a 问： header: ">>", "吧" or an interrogative
# (each of INTERROGATIVES, or a shorter one it holds: "什么", "怎么" and "为什么" hold "么").
QUESTION_HINT = re.compile("|".join(map(re.escape, (">>", "吧", *INTERROGATIVES))))


def journal_question(line: str, under_ask: bool) -> str | None:
    """The question a journal line asks, or None (see CONTRIBUTING.md)."""
    if not under_ask and not QUESTION_HINT.search(line):
        return None  # what the rules below need is not in the line (most lines of a journal): one scan in C
    s = line.strip()
    if not s or s.startswith("#"):
        return None
    m = LIST_ITEM.match(line)
    text = (m.group("text") if m else s).strip()
    restart = text.startswith(">>")
    text = text.lstrip(">").strip().strip("*").strip()
    asks = any(w in text for w in INTERROGATIVES) or text.rstrip("。.，,！!").endswith("吧")
    if restart or (under_ask and m) or asks:
        return text
    return None


# ---- rendering-only transforms of the learner's text ----------------------------------

LIST_MARKER = re.compile(r"^(?P<indent>[ ]*)(?P<marker>[-*+]|(?P<num>\d+)\.)[ ]+")


def normalise_list_indent(lines: list[str]) -> list[str]:
    """Re-indent GitHub-style nested list items for Python-Markdown (rendering only).

    The learner nests items by 2-3 spaces (GitHub renders that); Python-Markdown
    needs 4. An item numbered n+1 under an item numbered n is a sibling that was
    indented by accident, as GitHub shows it: it joins its sibling's level.
    Fenced code is left exactly as it is.
    """
    in_code = fenced(lines)
    out: list[str] = []
    stack: list[tuple[int, int, str | None]] = []  # (original indent, new indent, number)
    for line, code in zip(lines, in_code):
        m = None if code else LIST_MARKER.match(line)
        if not m:
            if not code and line.strip() and not line.startswith(" "):
                stack = []
            out.append(line)
            continue
        indent, num = len(m.group("indent")), m.group("num")
        while stack and stack[-1][0] > indent:
            stack.pop()
        if stack and stack[-1][0] == indent:
            new = stack.pop()[1]
        elif stack and num and stack[-1][2] and int(num) == int(stack[-1][2]) + 1:
            new = stack.pop()[1]  # "1. a" then "   2. b": siblings
        elif stack:
            new = stack[-1][1] + 4
        else:
            new = 0
        stack.append((indent, new, num))
        out.append(" " * new + line[indent:])
    return out


CODE_SPAN = re.compile(r"(?<!`)(?P<ticks>`+)(?!`).+?(?<!`)(?P=ticks)(?!`)")
TEXT_ESCAPES = {"&": "&amp;", "<": "&lt;", "{": "&#123;"}
BLOCK_STARTS = {"!!!": "&#33;!!", "???": "&#63;??"}


_TEXT_TABLE = str.maketrans(TEXT_ESCAPES)  # str.translate: the same replacement, character by character, in C


URL_SCHEME = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//)")
LINK_DEFINITION = re.compile(r"^\[[^\]\n]+\]:[ \t]*(?P<url>\S+)")


def linked_file(url: str, src_uri: str) -> str | None:
    """The docs-relative file a relative link on page ``src_uri`` names, as MkDocs resolves it.

    None: not a link to a file (an address with a scheme, an absolute path, an anchor on the
    page, a folder or an address without an extension, which MkDocs does not look up).
    """
    url = html.unescape(url).strip("<>")
    if URL_SCHEME.match(url) or url.startswith("/"):
        return None
    path = unquote(urlsplit(url).path)
    if not path or not posixpath.splitext(path)[1]:
        return None
    return normalise_uri(posixpath.join(posixpath.dirname(src_uri), path))


def _unlink(text: str, missing: Callable[[str], bool]) -> str:
    """Links (and link definitions) whose target is ``missing`` shown as typed: ``[`` as an entity."""
    if "](" not in text and "]:" not in text:  # most lines of a long journal: no regex
        return text

    def shown(m: re.Match) -> str:
        if not missing(m.group("url")):
            return m.group(0)
        return m.group(0).replace("[", "&#91;", 1)

    return LINK_DEFINITION.sub(shown, LINK.sub(shown, text))


def learner_links(lines: list[str]) -> list[str]:
    """The URLs of the links (and link definitions) a text has outside code, as written."""
    in_code = fenced(lines)
    out = []
    for line, code in zip(lines, in_code):
        if code or "[" not in line:  # every link and link definition has its "["
            continue
        text = line.lstrip(" \t")
        spans = [m.span() for m in CODE_SPAN.finditer(text)]
        out += [m.group("url") for m in LINK.finditer(text) if not any(a <= m.start() < b for a, b in spans)]
        if m := LINK_DEFINITION.match(text):
            out.append(m.group("url"))
    return out


def _escape_text(text: str, missing: Callable[[str], bool] | None = None) -> str:
    if "`" not in text:  # no code span (most lines): the whole text is escaped
        text = text.translate(_TEXT_TABLE)
        return _unlink(text, missing) if missing else text
    out, last = [], 0
    for m in CODE_SPAN.finditer(text):  # code spans are already shown literally by Markdown
        part = text[last : m.start()].translate(_TEXT_TABLE)
        out.append(_unlink(part, missing) if missing else part)
        out.append(m.group(0))
        last = m.end()
    part = text[last:].translate(_TEXT_TABLE)
    out.append(_unlink(part, missing) if missing else part)
    return "".join(out)


# The headings kb writes between the notes of a day (kb new, kb import): each starts a note of its own.
NOTE_HEADING = re.compile(r"^## (?:补充 \d\d:\d\d|导入自 .+)$")
LABEL_DEF = re.compile(r"^[ ]{0,3}\[(?P<label>[^\]\n]+)\]:")
FOOTNOTE_REF = re.compile(r"\[\^(?P<label>[^\]\s]+)\]")
# [text][label], [label][] and [label] (a reference link in all its forms; not [text](url) nor a definition)
REFERENCE = re.compile(r"\[(?P<text>[^\]\n]+)\](?:\[(?P<label>[^\]\n]*)\])?(?![(:\[])")


def scope_labels(lines: list[str]) -> list[str]:
    """Each note of a post keeps its own footnotes and reference links (rendering only).

    Python-Markdown keeps one definition per label in a page, the last: a later note's
    ``[^1]:`` or ``[r]: url`` would replace an earlier note's (its footnote text, where its
    link goes). A label a note defines again is renamed in that note, in its definition
    and its references (``[r]`` becomes ``[r][r-2]``), so nothing visible changes but what
    each note's footnotes say and where its links go. Code is left as typed.
    """
    in_code = fenced(lines)
    note, notes = 0, []
    for line, code in zip(lines, in_code):
        note += bool(not code and NOTE_HEADING.match(line))
        notes.append(note)
    first: dict[str, int] = {}
    renamed: dict[tuple[int, str], str] = {}
    for line, code, n in zip(lines, in_code, notes):
        m = None if code else LABEL_DEF.match(line)
        if m:
            label = m.group("label").lower()
            if first.setdefault(label, n) != n:
                renamed[(n, label)] = f"{m.group('label')}-{n}"
    if not renamed:
        return lines

    def footnote(m: re.Match, n: int) -> str:
        new = renamed.get((n, "^" + m.group("label").lower()))
        return f"[{new}]" if new else m.group(0)

    def reference(m: re.Match, n: int) -> str:
        label = m.group("label") or m.group("text")  # [text][], [text]: the text is the label
        new = None if label.startswith("^") else renamed.get((n, label.lower()))
        return f"[{m.group('text')}][{new}]" if new else m.group(0)

    def rename(text: str, n: int) -> str:
        return REFERENCE.sub(lambda m: reference(m, n), FOOTNOTE_REF.sub(lambda m: footnote(m, n), text))

    out = []
    for line, code, n in zip(lines, in_code, notes):
        if code or "[" not in line or not any(key[0] == n for key in renamed):
            out.append(line)
            continue
        d = LABEL_DEF.match(line)
        if d and (n, d.group("label").lower()) in renamed:  # the definition itself
            line = f"{line[: d.start('label')]}{renamed[(n, d.group('label').lower())]}{line[d.end('label') :]}"
            out.append(line)
            continue
        parts, last = [], 0
        for m in CODE_SPAN.finditer(line):
            parts += [rename(line[last : m.start()], n), m.group(0)]
            last = m.end()
        out.append("".join([*parts, rename(line[last:], n)]))
    return out


def protect_learner_text(lines: list[str], missing: Callable[[str], bool] | None = None) -> list[str]:
    """Show a journal post's text as text: nothing in it acts on the site.

    Raw HTML reads as typed (``List<int>``), ``{: attr}`` lists set nothing,
    ``!!!``/``???`` open no box (so a ``!!! claim`` in a note is not a claim),
    and ``--8<--`` lines include nothing (escaped the pymdownx way, with ``;``,
    so they still read as written). Markdown itself (lists, emphasis, headings,
    code) renders as the learner meant it. A link whose target is ``missing``
    (a link's URL as written -> bool) reads as typed too: a note keeps its links
    as they were when it was written, and a page renamed since, or a file an
    imported note linked to, must not fail the strict build.
    """
    in_code = fenced(lines)
    out = []
    for line, code in zip(lines, in_code):
        m = SNIPPET_LINE.match(line)
        if m:
            out.append(m.group("space") + ";" + line[len(m.group("space")) :])
            continue
        if code:
            out.append(line)
            continue
        stripped = line.lstrip(" \t")
        text = _escape_text(stripped, missing)
        for start, entity in BLOCK_STARTS.items():
            if text.startswith(start):
                text = entity + text[len(start) :]
                break
        out.append(line[: len(line) - len(stripped)] + text)
    return out
