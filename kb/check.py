"""``kb check``: run exactly what a page shows and asserts, and nothing else.

For each page asked for (a page, every page of a topic, or every page that
includes a snippet file), one pytest session runs: the page's own code blocks
and doctests, the snippet modules it includes or names as evidence, the tests
deciding its claims, and the notebooks it shows. Before that, the page is
validated the way the build validates it: its claims, references and includes
(the knowledge model) and its links and anchors. The output is one line per
claim (status, pass/fail), then a summary; the exit code is 0 only if all passed.

The same pytest plugin runs here as in ``make test``, so a check means the same
thing in both.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from kb import nbcache, render, sources
from kb.model import Claim, KnowledgeBase, Page, Status, has_checks, notebooks_of  # noqa: F401 (re-exported)
from kb.project import KbError, Project, SourceError
from kb.site import Site

HTML_ID = re.compile(r'\bid="([^"]+)"')


@dataclass
class Plan:
    pages: list[Page]
    node_ids: list[str] = field(default_factory=list)
    notebooks: list[str] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    problems: list[SourceError] = field(default_factory=list)  # validation errors, file:line


def _page_of_path(kb: KnowledgeBase, path: Path) -> Page | None:
    try:
        uri = path.resolve().relative_to(kb.project.docs_dir).as_posix()
    except ValueError:
        return None
    return kb.pages.get(uri)


def resolve(kb: KnowledgeBase, targets: list[str], cwd: Path) -> list[Page]:
    """The pages a list of targets names: pages, topics, snippet files or notebooks."""
    project = kb.project
    topics = {t.lower(): t for t in project.allowed_topics} | {"基础": "基础", "foundations": "基础"}
    pages: dict[str, Page] = {}
    for target in targets:
        path = Path(target)
        path = path if path.is_absolute() else (cwd / path)
        found: list[Page] = []
        if path.suffix == ".md" and path.is_file():
            page = _page_of_path(kb, path)
            if page is None:
                unread = [str(e) for e in kb.errors if e.path == kb.project.rel(path)]
                raise KbError(unread[0] if unread else f"{target}: not a page of this project's docs")
            found = [page]
        elif path.suffix == ".py" and path.is_file():
            rel = project.rel(path)
            found = kb.pages_citing.get(rel, [])
            if not found:
                raise KbError(f"{target}: no page includes or cites this file")
        elif path.suffix == ".ipynb" and path.is_file():
            uri = path.resolve().relative_to(project.docs_dir).as_posix()
            found = [p for p in kb.pages.values() if uri in notebooks_of(kb, p)]
            if not found:
                raise KbError(f"{target}: no page shows this notebook")
        elif target.lower() in topics:
            topic = topics[target.lower()]
            found = [p for p in kb.pages.values() if not p.is_post and p.section == topic]
        else:
            raise KbError(
                f"{target}: not a page, a snippet file, a notebook or a topic "
                f"(topics: {', '.join(project.allowed_topics)}, 基础)"
            )
        for p in found:
            pages[p.src_uri] = p
    return sorted(pages.values(), key=lambda p: p.src_uri)


def session_modules(page: Page) -> list[str]:
    """The snippet modules a check of the page runs whole: what it includes, its claims' tests and evidence."""
    modules = dict.fromkeys(i.path for i in sources.includes(page.lines, page.doc.body_line))
    for c in page.claims:
        modules.update(dict.fromkeys(code.path for code in ([c.test.code] if c.test else []) + c.evidence))
    return list(modules)


def plan(site: Site, kb: KnowledgeBase, pages: list[Page]) -> Plan:
    p = Plan(pages)
    root_rel = kb.project.rel(kb.project.docs_dir)
    modules: dict[str, None] = {}
    for page in pages:
        p.problems += [e for e in kb.errors if e.path == page.rel]
        p.problems += link_errors(site, kb, page)
        if page.is_post:
            continue
        modules.update(dict.fromkeys(session_modules(page)))
        p.claims += page.claims
        p.node_ids.append(page.rel)
        p.notebooks += [f"{root_rel}/{n}" for n in notebooks_of(kb, page)]
    # a snippet module the page names that cannot be read (not Python, a test asserting nothing)
    # is the page's problem too: its claims stay undecided
    p.problems += [e for e in kb.errors if e.path in modules]
    p.node_ids += list(modules) + list(dict.fromkeys(p.notebooks))
    return p


# ---- links and anchors ------------------------------------------------------------------------


