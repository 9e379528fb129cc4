"""The ``kb`` command: add a journal note, list open questions and claims, fetch assets.

    kb new [--date YYYY-MM-DD] [--topic SAC ...] [-m TEXT | --edit]
    kb questions            open questions, as file:line for the terminal
    kb claims               every claim with its status, as file:line
    kb assets               fetch KaTeX and Mermaid from the npm registry
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from kb import vendor
from kb.journal import JournalError, check_topics, new_note, parse_date, post_path
from kb.project import DOCS, allowed_topics, rel


def _read_body(args) -> str:
    if args.message is not None:
        return args.message
    if args.edit:
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
        if not editor:
            raise JournalError("--edit needs $EDITOR (or $VISUAL) to be set")
        with tempfile.NamedTemporaryFile("w", suffix=".md", encoding="utf-8", delete=False) as f:
            draft = Path(f.name)
        try:
            code = subprocess.call([*shlex.split(editor), str(draft)])
            if code != 0:
                raise JournalError(f"editor exited with status {code}; nothing written")
            return draft.read_text(encoding="utf-8")
        finally:
            draft.unlink(missing_ok=True)
    if not sys.stdin.isatty():
        return sys.stdin.read()
    raise JournalError("no note given: use -m TEXT, --edit, or pipe the text on stdin")


def cmd_new(args) -> int:
    root = Path(args.root).resolve()
    journal = root / "docs" / "journal"
    posts = Path(args.posts_dir).resolve() if args.posts_dir else journal / "posts"
    try:
        day = parse_date(args.date)
        allowed = allowed_topics(root / "mkdocs.yml")
        check_topics(args.topic, allowed)
        post_path(posts, journal, day)  # refuse before asking for text
        body = _read_body(args)
        result = new_note(posts, journal, day=day, topics=args.topic, body=body, allowed=allowed)
    except JournalError as e:
        print(f"kb new: error: {e}", file=sys.stderr)
        return 2
    print(result.path)
    return 0


def cmd_questions(args) -> int:
    from kb.knowledge import KnowledgeBase

    kb = KnowledgeBase()
    qs = [q for q in kb.questions if args.all or not q.answered]
    for q in qs:
        state = "" if not args.all else ("[answered] " if q.answered else "[open] ")
        print(f"{q.where}: {state}{q.text}")
    print(f"{len(qs)} {'questions' if args.all else 'open questions'}", file=sys.stderr)
    return 0


def cmd_claims(args) -> int:
    from kb.knowledge import KnowledgeBase

    kb = KnowledgeBase()
    errors = kb.errors()
    for b in kb.claims:
        print(f"{b.where}: [{b.get('status')}] {b.get('id')}: {b.title}")
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 1 if errors else 0


def cmd_assets(args) -> int:
    vendor.install(DOCS)
    print(rel(vendor.vendor_dir(DOCS)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kb", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("new", help="create today's (or --date's) journal post, or append a section to it")
    p.add_argument("--date", help="YYYY-MM-DD (default: today)")
    p.add_argument("--topic", action="append", default=[], help="a journal category; repeatable")
    p.add_argument("-m", "--message", help="the note's text (else --edit or stdin)")
    p.add_argument("--edit", action="store_true", help="write the note in $EDITOR")
    p.add_argument("--root", default=str(DOCS.parent), help=argparse.SUPPRESS)
    p.add_argument("--posts-dir", help="journal posts directory (must lie inside docs/journal)")
    p.set_defaults(func=cmd_new)

    p = sub.add_parser("questions", help="print open questions as file:line")
    p.add_argument("--all", action="store_true", help="answered ones too")
    p.set_defaults(func=cmd_questions)

    p = sub.add_parser("claims", help="print every claim and its status as file:line")
    p.set_defaults(func=cmd_claims)

    p = sub.add_parser("assets", help="fetch KaTeX and Mermaid into docs/assets/vendor")
    p.set_defaults(func=cmd_assets)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
