"""The site: what MkDocs and the kb plugin will make of the project, asked of MkDocs once.

``Site`` holds the Markdown extensions and their configurations as MkDocs
validated them, each file's URL as MkDocs (and the plugins that move files,
such as the blog) gives it, and the pages kb generates, from one ``Layout``.
The MkDocs plugin builds it from the live configuration and files; ``kb check``,
the Anki export, the pytest plugin and the tests load it from ``mkdocs.yml``.

Beside it, pure functions of the project, the knowledge model and MkDocs'
``Files``: the checks that concern files rather than pages (notebook outputs,
two sources with one URL, a symlink out of the project, anything loaded from
another host), the notebook figures the topic pages embed, and which pages a
dirty rebuild must redo as well.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import posixpath
import re
import string
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import markdown
from mkdocs.config import config_options as c
from mkdocs.config import load_config
from mkdocs.config.base import Config
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import MkDocsException
from mkdocs.structure.files import File, Files, get_files
from mkdocs.utils import get_relative_url

from kb.model import KnowledgeBase, includes_of
from kb.project import KbError, Project, SourceError
from kb.render import Layout

PLUGIN = "kb"  # the kb plugin's name in mkdocs.yml (its entry point)
TAGS_MARKER = "<!-- material/tags"  # a page the tags plugin fills in: it has no source page


class KbConfig(Config):
    """The kb plugin's options in mkdocs.yml: where the pages it generates live."""

    claims_page = c.Type(str, default=Layout.claims)
    questions_page = c.Type(str, default=Layout.questions)
    review_page = c.Type(str, default=Layout.review)
    code_dir = c.Type(str, default=Layout.code_dir)


def layout_of(options: KbConfig) -> Layout:
    return Layout(
        claims=options.claims_page,
        questions=options.questions_page,
        review=options.review_page,
        code_dir=options.code_dir,
    )


@dataclass(frozen=True)
class Generated:
    """A file the kb plugin adds to the site: ``kind`` says which, ``subject`` of what."""

    kind: (
        str  # "code" (a snippet's source page), "source" (a page's Markdown), "figure", "claims", "questions", "review"
    )
    subject: str = ""  # the snippet file, the page or the notebook it shows
    k: int = 0  # a figure's number in its notebook (from 1)


