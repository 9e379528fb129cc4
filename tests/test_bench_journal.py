"""The journal-at-scale measurement: the bare-Material configuration the bench derives from mkdocs.yml,
and the kb plugin's per-page work that a long journal multiplies (same results, less time)."""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

import pytest
from conftest import ROOT, build_in_process, text_of

from devtools.bench import bare_config, ratio_report
from kb import mkdocs_plugin
from kb.project import read_config
from kb.render import Layout

SMALL = """\
site_name: Small
theme:
  name: material
  features:
    - navigation.tabs
plugins:
  - search:
      pipeline: []
  - blog:
      blog_dir: journal
      categories_slugify: !!python/name:kb.topics.slugify
  - kb:
      claims_page: facts.md
  - tags
hooks:
  - kb/render.py
  - hooks/mine.py
markdown_extensions:
  - toc:
      slugify: !!python/object/apply:pymdownx.slugs.slugify
        kwds:
          case: lower
extra_javascript:
  - assets/javascripts/kb-layout.js
nav:
  - Home: index.md
  - Facts: facts.md
  - More:
      - questions.md
      - Code: code/snippets/a.md
      - Kept: topics/code.md
  - Review: review.md
  - Journal:
      - journal/index.md
"""


def rt_load(path: Path):
    """The file as data, its !!python tags read as None (kb's reader): the tags are checked as text."""
    return read_config(path)


def test_bare_config_is_the_project_config_without_kb(tmp_path):
    (tmp_path / "mkdocs.yml").write_text(SMALL, encoding="utf-8")
    bare = bare_config(tmp_path)
    assert bare == tmp_path / "mkdocs.bare.yml"
    assert (tmp_path / "mkdocs.yml").read_text(encoding="utf-8") == SMALL, "the project's config is untouched"
    old, new = rt_load(tmp_path / "mkdocs.yml"), rt_load(bare)
    # the kb plugin goes; every other plugin stays, in order, with its settings as written
    assert [next(iter(p)) if hasattr(p, "keys") else p for p in new["plugins"]] == ["search", "blog", "tags"]
    assert new["plugins"][0] == old["plugins"][0] and new["plugins"][1] == old["plugins"][1]
    # a hook that is a kb module goes, the project's own stays
    assert list(new["hooks"]) == ["hooks/mine.py"]
    # the nav entries of the pages kb generates go (its own claims_page name, the defaults for the
    # others, anything under its code folder); a page merely named "code" stays
    assert new["nav"] == [
        {"Home": "index.md"},
        {"More": [{"Kept": "topics/code.md"}]},
        {"Journal": ["journal/index.md"]},
    ]
    for key in ("site_name", "theme", "markdown_extensions", "extra_javascript"):
        assert new[key] == old[key], key
    text = text_of(bare)
    assert "!!python/name:kb.topics.slugify" in text  # the same slugs for the same categories
    assert "!!python/object/apply:pymdownx.slugs.slugify" in text


def test_bare_config_of_the_project_loads_as_mkdocs_reads_it(tmp_path):
    from mkdocs.config import load_config
    from mkdocs.config.defaults import MkDocsConfig

    (tmp_path / "mkdocs.yml").write_text(text_of(ROOT / "mkdocs.yml"), encoding="utf-8")
    (tmp_path / "docs").symlink_to(ROOT / "docs")
    (tmp_path / "overrides").symlink_to(ROOT / "overrides")
    bare = bare_config(tmp_path)
    MkDocsConfig.plugins.plugin_cache.clear()
    ours = load_config(str(tmp_path / "mkdocs.yml"))
    MkDocsConfig.plugins.plugin_cache.clear()
    theirs = load_config(str(bare))
    MkDocsConfig.plugins.plugin_cache.clear()
    assert "kb" in ours.plugins and "kb" not in theirs.plugins
    assert [n for n in ours.plugins if n != "kb"] == list(theirs.plugins)
    for name in theirs.plugins:
        assert dict(theirs.plugins[name].config) == dict(ours.plugins[name].config), name
    assert theirs.theme["features"] == ours.theme["features"]
    assert theirs.markdown_extensions == ours.markdown_extensions
    assert theirs.mdx_configs.keys() == ours.mdx_configs.keys()
    assert theirs.extra_javascript == ours.extra_javascript and theirs.extra_css == ours.extra_css
    kb_pages = {Layout.claims, Layout.questions, Layout.review}

    def pages(nav) -> list[str]:
        out = []
        for item in nav:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            out += pages(value) if isinstance(value, list) else [value]
        return out

    assert pages(theirs.nav) == [p for p in pages(ours.nav) if p not in kb_pages]


# ---- the per-page scans of the kb plugin: the same answers as the regular expressions they replace ----

ID_CASES = [
    '<h2 id="a">x</h2><p id="b" data-id="c" uid="no" _id="no2" éid="no3">',
    'uid="-id"foo"',  # a hit refused for its word boundary must not hide one that starts inside it
    'id="first" at the start',
    'nothing here, id= not quoted, id="" empty',
    '<a id="x"><a id="x">',
]
SCRIPT = '<script src="../assets/vendor/mermaid/mermaid.min.js"></script>'
MERMAID_CASES = [
    f"<head>\n  {SCRIPT}\n  <script src='other.js'></script>\n</head>",
    f" \t{SCRIPT}{SCRIPT}\n\n",
    f"{SCRIPT}",
    f"x\t{SCRIPT}y",
    "no script here",
    '<script src="assets/vendor/mermaid/mermaid.min.js.map"></script>',
]


