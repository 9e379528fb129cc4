"""``kb serve``: ``mkdocs serve``, plus a live check of each page you save.

When a page, or a snippet file a page includes, is saved, ``kb check`` runs for
the pages concerned (in a process forked from a warm forkserver, ``kb.warm``; one
check at a time; a newer save of the same page wins) and writes its result to
``.kb/status.json``. While serving, the
MkDocs plugin puts a small status line on each page that reads that file: when
the page's checks last ran and whether they passed, naming a failing claim.
``make build`` has no such line.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from kb import warm
from kb.live import (  # noqa: F401
    BUILD_KEY,
    STATUS_ENV,
    mark_running,
    read_status,
    record_build_problems,
    record_refusal,
    status_file,
    update_status,
)
from kb.project import Project


class Checker:
    """Re-checks the pages touched by saved files, one check at a time, each in a process forked from
    a warm forkserver (``kb.warm``). A save of a page (or of a file it includes) that is being checked
    stops that check and starts it again with the new content; a save of another page waits its turn,
    so that one page's check never makes another wait for both."""

    def __init__(self, project: Project, debounce: float = 0.4):
        self.project, self.debounce = project, debounce
        self.pending: set[Path] = set()
        self.lock = threading.Condition()
        self.status = status_file(project)
        # snippet file -> the docs pages that include or cite it, as the last check found: a save
        # marks those pages "checking" at once, before the project is read again.
        self.citing: dict[str, list[str]] = {}
        self.seen: dict[Path, str | None] = {}  # each saved file's content when last seen
        self.ctx = warm.forkserver()
        self.stamp = warm.kb_code_stamp()
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
        with self.lock:  # marked and queued at once: a refusal (below) never lands between the two
            try:  # within a second of the save, the page says it is being checked
                mark_running(self.status, self._pages_of(p))
            except (OSError, ValueError):
                pass
            self.pending.add(p)
            self.lock.notify()

    def _pages_of(self, p: Path) -> list[str]:
        """The docs pages a saved file concerns, as far as known without reading the project again."""
        if p.suffix == ".md":
            docs = self.project.docs_dir
            q = p.resolve()
            return [q.relative_to(docs).as_posix()] if q.is_relative_to(docs) else []
        if p.suffix in (".py", ".ipynb"):  # the pages that include or cite it, or show the notebook
            try:
                return self.citing.get(self.project.rel(p), [])
            except ValueError:
                return []
        return []

    def _loop(self) -> None:
        try:  # the forkserver starts (and warms up) now, and learns which pages include what
            self._check(set())
        except Exception as e:  # noqa: BLE001 - the first save tries again
            print(f"kb serve: the live checks could not start ({type(e).__name__}: {e})", file=sys.stderr)
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
        try:
            self._check(paths)
        except Exception as e:  # noqa: BLE001 - the pages marked "checking" say why, never "checking" for good
            self._refuse(
                sorted({uri for p in paths for uri in self._pages_of(p)}),
                f"the live check could not run ({type(e).__name__}: {e})",
            )
            raise

    def _refuse(self, pages: list[str], problem: str) -> None:
        """Pages whose check ended without a verdict say why, except those saved again since: they
        say "checking" until their next check ends."""
        with self.lock:
            newer = {uri for p in self.pending for uri in self._pages_of(p)}
            if [u for u in pages if u not in newer]:
                record_refusal(self.status, [u for u in pages if u not in newer], problem)

    def _check(self, paths: set[Path]) -> None:
        marked = sorted({uri for p in paths for uri in self._pages_of(p)})
        if warm.kb_code_stamp() != self.stamp:  # kb itself changed since the forkserver imported it
            self.ctx, self.stamp = None, warm.kb_code_stamp()
            print("kb serve: kb's code changed; live checks now start cold (restart kb serve)", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="kb-live-") as tmp:
            info = Path(tmp) / "info.json"
            args = (str(self.project.root), [str(p) for p in sorted(paths)], marked, str(self.status), str(info))
            proc = self._start(args)
            covered: set[str] = set(marked)
            learned = False
            while proc.is_alive():
                proc.join(0.1)
                if not learned and (early := self._read_info(info)):
                    # at once, not when the check ends: a save of a snippet a page has just started to
                    # include concerns that page (and stops its check) from now on
                    learned = True
                    covered |= set(early.get("uris", []))
                    if isinstance(early.get("citing"), dict):
                        self.citing = early["citing"]
                with self.lock:
                    again = self.pending & paths or {u for p in self.pending for u in self._pages_of(p)} & covered
                    stop = bool(again) and proc.is_alive()  # a newer save of a page this check covers: it wins
                    if stop:
                        self.pending |= paths
                if stop:  # outside the lock: a save arriving meanwhile is marked at once, not after the kill
                    self._stop(proc)
                    return
            found = self._read_info(info)
        if isinstance(found.get("citing"), dict):
            self.citing = found["citing"]
        if proc.exitcode not in (0, None):
            uris = found.get("uris") or marked
            what = f"killed by signal {-proc.exitcode}" if proc.exitcode < 0 else f"exit code {proc.exitcode}"
            problem = f"the check ended without a verdict ({what})"
            print(f"kb serve: {problem}", file=sys.stderr)
            self._refuse(uris, problem)

    def _start(self, args: tuple):
        """The check's process, forked from the warm server. A server that died (killed, out of memory)
        is noticed by multiprocessing only on a later start: the first start then fails with EOFError
        or a broken pipe, and the next one starts a new server."""
        import multiprocessing

        for attempt in range(3):
            ctx = self.ctx or multiprocessing.get_context("spawn")
            proc = ctx.Process(target=warm.check_saved, args=args, name="kb-live-check")
            try:
                proc.start()
                return proc
            except (EOFError, ConnectionError) as e:
                problem = e
                time.sleep(0.2 * (attempt + 1))
        raise problem

    @staticmethod
    def _read_info(path: Path) -> dict:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @staticmethod
    def _stop(proc) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the check and the pytest session it forked
        except (ProcessLookupError, PermissionError):
            proc.kill()
        proc.join()


def saved_paths(event) -> list[str]:
    """The files a watchdog event changes: written or created, deleted, and both ends of a rename (a
    snippet deleted or renamed away changes the pages that include it as much as a save of it)."""
    if event.is_directory or event.event_type not in ("modified", "created", "moved", "deleted"):
        return []
    return [p for p in (event.src_path, getattr(event, "dest_path", "")) if p]


def serve(project: Project, dev_addr: str) -> int:
    from mkdocs.commands.serve import serve as mkdocs_serve
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer

    checker = Checker(project)

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event):
            for path in saved_paths(event):
                checker.touched(path)

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
