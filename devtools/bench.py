"""``make bench``: the speed goals of the project, measured and printed (median of 3 by default).

    python -m devtools.bench [--runs 3] [--suites 3] [--before REF] [--posts 1000] [--busy] [--only NAME ...]

- ``kb check docs/topics/sac/critic.md``: one page's checks (goal < 10 s);
- live status: while ``kb serve`` runs, save a page that breaks one of its
  claims and time until its status line says "checking" (goal < 1 s), until it
  is red, then fix it and time until it is green: for a page without a notebook
  (goal < 5 s each) and for a page that shows a notebook, once with the notebook
  cache cleared before each save (the notebook runs: as before the cache) and
  once with it kept (the notebook passed and nothing it imports changed);
- ``mkdocs build --strict`` of the project, and of a scratch copy whose journal
  holds ``--posts`` dated posts (the seed's bodies with random topics; goal
  < 60 s), and a served page of that copy updated after a save (goal < 15 s);
- the same copy built ``--strict`` by bare Material (``bare_config``: the project's
  ``mkdocs.yml`` without kb), alternately with ours, and the ratio ours/bare: the
  median of each pair of runs' ratio (goal: at most 1.0), and the same ratio in
  processor seconds (what the other work on a shared machine changes least);
- ``make test`` (the whole suite, run as the Makefile runs it), in calibration
  units: the seconds of a fixed one-thread torch workload (``torch.manual_seed(0);
  a = torch.randn(256, 256)``, then 3,000 times ``a = torch.tanh(a @ a / 16)``;
  1.13 s on a quiet machine), measured before and after each run, so that a busy or
  slower machine reads the same. Goal: at most 77 units (the suite was 131 units,
  232 s, 671 tests). The test count and outcomes come from the run's session report.
  ``--before REF`` runs the suite of that commit too (a clean worktree), in turn with
  this tree's, so a before/after comparison is made on the same machine in one run;
  it does the same for the live status times (two ``kb serve``, measured in turn).

``--busy`` keeps one core busy with an unrelated process during every
measurement, as on a learner's laptop. The machine's load is printed with
the figures.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import multiprocessing
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from kb.project import Project

ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
PAGE = "docs/foundations/mse-conditional-mean.md"  # shows a notebook (mse-experiments.ipynb)
CLAIM = "id: mse-predicts-conditional-mean\n    status: verified"
BROKEN = "id: mse-predicts-conditional-mean\n    status: refuted"
PLAIN_PAGE = "docs/topics/sac/double-q.md"  # no notebook
PLAIN_CLAIM = "id: sac-max-min-bias\n    status: verified"
PLAIN_BROKEN = "id: sac-max-min-bias\n    status: refuted"


def burn() -> None:  # pragma: no cover - a busy core, as on a learner's laptop
    x = 0
    while True:
        x = (x * 1103515245 + 12345) % 2**31


def timed(cmd: list[str], cwd: Path, **env) -> float:
    start = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env={**ENV, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if r.returncode != 0:
        sys.exit(f"kb bench: {' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return elapsed


CALIBRATION = """
import time
import torch
torch.set_num_threads(1)
torch.manual_seed(0)
a = torch.randn(256, 256)
start = time.perf_counter()
for _ in range(3000):
    a = torch.tanh(a @ a / 16)
