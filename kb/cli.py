"""The ``kb`` command: the learner's tools, acting on the project you are in.

    kb new [--date YYYY-MM-DD] [--topic T ...] [-m TEXT | --edit]   add a note to the journal
    kb questions [--all]                                             open questions, as file:line
    kb claims                                                        every claim and its status, as file:line
    kb check PATH|TOPIC ...                                          run what pages show and assert
    kb serve                                                         serve the site with each page's live check status
    kb review [--topic T] [--stats] [--new-per-day N]               today's due cards, FSRS-scheduled
    kb export anki PATH.apkg                                         the cards as an Anki deck
    kb assets                                                        fetch KaTeX and Mermaid (npm registry)
    kb topic new NAME                                                a new topic: category, nav, page, snippets
    kb import FILE|DIR [--topic T ...] [--dry-run]                   dated notes as journal posts, verbatim
    kb init DIR [--name NAME]                                        a new, empty knowledge base
    kb publish [--remote NAME_OR_URL] [--branch gh-pages]            the strict site, pushed to a branch

The project is the folder holding mkdocs.yml, found from the current directory
upward (or --root). A refusal is one line naming the file (and line), exit 2,
and nothing is lost: a note that could not be added is saved and its path printed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from kb.project import KbError, Project

EXIT_REFUSED = 2


def _project(args) -> Project:
    root = getattr(args, "root", None)
    if root:
        path = Path(root)
        config = path if path.name.endswith((".yml", ".yaml")) else path / "mkdocs.yml"
        if not config.is_file():
            raise KbError(f"{path}: no mkdocs.yml there (--root names a Learning Notes project)")
        return Project.at(config)
    return Project.find()


# ---- kb new ------------------------------------------------------------------------------


class Typed:
    """The note's text, and whether losing it would lose the learner's typing."""

    def __init__(self, text: str | bytes, precious: bool, refused: str = ""):
        self.text, self.precious, self.refused = text, precious, refused


class Interrupted(KbError):
    """Ctrl-C, SIGTERM or SIGHUP (the terminal closed) while kb new held a typed note."""

    exit_code = 130


@contextlib.contextmanager
def _stops_as_interrupts():
    """SIGTERM and SIGHUP raise KeyboardInterrupt, as Ctrl-C does, so a stop runs the code that
    keeps the note (their default ends the process at once). Only the main thread can set them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _editor_command() -> list[str]:
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if not editor or not editor.strip():
        raise KbError("--edit needs $EDITOR (or $VISUAL) to be set, e.g. export EDITOR=nano")
    try:
        argv = shlex.split(editor)
    except ValueError as e:
        raise KbError(f"$EDITOR cannot be read as a command ({e}): {editor!r}") from None
    if not argv or shutil.which(argv[0]) is None:
        raise KbError(f"$EDITOR names a program that is not there: {argv[0] if argv else editor!r}")
    return argv


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise KbError(f"{where}: the note is not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})") from None


def _read_body(args) -> Typed:
    if args.message is not None:
        try:
            args.message.encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8 reach argv as surrogate escapes
            _decode(os.fsencode(args.message), "-m")
            raise KbError("-m: the note is not UTF-8") from None
        return Typed(args.message, precious=False)
    if args.edit:
        argv = _editor_command()  # refused before anything is typed
        fd, name = tempfile.mkstemp(prefix="kb-note-", suffix=".md")
        os.close(fd)
        draft = Path(name)
        try:
            code = subprocess.call([*argv, str(draft)])
            data = draft.read_bytes()
        except KeyboardInterrupt:  # stopped while the editor was open: keep what it saved
            from kb.journal import recovery_file

            saved = draft.read_bytes() if draft.exists() else b""
            if not saved.strip():
                raise Interrupted("interrupted while the editor was open; nothing written") from None
            kept = recovery_file(_project(args).root, saved, dt.date.today())
            raise Interrupted(
                f"interrupted while the editor was open; nothing written; your note is kept in {kept}"
            ) from None
        finally:
            draft.unlink(missing_ok=True)
        if code != 0 and not data.strip():
            raise KbError(f"the editor exited with status {code}; nothing written")
        return Typed(data, precious=True, refused=f"the editor exited with status {code}" if code else "")
    if sys.stdin is None or sys.stdin.isatty():
        raise KbError("no note given: use -m TEXT, --edit, or pipe the text on stdin")
    return Typed(sys.stdin.buffer.read(), precious=True)


