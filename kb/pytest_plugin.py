"""pytest plugin: run what the pages show, isolated, and hold every claim to its test.

- A page's code block whose body is a pymdownx.snippets include
  (``--8<-- "snippets/x.py:section"``) is expanded exactly as the site expands
  it, then executed: the page shows those lines, so those lines must run.
- Page blocks (pytest-codeblocks items and ``>>>`` doctests of pages) run in a
  forked child, in a temporary folder, unable to write into the project, killed
  after ``kb_block_timeout`` seconds; they cannot be skipped or marked. Journal
  posts are the learner's words: their code is shown, not executed.
- Every claim's deciding test must run and pass in the same session. A
  deciding test that is skipped or xfailed by any means fails the run naming
  the claim; one that was never collected fails the run too (in a full run, or
  when its module was asked for).
- Tests marked ``experiment`` (re-running a committed experiment) are left out
  unless ``--experiments`` is given.
- torch runs on one thread (OMP_NUM_THREADS=1, set before anything imports it, whatever the shell
  exported; and torch.set_num_threads(1) at configure, for a process that imported torch first):
  the tensors are tiny, threads only add contention on two cores, and a verdict must not depend
  on the machine's thread count. This is the one place the test processes set it.
"""

from __future__ import annotations

import os

os.environ.setdefault("KB_FAST", "1")
os.environ["OMP_NUM_THREADS"] = "1"  # assigned, not defaulted: an exported value must not change a verdict
os.environ["MKL_NUM_THREADS"] = "1"

import fnmatch  # noqa: E402
import functools  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import unicodedata  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from mkdocs.utils import markdown_extensions  # noqa: E402

from kb import sources  # noqa: E402
from kb.model import Claim, Counterfactual, KnowledgeBase  # noqa: E402
from kb.project import KbError, Project  # noqa: E402
from kb.sandbox import run_forked  # noqa: E402
from kb.site import Site  # noqa: E402
from kb.testrun import LoadedModel  # noqa: E402

# What pytest-codeblocks reads as a directive (its own patterns: `<!--[-\s]*pytest-codeblocks:` and
# `<!--[-\s]*pytest.mark.`, on the stripped line); a skipif's condition would be evaluated in this process.
DIRECTIVE = re.compile(r"^\s*<!--[-\s]*pytest")


def pytest_addoption(parser):
    group = parser.getgroup("kb", "Learning Notes")
    group.addoption(
        "--experiments",
        action="store_true",
        help="also run the tests marked `experiment` (re-run committed experiments; minutes)",
    )
    group.addoption(
        "--kb-claims",
        choices=("auto", "all", "off"),
        default="auto",
        help="which claims must have their deciding test pass: all of them in a full run (auto), "
        "those of the files asked for otherwise",
    )
    group.addoption(
        "--kb-report",
        default=None,
        metavar="PATH",
        help="write the session's outcome as JSON (what `kb check` and `python -m kb.testrun` read); "
        "a missing report means the session did not reach its end",
    )
    parser.addini("kb_block_timeout", "seconds a page block may run before it is killed", default="60")
    parser.addini(
        "kb_block_processes", "processes (and threads) a page block or notebook may run at once", default="64"
    )
    parser.addini(
        "kb_block_memory_mb",
        "MiB of memory a page block's or notebook's process may map (also the size of its /tmp)",
        default="1024",
    )


PLUGIN_NAME = "kb-session"


def pytest_configure(config):
    """Register this run's plugin object: all per-run state lives on it, one per pytest config
    (so a run started inside another, as pytester's are, has its own)."""
    if "torch" in sys.modules:  # imported before this plugin (a warm or forked process): set it directly
        sys.modules["torch"].set_num_threads(1)
    if sys.flags.optimize:
        raise pytest.UsageError(
            "kb: Python runs with -O, which strips assert statements: every check would pass without checking"
        )
    try:
        state = State(config)
    except KbError as e:
        raise pytest.UsageError(f"kb: {e}") from None
    config.pluginmanager.register(state, PLUGIN_NAME)


def session_state(config) -> State:
    """The kb plugin object of a pytest run (its claims, outcomes and problems)."""
    state = config.pluginmanager.get_plugin(PLUGIN_NAME)
    assert state is not None, "kb.pytest_plugin is not configured for this run"
    return state


def _shared_assertions() -> dict[str, object]:
    """The functions that every module's assertions rely on, by name, as they are before any snippet runs.

    A snippet module (or test) that replaces one changes what every later assertion means, in its
    process and, under xdist, in every worker that imports it while collecting.
    """
    import builtins
    import math

    import numpy.testing
    import torch

    out = {
        f"builtins.{n}": getattr(builtins, n) for n in ("abs", "all", "any", "len", "isinstance", "round", "max", "min")
    }
    out["math.isclose"] = math.isclose
    for n in ("assert_close", "assert_allclose"):
        if hasattr(torch.testing, n):
            out[f"torch.testing.{n}"] = getattr(torch.testing, n)
    for n in ("allclose", "isclose", "equal", "all", "any"):
        out[f"torch.{n}"] = getattr(torch, n)
    for n in (
        "__eq__",
        "__lt__",
        "__le__",
        "__gt__",
        "__ge__",
        "__abs__",
        "__bool__",
        "__float__",
        "all",
        "any",
        "item",
        "abs",
    ):
        out[f"torch.Tensor.{n}"] = getattr(torch.Tensor, n)
    from _pytest import approx as python_api

    for cls in ("Approx", "ApproxBase", "ApproxScalar", "ApproxMapping", "ApproxSequenceLike", "ApproxNumpy"):
        if hasattr(python_api, cls):
            for n in ("__eq__", "__ne__"):
                out[f"_pytest.approx.{cls}.{n}"] = getattr(getattr(python_api, cls), n)
    for n in (
        "assert_allclose",
        "assert_array_equal",
        "assert_equal",
        "assert_array_almost_equal",
        "assert_almost_equal",
    ):
        out[f"numpy.testing.{n}"] = getattr(numpy.testing, n)
    out["pytest.approx"], out["pytest.raises"], out["pytest.fail"] = pytest.approx, pytest.raises, pytest.fail
    return out


