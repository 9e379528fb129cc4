"""The notebook cache of ``kb check`` (and so of kb serve's live status): a notebook that passed is
not run again while it and everything it imports are unchanged.

It is jupyter-cache (the execution cache of Jupyter Book), keyed by the hash it computes from a
notebook's code cells, plus one metadata entry added here: the content hash of every project module
the notebook imports (followed through their own imports), the Python and library versions, and the
settings that change what a notebook runs (``KB_FAST``). Only notebooks that passed are cached; the
record keeps the outcome. The cache lives in ``.kb/jupyter-cache/`` (git-ignored, like all of ``.kb``).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import sys
import time
from importlib import metadata
from pathlib import Path

from kb.project import Project

KEY = "kb_inputs"  # the notebook metadata entry jupyter-cache hashes along with the code cells
VERSIONS = ("torch", "numpy", "matplotlib", "nbclient", "ipykernel")


def cache_dir(project: Project) -> Path:
    return project.root / ".kb" / "jupyter-cache"


def open_cache(project: Project):
    """The project's jupyter-cache, or None (with the reason) when jupyter-cache is not installed."""
    try:
        from jupyter_cache.cache.main import JupyterCacheBase
    except ImportError:
        return None, "jupyter-cache is not installed (make setup installs it): every notebook runs"

    class Cache(JupyterCacheBase):
        def create_hashed_notebook(self, nb, nb_metadata=("kernelspec", KEY), cell_metadata=None):
            return super().create_hashed_notebook(nb, nb_metadata=nb_metadata, cell_metadata=cell_metadata)

    return Cache(str(cache_dir(project))), None


@functools.lru_cache(maxsize=4096)
def _imported_names(source: str, package: str | None) -> frozenset[str]:
    """The dotted names a piece of Python imports (a pure function of its text, so kept: the live check
    follows the imports of every cited snippet and notebook, and most of them share modules)."""
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]  # IPython magics
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError:
        return frozenset()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level and package:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names |= {f"{base}.{a.name}" for a in node.names}
    return frozenset(names)


def _module_files(project: Project, source: str, package: str | None = None) -> set[Path]:
    """Project files a piece of Python imports directly (``snippets.x.y``, ``from snippets.x import y``)."""
    found = set()
    for name in _imported_names(source, package):
        rel = Path(*name.split(".")) if name else None
        if rel is None or not (project.root / rel.parts[0]).is_dir():
            continue
        for candidate in (project.root / rel.with_suffix(".py"), project.root / rel / "__init__.py"):
            if candidate.is_file():
                found.add(candidate)
    return found


def imports_of(project: Project, cells: list[str]) -> list[Path]:
    """Every project module the cells import, and what those import in turn."""
    todo = set().union(*(_module_files(project, c) for c in cells)) if cells else set()
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        rel = path.relative_to(project.root).with_suffix("")
        package = ".".join(rel.parts[:-1] if rel.name != "__init__" else rel.parts[:-1])
        todo |= _module_files(project, path.read_text(encoding="utf-8", errors="replace"), package) - seen
    return sorted(seen)


def code_cells(nb) -> list[str]:
    """The source of each code cell of a notebook (as nbformat reads it)."""
    return [c.source for c in nb.cells if c.cell_type == "code"]


def keyed(project: Project, notebook: Path):
    """The notebook with the hash of what it depends on in its metadata (what the cache is keyed by)."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    cells = code_cells(nb)
    inputs = {
        p.relative_to(project.root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in imports_of(project, cells)
    }
    versions = {"python": sys.version.split()[0]}
    for name in VERSIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    nb.metadata[KEY] = {"imports": inputs, "versions": versions, "KB_FAST": os.environ.get("KB_FAST", "")}
    return nb


def passed_before(cache, project: Project, notebook: Path) -> dict | None:
    """The cached record's data if this notebook, with these imports, passed before."""
    try:
        record = cache.match_cache_notebook(keyed(project, notebook))
    except KeyError:
        return None
    except Exception:  # noqa: BLE001 - a damaged cache or notebook: run it (the run says what is wrong)
        return None
    data = record.data or {}
    return data if data.get("outcome") == "passed" else None


def remember_pass(cache, project: Project, notebook: Path, seconds: float) -> None:
    from jupyter_cache.cache.main import CacheBundleIn

    nb = keyed(project, notebook)
    data = {
        "outcome": "passed",
        "at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": round(seconds, 1),
        "imports": json.dumps(sorted(nb.metadata[KEY]["imports"])),
    }
    cache.cache_notebook_bundle(
        CacheBundleIn(nb, project.rel(notebook), data=data), check_validity=False, overwrite=True
    )