def cmd_new(args) -> int:
    with _stops_as_interrupts():
        return _new(args)


def _new(args) -> int:
    from kb.journal import NOTE_LIMIT, Journal, parse_date, recovery_file

    project = _project(args)
    journal_dir = project.docs_dir / project.blog_dir
    posts = Path(args.posts_dir).absolute() if args.posts_dir else project.posts_dir
    journal = Journal(posts, journal_dir, project.allowed_topics, shown=project.rel)
    # A note typed in the editor comes after every check (nothing is typed for a refusal); a note
    # given with -m or piped is already typed: it is read first, so a refusal keeps it.
    # Once typed, the note is in .kb/recovered/ until it is in its post: a kb new killed while it waits
    # for the journal (or writes) leaves it there; a refusal or a stop names it; success removes it.
    typed = None if args.edit else _read_body(args)
    day, ahead = None, None
    try:
        day = parse_date(args.date)
        if typed is not None:
            ahead = _keep_ahead(project.root, typed, day)
        journal.check(day, args.topic)  # everything that can be refused
        if typed is None:
            typed = _read_body(args)
            ahead = _keep_ahead(project.root, typed, day)
        if typed.refused:
            raise KbError(f"{typed.refused}; nothing written")
        body = _decode(typed.text, "the note") if isinstance(typed.text, bytes) else typed.text
        result = journal.add(day, args.topic, body, limit=None if args.allow_large else NOTE_LIMIT)
    except (KbError, KeyboardInterrupt) as e:
        stopped = isinstance(e, KeyboardInterrupt)
        if isinstance(e, Interrupted):
            raise
        reason = "interrupted; nothing written" if stopped else str(e)
        if typed is not None and typed.precious and typed.text.strip():
            saved = ahead or recovery_file(project.root, typed.text, day or dt.date.today())
            reason = f"{reason}; your note is kept in {saved}"
        raise (Interrupted if stopped else KbError)(reason) from None
    if ahead is not None:
        ahead.unlink(missing_ok=True)
    print(project.rel(result.path))
    return 0


def _keep_ahead(root: Path, typed: Typed, day) -> Path | None:
    """The typed note saved in .kb/recovered/ before it is added (None: nothing worth keeping, or no room)."""
    from kb.journal import recovery_file

    if not typed.precious or not typed.text.strip():
        return None
    try:
        return recovery_file(root, typed.text, day or dt.date.today())
    except KbError:  # no room: a refusal tries again, and the note may still be added
        return None


# ---- listings --------------------------------------------------------------------------------


def _model(args):
    from kb.model import KnowledgeBase

    return KnowledgeBase.load(_project(args))


# What a terminal would act on rather than show: control characters (ESC starts a terminal
# command) and the bidirectional overrides that reorder what is shown. Printed escaped (\x1b).
UNSHOWN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def shown(text: str) -> str:
    """Text for a terminal line: what a terminal would interpret is printed as an escape."""
    return UNSHOWN.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)


def cmd_questions(args) -> int:
    kb = _model(args)
    qs = [q for q in kb.questions if args.all or not q.answered]
    for q in qs:
        state = "" if not args.all else ("[answered] " if q.answered else "[open] ")
        print(shown(f"{q.where}: {state}{q.text}"))
    print(f"{len(qs)} {'questions' if args.all else 'open questions'}", file=sys.stderr)
    return 0


