"""The live status file of ``kb serve``: what the checker found for each page, and the build's problems.

``kb serve`` sets ``STATUS_ENV`` to the file's path; only then does the MkDocs plugin put a status line
on each page (reading the file, copied beside the pages as ``LIVE_FILE``). The checker thread and the
build both write the file, one change at a time.
"""

from __future__ import annotations

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


def read_status(path: Path) -> dict:
    """The live status file as a mapping; damaged or not a mapping (someone else wrote it): empty."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def update_status(path: Path, change) -> None:
    """Change the live status file (a mapping) in place: read, change, write a temporary file, rename."""
    with _STATUS_LOCK:
        data = read_status(path)
        change(data)
        path.parent.mkdir(parents=True, exist_ok=True)
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


def record_refusal(path: Path, pages: list[str], problem: str) -> None:
    """A check that ended without a result (kb check refused the page): the pages say why, not "running"."""
    when = time.strftime("%Y-%m-%d %H:%M:%S")

    def change(data: dict) -> None:
        for uri in pages:
            data[uri] = {
                "passed": False,
                "ran_at": when,
                "seconds": 0,
                "failing_claims": [],
                "failed_tests": [],
                "problems": [problem],
            }

    update_status(path, change)


def mark_running(path: Path, pages: list[str]) -> None:
    """The pages say "checking": no verdict until the new check has one (when the last one ran stays)."""

    def change(data: dict) -> None:
        for uri in pages:
            entry = data.get(uri)
            ran = entry.get("ran_at") if isinstance(entry, dict) else None
            data[uri] = {"running": True, **({"ran_at": ran} if isinstance(ran, str) else {})}

    update_status(path, change)


def unmark(path: Path, pages: list[str]) -> None:
    """Pages marked "checking" that have nothing to check after all: back to what they said before."""

    def change(data: dict) -> None:
        for uri in pages:
            entry = data.get(uri)
            if isinstance(entry, dict) and entry.get("running") and "passed" not in entry:
                data.pop(uri)

    if pages:
        update_status(path, change)