@dataclass(eq=False)
class Site:
    """What MkDocs and the kb plugin will make of one project."""

    project: Project
    config: MkDocsConfig = field(repr=False)
    layout: Layout
    load_files: Callable[[], Files] = field(repr=False)

    @classmethod
    def of(cls, project: Project, config: MkDocsConfig, files: Files, options: KbConfig) -> Site:
        """The site of a running build (the MkDocs plugin): its own configuration and files."""
        return cls(project, config, layout_of(options), lambda: files)

    @classmethod
    def load(cls, project: Project) -> Site:
        """The site ``mkdocs build`` would make, read from ``mkdocs.yml`` as MkDocs reads it."""
        shown = project.rel(project.config_file)
        said = _Said()
        logging.getLogger("mkdocs").addHandler(said)
        try:
            config = load_config(str(project.config_file))
        except MkDocsException as e:  # MkDocs logs what is wrong, then aborts
            raise KbError(f"{shown}: {said.errors[0] if said.errors else e}") from None
        finally:
            logging.getLogger("mkdocs").removeHandler(said)
        plugin = config.plugins.get(PLUGIN)
        if plugin is None:
            raise SourceError(shown, None, f"plugin '{PLUGIN}' is not configured")
        # MkDocs resolves pymdownx.snippets' base_path from the current directory: the build runs
        # from the project root, so that is where it is resolved here, wherever kb runs from.
        for options in config.mdx_configs.values():
            if isinstance(options, dict) and isinstance(options.get("base_path"), list):
                options["base_path"] = [str(project.root / p) for p in options["base_path"]]
        return cls(project, config, layout_of(plugin.config), lambda: _files(config, plugin, shown))

    @cached_property
    def files(self) -> Files:
        return self.load_files()

    # ---- Markdown --------------------------------------------------------------------------

    def markdown(self) -> markdown.Markdown:
        """A Markdown converter with the site's extensions and configurations (as Material's blog makes one)."""
        return markdown.Markdown(extensions=self.config.markdown_extensions, extension_configs=self.config.mdx_configs)

    # ---- URLs ------------------------------------------------------------------------------

    def url(self, src_uri: str) -> str:
        """The URL of a docs-relative source, as MkDocs gives it (a generated page's too)."""
        f = self.files.get_file_from_path(src_uri)
        if f is None:  # a page kb generates (MkDocs places it as it places any other)
            f = File(
                src_uri, src_dir=None, dest_dir=self.config.site_dir, use_directory_urls=self.config.use_directory_urls
            )
        return f.url

    def href(self, from_uri: str, to_uri: str, anchor: str = "") -> str:
        """A link for raw HTML, which MkDocs does not rewrite: from one source's URL to another's."""
        to = self.url(to_uri)
        target = get_relative_url(to, self.url(from_uri))
        if (to == "" or to.endswith("/")) and not target.endswith("/"):
            target += "/"
        return f"{target}#{anchor}" if anchor else target

    # ---- what kb generates -------------------------------------------------------------------

    def generated(self, kb: KnowledgeBase) -> dict[str, Generated]:
        """Every file the kb plugin adds to the site, by docs-relative URI."""
        layout, out = self.layout, {}
        root = self.project.root
        for path in sorted(self.project.snippets_dir.rglob("*.py")):
            if "__pycache__" not in path.parts:
                rel = path.relative_to(root).as_posix()
                out[layout.code(rel)] = Generated("code", rel)
        for nb in [f for f in self.files if f.src_uri.endswith(".ipynb")]:
            for k in range(1, len(self.figures(nb.src_uri)) + 1):
                out[figure_uri(nb.src_uri, k)] = Generated("figure", nb.src_uri, k)
        if not self.config.repo_url:  # no forge to edit on: the edit link shows the page's source
            for page in kb.pages.values():
                # posts grow through `kb new`, not by editing; the tags plugin would take a shown marker
                if not page.is_post and TAGS_MARKER not in page.doc.body:
                    out[layout.source(page)] = Generated("source", page.src_uri)
        for kind in ("claims", "questions", "review"):
            out[getattr(layout, kind)] = Generated(kind)
        return out

    def figures(self, notebook_uri: str) -> list[bytes]:
        cache = self.__dict__.setdefault("_figures", {})
        if notebook_uri not in cache:
            cache[notebook_uri] = notebook_figures(self.project.docs_dir / notebook_uri)
        return cache[notebook_uri]

    def exists(self, kb: KnowledgeBase, uri: str) -> bool:
        """Whether the built site will have this docs-relative file: a source MkDocs keeps, or a generated one."""
        f = self.files.get_file_from_path(uri)
        if f is not None:  # a plugin's file is included or not later (the blog decides when it builds the nav)
            return not f.inclusion.is_excluded() or bool(getattr(f, "generated_by", None))
        return uri in self.generated(kb)


class _Said(logging.Handler):
    """The errors MkDocs logs while it reads its configuration."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.errors: list[str] = []

    def emit(self, record):
        self.errors.append(record.getMessage())


def _files(config: MkDocsConfig, kb_plugin, shown: str) -> Files:
    """MkDocs' files, after the other plugins that add files or move them (the blog, notebooks) have run."""
    files = get_files(config)
    events = [m for m in config.plugins.events["files"] if getattr(m, "__self__", None) is not kb_plugin]
    plugins = list(dict.fromkeys(m.__self__ for m in events))
    try:
        for p in plugins:
            if hasattr(p, "on_startup"):
                p.on_startup(command="build", dirty=False)
        for m in config.plugins.events["config"]:
            if getattr(m, "__self__", None) in plugins:
                config = m(config) or config
        for m in events:
            files = m(files, config=config) or files
    except MkDocsException as e:
        raise KbError(f"{shown}: {e}") from None
    return files


