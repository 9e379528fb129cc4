"""Review in the browser while ``kb serve`` runs: the 复习 page as a live session, graded through the server.

``kb serve`` opens a :class:`ReviewSession` (only on a loopback address) before MkDocs builds: a random
token for this run of the server. While it is open, the MkDocs plugin makes the 复习 page a session
(:func:`session_page`): every card of the build, rendered by the site's own Markdown and KaTeX, one at
a time; the page carries the token. The session's two requests go to MkDocs' own livereload server
(same origin, no second port): its WSGI app is wrapped (:meth:`ReviewSession.wsgi`) so that paths
under ``/_kb/review/`` are answered here and everything else is served as before.

- ``GET /_kb/review/due``: today's cards, as ``kb review`` picks them (``review.due``, the daily
  limit applied), from the review log as it is now.
- ``POST /_kb/review/grade`` with JSON ``{"card", "grade": 1-4, "digest"}``: one line appended to
  ``review-log.tsv`` by ``review.append`` (the CLI's lock), with the card's digest and status taken from
  the build's deck, never from the request.

Both refuse, with 403 and a one-line reason, any request that is not from the page itself: a client
other than loopback, a ``Host`` that is not the served address (DNS rebinding), an ``Origin`` (or
``Sec-Fetch-Site``) of another site, a missing or wrong token (header ``X-KB-Review-Token``). A refused
or malformed request writes nothing. The published build has no session: its 复习 page is the dated
snapshot of ``render.review_page``.
"""

from __future__ import annotations

import atexit
import datetime as dt
import hmac
import html
import ipaddress
import json
import os
import secrets
import sys
import threading
from dataclasses import dataclass, field

from kb import cards as deck_module
from kb import review
from kb.project import Project, SourceError