print(time.perf_counter() - start)
"""
SUITE_GOAL_UNITS = 77
LOGS = Path("artifacts")  # what each measured run printed (under the checkout the bench runs in)


def calibrate() -> float:
    """Seconds of the calibration workload on one thread, now (the import of torch is not timed)."""
    r = subprocess.run(
        [sys.executable, "-c", CALIBRATION],
        capture_output=True,
        text=True,
        env={**ENV, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    )
    if r.returncode != 0:
        sys.exit(f"kb bench: the calibration workload failed:\n{r.stderr[-3000:]}")
    return float(r.stdout.strip().splitlines()[-1])


def suite(root: Path, log: Path | None = None) -> tuple[float, dict]:
    """``make test`` (``python -m kb.testrun -n 2 --dist loadgroup``) in ``root``: its seconds and
    its session report. Its output goes to ``log``. A failing or incomplete run stops the bench."""
    from kb import testrun

    seen: dict = {}

    def run_pytest(args: list[str]) -> int:
        with open(log or os.devnull, "w", encoding="utf-8") as out:
            code = subprocess.call(
                [sys.executable, "-m", "pytest", *args],
                cwd=root,
                env={**ENV, "PYTHONPATH": str(root)},  # that tree's kb and snippets, not the installed checkout's
                stdout=out,
                stderr=subprocess.STDOUT,
                # as from a terminal: a bench started in the background has SIGINT ignored, and the
                # suite's Ctrl-C tests (a pty) would inherit that
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )
        seen.update(testrun.read_report(Path(args[args.index("--kb-report") + 1])) or {})
        return code

    start = time.perf_counter()
    code = testrun.main(["-n", "2", "--dist", "loadgroup"], run_pytest=run_pytest)
    elapsed = time.perf_counter() - start
    if code != 0:
        sys.exit(f"kb bench: make test failed in {root} (exit code {code}); its output: {log or 'not kept'}")
    return elapsed, seen


def suite_in_units(roots: dict[str, Path], runs: int) -> list[str]:
    """Each run of the suite between two calibrations; the median run in units, with the test count.

    ``roots``: the trees to measure by name ("this tree", and with ``--before REF`` that commit's tree),
    run in turn within each round, so that a change of load hits both alike."""
    units: dict[str, list[float]] = {name: [] for name in roots}
    LOGS.mkdir(exist_ok=True)
    counts: dict[str, collections.Counter] = {}
    for _ in range(runs):
        for name, root in roots.items():
            before = calibrate()
            seconds, seen = suite(root, log=LOGS / f"bench-suite-{re.sub(r'[^a-z0-9]+', '-', name.lower())}.log")
            after = calibrate()
            unit = (before + after) / 2
            units[name].append(seconds / unit)
            counts[name] = collections.Counter((seen.get("outcomes") or {}).values())
            print(
                f"  make test ({name}): {seconds:.1f} s = {seconds / unit:.1f} units (calibration {before:.2f} s "
                f"before, {after:.2f} s after); {sum(counts[name].values())} tests: "
                + ", ".join(f"{n} {k}" for k, n in sorted(counts[name].items())),
                flush=True,
            )
    lines = []
    for name, got in units.items():
        med = statistics.median(got)
        lines.append(
            f"{'make test (' + name + '), in units':<46} median {med:7.1f} u  (runs: "
            f"{', '.join(f'{u:.1f}' for u in got)}; {sum(counts[name].values())} tests; goal <= "
            f"{SUITE_GOAL_UNITS} units: {'ok' if med <= SUITE_GOAL_UNITS else 'OVER'})"
        )
        print(lines[-1], flush=True)
    return lines


def tree_at(project: Project, ref: str, dest: Path) -> Path:
    """A clean checkout of ``ref`` (a detached git worktree, removed by ``drop_tree``), with this
    checkout's vendored assets (they are fetched, not committed)."""
    subprocess.run(["git", "worktree", "add", "--quiet", "--detach", str(dest), ref], cwd=project.root, check=True)
    vendor = project.docs_dir / "assets" / "vendor"
    there = dest / project.docs_dir.relative_to(project.root) / "assets" / "vendor"
    if vendor.is_dir() and not there.exists():
        there.parent.mkdir(parents=True, exist_ok=True)
        there.symlink_to(vendor.resolve())
    return dest


def drop_tree(project: Project, dest: Path) -> None:
    subprocess.run(["git", "worktree", "remove", "--force", str(dest)], cwd=project.root, check=False)


def report(name: str, times: list[float], goal: float | None) -> str:
    med = statistics.median(times)
    runs = ", ".join(f"{t:.1f}" for t in times)
    verdict = "" if goal is None else f"; goal < {goal:g} s: {'ok' if med < goal else 'OVER'}"
    line = f"{name:<46} median {med:7.1f} s  (runs: {runs}{verdict})"
    print(line, flush=True)
    return line


def scratch(project: Project, dest: Path, posts: int = 0, seed: int = 0) -> Path:
    """A copy of the project to measure on (the checkout is never touched); optionally a long journal."""
    ignore = shutil.ignore_patterns(
        ".git",
        ".venv",
        "site",
        ".cache",
        "artifacts",
        "mutants",
        "__pycache__",
        ".pytest_cache",
        "vendor",
        "*.egg-info",
        ".kb",
    )
    shutil.copytree(project.root, dest, ignore=ignore)
    vendor = project.docs_dir / "assets" / "vendor"
    (dest / "docs" / "assets" / "vendor").symlink_to(vendor.resolve())
    if posts:
        make_journal(project, dest / "docs" / "journal" / "posts", posts, seed)
    return dest


def make_journal(project: Project, folder: Path, n: int, seed: int) -> None:
    """n dated posts: the seed's three bodies in turn, each with one to three random topics."""
    rng = random.Random(seed)
    bodies = []
    for post in sorted(folder.glob("*.md")):
        text = post.read_text(encoding="utf-8")
        bodies.append(text[text.index("\n# ", 3) + 1 :])
        post.unlink()
    start = dt.date(2024, 1, 1)
    for k in range(n):
        day = start + dt.timedelta(days=k)
        slug = day.strftime("%Y%m%d")
        body = re.sub(r"^# \d{8}", f"# {slug}", bodies[k % len(bodies)], count=1)
        topics = rng.sample(project.allowed_topics, rng.randint(1, 3))
        cats = "".join(f"\n  - {t}" for t in topics)
        (folder / f"{day.isoformat()}.md").write_text(
            f'---\ndate: {day.isoformat()}\nslug: "{slug}"\ncategories:{cats}\n---\n' + body, encoding="utf-8"
        )
    # claims refer to the seed's days by date: keep those three posts too, with their own dates
    for key, body in zip(("20251230", "20251231", "20260101"), bodies):
        day = dt.date(int(key[:4]), int(key[4:6]), int(key[6:]))
        (folder / f"{day.isoformat()}.md").write_text(
            f'---\ndate: {day.isoformat()}\nslug: "{key}"\ncategories:\n  - SAC\n---\n' + body, encoding="utf-8"
        )


BARE_CONFIG = "mkdocs.bare.yml"


def bare_config(root: Path, name: str = BARE_CONFIG) -> Path:
    """``root/name``: the project's ``mkdocs.yml`` without kb, for a bare Material build of the same content.

    Read and written with ruamel.yaml's round trip, so every other setting is the project's own, as
    written (theme and features, the search, tags and blog settings, the other plugins, the Markdown
    extensions and their configurations, ``!!python`` tags included). Removed: the kb plugin, the
    hooks that are kb's modules, and the nav entries of the pages kb generates (the claims, questions
    and review pages and its code folder: without kb they do not exist, and a strict build fails on a
    nav entry that names no file). The other entries stay, so that the same files are written.
    """
    from ruamel.yaml import YAML

    from kb import render, site

    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)  # the project's layout: a diff shows only what is removed
    source = root / "mkdocs.yml"
    config = yaml.load(source.read_text(encoding="utf-8"))
    plugins = config.get("plugins") or []
    options: dict = {}
    for k in reversed(range(len(plugins))):
        entry = plugins[k]
        if entry == site.PLUGIN or (hasattr(entry, "keys") and site.PLUGIN in entry):
            options = dict(entry.get(site.PLUGIN) or {}) if hasattr(entry, "keys") else {}
            del plugins[k]
    kb_package = Path(render.__file__).resolve().parent
    hooks = config.get("hooks") or []
    for k in reversed(range(len(hooks))):  # a module of the kb package: the one imported, or the project's copy
        hook = root / str(hooks[k])
        if hook.resolve().is_relative_to(kb_package) or hook.resolve().is_relative_to(root / kb_package.name):
            del hooks[k]
    layout = render.Layout()
    generated = {
        options.get("claims_page", layout.claims),
        options.get("questions_page", layout.questions),
        options.get("review_page", layout.review),
    }
    code_dir = str(options.get("code_dir", layout.code_dir)).strip("/") + "/"

    def kb_page(value) -> bool:
        return isinstance(value, str) and (value in generated or value.startswith(code_dir))

    def prune(items) -> None:
        for k in reversed(range(len(items))):
            item = items[k]
            value = next(iter(item.values())) if hasattr(item, "values") and len(item) == 1 else item
            if kb_page(value):
                del items[k]
            elif isinstance(value, list):
                prune(value)

    if isinstance(config.get("nav"), list):
        prune(config["nav"])
    dest = root / name
    with dest.open("w", encoding="utf-8") as out:
        yaml.dump(config, out)
    return dest


