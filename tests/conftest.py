"""Shared fixtures: the project under test, its site built once per session, and
small scratch projects to break on purpose (the real checkout is never touched).

A scratch project is tested in this process where no separate process is the point:
pytest runs in it with pytester (``in_process``), MkDocs builds it with its own
``build()`` (``build_in_process``). A test whose subject is the process itself (an exit,
``python -O``, an installed command) starts one.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest
from filelock import FileLock

from kb.model import KnowledgeBase
from kb.project import Project
from kb.site import Site

pytest_plugins = ["pytester"]

PROJECT = Project.find(Path(__file__).parent)
ROOT = PROJECT.root
ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
ENV.pop("PYTEST_XDIST_WORKER", None)


def run(cmd: list[str], cwd: Path, timeout: float = 300, **env) -> subprocess.CompletedProcess:
    """A command in a project folder, importing that folder's kb and snippets."""
    return subprocess.run(
        cmd, cwd=cwd, env={**ENV, "PYTHONPATH": str(cwd), **env}, capture_output=True, text=True, timeout=timeout
    )


def mkdocs_build(root: Path, site: Path, *args: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site), *args], root)


def kb(root: Path, *args: str, stdin: str | bytes | None = None, **env) -> subprocess.CompletedProcess:
    """`kb ...` run in ``root`` (the project is found from the current directory)."""
    data = stdin.encode("utf-8") if isinstance(stdin, str) else stdin
    r = subprocess.run(
        [sys.executable, "-m", "kb.cli", *args],
        cwd=root,
        input=data,
        env={**ENV, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        timeout=120,
    )
    return subprocess.CompletedProcess(
        r.args, r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")
    )


@pytest.fixture
def kb_here(monkeypatch, capsys):
    """``kb_here(root, *args, stdin=None, **env)``: `kb ...` in this process, as ``kb`` runs it in a
    child: from ``root`` (the project is found from the current directory), with its exit code and
    what it printed. ``kb check``'s pytest session is forked from this process
    (``kb.warm.pytest_in_fork``, as ``kb serve`` runs it): no new interpreter, and a test that ends
    its process still ends only the session. A test whose subject is the process uses ``kb``."""
    import io

    from kb import check, cli, warm

    def run_kb(root: Path, *args: str, stdin: str | bytes | None = None, **env: str) -> Ran:
        with monkeypatch.context() as m:
            m.chdir(root)
            m.setattr(check, "_run_session", warm.pytest_in_fork)
            m.setenv("NO_MKDOCS_2_WARNING", "1")
            m.delenv("PYTEST_XDIST_WORKER", raising=False)
            for name, value in env.items():
                m.setenv(name, value)
            if stdin is not None:
                data = stdin.encode("utf-8") if isinstance(stdin, str) else stdin
                m.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
            capsys.readouterr()  # what was printed before is not this command's
            try:
                code = cli.main(list(args))
            except SystemExit as e:  # argparse's usage errors
                code = e.code if isinstance(e.code, int) else 2
            said = capsys.readouterr()
        return Ran(code, said.out, said.err)

    return run_kb


def run_pytest(root: Path, *args: str) -> subprocess.CompletedProcess:
    """pytest in a scratch project, with that project's configuration (xdist off)."""
    return run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "0", *args], root)


@dataclass
class Ran:
    """What a pytest run or a build said: its exit code and its output (and pytester's result)."""

    returncode: int
    stdout: str
    stderr: str = ""
    result: pytest.RunResult | None = None


def _snippet_modules() -> list[str]:
    """This process's snippet modules: a scratch project has its own of the same names."""
    return [m for m in sys.modules if m == "snippets" or m.startswith("snippets.")]


class _Libraries:
    """pytester forgets every module a run imported (after each run, and again after the test). A
    library imported lazily cannot always be imported twice (torch._dynamo registers operators in
    C++ once per process): its modules are kept. The scratch project's own are forgotten."""

    def __init__(self):
        self.before, self.imported = set(sys.modules), {}

    def recorder(self, root: Path):
        libraries = self

        class Record:
            def pytest_unconfigure(self, config):
                for name, module in list(sys.modules.items()):
                    file = getattr(module, "__file__", None)
                    if name not in libraries.before and not (file and Path(file).resolve().is_relative_to(root)):
                        libraries.imported.setdefault(name, module)

        return Record()

    def restore(self) -> None:
        for name, module in self.imported.items():
            sys.modules.setdefault(name, module)


@pytest.fixture
def _libraries():
    libraries = _Libraries()
    yield libraries
    libraries.restore()  # after pytester's own clean-up (this fixture is set up before it)