PREFIX = "/_kb/review/"
TOKEN_HEADER = "X-KB-Review-Token"
MAX_BODY = 4096  # a grade is a few dozen bytes
_SESSION: ReviewSession | None = None


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass
class ReviewSession:
    project: Project
    host: str
    port: int
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    new_per_day: int | None = review.NEW_PER_DAY
    deck: list = field(default_factory=list)  # the cards of the last build: what the served page shows
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def hosts(self) -> set[str]:
        """``Host`` values of a request made by the served page (the address typed, or its loopback names)."""
        names = {self.host, "127.0.0.1", "localhost", "[::1]"}
        return {f"{n if ':' not in n or n.startswith('[') else f'[{n}]'}:{self.port}" for n in names}

    @property
    def origins(self) -> set[str]:
        return {f"http://{h}" for h in self.hosts}

    # ---- the WSGI side ----------------------------------------------------------------------------

    def wsgi(self, app):
        """MkDocs' app with the review paths answered here (everything else goes to ``app`` unchanged)."""

        def wrapped(environ, start_response):
            if not environ.get("PATH_INFO", "").startswith(PREFIX):
                return app(environ, start_response)
            status, body = self.handle(environ)
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            start_response(
                status,
                [
                    ("Content-Type", "application/json; charset=utf-8"),
                    ("Content-Length", str(len(data))),
                    ("Cache-Control", "no-store"),
                    ("X-Content-Type-Options", "nosniff"),
                ],
            )
            return [data]

        return wrapped

    def handle(self, environ) -> tuple[str, dict]:
        """(status line, JSON body) of one request under ``PREFIX``; only a valid grade writes the log."""
        route = environ.get("PATH_INFO", "")[len(PREFIX) :]
        method = environ.get("REQUEST_METHOD", "GET")
        if route not in ("due", "grade"):
            return "404 Not Found", {"error": f"no such review request: {route!r} (due, grade)"}
        wanted = "GET" if route == "due" else "POST"
        if method != wanted:
            return "405 Method Not Allowed", {"error": f"{route} takes {wanted}, not {method}"}
        refused = self.refusal(environ, needs_origin=method == "POST")
        if refused:
            return "403 Forbidden", {"error": refused}
        try:
            if route == "due":
                return "200 OK", self.today()
            return self.grade(environ)
        except SourceError as e:  # a damaged review log: named, never rewritten
            return "409 Conflict", {"error": str(e)}

    def refusal(self, environ, needs_origin: bool) -> str:
        """Why this request is not from the served page ('' if it is)."""
        remote = environ.get("REMOTE_ADDR", "")
        if not _loopback(remote):
            return f"refused: the review server answers this machine only, not {remote}"
        host = environ.get("HTTP_HOST", "")
        if host not in self.hosts:
            return f"refused: Host {host!r} is not the served address (expected {self.host}:{self.port})"
        origin = environ.get("HTTP_ORIGIN")
        if origin is None and needs_origin:
            return "refused: a grade must come from the served 复习 page (no Origin header)"
        if origin is not None and origin not in self.origins:
            return f"refused: Origin {origin!r} is not the served site"
        site = environ.get("HTTP_SEC_FETCH_SITE")
        if site is not None and site not in ("same-origin", "none"):
            return f"refused: a {site} request (only the served 复习 page may grade)"
        token = environ.get("HTTP_" + TOKEN_HEADER.upper().replace("-", "_"), "")
        if not token:
            return f"refused: no review token ({TOKEN_HEADER} header); reload the 复习 page of this kb serve"
        if not hmac.compare_digest(token.encode("utf-8", "replace"), self.token.encode("utf-8")):
            return "refused: wrong review token (a page of an earlier kb serve?); reload the 复习 page"
        return ""

    # ---- what the session reads and writes -----------------------------------------------------------

    def _states(self, now: dt.datetime) -> dict:
        return deck_module.schedule(self.deck, deck_module.project_log(self.project), now)

    def today(self) -> dict:
        """Today's cards, in the order and with the daily limit of ``kb review``."""
        now = dt.datetime.now(dt.UTC)
        with self.lock:
            states = self._states(now)
        todo = review.due(states, now, None, self.new_per_day)
        return {
            "cards": [
                {"card": s.card.id, "digest": s.card.digest, "new": s.new, "changed": s.changed, "topic": s.card.topic}
                for s in todo
            ],
            "limit": self.new_per_day,
            "total": len(states),
        }

    def grade(self, environ) -> tuple[str, dict]:
        kind = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if kind != "application/json":
            return "415 Unsupported Media Type", {
                "error": f"a grade is JSON (application/json), not {kind or 'nothing'}"
            }
        try:
            size = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return "400 Bad Request", {"error": "Content-Length is not a number"}
        if size <= 0 or size > MAX_BODY:
            return "413 Content Too Large" if size > MAX_BODY else "400 Bad Request", {
                "error": f"a grade is 1 to {MAX_BODY} bytes of JSON, this request has {size}"
            }
        try:
            body = json.loads(environ["wsgi.input"].read(size).decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return "400 Bad Request", {"error": "the body is not JSON"}
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("card"), str)
            or not isinstance(body.get("digest"), str)
            or type(body.get("grade")) is not int
        ):
            return "400 Bad Request", {"error": 'a grade is {"card": id, "digest": text, "grade": 1-4}'}
        rating = deck_module.GRADES.get(str(body["grade"]))
        if rating is None or body["grade"] not in (1, 2, 3, 4):
            return "400 Bad Request", {"error": f"grade {body['grade']} is not 1 (again) to 4 (easy)"}
        now = dt.datetime.now(dt.UTC)
        with self.lock:
            states = self._states(now)
            state = states.get(body["card"])
            if state is None:
                return "404 Not Found", {"error": f"no card {body['card']!r} in this build; reload the 复习 page"}
            card = state.card
            if body["digest"] != card.digest:
                return "409 Conflict", {"error": "this card changed since the page was built; reload the 复习 page"}
            if card.id not in {s.card.id for s in review.due(states, now, None, self.new_per_day)}:
                when = state.due.astimezone().strftime("%Y-%m-%d %H:%M")
                why = "today's new-card limit is reached" if state.new else f"it is due {when}"
                return "409 Conflict", {"error": f"this card is not due now ({why}); nothing logged"}
            path = deck_module.log_path(self.project)
            review.append(path, deck_module.Review(now, card.id, rating, card.digest, card.status))
            after = self._states(now)[card.id]
        return "200 OK", {
            "logged": card.id,
            "grade": int(rating),
            "next_due": after.due.isoformat(timespec="minutes"),
            "log": self.project.rel(path),
        }


# ---- kb serve's side ------------------------------------------------------------------------------


