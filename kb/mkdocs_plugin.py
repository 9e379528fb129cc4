"""MkDocs plugin: the hooks that hand MkDocs' own files to the knowledge model and
write back what ``kb.render`` makes of it.

The model is built once per build from the files MkDocs collected (so what is
checked is what is rendered), for the project of the ``mkdocs.yml`` being built.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.plugins import BasePlugin, event_priority
from mkdocs.structure.files import File, Files
from mkdocs.utils import get_relative_url

from kb import cards, live, model, render, review_server, site, sources, vendor
from kb.live import LIVE_FILE, STATUS_ENV
from kb.model import KnowledgeBase
from kb.project import KbError, Project, SourceError

HTML_ID = re.compile(r'\bid="([^"]+)"')
# Mermaid (2.7 MB) is listed in extra_javascript for every page; only a page with a diagram keeps it.
MERMAID_SCRIPT = re.compile(r'[ \t]*<script src="[^"]*assets/vendor/mermaid/mermaid\.min\.js"></script>\n?')
MERMAID_USED = re.compile(r'class="[^"]*\bmermaid\b')
# The same patterns without their leading part, so that they start with a literal, which the regex engine
# looks for at C speed: the leading part (a word boundary, indentation) is checked around each hit.
_ID_AT = re.compile(r'id="([^"]+)"')
_WORD = re.compile(r"\w")
_MERMAID_TAG = re.compile(MERMAID_SCRIPT.pattern.removeprefix("[ \\t]*"))


def html_ids(html: str) -> set[str]:
    """``set(HTML_ID.findall(html))``, found about ten times faster (once per page of a long journal)."""
    found, pos = set(), 0
    while m := _ID_AT.search(html, pos):
        if m.start() and _WORD.match(html, m.start() - 1):  # no word boundary before "id": not a match here
            pos = m.start() + 1
            continue
        found.add(m.group(1))
        pos = m.end()
    return found


def drop_mermaid(html: str) -> str:
    """``MERMAID_SCRIPT.sub("", html)``, found about ten times faster (once per page)."""
    out, last = [], 0
    for m in _MERMAID_TAG.finditer(html):
        start = m.start()
        while start > last and html[start - 1] in " \t":  # the indentation before the tag goes too
            start -= 1
        out.append(html[last:start])
        last = m.end()
    return "".join(out) + html[last:] if out else html


def mermaid_used(html: str) -> bool:
    """``MERMAID_USED.search(html) is not None``, found from each word "mermaid" (a few in a page) rather
    than from each ``class="`` (hundreds): the nearest ``class="`` before the word decides, as any
    farther one has that one's closing quote between it and the word."""
    at = html.find("mermaid")
    while at >= 0:
        if not (at and _WORD.match(html, at - 1)) and not _WORD.match(html, at + 7):
            q = html.rfind('class="', 0, at)
            if q >= 0 and html.find('"', q + 7, at) < 0:
                return True
        at = html.find("mermaid", at + 1)
    return False


log = logging.getLogger("mkdocs.plugins.kb")


def sources_error(project: Project, path: Path) -> SourceError:
    """Why a page cannot be read, with the line of its first bad byte."""
    try:
        sources.read_text(path, project.rel(path))
    except SourceError as e:
        return e
    return SourceError(project.rel(path), None, "not valid UTF-8; save the file as UTF-8")


