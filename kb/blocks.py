"""Parse the knowledge-base blocks of a Markdown page: claims, answers, questions.

A block is a Material admonition whose type is ``claim``, ``answer`` or
``question``, optionally followed by ``key: value`` lines (see CONTRIBUTING.md):

    !!! claim "MSE 回归的最优解是条件均值"
        id: mse-predicts-conditional-mean
        status: verified
        test: snippets/foundations/mse.py::test_mse_minimiser_is_conditional_mean

        Explanation...
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

KINDS = ("claim", "answer", "question")
KEYS = ("id", "status", "test", "evidence", "journal", "answers", "missing")
STATUSES = ("verified", "refuted", "qualified", "open")

HEADER = re.compile(
    r'^(?P<indent>[ ]*)(?P<marker>!!!|\?\?\?\+?)[ ]+(?P<kind>[a-z]+)\b(?P<classes>[^"\n]*)'
    r'(?:"(?P<title>[^"\n]*)")?[ ]*$'
)
FENCE = re.compile(r"^[ ]*(?P<fence>`{3,}|~{3,})")
KEY_LINE = re.compile(r"^(?P<key>[a-z]+):[ ]*(?P<value>.*?)[ ]*$")
# `20251231 "fragment" qualified`: a post, an exact fragment of one of its lines,
# and the verdict on that line of the learner's (verified/refuted/qualified/answered).
REF = re.compile(r'^(?P<post>\d{8})[ ]+"(?P<fragment>[^"]+)"(?:[ ]+(?P<verdict>[a-z]+))?$')


@dataclass
class Field:
    value: str
    line: int  # 1-based line in the file


@dataclass
class Block:
    kind: str
    title: str
    path: Path
    line: int  # 1-based line of the header
    start: int  # 0-based index of the header line
    end: int  # 0-based index one past the block's last non-blank line
    indent: str
    fields: dict[str, list[Field]] = field(default_factory=dict)
    body_start: int = 0  # 0-based index of the first line after the key lines

    def get(self, key: str) -> str | None:
        values = self.fields.get(key)
        return values[0].value if values else None

    def all(self, key: str) -> list[Field]:
        return self.fields.get(key, [])

    @property
    def where(self) -> str:
        from kb.project import rel

        return f"{rel(self.path)}:{self.line}"


def fenced_lines(lines: list[str]) -> list[bool]:
    """For each line, whether it sits inside (or is) a fenced code block."""
    inside: list[bool] = []
    fence: str | None = None
    for line in lines:
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group("fence")
            inside.append(True)
        elif fence is not None:
            inside.append(True)
            if m and m.group("fence")[0] == fence[0] and len(m.group("fence")) >= len(fence) and not line.strip()[len(m.group("fence")):].strip():
                fence = None
        else:
            inside.append(False)
    return inside


def parse_blocks(text: str, path: Path) -> list[Block]:
    lines = text.split("\n")
    in_code = fenced_lines(lines)
    blocks: list[Block] = []
    for i, line in enumerate(lines):
        if in_code[i]:
            continue
        m = HEADER.match(line)
        if not m or m.group("kind") not in KINDS:
            continue
        indent = m.group("indent")
        inner = indent + "    "
        j = i + 1
        end = i + 1
        while j < len(lines) and (not lines[j].strip() or lines[j].startswith(inner)):
            if lines[j].strip():
                end = j + 1
            j += 1
        block = Block(
            kind=m.group("kind"),
            title=(m.group("title") or "").strip(),
            path=path,
            line=i + 1,
            start=i,
            end=end,
            indent=indent,
        )
        k = i + 1
        while k < end:
            km = KEY_LINE.match(lines[k][len(inner):]) if lines[k].startswith(inner) else None
            if not km or km.group("key") not in KEYS:
                break
            block.fields.setdefault(km.group("key"), []).append(Field(km.group("value"), k + 1))
            k += 1
        block.body_start = k
        blocks.append(block)
    return blocks


def parse_ref(value: str) -> tuple[str, str] | None:
    """``20251231 "fragment"`` -> ("20251231", "fragment")."""
    m = REF.match(value.strip())
    return (m.group("post"), m.group("fragment")) if m else None