# What loads a URL when a page is shown (not a link to follow), by element: read from the HTML as a browser reads
# it (html.parser: tag and attribute names in any case, quoted values read whole, character references decoded).
LOADS = {
    "script": ("src", "href", "xlink:href"),
    "img": ("src", "srcset"),
    "image": ("src", "href", "xlink:href"),  # SVG's image, and HTML's <image> (which the parser reads as <img>)
    "source": ("src", "srcset"),
    "track": ("src",),
    "input": ("src",),
    "video": ("src", "poster"),
    "audio": ("src",),
    "embed": ("src",),
    "object": ("data",),
    "iframe": ("src",),
    "link": ("href",),
    "base": ("href",),  # every relative URL of the page then loads from its host
    "use": ("href", "xlink:href"),
    "feimage": ("href", "xlink:href"),
    "body": ("background",),
    "table": ("background",),
    "td": ("background",),
    "th": ("background",),
}
# A <link> whose every rel token is one of these is a link to follow, not a load.
NOT_A_LOAD = {"canonical", "alternate", "me", "author", "license"}
CSS_URL = re.compile(r"""url\(\s*(["']?)(.*?)\1\s*\)|@import\s*(["'])(.*?)\3""", re.I | re.S)
# image-set() (and -webkit-image-set()) reads a quoted string among its candidates as a URL, without url()
IMAGE_SET = re.compile(r"image-set\(((?:[^()]|\([^()]*\))*)\)", re.I | re.S)
CSS_STRING = re.compile(r"""(["'])(.*?)\1""", re.S)
CSS_ESCAPE = re.compile(r"\\([0-9a-fA-F]{1,6})\s?|\\(.)", re.S)


def foreign(url: str) -> bool:
    """Whether a URL, as the browser's URL parser reads it (spaces and control characters at its ends
    stripped, tabs and newlines dropped, \\ read as /), is on another host (not this machine's 127.0.0.1)."""
    u = re.sub(r"[\t\n\r]", "", url).strip(_URL_ENDS).replace("\\", "/")
    scheme = re.match(r"([a-zA-Z][a-zA-Z0-9+.-]*):", u)
    if scheme and scheme.group(1).lower() not in ("http", "https", "ftp", "ws", "wss"):
        return False  # data:, blob:, a relative path with a colon later on: nothing from another host
    if not scheme and not u.startswith("//"):
        return False
    try:
        host = urlsplit(u if scheme else "http:" + u).hostname
    except ValueError:
        return True  # what Python cannot read, a browser may: another host unless shown otherwise
    return host != "127.0.0.1"


def css_foreign(css: str) -> bool:
    css = CSS_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)) if m.group(1) else m.group(2), css)
    urls = [m.group(2) if m.group(1) is not None else m.group(4) for m in CSS_URL.finditer(css)]
    urls += [u.group(2) for m in IMAGE_SET.finditer(css) for u in CSS_STRING.finditer(m.group(1))]
    return any(foreign(u) for u in urls)


# A start tag, as a browser's tokenizer ends it: a quoted value (after "=") is read whole, so a ">" inside one
# (alt="a>b") does not end the tag. Possessive (*+): each character is read once (no backtracking on a tag never
# closed). LOAD_TAG: only the elements that load, by their lower-case names (it reads the page in lower case; the
# regex engine passes over every other tag at its name).
_ATTRS = r"""(?:=\s*"[^"]*"|=\s*'[^']*'|[^>])*+>"""
START_TAG = re.compile(r"<([a-zA-Z][^\s/>]*)" + _ATTRS)
LOAD_TAG = re.compile(r"<(?:" + "|".join(sorted(LOADS, key=len, reverse=True)) + r")(?=[\s/>])" + _ATTRS)
STYLE_OPEN = re.compile(r"<style(?=[\s/>])" + _ATTRS)  # a <style> element's start tag (in the page in lower case)
STYLE_CLOSE = re.compile(r"</style[\t\n\f\r />]")
# Every URL on another host holds one of these (tabs and newlines, which a URL parser drops, taken out first):
# "//" or a backslash (read as "/"), a scheme's ":", or a character reference ("&#58;", "&sol;") that stands
# for one. A tag without any of them is not read further: most of a page's tags (local assets, code spans).
_MAY_LEAVE = re.compile(r"//|\\|:|&")
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
STYLE_ATTR = re.compile(r"style\s*=")  # a style attribute, or a superset (read in lower case): CSS may load a URL
_URL_ENDS = "".join(map(chr, range(33)))  # what a URL parser strips from both ends: spaces, control characters


