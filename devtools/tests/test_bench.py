"""`make bench`'s before/after comparison: the suite of another commit, measured in turn with this tree's."""

import subprocess

from devtools import bench
from kb.project import Project


def git(root, *args):
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def test_before_is_a_clean_checkout_of_the_commit_and_is_removed_after(tmp_path):
    root = tmp_path / "repo"
    (root / "docs" / "assets" / "vendor").mkdir(parents=True)
    (root / "docs" / "assets" / "vendor" / "katex.js").write_text("// fetched, not committed\n")
    (root / "mkdocs.yml").write_text("site_name: t\n")
    (root / "a.txt").write_text("old\n")
    git(root, "init", "-q")
    git(root, "add", "mkdocs.yml", "a.txt")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "old")
    (root / "a.txt").write_text("new, not committed\n")
    project = Project.find(root)
    dest = bench.tree_at(project, "HEAD", tmp_path / "before")
    assert (dest / "a.txt").read_text() == "old\n"
    assert (dest / "docs/assets/vendor/katex.js").read_text() == "// fetched, not committed\n"
    bench.drop_tree(project, dest)
    assert not dest.exists()
    listed = subprocess.run(["git", "worktree", "list"], cwd=root, capture_output=True, text=True).stdout
    assert str(dest) not in listed


def test_each_round_runs_every_tree_in_turn_between_calibrations(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(bench, "calibrate", lambda: calls.append("cal") or 1.0)
    monkeypatch.setattr(
        bench,
        "suite",
        lambda root, log=None: (
            calls.append(root.name) or (50.0 if root.name == "old" else 40.0, {"outcomes": {"t": "passed"}})
        ),
    )
    lines = bench.suite_in_units({"before": tmp_path / "old", "this tree": tmp_path / "new"}, runs=2)
    assert calls == ["cal", "old", "cal", "cal", "new", "cal"] * 2
    assert "median    50.0 u" in lines[0] and "median    40.0 u" in lines[1] and "1 tests" in lines[1]