def _owner(dotted: str):
    """The module or class that holds a name of _shared_assertions (``torch.Tensor.__eq__``)."""
    import importlib

    parts = dotted.split(".")
    for k in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        for attr in parts[k:-1]:
            owner = getattr(owner, attr)
        return owner, parts[-1]
    raise ImportError(dotted)


def _fingerprint(obj) -> tuple:
    """An object and the code it runs: replacing a function's ``__code__`` keeps the object, not the code."""
    fn = getattr(obj, "__func__", obj)
    return (obj, getattr(fn, "__code__", None), getattr(fn, "__defaults__", None))


def shared_assertions() -> dict[str, tuple]:
    return {name: _fingerprint(obj) for name, obj in _shared_assertions().items()}


def replaced_assertions(originals: dict[str, tuple]) -> list[str]:
    """The shared assertion functions that are no longer the originals (the object, or its code);
    each is put back."""
    changed = []
    for name, (obj, code, defaults) in originals.items():
        owner, attr = _owner(name)
        now = getattr(owner, attr, None)
        if _fingerprint(now) != (obj, code, defaults):
            changed.append(name)
            fn = getattr(obj, "__func__", obj)
            if code is not None:
                fn.__code__, fn.__defaults__ = code, defaults
            setattr(owner, attr, obj)
    return changed


# ---- collection ----------------------------------------------------------------------


def expand_includes(code: str, site: Site, project: Project | None = None) -> str:
    """Expand ``--8<--`` lines with pymdownx.snippets, configured as the site configures it.

    The expansion happens here, in the test process, outside the sandbox: so a block may include
    only what a page may (a file under snippets/ that stays there once symlinks are resolved),
    never .git/, .env or a file a symlink leads to.
    """
    if "--8<--" not in code:
        return code
    if project is not None:
        for inc in sources.includes(code.split("\n")):
            rel = Path(inc.path)
            if (
                rel.is_absolute()
                or ".." in rel.parts
                or not rel.parts
                or rel.parts[0] != "snippets"
                or not project.inside(project.root / rel, project.snippets_dir)
            ):
                raise KbError(f"include of {inc.path}: a page block may include only files under snippets/")
    return "\n".join(site.markdown().preprocessors["snippet"].run(code.split("\n"))) + "\n"


# The Pygments lexers that show a block as Python code (pycon: a doctest, run wherever it is).
PYTHON_LEXERS = ("Python", "Python 2.x", "NumPy", "IPython", "IPython3")


# What nbmake and nbclient read from a notebook to let a cell go unrun or fail unseen (the page
# shows the cell as any other): a notebook that allows errors, a cell skipped or allowed to raise
# by its tags, a cell whose variables nbmake overwrites after it ran (mock, post_cell_execute).
NOTEBOOK_TAGS = ("skip-execution", "raises-exception")


def notebook_unrun(path: Path) -> list[str]:
    """What of a notebook page would be shown and not run (or run and not checked), one line each."""
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []  # nbmake names an unreadable notebook
    out = []
    if not isinstance(nb, dict):
        return out
    execution = (nb.get("metadata") or {}).get("execution") or {}
    if isinstance(execution, dict) and execution.get("allow_errors"):
        out.append("its metadata says execution.allow_errors: a cell that fails would pass")
    for n, cell in enumerate(nb.get("cells") or [], 1):
        if not isinstance(cell, dict):
            continue
        meta = cell.get("metadata") or {}
        tags = [t for t in (meta.get("tags") or []) if t in NOTEBOOK_TAGS] if isinstance(meta, dict) else []
        if tags:
            out.append(f"cell {n} is tagged {', '.join(tags)}: it would not run, or its failure would pass")
        if isinstance(meta, dict) and meta.get("nbmake"):
            out.append(f"cell {n} carries nbmake metadata (mock, post_cell_execute): code the page does not show")
        if cell.get("cell_type") == "markdown":
            source = cell.get("source") or ""
            text = "".join(source) if isinstance(source, list) else str(source)
            for line, opening in shown_as_python_not_run(text.split("\n"), markdown_cell=True):
                out.append(f"cell {n} (Markdown), line {line}: a {opening} block nothing runs (use a code cell)")
    return out


def shown_as_python_not_run(lines: list[str], markdown_cell: bool = False) -> list[tuple[int, str]]:
    """The fences of a page (1-based line, opening line) that the site shows as Python code (the
    language as pymdownx.superfences reads it, looked up in Pygments as pymdownx.highlight does:
    any alias, any case, or an attribute list's first class) but that pytest-codeblocks does not
    run: it runs a fence of backticks whose info string is exactly ``python``. Invisible characters
    (a zero-width space, a byte order mark) are read as the browser shows them: not at all.
    In a notebook's Markdown cell (``markdown_cell``) nothing runs a fence: every Python one is
    listed, ```python and ```pycon included."""
    out = []
    for fence in sources.fences(lines):
        opening = lines[fence.start].strip()
        if not markdown_cell and fence.fence[0] == "`" and opening[len(fence.fence) :] == "python":
            continue
        name = fence_lexer(opening)
        if name in PYTHON_LEXERS or (markdown_cell and name == "Python console session"):
            out.append((fence.start + 1, opening))
    return out


