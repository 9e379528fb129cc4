"""Breaking what a page shows makes the suite fail (shown on a scratch copy of the project)."""

from __future__ import annotations

from conftest import mkdocs_build, run_pytest

PAGE = "docs/foundations/mse-conditional-mean.md"
SNIPPET = "snippets/foundations/mse.py"


def test_a_broken_include_fails_the_page_block_and_the_build(project_copy):
    page = project_copy / PAGE
    page.write_text(page.read_text(encoding="utf-8").replace("mse.py:regress_table", "mse.py:regress_tabel"), encoding="utf-8")
    result = run_pytest(project_copy, PAGE)
    assert result.returncode == 1, result.stdout
    assert "regress_tabel" in result.stdout
    build = mkdocs_build(project_copy, project_copy / "site")
    assert build.returncode != 0 and "regress_tabel" in build.stdout + build.stderr


def test_a_deleted_snippet_section_fails_the_page_block(project_copy):
    snippet = project_copy / SNIPPET
    text = snippet.read_text(encoding="utf-8")
    snippet.write_text(text.replace("# --8<-- [start:skewed_data]\n", "").replace("# --8<-- [end:skewed_data]\n", ""), encoding="utf-8")
    result = run_pytest(project_copy, PAGE)
    assert result.returncode == 1, result.stdout
    assert "skewed_data" in result.stdout and "could not be located" in result.stdout


def test_a_broken_snippet_fails_and_names_the_claim(project_copy):
    snippet = project_copy / SNIPPET
    text = snippet.read_text(encoding="utf-8")
    broken = text.replace("    return table.detach()\n", "    return table.detach() + 0.01  # an off-by-a-bit bug\n")
    assert broken != text
    snippet.write_text(broken, encoding="utf-8")
    result = run_pytest(project_copy, SNIPPET)
    assert result.returncode == 1, result.stdout
    assert "claim 'mse-predicts-conditional-mean'" in result.stdout
    assert "is marked verified" in result.stdout


def test_a_broken_link_or_anchor_fails_the_build(project_copy):
    page = project_copy / PAGE
    text = page.read_text(encoding="utf-8")
    page.write_text(text + "\n见 [不存在的页](../topics/no-such-page.md)。\n", encoding="utf-8")
    build = mkdocs_build(project_copy, project_copy / "site")
    assert build.returncode != 0 and "no-such-page.md" in build.stdout + build.stderr
    page.write_text(text + "\n见 [不存在的小节](#no-such-anchor)。\n", encoding="utf-8")
    build = mkdocs_build(project_copy, project_copy / "site")
    assert build.returncode != 0 and "no-such-anchor" in build.stdout + build.stderr
