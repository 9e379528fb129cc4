"""The live status file of ``kb serve``: what the checker found for each page, and the build's problems.

``kb serve`` sets ``STATUS_ENV`` to the file's path; only then does the MkDocs plugin put a status line
on each page (reading the file, copied beside the pages as ``LIVE_FILE``). The checker thread and the
build (in ``kb serve``'s process) and each check (in its own process) write the file, one change at a
time (a lock file beside it).

A live check marks its pages "checking" with its own id; a newer save of one of them marks it again
without that id, and the check's verdict, of the content saved before, is then not written to it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from kb.project import Project

# Set by `kb serve` to the live status file: only then does a page get its status line.
STATUS_ENV = "KB_LIVE_STATUS"
LIVE_FILE = "kb-status.json"  # where the built site serves it


def status_file(project: Project) -> Path:
    return project.root / ".kb" / "status.json"


BUILD_KEY = "_build"  # the build's problems, [{"page": docs uri or None, "problem": "file:line: ..."}]
_STATUS_LOCK = threading.Lock()  # the checker thread and the MkDocs build share the file


@contextlib.contextmanager
def locked(path: Path):
    """Held while the status file is read, changed and written: by this process's threads, and by the
    check processes (a lost update would drop a newer save's "checking" mark, or a verdict)."""
    with _STATUS_LOCK:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
            yield


def read_status(path: Path) -> dict:
    """The live status file as a mapping; damaged or not a mapping (someone else wrote it): empty."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def update_status(path: Path, change) -> None:
    """Change the live status file (a mapping) in place: read, change, write a temporary file, rename."""
    with locked(path):
        data = read_status(path)
        change(data)
        fd, tmp = tempfile.mkstemp(prefix=".status.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, ensure_ascii=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def record_build_problems(path: Path, problems: list[dict]) -> None:
    """What the last build could not read or accept, for every page's status line (cleared once fixed)."""

    def change(data: dict) -> None:
        if problems:
            data[BUILD_KEY] = problems
        else:
            data.pop(BUILD_KEY, None)

    try:
        update_status(path, change)
    except OSError as e:
        print(f"kb serve: cannot write {path} ({e.strerror or e})", file=sys.stderr)


def marked_since(entry, check: str | None) -> bool:
    """Whether a page's entry is a "checking" mark of a save newer than the start of live check ``check``
    (which marked it with its id): that check's verdict, or refusal, is not for the page as saved now."""
    return (
        check is not None
        and isinstance(entry, dict)
        and bool(entry.get("running"))
        and "passed" not in entry
        and entry.get("check") != check
    )


def record_refusal(path: Path, pages: list[str], problem: str, check: str | None = None) -> None:
    """A check that ended without a result (kb check refused the page): the pages say why, not "running".
    ``check``: the live check that refuses (pages a newer save has marked since go on saying "checking")."""
    when = time.strftime("%Y-%m-%d %H:%M:%S")

    def change(data: dict) -> None:
        for uri in pages:
            if marked_since(data.get(uri), check):
                continue
            data[uri] = {
                "passed": False,
                "ran_at": when,
                "seconds": 0,
                "failing_claims": [],
                "failed_tests": [],
                "problems": [problem],
            }

    update_status(path, change)


def mark_running(path: Path, pages: list[str], check: str | None = None) -> None:
    """The pages say "checking": no verdict until the new check has one (when the last one ran stays).
    ``check``: the id of the live check that marks them (None: a save marks them)."""

    def change(data: dict) -> None:
        for uri in pages:
            entry = data.get(uri)
            ran = entry.get("ran_at") if isinstance(entry, dict) else None
            data[uri] = {
                "running": True,
                **({"ran_at": ran} if isinstance(ran, str) else {}),
                **({"check": check} if check else {}),
            }

    update_status(path, change)


def unmark(path: Path, pages: list[str], check: str | None = None) -> None:
    """Pages marked "checking" that have nothing to check after all: back to what they said before.
    ``check``: only the pages live check ``check`` marked (not those a newer save has marked since)."""

    def change(data: dict) -> None:
        for uri in pages:
            entry = data.get(uri)
            if isinstance(entry, dict) and entry.get("running") and "passed" not in entry:
                if not marked_since(entry, check):
                    data.pop(uri)

    if pages:
        update_status(path, change)
