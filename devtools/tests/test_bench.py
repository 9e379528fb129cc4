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


def test_live_times_of_before_and_this_tree_are_measured_in_turn(monkeypatch, tmp_path, capsys):
    """Each run measures the commit's kb serve, then this tree's: both see the load of that moment."""
    calls = []

    class FakeServed:
        def __init__(self, root, log=None):
            self.root = root

        def stop(self):
            calls.append(f"stop {self.root.name}")

    project = Project.find()
    monkeypatch.setattr(bench, "Served", FakeServed)
    monkeypatch.setattr(bench, "scratch", lambda tree, dest: dest)
    monkeypatch.setattr(bench, "tree_at", lambda project, ref, dest: project.root)
    monkeypatch.setattr(bench, "drop_tree", lambda project, dest: calls.append("drop"))
    monkeypatch.setattr(bench, "page_update", lambda server: 1.0)
    times = {"live-0": (0.1, 2.0, 9.0), "live-1": (0.1, 1.0, 4.0)}
    monkeypatch.setattr(
        bench, "live_status", lambda server, **kw: calls.append(server.root.name) or times[server.root.name]
    )
    bench.live(project, tmp_path, runs=2, before="abc123")
    # warm-up of each, then each of the 3 cases: 2 runs, each before then this tree
    assert calls[:2] == ["live-0", "live-1"] and calls[2:14] == ["live-0", "live-1"] * 6
    assert calls[-3:] == ["stop live-0", "stop live-1", "drop"]
    said = capsys.readouterr().out
    assert "live: green after fixing (no notebook) [before: abc123]" in said and "9.0 s" in said
    assert "live: green after fixing (no notebook) [this tree]" in said and "4.0 s" in said