def _may_leave(tag: str) -> bool:
    return _MAY_LEAVE.search(tag.replace("\t", "").replace("\n", "").replace("\r", "")) is not None


def external_load(html: str) -> str | None:
    """The first element that loads something from another host when the page is shown (not a link to follow):
    an element that loads (``LOADS``), any element's style attribute, or a <style> element."""
    low = html.lower()  # where to look: names and "style" in any case, found in C
    if len(low) != len(html):  # a letter whose lower case is longer (İ): ASCII letters only, positions kept
        low = html.translate(_ASCII_LOWER)
    found: list[tuple[int, str]] = []  # (where, the tag): the first in the page is named
    for m in LOAD_TAG.finditer(low):
        tag = html[m.start() : m.end()]
        if _may_leave(tag) and _tag_loads(tag):
            found.append((m.start(), tag))
            break
    # A style attribute's tag: the page's tags read forward from its start (in C, only as far as the last
    # "style="), as a browser's tokenizer reads them; read back from "style=", a "<" inside an earlier quoted
    # value (title="<b>") looked like the tag's start.
    tags = START_TAG.finditer(html)
    tag = next(tags, None)
    read = -1  # the start of the last tag read: a later style attribute inside it is that tag's
    for s in STYLE_ATTR.finditer(low):
        while tag is not None and tag.end() <= s.start():
            tag = next(tags, None)
        if tag is None:
            break
        if tag.start() < s.start() and tag.start() != read:
            read = tag.start()
            if _may_leave(tag.group(0)) and _tag_loads(tag.group(0)):
                found.append((tag.start(), tag.group(0)))
                break
    for m in STYLE_OPEN.finditer(low):  # a <style> element: its CSS runs to </style> (or to the end of the page)
        close = STYLE_CLOSE.search(low, m.end())  # "</style" then a space, "/" or ">" ("</stylex>" ends nothing)
        end = close.start() if close else -1
        css = low[m.end() : end if end >= 0 else len(low)]
        # url(, @import and image-set() load; a CSS escape (\\75 rl) may spell them: CSS with none of these loads
        # nothing
        may_load = "url" in css or "import" in css or "image-set" in css or "\\" in css
        if may_load and css_foreign(html[m.end() : m.end() + len(css)]):
            found.append((m.start(), html[m.start() : m.end()]))  # the <style> tag
            break
    return min(found)[1] if found else None


class _StartTag(HTMLParser):
    """One start tag, read as a browser reads it: whether it loads something from another host."""

    def read(self, tag: str) -> bool:
        self.reset()
        self.loads = False
        self.feed(tag)
        self.close()
        return self.loads

    def handle_starttag(self, tag, attrs):
        values = {k: v or "" for k, v in attrs}
        urls = [values[a] for a in LOADS.get(tag, ()) if a in values and a != "srcset"]
        if "srcset" in LOADS.get(tag, ()):  # each candidate: a URL, then its size
            urls += [c.split()[0] for c in values.get("srcset", "").split(",") if c.split()]
        rel = set(values.get("rel", "").lower().split())
        if tag == "link" and rel and rel <= NOT_A_LOAD:
            urls = []
        self.loads = self.loads or any(foreign(u) for u in urls) or css_foreign(values.get("style", ""))


def _tag_loads(tag: str) -> bool:
    return _StartTag(convert_charrefs=True).read(tag)