def claim_record(c) -> dict:
    """One claim as data: what `kb claims --json` prints (field names are part of the interface)."""
    last = c.last_review
    return {
        "id": c.id,
        "status": c.status.key,
        "title": c.title,
        "page": c.page.rel,
        "line": c.line,
        "test": c.test.node_id if c.test else None,
        "basis": c.basis.key,
        "counterfactuals": [{"kwargs": cf.kwargs, "text": cf.text, "line": cf.line} for cf in c.counterfactuals],
        "quotes": [{"source": q.source, "text": q.text, "line": q.line} for q in c.quotes],
        "reviewed": last.date.isoformat() if last else None,
        "review_current": c.review_current,
        "fingerprint": c.fingerprint,
    }


def cmd_claims(args) -> int:
    kb = _model(args)
    if args.json:
        json.dump([claim_record(c) for c in kb.claims], sys.stdout, ensure_ascii=False, indent=1)
        print()
    else:
        for c in kb.claims:
            print(shown(f"{c.where}: [{c.status.key}] {c.id}: {c.title}"))
    kb.check()
    return 0


def cmd_check(args) -> int:
    from kb import check

    project = _project(args)
    early = (lambda partial: check.write_status(Path(args.status_file), partial)) if args.status_file else None
    result = check.run(project, args.targets, Path.cwd(), early=early)
    if args.status_file:
        check.write_status(Path(args.status_file), result)
    return 0 if result["passed"] else 1


def cmd_serve(args) -> int:
    from kb import serve

    return serve.serve(_project(args), args.dev_addr)


def _now(value: str | None):
    import datetime as dt

    value = value or os.environ.get("KB_NOW")
    if not value:
        return dt.datetime.now(dt.UTC)
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        raise KbError(f"--now {value!r}: expected a time like 2026-01-02T09:00") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _new_per_day(value: str) -> int | None:
    if value == "all":
        return None
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r}: a number of new cards a day (0 or more), or 'all'")
    return int(value)


def cmd_review(args) -> int:
    from kb import review

    project = _project(args)
    now = _now(args.now)
    if args.stats:
        from kb.model import KnowledgeBase

        deck = review.cards(KnowledgeBase.load(project))
        log = review.project_log(project)
        print(review.stats(review.schedule(deck, log, now), log, now, args.new_per_day))
        return 0
    return review.session(project, now, args.topic, new_per_day=args.new_per_day)


def cmd_export(args) -> int:
    from kb import anki

    project = _project(args)
    path = anki.export(project, Path(args.path), _now(args.now))
    print(path)
    return 0


def cmd_assets(args) -> int:
    from kb import vendor

    project = _project(args)
    vendor.install(project.docs_dir)
    print(project.rel(vendor.vendor_dir(project.docs_dir)))
    return 0


def cmd_topic_new(args) -> int:
    from kb import topics

    project = _project(args)
    topic, written = topics.create(project, args.name, dry_run=args.dry_run)
    verb = "would write" if args.dry_run else "wrote"
    for rel in written:
        print(f"{verb} {rel}")
    if not args.dry_run:
        print(
            f"topic '{topic.name}' (slug {topic.slug}): kb check {shlex.quote(topic.name)}; "
            f"kb new --topic {shlex.quote(topic.name)}",
            file=sys.stderr,
        )
    return 0


def cmd_import(args) -> int:
    from kb import importer
    from kb.journal import Journal, check_topics

    project = _project(args)
    journal = Journal(project.posts_dir, project.docs_dir / project.blog_dir, project.allowed_topics, shown=project.rel)
    topics = check_topics(args.topic, project.allowed_topics)
    notes: list[str] = []
    found = [s for target in args.paths for s in importer.collect(Path(target), notes)]
    for note in notes:
        print(f"kb import: {note}", file=sys.stderr)
    steps = importer.plan(journal, found) if args.dry_run else importer.run(journal, found, topics)
    verbs = {"create": "create", "append": "append to", "present": "already in"}
    for step in steps:
        s = step.section
        verb = (
            verbs[step.action]
            if args.dry_run
            else {"create": "created", "append": "appended to", "present": "already in"}[step.action]
        )
        print(
            f"{'would ' if args.dry_run and step.action != 'present' else ''}{verb} "
            f"{project.rel(journal.posts / f'{(step.day or s.day).isoformat()}.md')} "
            f"({s.source}:{s.line}, {len(s.key.splitlines())} lines)"
        )
    counts = {a: sum(st.action == a for st in steps) for a in verbs}
    print(
        f"{counts['create']} new posts, {counts['append']} appended sections, {counts['present']} already there"
        + (" (dry run: nothing written)" if args.dry_run else ""),
        file=sys.stderr,
    )
    return 0


