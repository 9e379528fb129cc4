"""The knowledge base as typed data, built in one pass from the project's sources.

Pages, journal posts, claims, answers and questions, with every reference
already resolved (a deciding test to its function's line, evidence to a
snippet section's line, a journal reference to a post's line and the verdict
on it). Every problem is collected on the way as ``file:line: message``.

The MkDocs plugin builds it from the files MkDocs collected; the ``kb``
command and the pytest plugin build it from the same docs folder. Rendering
(``kb.render``) and the checks are functions of this model only.
"""

from __future__ import annotations

import ast
import datetime as dt
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from pathlib import Path

from kb import claim_reviews, sources
from kb.project import KbError, Project, SourceError

ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")
TEST_ID = re.compile(r"^(?P<path>[^:\s\[\]]+\.py)::(?P<function>[A-Za-z_][A-Za-z0-9_]*)(?P<params>\[.+\])?$")
SECTION_START = re.compile(
    r"^[ \t]*#[ \t]*--8<--[ \t]+\[[ \t]*start[ \t]*:[ \t]*(?P<name>[a-z][-_0-9a-z]*)[ \t]*\]", re.I
)
SKIPPING = re.compile(r"\b(skip|skipif|xfail|importorskip)\b")
# counterfactual: <keyword=value, ...> "若……"   (the condition under which the claim would not hold)
COUNTERFACTUAL = re.compile(r'^(?P<kwargs>.+?)[ ]+"(?P<text>若[^"]+)"$')
# quote: <source and place> "<verbatim sentence>"
QUOTE = re.compile(r'^(?P<source>[^"]+?)[ ]+"(?P<text>.+)"$')
# Claims that must name a counterfactual: a verdict that no alternative could overturn is no verdict.
NEEDS_COUNTERFACTUAL = True


class Status(Enum):
    """What a claim's test decided; the test's name must say the same."""

    VERIFIED = ("verified", "已验证", "test_")
    REFUTED = ("refuted", "已证伪", "test_refutes_")
    QUALIFIED = ("qualified", "部分成立", "test_qualifies_")
    OPEN = ("open", "待解决", None)

    def __init__(self, key: str, label: str, prefix: str | None):
        self.key, self.label, self.prefix = key, label, prefix

    @classmethod
    def parse(cls, key: str) -> Status | None:
        return next((s for s in cls if s.key == key), None)

    @classmethod
    def decided_by(cls, function: str) -> Status:
        """The status a deciding test's name asserts (see CONTRIBUTING.md)."""
        for s in (cls.REFUTED, cls.QUALIFIED):
            if function.startswith(s.prefix):
                return s
        return cls.VERIFIED


class Verdict(Enum):
    """The verdict on one line the learner wrote, as a claim later settled it."""

    VERIFIED = ("verified", "已验证")
    REFUTED = ("refuted", "已证伪")
    QUALIFIED = ("qualified", "部分成立")
    ANSWERED = ("answered", "已解答")
    OPEN = ("open", "待解决")

    def __init__(self, key: str, label: str):
        self.key, self.label = key, label

    @classmethod
    def parse(cls, key: str | None) -> Verdict | None:
        return next((v for v in cls if v.key == key), None)


def code_anchor(line: int) -> str:
    """The anchor Pygments gives a line of a code block (``anchor_linenums``)."""
    return f"__codelineno-0-{line}"


@dataclass(frozen=True)
class CodeLine:
    """A line of a snippet file: a test function's ``def`` or a section's first line."""

    path: str  # project-relative, e.g. snippets/sac/critic.py
    line: int
    name: str


@dataclass(frozen=True)
class TestRef:
    node_id: str  # pytest node id, as written (parametrized ids included)
    code: CodeLine

    @property
    def function(self) -> str:
        return self.code.name

    def matches(self, node_id: str) -> bool:
        """Whether a collected pytest item is (an instance of) this test."""
        return node_id == self.node_id or ("[" not in self.node_id and node_id.startswith(self.node_id + "["))


@dataclass(eq=False)
class Page:
    src_uri: str  # docs-relative, as MkDocs names it
    rel: str  # project-relative, for messages
    doc: sources.Document
    is_post: bool
    allowed_topics: list[str] = field(repr=False, default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)

    @property
    def meta(self) -> dict:
        return self.doc.meta

    @cached_property
    def lines(self) -> list[str]:
        return self.doc.lines

    def file_line(self, index: int) -> int:
        return index + self.doc.body_line

    def index(self, file_line: int) -> int:
        return file_line - self.doc.body_line

    @cached_property
    def title(self) -> str:
        if self.meta.get("title"):
            return str(self.meta["title"])
        for line in self.lines:
            if line.startswith("# "):
                return line[2:].strip()
        return Path(self.src_uri).stem

    @cached_property
    def date(self) -> dt.date | None:
        d = self.meta.get("date")
        if isinstance(d, dict):
            d = d.get("created")
        if isinstance(d, dt.datetime):
            return d.date()
        return d if isinstance(d, dt.date) else None

    @property
    def key(self) -> str | None:
        """A post's name in journal references: its date as YYYYMMDD."""
        return self.date.strftime("%Y%m%d") if self.is_post and self.date else None

    @cached_property
    def categories(self) -> list[str]:
        cats = self.meta.get("categories") or []
        return [str(c) for c in cats] if isinstance(cats, list) else [str(cats)]

    @property
    def topic(self) -> str | None:
        return str(self.meta["topic"]) if self.meta.get("topic") else None

    @property
    def section(self) -> str:
        """The heading a claim of this page is listed under on the claims page."""
        if self.topic:
            return self.topic
        if self.src_uri.startswith("foundations/"):
            return "基础"
        return self.title


