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
- torch runs on one thread (OMP_NUM_THREADS=1, set before anything imports it):
  the tensors are tiny and threads only add contention on two cores.
"""

from __future__ import annotations

import os

os.environ.setdefault("KB_FAST", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import markdown  # noqa: E402
import pytest  # noqa: E402

from kb.model import Claim, KnowledgeBase  # noqa: E402
from kb.project import KbError, Project  # noqa: E402
from kb.sandbox import run_forked  # noqa: E402

DIRECTIVE = re.compile(r"^\s*<!--\s*pytest(?:[.-]|_codeblocks)")


def pytest_addoption(parser):
    group = parser.getgroup("kb", "Learning Notes")
    group.addoption("--experiments", action="store_true",
                    help="also run the tests marked `experiment` (re-run committed experiments; minutes)")
    group.addoption("--kb-claims", choices=("auto", "all", "off"), default="auto",
                    help="which claims must have their deciding test pass: all of them in a full run (auto), "
                         "those of the files asked for otherwise")
    parser.addini("kb_block_timeout", "seconds a page block may run before it is killed", default="60")
    parser.addini("kb_block_processes", "processes (and threads) a page block or notebook may run at once",
                  default="64")
    parser.addini("kb_block_memory_mb", "MiB of memory a page block's or notebook's process may map "
                  "(also the size of its /tmp)", default="1024")


class State:
    """What the session learns: the project, its claims, and every test outcome."""

    def __init__(self, config):
        self.config = config
        self.project = Project.find(config.rootpath)
        self._kb: KnowledgeBase | None = None
        self.outcomes: dict[str, list[str]] = defaultdict(list)  # node id -> problems seen ("" = passed)
        self.skipped_modules: dict[str, str] = {}
        self.problems: list[str] = []

    @property
    def kb(self) -> KnowledgeBase:
        if self._kb is None:
            self._kb = KnowledgeBase.load(self.project)
        return self._kb

    def claims_of(self, nodeid: str) -> list[Claim]:
        if self.config.getoption("kb_claims") == "off":  # e.g. mutation runs: no claims, no model to load
            return []
        return [c for c in self.kb.claims if c.test and c.test.matches(nodeid)]

    def is_post(self, path: Path) -> bool:
        return path.suffix == ".md" and self.project.inside(path, self.project.posts_dir)

    def is_page(self, path: Path) -> bool:
        return path.suffix == ".md" and self.project.inside(path, self.project.docs_dir) and not self.is_post(path)


_STATE: State | None = None  # one session per process (xdist workers have their own)


def _state(config=None) -> State:
    assert _STATE is not None, "kb.pytest_plugin is not configured"
    return _STATE


def pytest_configure(config):
    if sys.flags.optimize:
        raise pytest.UsageError("kb: Python runs with -O, which strips assert statements: "
                                "every check would pass without checking")
    global _STATE
    try:
        _STATE = State(config)
    except KbError as e:
        raise pytest.UsageError(f"kb: {e}") from None


# ---- collection ----------------------------------------------------------------------


def pytest_ignore_collect(collection_path, config):
    # A journal post is the learner's words: its code is shown (labelled), never executed.
    if _state(config).is_post(Path(collection_path)):
        return True
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collect_file(file_path, parent):
    state = _state(parent.config)
    if not state.is_page(Path(file_path)):
        return None
    for i, line in enumerate(file_path.read_text(encoding="utf-8").split("\n"), 1):
        if DIRECTIVE.match(line):
            raise pytest.UsageError(
                f"{state.project.rel(file_path)}:{i}: a pytest directive in a page ({line.strip()}); "
                "every block a page shows runs: remove it, or show the code as not runnable "
                '(```python title="不运行：<reason>")')
    return None


def expand_includes(code: str, root: Path) -> str:
    """Expand ``--8<--`` lines with pymdownx.snippets, configured as the site does."""
    if "--8<--" not in code:
        return code
    md = markdown.Markdown(
        extensions=["pymdownx.snippets"],
        extension_configs={"pymdownx.snippets": {
            "base_path": [str(root)], "check_paths": True, "dedent_subsections": True, "restrict_base_path": True}},
    )
    return "\n".join(md.preprocessors["snippet"].run(code.split("\n"))) + "\n"


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
            return str(repr_failure(pytest.ExceptionInfo.from_exception(e)))
        return None

    def isolated() -> None:
        _warm()
        with tempfile.TemporaryDirectory(prefix="kb-block-") as work:
            failure = run_forked(in_child, work=Path(work), project=state.project.root, timeout=timeout,
                                 processes=processes, memory_mb=memory_mb)
        if failure:
            raise BlockFailure(failure)

    def report(excinfo):
        return str(excinfo.value) if excinfo.errisinstance(BlockFailure) else repr_failure(excinfo)

    item.runtest, item.repr_failure = isolated, report
    item.add_marker(pytest.mark.timeout(timeout + 30))


def pytest_collection_modifyitems(session, config, items):
    state = _state(config)
    kept, dropped = [], []
    for item in items:
        if item.get_closest_marker("experiment") and not config.getoption("experiments"):
            dropped.append(item)
            continue
        kept.append(item)
        if not state.is_page(Path(str(item.path))):
            if item.path.suffix == ".ipynb":  # the notebook's client and kernel run in the sandbox
                _isolate(item, state, timeout=600)
            continue
        block = getattr(item, "obj", None)
        code = getattr(block, "code", None)
        if isinstance(code, str) and "--8<--" in code:
            try:
                block.code = expand_includes(code, state.project.root)
            except Exception as e:  # a missing file or section: fail the block, name it
                block.code = f"raise RuntimeError({f'{item.nodeid}: include failed: {e}'!r})\n"
        _isolate(item, state)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


# ---- claims: every deciding test runs and passes -------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    claims = _state(item.config).claims_of(item.nodeid)
    if not claims:
        return
    names = "; ".join(f"claim '{c.id}' ({c.where}) is marked {c.status.key}" for c in claims)
    if report.skipped or hasattr(report, "wasxfail"):
        how = "xfailed" if hasattr(report, "wasxfail") else "skipped"
        reason = getattr(report, "wasxfail", None) or (report.longrepr[2] if isinstance(report.longrepr, tuple) else "")
        report.outcome = "failed"
        report.kb_slipped = how
        report.longrepr = f"{item.nodeid} decides {names}: a deciding test may not be {how} ({reason})"
        if hasattr(report, "wasxfail"):
            del report.wasxfail
    if report.failed:
        report.sections.append(("claims decided by this test",
                                f"{names}, but its test fails: the page is wrong or the code is."))


def pytest_runtest_logreport(report):
    state = _state()
    if report.failed:
        state.outcomes[report.nodeid].append(getattr(report, "kb_slipped", "failed"))
    elif report.skipped:
        state.outcomes[report.nodeid].append("skipped")
    elif report.when == "call":
        state.outcomes[report.nodeid].append("")


def pytest_collectreport(report):
    state = _state()
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        state.skipped_modules[report.nodeid] = reason


def _scope(config, state: State) -> list[Claim]:
    """The claims this run must decide."""
    mode = config.getoption("kb_claims")
    if mode == "off":
        return []
    claims = [c for c in state.kb.claims if c.test]
    filtered = config.option.keyword or config.option.markexpr or config.getoption("deselect", None) \
        or config.getoption("lf", False)
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
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if hasattr(config, "workerinput"):  # xdist workers report; the controller decides
        return
    state = _state(config)
    try:
        claims = _scope(config, state)
    except KbError as e:
        state.problems.append(f"the knowledge base cannot be read: {e}")
        claims = []
    for c in claims:
        problem = _claim_problem(state, c)
        if problem:
            state.problems.append(f"claim '{c.id}' ({c.where}, marked {c.status.key}): {problem}")
    if state.problems and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, config):
    state = _state(config)
    if state.problems:
        terminalreporter.section("claims not decided by a passing test", red=True)
        for line in state.problems:
            terminalreporter.write_line(line)
