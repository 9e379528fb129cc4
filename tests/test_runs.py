"""A run that ends early, is narrowed, or whose assertions were tampered with is never read as green."""

from __future__ import annotations

import pytest
from conftest import edit, testrun_forked, testrun_here

MSE = "snippets/foundations/mse.py"
PAGE = "docs/foundations/mse-conditional-mean.md"


def test_a_test_that_exits_the_process_fails_make_test_and_kb_check(mini_project, kb_here):
    r = testrun_forked(mini_project, "--allow-partial", MSE)  # the same run without the exit: green
    assert r.returncode == 0, r.stdout + r.stderr
    edit(
        mini_project / MSE,
        "def test_mse_decomposes_into_variance_plus_squared_bias(",
        "def test_exits():\n    import os\n    os._exit(0)\n\n\ndef test_mse_decomposes_into_variance_plus_squared_bias(",
    )
    # --allow-partial: a run given a path is refused for that alone; here only the exit may fail it
    r = testrun_forked(mini_project, "--allow-partial", MSE)  # its session is a process of its own, forked
    assert r.returncode != 0, r.stdout + r.stderr
    assert "did not reach its end while running snippets/foundations/mse.py::test_exits" in r.stderr, r.stderr
    r = kb_here(mini_project, "check", PAGE)  # its session is a process of its own: forked from this one
    assert r.returncode != 0, r.stdout + r.stderr
    assert "did not reach its end while running snippets/foundations/mse.py::test_exits" in r.stdout, r.stdout


@pytest.mark.parametrize("how", ["os._exit(0)", "sys.exit(0)"])
def test_a_module_that_exits_at_import_fails_the_run(mini_project, how):
    """os._exit at import ends the process while collecting (no report: only kb.testrun can fail the
    run, and there is no test to name); sys.exit raises SystemExit, which pytest itself reports as an
    internal error (exit 3) and the session still writes its report: failed by pytest, not by kb.
    The same run without the exit is green."""
    r = testrun_forked(mini_project, "--allow-partial", MSE)
    assert r.returncode == 0, r.stdout + r.stderr
    edit(mini_project / MSE, "import math\n", f"import math\nimport os\nimport sys\n{how}\n")
    r = testrun_forked(mini_project, "--allow-partial", MSE)  # a path alone would fail the run
    assert r.returncode != 0, r.stdout + r.stderr
    if how == "os._exit(0)":
        assert "kb.testrun: the test session did not reach its end (exit code 0)" in r.stderr, r.stdout + r.stderr
    else:
        assert "INTERNALERROR" in r.stdout and "SystemExit: 0" in r.stdout, r.stdout[-2000:] + r.stderr
        assert "did not reach its end" not in r.stderr, r.stderr


def test_a_module_replacing_assert_close_fails_the_run_naming_it(mini_project, in_process):
    # Under xdist every worker imports every module while collecting: a replaced
    # assert_close would make a broken claim pass in another module.
    r = testrun_here(in_process, mini_project, "--allow-partial", "snippets/foundations/")
    assert r.returncode == 0, r.stdout + r.stderr  # the same run without the module: green
    (mini_project / "snippets" / "foundations" / "sneaky.py").write_text(
        "import torch\n\ntorch.testing.assert_close = lambda *a, **k: None\n\n\n"
        "def test_nothing():\n    assert 1 + 1 == 2\n",
        encoding="utf-8",
    )
    r = testrun_here(in_process, mini_project, "--allow-partial", "snippets/foundations/")  # a path alone fails a run
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "snippets/foundations/sneaky.py: importing this module replaced torch.testing.assert_close" in out, out


def test_a_narrowed_run_says_which_claims_it_left_undecided_and_make_test_refuses_it(mini_project, in_process):
    r = testrun_here(in_process, mini_project, "-k", "not l1", "snippets/", "docs/")
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "l1-predicts-conditional-mean" in out and "not decided by this run" in out, out
    # the kb plugin switched off. Not loaded (`-o addopts=`), its --kb-report is unknown: pytest refuses
    # the run before anything is collected (exit 4), whatever kb.testrun makes of it.
    r = testrun_here(in_process, mini_project, "snippets/", "docs/", "-o", "addopts=")
    assert r.returncode == 4 and "unrecognized arguments: --kb-report" in r.stderr, r.stdout + r.stderr
    # Loaded but its session object blocked (`-p no:kb-session`): pytest takes --kb-report, runs the tests
    # (outside any sandbox, no claim decided) and exits 0; only the missing report fails the run. Forked:
    # the page blocks run in that process, not in this one. --allow-partial: nothing else may fail it.
    r = testrun_forked(mini_project, "--allow-partial", "snippets/foundations/", "-p", "no:kb-session")
    assert r.returncode != 0, r.stdout + r.stderr
    assert "kb.testrun: the test session did not reach its end (exit code 0)" in r.stderr, r.stdout + r.stderr
    r = testrun_here(in_process, mini_project, "--allow-partial", "-k", "not l1", MSE)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_snippet_that_does_not_parse_fails_kb_check_naming_its_claims_undecided(mini_project, kb_here):
    edit(mini_project / MSE, "import math\n", "import math\ndef broken(:\n")
    r = kb_here(mini_project, "check", PAGE)
    assert r.returncode != 0, r.stdout + r.stderr
    assert "mse.py" in r.stdout and "not valid Python" in r.stdout, r.stdout
    assert "undecided" in r.stdout and "mse-predicts-conditional-mean" in r.stdout, r.stdout


