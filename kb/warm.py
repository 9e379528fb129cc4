"""Warm live checks for ``kb serve``: each saved page is checked in a process forked from a
multiprocessing *forkserver* that has already imported torch, pytest and its plugins, MkDocs and
Material's plugins, so a check starts in milliseconds instead of the seconds an interpreter needs
for those imports (issue 21: the verdict within 5 s of a save, on 2 cores).

The forkserver imports ``kb.warmup`` (``multiprocessing``'s preload): installed packages and kb's
own code, never the project's snippets or tests, so every check still reads the project's files as
they are now. A check (``check_saved``) runs in its own
process group; the pytest session it starts is one more fork (``pytest_in_fork``), so that a test
that ends its process cannot end the check as passed, exactly as with ``kb check``'s subprocess.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path


def forkserver():
    """The multiprocessing context whose processes fork from a warm server (started on first use)."""
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["kb.warmup"])  # importing it is the warm-up
    return ctx


def kb_code_stamp() -> tuple:
    """kb's own source files and their modification times: the forkserver's imports are these."""
    here = Path(__file__).parent
    return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in here.glob("*.py")))


def run_forked(
    root: Path, env: dict[str, str], main: Callable[[], int], log: Path, also_forget: tuple[Path, ...] = ()
) -> int:
    """``main()`` in a process forked from this one, as a new interpreter would run it in ``root``:
    with ``env`` as its whole environment, ``root`` as its working directory and first import path,
    and no module of ``root``'s project, or of the projects ``also_forget`` names, carried over from
    this process (``_forget_project_modules``; kb stays). Everything the fork prints, Python's
    output included, goes to ``log``. Returns its exit code: ``main()``'s, a ``SystemExit``'s as the
    interpreter reads it, 3 if it raised (said in ``log``), or what ended the process (e.g. a test
    calling ``os._exit``). A test or module that ends or tampers with its process ends or changes
    only the fork."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is its outcome, read by the caller
        code = 3
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            # what Python prints goes there too, whatever sys.stdout was in the parent (a test's capture)
            sys.stdout = open(1, "w", 1, encoding="utf-8", errors="replace", closefd=False)
            sys.stderr = open(2, "w", 1, encoding="utf-8", errors="replace", closefd=False)
            os.environ.clear()
            os.environ.update(env)
            os.chdir(root)
            _forget_project_modules(root, *also_forget)
            sys.path.insert(0, str(root))
            # What the fork inherits (torch, MkDocs, the model: ~300,000 objects) is never garbage for
            # it: frozen, the collector skips it. pytest collects several times at the end of a
            # session (unraisable exceptions): 0.3 s each over the inherited objects, on 2 cores.
            gc.freeze()
            code = int(main())
        except SystemExit as e:  # as the interpreter would end on it
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
        except BaseException:  # noqa: BLE001 - said in the output
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def pytest_in_fork(
    project, args: list[str], out, overran: list[str] | None = None, kb=None
) -> tuple[int, dict | None, str | None]:
    """``check``'s pytest session, forked from this (warm) process instead of a new interpreter.

    Same contract as ``check._run_session``: the exit code, the kb plugin's report (None when the
    session did not reach its end, e.g. a test called ``os._exit``), and the test that was running.
    ``overran`` receives the problem of a module whose import overran the time limit (``CollectionTimeLimit``).
    ``kb``: the model the caller has just loaded (the session's kb plugin uses it, ``LoadedModel``).
    """
    from kb.check import _session_env
    from kb.testrun import LoadedModel, read_report

    with tempfile.TemporaryDirectory(prefix="kb-check-") as tmp:
        report_path, log = Path(tmp) / "report.json", Path(tmp) / "output.txt"

        def session() -> int:
            import pytest

            limit = CollectionTimeLimit(report_path.with_suffix(".overran"))
            given = [LoadedModel(kb)] if kb is not None else []
            return int(pytest.main([*args, "--kb-report", str(report_path)], plugins=[limit, *given]))

        code = run_forked(project.root, _session_env(project), session, log)
        said = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
        for line in said.rstrip("\n").split("\n"):
            if line.strip():
                out(line)
        running = report_path.with_suffix(".running")
        last = running.read_text(encoding="utf-8") if running.exists() else None
        note = report_path.with_suffix(".overran")
        if overran is not None and note.exists():
            overran.append(note.read_text(encoding="utf-8"))
        return code, read_report(report_path), last


class CollectionTimeout(Exception):
    pass


