"""Shared fixtures: the built site, a served copy of it, a scratch copy of the project."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kb.project import ROOT

ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}


def mkdocs_build(root: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=root, env={**ENV, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=300,
    )


@pytest.fixture(scope="session")
def built_site(tmp_path_factory) -> Path:
    """`mkdocs build --strict` of the real project, once per test worker that needs it.

    KB_PREBUILT_SITE=<dir> reuses a build (for iterating on the browser tests only).
    """
    if os.environ.get("KB_PREBUILT_SITE"):
        return Path(os.environ["KB_PREBUILT_SITE"])
    site = tmp_path_factory.mktemp("site")
    result = mkdocs_build(ROOT, site)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    return site


@pytest.fixture(scope="session")
def served_site(built_site):
    """The built site on http://127.0.0.1:<port>/, as a learner's browser sees it."""
    handler = functools.partial(QuietHandler, directory=str(built_site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


PROJECT_PARTS = ("docs", "snippets", "kb", "tests", "mkdocs.yml", "pyproject.toml")


@pytest.fixture
def project_copy(tmp_path) -> Path:
    """A scratch copy of the project to break on purpose (the real one is never touched)."""
    dest = tmp_path / "project"
    dest.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints", "vendor", "*.egg-info")
    for part in PROJECT_PARTS:
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=ignore)
        else:
            shutil.copy2(src, dest / part)
    # vendored assets are big and unchanged: link them
    vendor = ROOT / "docs" / "assets" / "vendor"
    if vendor.exists():
        (dest / "docs" / "assets" / "vendor").symlink_to(vendor)
    return dest


def run_pytest(root: Path, *args: str) -> subprocess.CompletedProcess:
    """pytest in a project copy, importing that copy's snippets and kb."""
    env = {**ENV, "PYTHONPATH": str(root)}
    env.pop("PYTEST_XDIST_WORKER", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-o", "addopts=-p kb.pytest_plugin --codeblocks --doctest-glob=*.md", *args],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )
