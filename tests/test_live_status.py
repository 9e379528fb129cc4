"""kb serve's status file: a check of several pages at once (a snippet file two pages include, saves
in a row) gives each page its own verdict, not the other page's failing claim."""

from __future__ import annotations

import json

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


def test_a_page_marked_checking_says_why_when_the_project_cannot_be_read(mini_project):
    """Found by `make bench`: the model load failed in the checker thread (CPython 3.11's ast, parsing
    while the build parsed in another thread) and the saved page said "checking" for good."""
    import time

    from kb.live import read_status
    from kb.project import Project
    from kb.serve import Checker

    checker = Checker(Project.find(mini_project), debounce=0.05)

    def unreadable(paths):
        raise SystemError("AST constructor recursion depth mismatch (before=39, after=53)")

    checker._targets = unreadable
    page = mini_project / "docs" / "foundations" / "mse-conditional-mean.md"
    page.write_text(page.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    checker.touched(str(page))
    assert read_status(checker.status)["foundations/mse-conditional-mean.md"] == {"running": True}
    for _ in range(100):  # three attempts, 0.5 + 1 + 1.5 s apart
        entry = read_status(checker.status)["foundations/mse-conditional-mean.md"]
        if not entry.get("running"):
            break
        time.sleep(0.1)
    assert entry["passed"] is False and "AST constructor recursion depth mismatch" in entry["problems"][0], entry