class KnowledgeBasePlugin(BasePlugin[site.KbConfig]):
    kb: KnowledgeBase
    project: Project

    def on_config(self, config):
        try:
            self.project = Project.at(config.config_file_path)
        except KbError as e:
            raise PluginError(str(e)) from None
        try:
            vendor.check(Path(config.docs_dir))  # fail closed: never a CDN fallback
        except KbError as e:
            raise PluginError(str(e)) from None
        return config

    def on_startup(self, *, command, dirty):
        self.dirty = command == "serve" and dirty  # kb serve rebuilds only what changed
        self.builds = 0  # kb serve: builds so far (the first one is long: it says how far it got)
        self.last_refs: dict[str, set[str]] = {}
        self.last_build: float | None = None  # start of the previous build
        self.titles: dict[str, str] = {}  # each page's title when it was last built

    def on_serve(self, server, config, builder):
        server.watch(str(self.project.snippets_dir))
        review_server.mount(server)  # kb serve: the 复习 page's grades are answered on the same server
        status = os.environ.get(STATUS_ENV)
        if status:
            # MkDocs' server holds every request until a rebuild ends (seconds): the status line would
            # show the state from before the save all that time. Its status file is answered at once.
            served = server._serve_request
            live_path = server.mount_path + LIVE_FILE

            def serve_request(environ, start_response):
                if environ.get("PATH_INFO") == live_path:
                    body = json.dumps(live.read_status(Path(status)), ensure_ascii=False).encode("utf-8")
                    start_response(
                        "200 OK",
                        [
                            ("Content-Type", "application/json; charset=utf-8"),
                            ("Cache-Control", "no-store"),
                            ("Content-Length", str(len(body))),
                        ],
                    )
                    return [body]
                return served(environ, start_response)

            server._serve_request = serve_request
        return server

    def _say(self, message: str) -> None:
        """kb serve only: a line on the terminal (MkDocs' own log is quiet there)."""
        if os.environ.get(STATUS_ENV):
            print(f"kb serve: {message}", file=sys.stderr, flush=True)

    @event_priority(50)
    def on_files(self, files: Files, config):
        started = time.time()  # a page saved from now on is seen as changed by the next dirty build
        self.build_started, self.pages_done, self.said_at = started, 0, started
        if not getattr(self, "builds", 0):
            self._say(f"building the site for the first time ({len(files.documentation_pages())} pages and notebooks)…")
        pages = []
        errors: list[SourceError] = []
        for f in files.documentation_pages():
            if not f.src_uri.endswith(".md"):
                continue
            try:
                pages.append((f.src_uri, Path(f.abs_src_path), f.content_string))
            except (UnicodeDecodeError, ValueError):
                errors.append(sources_error(self.project, Path(f.abs_src_path)))
        try:
            self.kb = KnowledgeBase.build(self.project, pages)
        except KbError as e:
            raise PluginError(str(e)) from None
        errors += self.kb.errors + site.file_errors(self.project, config, files)
        snippets = self._snippet_texts(errors)
        try:
            reviews = cards.project_log(self.project)
        except SourceError as e:  # a damaged review log: named, never rewritten
            errors.append(e)
            reviews = []
        self._report(errors, files)
        if getattr(self, "dirty", False):  # kb serve: rebuild what changed and what shows it
            self.last_refs = site.rebuild_dependents(self.kb, files, self.last_refs, self.last_build)
            self.last_build = started
        self.files = files
        self.site = site.Site.of(self.project, config, files, self.config)
        self._generate(files, config, {uri: text for uri, _, text in pages}, snippets, reviews)
        return files

    def _report(self, errors: list[SourceError], files: Files) -> None:
        if os.environ.get(STATUS_ENV):  # kb serve: the status line of each page shows the build's problems
            live.record_build_problems(Path(os.environ[STATUS_ENV]), self._live_problems(errors))
        if errors and os.environ.get(STATUS_ENV):  # kb serve: keep serving, the page's status line says what is wrong
            for e in errors:
                log.warning(str(e))
            # A page that cannot be read at all would stop MkDocs (and the blog) and leave every request
            # waiting: it is left out until it is fixed, and its error is shown on every page.
            for f in [f for f in files.documentation_pages() if f.src_uri.endswith(".md")]:
                if f.src_uri not in self.kb.pages:
                    files.remove(f)
        elif errors:
            raise PluginError("\n".join(str(e) for e in errors))

    def _live_problems(self, errors: list[SourceError]) -> list[dict]:
        """Each problem with the docs page it belongs to (None: a file that is no page, shown on every page)."""
        pages = {p.rel: p.src_uri for p in self.kb.pages.values()}
        return [{"page": pages.get(e.path), "problem": str(e)} for e in errors]

    def _snippet_texts(self, errors: list[SourceError]) -> dict[str, str]:
        """Every snippet file's text (each gets a code page); an unreadable one is an error, file:line."""
        out = {}
        for path in sorted(self.project.snippets_dir.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            rel = path.relative_to(self.project.root).as_posix()
            try:
                out[rel] = sources.read_text(path, rel)
            except SourceError as e:
                if not any(str(e) == str(known) for known in errors):
                    errors.append(e)
        return out

    def _generate(
        self, files: Files, config, page_text: dict[str, str], snippets: dict[str, str], reviews: list
    ) -> None:
        """Add the files kb generates: the ones the site says, made by ``kb.render``."""
        layout, kb = self.site.layout, self.kb
        now = datetime.datetime.now(datetime.UTC)
        self.edit_urls: dict[str, str] = {}
        for uri, g in self.site.generated(kb).items():
            if g.kind == "code":
                if g.subject not in snippets:
                    continue  # unreadable: already an error of this build
                content = render.code_page(kb, layout, g.subject, snippets[g.subject])
            elif g.kind == "figure":
                content = self.site.figures(g.subject)[g.k - 1]
            elif g.kind == "source":  # no forge to edit on: the edit link shows the page's source and how to change it
                content = render.source_page(layout, kb.pages[g.subject], page_text[g.subject])
            elif g.kind == "claims":
                content = render.claims_page(kb, layout, self.site.href)
            elif g.kind == "questions":
                content = render.questions_page(kb, layout)
            elif review_server.current() is not None:  # kb serve: a review session instead of the snapshot
                script = get_relative_url("assets/javascripts/review-session.js", self.site.url(uri))
                content = review_server.session_page(kb, layout, review_server.current(), script, now)
            else:
                states = cards.schedule(cards.cards(kb), reviews, now)
                content = render.review_page(kb, layout, states, now)
            f = File.generated(config, uri, content=content)
            files.append(f)
            if g.kind == "source":
                self.edit_urls[g.subject] = f.url

    @event_priority(-100)  # after the blog, which has read its posts by now
    def on_nav(self, nav, config, files):
        # The blog looks each page up among its posts by equality, which compares titles: every post's
        # title from the model (what on_page_markdown gives it below) is set now, before the first page,
        # so that these lookups read a dictionary instead of parsing the Markdown of each later post
        # (1,000 posts: a million parses). The titles the pages get are the same.
        for f in files.documentation_pages():
            source = self.kb.pages.get(f.src_uri)
            if source is not None and source.is_post and f.page is not None and f.page.markdown is not None:
                f.page.meta.setdefault("title", source.title)
        return nav

    def on_env(self, env, config, files):
        # A dirty rebuild (kb serve) reads only the pages it rebuilds; a page it skips has no title,
        # and the nav of every rebuilt page would list it as "None". Its title is the model's
        # (front matter title, else the first "# " heading: what MkDocs reads).
        # A notebook has no model page: the title it had when last built.
        if getattr(self, "dirty", False):
            for f in files.documentation_pages():
                if f.page is None or f.page.markdown is not None or f.page.title is not None:
                    continue
                source = self.kb.pages.get(f.src_uri)
                title = source.title if source is not None else self.titles.get(f.src_uri)
                if title:
                    f.page.title = title
        return env

    def on_page_context(self, context, page, config, nav):
        self.titles[page.file.src_uri] = page.title  # for the dirty rebuilds that skip this page
        return context

    @event_priority(50)
    def on_page_markdown(self, markdown, page, config, files):
        self.pages_done = getattr(self, "pages_done", 0) + 1
        if not getattr(self, "builds", 0) and time.time() - self.said_at >= 3:  # the first build: progress
            self.said_at = time.time()
            total = len(files.documentation_pages())
            self._say(f"{self.pages_done}/{total} pages built ({self.said_at - self.build_started:.0f} s)")
        source = self.kb.pages.get(page.file.src_uri)
        if source is None:
            return markdown
        if source.src_uri in self.edit_urls:
            page.edit_url = get_relative_url(self.edit_urls[source.src_uri], page.url)
        if source.is_post:
            # The blog looks posts up by equality, which compares titles: a title from the front matter
            # is a dictionary lookup, one parsed from the Markdown is a scan (quadratic over a long journal).
            page.meta.setdefault("title", source.title)
        if markdown.split("\n") != source.lines and self._saved_during_build(page.file, markdown):
            # kb serve: the page was saved again after this build read it. The build shows the text its
            # model was made from; the save has already queued the next build, which shows the new text.
            markdown = "\n".join(source.lines)
        try:
            out = render.page_markdown(self.kb, self.site.layout, source, markdown)
        except KbError as e:
            raise PluginError(str(e)) from None
        if os.environ.get(STATUS_ENV) and model.has_checks(self.kb, source):  # kb serve: the page's live check status
            out = render.live_status(source, get_relative_url(LIVE_FILE, page.url)) + out
        return out

    def _saved_during_build(self, file, markdown: str) -> bool:
        """The page file on disk now holds what MkDocs read (so no plugin changed it) and was written after
        this build's model read it."""
        path = Path(file.abs_src_path or "")
        try:
            saved_at = path.stat().st_mtime
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, ValueError):
            return False
        return saved_at >= getattr(self, "build_started", float("inf")) and markdown.strip() in text

    @event_priority(-100)  # after Material's search plugin has written its index
    def on_post_build(self, config):
        self._post_build(config)
        took = time.time() - getattr(self, "build_started", time.time())
        if not getattr(self, "builds", 0):
            self._say(f"ready in {took:.0f} s: open {config.site_url}  (Ctrl-C stops; each saved page is checked)")
        else:
            self._say(f"rebuilt in {took:.1f} s")
        self.builds = getattr(self, "builds", 0) + 1

    def _post_build(self, config):
        status = os.environ.get(STATUS_ENV)
        if status:  # serve the live status file (written by kb serve's checker) beside the pages
            Path(status).parent.mkdir(parents=True, exist_ok=True)
            Path(status).touch()
            link = Path(config.site_dir) / LIVE_FILE
            link.unlink(missing_ok=True)
            link.symlink_to(Path(status).resolve())
        index = Path(config.site_dir) / "search" / "search_index.json"
        if index.is_file():
            data = json.loads(index.read_text(encoding="utf-8"))
            names = self._glossary_names()
            for doc in data.get("docs", []):
                for key in ("title", "text"):
                    if key in doc:
                        doc[key] = render.search_text(doc[key])
                if doc.get("location") in names:  # every name of the terms this section explains
                    doc["tags"] = [
                        *doc.get("tags", []),
                        *(n for n in names[doc["location"]] if n not in doc.get("tags", [])),
                    ]
            index.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")

    def _glossary_names(self) -> dict[str, list[str]]:
        """Search location -> the names of the terms the glossary says are explained there."""
        f = self.files.get_file_from_path(site.GLOSSARY) if getattr(self, "files", None) else None
        if f is None:
            return {}
        try:
            terms = site.glossary_terms(f.content_string, self.project.rel(Path(f.abs_src_path)))
        except SourceError as e:
            raise PluginError(str(e)) from None

        def url_of(uri: str) -> str | None:
            target = self.files.get_file_from_path(uri)
            return target.url if target is not None else None

        return site.search_names(terms, url_of)

    def on_post_page(self, output, page, config):
        if not mermaid_used(output):
            output = drop_mermaid(output)
        # Nothing a page shows may load from another host (a link out is fine): the site works offline.
        found = site.external_load(output)
        if found:
            log.warning(
                f"{page.file.src_uri}: {found[:120]} loads from another host; "
                "the site must work offline (serve the file from docs/ instead)"
            )
        return output

    @event_priority(-100)  # after the blog plugin
    def on_page_content(self, html, page, config, files):
        source = self.kb.pages.get(page.file.src_uri)
        if source is not None and source.is_post and render.EXCERPT_BREAK in (page.markdown or ""):
            # The post itself is rendered; what the blog renders again (once per index, archive and
            # category page) is only its excerpt, so it is given only the excerpt's Markdown.
            head = page.markdown.split(render.EXCERPT_BREAK, 1)[0]
            page.markdown = f"{head}{render.EXCERPT_BREAK}\n\n…\n"
        if source is not None and source.is_post and page.links_to_anchors:
            # The learner's links keep the anchors they had when the note was written (a heading renamed
            # since is not the note's fault): the strict build checks kb's own links in a post, not theirs.
            typed = set(sources.learner_links(source.lines))
            for target, links in list(page.links_to_anchors.items()):
                kept = {anchor: url for anchor, url in links.items() if url not in typed}
                page.links_to_anchors[target] = kept
        return self._anchor_ids(html, page)

    def _anchor_ids(self, html, page):
        # MkDocs only sees ids made by Markdown; the line anchors that Pygments
        # writes into code blocks (evidence links) count too, so that strict
        # anchor validation checks every link to them.
        if page.present_anchor_ids is not None:
            page.present_anchor_ids |= html_ids(html)
        return html
