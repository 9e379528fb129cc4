"""A hostile reader's attacks on two promises: many `kb check` runs at once on one project, and review
files (``claim-reviews/<id>.yml``) holding odd bytes.

Covered elsewhere (not repeated here): the status file's lock between the threads of one process and
a damaged status file (tests/test_live_status.py), twenty notes added at once (tests/test_journal.py::
test_twenty_concurrent_notes_are_all_kept), a review file that is not YAML or not the right shape
(tests/test_claim_reviews.py::test_a_damaged_review_file_is_one_problem_naming_its_line).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kb import claim_reviews
from kb.project import Project

RUNS = 20  # the promise: twenty runs at once
JOURNAL_PAGE = "docs/journal/posts/2026-01-01.md"  # a page whose check is quick (no tests, no notebook)


def kb_check_process(root: Path, status: Path, **env: str) -> subprocess.Popen:
    """`kb check JOURNAL_PAGE --status-file STATUS` in ``root``, started, its output piped."""
    env = {**os.environ, "PYTHONPATH": str(root), "NO_MKDOCS_2_WARNING": "1", **env}
    env.pop("PYTEST_XDIST_WORKER", None)
    return subprocess.Popen(
        [sys.executable, "-m", "kb.cli", "check", JOURNAL_PAGE, "--status-file", str(status)],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_twenty_kb_checks_started_together_each_exit_0_and_leave_the_status_file_whole(mini_project):
    """Twenty `kb check <page> --status-file .kb/status.json` processes started together: each exits 0
    with its own verdict, and the status file (read, changed and renamed under a lock by each) is
    valid JSON holding the page. A torn write shows as a JSON error; a crash in one run as its exit
    code. (A lost lock does not show here: every run writes the same entry, each by an atomic rename,
    so the file is whole either way; removing the lock left this test green. The lock is held to its
    promise by the next test.)"""
    status = mini_project / ".kb" / "status.json"
    procs = [kb_check_process(mini_project, status) for _ in range(RUNS)]
    outs = [(p.communicate(timeout=300)[0], p.returncode) for p in procs]
    for out, code in outs:
        assert code == 0, out
        assert "Traceback" not in out, out
        assert out.strip().splitlines()[-1].startswith("passed: 1 page(s)"), out
    data = json.loads(status.read_text(encoding="utf-8"))
    entry = data["journal/posts/2026-01-01.md"]
    assert entry["passed"] is True and entry["problems"] == [] and entry["failures"] == []
    assert not list(status.parent.glob(".status.*.tmp")), "a run left its temporary status file behind"


def test_a_kb_check_process_waits_for_the_status_files_lock_before_writing(mini_project):
    """The lock the twenty runs above rely on: while another process holds the status file's lock, a
    `kb check --status-file` that has reached its verdict waits, writing nothing; released, it writes
    its entry and exits 0. Found by a second reader: removing the lock (kb.live.locked) left every
    test green. Without it the file is written within milliseconds of the verdict; 3 s is the wait."""
    import fcntl
    import time

    status = mini_project / ".kb" / "status.json"
    status.parent.mkdir(parents=True, exist_ok=True)
    with open(status.with_name(status.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = kb_check_process(mini_project, status, PYTHONUNBUFFERED="1")
        said = []
        try:
            for line in proc.stdout:  # until its verdict: what follows is the write of the status file
                said.append(line)
                if line.startswith(("passed:", "FAILED:")):
                    break
            assert said and said[-1].startswith("passed: 1 page(s)"), "".join(said)
            time.sleep(3)
            assert proc.poll() is None and not status.exists(), "kb check wrote the status file under another's lock"
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    out = said + [proc.communicate(timeout=60)[0]]
    assert proc.returncode == 0, "".join(out)
    assert json.loads(status.read_text(encoding="utf-8"))["journal/posts/2026-01-01.md"]["passed"] is True


GOOD = """\
claim: some-claim
reviews:
- date: 2026-12-07
  commit: 887cd99
  reviewer: second reader
  fingerprint: 87d2a8c86d7329be
  sources:
  - docs/a.md
  found: 'FOUND'
  resolution: none
