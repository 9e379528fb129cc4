"""Run pytest and accept its verdict only if the session reached its end and decided every claim.

``make test`` runs ``python -m kb.testrun [pytest args]``. pytest alone can be made to exit 0
with nothing checked: a snippet or test that calls ``os._exit(0)`` ends the process before
any summary, and a run narrowed by ``-k``, ``--deselect``, ``PYTEST_ADDOPTS`` or with the kb
plugin switched off leaves claims undecided or page blocks unrun. The kb pytest plugin writes a
report at the end of the session (``--kb-report``); here a missing report is a failure naming
the test that was running, and a full run (no paths, -k, -m, --deselect, --ignore, -x, --lf, -o,
-c, PYTEST_ADDOPTS, PYTEST_PLUGINS or --kb-claims=off) is required unless ``--allow-partial`` is given.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path


class LoadedModel:
    """A pytest plugin object that hands the kb plugin a ``KnowledgeBase`` its caller has just loaded
    from the same files: a session forked from that caller (``kb serve``'s live check,
    ``kb.warm.pytest_in_fork``) then decides its claims from the model the check planned with,
    instead of reading every page again. Only for a fork: a new interpreter cannot be handed one."""

    NAME = "kb-loaded-model"

    def __init__(self, kb) -> None:
        self.kb = kb
        self.__name__ = self.NAME  # the name pluggy registers it under (``get_plugin(NAME)``)


def read_report(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("finished") is True else None


def verdict(code: int, report: dict | None, running: str | None, allow_partial: bool) -> tuple[int, list[str]]:
    """The exit code to give and what to say, from pytest's code and the session's report."""
    if report is None:
        what = f" while running {running}" if running else ""
        return (code or 1), [
            f"kb.testrun: the test session did not reach its end{what} (exit code {code}): "
            "a test or module exited the process (os._exit, sys.exit at import), it was "
            "killed, or the kb pytest plugin was not active; nothing it ran counts"
        ]
    said = []
    if report.get("exitstatus") != code:
        said.append(f"kb.testrun: pytest exited {code} but its session ended with {report.get('exitstatus')}")
        code = code or 1
    how = report.get("narrowed") or []
    if how and not allow_partial:
        said.append(
            "kb.testrun: this run was narrowed (" + "; ".join(how) + "): what it left out was not run, "
            "so its result is not the suite's; `make test` runs everything (--allow-partial accepts a "
            "narrowed run)"
        )
        code = code or 1
    undecided = report.get("undecided") or []
    if undecided and not allow_partial:
        said.append(
            f"kb.testrun: {len(undecided)} claim(s) were not decided by this run (it was narrowed): "
            + ", ".join(undecided[:10])
            + (" ..." if len(undecided) > 10 else "")
            + "; a full run decides every claim (--allow-partial accepts a narrowed one)"
        )
        code = code or 1
    return code, said


def pytest_in_a_child(args: list[str]) -> int:
    """pytest in its own process (what ``make test`` runs): its exit code."""
    return subprocess.call([sys.executable, "-m", "pytest", *args], env={**os.environ})


def main(argv: list[str] | None = None, run_pytest: Callable[[list[str]], int] = pytest_in_a_child) -> int:
    """``run_pytest(args)`` runs pytest with these arguments and gives its exit code (the tests run it
    inside their process where the process's end is not what they check)."""
    args = list(sys.argv[1:] if argv is None else argv)
    allow_partial = "--allow-partial" in args
    args = [a for a in args if a != "--allow-partial"]
    with tempfile.TemporaryDirectory(prefix="kb-testrun-") as tmp:
        report_path = Path(tmp) / "report.json"
        code = run_pytest([*args, "--kb-report", str(report_path)])
        running = report_path.with_suffix(".running")
        last = running.read_text(encoding="utf-8") if running.exists() else None
        code, said = verdict(code, read_report(report_path), last, allow_partial)
    for line in said:
        print(line, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