def _anchors(site: Site, kb: KnowledgeBase, page: Page, cache: dict[str, set[str]]) -> set[str]:
    """Every id the page will have once rendered (headings, claims, questions, journal lines)."""
    if page.src_uri not in cache:
        text = render.page_markdown(kb, site.layout, page, page.doc.body)
        cache[page.src_uri] = set(HTML_ID.findall(site.markdown().convert(text)))
    return cache[page.src_uri]


def link_errors(
    site: Site, kb: KnowledgeBase, page: Page, cache: dict[str, set[str]] | None = None
) -> list[SourceError]:
    """Links of a page that lead nowhere: a missing page or file, or a missing anchor."""
    cache = {} if cache is None else cache
    errors = []
    in_code = sources.fenced(page.lines)
    base = Path(page.src_uri).parent.as_posix()
    for i, line in enumerate(page.lines):
        if in_code[i]:
            continue
        spans = [m.span() for m in sources.CODE_SPAN.finditer(line)]
        for m in sources.LINK.finditer(line):
            if any(a <= m.start() < b for a, b in spans):
                continue
            url = m.group("url")
            if "://" in url or url.startswith(("mailto:", "/")):
                continue
            path, _, anchor = url.partition("#")
            where = page.file_line(i)
            target = sources.normalise_uri(f"{base}/{path}") if path else page.src_uri
            if path and not site.exists(kb, target):
                errors.append(SourceError(page.rel, where, f"link to {path}: no such page or file"))
                continue
            if anchor and target in kb.pages and anchor not in _anchors(site, kb, kb.pages[target], cache):
                errors.append(SourceError(page.rel, where, f"link to {url}: no anchor #{anchor} there"))
    return errors


# ---- running ---------------------------------------------------------------------------------


class Outcomes:
    """A pytest plugin that keeps each test's outcome."""

    def __init__(self):
        self.reports: dict[str, str] = {}

    def pytest_runtest_logreport(self, report):
        if report.failed:
            self.reports[report.nodeid] = "failed"
        elif report.skipped:
            self.reports.setdefault(report.nodeid, "skipped")
        elif report.when == "call":
            self.reports.setdefault(report.nodeid, "passed")


def invalid_claims(claims: list[Claim], problems: list[SourceError]) -> dict[str, str]:
    """claim id -> the first validation problem inside its block (its header, keys or text)."""
    out: dict[str, str] = {}
    for c in claims:
        last = c.page.file_line(c.block.end - 1)
        for e in problems:
            if e.path == c.page.rel and e.line is not None and c.line <= e.line <= last:
                out.setdefault(c.id, e.message)
    return out


def claim_line(
    claim: Claim,
    outcomes: dict[str, str],
    invalid: dict[str, str],
    session_problems: list[str] = (),
    counterfactuals: dict[str, list[str]] | None = None,
) -> tuple[bool, str]:
    counterfactuals = counterfactuals or {}
    head = f"[{claim.status.key}] {claim.id}:"
    problem = f"; invalid: {invalid[claim.id]}" if claim.id in invalid else ""
    if claim.test is None:
        if claim.status is not Status.OPEN:
            return False, f"FAIL  {head} undecided: its deciding test cannot be read{problem}"
        return not problem, f"{'ok  ' if not problem else 'FAIL'}  {head} open, nothing to run{problem}"
    seen = {n: o for n, o in outcomes.items() if claim.test.matches(n)}
    if not seen:
        return False, f"FAIL  {head} {claim.test.node_id} did not run{problem}"
    bad = sorted(n for n, o in seen.items() if o != "passed")
    if bad:
        return False, f"FAIL  {head} {bad[0]} {seen[bad[0]]}{problem}"
    said = [s.split(": ", 1)[-1] for s in session_problems if s.startswith(f"claim '{claim.id}' ")]
    if said:
        return False, f"FAIL  {head} {said[0]}{problem}"
    for cf in claim.counterfactuals:  # each must have been run and rejected, as the session recorded it
        results = counterfactuals.get(f"{claim.id}#{cf.index}", [])
        if "rejected" not in results or "crashed" in results:
            what = "crashed" if "crashed" in results else ("still passes" if results else "never ran")
            return False, f"FAIL  {head} counterfactual {cf.index} ({cf.kwargs}) {what}{problem}"
    cfs = f", {len(claim.counterfactuals)} counterfactual(s) rejected" if claim.counterfactuals else ""
    return not problem, f"{'ok  ' if not problem else 'FAIL'}  {head} {claim.test.node_id} passed{cfs}{problem}"


