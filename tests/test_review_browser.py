"""Review in the browser while `kb serve` runs (issue 20, part 4).

`kb serve` runs on a small copy of the project; the served 复习 page is a session of today's cards
(KaTeX-rendered, reveal, grade buttons and keys 1-4), and each grade lands in review-log.tsv through the
server. Every request that is not the page's own (no token, a wrong token, another Origin, another
Host, a cross-site fetch) is refused with 403 and a one-line reason, and writes nothing; nor does a
malformed one. The published build shows the dated, read-only snapshot instead.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import MINI_DOCS, copy_project, kb_serving, run, text_of
from test_browser import SHOTS, check_and_close, watched

from kb import cards, review, review_server
from kb.model import KnowledgeBase
from kb.project import Project

ASIDE = """---
title: 旁支
---
# 旁支

!!! claim "均方误差分解为方差加偏差的平方"
    id: aside-decomposition
    status: verified
    test: snippets/foundations/mse.py::test_mse_decomposes_into_variance_plus_squared_bias

    本页只为复习页的主题链接测试而设：它的卡片属于另一个主题。
"""


# The tests that use the one `kb serve` of this module run on one xdist worker (make test: --dist
# loadgroup): a module fixture is made once per worker, and kb serve takes seconds to start.
SERVED = pytest.mark.xdist_group("review-served")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`kb serve` on a mini copy of the project, as a learner runs it: (root, base URL, token of the page)."""
    root = copy_project(tmp_path_factory.mktemp("review") / "mini", MINI_DOCS)
    (root / "docs" / "aside.md").write_text(ASIDE, encoding="utf-8")  # a card of a second topic
    with kb_serving(root, "review/") as (base, html):
        token = re.search(r'<div class="kb-session"[^>]*\sdata-token="([^"]+)"', html)
        assert token, "the served 复习 page is not a review session"
        yield root, base, token.group(1)


def log_lines(root: Path) -> list[str]:
    path = root / cards.LOG_NAME
    if not path.exists():
        return []
    return [line for line in text_of(path).splitlines() if line and not line.startswith("#")]


def deck(root: Path) -> dict[str, cards.Card]:
    return {c.id: c for c in cards.cards(KnowledgeBase.load(Project.find(root)))}


