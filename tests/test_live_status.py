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
