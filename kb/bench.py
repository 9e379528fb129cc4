"""Benchmark: median wall time of `mkdocs build --strict` and of the test suite.

    python -m kb.bench [--builds 5] [--suites 3]

Speed is a measured figure: goals are < 20 s per strict build and < 3 min for
the whole suite on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from kb.project import ROOT

ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"kb bench: {' '.join(cmd)} failed:\n{result.stderr[-2000:]}")
    return elapsed


def report(name: str, times: list[float], goal: float) -> None:
    med = statistics.median(times)
    runs = ", ".join(f"{t:.1f}" for t in times)
    verdict = "ok" if med < goal else "OVER GOAL"
    print(f"{name:<28} median {med:6.1f} s  (runs: {runs}; goal < {goal:.0f} s: {verdict})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--builds", type=int, default=5)
    parser.add_argument("--suites", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"kb bench on {os.cpu_count()} cores, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as site:
        builds = [timed([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", site])
                  for _ in range(args.builds)]
    report("mkdocs build --strict", builds, 20)
    suites = [timed([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup"])
              for _ in range(args.suites)]
    report("test suite (make test)", suites, 180)
    return 0


if __name__ == "__main__":
    sys.exit(main())