@dataclass(frozen=True)
class JournalRef:
    """A claim's (or answer's) reference to one line of a journal post, with that line's verdict."""

    kind: str  # "journal" (a statement it settles) or "answers" (a question it answers)
    post: Page
    line: int  # 1-based file line in the post
    fragment: str
    verdict: Verdict
    written_at: int  # file line of the reference on the claim's page

    @property
    def anchor(self) -> str:
        return f"q-{self.line}" if self.kind == "answers" else f"j-{self.line}"


class Basis(Enum):
    """What a claim's verdict rests on; a reader weighs a test of an identity differently from an experiment."""

    EXPERIMENT = ("experiment", "实验", "测试运行一个可能得出别的结果的实验")
    IDENTITY = ("identity", "恒等式", "按定义或构造成立：测试检查代码与公式一致，不是可能失败的实验")
    READING = ("reading", "读原文", "来自论文或参考代码的原文（见引文），测试检查按这种读法写出的代码")

    def __init__(self, key: str, label: str, meaning: str):
        self.key, self.label, self.meaning = key, label, meaning

    @classmethod
    def parse(cls, key: str) -> Basis | None:
        return next((b for b in cls if b.key == key), None)


@dataclass(frozen=True)
class Counterfactual:
    """A setting under which the claim, as worded, would not hold: its deciding test must fail there.

    ``kwargs`` are keyword arguments of the deciding test (parameters it declares with a default);
    each value is a literal or a name of the test's module (an alternative implementation,
    a parameter, a data set).
    """

    kwargs: str  # as written, e.g. 'positions=forward_only, h=8'
    text: str  # the condition in words, starting with 若
    line: int  # file line of the field
    index: int  # 1-based, in the claim's order

    def values(self, namespace: dict) -> dict:
        """The keyword arguments, evaluated in the test module's namespace (names and literals only)."""
        call = ast.parse(f"f({self.kwargs})", mode="eval").body
        return {k.arg: _safe_value(k.value, namespace) for k in call.keywords}