def ratio_report(name: str, ours: list[float], bare: list[float], goal: float) -> str:
    """The median of the runs' ratios (each run of ours over the bare run next to it, so that a change
    of the machine's load between runs cancels), in the style of ``report``; the ratio of the medians beside."""
    ratios = [a / b for a, b in zip(ours, bare, strict=True)]
    ratio = statistics.median(ratios)
    runs = ", ".join(f"{r:.2f}" for r in ratios)
    line = (
        f"{name:<46} median {ratio:7.2f}    (runs: {runs}; of the medians "
        f"{statistics.median(ours) / statistics.median(bare):.2f}; goal <= {goal:g}: {'ok' if ratio <= goal else 'OVER'})"
    )
    print(line, flush=True)
    return line


def journal_builds(root: Path, tmp: Path, posts: int, runs: int) -> list[str]:
    """``mkdocs build --strict`` of the long-journal copy, ours and bare Material (``bare_config``),
    alternately (ours, bare, ours, bare, ...) so that a change in the machine's load reaches both;
    each median, and the ratio ours/bare (``ratio_report``; goal: at most 1)."""
    bare = bare_config(root)
    wall: dict[Path, list[float]] = {root / "mkdocs.yml": [], bare: []}
    cpu: dict[Path, list[float]] = {root / "mkdocs.yml": [], bare: []}
    for _ in range(runs):
        for config in wall:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            wall[config].append(
                timed(
                    [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(config)]
                    + ["--site-dir", str(tmp / f"jsite-{config.stem}")],
                    root,
                    PYTHONPATH=str(root),
                )
            )
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[config].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    ours, theirs = wall.values()
    ours_cpu, theirs_cpu = cpu.values()
    return [
        report(f"mkdocs build --strict, {posts} posts", ours, 60),
        report(f"bare Material build --strict, {posts} posts", theirs, None),
        ratio_report(f"ratio ours / bare Material, {posts} posts", ours, theirs, 1.0),
        # the processor time of each build: what other work on a shared machine changes least
        ratio_report(
            f"  the same, in processor seconds ({statistics.median(ours_cpu):.1f}/{statistics.median(theirs_cpu):.1f})",
            ours_cpu,
            theirs_cpu,
            1.0,
        ),
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """`kb serve` on a scratch copy, started and stopped around a measurement."""

    def __init__(self, root: Path, log: Path | None = None):
        self.root, self.port = root, free_port()
        self.base = f"http://127.0.0.1:{self.port}/"
        # what kb serve said (its checks, rebuilds, problems): kept for when a measurement goes wrong
        self.log = open(log, "w", encoding="utf-8") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kb.cli", "serve", "--dev-addr", f"127.0.0.1:{self.port}"],
            cwd=root,
            env={**ENV, "PYTHONPATH": str(root)},
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        self.get("foundations/mse-conditional-mean/", timeout=900)

    def get(self, path: str, timeout: float = 60) -> str:
        end = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.base + path, timeout=30) as r:
                    return r.read().decode("utf-8")
            except OSError:
                if time.monotonic() > end or self.proc.poll() is not None:
                    raise RuntimeError(f"kb serve did not answer {path}") from None
                time.sleep(0.3)

    def status(self, page: str = PAGE) -> dict:
        try:
            return json.loads((self.root / ".kb" / "status.json").read_text(encoding="utf-8")).get(
                page.removeprefix("docs/"), {}
            )
        except (OSError, ValueError):
            return {}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if self.log is not subprocess.DEVNULL:
            self.log.close()