class CollectionTimeLimit:
    """pytest-timeout limits each test's setup, call and teardown, not the import of the test modules:
    a snippet that never finishes importing would leave its page, and every page saved after it
    (waiting its turn), "checking" for good. Collecting gets the time limit each test has (the project's
    ``timeout``); the module that overran is a collection error, and the check fails naming it (the
    problem, ``file:line: ...``, is written to ``note``)."""

    def __init__(self, note: Path):
        self.note = note

    def pytest_collection(self, session) -> None:
        import signal

        try:
            limit = float(session.config.getini("timeout") or 0)
        except ValueError:  # pytest-timeout not installed: no limit to borrow
            return
        if limit <= 0:
            return

        root, installed = Path.cwd(), (Path(sys.prefix), Path(sys.base_prefix))

        def expire(signum, frame):
            where = "collecting the tests"  # the innermost line of the project's own code, if any
            while frame is not None:
                f = Path(frame.f_code.co_filename)
                if f.is_absolute() and f.is_relative_to(root) and not any(f.is_relative_to(i) for i in installed):
                    where = f"{f.relative_to(root).as_posix()}:{frame.f_lineno}"
                    break
                frame = frame.f_back
            problem = (
                f"{where}: importing the tests took longer than {limit:g} s, the time limit each test has "
                "(pytest's `timeout` setting): does this module never finish importing?"
            )
            self.note.write_text(problem, encoding="utf-8")
            raise CollectionTimeout(problem)

        signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, limit)

    def pytest_collection_finish(self, session) -> None:
        import signal

        signal.setitimer(signal.ITIMER_REAL, 0)  # the tests' own limits (pytest-timeout) from here