def notebook_figures(path: Path) -> list[bytes]:
    """The PNG outputs of a committed, executed notebook, in order.

    Topic pages embed them (``![...](dpo_toy.figure-1.png)``), so a figure is shown
    where it is discussed and still comes from code the test suite executes.
    """
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:  # a merge left conflict markers, a truncated file
        line = getattr(e, "lineno", None)
        raise SourceError(str(path), line, f"not a readable notebook ({getattr(e, 'msg', e)})") from None
    return [
        base64.b64decode(out["data"]["image/png"])
        for cell in nb.get("cells", [])
        if cell.get("cell_type") == "code"
        for out in cell.get("outputs", [])
        if "image/png" in out.get("data", {})
    ]


# FIGURE (from kb.model): the name figure_uri gives


def figure_uri(notebook_uri: str, k: int) -> str:
    """``topics/dpo_toy.ipynb``, 1 -> ``topics/dpo_toy.figure-1.png`` (k counts figures from 1)."""
    return f"{notebook_uri.removesuffix('.ipynb')}.figure-{k}.png"


def notebook_errors(project: Project, files: Files) -> list[SourceError]:
    """A notebook the site shows must not show an error (its outputs are committed)."""
    errors = []
    for f in files:
        if not f.src_uri.endswith(".ipynb"):
            continue
        shown_path = project.rel(f.abs_src_path)
        try:
            nb = json.loads(Path(f.abs_src_path).read_text(encoding="utf-8"))
        except (ValueError, OSError) as e:
            errors.append(SourceError(shown_path, None, f"not a readable notebook ({e})"))
            continue
        code = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
        for k, cell in enumerate(code, 1):
            for out in cell.get("outputs", []):
                shown = "".join(out.get("data", {}).get("text/html", "")) if isinstance(out.get("data"), dict) else ""
                if external_load(shown) or "<script" in shown.lower():
                    errors.append(
                        SourceError(
                            shown_path,
                            None,
                            f"code cell {k} shows HTML that runs a script or "
                            "loads from another host; the site must work offline",
                        )
                    )
                if out.get("output_type") == "error":
                    errors.append(
                        SourceError(
                            shown_path,
                            None,
                            f"code cell {k} shows an error "
                            f"({out.get('ename')}: {out.get('evalue')}); fix it and run `make notebooks`",
                        )
                    )
    return errors


def outside(project: Project, files: Files) -> list[SourceError]:
    """A file of the site that is a symlink out of the project would publish what it points to."""
    errors = []
    for f in files:
        if f.abs_src_path is None or f.src_uri.startswith("assets/vendor/"):  # vendored: checked by hash
            continue
        if not Path(os.path.abspath(f.abs_src_path)).is_relative_to(project.docs_dir):
            continue  # the theme's own files
        if not project.inside(Path(f.abs_src_path), project.root):
            errors.append(
                SourceError(
                    project.rel(f.abs_src_path),
                    None,
                    "is a symlink out of the project: the site would publish what it points to",
                )
            )
    return errors


def url_clashes(project: Project, config: MkDocsConfig, files: Files) -> list[SourceError]:
    """Two sources that would be rendered at one URL (MkDocs keeps one and says nothing).

    A notebook becomes a page (mkdocs-jupyter): its URL is the one MkDocs gives a page of its name.
    """
    seen: dict[str, str] = {}
    errors = []
    for f in files:
        if not f.src_uri.endswith((".md", ".ipynb")) or f.abs_src_path is None:
            continue
        as_page = File(
            f"{posixpath.splitext(f.src_uri)[0]}.md",
            src_dir=None,
            dest_dir=config.site_dir,
            use_directory_urls=config.use_directory_urls,
        )
        url = as_page.url.rstrip("/")
        if url in seen:
            errors.append(
                SourceError(
                    project.rel(f.abs_src_path),
                    None,
                    f"gets the same URL /{url}/ as docs/{seen[url]}: rename one of them",
                )
            )
        seen.setdefault(url, f.src_uri)
    return errors


def file_errors(project: Project, config: MkDocsConfig, files: Files) -> list[SourceError]:
    return notebook_errors(project, files) + url_clashes(project, config, files) + outside(project, files)


