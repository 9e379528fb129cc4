"""`kb check`: exactly what a page shows and asserts, for a page, a topic or a snippet file."""

from __future__ import annotations

import posixpath
import re

import pytest
from conftest import ROOT, edit, kb
from mkdocs.commands.build import build
from mkdocs.config import load_config
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import Abort

from kb import check
from kb.model import KnowledgeBase
from kb.project import Project
from kb.site import Site

MSE_PAGE = "docs/foundations/mse-conditional-mean.md"


def plan_of(site, model, *targets):
    return check.plan(site, model, check.resolve(model, list(targets), ROOT))


def test_a_page_selects_its_blocks_its_snippet_modules_its_claims_tests_and_its_notebook(model, site):
    p = plan_of(site, model, MSE_PAGE)
    assert [pg.rel for pg in p.pages] == [MSE_PAGE]
    assert p.node_ids == [MSE_PAGE, "snippets/foundations/mse.py", "docs/foundations/mse-experiments.ipynb"]
    page = model.pages["foundations/mse-conditional-mean.md"]
    assert {c.id for c in p.claims} == {c.id for c in page.claims}
    assert all(c.test.code.path in p.node_ids for c in p.claims if c.test)


def test_a_topic_selects_its_pages(model, site):
    p = plan_of(site, model, "sac")
    assert {pg.src_uri for pg in p.pages} == {pg.src_uri for pg in model.pages.values() if pg.topic == "SAC"}
    assert "docs/topics/sac/critic.md" in p.node_ids and "snippets/sac/critic.py" in p.node_ids
    assert "docs/topics/sac/pendulum_curve.ipynb" in p.node_ids
    assert not [n for n in p.node_ids if n.startswith(("snippets/dpo", "docs/topics/dpo"))]


def test_a_snippet_file_selects_every_page_that_includes_or_cites_it(model, site):
    p = plan_of(site, model, "snippets/sac/critic.py")
    expected = {pg.src_uri for pg in model.pages_citing["snippets/sac/critic.py"]}
    assert {pg.src_uri for pg in p.pages} == expected and "topics/sac/critic.md" in expected
    assert all(f"docs/{uri}" in p.node_ids for uri in expected)


@pytest.mark.parametrize(
    "target, words",
    [
        ("no/such/page.md", "not a page, a snippet file, a notebook or a topic"),
        ("RLHF", "not a page, a snippet file, a notebook or a topic"),
        ("snippets/__init__.py", "no page includes or cites this file"),
    ],
)
def test_an_unknown_target_is_one_line(target, words):
    r = kb(ROOT, "check", target)
    assert r.returncode == 2 and words in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_the_link_checker_agrees_with_the_build(model, site, built_site):
    # No false alarm on any page, and the anchors it computes are the ones the site has.
    for page in model.pages.values():
        assert check.link_errors(site, model, page) == [], page.rel
    cache = {}
    page = model.pages["topics/sac/critic.md"]
    html = (built_site / "topics/sac/critic/index.html").read_text(encoding="utf-8")
    computed = check._anchors(site, model, page, cache)
    assert {a for a in computed if not a.startswith("__")} <= set(re.findall(r'id="([^"]+)"', html))


def _strict_build(root, site_dir, monkeypatch):
    """``mkdocs build --strict`` in this process, run from the project root as ``make build`` runs it."""
    monkeypatch.chdir(root)
    MkDocsConfig.plugins.plugin_cache.clear()  # a fresh command: fresh plugins (MkDocs keeps them for serve)
    config = load_config(str(root / "mkdocs.yml"), site_dir=str(site_dir), strict=True)
    config.plugins.on_startup(command="build", dirty=False)  # what the mkdocs command does first
    try:
        build(config)
    finally:
        config.plugins.on_shutdown()


