"""The glossary (docs/glossary.md): every row names a term and links to the page that explains it;
the search index gives that section every name of the term (tested in the browser: test_browser.py)."""

from __future__ import annotations

import pytest
from conftest import ROOT

from kb import site
from kb.project import SourceError

TABLE = """# 术语表

| 术语 | English | 其他名称 | 讲解 |
|---|---|---|---|
| 重要性采样 | importance sampling | 重要性比；`ρ_t` | [GRPO](topics/grpo.md#1-从-ppo-到-grpo) |
| 3D 高斯泼溅 | 3D Gaussian Splatting | 3DGS；高斯泼溅 | [3DGS](topics/neoverse/gaussian-splatting.md) |
"""


def test_a_row_gives_every_name_and_the_section_that_explains_it():
    first, second = site.glossary_terms(TABLE, "docs/glossary.md")
    assert first.names == ("重要性采样", "importance sampling", "重要性比", "ρ_t")
    assert (first.page, first.anchor, first.line) == ("topics/grpo.md", "1-从-ppo-到-grpo", 5)
    assert (second.page, second.anchor) == ("topics/neoverse/gaussian-splatting.md", "")
    names = site.search_names(
        [first, second],
        {
            "topics/grpo.md": "topics/grpo/",
            "topics/neoverse/gaussian-splatting.md": "topics/neoverse/gaussian-splatting/",
        }.get,
    )
    assert names["topics/grpo/#1-从-ppo-到-grpo"][0] == "重要性采样"
    assert "3DGS" in names["topics/neoverse/gaussian-splatting/"]


@pytest.mark.parametrize(
    "row, words",
    [
        ("| 熵 | entropy | 解析熵 | SAC 的熵那一页 |", "must link to the page"),
        ("| 熵 | entropy |", "needs 4 cells"),
    ],
)
def test_a_row_without_its_page_is_refused_with_file_and_line(row, words):
    with pytest.raises(SourceError) as e:
        site.glossary_terms(TABLE + row + "\n", "docs/glossary.md")
    assert str(e.value).startswith("docs/glossary.md:7:") and words in str(e.value)


def test_the_projects_glossary_links_every_term_to_a_page_that_exists():
    text = (ROOT / "docs" / site.GLOSSARY).read_text(encoding="utf-8")
    terms = site.glossary_terms(text, "docs/glossary.md")
    assert len(terms) >= 30
    for term in terms:
        assert (ROOT / "docs" / term.page).is_file(), f"docs/glossary.md:{term.line}: {term.page} does not exist"
        assert len(term.names) >= 3, f"docs/glossary.md:{term.line}: a term with fewer than three names"
    every = {n for t in terms for n in t.names}
    for name in (
        "高斯泼溅",
        "3D Gaussian Splatting",
        "3DGS",
        "参考模型",
        "参考策略",
        "π_ref",
        "重要性采样",
        "importance sampling",
    ):
        assert name in every, name