def rebuild_dependents(
    kb: KnowledgeBase, files: Files, last_refs: dict[str, set[str]], since: float | None = None
) -> dict[str, set[str]]:
    """In a dirty rebuild (kb serve), rebuild what changed and the pages it shows up in.

    What changed is decided by modification time against the start of the previous build
    (``since``): MkDocs' own test compares a page with its output file, which a blog post
    never matches (the blog plugin moves posts to their dated URLs), so every post would be
    rebuilt on every save. A topic page's claims put verdicts into journal posts, so those
    posts are rebuilt with it; a page that includes a changed snippet is rebuilt; a new or
    edited note appears in the journal's index, archive and category pages, so then
    everything is rebuilt.
    """
    refs = defaultdict(set)
    for owner in [*kb.claims, *kb.answers]:
        refs[owner.page.src_uri] |= {r.post.src_uri for r in owner.refs}
    pages = {f.src_uri: f for f in files.documentation_pages() if f.src_uri.endswith(".md") and f.abs_src_path}
    if since is None:  # the first build: MkDocs builds everything anyway
        return dict(refs)
    changed = {uri for uri, f in pages.items() if _mtime(f.abs_src_path) > since}
    root = kb.project.root
    changed_snippets = {
        p.relative_to(root).as_posix() for p in kb.project.snippets_dir.rglob("*.py") if _mtime(p) > since
    }
    if changed_snippets:
        changed |= {uri for uri, page in kb.pages.items() if any(i.path in changed_snippets for i in includes_of(page))}
    if any(uri not in kb.pages or kb.pages[uri].is_post for uri in changed):
        force = set(pages)
    else:
        force = changed.union(*(refs[u] | last_refs.get(u, set()) for u in changed))
    for uri, f in pages.items():
        f.is_modified = (lambda: True) if uri in force else (lambda: False)
    return dict(refs)  # the next dirty rebuild compares with these


def _mtime(path) -> float:
    try:
        return os.path.getmtime(path)
    except OSError:
        return float("inf")  # gone or unreadable: treat as changed


# ---- the glossary: every name of a term, for search ----------------------------------------------

GLOSSARY = "glossary.md"  # docs-relative: a table, one term a row (see the page itself)
_MD_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_NAME_SPLIT = re.compile(r"[；;]")


@dataclass(frozen=True)
class Term:
    line: int
    names: tuple[str, ...]  # the Chinese name, the English name, then the other names
    page: str  # the docs-relative page that explains it
    anchor: str  # its section there ("" for the page itself)


def glossary_terms(text: str, rel: str, glossary_uri: str = GLOSSARY) -> list[Term]:
    """The glossary's rows: ``| 术语 | English | 其他名称（；分隔） | [讲解](page.md#section) |``.

    A row without a link to the page that explains it is refused, ``file:line``.
    """
    terms = []
    rows = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.lstrip().startswith("|")]
    for n, line in rows[2:]:  # after the header and its separator row
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 4:
            raise SourceError(
                rel, n, f"a glossary row needs 4 cells (术语 | English | 其他名称 | 讲解), found {len(cells)}"
            )
        link = _MD_LINK.search(cells[3])
        if not link:
            raise SourceError(
                rel, n, "a glossary row must link to the page that explains the term: [title](page.md#section)"
            )
        target, _, anchor = link.group(1).partition("#")
        page = posixpath.normpath(posixpath.join(posixpath.dirname(glossary_uri), target))
        names = [cells[0], cells[1], *_NAME_SPLIT.split(cells[2])]
        names = tuple(dict.fromkeys(name.strip().strip("`") for name in names if name.strip()))
        terms.append(Term(n, names, page, anchor))
    return terms


def search_names(terms: list[Term], url_of: Callable[[str], str | None]) -> dict[str, list[str]]:
    """Search index location (``url#anchor``) -> every name of the terms explained there.

    Added to that entry's ``tags`` (Material weighs tags far above text): searching any name of a term
    puts the section that explains it first.
    """
    out: dict[str, list[str]] = defaultdict(list)
    for term in terms:
        url = url_of(term.page)
        if url is None:
            continue  # a missing page: MkDocs' strict link validation names it
        where = f"{url}#{term.anchor}" if term.anchor else url
        out[where] += [n for n in term.names if n not in out[where]]
    return dict(out)