def fence_lexer(opening: str) -> str | None:
    """The name of the Pygments lexer the site highlights a fence with (its language as
    pymdownx.superfences reads it, looked up in Pygments as pymdownx.highlight does: any alias, any
    case, or an attribute list's first class; invisible characters read as the browser shows them:
    not at all), or None."""
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound
    from pymdownx.superfences import RE_NESTED_FENCE_START

    seen = "".join(c for c in opening.strip() if unicodedata.category(c) != "Cf" and c != "\ufeff")
    m = RE_NESTED_FENCE_START.match(seen)
    lang = (m.group("lang") or "") if m else ""
    if m and not lang and m.group("attrs"):
        classes = re.findall(r"(?:^|\s)\.([\w#.+-]+)", m.group("attrs"))
        lang = classes[0] if classes else ""
    if not lang:
        return None
    try:
        return get_lexer_by_name(lang).name
    except ClassNotFound:
        return None


QUOTE_MARKS = re.compile(r"^[ \t]*(?:>[ \t]?)+")


def quoted_python_blocks(lines: list[str]) -> list[int]:
    """The lines (1-based) that open a fence inside a blockquote (``> ```python``) that the site shows
    as Python or as a console session: pymdownx.superfences renders it, while pytest-codeblocks and
    doctest read a line that starts with ``>`` as prose, so nothing runs it."""
    inside = sources.fenced(lines)
    out = []
    for i, line in enumerate(lines):
        m = QUOTE_MARKS.match(line)
        if inside[i] or not m:
            continue
        rest = line[m.end() :]
        if sources.FENCE_OPEN.match(rest) and fence_lexer(rest) in (*PYTHON_LEXERS, "Python console session"):
            out.append(i + 1)
    return out


def pycon_unchecked(text: str, examples: list) -> list[int]:
    """The lines (1-based) of a page's console blocks (```pycon: the site shows code after ``>>>``
    and the rest as its output) that are neither an example's code nor the output doctest compares,
    read from its ``examples`` (``page_examples``): a prompt doctest does not see (an invisible character
    before ``>>>``), or a line after a blank line (which ends an example's expected output: doctest reads
    prose)."""
    checked = set()
    for ex in examples:
        checked.update(range(ex.lineno, ex.lineno + ex.source.count("\n") + ex.want.count("\n")))
    lines = text.split("\n")
    out = []
    for fence in sources.fences(lines):
        if fence_lexer(lines[fence.start]) != "Python console session":
            continue
        for i in range(fence.start + 1, fence.end if fence.closed else fence.end + 1):
            visible = "".join(c for c in lines[i] if unicodedata.category(c) != "Cf" and c != "\ufeff")
            if visible.strip() and i not in checked:
                out.append(i + 1)
    return out


def _warm() -> None:
    """Import torch once in the parent, so that each forked block starts with it loaded (not 2 s each)."""
    try:
        import torch  # noqa: F401
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass


class BlockFailure(Exception):
    """A page block failed in its child process; the text is the child's report."""


def _isolate(item, state: State, timeout: float | None = None) -> None:
    """Run ``item`` (a page block, or a notebook with its kernel) in kb.sandbox."""
    timeout = float(item.config.getini("kb_block_timeout")) if timeout is None else timeout
    processes = int(item.config.getini("kb_block_processes"))
    memory_mb = int(item.config.getini("kb_block_memory_mb"))
    runtest, repr_failure = item.runtest, item.repr_failure

    def in_child() -> str | None:
        try:
            runtest()
        except BaseException as e:  # noqa: BLE001 - skips and exits are failures of a page block too
            if isinstance(e, pytest.skip.Exception):
                return f"{item.nodeid}: a page block may not skip itself ({e})"
            said = str(repr_failure(pytest.ExceptionInfo.from_exception(e)))
            return said if said.strip() else f"{item.nodeid}: {type(e).__name__} with an empty message"
        return None

    def isolated() -> None:
        _warm()
        with tempfile.TemporaryDirectory(prefix="kb-block-") as work:
            failure = run_forked(
                in_child,
                work=Path(work),
                project=state.project.root,
                timeout=timeout,
                processes=processes,
                memory_mb=memory_mb,
            )
        if failure:
            raise BlockFailure(failure)

    def report(excinfo):
        return str(excinfo.value) if excinfo.errisinstance(BlockFailure) else repr_failure(excinfo)

    item.runtest, item.repr_failure = isolated, report
    item.kb_isolated = True  # a page block or notebook: skipped by any means, it fails (pytest_runtest_makereport)
    item.add_marker(pytest.mark.timeout(timeout + 30))


def page_examples(text: str) -> list:
    """A page's ``>>>`` examples, read by doctest's own parser as pytest's doctest collector reads the page
    (none when it cannot read them: a malformed example, which doctest reports when the page runs)."""
    import doctest

    try:
        return doctest.DocTestParser().get_examples(text)
    except ValueError:
        return []


def runs_something(path: Path, config, examples: list) -> bool:
    """Whether a page shows something this run's collectors collect: a block pytest-codeblocks runs (read
    by its own parser; with --codeblocks) or one of its ``>>>`` ``examples`` (with a --doctest-glob the
    page's name matches)."""
    from pytest_codeblocks.main import extract_from_file

    try:
        blocks = extract_from_file(path) if config.getoption("codeblocks", False) else []
    except Exception:  # noqa: BLE001 - pytest-codeblocks reports it as the page is collected
        blocks = []
    if any(b.syntax in ("python", "sh", "bash") for b in blocks):
        return True
    from _pytest.pathlib import fnmatch_ex  # how pytest's doctest plugin matches --doctest-glob

    return bool(examples) and any(fnmatch_ex(g, path) for g in config.getoption("doctestglob", None) or [])


def doctest_skips(examples: list) -> list[int]:
    """The lines (1-based) of a page's ``>>>`` examples that a doctest directive skips (``+SKIP``)."""
    import doctest

    return [ex.lineno + 1 for ex in examples if ex.options.get(doctest.SKIP)]


