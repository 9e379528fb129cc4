"""The site builds with --strict and every claim is listed with a status.

kb's pytest plugin (pyproject.toml: -p kb.pytest_plugin) runs the rest: every snippet
module's tests, every code block of every page, each claim's deciding test and its
counterfactuals; `make test` fails when a claim is left undecided.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}


def test_the_site_builds_strictly(tmp_path):
    site = tmp_path / "site"
    r = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    for page in ("index.html", "claims/index.html", "questions/index.html", "journal/index.html"):
        assert (site / page).is_file(), page


def test_every_claim_has_a_status():
    r = subprocess.run(
        [sys.executable, "-m", "kb.cli", "claims"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines and all("] " in line for line in lines), r.stdout
