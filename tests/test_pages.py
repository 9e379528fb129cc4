"""Every piece of code a reader sees on a page is executed by this suite; no block slips through.

pytest-codeblocks only collects fences whose info string is exactly `python`
(or sh/bash, which it would execute in a shell); --doctest-glob runs `>>>`
lines; nbmake runs notebooks; snippet modules are test modules. These tests
walk the sources and fail on anything that none of those would run. Journal
posts are the learner's words: their code is shown, labelled as not run.
"""

from __future__ import annotations

import ast
import json
import re

import pytest
from conftest import PROJECT
from pytest_codeblocks.main import extract_from_file

from kb import sources
from kb.model import asserts

DOCS = PROJECT.docs_dir
PAGES = sorted(p for p in DOCS.rglob("*.md") if "vendor" not in p.parts and not PROJECT.inside(p, PROJECT.posts_dir))
NOTEBOOKS = sorted(DOCS.rglob("*.ipynb"))
MODULES = sorted(
    p for p in PROJECT.snippets_dir.rglob("*.py") if p.name != "__init__.py" and "__pycache__" not in p.parts
)
RUNNABLE_ELSEWHERE = {"pycon"}  # doctest-glob
SHELLS = {"sh", "bash", "zsh", "shell"}
PYTHONISH = {"py", "python3", "ipython", "{.python}", "pyi"}
rel = PROJECT.rel


def test_there_is_something_to_check():
    assert PAGES and NOTEBOOKS and MODULES


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_python_block_is_executed(page):
    problems = []
    for block in extract_from_file(page):
        syntax = (block.syntax or "").strip()
        lang = syntax.split()[0] if syntax else ""
        where = f"{rel(page)}:{block.lineno}"
        if syntax == "python":
            lines = [l for l in block.code.strip().split("\n") if l.strip()]
            includes = [l for l in lines if sources.SNIPPET_LINE.match(l)]
            if includes and len(includes) != len(lines):
                problems.append(f"{where}: mixes an include with other code")
            if not includes and "assert" not in block.code and block.expected_output is None:
                problems.append(f"{where}: a runnable block must assert something (or carry an expected output)")
        elif lang == "python" or lang in PYTHONISH:
            problems.append(f"{where}: ```{syntax} is silently not collected: use exactly ```python")
        elif lang in RUNNABLE_ELSEWHERE:
            if ">>>" not in block.code:
                problems.append(f"{where}: a pycon block needs >>> prompts (it runs as a doctest)")
        elif lang in SHELLS:
            problems.append(f"{where}: ```{lang} blocks are executed by the suite: show commands as ```console")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_display_formula_cites_its_source(page):
    lines = page.read_text(encoding="utf-8").split("\n")
    in_code = sources.fenced(lines)
    problems, i = [], 0
    while i < len(lines):
        if not in_code[i] and lines[i].strip() == "$$":
            j = i + 1
            while j < len(lines) and lines[j].strip() != "$$":
                j += 1
            k = j + 1
            while k < len(lines) and not lines[k].strip():
                k += 1
            if k >= len(lines) or not lines[k].strip().startswith("来源"):
                problems.append(f"{rel(page)}:{i + 1}: display formula without a 来源 line after it")
            i = j + 1
        else:
            i += 1
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("module", MODULES, ids=rel)
def test_every_snippet_module_holds_a_test_that_can_fail(module):
    tree = ast.parse(module.read_text(encoding="utf-8"))
    tests = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]
    assert tests, f"{rel(module)} has no test_* function"
    empty = [t.name for t in tests if not asserts(t)]
    assert not empty, f"{rel(module)}: tests without an assertion: {empty}"


@pytest.mark.parametrize("module", MODULES, ids=rel)
def test_snippet_sections_are_balanced(module):
    text = module.read_text(encoding="utf-8")
    starts = re.findall(r"# --8<-- \[start:([a-z][-_0-9a-z]*)\]", text)
    ends = re.findall(r"# --8<-- \[end:([a-z][-_0-9a-z]*)\]", text)
    assert sorted(starts) == sorted(ends), f"{rel(module)}: unbalanced sections {starts} vs {ends}"
    assert len(set(starts)) == len(starts), f"{rel(module)}: a section name is used twice"
    assert not [l for l in text.split("\n") if sources.SNIPPET_LINE.match(l)], (
        f"{rel(module)} includes another file (pymdownx.snippets would expand it on the site)"
    )


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=rel)
def test_notebooks_are_committed_executed_and_check_something(notebook):
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, f"{rel(notebook)} has no code"
    unrun = [i for i, c in enumerate(code) if c.get("execution_count") is None]
    assert not unrun, f"{rel(notebook)}: cells {unrun} were never executed (run `make notebooks`)"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{rel(notebook)} holds an error output"
    assert any(o.get("data", {}).get("image/png") for c in code for o in c.get("outputs", [])), (
        f"{rel(notebook)} shows no figure"
    )
    assert any("assert" in "".join(c["source"]) for c in code), f"{rel(notebook)} asserts nothing"
    counts = [c["execution_count"] for c in code]
    assert counts == sorted(counts), f"{rel(notebook)}: cells were run out of order"


LINE_LIMIT = 88  # what a code block shows at 1366 px without wrapping (tests/test_browser.py measures it)


@pytest.mark.parametrize("module", MODULES, ids=rel)
def test_snippet_lines_fit_a_code_block(module):
    long = [
        f"{rel(module)}:{i}: {len(line)} characters"
        for i, line in enumerate(module.read_text(encoding="utf-8").split("\n"), 1)
        if len(line) > LINE_LIMIT
    ]
    assert not long, "\n".join(long)
