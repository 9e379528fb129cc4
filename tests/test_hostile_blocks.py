"""Attacks on "every code block they see has been run by the test suite" and on the sandbox of page
blocks (wave 6 hostile review), kept as regression tests.

Each test states the promise it attacks. The attacks that held and are covered elsewhere are
named in the report, not repeated here.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import forked_pytest

FAILING = 'assert 1 + 1 == 3, "a wrong block the reader sees"'


def page(root: Path, rel: str, body: str) -> Path:
    path = root / "docs" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"---\ntitle: Attack\n---\n# Attack\n\n{body}", encoding="utf-8")
    return path


# ==== promise 2: every code block a page shows runs ================================================

# Fences the site (pymdownx.superfences + Pygments, case-insensitive aliases) shows as Python, and
# that pytest-codeblocks does not collect (it reads only ```python, exactly, with backticks).
SHOWN_AS_PYTHON = {
    "tilde fence": f"~~~python\n{FAILING}\n~~~",
    "capital letter": f"```Python\n{FAILING}\n```",
    "alias py3": f"```py3\n{FAILING}\n```",
    "alias sage": f"```sage\n{FAILING}\n```",
    "spaced attribute list": f"```{{ .python }}\n{FAILING}\n```",
    "attribute list with a title": f'```{{.python title="x"}}\n{FAILING}\n```',
    "zero-width space before the language": f"```\u200bpython\n{FAILING}\n```",
    "byte order mark before the language": f"```\ufeffpython\n{FAILING}\n```",
    "tilde fence in an admonition": f"!!! note\n\n    ~~~python\n    {FAILING}\n    ~~~",
}


def test_a_block_the_site_shows_as_python_but_nothing_runs_is_refused(mini_project):
    """Promise: every code block a page shows is run, or visibly marked as not run. Each of these
    renders as (highlighted) Python on the site; pytest-codeblocks collects none of them, and the
    suite was green with a wrong block on the page. The run must fail, naming each file:line."""
    body = "".join(f"{name}:\n\n{fence}\n\n" for name, fence in SHOWN_AS_PYTHON.items())
    path = page(mini_project, "foundations/hidden.md", body)
    lines = path.read_text(encoding="utf-8").split("\n")
    result = forked_pytest(mini_project, "docs/foundations/hidden.md")
    assert result.returncode not in (0, 5), result.stdout[-3000:]
    for name, fence in SHOWN_AS_PYTHON.items():
        first = fence.split("\n")[0] if not fence.startswith("!!!") else fence.split("\n")[2]
        lineno = lines.index(first) + 1
        assert f"docs/foundations/hidden.md:{lineno}:" in result.stdout, (name, result.stdout[-3000:])


def test_the_blocks_a_page_may_show_unrun_are_not_refused(mini_project):
    """The other side: console, text, a traceback (pytb) and mermaid are shown, not run, and say so
    by their language; ```python and ```pycon run. None of them is refused."""
    body = (
        "```console\n$ make test\n```\n\n```text\nplain words\n```\n\n"
        "```pytb\nTraceback (most recent call last):\nValueError: x\n```\n\n"
        "```mermaid\ngraph LR\n  A --> B\n```\n\n"
        "```python\nassert 1 + 1 == 2\n```\n\n```pycon\n>>> 1 + 1\n2\n\n```\n"
    )
    page(mini_project, "foundations/allowed.md", body)
    result = forked_pytest(mini_project, "docs/foundations/allowed.md", "-rA")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "2 passed" in result.stdout, result.stdout[-3000:]


SKIPPED_FOLDERS = ("build", "site", "node_modules", "x.egg-info")  # pytest's norecursedirs


def test_a_page_in_a_folder_pytest_does_not_recurse_into_still_runs(mini_project):
    """Promise: every code block of every page runs. pytest's norecursedirs (site, build, ...) is
    about this repository's build output, but MkDocs builds docs/<topic>/build/page.md as any page
    (and search finds it): its wrong block never ran and the run was green."""
    for folder in SKIPPED_FOLDERS:
        page(mini_project, f"foundations/extra/{folder}/page.md", f"```python\n{FAILING}\n```\n")
    result = forked_pytest(mini_project, "docs/foundations/extra", "-rA")
    assert result.returncode == 1, result.stdout[-3000:]
    for folder in SKIPPED_FOLDERS:
        assert f"FAILED docs/foundations/extra/{folder}/page.md::line 6" in result.stdout, result.stdout[-3000:]


def test_an_ignored_folder_of_pages_stays_ignored_and_the_run_is_narrowed(mini_project):
    """The other side: what --ignore leaves out stays out (and kb.testrun calls such a run narrowed)."""
    page(mini_project, "foundations/extra/build/page.md", f"```python\n{FAILING}\n```\n")
    page(mini_project, "foundations/extra/ok.md", "```python\nassert 1 + 1 == 2\n```\n")
    result = forked_pytest(
        mini_project, "docs/foundations/extra", "--ignore", "docs/foundations/extra/build", "-rA"
    )
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout[-3000:]


MARKDOWN_SUFFIXES = (".markdown", ".mdown", ".mkdn", ".mkd")  # mkdocs.utils.markdown_extensions but .md


@pytest.mark.parametrize("suffix", MARKDOWN_SUFFIXES)
def test_a_page_with_another_markdown_suffix_is_refused(mini_project, suffix):
    """Promise: every code block of every page runs. MkDocs makes a page of every Markdown suffix
    (mkdocs.utils.markdown_extensions); pytest-codeblocks and --doctest-glob read only *.md, so a
    page named x.markdown showed a wrong block and the run was green."""
    page(mini_project, f"foundations/extra/other{suffix}", f"```python\n{FAILING}\n```\n")
    result = forked_pytest(mini_project, "docs/foundations/extra")
    assert result.returncode not in (0, 5), result.stdout[-3000:]
    assert f"docs/foundations/extra/other{suffix}: MkDocs shows this file as a page" in result.stdout, (
        result.stdout[-3000:]
    )
