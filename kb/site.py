"""What the MkDocs plugin checks and adds over MkDocs' own list of files.

Pure functions of the project, the knowledge model and MkDocs' ``Files``: the
checks that concern files rather than pages (notebook outputs, two sources with
one URL, a symlink out of the project, anything loaded from another host), the
notebook figures the topic pages embed, and which pages a dirty rebuild must
redo as well.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections import defaultdict
from pathlib import Path

from mkdocs.structure.files import Files

from kb.model import KnowledgeBase, includes_of
from kb.project import Project, SourceError

# an element that loads something when the page is shown, from another host (not a link to follow)
TAG = re.compile(r"<(?:script|link|img|iframe|source|video|audio|embed|object)\b[^>]*>", re.I)
FOREIGN = re.compile(r'\b(?:src|href|data|srcset)\s*=\s*["\']?(?:https?:)?//(?!127\.0\.0\.1[:/"\'])', re.I)
NOT_A_LOAD = re.compile(r'\brel\s*=\s*["\']?(?:canonical|alternate|me|author|license)\b', re.I)


def external_load(html: str) -> str | None:
    """The first element that loads something from another host when the page is shown (not a link to follow)."""
    for m in TAG.finditer(html):
        tag = m.group(0)
        if FOREIGN.search(tag) and not (tag[:5].lower() == "<link" and NOT_A_LOAD.search(tag)):
            return tag
    return None


def notebook_figures(path: Path) -> list[bytes]:
    """The PNG outputs of a committed, executed notebook, in order.

    Topic pages embed them (``![...](dpo_toy.figure-1.png)``), so a figure is shown
    where it is discussed and still comes from code the test suite executes.
    """
    nb = json.loads(path.read_text(encoding="utf-8"))
    return [
        base64.b64decode(out["data"]["image/png"])
        for cell in nb.get("cells", []) if cell.get("cell_type") == "code"
        for out in cell.get("outputs", []) if "image/png" in out.get("data", {})
    ]


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
                    errors.append(SourceError(shown_path, None, f"code cell {k} shows HTML that runs a script or "
                                              "loads from another host; the site must work offline"))
                if out.get("output_type") == "error":
                    errors.append(SourceError(shown_path, None, f"code cell {k} shows an error "
                                              f"({out.get('ename')}: {out.get('evalue')}); fix it and run `make notebooks`"))
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
            errors.append(SourceError(project.rel(f.abs_src_path), None,
                                      "is a symlink out of the project: the site would publish what it points to"))
    return errors


def url_clashes(project: Project, files: Files) -> list[SourceError]:
    """Two sources that would be rendered at one URL (MkDocs keeps one and says nothing)."""
    seen: dict[str, str] = {}
    errors = []
    for f in files:
        if not f.src_uri.endswith((".md", ".ipynb")) or f.abs_src_path is None:
            continue
        stem = f.src_uri.rsplit(".", 1)[0]
        url = stem.removesuffix("index").removesuffix("README").rstrip("/")
        if url in seen:
            errors.append(SourceError(project.rel(f.abs_src_path), None,
                                      f"gets the same URL /{url}/ as docs/{seen[url]}: rename one of them"))
        seen.setdefault(url, f.src_uri)
    return errors


def file_errors(project: Project, files: Files) -> list[SourceError]:
    return notebook_errors(project, files) + url_clashes(project, files) + outside(project, files)


def rebuild_dependents(kb: KnowledgeBase, files: Files, last_refs: dict[str, set[str]],
                       since: float | None = None) -> dict[str, set[str]]:
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
    changed_snippets = {p.relative_to(root).as_posix() for p in kb.project.snippets_dir.rglob("*.py")
                        if _mtime(p) > since}
    if changed_snippets:
        changed |= {uri for uri, page in kb.pages.items()
                    if any(i.path in changed_snippets for i in includes_of(page))}
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
