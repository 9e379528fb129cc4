"""``kb serve``: ``mkdocs serve``, plus a live check of each page you save.

When a page, or a snippet file a page includes, is saved, ``kb check`` runs for
the pages concerned (in a separate process, one check at a time, the latest
save winning) and writes its result to ``.kb/status.json``. While serving, the
MkDocs plugin puts a small status line on each page that reads that file: when
the page's checks last ran and whether they passed, naming a failing claim.
``make build`` has no such line.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from kb.live import (  # noqa: F401
    BUILD_KEY,
    STATUS_ENV,
    read_status,
    record_build_problems,
    record_refusal,
    status_file,
    update_status,
)
from kb.project import Project


class Checker:
    """Re-checks the pages touched by saved files, one check at a time (a newer save restarts it)."""

    def __init__(self, project: Project, debounce: float = 0.4):
        self.project, self.debounce = project, debounce
        self.pending: set[Path] = set()
        self.lock = threading.Condition()
        self.status = status_file(project)
        # snippet file -> the docs pages that include or cite it, from the last model loaded: a save
        # marks those pages "checking" at once, before the model is loaded again.
        self.citing: dict[str, list[str]] = {}
        self.seen: dict[Path, str | None] = {}  # each saved file's content when last seen
        threading.Thread(target=self._loop, name="kb-check", daemon=True).start()

    def touched(self, path: str) -> None:
        p = Path(path)
        if (
            p.suffix not in (".md", ".py", ".ipynb")
            or any(part.startswith(".") for part in p.parts[-3:])
            or "__pycache__" in p.parts
        ):
            return
        # An editor's save is several events (truncate, write, rename...): only a change of content counts,
        # or a late event would restart the check it already started.
        try:
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
        except OSError:
            digest = None  # gone or unreadable: the check says so
        if digest is not None and self.seen.get(p) == digest:
            return
        self.seen[p] = digest
        with self.lock:
            self.pending.add(p)
            self.lock.notify()
        try:  # within a second of the save, the page says it is being checked
            self._mark_running(self._pages_of(p))
        except (OSError, ValueError):
            pass

    def _pages_of(self, p: Path) -> list[str]:
        """The docs pages a saved file concerns, as far as known without reading the project again."""
        if p.suffix == ".md":
            docs = self.project.docs_dir
            q = p.resolve()
            return [q.relative_to(docs).as_posix()] if q.is_relative_to(docs) else []
        if p.suffix == ".py":
            try:
                return self.citing.get(self.project.rel(p), [])
            except ValueError:
                return []
        return []

    def _targets(self, paths: set[Path]) -> list[str]:
        from kb.model import KnowledgeBase

        kb = KnowledgeBase.load(self.project)
        self.citing = {rel: [pg.src_uri for pg in pages if not pg.is_post] for rel, pages in kb.pages_citing.items()}
        targets = []
        for p in paths:
            if not p.exists():
                continue
            rel = self.project.rel(p)
            if p.suffix == ".py" and rel in kb.pages_citing:
                targets.append(rel)
            elif p.suffix in (".md", ".ipynb") and self.project.inside(p, self.project.docs_dir):
                targets.append(rel)
        return targets

    def _mark_running(self, pages: list[str]) -> None:
        def change(data: dict) -> None:
            for uri in pages:
                entry = data.get(uri)
                # a new check: no verdict until it has one (only when the last one ran)
                data[uri] = {
                    "running": True,
                    **(
                        {"ran_at": entry["ran_at"]}
                        if isinstance(entry, dict) and isinstance(entry.get("ran_at"), str)
                        else {}
                    ),
                }

        update_status(self.status, change)

    def _unmark(self, pages: list[str]) -> None:
        """Pages marked "checking" that have nothing to check after all: back to what they said before."""

        def change(data: dict) -> None:
            for uri in pages:
                entry = data.get(uri)
                if isinstance(entry, dict) and entry.get("running") and "passed" not in entry:
                    data.pop(uri)

        if pages:
            update_status(self.status, change)

    def _loop(self) -> None:
        try:
            self._targets(set())  # learn which pages include which snippet files
        except Exception:  # noqa: BLE001 - the first save tries again
            pass
        while True:
            try:
                self._once()
            except Exception as e:  # noqa: BLE001 - nothing a file holds may stop the live checks for good
                print(
                    f"kb serve: the live check failed ({type(e).__name__}: {e}); it runs again on the next save",
                    file=sys.stderr,
                )

    def _once(self) -> None:
        with self.lock:
            while not self.pending:
                self.lock.wait()
        time.sleep(self.debounce)  # an editor writes a file in several steps
        with self.lock:
            paths, self.pending = self.pending, set()
        for attempt in range(3):
            try:
                targets = self._targets(paths)
                break
            except Exception as e:  # noqa: BLE001 - a broken page must not stop the loop
                # CPython 3.11's ast can fail when the MkDocs build parses Python in its thread at the
                # same moment ("AST constructor recursion depth mismatch"): read again a little later.
                problem = f"cannot read the project ({type(e).__name__}: {e})"
                time.sleep(0.5 * (attempt + 1))
        else:
            print(f"kb serve: {problem}", file=sys.stderr)
            # the pages marked "checking" at the save say why instead, never "checking" for good
            marked = sorted({uri for p in paths for uri in self._pages_of(p)})
            if marked:
                record_refusal(self.status, marked, problem)
            return
        if not targets:
            self._unmark([uri for p in paths for uri in self._pages_of(p)])
            return
        docs = self.project.docs_dir
        uris = [
            (self.project.root / t).resolve().relative_to(docs).as_posix()
            for t in targets
            if (self.project.root / t).resolve().is_relative_to(docs)
        ]
        try:
            self._mark_running(uris)
        except (OSError, ValueError):
            pass
        print(f"kb serve: checking {', '.join(targets)}", file=sys.stderr)
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "kb.cli", "check", "--status-file", str(self.status), *targets],
                cwd=self.project.root,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env={**os.environ, STATUS_ENV: ""},
            )
            while proc.poll() is None:  # a newer save wins: stop this check and check again with it
                time.sleep(0.2)
                with self.lock:
                    if self.pending:
                        proc.kill()
                        proc.wait()
                        self.pending |= paths
                        return
            err.seek(0)
            said = err.read().decode("utf-8", "replace")
        self._finished(proc.returncode, uris, said)

    def _finished(self, code: int, uris: list[str], stderr: str) -> None:
        """kb check writes its result (exit 0 or 1); any other end leaves the pages saying why."""
        sys.stderr.write(stderr)
        if code in (0, 1):
            return
        lines = [line for line in stderr.splitlines() if line.strip()]
        problem = lines[-1].removeprefix("kb check: error: ") if lines else f"kb check exited with status {code}"
        record_refusal(self.status, uris, problem)


def serve(project: Project, dev_addr: str) -> int:
    from mkdocs.commands.serve import serve as mkdocs_serve
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer

    checker = Checker(project)

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event):
            if event.event_type in ("modified", "created", "moved") and not event.is_directory:
                checker.touched(getattr(event, "dest_path", "") or event.src_path)

    observer = Observer()
    for folder in (project.docs_dir, project.snippets_dir):
        observer.schedule(Handler(), str(folder), recursive=True)
    observer.start()
    os.environ[STATUS_ENV] = str(checker.status)
    from kb import review_server

    review_server.open_session(project, dev_addr)  # the 复习 page becomes a live session (loopback only)
    try:
        # Not strict while editing: a page with a mistake still renders, and its status line names the mistake.
        # Dirty rebuilds: only the saved page and what it shows up in (see the plugin), so that a
        # save shows within seconds even with years of notes.
        mkdocs_serve(
            config_file=str(project.config_file),
            dev_addr=dev_addr,
            livereload=True,
            build_type="dirty",
            watch=[str(project.snippets_dir)],
            strict=False,
        )
    finally:
        observer.stop()
    return 0
