"""kb serve's status file: a check of several pages at once (a snippet file two pages include, saves
in a row) gives each page its own verdict, not the other page's failing claim."""

from __future__ import annotations

import json

import pytest

from kb import check


def test_a_check_of_two_pages_gives_each_page_its_own_verdict(tmp_path):
    status = tmp_path / "status.json"
    failure = {
        "id": "sac-max-min-bias",
        "title": "取 max 偏高",
        "page": "topics/sac/double-q.md",
        "anchor": "claim-sac-max-min-bias",
        "reason": "the claim says refuted but its test decides 'verified'",
        "test": "snippets/sac/double_q.py::test_max",
    }
    check.write_status(
        status,
        {
            "pages": ["foundations/mse-conditional-mean.md", "topics/sac/double-q.md"],
            "passed": False,
            "ran_at": "2026-12-07 09:06:29",
            "seconds": 19.8,
            "failing_claims": ["sac-max-min-bias"],
            "failed_tests": ["snippets/sac/double_q.py::test_max"],
            "problems": ["docs/topics/sac/double-q.md:31: the claim says refuted but its test decides 'verified'"],
            "failures": [failure],
        },
    )
    data = json.loads(status.read_text(encoding="utf-8"))
    mse, dq = data["foundations/mse-conditional-mean.md"], data["topics/sac/double-q.md"]
    assert mse["passed"] is True and mse["failures"] == [] and mse["problems"] == []
    assert dq["passed"] is False and dq["failures"] == [failure] and dq["problems"][0].startswith("docs/topics/sac/")


def test_a_failed_test_of_no_claim_or_page_fails_every_page_checked(tmp_path):
    status = tmp_path / "status.json"
    check.write_status(
        status,
        {
            "pages": ["a.md", "b.md"],
            "passed": False,
            "ran_at": "t",
            "seconds": 1,
            "failing_claims": [],
            "failed_tests": ["snippets/shared.py::test_x"],
            "problems": [],
            "failures": [],
        },
    )
    data = json.loads(status.read_text(encoding="utf-8"))
    assert data["a.md"]["passed"] is False and data["b.md"]["passed"] is False


def wait_for_verdict(status, uri: str, seconds: float = 120) -> dict:
    import time

    from kb.live import read_status

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        entry = read_status(status).get(uri, {})
        if "passed" in entry and not entry.get("running"):
            return entry
        time.sleep(0.1)
    raise AssertionError(f"{uri}: no verdict after {seconds} s: {read_status(status).get(uri)}")