def _forget_project_modules(*roots: Path) -> None:
    """In the forked session: no module of these projects (the one checked, and e.g. the checkout
    whose test process checks a scratch copy of it) is reused from the parent; the session imports
    the project's snippets, tests and conftest files as they are on disk now. kb stays."""
    names = {"conftest", "snippets", "tests", "devtools", "docs"}
    for root in roots:
        names |= {p.stem for p in Path(root).iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    names.discard("kb")
    inside = tuple(str(root) + os.sep for root in roots)
    installed = tuple({sys.prefix + os.sep, sys.base_prefix + os.sep})  # a venv inside the project
    for name, module in list(sys.modules.items()):
        top = name.split(".")[0]
        where = getattr(module, "__file__", None) or ""
        mine = where.startswith(inside) and not where.startswith(installed)
        if top != "kb" and (top in names or mine):
            del sys.modules[name]


def _importers(project, citing: dict[str, list[str]], cited: set[str]) -> dict[str, list[str]]:
    """Project modules no page cites, each with the cited snippets and shown notebooks (keys of
    ``citing``) that import it, directly or through other modules: what a save of it concerns."""
    from kb import nbcache

    out: dict[str, set[str]] = {}
    for rel in citing:
        path = project.root / rel
        try:
            if path.suffix == ".py":
                cells = [path.read_text(encoding="utf-8", errors="replace")]
            elif path.suffix == ".ipynb":
                import nbformat

                cells = nbcache.code_cells(nbformat.read(str(path), as_version=4))
            else:
                continue
            imported = nbcache.imports_of(project, cells)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # unreadable: its own check says so
        for module in imported:
            name = project.rel(module)
            if name != rel and name not in cited:
                out.setdefault(name, set()).add(rel)
    return {name: sorted(files) for name, files in out.items()}


def _decided_together(kb, uris: list[str]) -> list[str]:
    """The pages a check of ``uris`` must cover: a page's session runs whole modules
    (``check.session_modules``) and decides every claim whose test is
    in one of them, on any page, counterfactuals included. So the verdict of page A depends on page B
    as saved whenever one of B's claims is tested in a module A's session runs (kb check A fails while
    B's counterfactual still passes): A and B are checked together, to a fixed point. ``kb serve``
    then stops this check at a save of any of them (its verdict would be of that page's content
    before) and a save of B gives A a verdict again."""
    from kb.check import session_modules

    pages = {p.src_uri: p for p in kb.pages.values() if not p.is_post}
    tested = {uri: {c.test.code.path for c in page.claims if c.test} for uri, page in pages.items()}
    ran = {uri: set(session_modules(page)) for uri, page in pages.items()}
    out = list(dict.fromkeys(uris))
    grew = True
    while grew:
        grew = False
        now = set(out)
        session = set().union(*(ran[u] for u in now if u in pages))
        decided = set().union(*(tested[u] for u in now if u in pages))
        for uri in pages:
            if uri not in now and (tested[uri] & session or ran[uri] & decided):
                out.append(uri)
                grew = True
    return out


VERDICT_LINES = ("ok  ", "FAIL", "invalid:", "passed:", "FAILED:", "cached:", "note:")


def check_saved(root: str, saved: list[str], marked: list[str], status_path: str, info_path: str) -> None:
    """One live check (a forkserver child): the pages the saved files concern, checked, their verdict
    written to the status file. ``marked``: the pages ``kb serve`` marked "checking" at the save.

    ``info_path`` receives at once which pages this check covers and which pages include or cite
    each snippet file (``kb serve`` maps the next save with it).
    """
    os.setpgid(0, 0)  # its own process group: a newer save of the same page stops it and all it started
    from kb import check, live
    from kb.live import STATUS_ENV
    from kb.model import KnowledgeBase, notebooks_of
    from kb.project import KbError, Project

    os.environ[STATUS_ENV] = ""  # the check's own build of pages has no status line
    status = Path(status_path)
    # Its own id on the pages it answers for, before it reads a file: a save after this marks them
    # again (kb serve), and this check's verdict, of the content before, is then not written to them.
    me = f"{os.getpid()}-{time.time_ns()}"
    live.mark_running(status, marked, check=me)
    os.chdir(root)
    try:
        project = Project.find(Path(root))
        kb = KnowledgeBase.load(project)
    except Exception as e:  # noqa: BLE001 - the pages marked "checking" say why instead
        problem = f"cannot read the project ({type(e).__name__}: {e})"
        print(f"kb serve: {problem}", file=sys.stderr)
        if marked:
            live.record_refusal(status, marked, problem, check=me)
        return
    citing = {rel: [pg.src_uri for pg in pages if not pg.is_post] for rel, pages in kb.pages_citing.items()}
    for page in kb.pages.values():  # a notebook concerns the pages that show it (it has no status line)
        for nb in [] if page.is_post else notebooks_of(kb, page):
            citing.setdefault(project.rel(project.docs_dir / nb), []).append(page.src_uri)
    users = _importers(project, citing, set(kb.pages_citing))
    for rel, files in users.items():  # a module imported by a cited snippet or a shown notebook
        citing[rel] = sorted({uri for f in files for uri in citing[f]})
    targets, docs = [], project.docs_dir
    for s in saved:
        p = Path(s)
        rel = project.rel(p)
        if not p.exists():  # deleted or renamed away: the pages it concerned are checked again
            targets += [project.rel(docs / u) for u in citing.get(rel, [])]
            targets += [project.rel(docs / u) for u in marked if u.endswith(".md") and (docs / u).is_file()]
            continue
        if p.suffix == ".py" and rel in kb.pages_citing:
            targets.append(rel)
        elif p.suffix == ".py" and rel in users:  # checked through the snippets and notebooks importing it
            targets += users[rel]
        elif p.suffix in (".md", ".ipynb") and project.inside(p, project.docs_dir):
            targets.append(rel)
    targets = list(dict.fromkeys(targets))
    uris = []  # the pages this check gives a verdict on: they say "checking" until it ends
    for t in targets:
        try:
            uris += [pg.src_uri for pg in check.resolve(kb, [t], project.root)]
        except KbError:  # check.run says why, on the page itself if the target is one
            if (project.root / t).resolve().is_relative_to(docs) and t.endswith(".md"):
                uris.append((project.root / t).resolve().relative_to(docs).as_posix())
    uris = list(dict.fromkeys(uris))
    for uri in _decided_together(kb, uris)[len(uris) :]:  # pages whose claims its session decides too
        uris.append(uri)
        targets.append(project.rel(docs / uri))
    partial = Path(info_path).with_suffix(".partial")  # kb serve reads it while this check runs: whole or absent
    partial.write_text(json.dumps({"citing": citing, "uris": uris}), encoding="utf-8")
    partial.replace(info_path)
    if not targets:
        live.unmark(status, marked, check=me)
        return
    live.mark_running(status, [u for u in uris if u not in marked], check=me)
    print(f"kb serve: checking {', '.join(targets)}", file=sys.stderr)

    def out(line: str) -> None:
        if line.startswith(VERDICT_LINES):
            print(f"  {line}", file=sys.stderr)

    overran: list[str] = []
    try:
        result = check.run(
            project,
            targets,
            project.root,
            out=out,
            early=lambda partial: check.write_status(status, partial, check_id=me),
            kb=kb,
            session=lambda project, args, out: pytest_in_fork(project, args, out, overran, kb=kb),
        )
    except KbError as e:
        print(f"kb serve: {e}", file=sys.stderr)
        live.record_refusal(status, uris, str(e), check=me)
        return
    if overran:  # the tests that did not run fail their claims; the page says why
        result = {**result, "passed": False, "problems": [*result["problems"], *overran]}
    check.write_status(status, result, check_id=me)