@pytest.fixture
def in_process(_libraries, pytester, monkeypatch):
    """``in_process(root, *args)``: pytest in a scratch project, inside this process (pytester), with
    that project's configuration (xdist off), as ``run_pytest`` runs it in a child.

    The project's snippets are imported afresh: this process's modules of the same names are
    set aside for the run (and put back after the test).
    """

    def run_in(root: Path, *args: str, **env: str) -> Ran:
        monkeypatch.chdir(root)
        monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
        monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
        for name in _snippet_modules():
            monkeypatch.delitem(sys.modules, name)
        # its tests/ modules are imported by basename (no package): this checkout's of the same name
        # (tests/test_pages.py, imported when this worker collected) would be taken for them
        for name in {f.stem for f in (Path(root) / "tests").glob("*.py")} & set(sys.modules):
            monkeypatch.delitem(sys.modules, name)
        # pytest-timeout times each test with SIGALRM: the inner run's tests replace this test's
        # alarm, then cancel it. Each inner test is timed; this test's own limit resumes after.
        handler, (remaining, _) = signal.getsignal(signal.SIGALRM), signal.getitimer(signal.ITIMER_REAL)
        start = time.monotonic()
        with monkeypatch.context() as m:  # e.g. PYTEST_ADDOPTS, read by pytest as it starts: this run's only
            for name, value in env.items():
                m.setenv(name, value)
            result = pytester.runpytest_inprocess(
                "-p", "no:cacheprovider", "-q", "-n", "0", *args, plugins=[_libraries.recorder(Path(root).resolve())]
            )
        if remaining:
            signal.signal(signal.SIGALRM, handler)
            signal.setitimer(signal.ITIMER_REAL, max(remaining - (time.monotonic() - start), 0.001))
        _libraries.restore()
        return Ran(int(result.ret), result.stdout.str(), result.stderr.str(), result)

    return run_in


def testrun_here(in_process, root: Path, *args: str, **env: str) -> Ran:
    """``kb.testrun`` (what ``make test`` runs) with its pytest session inside this process
    (``in_process``), xdist off: for a run whose subject is not the process ending."""
    import io

    from kb.testrun import main as testrun_main

    runs: list[Ran] = []

    def run_pytest(pytest_args: list[str]) -> int:
        runs.append(in_process(root, *pytest_args, **env))
        return runs[-1].returncode

    said = io.StringIO()
    with contextlib.redirect_stderr(said):
        code = testrun_main(["-p", "no:cacheprovider", "-q", "-n", "0", *args], run_pytest=run_pytest)
    return Ran(code, "".join(r.stdout for r in runs), "".join(r.stderr for r in runs) + said.getvalue())


def forked_pytest(root: Path, *args: str) -> Ran:
    """pytest in a scratch project, in a process forked from this one (``kb.warm.run_forked``), as
    ``run_pytest`` runs it in a new interpreter (with that project's configuration, xdist off),
    without the interpreter's start and its imports of torch, pytest and MkDocs. The session is a
    process of its own: a test or module that ends its process, or tampers with a library, ends or
    changes only the fork.

    The fork forgets every module of the scratch project and of this checkout's tests and snippets
    (kb stays: the scratch project's kb is a copy of it), so the session imports the scratch
    project's files as they are on disk, whatever modules of the same names this process holds."""
    import tempfile

    from kb.warm import run_forked

    root = Path(root).resolve()
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_XDIST_WORKER"}
    env.update({"PYTHONPATH": str(root), "NO_MKDOCS_2_WARNING": "1"})
    with tempfile.TemporaryDirectory(prefix="kb-tests-fork-") as tmp:
        log = Path(tmp) / "output.txt"
        session = ["-p", "no:cacheprovider", "-q", "-n", "0", *args]
        code = run_forked(root, env, lambda: pytest.main(session), log, also_forget=(ROOT,))
        return Ran(code, log.read_text(encoding="utf-8", errors="replace") if log.exists() else "")


def testrun_forked(root: Path, *args: str) -> Ran:
    """``kb.testrun`` (what ``make test`` runs) with its pytest session in a process forked from this
    one (``forked_pytest``) instead of a new interpreter: for a run whose session ends its process."""
    import io

    from kb.testrun import main as testrun_main

    runs: list[Ran] = []

    def run_pytest(pytest_args: list[str]) -> int:
        runs.append(forked_pytest(root, *pytest_args))
        return runs[-1].returncode

    said = io.StringIO()
    with contextlib.redirect_stderr(said):
        code = testrun_main(["-p", "no:cacheprovider", "-q", "-n", "0", *args], run_pytest=run_pytest)
    return Ran(code, "".join(r.stdout for r in runs), said.getvalue())