def cmd_init(args) -> int:
    from kb import init

    path = init.init(Path(args.dir), name=args.name)
    print(path)
    print(f"a new knowledge base in {path}: cd there, then make test (or make serve)", file=sys.stderr)
    return 0


def cmd_publish(args) -> int:
    from kb import publish

    url = publish.publish(_project(args), remote=args.remote, branch=args.branch, site_url=args.site_url)
    print(f"published to {args.remote} {args.branch}; the site's address: {url}")
    return 0


# ---- entry point -------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kb", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", help="the project folder (default: found from the current directory)")
    sub = p.add_subparsers(dest="command", required=True)

    n = sub.add_parser(
        "new",
        help="add a note: create the day's journal post, or append a section to it",
        description="Add a note to the journal: create the day's post, or append a section to it.",
    )
    n.add_argument("--date", help="YYYY-MM-DD (default: today)")
    n.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="TOPIC",
        help="a journal category; repeatable (the topics are listed below)",
    )
    n.add_argument("-m", "--message", help="the note's text (else --edit, else stdin)")
    n.add_argument("--edit", action="store_true", help="write the note in $EDITOR")
    n.add_argument("--root", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    n.add_argument("--posts-dir", help="journal posts folder (must lie inside the journal, not through a symlink)")
    n.add_argument(
        "--allow-large",
        action="store_true",
        help="add a note over 100 KB (refused otherwise: usually a pasted file or log)",
    )
    n.set_defaults(func=cmd_new)

    q = sub.add_parser("questions", help="print open questions as file:line")
    q.add_argument("--all", action="store_true", help="answered ones too")
    q.set_defaults(func=cmd_questions)

    c = sub.add_parser("claims", help="print every claim and its status as file:line")
    c.add_argument(
        "--json",
        action="store_true",
        help="one object per claim: id, status, page, line, test, counterfactuals, reviewed, review_current",
    )
    c.set_defaults(func=cmd_claims)

    k = sub.add_parser(
        "check",
        help="run what a page shows and asserts: its code, snippets, claims' tests, notebooks",
        description="Check pages: a page (docs/...md), every page of a topic (SAC), or every page "
        "that includes a snippet file (snippets/...py). One line per claim, then a summary.",
    )
    k.add_argument("targets", nargs="+", metavar="PATH|TOPIC")
    k.add_argument("--status-file", help=argparse.SUPPRESS)  # kb serve's live status
    k.set_defaults(func=cmd_check)

    v = sub.add_parser("serve", help="serve the site and re-check a page whenever it (or what it includes) is saved")
    v.add_argument("--dev-addr", default="127.0.0.1:8000", help="address to serve on (default 127.0.0.1:8000)")
    v.set_defaults(func=cmd_serve)

    r = sub.add_parser("review", help="review today's due cards (the notes' questions and claims), FSRS-scheduled")
    r.add_argument("--topic", help="only this topic's cards")
    r.add_argument("--stats", action="store_true", help="cards per topic and the forecast for the next 7 days")
    r.add_argument(
        "--new-per-day",
        type=_new_per_day,
        default=20,
        metavar="N",
        help="new cards a day (default 20, Anki's default; 'all' for no limit)",
    )
    r.add_argument("--now", help=argparse.SUPPRESS)  # an injected clock, for tests (also KB_NOW)
    r.set_defaults(func=cmd_review)

    e = sub.add_parser("export", help="export the cards: kb export anki PATH.apkg")
    e.add_argument("format", choices=["anki"])
    e.add_argument("path", help="the .apkg file to write")
    e.add_argument("--now", help=argparse.SUPPRESS)  # an injected clock, for tests (also KB_NOW)
    e.set_defaults(func=cmd_export)

    a = sub.add_parser("assets", help="fetch KaTeX and Mermaid into docs/assets/vendor")
    a.set_defaults(func=cmd_assets)

    i = sub.add_parser(
        "import",
        help="import dated notes (a file, or a folder of them) as journal posts",
        description="Import dated notes as journal posts, verbatim: sections start at a date "
        "line (# 20251230, ## 2026-01-02, 2026年1月2日), or a file is one day named by "
        "its date (2026-01-02.md). Importing twice adds nothing; a day that has a post "
        "gets the text appended as a new section.",
    )
    i.add_argument("paths", nargs="+", metavar="FILE|DIR")
    i.add_argument("--topic", action="append", default=[], metavar="TOPIC", help="a journal category for the posts")
    i.add_argument("--dry-run", action="store_true", help="list what would be written, write nothing")
    i.set_defaults(func=cmd_import)

    ni = sub.add_parser(
        "init",
        help="make a new, empty knowledge base (mkdocs.yml, Makefile, README, CI, "
        "one example topic and one journal post)",
    )
    ni.add_argument("dir", help="the new project's folder (must not exist, or be empty)")
    ni.add_argument("--name", help="the site's name (default: the folder's name)")
    ni.set_defaults(func=cmd_init)

    pb = sub.add_parser("publish", help="build the strict site and push it to a branch (as mkdocs gh-deploy)")
    pb.add_argument("--remote", default="origin", help="a git remote's name or URL (default: origin)")
    pb.add_argument("--branch", default="gh-pages", help="the branch to push the site to (default: gh-pages)")
    pb.add_argument(
        "--site-url",
        help="where the site will be read (default: the GitHub Pages address of the "
        "remote, else mkdocs.yml's site_url if it is not a local address)",
    )
    pb.set_defaults(func=cmd_publish)

    t = sub.add_parser("topic", help="kb topic new NAME: add a topic (journal category, nav, page, snippets)")
    tsub = t.add_subparsers(dest="action", required=True)
    tn = tsub.add_parser(
        "new",
        help="add a topic: its journal category and nav entry in mkdocs.yml, its page "
        "docs/topics/<slug>.md and snippets/<module>/ with a first claim and its test",
    )
    tn.add_argument("name", help="the topic's name as the learner says it (扩散策略, Diffusion Policy, ...)")
    tn.add_argument("--dry-run", action="store_true", help="list what would be written, write nothing")
    tn.set_defaults(func=cmd_topic_new)
    return p


def _topics_epilog(argv: list[str]) -> str:
    """The allowed topics, read from the project's mkdocs.yml (for `kb new --help`)."""
    try:
        root = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--root"), None)
        project = Project.at(Path(root) / "mkdocs.yml") if root else Project.find()
        return "topics: " + ", ".join(f"'{t}'" for t in project.allowed_topics)
    except KbError as e:
        return f"topics: (unknown here: {e})"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = parser()
    if "new" in argv and ("-h" in argv or "--help" in argv):
        p._subparsers._group_actions[0].choices["new"].epilog = _topics_epilog(argv)
    args = p.parse_args(argv)
    try:
        return args.func(args)
    except KbError as e:
        code = getattr(e, "exit_code", EXIT_REFUSED)
        for line in str(e).split("\n"):
            print(f"kb {args.command}: {'error: ' if code == EXIT_REFUSED else ''}{line}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print(f"kb {args.command}: interrupted; nothing written", file=sys.stderr)
        return 130
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"kb {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
