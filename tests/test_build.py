"""The site builds strictly and offline with every page the learner expects; breaking a page breaks the build."""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path

import pytest
from conftest import PROJECT, build_in_process, edit, text_of

EXTERNAL = re.compile(
    r'<(?:script|link|img|iframe|source|video|audio)\b[^>]*\b(?:src|href)="(?:https?:)?//(?!127\.0\.0\.1)', re.I
)
PAGE = "docs/foundations/mse-conditional-mean.md"
SNIPPET = "snippets/foundations/mse.py"


def html_pages(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


def test_strict_build_has_home_journal_and_foundations(built_site, model):
    assert (built_site / "index.html").is_file()
    assert (built_site / "foundations" / "mse-conditional-mean" / "index.html").is_file()
    posts = list((built_site / "journal").glob("20*/*/*/*/index.html"))
    assert len(posts) == len(model.posts) >= 3
    home = text_of(built_site / "index.html")
    assert "Not guaranteed to be correct" in home and "Learning Notes (Work in Progress)" in home


def test_no_page_loads_anything_from_another_host(built_site):
    offenders = {}
    for page in html_pages(built_site):
        hits = EXTERNAL.findall(text_of(page))
        if hits:
            offenders[str(page.relative_to(built_site))] = hits[:3]
    assert not offenders, f"pages load assets from other hosts: {offenders}"
    for asset in (
        "assets/vendor/katex/katex.min.js",
        "assets/vendor/katex/fonts",
        "assets/vendor/mermaid/mermaid.min.js",
    ):
        assert (built_site / asset).exists(), f"{asset} is not served by the site"


def test_search_index_segments_chinese(built_site):
    # Material runs jieba over Chinese text and joins the words with \u200b,
    # so a word from inside a sentence is a search term of its own.
    index = json.loads(text_of(built_site / "search" / "search_index.json"))
    docs = [d for d in index["docs"] if d["location"].startswith("foundations/mse-conditional-mean/")]
    assert "\u200b均值\u200b" in " ".join(d["text"] for d in docs), "jieba did not segment the foundations page"


def test_every_category_page_lists_its_posts(built_site, model):
    for key, post in model.posts.items():
        for category in post.categories:
            page = built_site / "journal" / "category" / category.lower().replace(" ", "-") / "index.html"
            assert page.is_file(), f"no category page for {category}"
            assert key in text_of(page), f"{category} page does not list post {key}"


def test_posts_link_to_their_topic_pages_and_keep_hard_breaks(built_site, model):
    for key, post in model.posts.items():
        page = text_of(next((built_site / "journal").glob(f"20*/*/*/{key}/index.html")))
        if any(c in model.topic_pages for c in post.categories):
            assert "相关主题页" in page, f"post {key} does not link its topic pages"
        lines = post.lines
        breaks = [
            a
            for a, b in zip(lines, lines[1:])
            if a.endswith("  ") and a.strip() and b.strip() and not re.match(r"\s*([-*+]|\d+\.)\s", b)
        ]
        assert page.count("<br") >= len(breaks), f"post {key}: the learner's hard line breaks are lost"


def nav_entries(items, out=None) -> list[tuple[str, str]]:
    out = [] if out is None else out
    for item in items:
        if isinstance(item, str):
            out.append(("", item))
        elif isinstance(item, dict):
            for title, value in item.items():
                if isinstance(value, list):
                    nav_entries(value, out)
                else:
                    out.append((title, value))
    return out


def test_every_nav_entry_opens_the_page_it_names(built_site):
    entries = nav_entries(PROJECT.config["nav"])
    notebooks = [(t, uri) for t, uri in entries if uri.endswith(".ipynb")]
    assert len(notebooks) == len(list(PROJECT.docs_dir.rglob("*.ipynb"))), "a notebook is not in the nav"
    for title, uri in entries:
        page = built_site / re.sub(r"(index)?\.(md|ipynb)$", "", uri) / "index.html"
        assert page.is_file(), f"nav entry '{title}' -> {uri}: no page"
        html = text_of(page)
        if uri.endswith(".ipynb"):
            assert "jp-Cell" in html or "jp-CodeCell" in html, (
                f"nav entry '{title}' -> {uri} does not show the notebook"
            )
            assert Path(uri).name in html, f"{uri}: no download link for the notebook"
        else:
            assert "jp-CodeCell" not in html, f"nav entry '{title}' -> {uri} shows a notebook"


# ---- breaking a page breaks the build (each on a small copy of the site, built once) ------------------


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """The mini project with one content mistake of each kind, built once: every mistake is reported."""
    from conftest import MINI_DOCS, MINI_SNIPPETS, copy_project

    root = copy_project(tmp_path_factory.mktemp("broken") / "mini", MINI_DOCS, MINI_SNIPPETS)
    edit(root / PAGE, "mse.py:regress_table", "mse.py:regress_tabel")  # a wrong include
    edit(root / "docs/journal/posts/2025-12-30.md", "  - SAC", "  - RLHF")  # an unknown category
    nb_path = root / "docs/foundations/mse-experiments.ipynb"  # a notebook showing an error
    nb = json.loads(text_of(nb_path))
    cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
    cell["outputs"].append({"output_type": "error", "ename": "ValueError", "evalue": "boom", "traceback": []})
    nb_path.write_text(json.dumps(nb), encoding="utf-8")
    clash = root / "docs/foundations/mse-conditional-mean.ipynb"  # a notebook with a page's URL
    clash.write_text(text_of(nb_path).replace('"ValueError"', '"KeyError"'), encoding="utf-8")
    nb["cells"][-1].setdefault("outputs", []).append(  # a notebook output running a script
        {"output_type": "display_data", "metadata": {}, "data": {"text/html": ["<script>alert(1)</script>"]}}
    )
    nb_path.write_text(json.dumps(nb), encoding="utf-8")
    secret = tmp_path_factory.mktemp("outside") / "secret.md"  # a page that is a symlink out
    secret.write_text("SECRET-OUTSIDE-THE-PROJECT\n", encoding="utf-8")
    (root / "docs/foundations/leak.md").symlink_to(secret)
    build = build_in_process(root, root / "site")
    return root, build.returncode, build.stdout + build.stderr


def test_a_broken_include_fails_the_page_block_and_the_build(broken, in_process):
    root, code, out = broken
    assert code != 0 and f"{PAGE}:" in out and "regress_tabel" in out
    result = in_process(root, PAGE)
    assert result.returncode == 1 and "regress_tabel" in result.stdout, result.stdout


def test_an_unknown_category_fails_the_build_naming_the_post(broken):
    _, code, out = broken
    assert code != 0 and "docs/journal/posts/2025-12-30.md:1: category 'RLHF' is not one of the topics" in out


def test_a_notebook_with_an_error_output_fails_the_build(broken):
    _, code, out = broken
    assert code != 0 and re.search(
        r"docs/foundations/mse-experiments\.ipynb: code cell \d+ shows an error \(ValueError: boom\)", out
    )


def test_a_notebook_and_a_page_may_not_share_a_url(broken):
    _, code, out = broken
    assert code != 0 and re.search(r"docs/foundations/mse-conditional-mean\.(ipynb|md): gets the same URL", out), out[
        -2000:
    ]
    assert "Traceback" not in out


def test_a_notebook_output_that_runs_a_script_fails_the_build(broken):
    _, code, out = broken
    assert code != 0 and re.search(
        r"docs/foundations/mse-experiments\.ipynb: code cell \d+ shows HTML that runs a script", out
    )


def test_a_page_that_is_a_symlink_out_of_the_project_fails_the_build(broken):
    root, code, out = broken
    assert code != 0 and "docs/foundations/leak.md: is a symlink out of the project" in out
    assert not (root / "site").exists() or "SECRET-OUTSIDE-THE-PROJECT" not in "".join(
        p.read_text(errors="ignore") for p in (root / "site").rglob("*.html")
    )


def test_a_page_loading_from_another_host_fails_the_build(mini_project):
    page = mini_project / PAGE
    page.write_text(text_of(page) + '\n<img src="https://cdn.example.com/pixel.png" alt="">\n', encoding="utf-8")
    build = build_in_process(mini_project, mini_project / "site")
    out = build.stdout + build.stderr
    assert build.returncode != 0 and 'foundations/mse-conditional-mean.md: <img src="https://cdn.example.com' in out, (
        out[-1500:]
    )


def test_a_deleted_snippet_section_fails_the_page_block(mini_project, in_process):
    edit(mini_project / SNIPPET, "# --8<-- [start:skewed_data]\n", "")
    edit(mini_project / SNIPPET, "# --8<-- [end:skewed_data]\n", "")
    result = in_process(mini_project, PAGE)
    assert result.returncode == 1 and "skewed_data" in result.stdout, result.stdout


def test_a_broken_link_or_anchor_fails_the_build(mini_project):
    page = mini_project / PAGE
    page.write_text(
        text_of(page) + "\n见 [不存在的页](../topics/no-such-page.md) 和 [不存在的小节](#no-such-anchor)。\n",
        encoding="utf-8",
    )
    build = build_in_process(mini_project, mini_project / "site")
    out = build.stdout + build.stderr
    assert build.returncode != 0 and "no-such-page.md" in out and "no-such-anchor" in out, out[-2000:]


def dirty_rebuilds(root: Path) -> dict:
    """What `kb serve` does on each save, in this process: a dirty rebuild (the plugin instances live
    across rebuilds); which outputs each save rewrote."""
    from mkdocs.commands.build import build
    from mkdocs.config import load_config
    from mkdocs.config.defaults import MkDocsConfig

    site = root / "site"
    page = root / "docs" / "foundations" / "mse-conditional-mean.md"
    outputs = {
        "page": "foundations/mse-conditional-mean/index.html",
        "other page": "index.html",
        "post citing it": "journal/2025/12/31/*/index.html",
        "other post": "journal/2026/01/01/*/index.html",
    }
    config = None

    def rebuild():
        nonlocal config
        fresh = load_config(str(root / "mkdocs.yml"), site_dir=str(site), strict=False)
        if config is None:  # as in `kb serve`: the plugin instance lives across rebuilds
            fresh.plugins.on_startup(command="serve", dirty=True)
        config = fresh
        build(config, dirty=True)

    def stamps():
        return {k: next(site.glob(g)).stat().st_mtime_ns for k, g in outputs.items()}

    MkDocsConfig.plugins.plugin_cache.clear()  # this "serve" starts afresh, as the command does
    report = {}
    with contextlib.chdir(root):
        rebuild()
        snippet = root / "snippets" / "foundations" / "mse.py"
        for step, change in (
            ("page", lambda: edit(page, "# 最小化均方误差 = 预测条件均值", "# 最小化均方误差 = 预测条件均值（改）")),
            ("snippet", lambda: edit(snippet, "import torch", "import torch  # edited")),
        ):
            before = stamps()
            time.sleep(1.1)
            change()
            rebuild()
            after = stamps()
            report[step] = sorted(k for k in before if after[k] != before[k])
        config.plugins.on_shutdown()
    report["title"] = "（改）" in (site / outputs["page"]).read_text(encoding="utf-8")
    return report


def test_a_dirty_rebuild_renders_what_changed_and_where_it_shows(mini_project):
    """`kb serve` rebuilds dirty: a saved page and the posts its claims mark, also when a
    snippet it includes is saved; not the other posts (MkDocs' own test calls every post
    changed, as the blog plugin moves posts to dated URLs: at 1,000 posts, a full build)."""
    report = dirty_rebuilds(mini_project)
    assert report["title"]
    assert report["page"] == ["page", "post citing it"], report
    assert report["snippet"] == ["page", "post citing it"], report  # it includes the snippet
