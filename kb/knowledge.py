"""The knowledge base as data: pages, journal posts, claims, answers and questions.

Read from the Markdown sources (not the built site), so the MkDocs plugin, the
``kb`` command and the pytest plugin all see the same thing and report problems
with the same ``file:line``.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import frontmatter

from kb.blocks import STATUSES, Block, fenced_lines, parse_blocks, parse_ref
from kb.project import DOCS, JOURNAL_POSTS, ROOT, allowed_topics, rel

STATUS_LABELS = {
    "verified": "已验证",
    "refuted": "已证伪",
    "qualified": "部分成立",
    "open": "待解决",
}
# What a deciding test's name must say, by status (see CONTRIBUTING.md).
TEST_PREFIX = {"refuted": "test_refutes_", "qualified": "test_qualifies_"}
ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")
SECTION_MARK = "# --8<-- [start:{name}]"
LIST_ITEM = re.compile(r"^(?P<indent>[ ]*)(?:[-*+]|\d+\.)[ ]+(?P<text>.*)$")
TASK_ITEM = re.compile(r"^(?P<indent>[ ]*)[-*+][ ]+\[(?P<mark>[ xX])\][ ]+(?P<text>.*)$")
INTERROGATIVES = ("？", "?", "为什么", "什么", "怎么", "如何", "哪", "吗", "么")


def split_front_matter(text: str) -> tuple[dict, int]:
    """(metadata, index of the first body line) of a Markdown source."""
    lines = text.split("\n")
    if lines and lines[0].strip() == "---":
        for i in range(1, len(lines)):
            if lines[i].strip() in ("---", "..."):
                return dict(frontmatter.loads(text).metadata), i + 1
    return {}, 0


@dataclass
class Page:
    path: Path
    text: str
    meta: dict
    body_start: int  # 0-based line index where the body starts
    docs: Path = DOCS

    @property
    def src_uri(self) -> str:
        return self.path.relative_to(self.docs).as_posix()

    @property
    def lines(self) -> list[str]:
        return self.text.split("\n")

    @property
    def title(self) -> str:
        if self.meta.get("title"):
            return str(self.meta["title"])
        for line in self.lines[self.body_start:]:
            if line.startswith("# "):
                return line[2:].strip()
        return self.path.stem

    @property
    def is_post(self) -> bool:
        return self.src_uri.startswith(JOURNAL_POSTS.relative_to(DOCS).as_posix() + "/")

    @property
    def post_key(self) -> str | None:
        return str(self.meta.get("slug")) if self.is_post else None


@dataclass
class Question:
    text: str
    page: Page
    line: int  # 1-based line in the file
    anchor: str
    kind: str  # "journal", "admonition" or "task"
    answered_by: list[Block] = field(default_factory=list)
    checked: bool = False  # a ticked task item

    @property
    def answered(self) -> bool:
        return bool(self.answered_by) or self.checked

    @property
    def where(self) -> str:
        return f"{rel(self.page.path)}:{self.line}"


def _journal_question_text(line: str, under_ask: bool) -> str | None:
    """The question a journal line asks, or None (see CONTRIBUTING.md)."""
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


def python_functions(path: Path) -> dict[str, int]:
    """Top-level function names of a Python file and their line numbers."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return {n.name: n.lineno for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def section_line(path: Path, name: str) -> int | None:
    """1-based line of the first code line of a named snippet section."""
    for i, line in enumerate(path.read_text(encoding="utf-8").split("\n")):
        if line.strip() == SECTION_MARK.format(name=name):
            return i + 2
    return None