def test_a_page_marked_checking_says_why_when_the_project_cannot_be_read(mini_project):
    """Found by `make bench`: the model load failed and the saved page said "checking" for good.
    Here mkdocs.yml is damaged after the page was saved: the page says why."""
    from kb.live import read_status
    from kb.project import Project
    from kb.serve import Checker

    checker = Checker(Project.find(mini_project), debounce=0.05)
    page = mini_project / "docs" / "foundations" / "mse-conditional-mean.md"
    page.write_text(page.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    config = mini_project / "mkdocs.yml"
    config.write_text(config.read_text(encoding="utf-8") + "\nnav: [\n", encoding="utf-8")
    checker.touched(str(page))
    assert read_status(checker.status)["foundations/mse-conditional-mean.md"] == {"running": True}
    entry = wait_for_verdict(checker.status, "foundations/mse-conditional-mean.md")
    assert entry["passed"] is False and "mkdocs.yml" in entry["problems"][0], entry


def test_a_test_that_exits_the_process_fails_the_live_check(mini_project):
    """The live check forks its pytest session from a warm process: a test that ends that process
    (os._exit(0)) leaves no session report, and the page is red, naming the test."""
    from kb.project import Project
    from kb.serve import Checker

    mse = mini_project / "snippets" / "foundations" / "mse.py"
    text = mse.read_text(encoding="utf-8")
    head = "def test_mse_decomposes_into_variance_plus_squared_bias("
    mse.write_text(
        text.replace(head, "def test_exits():\n    import os\n    os._exit(0)\n\n\n" + head), encoding="utf-8"
    )
    checker = Checker(Project.find(mini_project), debounce=0.05)
    checker.touched(str(mse))
    entry = wait_for_verdict(checker.status, "foundations/mse-conditional-mean.md")
    assert entry["passed"] is False, entry
    assert any(
        "did not reach its end while running snippets/foundations/mse.py::test_exits" in p for p in entry["problems"]
    ), entry


class FakeCheck:
    """A live check that runs until the test ends it (multiprocessing.Process's interface)."""

    started: list[FakeCheck] = []

    def __init__(self, target, args, name=None):
        import threading

        self.saved, self.marked, self.info = args[1], args[2], args[4]
        self.done, self.stopped, self.exitcode, self.pid = threading.Event(), False, None, -1
        self.ends_with = 0  # its exit code once done

    def start(self):
        import json

        (self.__class__.started).append(self)
        with open(self.info, "w", encoding="utf-8") as f:
            citing = {"snippets/shared.py": ["a.md", "b.md"], **getattr(self, "citing", {})}
            json.dump({"uris": self.marked, "citing": citing}, f)

    def is_alive(self):
        return not self.done.is_set()

    def join(self, timeout=None):
        self.done.wait(timeout)
        if self.done.is_set():
            self.exitcode = self.ends_with


class FakeContext:
    Process = FakeCheck


def scheduled(tmp_path, monkeypatch):
    """A Checker whose checks are FakeChecks, over a docs folder with pages a.md and b.md."""
    import time

    from kb import serve, warm
    from kb.project import Project

    (tmp_path / "docs").mkdir()
    (tmp_path / "snippets").mkdir()
    (tmp_path / "mkdocs.yml").write_text("site_name: t\n", encoding="utf-8")
    for name in ("a.md", "b.md"):
        (tmp_path / "docs" / name).write_text("# x\n", encoding="utf-8")
    (tmp_path / "snippets" / "shared.py").write_text("x = 1\n", encoding="utf-8")
    FakeCheck.started = []
    monkeypatch.setattr(warm, "forkserver", lambda: FakeContext())
    monkeypatch.setattr(
        serve.Checker, "_stop", staticmethod(lambda proc: (setattr(proc, "stopped", True), proc.done.set()))
    )
    checker = serve.Checker(Project.at(tmp_path / "mkdocs.yml"), debounce=0.0)

    def started(n: int) -> FakeCheck:
        end = time.monotonic() + 10
        while len(FakeCheck.started) < n:
            assert time.monotonic() < end, f"{len(FakeCheck.started)} checks started, expected {n}"
            time.sleep(0.01)
        return FakeCheck.started[n - 1]

    first = started(1)  # at start: which pages include what
    first.done.set()

    def save(name: str, text: str) -> None:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        checker.touched(str(path))

    return checker, started, save


def test_a_save_of_another_page_waits_for_the_running_check(tmp_path, monkeypatch):
    """Found by `make bench`: a save of page B while page A was being checked restarted A's check as a
    check of both, and A's verdict came tens of seconds late."""
    import time

    checker, started, save = scheduled(tmp_path, monkeypatch)
    save("docs/a.md", "# a 1\n")
    a = started(2)
    save("docs/b.md", "# b 1\n")
    time.sleep(0.5)
    assert not a.stopped and len(FakeCheck.started) == 2, "a save of b.md stopped a.md's check"
    a.done.set()
    b = started(3)
    assert [a.saved, b.saved] == [[str(tmp_path / "docs/a.md")], [str(tmp_path / "docs/b.md")]]


def test_a_new_save_of_the_page_being_checked_restarts_its_check(tmp_path, monkeypatch):
    checker, started, save = scheduled(tmp_path, monkeypatch)
    save("docs/a.md", "# a 1\n")
    a = started(2)
    save("docs/a.md", "# a 2\n")
    again = started(3)
    assert a.stopped and again.saved == [str(tmp_path / "docs/a.md")]


def test_a_save_of_a_snippet_the_checked_page_includes_restarts_its_check(tmp_path, monkeypatch):
    """The check under way read the old snippet: its verdict would be stale."""
    checker, started, save = scheduled(tmp_path, monkeypatch)
    save("docs/a.md", "# a 1\n")
    a = started(2)
    save("snippets/shared.py", "x = 2\n")
    again = started(3)
    assert a.stopped and sorted(again.saved) == sorted(
        [str(tmp_path / "docs/a.md"), str(tmp_path / "snippets/shared.py")]
    )


def test_a_session_forked_from_this_process_runs_the_scratch_projects_code_not_ours(mini_project):
    """pytest_in_fork forks the process it is called from: here a test process that has imported this
    checkout's snippets. The forked session must import the scratch copy's files as they are on disk."""
    import snippets.foundations.mse  # noqa: F401 - this checkout's module, now in sys.modules
    from kb import check, warm
    from kb.project import Project

    def checked() -> tuple[dict, list[str]]:
        said: list[str] = []
        page = ["docs/foundations/mse-conditional-mean.md"]
        return check.run(
            Project.find(mini_project), page, mini_project, out=said.append, session=warm.pytest_in_fork
        ), said

    result, said = checked()
    assert result["passed"] is True and not result["failed_tests"], said
    mse = mini_project / "snippets" / "foundations" / "mse.py"
    text = mse.read_text(encoding="utf-8")
    head = "def test_mse_decomposes_into_variance_plus_squared_bias("
    mse.write_text(
        text.replace(head, "def test_exits():\n    import os\n    os._exit(0)\n\n\n" + head), encoding="utf-8"
    )
    result, said = checked()
    assert result["passed"] is False
    assert any(
        "did not reach its end while running snippets/foundations/mse.py::test_exits" in p for p in result["problems"]
    ), said


def test_a_check_that_cannot_start_leaves_the_page_saying_why(tmp_path, monkeypatch):
    """The forkserver gone, out of processes...: the saved page never says "checking" for good."""
    checker, started, save = scheduled(tmp_path, monkeypatch)

    def cannot_start(self):
        raise OSError("[Errno 11] Resource temporarily unavailable")

    monkeypatch.setattr(FakeCheck, "start", cannot_start)
    save("docs/a.md", "# a 1\n")
    entry = wait_for_verdict(checker.status, "a.md", seconds=10)
    assert entry["passed"] is False and "could not run (OSError" in entry["problems"][0], entry


def test_a_page_saved_while_the_site_rebuilds_does_not_abort_the_build(mini_project, monkeypatch):
    """Found by `make bench`: a page saved between kb reading it (on_files) and MkDocs reading it aborted
    the rebuild with "its Markdown was changed before kb rendered it (plugin order in mkdocs.yml)", and
    `kb serve` showed the old site until the next save. The build shows the text it read; the save
    queues the next build."""
    import time

    from conftest import build_in_process

    from kb.model import KnowledgeBase

    page = mini_project / "docs" / "foundations" / "mse-conditional-mean.md"
    real_build = KnowledgeBase.build.__func__

    def build_then_save(cls, project, pages):
        kb = real_build(cls, project, pages)
        time.sleep(0.01)
        page.write_text(page.read_text(encoding="utf-8") + "\n新保存的一段。\n", encoding="utf-8")
        return kb

    monkeypatch.setattr(KnowledgeBase, "build", classmethod(build_then_save))
    built = build_in_process(mini_project, mini_project / "site", strict=False)
    assert built.returncode == 0, built.stderr
    html = (mini_project / "site" / "foundations" / "mse-conditional-mean" / "index.html").read_text(encoding="utf-8")
    assert "新保存的一段" not in html and "claim-mse-predicts-conditional-mean" in html


def test_a_plugin_that_changes_a_pages_markdown_before_kb_still_fails_the_build(mini_project, monkeypatch):
    """The exception above is for a save only: Markdown changed by another plugin (not on disk) is refused."""
    from conftest import build_in_process
    from mkdocs.structure.pages import Page

    real_read = Page.read_source

    def read_and_change(self, config):
        real_read(self, config)
        if self.file.src_uri == "foundations/mse-conditional-mean.md":
            self.markdown += "\n由别的插件加上的一段。\n"

    monkeypatch.setattr(Page, "read_source", read_and_change)
    built = build_in_process(mini_project, mini_project / "site", strict=False)
    assert built.returncode == 1 and "its Markdown was changed before kb rendered it" in built.stderr, built.stderr


# ---- attacks by a second reader (wave 4): each one that found something stays as a regression test ----


def test_a_saved_notebook_turns_the_pages_that_show_it_to_checking_at_once(tmp_path, monkeypatch):
    """Attack: a save of a notebook (docs/*.ipynb) must mark the pages that show it "checking" within a
    second, as a save of a snippet does for the pages including it, not only once a check has read the
    project again (the notebook itself has no status line)."""
    from kb.live import read_status

    checker, started, save = scheduled(tmp_path, monkeypatch)
    monkeypatch.setattr(FakeCheck, "citing", {"docs/n.ipynb": ["a.md"]}, raising=False)
    save("docs/a.md", "# a\n\n[笔记本](n.ipynb)\n")
    started(2).done.set()  # this check found that a.md shows n.ipynb
    save("docs/n.ipynb", '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}\n')
    assert read_status(checker.status).get("a.md") == {"running": True}


def test_a_save_of_a_snippet_the_checked_page_has_just_started_including_restarts_its_check(tmp_path, monkeypatch):
    """Attack: page a.md is saved now including a new snippet, and the snippet is saved while a.md's check
    runs. The check under way says (in its info file) that a.md includes it: the checker must use that at
    once, not only when the check ends, or a.md's verdict is of the snippet's old content."""
    checker, started, save = scheduled(tmp_path, monkeypatch)
    monkeypatch.setattr(FakeCheck, "citing", {"snippets/new.py": ["a.md"]}, raising=False)
    save("docs/a.md", '# a\n\n--8<-- "snippets/new.py"\n')
    a = started(2)
    save("snippets/new.py", "x = 2\n")
    again = started(3)
    assert a.stopped and sorted(again.saved) == sorted([str(tmp_path / "docs/a.md"), str(tmp_path / "snippets/new.py")])


MSE_PAGE = "foundations/mse-conditional-mean.md"


def held_checks(mini_project, monkeypatch, delay_stop: float = 0.0):
    """A Checker on the mini project whose checks fork from this process (so they see this test's
    patches) and whose check.run is canned: the n-th check writes `ready-<n>` to a gate folder, waits for
    the gate's file `go-<n>` (or `go-all`), then returns a passing result for the mini page. ``delay_stop``: the checker's
    loop is that late to stop a check (a busy machine)."""
    import multiprocessing
    import threading
    import time

    from kb import check, serve, warm
    from kb.project import Project

    gate = mini_project.parent / "gate"
    gate.mkdir()

    def held_run(project, targets, cwd, out=print, early=None, kb=None, session=None, **kw):
        n = len(list(gate.glob("ready-*"))) + 1
        (gate / f"ready-{n}").write_text(" ".join(targets), encoding="utf-8")
        end = time.monotonic() + 60
        while not {f"go-{n}", "go-all"} & {p.name for p in gate.iterdir()} and time.monotonic() < end:
            time.sleep(0.005)
        when = time.strftime("%Y-%m-%d %H:%M:%S")
        return {"pages": [pg.src_uri for pg in check.resolve(kb, targets, cwd)], "passed": True, "ran_at": when, "seconds": 0.1, "failing_claims": [],
                "failed_tests": [], "problems": [], "failures": []}  # fmt: skip

    monkeypatch.setattr(check, "run", held_run)
    monkeypatch.setattr(warm, "forkserver", lambda: multiprocessing.get_context("fork"))
    stop = serve.Checker._stop
    monkeypatch.setattr(serve.Checker, "_stop", staticmethod(lambda proc: (time.sleep(delay_stop), stop(proc))))
    first, check_once = threading.Event(), serve.Checker._check

    def checked(self, paths):
        try:
            check_once(self, paths)
        finally:
            first.set()

    monkeypatch.setattr(serve.Checker, "_check", checked)
    checker = serve.Checker(Project.find(mini_project), debounce=0.05)
    # Its first check (which pages include what) has ended before the test saves anything: a fork while
    # this thread holds the status file's lock would leave the child waiting for it for good.
    assert first.wait(60), "the checker's first check never ended"

    def ready(n: int) -> None:
        end = time.monotonic() + 60
        while not (gate / f"ready-{n}").exists():
            assert time.monotonic() < end, f"check {n} never started"
            time.sleep(0.01)

    return checker, gate, ready


def test_a_verdict_that_lands_after_a_newer_save_is_not_shown(mini_project, monkeypatch):
    """Attack: the check's verdict is written just after a newer save marked the page "checking", before
    the checker's loop stops that check. The page must go on saying "checking" (the verdict is of the
    content saved before), never show that verdict, and then show the new content's verdict."""
    import time

    from kb.live import read_status

    checker, gate, ready = held_checks(mini_project, monkeypatch, delay_stop=1.0)
    page = mini_project / "docs" / MSE_PAGE
    text = page.read_text(encoding="utf-8")
    page.write_text(text + "\n第一次保存。\n", encoding="utf-8")
    checker.touched(str(page))
    ready(1)
    page.write_text(text + "\n第二次保存。\n", encoding="utf-8")
    checker.touched(str(page))
    (gate / "go-1").write_text("", encoding="utf-8")  # the first check's (stale) verdict is written now
    end = time.monotonic() + 0.8  # the loop stops that check 1 s after it saw the save
    while time.monotonic() < end:
        entry = read_status(checker.status)[MSE_PAGE]
        assert entry.get("running") and "passed" not in entry, f"a verdict of the content saved before: {entry}"
        time.sleep(0.005)
    (gate / "go-all").write_text("", encoding="utf-8")
    ready(2)
    assert wait_for_verdict(checker.status, MSE_PAGE, seconds=60)["passed"] is True


def test_a_check_that_dies_after_a_newer_save_leaves_the_page_checking_not_refused(tmp_path, monkeypatch):
    """Attack: the check of a.md dies (killed by a signal) just as a.md is saved again. The refusal
    ("ended without a verdict") is about the content before: the page must say "checking" until the
    check of the new save ends."""
    from kb.live import read_status

    checker, started, save = scheduled(tmp_path, monkeypatch)
    save("docs/a.md", "# a 1\n")
    a = started(2)
    with checker.lock:  # the checker's loop looks again only once both have happened
        save("docs/a.md", "# a 2\n")
        a.ends_with = -9
        a.done.set()
    started(3)
    assert read_status(checker.status)["a.md"] == {"running": True}


def test_a_saved_snippet_marks_its_pages_checking_even_when_the_checker_did_not_know_them(mini_project, monkeypatch):
    """Attack: kb serve does not (yet) know which pages include a snippet (its first check could not read
    the project, or a page has just started to include it). A save of the snippet must still turn those
    pages to "checking" once the check has read the project, not leave their old verdict up."""
    from kb import check
    from kb.live import read_status

    checker, gate, ready = held_checks(mini_project, monkeypatch)
    checker.citing = {}
    before = {"pages": [MSE_PAGE], "passed": True, "ran_at": "2026-12-07 09:00:00", "seconds": 1.0,
              "failing_claims": [], "failed_tests": [], "problems": [], "failures": []}  # fmt: skip
    check.write_status(checker.status, before)
    mse = mini_project / "snippets" / "foundations" / "mse.py"
    mse.write_text(mse.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    checker.touched(str(mse))
    ready(1)  # the check has read the project and runs the page's tests
    entry = read_status(checker.status)[MSE_PAGE]
    assert entry.get("running") and "passed" not in entry, f"a snippet saved, its page's old verdict: {entry}"
    (gate / "go-all").write_text("", encoding="utf-8")
    assert wait_for_verdict(checker.status, MSE_PAGE, seconds=60)["ran_at"] != before["ran_at"]


def test_a_snippet_that_never_finishes_importing_fails_its_page_instead_of_checking_for_good(mini_project):
    """Attack: a snippet that hangs at import (pytest-timeout limits tests, not collection) left its page
    "checking" for good, and every page saved after it waiting its turn for good. Collecting now gets
    the time limit each test has (the project's `timeout`, 5 s here)."""
    from kb.project import Project
    from kb.serve import Checker

    config = mini_project / "pyproject.toml"
    text = config.read_text(encoding="utf-8")
    assert "\ntimeout = 120\n" in text
    config.write_text(text.replace("\ntimeout = 120\n", "\ntimeout = 5\n"), encoding="utf-8")
    mse = mini_project / "snippets" / "foundations" / "mse.py"
    mse.write_text("import time\n\ntime.sleep(3600)\n" + mse.read_text(encoding="utf-8"), encoding="utf-8")
    checker = Checker(Project.find(mini_project), debounce=0.05)
    checker.touched(str(mse))
    entry = wait_for_verdict(checker.status, MSE_PAGE, seconds=120)
    assert entry["passed"] is False, entry
    said = json.dumps(entry, ensure_ascii=False)
    assert "snippets/foundations/mse.py:3: importing the tests took longer than 5 s" in said, entry


def test_the_live_checks_go_on_after_the_forkserver_was_killed(mini_project):
    """Attack: the warm forkserver itself is killed (out of memory, a stray kill). The next save is
    still checked (multiprocessing starts a new server), not refused for good."""
    import multiprocessing.forkserver
    import os
    import signal
    import time

    from kb.project import Project
    from kb.serve import Checker

    checker = Checker(Project.find(mini_project), debounce=0.05)
    end = time.monotonic() + 120
    while not checker.citing:  # its first check, from the forkserver, has ended
        assert time.monotonic() < end, "the checker's first check never ended"
        time.sleep(0.1)
    server = multiprocessing.forkserver._forkserver._forkserver_pid
    assert server
    os.kill(server, signal.SIGKILL)
    page = mini_project / "docs" / MSE_PAGE
    page.write_text(page.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    checker.touched(str(page))
    entry = wait_for_verdict(checker.status, MSE_PAGE)
    assert entry["passed"] is True, entry


def test_a_saved_notebook_turns_the_pages_that_show_it_to_checking_when_the_checker_did_not_know_them(
    mini_project, monkeypatch
):
    """Attack: the check of a saved notebook gives its verdict on the pages that show it (check.resolve);
    those pages must say "checking" while it runs, not keep their verdict from before the save (and the
    notebook's own entry, which no page shows, must not stay "checking" for good)."""
    from kb import check
    from kb.live import read_status

    checker, gate, ready = held_checks(mini_project, monkeypatch)
    checker.citing = {}
    shows = ["foundations/index.md", MSE_PAGE]
    before = {"pages": shows, "passed": True, "ran_at": "2026-12-07 09:00:00", "seconds": 1.0,
              "failing_claims": [], "failed_tests": [], "problems": [], "failures": []}  # fmt: skip
    check.write_status(checker.status, before)
    nb = mini_project / "docs" / "foundations" / "mse-experiments.ipynb"
    nb.write_text(nb.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    checker.touched(str(nb))
    ready(1)
    status = read_status(checker.status)
    for uri in shows:
        assert status[uri].get("running") and "passed" not in status[uri], f"{uri}: {status[uri]}"
    (gate / "go-all").write_text("", encoding="utf-8")
    for uri in shows:
        assert wait_for_verdict(checker.status, uri, seconds=60)["ran_at"] != before["ran_at"]
    assert not read_status(checker.status).get("foundations/mse-experiments.ipynb", {}).get("running")


def test_a_saved_module_that_a_cited_snippet_imports_rechecks_the_pages_citing_that_snippet(mini_project, monkeypatch):
    """Attack: no page cites snippets/foundations/helper.py, but mse.py (which the page's claims cite)
    imports it. A save of helper.py changes what the page's tests do: the page must say "checking" at
    once and be checked again (through mse.py), not keep the verdict of the helper's old content."""
    from kb.live import read_status

    helper = mini_project / "snippets" / "foundations" / "helper.py"
    helper.write_text("SCALE = 1.0\n", encoding="utf-8")
    mse = mini_project / "snippets" / "foundations" / "mse.py"
    mse.write_text(
        "from snippets.foundations.helper import SCALE  # noqa: F401\n" + mse.read_text(encoding="utf-8"),
        encoding="utf-8",
    )
    checker, gate, ready = held_checks(mini_project, monkeypatch)
    helper.write_text("SCALE = 2.0\n", encoding="utf-8")
    checker.touched(str(helper))
    assert read_status(checker.status).get(MSE_PAGE) == {"running": True}
    ready(1)
    assert "snippets/foundations/mse.py" in (gate / "ready-1").read_text(encoding="utf-8").split()
    (gate / "go-all").write_text("", encoding="utf-8")
    assert wait_for_verdict(checker.status, MSE_PAGE, seconds=60)["passed"] is True


def test_a_status_file_damaged_while_a_check_runs_gets_the_verdict(mini_project, monkeypatch):
    """Attack: .kb/status.json is overwritten with garbage while a check runs (a crash, another tool).
    The check's verdict is still written (a damaged file is started again), not lost nor refused."""
    checker, gate, ready = held_checks(mini_project, monkeypatch)
    page = mini_project / "docs" / MSE_PAGE
    page.write_text(page.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    checker.touched(str(page))
    ready(1)
    checker.status.write_text('{"foundations/mse-conditional-mean.md": {"running": tr', encoding="utf-8")
    (gate / "go-all").write_text("", encoding="utf-8")
    assert wait_for_verdict(checker.status, MSE_PAGE, seconds=60)["passed"] is True


def test_a_saved_file_that_no_page_concerns_leaves_every_page_as_it_was(mini_project, monkeypatch):
    """Attack: saves of files that are neither a page nor anything a page includes or runs (a note in
    snippets/, a script no snippet imports): no page turns to "checking", none for good."""
    import time

    from kb.live import read_status

    checker, gate, ready = held_checks(mini_project, monkeypatch)
    before = read_status(checker.status)
    for name, text in (("snippets/foundations/NOTES.md", "# 草稿\n"), ("snippets/foundations/scratch.py", "x = 1\n")):
        (mini_project / name).write_text(text, encoding="utf-8")
        checker.touched(str(mini_project / name))
    end = time.monotonic() + 30
    while checker.pending or any(
        isinstance(e, dict) and e.get("running") for e in read_status(checker.status).values()
    ):
        assert time.monotonic() < end, read_status(checker.status)
        time.sleep(0.05)
    time.sleep(1.0)  # a check of them, had one started, would have reached check.run by now
    assert read_status(checker.status) == before and not list(gate.glob("ready-*"))


def test_a_save_of_b_then_of_a_while_a_is_checked_checks_both_next(tmp_path, monkeypatch):
    """Attack: b.md is saved (it waits its turn), then a.md again while a.md's check runs. a.md's stale
    check stops; the next check covers both (b.md's save is neither lost nor made to wait twice)."""
    checker, started, save = scheduled(tmp_path, monkeypatch)
    save("docs/a.md", "# a 1\n")
    a = started(2)
    save("docs/b.md", "# b 1\n")
    save("docs/a.md", "# a 2\n")
    both = started(3)
    assert a.stopped and sorted(both.saved) == [str(tmp_path / "docs/a.md"), str(tmp_path / "docs/b.md")]


def test_a_deleted_or_renamed_file_counts_as_a_save_of_it(tmp_path):
    """Attack: the watcher passed on a rename only its new name, and never a deletion: a snippet
    deleted or renamed away left the pages that include it with their verdict from before."""
    from watchdog.events import DirMovedEvent, FileDeletedEvent, FileModifiedEvent, FileMovedEvent

    from kb.serve import saved_paths

    assert saved_paths(FileModifiedEvent("/p/docs/a.md")) == ["/p/docs/a.md"]
    assert saved_paths(FileDeletedEvent("/p/snippets/s.py")) == ["/p/snippets/s.py"]
    assert saved_paths(FileMovedEvent("/p/snippets/s.py", "/p/snippets/t.py")) == [
        "/p/snippets/s.py",
        "/p/snippets/t.py",
    ]
    assert saved_paths(DirMovedEvent("/p/docs/x", "/p/docs/y")) == []


def test_a_deleted_snippet_turns_the_pages_including_it_to_checking_and_rechecks_them(mini_project, monkeypatch):
    """Attack: snippets/foundations/mse.py, which the page's claims cite, is deleted (or renamed away).
    The page must say "checking" at once and be checked again (its claims now have no test)."""
    from kb.live import read_status

    checker, gate, ready = held_checks(mini_project, monkeypatch)
    mse = mini_project / "snippets" / "foundations" / "mse.py"
    mse.rename(mse.with_name("mse_old.py"))
    checker.touched(str(mse))
    assert read_status(checker.status).get(MSE_PAGE) == {"running": True}
    ready(1)
    assert "docs/foundations/mse-conditional-mean.md" in (gate / "ready-1").read_text(encoding="utf-8").split()


def test_a_test_that_kills_the_check_process_turns_its_page_red_with_the_reason(mini_project):
    """Attack: a snippet test kills its parent, the live check's process. The page is red and says the
    check ended without a verdict, never "checking" for good nor green."""
    from kb.project import Project
    from kb.serve import Checker

    mse = mini_project / "snippets" / "foundations" / "mse.py"
    kill = (
        "def test_kills_the_check():\n    import os\n    import signal\n\n    os.kill(os.getppid(), signal.SIGKILL)\n"
    )
    mse.write_text(mse.read_text(encoding="utf-8") + "\n\n" + kill, encoding="utf-8")
    checker = Checker(Project.find(mini_project), debounce=0.05)
    checker.touched(str(mse))
    entry = wait_for_verdict(checker.status, MSE_PAGE)
    assert entry["passed"] is False and "ended without a verdict (killed by signal 9)" in entry["problems"][0], entry


@pytest.mark.timeout(300)  # two real checks, each up to wait_for_verdict's 120 s on a busy machine
def test_what_a_test_changes_in_its_process_is_gone_at_the_next_check(mini_project):
    """Attack: a snippet test changes its process's state (an environment variable, torch's default
    dtype, the working directory). Each check forks afresh from the warm server: the next check of the
    page must not see it (the test asserts a clean state, then dirties it)."""
    import time

    from kb.project import Project
    from kb.serve import Checker

    mse = mini_project / "snippets" / "foundations" / "mse.py"
    dirty = (
        "def test_leaves_its_process_dirty():\n"
        "    import os\n\n    import torch\n\n"
        '    assert "KB_DIRTY" not in os.environ and torch.get_default_dtype() == torch.float32\n'
        '    os.environ["KB_DIRTY"] = "1"\n'
        "    torch.set_default_dtype(torch.float64)\n"
        '    os.chdir("/")\n'
    )
    mse.write_text(mse.read_text(encoding="utf-8") + "\n\n" + dirty, encoding="utf-8")
    checker = Checker(Project.find(mini_project), debounce=0.05)
    checker.touched(str(mse))
    first = wait_for_verdict(checker.status, MSE_PAGE)
    assert first["passed"] is True, first
    time.sleep(1.1)  # the next verdict's ran_at (whole seconds) differs
    mse.write_text(mse.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    checker.touched(str(mse))
    second = wait_for_verdict(checker.status, MSE_PAGE)
    assert second["ran_at"] != first["ran_at"] and second["passed"] is True, second


def test_a_forked_session_decides_its_claims_from_the_model_it_is_handed(mini_project):
    """The live check hands its pytest session the model it has just loaded (``LoadedModel``) instead of
    the session reading every page again. A model with no claims, handed over, leaves no claim
    undecided by a narrowed run: the session used it. A model of another project is not used."""
    import dataclasses

    from kb import warm
    from kb.model import KnowledgeBase
    from kb.project import Project

    project = Project.find(mini_project)
    args = ["-p", "no:cacheprovider", "-q", "-n", "0", "--rootdir", str(mini_project)]
    args.append("snippets/foundations/mse.py::test_mse_decomposes_into_variance_plus_squared_bias")

    def undecided(kb) -> list[str]:
        code, report, _ = warm.pytest_in_fork(project, args, out=lambda _: None, kb=kb)
        assert code == 0 and report is not None
        return report["undecided"]

    kb = KnowledgeBase.load(project)
    assert undecided(None)  # read by the session itself: the mini project's other claims are undecided
    assert undecided(kb) == undecided(None)
    assert undecided(dataclasses.replace(kb, claims=[])) == []
    assert undecided(KnowledgeBase.load(Project.find())) == undecided(None)  # this checkout's model: ignored


# ---- second reader of the live check's speed-up (wave 6): attacks kept as regression tests --------


@pytest.mark.parametrize(
    "front",
    [
        "title:\tMSE\ndate: 2026-02-30\n",  # a tab after the colon (an editor's Tab key)
        "title: MSE\t# 注释\ndate: 2026-02-30\n",  # a tab before a comment
        "tags: [a,\tb]\ndate: 2026-02-30\n",  # a tab inside a flow list
    ],
)
def test_front_matter_libyaml_accepts_with_an_impossible_date_is_named_by_file_and_line(mini_project, front):
    """Attack on the libyaml front matter (sources.FAST_LOADER): libyaml, as MkDocs reads front matter,
    accepts tabs that PyYAML's pure-Python scanner refuses. With an impossible date beside such a
    tab, the line of the bad value was looked up with the pure-Python loader, whose ScannerError
    crashed the model (kb check and the live check: a traceback, no file:line). Both the page and a
    claim-review file must name the file and the date's line."""
    from kb.model import KnowledgeBase
    from kb.project import Project

    page = mini_project / "docs" / MSE_PAGE
    text = page.read_text(encoding="utf-8")
    body = text.split("\n---\n", 1)[1]
    page.write_text(f"---\n{front}---\n{body}", encoding="utf-8")
    reviews = mini_project / "claim-reviews"
    reviews.mkdir(exist_ok=True)
    (reviews / "some-claim.yml").write_text(
        "claim: some-claim\nreviews:\n- date:\t2026-13-05\n  commit: abc\n", encoding="utf-8"
    )
    kb = KnowledgeBase.load(Project.find(mini_project))
    said = [str(e) for e in kb.errors]
    date_line = 1 + front.split("\n").index("date: 2026-02-30") + 1  # the opening --- is line 1
    assert any(s.startswith(f"docs/{MSE_PAGE}:{date_line}:") and "2026-02-30" in s for s in said), said
    assert any(s.startswith("claim-reviews/some-claim.yml:3:") and "2026-13-05" in s for s in said), said


SHARING_PAGE = """\
---
title: B
---

# B

!!! claim "MSE 的最优解是条件均值（另一页的说法）"
    id: b-shares-the-test
    status: verified
    test: snippets/foundations/mse.py::test_mse_minimiser_is_conditional_mean
    counterfactual: loss="l1" "若损失换成 L1"

    与 MSE 那一页同一个测试。
"""


def test_a_save_of_a_page_whose_claims_the_checked_pages_session_decides_restarts_that_check(mini_project, monkeypatch):
    """Attack (staleness through the handed model): page B has a claim decided by a test in the module
    page A's session runs, so A's session runs B's counterfactuals and A's verdict depends on B as
    saved (kb check A fails while B's counterfactual still passes). The check handed its session the
    model read at its start: a save of B while A was checked left A's verdict of B's content before,
    and a save of B never checked A again. A check now covers the pages decided in the same session:
    a save of B stops A's check and checks both, and a check started by B's save gives A its verdict."""
    from kb.live import read_status

    b = mini_project / "docs" / "foundations" / "b.md"
    b.write_text(SHARING_PAGE, encoding="utf-8")
    checker, gate, ready = held_checks(mini_project, monkeypatch)
    page = mini_project / "docs" / MSE_PAGE
    page.write_text(page.read_text(encoding="utf-8") + "\n第一次保存。\n", encoding="utf-8")
    checker.touched(str(page))
    ready(1)
    first = (gate / "ready-1").read_text(encoding="utf-8").split()
    assert "docs/foundations/b.md" in first, first  # A's check decides B's claim: B's page is checked too
    b.write_text(SHARING_PAGE.replace('loss="l1"', 'loss="mse"'), encoding="utf-8")
    checker.touched(str(b))
    ready(2)  # B's save stopped A's check (its verdict would be of B's content before) and checks both
    assert {f"docs/{MSE_PAGE}", "docs/foundations/b.md"} <= set((gate / "ready-2").read_text("utf-8").split())
    (gate / "go-all").write_text("", encoding="utf-8")
    for uri in (MSE_PAGE, "foundations/b.md"):
        assert wait_for_verdict(checker.status, uri, seconds=60)["passed"] is True
    assert not (gate / "ready-3").exists()
    status = read_status(checker.status)
    assert all("running" not in status[u] for u in (MSE_PAGE, "foundations/b.md")), status


def test_the_kept_import_names_never_answer_for_another_package_or_a_renamed_file(mini_project):
    """Attack on nbcache._imported_names (an lru_cache keyed by text and package): the same text in
    another package imports other modules, and a module renamed or deleted after its importer's
    text was read once is followed as it is on disk now (only names are kept, never files)."""
    from kb import nbcache
    from kb.project import Project

    project = Project.find(mini_project)
    pkg = mini_project / "snippets" / "foundations"
    (pkg / "helper_a.py").write_text("X = 1\n", encoding="utf-8")
    (mini_project / "snippets" / "other").mkdir()
    (mini_project / "snippets" / "other" / "__init__.py").write_text("", encoding="utf-8")
    (mini_project / "snippets" / "other" / "helper_a.py").write_text("Y = 2\n", encoding="utf-8")
    text = "from .helper_a import X\n"
    assert nbcache._imported_names(text, "snippets.foundations") != nbcache._imported_names(text, "snippets.other")
    importer = pkg / "uses_helper.py"
    importer.write_text(text, encoding="utf-8")
    cell = "import snippets.foundations.uses_helper\n"
    assert pkg / "helper_a.py" in nbcache.imports_of(project, [cell])
    (pkg / "helper_a.py").rename(pkg / "helper_b.py")  # same importer text: a kept answer would be stale
    assert pkg / "helper_a.py" not in nbcache.imports_of(project, [cell])
    importer.write_text(text.replace("helper_a", "helper_b"), encoding="utf-8")
    assert pkg / "helper_b.py" in nbcache.imports_of(project, [cell])
    other = mini_project / "snippets" / "other" / "uses_helper.py"
    other.write_text(text, encoding="utf-8")  # the first text again, in the other package
    assert mini_project / "snippets" / "other" / "helper_a.py" in nbcache.imports_of(
        project, ["import snippets.other.uses_helper\n"]
    )


def test_a_forked_session_collects_its_tests_garbage_and_runs_their_finalizers(mini_project):
    """Attack on gc.freeze in the forked session (warm.run_forked): only what the session inherits is
    frozen; a test's own reference cycles are collected and their weakref callbacks and finalizers
    run, as in ``kb check``'s new interpreter, and gc.get_objects() sees the test's objects."""
    from kb import warm
    from kb.project import Project

    module = mini_project / "snippets" / "foundations" / "gc_probe.py"
    module.write_text(
        "import gc\nimport weakref\n\n\n"
        "def test_cycles_are_collected_and_finalized():\n"
        "    class Node:\n        pass\n\n"
        "    fired = []\n    node = Node()\n    node.me = node\n"
        "    weakref.finalize(node, fired.append, 'finalized')\n"
        "    probe = weakref.ref(node, lambda _: fired.append('callback'))\n"
        "    assert any(o is node for o in gc.get_objects())\n"
        "    del node\n    gc.collect()\n"
        "    assert probe() is None and sorted(fired) == ['callback', 'finalized'], fired\n",
        encoding="utf-8",
    )
    said: list[str] = []
    args = ["-p", "no:cacheprovider", "-q", "-n", "0", "--rootdir", str(mini_project), str(module)]
    code, report, _ = warm.pytest_in_fork(Project.find(mini_project), args, out=said.append)
    assert code == 0 and report is not None, said
    assert report["outcomes"] == {"snippets/foundations/gc_probe.py::test_cycles_are_collected_and_finalized": "passed"}


@pytest.mark.parametrize(
    "front",
    [
        "title:\tMSE\n",  # libyaml accepts the tab PyYAML's pure-Python scanner refuses
        "title: MSE\t# 注释\n",
        "tags: [a,\tb]\n",
        "\ufefftitle: MSE\n",  # a BOM right after the opening ---: libyaml drops it, PyYAML keeps it in the key
        'title: "\\ud800"\n',  # a lone surrogate escape: PyYAML accepts it, libyaml refuses it
        "title: a\ufeffb\n",
        "title: 😀 𝔸\n",
    ],
)
def test_front_matter_is_read_as_mkdocs_reads_it_where_libyaml_and_pyyaml_differ(front):
    """Attack on sources.FAST_LOADER: on the inputs where libyaml and PyYAML's pure-Python loader
    disagree, kb reads front matter as MkDocs does (mkdocs.utils.meta uses libyaml where PyYAML has
    it): the same data, or a file:line refusal where MkDocs would silently drop the front matter."""
    import yaml
    from mkdocs.utils.meta import get_data

    from kb import sources
    from kb.project import SourceError

    text = f"---\n{front}---\n\n# 标题\n"
    _, mkdocs_meta = get_data(text)
    try:
        meta = sources.read_document(text, "docs/x.md").meta
    except SourceError as e:
        assert str(e).startswith("docs/x.md:") and mkdocs_meta == {}, (e, mkdocs_meta)
        return
    assert meta == mkdocs_meta == yaml.load(front, Loader=yaml.CSafeLoader)