class _Said(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(f"{record.levelname:<8}-  {record.getMessage()}")


def build_in_process(root: Path, site: Path, strict: bool = True) -> Ran:
    """``mkdocs build --strict`` of a project, run from its root as ``make build`` runs it, in this
    process: what the mkdocs command does (on_startup, build, on_shutdown), with its exit code and
    what it logs; an unexpected exception is a traceback in the output, as the command prints it."""
    from mkdocs.commands.build import build
    from mkdocs.config import load_config
    from mkdocs.config.defaults import MkDocsConfig
    from mkdocs.exceptions import Abort

    # MkDocs keeps plugins that have on_startup/on_shutdown across loads in one process (for `mkdocs
    # serve`); a build is a fresh command: fresh plugins (the blog's temporary folder is gone after
    # its on_shutdown).
    MkDocsConfig.plugins.plugin_cache.clear()
    said = _Said()
    logger = logging.getLogger("mkdocs")
    logger.addHandler(said)
    code = 0
    try:
        with contextlib.chdir(root):
            config = load_config(str(root / "mkdocs.yml"), site_dir=str(site), strict=strict)
            config.plugins.on_startup(command="build", dirty=False)
            try:
                build(config)
            finally:
                config.plugins.on_shutdown()
    except Abort as e:
        said.lines.append(f"Aborted: {e}")
        code = 1
    except Exception:  # noqa: BLE001 - the command would print it and exit 1
        said.lines.append(traceback.format_exc())
        code = 1
    finally:
        logger.removeHandler(said)
    return Ran(code, "", "\n".join(said.lines) + "\n")


@pytest.fixture(scope="session")
def project() -> Project:
    return PROJECT


@pytest.fixture(scope="session")
def model() -> KnowledgeBase:
    return KnowledgeBase.load(PROJECT)


@pytest.fixture(scope="session")
def site() -> Site:
    """What MkDocs and the kb plugin make of this checkout (from its mkdocs.yml)."""
    return Site.load(PROJECT)


# ---- the real site, built once for the whole session (all xdist workers share it) ----------


@pytest.fixture(scope="session")
def built_site(tmp_path_factory) -> Path:
    """``mkdocs build --strict`` of this checkout, once per session.

    KB_PREBUILT_SITE=<dir> reuses a build (for iterating on the browser tests only).
    """
    if os.environ.get("KB_PREBUILT_SITE"):
        return Path(os.environ["KB_PREBUILT_SITE"])
    # one folder for the session: every xdist worker's (their basetemps share a parent); without
    # xdist, this session's own (the parent then holds other sessions' builds, stale ones too)
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    site, log = shared / "site", shared / "site.log"
    with FileLock(str(shared / "site.lock")):
        if not log.exists():
            result = mkdocs_build(ROOT, site)
            log.write_text(f"{result.returncode}\n{result.stdout}\n{result.stderr}", encoding="utf-8")
    code, _, output = log.read_text(encoding="utf-8").partition("\n")
    assert code == "0", f"mkdocs build --strict failed:\n{output}"
    return site


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(folder: Path):
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


@pytest.fixture(scope="session")
def served_site(built_site):
    """The built site on http://127.0.0.1:<port>/, as a learner's browser sees it."""
    server, url = serve(built_site)
    yield url
    server.shutdown()


# ---- scratch projects ------------------------------------------------------------------------

IGNORE = shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints", "vendor", "*.egg-info", ".kb-journal.lock")
MINI_DOCS = ("index.md", "tags.md", "assets", "foundations", "journal")
MINI_SNIPPETS = ("__init__.py", "foundations")  # what the mini project's pages include and cite


def _link_vendor(dest: Path) -> None:
    vendor = ROOT / "docs" / "assets" / "vendor"
    if vendor.exists():
        (dest / "docs" / "assets" / "vendor").symlink_to(vendor)


def _copy(src: Path, dest: Path) -> None:
    (shutil.copytree(src, dest, ignore=IGNORE) if src.is_dir() else shutil.copy2(src, dest))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def kb_serving(root: Path, first: str):
    """``kb serve`` in a scratch project, as a learner runs it, on a free port of 127.0.0.1 (stopped at
    the end): yields the base URL and the HTML of the page ``first`` once it is served (within 120 s)."""
    import urllib.request

    addr = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kb.cli", "serve", "--dev-addr", addr],
        cwd=root,
        env={**ENV, "PYTHONPATH": str(root)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://{addr}/"
    try:
        html = None
        for _ in range(240):
            try:
                html = urllib.request.urlopen(base + first, timeout=5).read().decode("utf-8")
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"kb serve exited: {proc.stderr.read()[-2000:]}")
                time.sleep(0.5)
        assert html is not None, f"kb serve did not serve {first} within 120 s"
        yield base, html
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def copy_project(dest: Path, docs: tuple[str, ...] | None = None, snippets: tuple[str, ...] | None = None) -> Path:
    """A copy of the project (all of docs/ and snippets/, or only the parts named) with its tooling."""
    dest.mkdir(parents=True)
    for part in ("kb", "tests", "overrides", "seed", "search-terms.txt", "pyproject.toml", "mkdocs.yml", ".gitignore"):
        _copy(ROOT / part, dest / part)
    if snippets is None:
        _copy(ROOT / "snippets", dest / "snippets")
    else:
        (dest / "snippets").mkdir()
        for part in snippets:
            _copy(ROOT / "snippets" / part, dest / "snippets" / part)
    if docs is None:
        shutil.copytree(ROOT / "docs", dest / "docs", ignore=IGNORE)
    else:
        (dest / "docs").mkdir()
        for part in docs:
            src = ROOT / "docs" / part
            (
                shutil.copytree(src, dest / "docs" / part, ignore=IGNORE)
                if src.is_dir()
                else shutil.copy2(src, dest / "docs" / part)
            )
        _unlink_missing(dest / "docs")
        config = dest / "mkdocs.yml"
        # no nav: MkDocs lists what is there (the full nav names pages this copy leaves out)
        config.write_text(
            re.sub(r"(?ms)^nav:\n.*?(?=^\S|\Z)", "", config.read_text(encoding="utf-8")), encoding="utf-8"
        )
    _link_vendor(dest)
    return dest


MD_LINK = re.compile(r"\[(?P<text>[^\]]*)\]\((?P<target>[^)#\s:]+\.(?:md|ipynb))(?P<anchor>#[^)\s]*)?\)")


def _unlink_missing(docs: Path) -> None:
    """In a partial copy, links to pages left out become plain text (the rest stays checked)."""
    for page in docs.rglob("*.md"):
        text = text_of(page)
        kept = MD_LINK.sub(
            lambda m: m.group(0) if (page.parent / m.group("target")).exists() else m.group("text"), text
        )
        if kept != text:
            page.write_text(kept, encoding="utf-8")


@pytest.fixture
def mini_project(tmp_path) -> Path:
    """A small copy: home, foundations (a page with blocks, claims and a notebook, and the snippets
    it includes), the journal.

    It builds in a few seconds, and its whole test run takes seconds, so a test can break it and
    rebuild it or run it.
    """
    return copy_project(tmp_path / "mini", MINI_DOCS, MINI_SNIPPETS)


@pytest.fixture
def project_copy(tmp_path) -> Path:
    """A full scratch copy of the project."""
    return copy_project(tmp_path / "project")


def text_of(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = text_of(path)
    assert text.count(old) >= 1, f"{path}: '{old}' not found"
    path.write_text(text.replace(old, new, count), encoding="utf-8")


# ---- a hostile note, built into the mini site (for the safety and browser tests) ------------------

HOSTILE_NOTE = """\
今天的笔记，里面有些“危险”的东西：

- 泛型 List<int> 和不等式 a<b 且 c>d，还有 R&D
- <script>document.title = "pwned"; window.kbPwned = true;</script>
- <img src="https://cdn.example.com/x.png" onerror="window.kbPwned = true">
- emoji 短码 :x: 与 a:b:c 与 :smile:
- 属性列表 {: onclick="window.kbPwned = true" }

--8<-- ".git/config"

!!! claim "写在日志里的论断"
    id: sneaky-claim
    status: verified
    test: snippets/foundations/mse.py::test_mse_minimiser_is_conditional_mean
"""


@pytest.fixture(scope="module")
def hostile_site(tmp_path_factory) -> Path:
    """The mini site with a hostile note appended by `kb new`, built strictly."""
    root = copy_project(tmp_path_factory.mktemp("hostile") / "mini", MINI_DOCS, MINI_SNIPPETS)
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[remote]\n\turl = SECRET-TOKEN-123\n", encoding="utf-8")
    r = kb(root, "new", "--date", "2026-01-02", "--topic", "SAC", stdin=HOSTILE_NOTE)
    assert r.returncode == 0, r.stderr
    build = build_in_process(root, root / "site")
    assert build.returncode == 0, build.stdout + build.stderr
    return root / "site"


# ---- one Chromium per session (each xdist worker's), for every browser test -------------------------

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "artifacts" / "screenshots"
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP, PHONE = {"width": 1366, "height": 900}, {"width": 390, "height": 844}


@pytest.fixture(scope="session")
def browser():
    """One Chromium for the session (each xdist worker's); each test opens its own context and pages."""
    if not CHROMIUM.exists():
        message = (
            "Chromium not found at /usr/bin/chromium: install it with "
            "`sudo apt-get install chromium fonts-noto-cjk` to run the browser tests"
        )
        if os.environ.get("KB_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()