def request(
    base: str,
    route: str,
    *,
    method: str = "POST",
    body: bytes | None = None,
    token: str | None = None,
    origin: str | None = "same",
    host: str | None = None,
    kind: str = "application/json",
    extra: dict | None = None,
) -> tuple[int, dict]:
    """One request to the review endpoint, by default as the page makes it; (status, JSON answer)."""
    headers = {"Content-Type": kind} if body is not None else {}
    if token is not None:
        headers[review_server.TOKEN_HEADER] = token
    if origin is not None:
        headers["Origin"] = base.rstrip("/") if origin == "same" else origin
    if host is not None:
        headers["Host"] = host
    headers.update(extra or {})
    req = urllib.request.Request(
        base + review_server.PREFIX.lstrip("/") + route, data=body, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def grade_body(card: cards.Card, grade=3, digest: str | None = None) -> bytes:
    return json.dumps({"card": card.id, "digest": card.digest if digest is None else digest, "grade": grade}).encode(
        "utf-8"
    )


def due_card(base: str, token: str, root: Path) -> cards.Card:
    status, got = request(base, "due", method="GET", token=token)
    assert status == 200, got
    return deck(root)[got["cards"][0]["card"]]


@SERVED
def test_a_topic_pages_review_link_reviews_only_that_topic(browser, served):  # noqa: F811 (the fixture)
    from kb import render

    root, base, token = served
    status, got = request(base, "due", method="GET", token=token)
    assert status == 200, got
    topics = [c["topic"] for c in got["cards"]]
    context, pg = watched(browser, base)
    for topic in ("基础", "旁支"):  # the mini project's, and the aside page's
        pg.goto(base + "review/#" + render.topic_anchor(topic))
        progress = pg.locator(".kb-session-progress")
        n = topics.count(topic)
        expected = f"[1/{n}] {topic}" if n else f"今天没有到期的卡片（主题 {topic}）"
        try:  # the second topic's link is on the same page: the session restarts on the hash change
            pg.wait_for_function(
                "(e) => document.querySelector('.kb-session-progress').textContent.startsWith(e)",
                arg=expected,
                timeout=15_000,
            )
        except Exception:
            pytest.fail(f"{topic}: the session shows {progress.inner_text()!r}, not {expected!r} (due: {topics})")
    check_and_close(context, pg)


@SERVED
def test_three_cards_reviewed_on_the_served_page_are_three_log_lines(browser, served):  # noqa: F811
    root, base, _ = served
    before = log_lines(root)
    context, pg = watched(browser, base)
    pg.goto(base + "review/")
    card = pg.locator(".kb-card.kb-current")
    card.wait_for()
    n_due = int(re.search(r"\[1/(\d+)\]", pg.locator(".kb-session-progress").inner_text()).group(1))
    assert 3 <= n_due <= review.NEW_PER_DAY, "today's cards, the daily limit of new cards applied"
    # Every formula on the session's cards is rendered by KaTeX, none left as TeX.
    raw = pg.evaluate(
        "() => Array.from(document.querySelectorAll('.kb-card .arithmatex'))"
        ".filter(e => !e.querySelector('.katex')).map(e => e.textContent)"
    )
    assert raw == [], f"unrendered TeX on the review cards: {raw[:2]}"
    assert pg.locator(".kb-card .katex").count() > 0, "no card of the mini project shows a rendered formula"
    shown, grades = [], [3, 4, 1]
    for k, grade in enumerate(grades):
        card_id = card.get_attribute("data-card")
        shown.append(card_id)
        assert pg.locator(".kb-current .kb-card-answer").is_hidden(), "the answer shows before the reveal"
        if k == 1:  # by mouse
            pg.locator("button.kb-reveal").click()
        else:  # by keyboard
            pg.keyboard.press("Space")
        assert pg.locator(".kb-current .kb-card-answer").is_visible()
        assert pg.locator(".kb-current .kb-card-more").is_hidden(), "the full explanation waits behind 'more'"
        if k == 0:
            pg.keyboard.press("m")
            assert pg.locator(".kb-current .kb-card-more").is_visible()
            pg.screenshot(path=SHOTS / "review-session.png")
        if k == 1:
            pg.locator(f"button.kb-rate[data-grade='{grade}']").click()
        else:
            pg.keyboard.press(str(grade))
        pg.wait_for_function(
            "([k]) => document.querySelector('.kb-session-progress').textContent.startsWith(`[${k + 2}/`)",
            arg=[k],
            timeout=30_000,
        )
    assert len(set(shown)) == 3, "each grade moved to the next card"
    check_and_close(context, pg)
    added = log_lines(root)[len(before) :]
    assert len(added) == 3, added
    cards_now = deck(root)
    for line, card_id, grade in zip(added, shown, grades):
        time_, logged, rating, digest, status = line.split("\t")
        assert (logged, int(rating)) == (card_id, grade)
        assert (digest, status) == (cards_now[card_id].digest, cards_now[card_id].status), "what the page showed"
        assert abs(dt.datetime.fromisoformat(time_) - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)
    # The log reads back as the CLI's: the three cards have left today's list (each has its FSRS state).
    states = cards.schedule(list(cards_now.values()), cards.project_log(Project.find(root)), dt.datetime.now(dt.UTC))
    assert all(len(states[c].reviews) == 1 for c in shown)


@SERVED
@pytest.mark.parametrize(
    "what, kwargs, words",
    [
        ("no token", {"token": None}, "no review token"),
        ("a wrong token", {"token": "x" * 43}, "wrong review token"),
        ("another site's Origin", {"origin": "http://evil.example"}, "Origin"),
        ("no Origin (not a browser page)", {"origin": None}, "no Origin"),
        ("a page of another local server", {"origin": "http://127.0.0.1:1"}, "Origin"),
        ("a sandboxed frame or a file (Origin null)", {"origin": "null"}, "Origin"),
        ("a rebound Host (DNS rebinding)", {"host": "evil.example"}, "Host"),
        ("a cross-site fetch", {"extra": {"Sec-Fetch-Site": "cross-site"}}, "cross-site"),
    ],
)
def test_a_grade_not_from_the_page_is_refused_and_writes_nothing(served, what, kwargs, words):
    root, base, token = served
    card = due_card(base, token, root)
    before = log_lines(root)
    args = {"token": token, **kwargs}
    if "host" in kwargs:
        args["host"] = f"{kwargs['host']}:{base.rsplit(':', 1)[1].rstrip('/')}"
    status, got = request(base, "grade", body=grade_body(card), **args)
    assert status == 403, (what, got)
    assert words in got["error"] and "\n" not in got["error"], got
    assert log_lines(root) == before, f"{what}: a refused request wrote the log"


@SERVED
def test_todays_cards_are_not_told_without_the_token(served):
    root, base, token = served
    status, got = request(base, "due", method="GET", token=None)
    assert status == 403 and "no review token" in got["error"]
    status, got = request(base, "due", method="GET", token=token, origin="http://evil.example")
    assert status == 403 and "Origin" in got["error"]


@SERVED
def test_a_malformed_grade_writes_nothing(served):
    root, base, token = served
    card = due_card(base, token, root)
    before = log_lines(root)
    other = {"card": "claim:no-such-claim", "digest": "0" * 16, "grade": 3}
    for body, kind, expected in [
        (b"{not json", "application/json", 400),
        (grade_body(card, grade=5), "application/json", 400),
        (grade_body(card, grade="3"), "application/json", 400),
        (grade_body(card, grade=True), "application/json", 400),
        (json.dumps([card.id, 3]).encode(), "application/json", 400),
        (json.dumps(other).encode(), "application/json", 404),
        (grade_body(card, digest="0" * 16), "application/json", 409),  # the page is older than the card
        (grade_body(card), "text/plain", 415),  # what a cross-site form could send
        (b"{" + b" " * review_server.MAX_BODY + b"}", "application/json", 413),
    ]:
        status, got = request(base, "grade", body=body, token=token, kind=kind)
        assert status == expected, (body[:60], got)
        assert got["error"] and "\n" not in got["error"]
    assert request(base, "grade", method="GET", token=token)[0] == 405
    assert request(base, "nothing", method="GET", token=token)[0] == 404
    assert log_lines(root) == before, "a malformed request wrote the log"
    # The same request with everything right is taken: what was refused above was the request, not the card.
    status, got = request(base, "grade", body=grade_body(card), token=token)
    assert status == 200 and got["logged"] == card.id, got
    assert len(log_lines(root)) == len(before) + 1
    # ... once: the card is no longer due, so a replayed request is refused too.
    status, got = request(base, "grade", body=grade_body(card), token=token)
    assert status == 409 and "not due" in got["error"], got
    assert len(log_lines(root)) == len(before) + 1


@SERVED
def test_kb_review_links_to_the_running_server_and_never_learns_the_token(served):
    root, base, token = served
    info = review.served(Project.find(root))
    assert info is not None and info["url"] == base, info
    assert token not in text_of(root / ".kb" / review.SERVE_FILE)


def test_a_request_from_another_machine_is_refused_before_anything_else(tmp_path):
    session = review_server.ReviewSession(Project.find(), "127.0.0.1", 8000)
    environ = {
        "PATH_INFO": review_server.PREFIX + "grade",
        "REQUEST_METHOD": "POST",
        "REMOTE_ADDR": "192.168.1.5",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_ORIGIN": "http://127.0.0.1:8000",
        "HTTP_X_KB_REVIEW_TOKEN": session.token,
    }
    status, got = session.handle(environ)
    assert status.startswith("403") and "this machine only" in got["error"]
    assert session.handle(
        {
            **environ,
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "localhost:8000",
            "HTTP_ORIGIN": "http://localhost:8000",
            "CONTENT_TYPE": "text/plain",
        }
    )[0].startswith("415")


def test_serving_beyond_this_machine_has_no_review_session(capsys):
    assert review_server.open_session(Project.find(), "0.0.0.0:8000") is None
    assert "read-only snapshot" in capsys.readouterr().err


def test_the_published_review_page_is_a_dated_read_only_snapshot(tmp_path):
    root = copy_project(tmp_path / "mini", MINI_DOCS)
    site = tmp_path / "site"
    # Even built from inside kb serve's environment: the session exists only in the serving process.
    result = run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        root,
        KB_LIVE_STATUS=str(tmp_path / "status.json"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    page = text_of(site / "review" / "index.html")
    built = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=300)  # the build's time, within its timeout
    assert re.search(r"快照：(\d{4}-\d{2}-\d{2})", page).group(1) in {
        built.date().isoformat(),
        dt.datetime.now(dt.UTC).date().isoformat(),
    }
    assert "kb-session" not in page and review_server.TOKEN_HEADER not in page and "review-session.js" not in page