def test_the_link_checker_and_the_build_agree_on_every_generated_page(mini_project, tmp_path, monkeypatch):
    # A page links to every page and file the build generates (kb's and the blog's): kb check and a
    # strict build both accept every link, and each lands at the URL the Site gives it. A link to
    # a page nobody generates fails both.
    project = Project.at(mini_project / "mkdocs.yml")
    site = Site.load(project)
    generated = set(site.generated(KnowledgeBase.load(project)))
    generated |= {f.src_uri for f in site.files if getattr(f, "generated_by", None)}
    layout = site.layout
    assert {layout.claims, layout.questions, layout.review, "journal/category/sac.md"} <= generated
    assert any(u.startswith("code/snippets/") for u in generated) and any(u.endswith(".png") for u in generated)
    page = mini_project / MSE_PAGE
    base = posixpath.dirname(MSE_PAGE.removeprefix("docs/"))
    links = [f"[{u}]({posixpath.relpath(u, base)})" for u in sorted(generated)]
    page.write_text(
        page.read_text(encoding="utf-8") + "\n" + "\n".join(f"- {link}" for link in links) + "\n", encoding="utf-8"
    )
    model = KnowledgeBase.load(project)
    assert check.link_errors(site, model, model.pages[MSE_PAGE.removeprefix("docs/")]) == []
    _strict_build(mini_project, tmp_path / "site", monkeypatch)
    for uri in generated:
        url = site.url(uri)
        assert (tmp_path / "site" / url / ("index.html" if url.endswith("/") else "")).is_file(), (uri, url)

    page.write_text(page.read_text(encoding="utf-8") + "\n[复习之外](../nowhere.md)\n", encoding="utf-8")
    model = KnowledgeBase.load(project)
    errors = [str(e) for e in check.link_errors(site, model, model.pages[MSE_PAGE.removeprefix("docs/")])]
    assert len(errors) == 1 and "link to ../nowhere.md: no such page or file" in errors[0], errors
    with pytest.raises(Abort):
        _strict_build(mini_project, tmp_path / "site2", monkeypatch)


def test_a_broken_snippet_fails_the_check_of_a_page_that_includes_it_naming_the_claim(mini_project, kb_here):
    edit(
        mini_project / "snippets/foundations/mse.py",
        "    return table.detach()\n",
        "    return table.detach() + 0.01  # an off-by-a-bit bug\n",
    )
    (mini_project / MSE_PAGE).write_text(
        (mini_project / MSE_PAGE).read_text(encoding="utf-8") + "\n见 [不存在的小节](#no-such-anchor)。\n",
        encoding="utf-8",
    )
    r = kb_here(mini_project, "check", "snippets/foundations/mse.py")
    assert r.returncode == 1, r.stdout[-2000:]
    assert re.search(
        r"^FAIL  \[verified\] mse-predicts-conditional-mean: snippets/foundations/mse\.py::\S+ failed", r.stdout, re.M
    ), r.stdout[-2000:]
    assert f"invalid: {MSE_PAGE}:" in r.stdout and "no anchor #no-such-anchor" in r.stdout
    assert re.search(r"^FAILED: 1 page\(s\)", r.stdout, re.M)


def test_a_page_that_cannot_be_read_is_named_with_its_line(mini_project, kb_here):
    page = mini_project / MSE_PAGE
    page.write_text("---\ntitle: [broken\n---\n# x\n", encoding="utf-8")
    r = kb_here(mini_project, "check", MSE_PAGE)
    assert r.returncode == 2 and f"{MSE_PAGE}:3: front matter is not valid YAML" in r.stderr, r.stderr


def test_a_page_with_nothing_to_run_passes_and_a_narrowed_session_over_a_page_does_not(mini_project):
    """Found by a helper: `kb check docs/topics/sac/index.md` (an overview, no code) said FAILED: its
    session collected nothing (exit code 5). Nothing collected is a pass only for pages that show no
    code, in a session narrowed by nothing but the paths kb check gives it."""
    from kb import warm

    project = Project.at(mini_project / "mkdocs.yml")
    overview = mini_project / "docs" / "foundations" / "overview.md"
    overview.write_text("# 概览\n\n这一页只有文字。\n", encoding="utf-8")
    ran = check.run(project, [str(overview)], mini_project, out=lambda _: None, session=warm.pytest_in_fork)
    assert ran["passed"] is True and ran["node_ids"] == ["docs/foundations/overview.md"], ran
    overview.write_text("# 概览\n\n```python\nassert 1 + 1 == 3\n```\n", encoding="utf-8")
    for extra in ((), ("-k", "nothing_has_this_name")):
        ran = check.run(
            project, [str(overview)], mini_project, out=lambda _: None, pytest_args=extra, session=warm.pytest_in_fork
        )
        assert ran["passed"] is False, (extra, ran)