def save(root: Path, old: str, new: str, page: str = PAGE) -> float:
    path = root / page
    path.write_text(path.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
    return time.monotonic()


def live_status(
    served: Served, page: str = PAGE, claim: str = CLAIM, broken: str = BROKEN, cold: bool = False
) -> tuple[float, float, float]:
    """Seconds from saving to "checking", to a red status line (a broken claim), then to a green one (fixed).

    ``cold``: the notebook cache is cleared before each save (every notebook of the page runs).
    """

    def wait(saved: float, passed: bool) -> tuple[float, float]:
        checking = None
        while time.monotonic() - saved < 300:
            s = served.status(page)
            if checking is None and s.get("running"):
                checking = time.monotonic() - saved
            # red: as soon as the line is (validation fails before the tests end); green: at the end
            if (
                (not s.get("running") or passed is False)
                and s.get("passed") is passed
                and s.get("ran_at", "") >= saved_at
            ):
                return checking if checking is not None else float("nan"), time.monotonic() - saved
            time.sleep(0.05)
        raise RuntimeError("the status line never changed")

    def clear() -> None:
        if cold:
            shutil.rmtree(served.root / ".kb" / "jupyter-cache", ignore_errors=True)

    clear()
    saved_at = time.strftime("%Y-%m-%d %H:%M:%S")
    checking, red = wait(save(served.root, claim, broken, page), False)
    clear()
    saved_at = time.strftime("%Y-%m-%d %H:%M:%S")
    _, green = wait(save(served.root, broken, claim, page), True)
    return checking, red, green


def page_update(served: Served) -> float:
    """Seconds from saving a page to the served page showing the change."""
    marker = f"bench-{time.time_ns()}"
    saved = save(served.root, "# 最小化均方误差 = 预测条件均值", f"# 最小化均方误差 = 预测条件均值 {marker}")
    try:
        while marker not in served.get("foundations/mse-conditional-mean/"):
            time.sleep(0.3)
        return time.monotonic() - saved
    finally:
        save(served.root, f" {marker}", "")


def live(project: Project, tmp: Path, runs: int, before: str | None) -> None:
    """The live status line's times (``live_status``) for the cases below, each the median of ``runs``.
    With ``before``, that commit's ``kb serve`` runs beside this tree's, on its own scratch copy, and
    every run measures one then the other: a before/after pair sees the same load on a shared machine."""
    cases = [
        ("no notebook", dict(page=PLAIN_PAGE, claim=PLAIN_CLAIM, broken=PLAIN_BROKEN), 5),
        ("notebook, cache cleared", dict(cold=True), 15),
        ("notebook, cache kept", dict(), 5),
    ]
    trees = {"": project}
    if before:
        trees = {f" [before: {before}]": Project.find(tree_at(project, before, tmp / "before-live"))} | {
            " [this tree]": project
        }
    (project.root / "artifacts").mkdir(exist_ok=True)
    served: dict[str, Served] = {}
    try:
        for k, (tag, tree) in enumerate(trees.items()):
            log = project.root / "artifacts" / f"bench-kb-serve{'-before' if k < len(trees) - 1 else ''}.log"
            served[tag] = Served(scratch(tree, tmp / f"live-{k}"), log=log)
            live_status(served[tag])  # the notebook has passed once: the cache holds it
        for name, kwargs, goal in cases:
            measured: dict[str, list[tuple[float, float, float]]] = {tag: [] for tag in served}
            for _ in range(runs):
                for tag, server in served.items():
                    measured[tag].append(live_status(server, **kwargs))
            for tag, times in measured.items():
                report(f"live: 'checking' after saving ({name}){tag}", [c for c, _, _ in times], 1)
                report(f"live: red after saving ({name}){tag}", [r for _, r, _ in times], goal)
                report(f"live: green after fixing ({name}){tag}", [g for _, _, g in times], goal)
        for tag, server in served.items():
            report(f"served page updated after saving{tag}", [page_update(server) for _ in range(runs)], 15)
    finally:
        for server in served.values():
            server.stop()
        if before:
            drop_tree(project, tmp / "before-live")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs of each quick measurement")
    parser.add_argument("--suites", type=int, default=3, help="runs of make test")
    parser.add_argument(
        "--before", metavar="REF", help="also run make test on this commit's tree, in turn with this tree's"
    )
    parser.add_argument("--posts", type=int, default=1000, help="posts in the long-journal copy")
    parser.add_argument("--busy", action="store_true", help="keep one core busy during the measurements")
    parser.add_argument("--only", nargs="*", default=["check", "live", "build", "journal", "suite"])
    args = parser.parse_args(argv)
    project = Project.find()
    burner = None
    if args.busy:
        burner = multiprocessing.Process(target=burn, daemon=True)
        burner.start()
    print(
        f"kb bench on {os.cpu_count()} cores, python {sys.version.split()[0]}, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}{' (+ one core kept busy)' if args.busy else ''}",
        flush=True,
    )
    py = sys.executable
    try:
        with tempfile.TemporaryDirectory(prefix="kb-bench-") as tmp:
            tmp = Path(tmp)
            if "check" in args.only:
                report(
                    "kb check docs/topics/sac/critic.md",
                    [
                        timed([py, "-m", "kb.cli", "check", "docs/topics/sac/critic.md"], project.root)
                        for _ in range(args.runs)
                    ],
                    10,
                )
            if "build" in args.only:
                report(
                    "mkdocs build --strict",
                    [
                        timed(
                            [py, "-m", "mkdocs", "build", "--strict", "-q", "--site-dir", str(tmp / "site")],
                            project.root,
                        )
                        for _ in range(args.runs)
                    ],
                    20,
                )
            if "live" in args.only:
                live(project, tmp, args.runs, args.before)
            if "journal" in args.only:
                root = scratch(project, tmp / "journal", posts=args.posts)
                journal_builds(root, tmp, args.posts, args.runs)
                served = Served(root)
                try:
                    report(
                        f"served page updated after saving, {args.posts} posts",
                        [page_update(served) for _ in range(args.runs)],
                        15,
                    )
                finally:
                    served.stop()
            if "suite" in args.only and args.suites:
                roots = {"this tree": project.root}
                if args.before:
                    roots = {f"before: {args.before}": tree_at(project, args.before, tmp / "before")} | roots
                try:
                    suite_in_units(roots, args.suites)
                finally:
                    if args.before:
                        drop_tree(project, tmp / "before")
    finally:
        if burner is not None:
            burner.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
