"""``make mutate``: mutation testing of the snippet modules, as a measured figure.

    python -m devtools.mutate [snippets/x/y.py ...] [--report-only]

Runs mutmut (configured in pyproject.toml: test functions are not mutated) over
the given modules (default: all), then reports per module the mutants killed,
survived and timed out, and the kill rate over the non-equivalent mutants.
Equivalent mutants (a change that cannot alter behaviour) are listed with a
one-line reason each in ``mutation/*.txt`` (a file per topic); this command reads them.
Functions that mutmut cannot mutate (decorated ones) are named, so that an
unmeasured function is visible rather than counted as killed.

What counts: the code a reader is shown (every function inside a ``--8<--``
section) and everything it calls, across modules, plus what runs on import.
Test functions, fixtures and the helpers only tests reach (input generators such
as ``random_token_batch``) are test code: their mutants are listed apart and not
counted (issue 11: "Mutants of the test functions themselves do not count").

Goals (issue 11): at least 95 % of non-equivalent mutants killed in each module
that defines an interface other pages rely on, 85 % over all snippet modules.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from kb.project import KbError, Project

INTERFACES = (
    "sac/distributions.py",
    "sac/critic.py",
    "sac/target.py",
    "dpo/loss.py",
    "grpo/advantages.py",
    "grpo/loss.py",
    "grpo/kl.py",
    "flow_matching/path.py",
    "flow_grpo/sde.py",
    "neoverse/gaussians.py",
)
GOAL_INTERFACE, GOAL_ALL = 0.95, 0.85
EQUIVALENT = Path("mutation")  # every *.txt in it: one equivalent mutant per line, with its reason
STATUS = {
    1: "killed",
    3: "killed",
    0: "survived",
    36: "timeout",
    -24: "timeout",
    24: "timeout",
    152: "timeout",
    255: "timeout",
    5: "no tests",
    33: "no tests",
    34: "skipped",
    None: "not checked",
}


def equivalents(root: Path) -> dict[str, str]:
    """mutant name -> the reason it cannot change behaviour (``name  # reason`` per line, mutation/*.txt)."""
    out: dict[str, str] = {}
    for path in sorted((root / EQUIVALENT).glob("*.txt")):
        for n, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
            if not line.strip() or line.startswith("#"):
                continue
            name, _, reason = line.partition("#")
            if not reason.strip():
                raise KbError(
                    f"{path.relative_to(root)}:{n}: an equivalent mutant needs its reason "
                    "(name  # why it changes nothing)"
                )
            out[name.strip()] = reason.strip()
    return out


def undecorated_gap(path: Path) -> list[str]:
    """Functions mutmut leaves alone (decorated, other than staticmethod/classmethod), tests excepted."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        n.name
        for n in ast.walk(tree)
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
        and n.decorator_list
        and not n.name.startswith("test_")
        and not all(isinstance(d, ast.Name) and d.id in ("staticmethod", "classmethod") for d in n.decorator_list)
    ]


SECTION = re.compile(r"^\s*#\s*--8<--\s*\[(start|end):([\w-]+)\]")


def _functions(tree: ast.Module) -> dict[str, ast.AST]:
    """Module-level functions and methods by mutmut's name for them (``f`` or ``Class.method``)."""
    out: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out[node.name] = node
        elif isinstance(node, ast.ClassDef):
            out[node.name] = node
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    out[f"{node.name}.{item.name}"] = item
    return out


def _is_test(name: str, node: ast.AST) -> bool:
    last = name.rsplit(".", 1)[-1]
    fixture = any("fixture" in ast.unparse(d) for d in getattr(node, "decorator_list", []))
    return last.startswith("test_") or name.startswith("Test") or fixture


def measured_functions(snippets_dir: Path) -> dict[str, set[str]]:
    """Per module (snippets-relative path): the functions whose mutants count.

    Roots are the functions inside a ``--8<--`` section (what pages show) and the
    names module-level code uses; then everything they reference, followed through
    ``from snippets.x import f`` into other modules."""
    trees, funcs, imports, texts = {}, {}, {}, {}
    for path in sorted(snippets_dir.rglob("*.py")):
        module = path.relative_to(snippets_dir).as_posix()
        texts[module] = text = path.read_text(encoding="utf-8")
        trees[module] = tree = ast.parse(text)
        funcs[module] = _functions(tree)
        imports[module] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("snippets."):
                target = node.module.removeprefix("snippets.").replace(".", "/") + ".py"
                for alias in node.names:
                    imports[module][alias.asname or alias.name] = (target, alias.name)
    todo: list[tuple[str, str]] = []
    for module, tree in trees.items():
        depth, shown = 0, set()
        for n, line in enumerate(texts[module].split("\n"), 1):
            m = SECTION.match(line)
            if m:
                depth += 1 if m.group(1) == "start" else -1
            elif depth > 0:
                shown.add(n)
        for name, node in funcs[module].items():
            if node.lineno in shown and not _is_test(name, node):
                todo.append((module, name))
        for node in tree.body:  # code that runs on import
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)):
                todo += [(module, n.id) for n in ast.walk(node) if isinstance(n, ast.Name)]
    measured: dict[str, set[str]] = {m: set() for m in trees}
    while todo:
        module, name = todo.pop()
        if name in imports.get(module, {}) and name not in funcs[module]:
            module, name = imports[module][name]
        if module not in funcs or name not in funcs[module] or name in measured[module]:
            continue
        node = funcs[module][name]
        if _is_test(name, node):
            continue
        measured[module].add(name)
        if isinstance(node, ast.ClassDef):
            todo += [(module, k) for k in funcs[module] if k.startswith(name + ".")]
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name):
                todo.append((module, sub.id))
            elif isinstance(sub, ast.Attribute):  # self.method(...) or Class.method
                todo += [(module, k) for k in funcs[module] if k.endswith("." + sub.attr)]
    return measured