def split_doctest(item) -> list:
    """A page's doctest item, one item per fenced block: a block cannot change how a later block's
    output is checked (each runs in its own sandboxed process, with its own globals)."""
    from _pytest.doctest import DoctestItem

    if not isinstance(item, DoctestItem) or item.dtest is None or len(item.dtest.examples) < 2:
        return [item]
    import doctest

    text = Path(str(item.path)).read_text(encoding="utf-8")
    fences = sources.fences(text.split("\n"))
    groups: dict[int, list] = {}
    for ex in item.dtest.examples:  # ex.lineno: 0-based line in the file
        k = next((i for i, f in enumerate(fences) if f.start <= ex.lineno <= f.end), -1 - ex.lineno)
        groups.setdefault(k, []).append(ex)
    if len(groups) < 2:
        return [item]
    out = []
    for examples in groups.values():
        line = examples[0].lineno
        # lineno 0 and the page as its docstring, as pytest reads a text file: examples keep their page lines,
        # and a failure shows its context and what was expected and got
        globs = {"__name__": "__main__"}  # what pytest gives a text file's doctest; a new dict for each block
        test = doctest.DocTest(examples, globs, f"{item.dtest.name}:{line + 1}", item.dtest.filename, 0, text)
        out.append(DoctestItem.from_parent(item.parent, name=f"{item.name}:{line + 1}", runner=item.runner, dtest=test))
    return out


# ---- counterfactuals: the deciding test must fail where the claim would not hold --------------

COUNTERFACTUAL_KEY = "kb_counterfactual"
ASSERTION_MODULES = ("torch.testing", "numpy.testing", "_pytest", "pytest", "unittest")


class CounterfactualNotRejected(Exception):
    """The deciding test passed, or crashed, under a counterfactual."""


def counterfactual_name(name: str, claim: Claim, cf: Counterfactual) -> str:
    """The item's name: the test's, then the claim and the counterfactual's number (pytest appends
    a parametrized case's id). It never matches the deciding test's own node id."""
    return f"{name}~counterfactual-{claim.id}-{cf.index}"


def failed_by_its_assertion(error: AssertionError, test) -> bool:
    """Whether an AssertionError was raised by the test's own check, not deeper in the code under test.

    The raising frame must be the test function itself, or assertion helpers it called
    (torch.testing, numpy.testing, pytest, or a function named ``assert_*``).
    """
    # `except Exception: assert False` turns a crash into an assertion: the crash decides nothing
    cause = error.__cause__ or error.__context__
    if cause is not None and not isinstance(cause, AssertionError):
        return False
    frames, tb = [], error.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    mine = [i for i, f in enumerate(frames) if f.f_code is test.__code__]
    if not mine:
        return False
    return all(
        f.f_globals.get("__name__", "").startswith(ASSERTION_MODULES)
        or f.f_code.co_name.lstrip("_").startswith("assert")
        for f in frames[mine[-1] + 1 :]
    )


def counterfactual_item(item, claim: Claim, cf: Counterfactual, single: bool = True):
    """A copy of the deciding test item that runs it with the counterfactual's keyword arguments.

    It passes when the test's own assertion fails (the test told the difference); it fails when
    the test passes (``single``: the claim's test has one case; with several, one failing case is
    enough, decided at the end of the session) or when anything else is raised: a crash is not a failing
    assertion. Each run is recorded for the end-of-session verdict on the claim.
    """
    test = inspect.unwrap(item.obj)
    holder = {}

    def record(result: str, detail: str = "") -> None:
        holder["item"].user_properties.append(
            (COUNTERFACTUAL_KEY, json.dumps({"claim": claim.id, "index": cf.index, "result": result, "detail": detail}))
        )

    @functools.wraps(test)
    def run(**funcargs):
        head = f"counterfactual {cf.index} of claim '{claim.id}' ({claim.page.rel}:{cf.line}: {cf.kwargs})"
        try:
            values = cf.values(vars(item.module))
        except Exception as e:  # noqa: BLE001 - reported as the counterfactual's own error
            record("crashed", f"{type(e).__name__}: {e}")
            raise CounterfactualNotRejected(f"{head} cannot be set up: {type(e).__name__}: {e}") from None
        try:
            test(**funcargs, **values)
        except AssertionError as e:
            if failed_by_its_assertion(e, test):
                record("rejected")
                return
            record("crashed", f"AssertionError outside the test's own checks: {e}")
            raise CounterfactualNotRejected(
                f"{head}: an assertion inside the code under test failed, not the test's check "
                f"(a crash does not count as failing): {str(e)[:300]}"
            ) from e
        except Exception as e:  # noqa: BLE001
            record("crashed", f"{type(e).__name__}: {e}")
            raise CounterfactualNotRejected(
                f"{head} crashed ({type(e).__name__}: {str(e)[:300]}): a crash does not count as the test "
                "failing; the counterfactual must run to the test's assertion"
            ) from e
        record("passed")
        if single:
            raise CounterfactualNotRejected(
                f"{head}: the deciding test {claim.test.node_id} still passes when {cf.text}: "
                "it cannot tell the claim from this counterfactual"
            )

    name = counterfactual_name(item.originalname, claim, cf)
    new = type(item).from_parent(
        item.parent,
        name=name,
        callobj=run,
        callspec=getattr(item, "callspec", None),
        fixtureinfo=item._fixtureinfo,
        originalname=name,
    )
    holder["item"] = new
    return new


def counterfactual_problem(claim: Claim, cf: Counterfactual, results: list[str]) -> str | None:
    """Why a counterfactual does not show that the deciding test could fail (None when it does)."""
    what = f"counterfactual {cf.index} ({cf.kwargs}: {cf.text})"
    if not results:
        return f"{what} was never run"
    if "crashed" in results:
        return f"{what} crashed: a crash does not count as the deciding test failing"
    if "rejected" not in results:
        return f"{what}: the deciding test {claim.test.node_id} still passes, so it cannot tell the difference"
    return None