def run(
    project: Project,
    targets: list[str],
    cwd: Path,
    out=print,
    pytest_args: tuple[str, ...] = (),
    early=None,
    kb: KnowledgeBase | None = None,
    session=None,
) -> dict:
    """Check the pages the targets name; returns the result (also what the live status line shows).

    ``early`` is told at once when validation already fails (the live status line turns red
    before the tests have run). ``kb``: the project's model, when the caller has just loaded it.
    ``session(project, args, out)`` runs the pytest session (default: a new interpreter;
    ``kb serve`` forks a warm one, ``kb.warm.pytest_in_fork``).
    """

    started = time.time()
    kb = kb or KnowledgeBase.load(project)
    pages = resolve(kb, targets, cwd)
    p = plan(Site.load(project), kb, pages)
    for problem in p.problems:
        out(f"invalid: {problem}")
    invalid = invalid_claims(p.claims, p.problems)
    problems = [str(e) for e in p.problems]
    if p.problems and early:
        early(
            {
                "pages": [pg.src_uri for pg in pages],
                "passed": False,
                "ran_at": time.strftime("%Y-%m-%d %H:%M:%S"),
                "seconds": round(time.time() - started, 1),
                "failing_claims": sorted(invalid),
                "failed_tests": [],
                "problems": problems,
                "running": True,
                "failures": [
                    {"id": c.id, "title": c.title, "page": c.page.src_uri, "anchor": c.anchor, "reason": invalid[c.id]}
                    for c in p.claims
                    if c.id in invalid
                ],
            }
        )
    outcomes = Outcomes()
    code, report = 0, None
    session_problems: list[str] = []
    cf_results: dict[str, list[str]] = {}
    # A notebook that passed, unchanged and importing only unchanged code since, is not run again.
    cache, why_not = nbcache.open_cache(project) if p.notebooks else (None, None)
    if why_not:
        out(f"note: {why_not}")
    reused = []
    for nb in dict.fromkeys(p.notebooks):
        if cache is not None and (before := nbcache.passed_before(cache, project, project.root / nb)):
            reused.append(nb)
            outcomes.reports[nb] = "passed"
            out(f"cached: {nb} passed at {before.get('at')} and nothing it runs has changed since")
    p.node_ids = [n for n in p.node_ids if n not in reused]
    session_started = time.time()
    if p.node_ids:
        args = [
            "-p",
            "no:cacheprovider",
            "-q",
            "-n",
            "0",
            "--no-header",
            "-rf",
            "--tb=short",
            "--rootdir",
            str(project.root),
            "-c",
            str(project.root / "pyproject.toml"),
            *pytest_args,
            *[str(project.root / n) for n in p.node_ids],
        ]
        code, report, running = (session or _run_session)(project, args, out)
        if report is None:
            what = f" while running {running}" if running else ""
            problems.append(
                f"the check's test session did not reach its end{what} (exit code {code}): "
                "a test or module exited the process; nothing it ran counts"
            )
            out(f"invalid: {problems[-1]}")
        else:
            outcomes.reports |= {n: o for n, o in report["outcomes"].items()}
            session_problems = report.get("problems", [])
            for nb in dict.fromkeys(p.notebooks):
                ran = [o for n, o in outcomes.reports.items() if n == nb or n.startswith(nb + "::")]
                if cache is not None and nb not in reused and ran and all(o == "passed" for o in ran):
                    try:
                        nbcache.remember_pass(cache, project, project.root / nb, time.time() - session_started)
                    except Exception as e:  # noqa: BLE001 - the check's verdict stands; the next one runs it again
                        out(f"note: {nb} passed but could not be cached ({type(e).__name__}: {e})")
            cf_results = report.get("counterfactuals", {})
    lines = [claim_line(c, outcomes.reports, invalid, session_problems, cf_results) for c in p.claims]
    out("")
    for _, line in lines:
        out(line)
    failed_tests = sorted(n for n, o in outcomes.reports.items() if o != "passed")
    # Exit code 5 (nothing collected) is a pass only when there was nothing to run: no session, or a
    # session over pages alone (no claim, no module, no notebook) that nothing narrowed, whose pages
    # show no code (a topic's overview page).
    only_pages = {pg.rel for pg in pages} >= set(p.node_ids) and not p.claims
    # (a check names its pages: narrowed by the paths given, and by nothing else)
    unnarrowed = report is not None and all(n.startswith("paths given") for n in report.get("narrowed", ["?"]))
    passed = (
        not problems
        and (code == 0 or (code == 5 and (not p.node_ids or (only_pages and unnarrowed))))
        and all(ok for ok, _ in lines)
        and not failed_tests
    )
    failing_claims = [c.id for c, (ok, _) in zip(p.claims, lines) if not ok]
    # For the live status line: each failing claim's sentence, where it is, and the reason printed above.
    failures = [
        {
            "id": c.id,
            "title": c.title,
            "page": c.page.src_uri,
            "anchor": c.anchor,
            "reason": line.split(f"{c.id}:", 1)[-1].strip(),
            "test": c.test.node_id if c.test else None,
        }
        for c, (ok, line) in zip(p.claims, lines)
        if not ok
    ]
    out(
        f"\n{'passed' if passed else 'FAILED'}: {len(pages)} page(s), {sum(ok for ok, _ in lines)}/{len(lines)} claims, "
        f"{len(outcomes.reports)} tests ({len(failed_tests)} failed), {len(p.problems)} validation problem(s), "
        f"{time.time() - started:.1f} s"
    )
    return {
        "pages": [pg.src_uri for pg in pages],
        "passed": passed,
        "ran_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": round(time.time() - started, 1),
        "failing_claims": failing_claims,
        "failed_tests": failed_tests,
        "problems": problems,
        "node_ids": p.node_ids,
        "failures": failures,
    }