def mutant_globs(measured: dict[str, set[str]], modules: list[str] | None = None) -> list[str]:
    """mutmut patterns for the mutants that count (of the given modules, or all): test code's
    mutants are not run at all, which saves most of a run's time."""
    out = []
    for module, functions in sorted(measured.items()):
        if modules and module not in modules:
            continue
        prefix = "snippets." + module.removesuffix(".py").replace("/", ".")
        for f in sorted(functions):
            cls, _, name = f.rpartition(".")
            if cls:
                out.append(f"{prefix}.xǁ{cls}ǁ{name}__mutmut_*")
            elif f[:1].isupper():  # a class: its methods are listed on their own
                continue
            else:
                out.append(f"{prefix}.x_{name}__mutmut_*")
    return out


def _function_of(mutant: str) -> str:
    """mutmut's mutant name -> the function it mutates (``f`` or ``Class.method``)."""
    m = re.search(r"\.x(?:ǁ(\w+)ǁ|_)(\w+?)__mutmut_\d+$", mutant)
    if not m:
        return ""
    return f"{m.group(1)}.{m.group(2)}" if m.group(1) else m.group(2)


@dataclass
class ModuleResult:
    """One module's mutants: statuses of those that count, and test code's apart."""

    status: Counter = field(default_factory=Counter)  # killed / survived / timeout / ... of counted mutants
    survivors: list[str] = field(default_factory=list)  # counted mutants that survived (or had no test)
    helpers: Counter = field(default_factory=Counter)  # test helper -> its mutants (not counted)
    helper_survivors: set[str] = field(default_factory=set)