def counterfactual_results(report) -> list[dict]:
    return [json.loads(v) for k, v in getattr(report, "user_properties", []) if k == COUNTERFACTUAL_KEY]


# ---- claims: every deciding test runs and passes -------------------------------------------


def _scope(config, state: State) -> list[Claim]:
    """The claims this run must decide."""
    mode = config.getoption("kb_claims")
    if mode == "off":
        return []
    claims = [c for c in state.kb.claims if c.test]
    filtered = (
        config.option.keyword
        or config.option.markexpr
        or config.getoption("deselect", None)
        or config.getoption("lf", False)
    )
    if mode == "all" or (config.args_source == pytest.Config.ArgsSource.TESTPATHS and not filtered):
        return claims
    ran = {nid for nid in state.outcomes}
    if filtered:
        return [c for c in claims if any(c.test.matches(n) for n in ran)]
    root = config.rootpath
    asked = []
    for arg in config.args:
        path, _, rest = arg.partition("::")
        p = Path(path)
        asked.append(((p if p.is_absolute() else config.invocation_params.dir / p).resolve(), rest))

    def wanted(c: Claim) -> bool:
        file = (root / c.test.code.path).resolve()
        for p, rest in asked:
            if rest and file == p and c.test.node_id.split("::", 1)[1].startswith(rest.split("[")[0]):
                return True
            if not rest and (file == p or file.is_relative_to(p)):
                return True
        return False

    return [c for c in claims if wanted(c)]


def _claim_problem(state: State, claim: Claim) -> str | None:
    seen = {nid: o for nid, o in state.outcomes.items() if claim.test.matches(nid)}
    if not seen:
        module = claim.test.code.path
        why = state.skipped_modules.get(module)
        if why is not None:
            return f"its module {module} was skipped ({why})"
        return f"its deciding test {claim.test.node_id} was never collected (pytest did not run it)"
    bad = sorted(n for n, o in seen.items() if any(o))
    if bad:
        kinds = sorted({k for n in bad for k in seen[n] if k})
        return f"its deciding test {bad[0]} {'/'.join(kinds)}"
    if not all("" in o for o in seen.values()):
        return f"its deciding test {claim.test.node_id} did not run to the end"
    for cf in claim.counterfactuals:
        problem = counterfactual_problem(claim, cf, state.counterfactuals.get((claim.id, cf.index), []))
        if problem:
            return problem
    return None


def narrowed(config) -> list[str]:
    """How this run was narrowed from a full one (empty for a full run): what a reader of a green
    result must know was left out."""
    out = []
    if config.args_source != pytest.Config.ArgsSource.TESTPATHS:
        out.append(f"paths given ({' '.join(config.args)[:200]})")
    for name, flag in (("keyword", "-k"), ("markexpr", "-m")):
        if getattr(config.option, name, ""):
            out.append(f"{flag} {getattr(config.option, name)}")
    for name, flag in (("deselect", "--deselect"), ("ignore", "--ignore"), ("ignore_glob", "--ignore-glob")):
        if getattr(config.option, name, None):
            out.append(f"{flag} {' '.join(map(str, getattr(config.option, name)))[:200]}")
    if config.getoption("kb_claims") == "off":
        out.append("--kb-claims=off")
    # -o and another -c change what a run collects and how (testpaths; addopts: --codeblocks, the doctests).
    # -o as given on the command line: pytest itself turns some options of addopts (--strict-markers) into -o.
    # Read by pytest's own parser (argparse): -o also ends a cluster of short options (-qo x, -qox).
    overrides = config._parser.parse_known_args([str(a) for a in config.invocation_params.args]).override_ini or []
    if overrides:
        out.append(f"-o {' '.join(overrides)[:200]}")
    given = getattr(config.option, "inifilename", None)
    if given and Path(given).resolve() != (config.rootpath / "pyproject.toml").resolve():
        out.append(f"-c {given}"[:200])
    for name in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS"):  # options, and plugins that may drop any item
        if os.environ.get(name, "").strip():
            out.append(f"{name}={os.environ[name][:200]}")
    if (
        getattr(config.option, "lf", False)
        or getattr(config.option, "stepwise", False)
        or getattr(config.option, "maxfail", 0)
    ):
        out.append("--lf/--sw/-x/--maxfail")
    return out


def _write_report(state: State, session) -> None:
    if state.report_path is None:
        return
    data = {
        "finished": True,
        "narrowed": narrowed(state.config),
        "exitstatus": int(session.exitstatus),
        "outcomes": {
            n: next((o for o in seen if o), "passed") if seen else "not run" for n, seen in state.outcomes.items()
        },
        "counterfactuals": {f"{cid}#{k}": results for (cid, k), results in state.counterfactuals.items()},
        "problems": state.problems,
        "undecided": state.undecided,
    }
    tmp = state.report_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(state.report_path)
    state.report_path.with_suffix(".running").unlink(missing_ok=True)


# ---- the plugin object: one per run, registered by pytest_configure -------------------------------