def open_session(project: Project, dev_addr: str, new_per_day: int | None = review.NEW_PER_DAY) -> ReviewSession | None:
    """Start this run's review session (``kb serve``), unless it serves beyond this machine."""
    global _SESSION
    host, _, port = dev_addr.rpartition(":")
    if not _loopback(host.strip("[]")):
        print(
            f"kb serve: serving on {host}, not this machine only: the 复习 page stays the read-only snapshot "
            "(serve on 127.0.0.1 to review in the browser)",
            file=sys.stderr,
        )
        return None
    _SESSION = ReviewSession(project, host, int(port), new_per_day=new_per_day)
    _announce(project, f"http://{host}:{port}/")
    return _SESSION


def current() -> ReviewSession | None:
    return _SESSION


def mount(server) -> None:
    """Answer the review requests on MkDocs' livereload server (a wsgiref server: ``get_app``/``set_app``)."""
    if _SESSION is not None:
        server.set_app(_SESSION.wsgi(server.get_app()))


def _announce(project: Project, url: str) -> None:
    """``.kb/serve.json``: where this server runs and its process (what ``kb review`` links to), no token."""
    path = project.root / ".kb" / review.SERVE_FILE
    try:
        path.parent.mkdir(exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"url": url, "pid": os.getpid()}, f)
    except OSError as e:
        print(f"kb serve: cannot write {path} ({e.strerror or e}); kb review links to files", file=sys.stderr)
        return

    def remove() -> None:
        try:
            if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
                path.unlink()
        except (OSError, ValueError, AttributeError):
            pass

    atexit.register(remove)


# ---- the page -------------------------------------------------------------------------------------


def session_page(kb, layout, session: ReviewSession, script_url: str, now: dt.datetime) -> str:
    """The 复习 page while serving: every card of this build (hidden), the session that shows today's."""
    from kb import render

    uri = layout.review
    deck = deck_module.cards(kb)
    session.deck = deck
    attr = html.escape
    out = [
        "---",
        "title: 复习",
        "---",
        "",
        "# 复习",
        "",
        f'<div class="kb-session" data-token="{attr(session.token)}" data-due="{PREFIX}due" '
        f'data-grade="{PREFIX}grade" data-header="{TOKEN_HEADER}" markdown>',
        "",
        '<p class="kb-session-progress">正在读取今天的卡片…</p>',
        "",
        f"<small>`kb serve` 运行中：评分写入 `{deck_module.LOG_NAME}`（与 `kb review` 同一个日志、同一个 FSRS 安排，"
        f"每天新卡片上限 {session.new_per_day if session.new_per_day is not None else '不限'} 张）。"
        "空格或回车看答案，m 看完整说明，1 重来 · 2 困难 · 3 良好 · 4 简单。</small>",
        "",
    ]
    # A topic page links to its cards here (review.md#topic): that link reviews only that topic's cards.
    for topic in sorted({c.topic for c in deck}):
        out.append(f'<span class="kb-topic" id="{attr(render.topic_anchor(topic))}" data-topic="{attr(topic)}"></span>')
    out.append("")
    for c in deck:
        more = render.DOCS_LINK.sub(lambda m: m.group(1) + render.link(uri, m.group(2)), c.more)
        answer = render.DOCS_LINK.sub(lambda m: m.group(1) + render.link(uri, m.group(2)), c.answer)
        out += [
            f'<div class="kb-card" data-card="{attr(c.id)}" data-digest="{c.digest}" '
            f'data-status="{attr(c.status)}" markdown>',
            "",
        ]
        if c.context:
            out += [
                '<div class="kb-card-context" markdown>',
                "",
                f"笔记里的上一句：{render.md_text(c.context)}",
                "",
                "</div>",
                "",
            ]
        out += [
            '<div class="kb-card-front" markdown>',
            "",
            f"**问：** {render.md_text(c.front)}",
            "",
            "</div>",
            "",
            '<div class="kb-card-answer" markdown>',
            "",
            answer,
            "",
            "</div>",
            "",
            '<div class="kb-card-more" markdown>',
            "",
            more,
            "",
            f"[查看原文]({render.link(uri, c.page, c.anchor)})",
            "",
            "</div>",
            "",
            "</div>",
            "",
        ]
    out += ["</div>", "", f'<script src="{attr(script_url)}"></script>', ""]
    return "\n".join(out)