def _session_env(project: Project) -> dict[str, str]:
    """The check's pytest runs as configured by the project, never narrowed by the caller's environment."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return {**env, "PYTHONPATH": str(project.root)}


def _run_session(project: Project, args: list[str], out) -> tuple[int, dict | None, str | None]:
    """pytest in its own process (a test that exits the process cannot end the check as passed);
    the session's outcome comes back as the kb plugin's JSON report, never as pickled objects."""
    import subprocess
    import sys
    import tempfile

    from kb.testrun import read_report

    with tempfile.TemporaryDirectory(prefix="kb-check-") as tmp:
        report_path = Path(tmp) / "report.json"
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", *args, "--kb-report", str(report_path)],
            cwd=project.root,
            env=_session_env(project),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        for line in proc.stdout.rstrip("\n").split("\n"):
            if line.strip():
                out(line)
        running = report_path.with_suffix(".running")
        last = running.read_text(encoding="utf-8") if running.exists() else None
        return proc.returncode, read_report(report_path), last


def _own_part(result: dict, uri: str) -> dict:
    """One page's share of a check of several pages (a snippet file two pages include, saves in a row):
    its own failing claims and problems, and what belongs to no page in particular (a failed test
    that decides none of the failing claims, a problem of the session)."""
    pages = result["pages"]
    failures = [f for f in result.get("failures", []) if isinstance(f, dict)]
    own = [f for f in failures if f.get("page") == uri]
    claimed = {f.get("test") for f in failures}
    # a problem names its file: "docs/<page>:line: ..."; one naming another page is that page's
    named = [q for q in result["problems"] if any(q.startswith(f"docs/{u}:") for u in pages)]
    problems = [q for q in result["problems"] if q.startswith(f"docs/{uri}:") or q not in named]
    tests = [
        t
        for t in result["failed_tests"]
        if t not in claimed and not any(t.startswith(f"docs/{u}") for u in pages if u != uri)
    ]
    return {
        "passed": not (own or problems or tests),
        "failures": own,
        "failing_claims": [f["id"] for f in own],
        "problems": problems,
        "failed_tests": [t for t in result["failed_tests"] if t in tests],
    }


def write_status(path: Path, result: dict, check_id: str | None = None) -> None:
    """Merge a check's result into the live status file (one entry per page), under its lock.

    ``check_id``: the live check (``kb serve``) that marked its pages "checking" with that id; a page
    a newer save has marked since goes on saying "checking" (this result is of the content before)."""
    from kb import live

    def change(data: dict) -> None:
        newer = {u: data[u] for u in result["pages"] if live.marked_since(data.get(u), check_id)}
        merge_status(data, result)
        for uri in result["pages"]:
            if uri in newer:
                data[uri] = newer[uri]
            elif check_id and result.get("running"):
                data[uri]["check"] = check_id  # a partial result: the check goes on

    live.update_status(path, change)  # a damaged file or one not ours (a list, a number): started again


def merge_status(data: dict, result: dict) -> None:
    """A check's result into the live status mapping (one entry per page)."""
    for uri in result["pages"]:
        data[uri] = {
            k: result[k]
            for k in (
                "passed",
                "ran_at",
                "seconds",
                "failing_claims",
                "failed_tests",
                "problems",
                "failures",
                "running",
            )
            if k in result
        }
        if len(result["pages"]) > 1 and not result["passed"]:
            data[uri].update(_own_part(result, uri))