class KnowledgeBase:
    """Every page under docs/, with its blocks, and the questions they ask."""

    def __init__(self, docs: Path = DOCS):
        self.docs = docs
        self.pages: list[Page] = []
        for path in sorted(docs.rglob("*.md")):
            if any(part.startswith(".") for part in path.relative_to(docs).parts):
                continue
            text = path.read_text(encoding="utf-8")
            meta, body_start = split_front_matter(text)
            self.pages.append(Page(path, text, meta, body_start, docs))
        self.blocks: list[Block] = [
            b for p in self.pages for b in parse_blocks(p.text, p.path)
        ]
        self._page_of = {p.path: p for p in self.pages}

    # ---- lookups -------------------------------------------------------
    def page_of(self, block: Block) -> Page:
        return self._page_of[block.path]

    @cached_property
    def posts(self) -> dict[str, Page]:
        return {p.post_key: p for p in self.pages if p.is_post and p.post_key}

    @property
    def claims(self) -> list[Block]:
        return [b for b in self.blocks if b.kind == "claim"]

    @property
    def answers(self) -> list[Block]:
        return [b for b in self.blocks if b.kind == "answer"]

    def anchor(self, block: Block) -> str:
        if block.kind == "claim" and block.get("id"):
            return f"claim-{block.get('id')}"
        return f"{block.kind}-{block.line}"

    def topic_of(self, page: Page) -> str:
        if page.meta.get("topic"):
            return str(page.meta["topic"])
        if page.src_uri.startswith("foundations/"):
            return "基础"
        return page.title

    def find_line(self, post_key: str, fragment: str) -> tuple[int | None, str | None]:
        """(1-based file line, error) of the single line of a post holding fragment."""
        post = self.posts.get(post_key)
        if post is None:
            return None, f"no journal post '{post_key}' (known: {', '.join(sorted(self.posts))})"
        hits = [
            i + 1
            for i, line in enumerate(post.lines)
            if i >= post.body_start and fragment in line
        ]
        if len(hits) != 1:
            return None, (
                f"fragment \"{fragment}\" occurs on {len(hits)} lines of "
                f"{rel(post.path)} (it must match exactly one)"
            )
        return hits[0], None

    # ---- questions -----------------------------------------------------
    @cached_property
    def questions(self) -> list[Question]:
        questions: list[Question] = []
        by_line: dict[tuple[Path, int], Question] = {}

        def add(q: Question) -> None:
            questions.append(q)
            by_line[(q.page.path, q.line)] = q

        for page in self.pages:
            lines = page.lines
            in_code = fenced_lines(lines)
            under_ask = False
            for i in range(page.body_start, len(lines)):
                if in_code[i]:
                    continue
                line = lines[i]
                task = TASK_ITEM.match(line)
                if task:
                    add(Question(task.group("text").strip(), page, i + 1, f"q-{i + 1}", "task",
                                 checked=task.group("mark") != " "))
                    continue
                if not page.is_post:
                    continue
                if line.strip() in ("问：", "问:"):
                    under_ask = True
                    continue
                if not line.strip():
                    under_ask = False
                text = _journal_question_text(line, under_ask)
                if text:
                    add(Question(text, page, i + 1, f"q-{i + 1}", "journal"))
        for block in self.blocks:
            if block.kind == "question":
                page = self.page_of(block)
                add(Question(block.title, page, block.line, f"q-{block.line}", "admonition"))
        # answers: <post> "<fragment>" marks (or makes) a journal question answered
        for block in self.blocks:
            for f in block.all("answers"):
                ref = parse_ref(f.value)
                if not ref:
                    continue
                line, err = self.find_line(*ref)
                if err:
                    continue
                post = self.posts[ref[0]]
                q = by_line.get((post.path, line))
                if q is None:
                    text = _journal_question_text(post.lines[line - 1], True) or post.lines[line - 1].strip()
                    q = Question(text, post, line, f"q-{line}", "journal")
                    add(q)
                q.answered_by.append(block)
        questions.sort(key=lambda q: (str(q.page.path), q.line))
        return questions

    # ---- validation ----------------------------------------------------
    def errors(self) -> list[str]:
        """Every problem with claims and answers, each naming file and line."""
        errors: list[str] = []
        seen: dict[str, Block] = {}
        for b in self.blocks:
            name = f"{b.kind} '{b.get('id') or b.title}'"
            if b.kind == "claim":
                cid = b.get("id")
                if not cid:
                    errors.append(f"{b.where}: {name} has no id")
                elif not ID.match(cid):
                    errors.append(f"{b.where}: {name}: id must be lowercase letters, digits and '-'")
                elif cid in seen:
                    errors.append(f"{b.where}: {name}: id already used at {seen[cid].where}")
                else:
                    seen[cid] = b
                if not b.title:
                    errors.append(f"{b.where}: {name} has no title (the claim's sentence)")
                status = b.get("status")
                if status is None:
                    errors.append(f"{b.where}: {name} has no status (one of {', '.join(STATUSES)})")
                elif status not in STATUSES:
                    errors.append(f"{b.where}: {name}: unknown status '{status}' (one of {', '.join(STATUSES)})")
                test = b.get("test")
                if test is None and status not in (None, "open"):
                    errors.append(f"{b.where}: {name} is {status} but names no test")
                if status == "open" and not b.get("missing") and test is None:
                    errors.append(f"{b.where}: {name} is open: say what is missing (missing: ...)")
                if test is not None:
                    errors.extend(self._check_test(b, name, test, status))
                for f in b.all("evidence"):
                    errors.extend(self._check_evidence(b, name, f))
            if b.kind == "answer" and not b.all("answers"):
                errors.append(f"{b.where}: {name} answers nothing (answers: <YYYYMMDD> \"<fragment>\")")
            for key in ("journal", "answers"):
                for f in b.all(key):
                    ref = parse_ref(f.value)
                    if not ref:
                        errors.append(f"{rel(b.path)}:{f.line}: {name}: {key} must read <YYYYMMDD> \"<fragment>\"")
                        continue
                    _, err = self.find_line(*ref)
                    if err:
                        errors.append(f"{rel(b.path)}:{f.line}: {name}: {err}")
        for page in self.pages:
            topic = page.meta.get("topic")
            if topic is not None and topic not in allowed_topics():
                errors.append(f"{rel(page.path)}:1: topic '{topic}' is not one of {allowed_topics()}")
        return errors

    def test_target(self, test: str) -> tuple[Path, str]:
        path, _, func = test.partition("::")
        return ROOT / path, func

    def _check_test(self, b: Block, name: str, test: str, status: str | None) -> list[str]:
        line = b.all("test")[0].line
        where = f"{rel(b.path)}:{line}"
        path, func = self.test_target(test)
        if not func or not path.suffix == ".py":
            return [f"{where}: {name}: test must read <path.py>::<test_function>"]
        if not path.is_file():
            return [f"{where}: {name}: test file {rel(path)} does not exist"]
        functions = python_functions(path)
        if func not in functions:
            return [f"{where}: {name}: test {test} does not exist (no function {func} in {rel(path)})"]
        if not func.startswith("test_"):
            return [f"{where}: {name}: {func} is not a test (its name must start with test_)"]
        says = next((s for s, p in TEST_PREFIX.items() if func.startswith(p)), "verified")
        if status in STATUSES and status != "open" and says != status:
            return [f"{where}: {name} says {status} but its test {func} decides '{says}' "
                    f"(name a refuting test test_refutes_*, a qualifying one test_qualifies_*)"]
        return []

    def _check_evidence(self, b: Block, name: str, f) -> list[str]:
        path, _, section = f.value.partition(":")
        where = f"{rel(b.path)}:{f.line}"
        if not (ROOT / path).is_file():
            return [f"{where}: {name}: evidence file {path} does not exist"]
        if section and section_line(ROOT / path, section) is None:
            return [f"{where}: {name}: evidence section '{section}' not found in {path}"]
        return []

    def test_claims(self) -> dict[str, list[Block]]:
        """pytest node id of each deciding test -> the claims it decides."""
        out: dict[str, list[Block]] = {}
        for b in self.claims:
            if b.get("test"):
                out.setdefault(b.get("test"), []).append(b)
        return out