"""


def load_one(tmp_path: Path, data: bytes) -> claim_reviews.Readings:
    (tmp_path / "mkdocs.yml").write_text("site_name: t\n", encoding="utf-8")
    folder = tmp_path / claim_reviews.FOLDER
    folder.mkdir()
    (folder / "some-claim.yml").write_bytes(data)
    return claim_reviews.load(Project.find(tmp_path))


READ = {
    "bom": b"\xef\xbb\xbf" + GOOD.encode(),
    "crlf": GOOD.replace("\n", "\r\n").encode(),
    "non-BMP character": GOOD.replace("FOUND", "\U0001f600 \U0001d53c[Y|X]").encode(),
    "tab in a value": GOOD.replace("FOUND", "a\tb").encode(),
    "100k-char line": GOOD.replace("FOUND", "x" * 100_000).encode(),
    "NEL and LINE SEPARATOR": GOOD.replace("FOUND", "a\u0085b\u2028c").encode(),
}


@pytest.mark.parametrize("data", READ.values(), ids=READ.keys())
def test_a_review_file_with_odd_but_valid_bytes_is_read(tmp_path, data):
    r = load_one(tmp_path, data)
    assert r.errors == []
    [review] = r.by_claim["some-claim"]
    assert review.commit == "887cd99" and review.where == "claim-reviews/some-claim.yml:3"


REFUSED = {
    # what the file holds -> the line the problem is named at
    "NUL byte": (GOOD.encode().replace(b"FOUND", b"a\x00b"), 9, "U+0000"),
    "NUL byte after Chinese text": (
        GOOD.replace("reviewer: second reader", "reviewer: 第二位读者，中文").encode().replace(b"FOUND", b"\x00"),
        9,
        "U+0000",
    ),
    "escaped lone surrogate": (GOOD.replace("'FOUND'", '"a\\ud800b"').encode(), 9, "invalid Unicode"),
    "escaped lone surrogate in the claim id": (
        GOOD.replace("claim: some-claim", 'claim: "some\\ud800"').encode(),
        1,
        "invalid Unicode",
    ),
    "encoded lone surrogate (not UTF-8)": (GOOD.encode().replace(b"FOUND", b"\xed\xa0\x80"), 9, "not valid UTF-8"),
    "tab as indentation": (GOOD.replace("  commit:", "\tcommit:").encode(), 4, "tab"),
    "100k-char key": (GOOD.replace("  found: 'FOUND'", "  " + "k" * 100_000 + ": 1\n  found: x").encode(), 9, ""),
}


@pytest.mark.parametrize(("data", "line", "says"), REFUSED.values(), ids=REFUSED.keys())
def test_a_review_file_with_bytes_yaml_refuses_is_one_problem_naming_file_and_line(tmp_path, data, line, says):
    r = load_one(tmp_path, data)
    assert "some-claim" not in r.by_claim
    [error] = r.errors
    assert (error.path, error.line) == ("claim-reviews/some-claim.yml", line), error
    assert says in str(error)


def test_kb_claims_names_a_nul_byte_in_a_review_file_by_file_and_line_without_a_traceback(mini_project):
    """The same, through the command a learner runs: exit 2, one line naming file:line."""
    folder = mini_project / claim_reviews.FOLDER
    folder.mkdir(exist_ok=True)
    (folder / "mse-predicts-conditional-mean.yml").write_bytes(
        GOOD.replace("some-claim", "mse-predicts-conditional-mean").encode().replace(b"FOUND", b"a\x00b")
    )
    env = {**os.environ, "PYTHONPATH": str(mini_project)}
    r = subprocess.run(
        [sys.executable, "-m", "kb.cli", "claims"], cwd=mini_project, env=env, capture_output=True, text=True
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "claim-reviews/mse-predicts-conditional-mean.yml:9: not valid YAML" in r.stderr, r.stderr