def test_a_test_that_asserts_nothing_fails_kb_check(mini_project, kb_here):
    edit(
        mini_project / MSE,
        "def test_mse_decomposes_into_variance_plus_squared_bias(",
        "def test_empty():\n    x = 1 + 1\n\n\ndef test_mse_decomposes_into_variance_plus_squared_bias(",
    )
    r = kb_here(mini_project, "check", PAGE)
    assert r.returncode != 0, r.stdout + r.stderr
    assert "test_empty asserts nothing" in r.stdout, r.stdout


def test_a_run_inside_this_process_leaves_the_time_limit_of_the_test_that_started_it(mini_project, in_process):
    # pytest-timeout times a test with SIGALRM; the inner run's tests set and cancel their own alarms.
    import signal

    before = signal.getitimer(signal.ITIMER_REAL)[0]
    assert before > 0, "this test has no time limit (pytest-timeout with the signal method)"
    r = in_process(mini_project, MSE, "-k", "decomposes", "--kb-claims=off")
    assert r.returncode == 0, r.stdout
    after = signal.getitimer(signal.ITIMER_REAL)[0]
    assert 0 < after <= before, (before, after)


THREADS_TEST = "import torch\n\n\ndef test_one_thread():\n    assert torch.get_num_threads() == 1\n"


def test_tests_run_on_one_thread_whatever_the_shell_exported(mini_project):
    """Found by a second reader: the plugin only defaulted OMP_NUM_THREADS, so an exported
    OMP_NUM_THREADS=2 put the tests on two threads (a verdict must not depend on the machine)."""
    import sys

    from conftest import run

    (mini_project / "snippets" / "foundations" / "threads.py").write_text(THREADS_TEST, encoding="utf-8")
    r = run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "0", "snippets/foundations/threads.py"],
        mini_project,
        OMP_NUM_THREADS="2",
        MKL_NUM_THREADS="2",
    )
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout[-2000:]


def test_tests_run_on_one_thread_in_a_process_that_imported_torch_first(mini_project, in_process):
    """A warm or forked process (kb serve's live checks, a test's in-process run) imported torch
    before the plugin set the environment: the plugin sets the thread count itself."""
    import torch

    (mini_project / "snippets" / "foundations" / "threads.py").write_text(THREADS_TEST, encoding="utf-8")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        r = in_process(mini_project, "snippets/foundations/threads.py")
    finally:
        torch.set_num_threads(before)
    assert r.returncode == 0, r.stdout[-2000:]


def test_a_conftest_that_turns_the_exit_code_to_0_after_the_report_fails_the_run(mini_project, in_process):
    """A hook that runs after the kb plugin wrote its report (a conftest's trylast sessionfinish) can set
    the session's exit status to 0: pytest exits 0 with a failing test. kb.testrun compares pytest's
    code with the one the report recorded. Found by a second reader: no test gave such a hook, so
    removing that comparison (kb.testrun.verdict) left the suite green."""
    folder = mini_project / "snippets" / "foundations"
    (folder / "conftest.py").write_text(
        "import pytest\n\n\n@pytest.hookimpl(trylast=True)\ndef pytest_sessionfinish(session, exitstatus):\n"
        "    session.exitstatus = 0\n",
        encoding="utf-8",
    )
    (folder / "wrong.py").write_text("def test_wrong():\n    assert 1 + 1 == 3\n", encoding="utf-8")
    r = in_process(mini_project, "snippets/foundations/wrong.py")
    assert r.returncode == 0 and "1 failed" in r.stdout, "pytest alone does not read green: this proves nothing"
    r = testrun_here(in_process, mini_project, "--allow-partial", "snippets/foundations/wrong.py")
    assert r.returncode != 0, r.stdout[-2000:] + r.stderr
    assert "kb.testrun: pytest exited 0 but its session ended with 1" in r.stderr, r.stderr