@pytest.mark.parametrize("html", ID_CASES)
def test_html_ids_are_the_regex_findings(html):
    assert mkdocs_plugin.html_ids(html) == set(mkdocs_plugin.HTML_ID.findall(html))


@pytest.mark.parametrize("html", MERMAID_CASES)
def test_drop_mermaid_is_the_regex_substitution(html):
    assert mkdocs_plugin.drop_mermaid(html) == mkdocs_plugin.MERMAID_SCRIPT.sub("", html)


def test_the_scans_agree_on_the_built_site(built_site):
    # every page of the real site, and each with the Mermaid script put back where MkDocs writes it
    for page in sorted(built_site.rglob("*.html")):
        html = text_of(page)
        assert mkdocs_plugin.html_ids(html) == set(mkdocs_plugin.HTML_ID.findall(html)), page
        with_script = re.sub(r"(\n[ \t]*)(<script src=\"[^\"]*katex-render\.js\")", rf"\1{SCRIPT}\1\2", html, count=1)
        assert mkdocs_plugin.drop_mermaid(with_script) == mkdocs_plugin.MERMAID_SCRIPT.sub("", with_script), page


def test_no_post_title_is_parsed_from_markdown(mini_project, tmp_path, monkeypatch):
    """The blog compares each page with every post by title; each post's title is set once from the
    model, so no post's Markdown is parsed for it (a long journal: a million parses)."""
    from mkdocs.structure import pages

    parsed: list[str] = []
    real = pages.get_markdown_title

    def spy(markdown_src: str):
        parsed.append(markdown_src)
        return real(markdown_src)

    monkeypatch.setattr(pages, "get_markdown_title", spy)
    ran = build_in_process(mini_project, tmp_path / "site")
    assert ran.returncode == 0, ran.stdout
    posts = [text_of(p) for p in (mini_project / "docs" / "journal" / "posts").glob("*.md")]
    bodies = [p[p.index("\n---", 3) + 4 :].strip()[:40] for p in posts]
    assert posts and not [m for m in parsed if any(b in m for b in bodies)]


@pytest.mark.parametrize(
    "tex", [r"\pi_\theta(a|s)", r"\frac{1}{2}\sum_i x_i^2", r"a &lt; b", r"\mathbb{E}[\log p]", r"\unknownmacro{x"]
)
def test_tex_text_is_what_a_fresh_converter_says(tex):
    """The search teasers' formulas: one shared converter and a cache give what a new converter gives."""
    import html

    from pylatexenc.latex2text import LatexNodes2Text

    from kb import render

    try:
        text = LatexNodes2Text(math_mode="text", strict_latex_spaces=True).latex_to_text(html.unescape(tex))
    except Exception:  # noqa: BLE001 - as tex_text: shown as written
        text = tex
    expected = html.escape(re.sub(r"\s+", " ", text).strip(), quote=False)
    assert render.tex_text(tex) == expected
    assert render.tex_text(tex) == expected  # again, from the cache


def test_the_ratio_pairs_each_run_with_the_bare_run_beside_it():
    # a load that doubles between the pairs leaves each pair's ratio as it is
    line = ratio_report("ratio", [10.0, 20.0, 44.0], [10.0, 25.0, 40.0], 1.0)
    assert "median    0.80" not in line and "median    1.00" in line, line
    assert "runs: 1.00, 0.80, 1.10" in line and "of the medians 0.80" in line and "goal <= 1: ok" in line
    assert ratio_report("ratio", [12.0], [10.0], 1.0).endswith("goal <= 1: OVER)")


def test_escapes_are_the_character_by_character_ones():
    """md_text and the journal's text escapes use str.translate: the same output as replacing each
    character through the table, on seeded random text made of the characters that matter."""
    import random

    from kb import render, sources

    rng = random.Random(0)
    alphabet = list(render.ENTITIES) + list(sources.TEXT_ESCAPES) + list("ab 中文`$") + ["``", "$x$"]
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        expected = "".join(
            part if kept else "".join(render.ENTITIES.get(c, c) for c in part)
            for kept, part in render._split_math(text)
        )
        assert render.md_text(text) == expected, text
        pieces, last = [], 0
        for m in sources.CODE_SPAN.finditer(text):
            pieces += ["".join(sources.TEXT_ESCAPES.get(c, c) for c in text[last : m.start()]), m.group(0)]
            last = m.end()
        pieces.append("".join(sources.TEXT_ESCAPES.get(c, c) for c in text[last:]))
        assert sources._escape_text(text) == "".join(pieces), text


def test_link_is_the_relative_path():
    from kb import render

    for a, b in [(Layout.questions, "journal/posts/2024-01-01.md"), ("topics/sac/critic.md", "topics/dpo.md")]:
        for _ in range(2):  # the second time from the cache
            assert render.link(a, b, "q-3") == posixpath.relpath(b, posixpath.dirname(a) or ".") + "#q-3"