def results(root: Path) -> dict[str, ModuleResult]:
    """Per module (snippets-relative path), from mutmut's metadata."""
    out: dict[str, ModuleResult] = {}
    measured = measured_functions(root / "snippets")
    for meta in sorted((root / "mutants" / "snippets").rglob("*.py.meta")):
        module = meta.relative_to(root / "mutants" / "snippets").as_posix().removesuffix(".meta")
        codes = json.loads(meta.read_text(encoding="utf-8")).get("exit_code_by_key", {})
        r = out[module] = ModuleResult()
        for name, code in codes.items():
            function, status = _function_of(name), STATUS.get(code, "suspicious")
            if function not in measured.get(module, set()):  # test code: not counted
                if not function.rsplit(".", 1)[-1].startswith("test_"):
                    r.helpers[function] += 1
                    if status == "survived":
                        r.helper_survivors.add(name)
                continue
            r.status[status] += 1
            if status in ("survived", "no tests"):
                r.survivors.append(name)
    return out


def report(root: Path, modules: list[str] | None = None, out=print) -> bool:
    eq = equivalents(root)
    res = results(root)
    if modules:
        res = {m: c for m, c in res.items() if m in modules}
    if not res:
        raise KbError("no mutation results: run `make mutate` (mutmut run) first")
    ok = True
    total_killed = total_counted = 0
    out(f"{'module':<34}{'mutants':>8}{'killed':>8}{'survived':>9}{'timeout':>8}{'equiv.':>7}{'rate':>8}  goal")
    for module, r in res.items():
        c = r.status
        n_equiv = sum(n in eq for n in r.survivors)
        mutants = sum(v for k, v in c.items() if k != "not checked")
        counted = mutants - n_equiv - c["skipped"]
        killed = c["killed"] + c["timeout"]  # a mutant that makes a test hang is caught by the time limit
        rate = killed / counted if counted else 1.0
        goal = GOAL_INTERFACE if module in INTERFACES else None
        verdict = "" if goal is None else ("ok" if rate >= goal else f"BELOW {goal:.0%}")
        ok &= goal is None or rate >= goal
        if c["not checked"]:
            verdict += f" ({c['not checked']} not checked)"
            ok = False
        total_killed += killed
        total_counted += counted
        out(
            f"{module:<34}{mutants:>8}{c['killed']:>8}{c['survived'] + c['no tests']:>9}{c['timeout']:>8}"
            f"{n_equiv:>7}{rate:>8.1%}  {verdict}"
        )
        for name in sorted(n for n in r.survivors if n not in eq):
            out(f"    survived: {name}")
        if r.helpers:
            out(f"    test helpers, not counted ({sum(r.helpers.values())} mutants): {', '.join(sorted(r.helpers))}")
        gap = undecorated_gap(root / "snippets" / module)
        if gap:
            out(f"    not mutated (decorated): {', '.join(gap)}")
    rate = total_killed / total_counted if total_counted else 1.0
    ok &= rate >= GOAL_ALL or bool(modules)
    out(
        f"{'all modules':<34}{'':>8}{'':>8}{'':>9}{'':>8}{'':>7}{rate:>8.1%}  goal {GOAL_ALL:.0%}"
        f"{'' if rate >= GOAL_ALL else ' (below)'}"
    )
    seen = {n for r in res.values() for n in (*r.survivors, *r.helper_survivors)}
    stale = [n for n in eq if n not in seen]
    if stale and not modules:
        out(f"note: {len(stale)} listed equivalent mutant(s) no longer survive or exist: {', '.join(stale[:5])}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.mutate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("modules", nargs="*", help="snippet modules (default: all)")
    parser.add_argument("--report-only", action="store_true", help="report the last run without running mutmut")
    args = parser.parse_args(argv)
    try:
        project = Project.find()
        modules = [Path(m).resolve().relative_to(project.snippets_dir.resolve()).as_posix() for m in args.modules]
        if not args.report_only:
            globs = mutant_globs(measured_functions(project.snippets_dir), modules)
            r = subprocess.run([sys.executable, "-m", "mutmut", "run", *globs], cwd=project.root)
            if r.returncode not in (0, 1):
                print(f"kb mutate: mutmut exited with {r.returncode}", file=sys.stderr)
                return 2
        return 0 if report(project.root, modules or None) else 1
    except KbError as e:
        print(f"kb mutate: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
