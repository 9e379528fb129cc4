"""One place says what the site is: ``kb.site.Site``, asked of MkDocs.

The Markdown extensions are named in ``mkdocs.yml`` only, a page's URL comes from
MkDocs' ``File.url`` only, and the pages kb generates are named by ``Layout`` only:
a second copy in kb/ or tests/ would drift from the first.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import ROOT

from kb.render import Layout

SOURCES = sorted(
    p for folder in ("kb", "tests", "devtools") for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts
)
# What a hand-made URL formula strips or tests: MkDocs' index pages and the .md suffix.
URL_PARTS = {"index", "/index", "README", "/README", ".md", "index.md", "README.md"}
STEMS = {"index", "/index", "README", "/README"}  # what a stem is tested for (choosing pages by kind is fine)


def _strings(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [(n.lineno, n.value) for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def test_the_markdown_extensions_are_named_only_in_mkdocs_yml(site):
    # A list of two or more of them, or a dotted one (an extension's own name), is a second copy.
    # (Single words such as "admonition" also name other things: a kind of question block.)
    names = set(site.config.markdown_extensions)
    assert len(names) >= 10 and any("." in n for n in names), names
    found = []
    for p in SOURCES:
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            items = (
                [e.value for e in getattr(node, "elts", []) if isinstance(e, ast.Constant)]
                if isinstance(node, (ast.List, ast.Tuple, ast.Set))
                else []
            )
            dotted = isinstance(node, ast.Constant) and node.value in names and "." in node.value
            if dotted or len(names.intersection(items)) >= 2:
                found.append(f"{_where(p, node.lineno)}: {ast.unparse(node)[:80]}")
    assert not found, "a second list of Markdown extensions (use Site.markdown()):\n" + "\n".join(found)


def test_no_url_formula_outside_mkdocs():
    found = []
    for p in SOURCES:
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            parts = {"removesuffix": URL_PARTS, "rpartition": URL_PARTS, "replace": URL_PARTS, "endswith": STEMS}.get(
                node.func.attr, set()
            )
            if any(isinstance(a, ast.Constant) and a.value in parts for a in node.args):
                found.append(f"{_where(p, node.lineno)}: .{node.func.attr}({ast.unparse(node.args[0])})")
    assert not found, "a page URL computed by hand (use Site.url, MkDocs' File.url):\n" + "\n".join(found)


def test_the_generated_pages_are_named_only_by_the_layout():
    names = {Layout.claims, Layout.questions, Layout.review}
    found = [
        f"{_where(p, line)}: {value}"
        for p in SOURCES
        if p != ROOT / "kb" / "render.py"
        for line, value in _strings(p)
        if value in names or value.endswith(tuple(f"/{n}" for n in names))
    ]
    assert not found, "a second list of generated pages (use Site.generated, Layout):\n" + "\n".join(found)


@pytest.mark.parametrize(
    "formula",
    [
        "url = f\"{site}/{page.removesuffix('.md').removesuffix('index')}\"",
        'if stem == "index" or stem.endswith("/index"): stem = stem.rpartition("/")[0]',
    ],
)
def test_the_url_check_sees_the_formulas_it_replaced(tmp_path, formula, monkeypatch):
    # The three formulas this project used to have (anki, render, site) are what the check looks for.
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "x.py").write_text(formula + "\n", encoding="utf-8")
    monkeypatch.setattr(__import__(__name__), "SOURCES", [tmp_path / "kb" / "x.py"])
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    with pytest.raises(AssertionError, match="computed by hand"):
        test_no_url_formula_outside_mkdocs()


def test_the_extension_check_sees_the_list_it_replaced(tmp_path, site, monkeypatch):
    # kb check's own list (12 of the 17 extensions) and the tests' own list were such copies.
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "x.py").write_text('EXT = ["abbr", "admonition", "toc"]\n', encoding="utf-8")
    monkeypatch.setattr(__import__(__name__), "SOURCES", [tmp_path / "kb" / "x.py"])
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    with pytest.raises(AssertionError, match="second list of Markdown extensions"):
        test_the_markdown_extensions_are_named_only_in_mkdocs_yml(site)


# ---- the per-page scans of a build: the same answers as the regular expressions that define them ----


LOAD_CASES = [  # (page, the element external_load names: the first that loads from another host)
    ('<a href="https://x.org">out</a><img src="//cdn.x/y.png">', '<img src="//cdn.x/y.png">'),
    ('<img alt="<script" src=//x.org/a.js>', '<img alt="<script" src=//x.org/a.js>'),  # "<" in a value
    ('<p>//</p><SCRIPT SRC="HTTPS://x.org/a.js"></SCRIPT>', '<SCRIPT SRC="HTTPS://x.org/a.js">'),
    (
        '<link rel="canonical" href="https://x.org/"><link rel="stylesheet" href="https://x.org/a.css">',
        '<link rel="stylesheet" href="https://x.org/a.css">',
    ),
    ('<img src="http://127.0.0.1:8000/a.png"><img src="//127.0.0.1x/b">', '<img src="//127.0.0.1x/b">'),
    ("<imgx src=\"//x.org/a\"><img\nsrc = '//x.org/b'>", "<img\nsrc = '//x.org/b'>"),
    ('<img src="//x.org/never-closed"', None),  # no ">": no tag, and the browser loads nothing either
    ('<script>// a comment</script><iframe data-x="//" src="a.html"><video src=//x.org/v>', "<video src=//x.org/v>"),
    ("// at the start <img src=a.png> // <embed src=//x.org/e>", "<embed src=//x.org/e>"),
    (
        '<img src="a.png" srcset="b.png 1x, https://x.org/c.png 2x">',
        '<img src="a.png" srcset="b.png 1x, https://x.org/c.png 2x">',
    ),
    # a ">" inside a quoted value before the load (a browser reads the tag whole): it was missed
    ('<img alt="a>b" src="https://cdn.x/y.png">', '<img alt="a>b" src="https://cdn.x/y.png">'),
    ("<script data-note='1 > 0' src=//cdn.x/a.js></script>", "<script data-note='1 > 0' src=//cdn.x/a.js>"),
    ("<img alt=it's src=//x.org/a>", "<img alt=it's src=//x.org/a>"),  # an unquoted value with a quote in it
    ('<img alt="a>b" src="a.png"><p>src="//x.org/text"</p>', None),  # text after a tag is not in the tag
    ('<video src="v.mp4" poster="https://x.org/p.jpg">', '<video src="v.mp4" poster="https://x.org/p.jpg">'),
    ('<track src="//x.org/t.vtt">', '<track src="//x.org/t.vtt">'),
    ('<img srcset="a.png 1x,//x.org/b.png 2x">', '<img srcset="a.png 1x,//x.org/b.png 2x">'),
    ('<img srcset="a.png 1x, http://127.0.0.1:8000/b.png 2x">', None),
    # a "<" inside an earlier quoted value of the same tag: the style attribute's tag is the one a browser reads
    # from the start (it was looked for back from "style=", stopped at "<b>" and missed)
    (
        '<div title="<b>" style="background:url(//x.org/a.png)">x</div>',
        '<div title="<b>" style="background:url(//x.org/a.png)">',
    ),
    (
        '<div title="<x y=\'" style="background:url(//x.org/a.png)"><p title=\'x\'>',
        '<div title="<x y=\'" style="background:url(//x.org/a.png)">',
    ),
    # </stylex> does not end a <style> element (only "</style" then a space, "/" or ">" does): the CSS after it loads
    ("<style></stylex>{} body{background:url(//x.org/a.png)}</style>", "<style>"),
    ("<style>p{}</style\n>b{background:url(//x.org/a.png)}", None),  # ended: what follows is text
    # image-set() reads a quoted string as a URL (no url() needed): a browser loads it
    (
        "<div style=\"background-image:-webkit-image-set('a.png' 1x, '//x.org/b.png' 2x)\">",
        "<div style=\"background-image:-webkit-image-set('a.png' 1x, '//x.org/b.png' 2x)\">",
    ),
    ('<style>p{background:image-set("a.png" 1x, url(b.png) 2x)}</style>', None),
]
MERMAID_USED_CASES = [
    '<div class="mermaid">graph</div>',
    '<pre class="a mermaid b">',
    '<pre class="mermaidx">',
    '<pre class="x-mermaid">',  # "-" is no word character: a word boundary
    '<pre class="_mermaid">',
    '<pre class="a" data-x="mermaid">',
    'class="mermaid',
    'mermaid class="" mermaid',
    '<script src="assets/vendor/mermaid/mermaid.min.js"></script>',
    'class="a\nmermaid"',
    "",
]


@pytest.mark.parametrize(("html", "load"), LOAD_CASES)
def test_external_load_names_the_first_element_loading_from_another_host(html, load):
    from kb import site as kb_site

    assert kb_site.external_load(html) == load


@pytest.mark.parametrize("html", MERMAID_USED_CASES)
def test_mermaid_used_is_what_its_regex_finds(html):
    from kb import mkdocs_plugin

    assert mkdocs_plugin.mermaid_used(html) == bool(mkdocs_plugin.MERMAID_USED.search(html))


def test_mermaid_used_agrees_with_its_regex_on_random_html():
    # Seeded text made of the pieces the scan looks for, in every order (5,000 texts of 12-40 pieces):
    # the cases above are the ones found by hand, this is what nobody thought of.
    import random

    from kb import mkdocs_plugin

    pieces = ["<", ">", "/", '"', "'", " ", "\n", "=", "pre", "div", "x", "_", "-", 'class="', "mermaid", "é"]
    rng = random.Random(0)
    used = 0
    for _ in range(5000):
        html = "".join(rng.choice(pieces) for _ in range(rng.randint(12, 40)))
        assert mkdocs_plugin.mermaid_used(html) == bool(mkdocs_plugin.MERMAID_USED.search(html)), html
        used += bool(mkdocs_plugin.MERMAID_USED.search(html))
    # both answers are compared many times, not only "nothing found" (1%: 50 texts of each kind)
    assert min(used, 5000 - used) >= 50, used


@pytest.mark.parametrize(
    "text",
    ["plain  text\t\twith spaces", r"a \(\pi_\theta\) b", "$x$ and $$y$$", r"\[z\]", "cost $5", "back\\slash  x", ""],
)
def test_search_text_is_the_tex_pass_then_the_space_pass(text):
    # a text without a backslash or dollar skips the TeX pass: the answer is still both passes'
    import re

    from kb import render

    full = re.sub(r"[ \t]{2,}", " ", render.TEX.sub(render._tex_as_text, text))
    assert render.search_text(text) == full