class State:
    """What the session learns (the project, its claims, and every test outcome), and the hooks
    that learn it. ``pytest_configure`` registers one per run as ``kb-session``."""

    def __init__(self, config):
        self.config = config
        self.project = Project.find(config.rootpath)
        self._kb: KnowledgeBase | None = None
        self.outcomes: dict[str, list[str]] = defaultdict(list)  # node id -> problems seen ("" = passed)
        self.skipped_modules: dict[str, str] = {}
        self.problems: list[str] = []
        # (claim id, counterfactual index) -> what each run of it found: rejected, passed or crashed
        self.counterfactuals: dict[tuple[str, int], list[str]] = defaultdict(list)
        self.originals = shared_assertions()
        self.report_path = Path(config.getoption("kb_report")).resolve() if config.getoption("kb_report") else None
        self.undecided: list[str] = []  # claims a narrowed run left undecided
        # every item collected, and those -k, -m, --deselect, --lf ... deselected (as objects: xdist's
        # loadgroup renames items)
        self.collected: list[pytest.Item] = []
        self.deselected: set[int] = set()
        self.shown: list[Path] = []  # pages and notebooks handed to the collectors, each showing code to run
        self.collect_failed: set[Path] = set()  # files whose collection failed (reported as errors)
        self.replaced: set[int] = set()  # a page's doctest item, replaced by one item per block (split_doctest)

    @property
    def kb(self) -> KnowledgeBase:
        if self._kb is None:
            given = self.config.pluginmanager.get_plugin(LoadedModel.NAME)  # the caller's, if it is of this project
            loaded = getattr(given, "kb", None)
            same = isinstance(loaded, KnowledgeBase) and loaded.project.root == self.project.root
            self._kb = loaded if same else KnowledgeBase.load(self.project)
        return self._kb

    @functools.cached_property
    def site(self) -> Site:
        return Site.load(self.project)

    def claims_of(self, nodeid: str) -> list[Claim]:
        if self.config.getoption("kb_claims") == "off":  # e.g. mutation runs: no claims, no model to load
            return []
        return [c for c in self.kb.claims if c.test and c.test.matches(nodeid)]

    def is_post(self, path: Path) -> bool:
        return path.suffix == ".md" and self.project.inside(path, self.project.posts_dir)

    def is_page(self, path: Path) -> bool:
        """A Markdown file of docs/ that is not a post: where MkDocs finds it (a symlink in docs/ to a
        file or folder outside is a page too: MkDocs follows it) or where it leads."""
        docs = self.project.docs_dir
        found = Path(os.path.abspath(path))
        walked = found.is_relative_to(os.path.abspath(docs)) or found.is_relative_to(docs.resolve())
        return path.suffix == ".md" and (walked or self.project.inside(path, docs)) and not self.is_post(path)

    # ---- collection ----

    @pytest.hookimpl(hookwrapper=True)
    def pytest_make_collect_report(self, collector):
        outcome = yield
        if not isinstance(collector, pytest.Module):
            return
        changed = replaced_assertions(self.originals)
        if changed:
            report = outcome.get_result()
            report.outcome = "failed"
            report.longrepr = (
                f"{collector.nodeid}: importing this module replaced {', '.join(changed)}, which every "
                "module's assertions rely on (put back; the module fails)"
            )

    @pytest.hookimpl(tryfirst=True)
    def pytest_ignore_collect(self, collection_path, config):
        path = Path(collection_path)
        # A journal post is the learner's words: its code is shown (labelled), never executed.
        if self.is_post(path) or (path.is_dir() and self.project.inside(path, self.project.posts_dir)):
            return True
        if self.project.inside(path, self.project.docs_dir) and not path.name.startswith("."):
            # What MkDocs shows is collected: every folder of docs/ (norecursedirs, build, site, ..., names this
            # repository's outputs, not the learner's folders: MkDocs makes pages of docs/<topic>/build/*.md),
            # every page and notebook. Only --ignore and --ignore-glob leave something out, and the run is then a
            # narrowed one; a conftest.py's collect_ignore or pytest_ignore_collect would leave it out unseen.
            from _pytest.pathlib import absolutepath

            ignored = [absolutepath(x) for x in config.getoption("ignore") or []]
            globs = [str(absolutepath(x)) for x in config.getoption("ignore_glob") or []]
            if path in ignored or any(fnmatch.fnmatch(str(path), g) for g in globs):
                return None
            return False
        return None

    @pytest.hookimpl(tryfirst=True)
    def pytest_collect_file(self, file_path, parent):
        path = Path(file_path)
        if (
            path.suffix in markdown_extensions  # every suffix MkDocs makes a page of; pytest reads *.md only
            and path.suffix != ".md"
            and self.project.inside(path, self.project.docs_dir)
            and not self.project.inside(path, self.project.posts_dir)
        ):
            raise pytest.UsageError(
                f"{self.project.rel(file_path)}: MkDocs shows this file as a page, but its code blocks "
                "would never run (pytest-codeblocks and the doctests read *.md only): rename it to .md"
            )
        if path.suffix == ".ipynb" and self.project.inside(path, self.project.docs_dir):
            unrun = notebook_unrun(path)
            if unrun:
                raise pytest.UsageError(
                    "\n".join(f"{self.project.rel(file_path)}: {what}" for what in unrun)
                    + "\n(every cell a notebook page shows runs, and a failing cell fails)"
                )
            if self.config.getoption("nbmake", False):
                self.shown.append(path)
            return None
        if not self.is_page(path):
            return None
        lines = file_path.read_text(encoding="utf-8").split("\n")
        for i, line in enumerate(lines, 1):
            if DIRECTIVE.match(line):
                raise pytest.UsageError(
                    f"{self.project.rel(file_path)}:{i}: a pytest directive in a page ({line.strip()}); "
                    "every block a page shows runs: remove it, or show the code as not runnable "
                    "(```text: a ```python fence with a title is not run, and is refused)"
                )
        # Blocks the site shows as code that nothing would run or compare: each named file:line, at once.
        text = "\n".join(lines)
        examples = page_examples(text)
        shown_not_run = [
            *(
                (
                    i,
                    "a doctest directive skips this example (+SKIP): the page shows code and output nothing "
                    "ran; remove the directive (every block a page shows runs)",
                )
                for i in doctest_skips(examples)
            ),
            *(
                (
                    i,
                    "the site shows this block in a blockquote as Python, but nothing runs it (pytest-codeblocks "
                    "and doctest read a line that starts with > as prose): take the block out of the quote",
                )
                for i in quoted_python_blocks(lines)
            ),
            *(
                (
                    i,
                    "the site shows this line of a console block as code or output, but doctest neither runs nor "
                    "compares it (a prompt it does not see, or a line after a blank line, which ends an output): "
                    "write >>> plainly; a blank output line is <BLANKLINE>",
                )
                for i in pycon_unchecked(text, examples)
            ),
            *(
                (
                    i,
                    f"the site shows this block ({opening!r}) as Python, but nothing runs it (pytest-codeblocks "
                    "runs ```python fences only, exactly so spelled): write ```python, or ```pycon with >>> prompts",
                )
                for i, opening in shown_as_python_not_run(lines)
            ),
        ]
        if shown_not_run:
            rel = self.project.rel(file_path)
            raise pytest.UsageError("\n".join(f"{rel}:{i}: {why}" for i, why in sorted(shown_not_run)))
        if runs_something(file_path, self.config, examples):
            self.shown.append(path)
        return None

    @property
    def whole_run(self) -> bool:
        """pytest collected its testpaths (no path or node id given): what make test runs."""
        return self.config.args_source == pytest.Config.ArgsSource.TESTPATHS

    def pytest_itemcollected(self, item):
        self.collected.append(item)

    def pytest_deselected(self, items):
        self.deselected.update(id(i) for i in items)

    def check_none_taken_out(self, items) -> None:
        # A page or notebook that shows something to run was handed to the collectors: some item came of it
        # (a wrapper around pytest_collect_file could drop what pytest-codeblocks, doctest or nbmake made).
        # (In a run given node ids, pytest collects only the items they name: so in a whole run only.)
        made = {Path(str(i.path)) for i in self.collected} | self.collect_failed
        lost = [p for p in self.shown if p not in made] if self.whole_run else []
        if lost:
            raise pytest.UsageError(
                f"kb: {self.project.rel(lost[0])} shows code to run, but no test item was collected from it "
                f"(a conftest.py or plugin dropped what pytest-codeblocks, doctest or nbmake collected)"
                + (f", and {len(lost) - 1} more" if len(lost) > 1 else "")
            )
        kept_ids = {id(i) for i in items}
        left = kept_ids | self.deselected | self.replaced
        gone = [i.nodeid for i in self.collected if id(i) not in left]
        if gone:
            raise pytest.UsageError(
                f"kb: {len(gone)} collected item(s) were taken out of the run without being deselected "
                f"(a conftest.py or plugin's pytest_collection_modifyitems), first {gone[0]}: every item "
                "collected runs unless -k, -m or --deselect leave it out (and the run is then a narrowed one)"
            )

    def project_hooks(self) -> list[str]:
        """The pytest hooks that a conftest.py or plugin of the project (not the kb plugin, not an installed
        package) implements, as "file: hook, hook"."""
        own, installed, root = Path(__file__).resolve().parent, Path(sys.prefix).resolve(), self.project.root.resolve()
        out = []
        for plugin in self.config.pluginmanager.get_plugins():
            try:
                file = getattr(plugin, "__file__", None) or inspect.getfile(
                    plugin if inspect.isclass(plugin) else type(plugin)
                )
            except TypeError:  # a built-in
                continue
            path = Path(file).resolve()
            if not path.is_relative_to(root) or path.is_relative_to(own) or path.is_relative_to(installed):
                continue
            names = sorted(c.name for c in self.config.pluginmanager.get_hookcallers(plugin) or [])
            if names:
                out.append(f"{self.project.rel(path)}: {', '.join(names)}")
        return out

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        # Again as the items run: a wrapper around pytest_collection_modifyitems (its code after the yield
        # runs after this plugin's) or a pytest_collection_finish could still take items out of session.items.
        # (An xdist controller collects nothing; its workers check their own items.)
        self.check_none_taken_out(session.items)
        # A hook of the project's own conftest.py can do what no check of outcomes sees (rewrite a report,
        # swap a page's collector): in a whole run (make test) the project implements none (fixtures only).
        hooks = self.project_hooks() if self.whole_run and not narrowed(self.config) else []
        if hooks:
            raise pytest.UsageError(
                f"kb: {hooks[0]}: a conftest.py or plugin of the project implements pytest hooks, which can leave "
                "out or rewrite what a page's blocks did; a whole run (make test) takes fixtures from conftest.py, "
                "never hooks" + (f" (and {len(hooks) - 1} more)" if len(hooks) > 1 else "")
            )

    # Last: -k, -m and --deselect have already chosen the items, so counterfactual items are made only
    # for the deciding tests that will run (and pytest's "selected" count is not made negative).
    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, session, config, items):
        # An item is left out by deselecting it (-k, -m, --deselect, --lf: the run is then a narrowed
        # one), never by taking it out of the list: a conftest.py or plugin that does so unseen
        # leaves page blocks unrun in a run that reads as whole.
        self.check_none_taken_out(items)
        if self.deselected and not narrowed(config):  # deselected, in a run no option narrowed
            first = next(i.nodeid for i in self.collected if id(i) in self.deselected)
            raise pytest.UsageError(
                f"kb: {len(self.deselected)} item(s) were deselected by a conftest.py or plugin in a run that "
                f"nothing narrowed (no path, -k, -m, --deselect), first {first}: every item collected runs"
            )
        kept, dropped = [], []
        expanded = []
        for item in items:
            parts = split_doctest(item) if Path(str(item.path)).suffix == ".md" else [item]
            if parts != [item]:  # the page's doctest, run as one item per block: nothing is left out
                self.replaced.add(id(item))
            expanded += parts
        for item in expanded:
            if item.get_closest_marker("experiment") and not config.getoption("experiments"):
                dropped.append(item)
                continue
            kept.append(item)
            # Whatever runs from a Markdown file (a page's block or doctest, or a .md file outside
            # docs/ that pytest-codeblocks collects all the same) runs in the sandbox, never here.
            if Path(str(item.path)).suffix != ".md":
                if item.path.suffix == ".ipynb":  # the notebook's client and kernel run in the sandbox
                    _isolate(item, self, timeout=600)
                continue
            block = getattr(item, "obj", None)
            code = getattr(block, "code", None)
            if isinstance(code, str) and "--8<--" in code:
                try:
                    block.code = expand_includes(code, self.site, self.project)
                except Exception as e:  # a missing file or section: fail the block, name it
                    block.code = f"raise RuntimeError({f'{item.nodeid}: include failed: {e}'!r})\n"
            _isolate(item, self)
        if dropped:
            config.hook.pytest_deselected(items=dropped)
        items[:] = kept
        extra = []
        for item in items:
            for claim in self.claims_of(item.nodeid):
                single = sum(claim.test.matches(i.nodeid) for i in items) == 1
                extra += [counterfactual_item(item, claim, cf, single) for cf in claim.counterfactuals]
        items += extra

    # ---- running: every deciding test runs and passes ----

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        if call.when == "teardown":
            changed = replaced_assertions(self.originals)
            if changed:
                report.outcome = "failed"
                report.longrepr = (
                    f"{item.nodeid} replaced {', '.join(changed)}, which every module's assertions "
                    "rely on (put back; the test fails)"
                )
        if getattr(item, "kb_isolated", False) and (report.skipped or hasattr(report, "wasxfail")):
            # A page block or notebook skipped or xfailed from outside (a conftest.py's setup hook, a marker):
            # the page shows what did not run.
            why = getattr(report, "wasxfail", None) or (
                report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
            )
            report.outcome = "failed"
            report.longrepr = f"{item.nodeid}: a page block or notebook may not be skipped or xfailed ({why})"
            if hasattr(report, "wasxfail"):
                del report.wasxfail
            return
        claims = self.claims_of(item.nodeid)
        if not claims:
            return
        names = "; ".join(f"claim '{c.id}' ({c.where}) is marked {c.status.key}" for c in claims)
        if report.skipped or hasattr(report, "wasxfail"):
            how = "xfailed" if hasattr(report, "wasxfail") else "skipped"
            reason = getattr(report, "wasxfail", None) or (
                report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
            )
            report.outcome = "failed"
            report.kb_slipped = how
            report.longrepr = f"{item.nodeid} decides {names}: a deciding test may not be {how} ({reason})"
            if hasattr(report, "wasxfail"):
                del report.wasxfail
        if report.failed:
            report.sections.append(
                ("claims decided by this test", f"{names}, but its test fails: the page is wrong or the code is.")
            )

    def pytest_runtest_logstart(self, nodeid, location):
        if self.report_path is not None and not hasattr(self.config, "workerinput"):
            # what was running, should the session never reach its end (os._exit, a killed process)
            self.report_path.with_suffix(".running").write_text(nodeid, encoding="utf-8")

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        seen = len(self.outcomes.get(item.nodeid, []))
        result = yield
        if getattr(item, "kb_isolated", False) and len(self.outcomes.get(item.nodeid, [])) == seen:
            # A page block or notebook that reported nothing did not run (a conftest.py's
            # pytest_runtest_protocol returned before running it): it fails, as one that ran and failed.
            from _pytest.reports import TestReport

            said = f"{item.nodeid}: this page block or notebook never ran (a conftest.py or plugin ran its protocol)"
            item.ihook.pytest_runtest_logreport(
                report=TestReport(item.nodeid, item.location, {}, "failed", said, "call")
            )
        return result

    def pytest_runtest_logreport(self, report):
        for r in counterfactual_results(report):
            self.counterfactuals[(r["claim"], r["index"])].append(r["result"])
        if report.failed:
            self.outcomes[report.nodeid].append(getattr(report, "kb_slipped", "failed"))
        elif report.skipped:
            self.outcomes[report.nodeid].append("skipped")
        elif report.when == "call":
            self.outcomes[report.nodeid].append("")

    def pytest_collectreport(self, report):
        if report.failed and report.fspath:  # the page's collection error is reported: no item is expected of it
            self.collect_failed.add(Path(os.path.abspath(self.config.rootpath / report.fspath)))
        if report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            self.skipped_modules[report.nodeid] = reason

    # ---- the end: the verdict on each claim, and the report ----

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session, exitstatus):
        config = session.config
        if hasattr(config, "workerinput"):  # xdist workers report; the controller decides
            return
        try:
            claims = _scope(config, self)
        except KbError as e:
            self.problems.append(f"the knowledge base cannot be read: {e}")
            claims = []
        for c in claims:
            problem = _claim_problem(self, c)
            if problem:
                self.problems.append(f"claim '{c.id}' ({c.where}, marked {c.status.key}): {problem}")
        try:
            asked = {c.id for c in claims}
            self.undecided = (
                [c.id for c in self.kb.claims if c.test and c.id not in asked]
                if config.getoption("kb_claims") != "off"
                else ["(all: --kb-claims=off)"]
            )
        except KbError:
            self.undecided = ["(the knowledge base cannot be read)"]
        if self.problems and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        _write_report(self, session)

    def pytest_terminal_summary(self, terminalreporter, config):
        if self.problems:
            terminalreporter.section("claims not decided by a passing test", red=True)
            for line in self.problems:
                terminalreporter.write_line(line)
        if self.undecided and not hasattr(config, "workerinput"):
            terminalreporter.section("claims this run did not decide", yellow=True)
            terminalreporter.write_line(
                f"{len(self.undecided)} claim(s) were left out of this run (narrowed by "
                "arguments, -k, --deselect or options): "
                + ", ".join(self.undecided[:20])
                + (" ..." if len(self.undecided) > 20 else "")
            )
