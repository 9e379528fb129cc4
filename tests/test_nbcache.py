"""The live check's notebook cache (kb/nbcache.py, jupyter-cache): a notebook that passed is reused
only while its code and every project module it imports, directly or not, are unchanged."""

from __future__ import annotations

import pytest

pytest.importorskip("jupyter_cache", reason="jupyter-cache is installed by make setup (pyproject.toml)")

import nbformat  # noqa: E402

from kb import nbcache  # noqa: E402
from kb.project import Project  # noqa: E402


def notebook(root, code: str):
    path = root / "docs" / "foundations" / "cached.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# cached"), nbformat.v4.new_code_cell(code)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def test_a_passed_notebook_is_reused_until_it_or_what_it_imports_changes(mini_project):
    project = Project.find(mini_project)
    path = notebook(mini_project, "from snippets.foundations import mse\nprint(mse.__name__)")
    imported = nbcache.imports_of(project, ["from snippets.foundations import mse"])
    assert mini_project / "snippets/foundations/mse.py" in imported
    cache, why_not = nbcache.open_cache(project)
    assert cache is not None, why_not
    assert nbcache.passed_before(cache, project, path) is None  # never run
    nbcache.remember_pass(cache, project, path, 1.0)
    assert nbcache.passed_before(cache, project, path)["outcome"] == "passed"
    # Its prose is not what runs: a new Markdown cell keeps the result.
    nb = nbformat.read(str(path), as_version=4)
    nb.cells.insert(0, nbformat.v4.new_markdown_cell("more words"))
    nbformat.write(nb, str(path))
    assert nbcache.passed_before(cache, project, path) is not None
    # Every module it imports, followed through their imports: one byte changes the key.
    for module in imported:
        before = module.read_bytes()
        module.write_bytes(before + b"\n# changed\n")
        assert nbcache.passed_before(cache, project, path) is None, module
        module.write_bytes(before)
    assert nbcache.passed_before(cache, project, path) is not None
    # Its code: a changed cell runs again.
    notebook(mini_project, "from snippets.foundations import mse\nprint(mse.__file__)")
    assert nbcache.passed_before(cache, project, path) is None


def test_kb_fast_is_part_of_the_key(mini_project, monkeypatch):
    project = Project.find(mini_project)
    path = notebook(mini_project, "print(1)")
    cache, _ = nbcache.open_cache(project)
    monkeypatch.setenv("KB_FAST", "")
    nbcache.remember_pass(cache, project, path, 1.0)
    assert nbcache.passed_before(cache, project, path) is not None
    monkeypatch.setenv("KB_FAST", "1")  # the short run of a long notebook is another run
    assert nbcache.passed_before(cache, project, path) is None