def _safe_value(node: ast.AST, namespace: dict):
    """A literal, or a (dotted) name of the namespace that is not private: nothing is called."""
    if isinstance(node, ast.Name):
        if node.id.startswith("_") or node.id not in namespace:
            raise NameError(f"{node.id} is not a public name of the test's module")
        return namespace[node.id]
    if isinstance(node, ast.Attribute):
        if node.attr.startswith("_"):
            raise NameError(f"{node.attr}: private attributes are not allowed")
        return getattr(_safe_value(node.value, namespace), node.attr)
    if isinstance(node, (ast.Tuple, ast.List)):
        items = [_safe_value(e, namespace) for e in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    return ast.literal_eval(node)


def _checked_kwargs(text: str) -> list[str]:
    """The keyword names of a counterfactual, or ValueError saying what is wrong with it."""
    try:
        call = ast.parse(f"f({text})", mode="eval").body
    except SyntaxError:
        raise ValueError(f"'{text}' is not a list of keyword arguments (name=value, ...)") from None
    if not isinstance(call, ast.Call) or call.args or not call.keywords or any(k.arg is None for k in call.keywords):
        raise ValueError(f"'{text}' must be keyword arguments only (name=value, ...)")

    def allowed(node: ast.AST) -> bool:
        if isinstance(node, ast.Name):
            return not node.id.startswith("_")
        if isinstance(node, ast.Attribute):
            return not node.attr.startswith("_") and allowed(node.value)
        if isinstance(node, (ast.Tuple, ast.List)):
            return all(allowed(e) for e in node.elts)
        try:
            ast.literal_eval(node)
            return True
        except ValueError:
            return False

    for k in call.keywords:
        if not allowed(k.value):
            raise ValueError(
                f"{k.arg}={ast.unparse(k.value)}: a value is a literal or a public name "
                "of the test's module (nothing is called)"
            )
    return [k.arg for k in call.keywords]


@dataclass(frozen=True)
class Quote:
    """A verbatim sentence of a source the claim rests on, with where it stands."""

    source: str  # e.g. 'arXiv:2601.00393 §3.1'
    text: str
    line: int


@dataclass(eq=False)
class Claim:
    id: str
    title: str
    status: Status
    page: Page
    line: int  # file line of the header
    block: sources.RawBlock
    test: TestRef | None = None
    evidence: list[CodeLine] = field(default_factory=list)
    journal: list[JournalRef] = field(default_factory=list)
    answers: list[JournalRef] = field(default_factory=list)
    missing: str | None = None
    counterfactuals: list[Counterfactual] = field(default_factory=list)
    quotes: list[Quote] = field(default_factory=list)
    basis: Basis = Basis.EXPERIMENT
    test_source: str = ""  # the deciding test's syntax tree (docstring and formatting left out)
    reviews: list[claim_reviews.ClaimReview] = field(default_factory=list)  # second readings, oldest first
    card_answer: str | None = None  # `review:` line: the review card's short answer (one sentence)
    kind = "claim"

    @property
    def last_review(self) -> claim_reviews.ClaimReview | None:
        return claim_reviews.latest(self.reviews)

    @property
    def review_current(self) -> bool:
        """Read by a second reader as it is now (not changed since)."""
        return claim_reviews.is_current(self.reviews, self.fingerprint)

    @property
    def fingerprint(self) -> str:
        """What a second reader read: the claim's block and its deciding test, as code.

        A review record holds it; when the claim's words, fields or test change, the
        review is no longer current.
        """
        import hashlib

        lines = self.page.lines[self.block.start : self.block.end]
        words = "\n".join(" ".join(line.split()) for line in lines if line.strip())
        return hashlib.sha256(f"{words}\n--\n{self.test_source}".encode()).hexdigest()[:16]

    @property
    def anchor(self) -> str:
        return f"claim-{self.id}"

    @property
    def where(self) -> str:
        return f"{self.page.rel}:{self.line}"

    @property
    def refs(self) -> list[JournalRef]:
        return self.journal + self.answers


@dataclass(eq=False)
class Answer:
    title: str
    page: Page
    line: int
    block: sources.RawBlock
    answers: list[JournalRef] = field(default_factory=list)
    kind = "answer"

    @property
    def anchor(self) -> str:
        return f"answer-{self.line}"

    @property
    def where(self) -> str:
        return f"{self.page.rel}:{self.line}"

    @property
    def refs(self) -> list[JournalRef]:
        return self.answers


@dataclass(eq=False)
class Question:
    text: str
    page: Page
    line: int  # file line
    kind: str  # "journal", "task" or "admonition"
    checked: bool = False  # a ticked task item
    answered_by: list[Claim | Answer] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return f"q-{self.line}"

    @property
    def answered(self) -> bool:
        return bool(self.answered_by) or self.checked

    @property
    def where(self) -> str:
        return f"{self.page.rel}:{self.line}"


def asserts(node: ast.AST) -> bool:
    """Whether a function body holds an assertion that can fail."""
    for n in ast.walk(node):
        if isinstance(n, ast.Assert) and not (isinstance(n.test, ast.Constant) and n.test.value):
            return True
        if isinstance(n, ast.Raise) and n.exc is not None and "AssertionError" in ast.unparse(n.exc):
            return True
        if isinstance(n, ast.Call):
            name = ast.unparse(n.func)
            if name.split(".")[-1].startswith("assert_") or name in ("pytest.raises", "pytest.fail"):
                return True
    return False


@dataclass(frozen=True)
class SnippetModule:
    """What the model needs of a snippet file: its top-level functions and named sections."""

    functions: dict[str, ast.FunctionDef]
    sections: dict[str, int]  # name -> 1-based line of the section's first code line
    skips: list[int]  # lines of module-level skips (pytest.skip / importorskip / pytestmark)
    names: frozenset[str] = frozenset()  # every name the module binds at top level

    @property
    def tests_without_assertion(self) -> list[ast.FunctionDef]:
        return [f for name, f in self.functions.items() if name.startswith("test_") and not asserts(f)]

    @classmethod
    def read(cls, path: Path, shown: str) -> SnippetModule:
        text = sources.read_text(path, shown)
        try:
            tree = ast.parse(text, filename=shown)
        except SyntaxError as e:
            raise SourceError(shown, e.lineno, f"not valid Python ({e.msg})") from None
        functions = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        sections = {}
        for i, line in enumerate(text.split("\n")):
            m = SECTION_START.match(line)
            if m:
                sections.setdefault(m.group("name"), i + 2)
        skips = [
            n.lineno
            for n in tree.body
            if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and SKIPPING.search(ast.unparse(n))
            and "pytest" in ast.unparse(n)
        ]
        names = set()
        for n in tree.body:
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(n.name)
            elif isinstance(n, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in n.names)
            elif isinstance(n, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                for t in n.targets if isinstance(n, ast.Assign) else [n.target]:
                    names.update(x.id for x in ast.walk(t) if isinstance(x, ast.Name))
        return cls(functions, sections, skips, frozenset(names))


@dataclass
class KnowledgeBase:
    project: Project
    pages: dict[str, Page]  # by src_uri
    posts: dict[str, Page]  # by YYYYMMDD
    claims: list[Claim]
    answers: list[Answer]
    questions: list[Question]
    errors: list[SourceError]
    modules: dict[str, SnippetModule] = field(default_factory=dict)  # the snippet files pages name

    # ---- construction ---------------------------------------------------------------
    @classmethod
    def load(cls, project: Project) -> KnowledgeBase:
        """Built from the docs folder, as MkDocs would collect it (for ``kb`` and pytest)."""
        return cls.build(project, doc_sources(project))

    @classmethod
    def build(cls, project: Project, pages: Iterable[tuple[str, Path, str]]) -> KnowledgeBase:
        """Built from (src_uri, path, text) of every Markdown page (for the MkDocs plugin)."""
        return _Builder(project).build(pages)

    def check(self) -> None:
        """Raise the collected errors, one per line."""
        if self.errors:
            raise KbError("\n".join(str(e) for e in self.errors))

    # ---- lookups ---------------------------------------------------------------------
    def section_line(self, path: str, section: str) -> int:
        """1-based line of a named section's first code line in a snippet file (1 if unknown)."""
        module = self.modules.get(path)
        return module.sections.get(section, 1) if module else 1

    @cached_property
    def claim_by_id(self) -> dict[str, Claim]:
        return {c.id: c for c in self.claims}

    @cached_property
    def refs_by_line(self) -> dict[str, dict[int, list[tuple[JournalRef, Claim | Answer]]]]:
        """post src_uri -> file line -> the references settling that line, with who settles it."""
        out: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
        for owner in sorted([*self.claims, *self.answers], key=lambda o: (o.page.src_uri, o.line)):
            for ref in owner.refs:
                out[ref.post.src_uri][ref.line].append((ref, owner))
        return out

    @cached_property
    def questions_by_page(self) -> dict[str, list[Question]]:
        out: dict[str, list[Question]] = defaultdict(list)
        for q in self.questions:
            out[q.page.src_uri].append(q)
        return out

    @cached_property
    def topic_pages(self) -> dict[str, Page]:
        """The main page of each topic: its index page if it has one, else its first page."""
        out: dict[str, Page] = {}
        for page in self.pages.values():
            if page.topic and (page.topic not in out or page.src_uri.endswith("index.md")):
                out[page.topic] = page
        return out

    @cached_property
    def posts_by_topic(self) -> dict[str, list[Page]]:
        out: dict[str, list[Page]] = defaultdict(list)
        for key in sorted(self.posts):
            for c in self.posts[key].categories:
                out[c].append(self.posts[key])
        return out

    @cached_property
    def claims_by_test(self) -> dict[str, list[Claim]]:
        out: dict[str, list[Claim]] = defaultdict(list)
        for c in self.claims:
            if c.test:
                out[c.test.node_id].append(c)
        return out

    @cached_property
    def pages_citing(self) -> dict[str, list[Page]]:
        """snippet path -> the pages that include it or name it as a claim's test or evidence."""
        out: dict[str, dict[str, Page]] = defaultdict(dict)
        for page in self.pages.values():
            for inc in includes_of(page):
                out[inc.path][page.src_uri] = page
            for claim in page.claims:
                for code in ([claim.test.code] if claim.test else []) + claim.evidence:
                    out[code.path][page.src_uri] = page
        return {path: sorted(pages.values(), key=lambda p: p.src_uri) for path, pages in out.items()}


def _defaulted_parameters(fn: ast.FunctionDef) -> set[str]:
    """Parameters a test declares with a default: pytest passes no fixture to them."""
    args = fn.args
    positional = [*args.posonlyargs, *args.args]
    named = {a.arg for a in positional[len(positional) - len(args.defaults) :]} if args.defaults else set()
    return named | {a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None}


def _code_shape(fn: ast.FunctionDef) -> str:
    """A function's syntax tree without its docstring: formatting and comments do not change it."""
    import copy

    body = fn.body
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(getattr(body[0], "value", None), ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        fn = copy.copy(fn)  # a shallow copy is enough: only its body is replaced, nothing is mutated
        fn.body = body[1:] or [ast.Pass()]
    return ast.dump(fn, annotate_fields=False)


FIGURE = re.compile(r"^(?P<stem>.+)\.figure-(?P<k>\d+)\.png$")  # a notebook's k-th figure, as pages embed it


def notebooks_of(kb: KnowledgeBase, page: Page) -> list[str]:
    """docs-relative notebooks a page shows (links to, or embeds a figure of)."""
    out = []
    base = Path(page.src_uri).parent
    for m in sources.LINK.finditer(page.doc.body):
        url = m.group("url").split("#")[0]
        if "://" in url or url.startswith("/"):
            continue
        name = Path(url).name
        fig = FIGURE.match(name)
        if url.endswith(".ipynb"):
            out.append((base / url).as_posix())
        elif fig:
            out.append((base / url).parent.joinpath(fig.group("stem") + ".ipynb").as_posix())
    exists = [n for n in dict.fromkeys(sources.normalise_uri(n) for n in out) if (kb.project.docs_dir / n).is_file()]
    return exists


def has_checks(kb: KnowledgeBase, page: Page) -> bool:
    """Whether ``kb check`` has anything to run for a page: a claim, a code block, an include or a
    notebook it shows. A journal post's code is the learner's, shown and never run. Only such a page
    gets kb serve's status line."""
    if page.is_post:
        return False
    return bool(
        page.claims
        or any(sources.fenced(page.lines))
        or sources.includes(page.lines, page.doc.body_line)
        or notebooks_of(kb, page)
    )


def doc_sources(project: Project) -> Iterable[tuple[str, Path, str]]:
    """Every Markdown page under docs_dir, as MkDocs collects them (dot files and folders left out)."""
    docs = project.docs_dir
    if not docs.is_dir():
        raise KbError(f"{project.rel(docs)}: the docs folder does not exist")
    for path in sorted(docs.rglob("*.md")):
        uri = path.relative_to(docs).as_posix()
        if any(part.startswith(".") for part in uri.split("/")):
            continue
        yield uri, path, None  # read lazily by the builder (errors become file:line)


def includes_of(page: Page) -> list[sources.Include]:
    return sources.includes(page.lines, page.doc.body_line) if not page.is_post else []


class _Builder:
    """One pass over the sources; every problem becomes an error with file:line."""

    def __init__(self, project: Project):
        self.project = project
        self.errors: list[SourceError] = []
        self.modules: dict[str, SnippetModule | None] = {}

    def error(self, where: str, line: int | None, message: str) -> None:
        self.errors.append(SourceError(where, line, message))

    # ---- pages and posts ------------------------------------------------------------
    def build(self, inputs: Iterable[tuple[str, Path, str | None]]) -> KnowledgeBase:
        pages: dict[str, Page] = {}
        posts_prefix = self.project.posts_uri + "/"
        allowed = self.project.allowed_topics
        for uri, path, text in inputs:
            shown = self.project.rel(path)
            try:
                text = sources.read_text(path, shown) if text is None else text
                doc = sources.read_document(text, shown)
            except SourceError as e:
                self.errors.append(e)
                continue
            pages[uri] = Page(uri, shown, doc, uri.startswith(posts_prefix), allowed)
        posts = self._posts(pages)
        claims: list[Claim] = []
        answers: list[Answer] = []
        questions: list[Question] = []
        for page in pages.values():
            if page.topic is not None and page.topic not in allowed:
                self.error(page.rel, 1, f"topic '{page.topic}' is not one of the journal categories {allowed}")
            if page.is_post:
                continue
            self._check_includes(page)
            for line, kind in sources.malformed_headers(page.lines, page.doc.body_line):
                self.error(page.rel, line, f'a {kind} header must read: !!! {kind} "<one sentence, no double quotes>"')
            for block in sources.parse_blocks(page.lines, page.doc.body_line):
                if block.indent:
                    self.error(page.rel, block.line, f"a {block.kind} block must start at the beginning of the line")
                elif block.kind == "claim":
                    claim = self._claim(page, block, posts)
                    if claim:
                        page.claims.append(claim)
                        claims.append(claim)
                elif block.kind == "answer":
                    answer = self._answer(page, block, posts)
                    page.answers.append(answer)
                    answers.append(answer)
                else:
                    questions.append(Question(block.title, page, block.line, "admonition"))
        seen: dict[str, Claim] = {}
        for c in claims:
            if c.id in seen:
                self.error(c.page.rel, c.line, f"claim id '{c.id}' is already used at {seen[c.id].where}")
            seen.setdefault(c.id, c)
        questions = self._questions(pages, questions, [*claims, *answers])
        readings = claim_reviews.load(self.project)
        self.errors += readings.errors
        for c in claims:
            c.reviews = readings.by_claim.get(c.id, [])
        for cid in sorted(set(readings.by_claim) - set(seen)):
            self.error(readings.files[cid], 1, f"review of claim '{cid}', which no page has (renamed? move the file)")
        modules = {k: m for k, m in self.modules.items() if m}
        return KnowledgeBase(self.project, pages, posts, claims, answers, questions, self.errors, modules)

    def _posts(self, pages: dict[str, Page]) -> dict[str, Page]:
        posts: dict[str, Page] = {}
        slugs: dict[str, Page] = {}
        allowed = self.project.allowed_topics
        for page in (p for p in pages.values() if p.is_post):
            if page.date is None:
                self.error(page.rel, 1, "a journal post needs a date in its front matter (date: YYYY-MM-DD)")
                continue
            if page.key in posts:
                self.error(
                    page.rel,
                    1,
                    f"a second post for {page.date.isoformat()}: {posts[page.key].rel} has that date "
                    "(one post per day; `kb new` appends to it)",
                )
                continue
            posts[page.key] = page
            slug = str(page.meta.get("slug") or "")
            if slug and slug in slugs:
                self.error(page.rel, 1, f"slug '{slug}' is already used by {slugs[slug].rel} (both would get one URL)")
            slugs.setdefault(slug, page)
            for c in page.categories:
                if c not in allowed:
                    self.error(page.rel, 1, f"category '{c}' is not one of the topics {allowed}")
        return posts

    # ---- snippet references ------------------------------------------------------------
    def _snippet(self, where: str, line: int, written: str, what: str) -> tuple[str, SnippetModule] | None:
        """A snippet module named from a page: inside snippets/, symlinks followed, parsed once."""
        rel = Path(written)
        path = self.project.root / rel
        if (
            rel.is_absolute()
            or ".." in rel.parts
            or not rel.parts
            or rel.parts[0] != "snippets"
            or not self.project.inside(path, self.project.snippets_dir)
        ):
            self.error(where, line, f"{what} {written} is outside snippets/ (only snippet modules may be named here)")
            return None
        if not path.is_file():
            self.error(where, line, f"{what} {written} does not exist")
            return None
        key = rel.as_posix()
        if key not in self.modules:
            try:
                self.modules[key] = SnippetModule.read(path, key)
            except SourceError as e:
                self.errors.append(e)
                self.modules[key] = None
            if self.modules[key]:
                for fn in self.modules[key].tests_without_assertion:
                    self.error(
                        key,
                        fn.lineno,
                        f"{fn.name} asserts nothing: a test must be able to fail "
                        "(an assert, a call named assert_*, pytest.raises or pytest.fail)",
                    )
        module = self.modules[key]
        return (key, module) if module else None

    def _check_includes(self, page: Page) -> None:
        for inc in includes_of(page):
            found = self._snippet(page.rel, inc.line, inc.path, "include of")
            if found and inc.section and inc.section not in found[1].sections:
                self.error(page.rel, inc.line, f"include of {inc.target}: no section '{inc.section}' in {inc.path}")

    def _test(self, page: Page, f: sources.Field, status: Status | None) -> TestRef | None:
        m = TEST_ID.match(f.value)
        if not m:
            self.error(
                page.rel, f.line, "test must be a pytest node id: snippets/<topic>/<module>.py::test_<name>[params]"
            )
            return None
        found = self._snippet(page.rel, f.line, m.group("path"), "test")
        if not found:
            return None
        path, module = found
        parts = Path(path).parts
        if len(parts) != 3 or parts[2].startswith("_"):
            self.error(
                page.rel, f.line, f"pytest does not collect {path}: deciding tests live in snippets/<topic>/<module>.py"
            )
            return None
        name = m.group("function")
        fn = module.functions.get(name)
        if fn is None:
            self.error(page.rel, f.line, f"test {f.value} does not exist (no function {name} in {path})")
            return None
        if not name.startswith("test_"):
            self.error(page.rel, f.line, f"{name} is not a test (its name must start with test_)")
            return None
        decorators = [ast.unparse(d) for d in fn.decorator_list]
        if any(SKIPPING.search(d) for d in decorators) or module.skips:
            self.error(
                page.rel,
                f.line,
                f"test {f.value} can be skipped ({path}:{module.skips[0] if module.skips else fn.lineno}); "
                "a deciding test must always run",
            )
        if m.group("params") and not any("parametrize" in d for d in decorators):
            self.error(page.rel, f.line, f"test {f.value} names parameters but {name} is not parametrized")
        says = Status.decided_by(name)
        if status and status is not Status.OPEN and says is not status:
            self.error(
                page.rel,
                f.line,
                f"the claim says {status.key} but its test {name} decides '{says.key}' "
                "(a refuting test is named test_refutes_*, a qualifying one test_qualifies_*)",
            )
        return TestRef(f.value, CodeLine(path, fn.lineno, name))

    def _test_function(self, test: TestRef) -> ast.FunctionDef | None:
        module = self.modules.get(test.code.path)
        return module.functions.get(test.function) if module else None

    def _counterfactuals(
        self, page: Page, block: sources.RawBlock, status: Status | None, test: TestRef | None
    ) -> list[Counterfactual]:
        out = []
        fn = self._test_function(test) if test else None
        defaults = _defaulted_parameters(fn) if fn else set()
        for f in block.values("counterfactual"):
            m = COUNTERFACTUAL.match(f.value)
            if not m:
                self.error(page.rel, f.line, 'counterfactual must read: <name=value, ...> "若<the setting in words>"')
                continue
            try:
                names = _checked_kwargs(m.group("kwargs"))
            except ValueError as e:
                self.error(page.rel, f.line, f"counterfactual {e}")
                continue
            if status in (None, Status.OPEN) or test is None:
                self.error(page.rel, f.line, "an open claim has no deciding test to run a counterfactual against")
                continue
            module = self.modules.get(test.code.path) if test else None
            unknown = sorted(
                {
                    x.id
                    for x in ast.walk(ast.parse(m.group("kwargs").join(("f(", ")")), mode="eval"))
                    if isinstance(x, ast.Name) and x.id != "f"
                }
                - set(module.names if module else ())
            )
            if module is not None and unknown:
                self.error(
                    page.rel,
                    f.line,
                    f"counterfactual names {', '.join(unknown)}, which {test.code.path} "
                    "does not define or import at top level",
                )
                continue
            if fn is not None:
                missing = [n for n in names if n not in defaults]
                if missing:
                    self.error(
                        page.rel,
                        f.line,
                        f"counterfactual sets {', '.join(missing)}, but {test.function} "
                        f"({test.code.path}:{test.code.line}) has no such parameter with a default "
                        "(declare it: def test_...(..., name=default))",
                    )
                    continue
            out.append(Counterfactual(m.group("kwargs"), m.group("text"), f.line, len(out) + 1))
        if (
            NEEDS_COUNTERFACTUAL
            and status in (Status.VERIFIED, Status.REFUTED)
            and test
            and not block.values("counterfactual")
        ):
            self.error(
                page.rel,
                block.line,
                f"claim is {status.key} but names no counterfactual: a setting under which "
                'its deciding test must fail (counterfactual: name=value "若……")',
            )
        return out

    def _quotes(self, page: Page, block: sources.RawBlock) -> list[Quote]:
        out = []
        for f in block.values("quote"):
            m = QUOTE.match(f.value)
            if not m:
                self.error(page.rel, f.line, 'quote must read: <source, section or equation> "<verbatim sentence>"')
                continue
            out.append(Quote(m.group("source"), m.group("text"), f.line))
        return out

    def _evidence(self, page: Page, f: sources.Field) -> CodeLine | None:
        path, section = sources.split_target(f.value)
        found = self._snippet(page.rel, f.line, path, "evidence")
        if not found:
            return None
        if section is None:
            return CodeLine(found[0], 1, "")
        line = found[1].sections.get(section)
        if line is None:
            self.error(page.rel, f.line, f"evidence section '{section}' not found in {path}")
            return None
        return CodeLine(found[0], line, section)

    # ---- journal references --------------------------------------------------------
    def _refs(
        self, page: Page, block: sources.RawBlock, kind: str, posts: dict[str, Page], status: Status | None
    ) -> list[JournalRef]:
        allowed = {
            "journal": (Verdict.VERIFIED, Verdict.REFUTED, Verdict.QUALIFIED),
            "answers": (Verdict.ANSWERED, Verdict.VERIFIED, Verdict.REFUTED, Verdict.QUALIFIED),
        }[kind]
        if status is Status.OPEN:
            allowed = (Verdict.OPEN, Verdict.ANSWERED) if kind == "answers" else (Verdict.OPEN,)
        names = "/".join(v.key for v in allowed)
        out = []
        for f in block.values(kind):
            raw = sources.parse_ref(f.value)
            if raw is None:
                self.error(page.rel, f.line, f'{kind} must read <YYYYMMDD> "<fragment of one line>" <{names}>')
                continue
            verdict = Verdict.parse(raw.verdict)
            if verdict not in allowed:
                got = f"'{raw.verdict}'" if raw.verdict else "no verdict"
                self.error(
                    page.rel, f.line, f"{kind} reference has {got}: give the learner's line its own verdict ({names})"
                )
                continue
            post = posts.get(raw.post)
            if post is None:
                self.error(
                    page.rel, f.line, f"no journal post {raw.post} (known: {', '.join(sorted(posts)) or 'none'})"
                )
                continue
            hits = [i for i, line in enumerate(post.lines) if raw.fragment in line]
            if len(hits) != 1:
                self.error(
                    page.rel,
                    f.line,
                    f'fragment "{raw.fragment}" occurs on {len(hits)} lines of {post.rel} (it must match exactly one)',
                )
                continue
            out.append(JournalRef(kind, post, post.file_line(hits[0]), raw.fragment, verdict, f.line))
        return out

    # ---- blocks ---------------------------------------------------------------------
    def _claim(self, page: Page, block: sources.RawBlock, posts: dict[str, Page]) -> Claim | None:
        def one(key: str) -> sources.Field | None:
            values = block.values(key)
            for extra in values[1:]:
                self.error(page.rel, extra.line, f"a claim has one {key}")
            return values[0] if values else None

        f_id, f_status, f_test, f_missing = one("id"), one("status"), one("test"), one("missing")
        cid = f_id.value if f_id else ""
        name = f"claim '{cid or block.title}'"
        ok = True
        if not cid:
            self.error(page.rel, block.line, f"{name} has no id")
            ok = False
        elif not ID.match(cid):
            self.error(page.rel, f_id.line, f"{name}: id must be lowercase letters, digits and '-'")
            ok = False
        if not block.title:
            self.error(page.rel, block.line, f"{name} has no title (the claim's sentence)")
        status = Status.parse(f_status.value) if f_status else None
        if f_status is None:
            self.error(page.rel, block.line, f"{name} has no status (one of {', '.join(s.key for s in Status)})")
            ok = False
        elif status is None:
            self.error(
                page.rel,
                f_status.line,
                f"{name}: unknown status '{f_status.value}' (one of {', '.join(s.key for s in Status)})",
            )
            ok = False
        test = self._test(page, f_test, status) if f_test else None
        if f_test is None and status not in (None, Status.OPEN):
            self.error(page.rel, block.line, f"{name} is {status.key} but names no test")
            ok = False
        if status is Status.OPEN and f_test is None and f_missing is None:
            self.error(page.rel, block.line, f"{name} is open: say what is missing (missing: ...)")
        evidence = [e for f in block.values("evidence") if (e := self._evidence(page, f))]
        journal = self._refs(page, block, "journal", posts, status)
        answers = self._refs(page, block, "answers", posts, status)
        counterfactuals = self._counterfactuals(page, block, status, test)
        quotes = self._quotes(page, block)
        f_basis = one("basis")
        basis = Basis.parse(f_basis.value) if f_basis else Basis.EXPERIMENT
        if basis is None:
            self.error(
                page.rel,
                f_basis.line,
                f"{name}: unknown basis '{f_basis.value}' (one of {', '.join(b.key for b in Basis)})",
            )
            basis = Basis.EXPERIMENT
        if basis is Basis.READING and not quotes:
            self.error(
                page.rel,
                block.line,
                f"{name} rests on reading a source: quote the sentence it relies on "
                '(quote: arXiv:NNNN.NNNNN §x "<verbatim>")',
            )
        if not ok:
            return None
        f_review = one("review")
        fn = self._test_function(test) if test else None
        return Claim(
            cid,
            block.title,
            status,
            page,
            block.line,
            block,
            test,
            evidence,
            journal,
            answers,
            f_missing.value if f_missing else None,
            counterfactuals,
            quotes,
            basis,
            _code_shape(fn) if fn else "",
            card_answer=f_review.value if f_review else None,
        )

    def _answer(self, page: Page, block: sources.RawBlock, posts: dict[str, Page]) -> Answer:
        answer = Answer(block.title, page, block.line, block, self._refs(page, block, "answers", posts, None))
        if not block.values("answers"):
            self.error(
                page.rel,
                block.line,
                f"answer '{block.title}' answers nothing (answers: <YYYYMMDD> \"<fragment>\" answered)",
            )
        for key in ("id", "status", "test", "evidence", "journal", "counterfactual", "basis", "review"):
            for f in block.values(key):
                self.error(page.rel, f.line, f"an answer has no {key} (make it a claim if a test decides it)")
        return answer

    # ---- questions ------------------------------------------------------------------
    def _questions(
        self, pages: dict[str, Page], admonitions: list[Question], owners: list[Claim | Answer]
    ) -> list[Question]:
        found: dict[tuple[str, int], Question] = {(q.page.src_uri, q.line): q for q in admonitions}
        for page in pages.values():
            in_code = sources.fenced(page.lines)
            under_ask = False
            for i, line in enumerate(page.lines):
                if in_code[i]:
                    continue
                task = sources.TASK_ITEM.match(line) if "[" in line else None  # a task item has its "[ ]"
                if task:
                    q = Question(
                        task.group("text").strip(), page, page.file_line(i), "task", checked=task.group("mark") != " "
                    )
                    found[(page.src_uri, q.line)] = q
                    continue
                if not page.is_post:
                    continue
                stripped = line.strip()
                if stripped in sources.ASK_HEADERS:
                    under_ask = True
                    continue
                if not stripped:
                    under_ask = False
                    continue  # a blank line asks nothing
                if not under_ask and not sources.QUESTION_HINT.search(line):
                    continue  # what journal_question would refuse first, without the call (most lines)
                text = sources.journal_question(line, under_ask)
                if text:
                    q = Question(text, page, page.file_line(i), "journal")
                    found[(page.src_uri, q.line)] = q
        for owner in sorted(owners, key=lambda o: (o.page.src_uri, o.line)):
            for ref in owner.answers:
                key = (ref.post.src_uri, ref.line)
                if key not in found:
                    line = ref.post.lines[ref.post.index(ref.line)]
                    text = sources.journal_question(line, True) or line.strip()
                    found[key] = Question(text, ref.post, ref.line, "journal")
                found[key].answered_by.append(owner)
        return sorted(found.values(), key=lambda q: (q.page.src_uri, q.line))
