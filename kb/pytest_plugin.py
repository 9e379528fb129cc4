"""pytest plugin: run what the pages show, and tie test failures to claims.

- A Markdown code block whose body is a pymdownx.snippets include
  (``--8<-- "snippets/x.py:section"``) is expanded exactly as the site expands it,
  then executed: the page shows those lines, so those lines must run.
- A failing (or skipped) test that decides a claim is reported with the claim's
  id, status and page, so "verified" can never stand beside a failing test.
- Notebooks executed by nbmake see ``KB_FAST=1``; every torch process runs on
  one thread (tiny tensors: threads only add contention on 2 cores).
"""

from __future__ import annotations

import os

os.environ.setdefault("KB_FAST", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import markdown  # noqa: E402
import pytest  # noqa: E402

from kb.project import ROOT  # noqa: E402

_claims_by_test: dict[str, list] | None = None
_contradicted: list[str] = []


def expand_includes(code: str) -> str:
    """Expand ``--8<--`` lines with pymdownx.snippets, configured as in mkdocs.yml."""
    if "--8<--" not in code:
        return code
    md = markdown.Markdown(
        extensions=["pymdownx.snippets"],
        extension_configs={
            "pymdownx.snippets": {"base_path": [str(ROOT)], "check_paths": True, "dedent_subsections": True}
        },
    )
    return "\n".join(md.preprocessors["snippet"].run(code.split("\n"))) + "\n"


def claims_by_test() -> dict[str, list]:
    global _claims_by_test
    if _claims_by_test is None:
        from kb.knowledge import KnowledgeBase

        _claims_by_test = KnowledgeBase().test_claims()
    return _claims_by_test


def pytest_configure(config):
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return
    torch.set_num_threads(1)


def pytest_collection_modifyitems(session, config, items):
    for item in items:
        block = getattr(item, "obj", None)
        code = getattr(block, "code", None)
        if type(item).__module__ == "pytest_codeblocks.plugin" and isinstance(code, str) and "--8<--" in code:
            try:
                block.code = expand_includes(code)
            except Exception as e:  # a missing file or section: fail the block, name it
                block.code = f"raise RuntimeError({f'{item.nodeid}: include failed: {e}'!r})\n"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    claims = claims_by_test().get(item.nodeid)
    if not claims or report.when != "call" and not report.failed:
        return
    names = "; ".join(
        f"claim '{b.get('id')}' ({b.where}) is marked {b.get('status')}" for b in claims
    )
    if report.skipped:
        report.outcome = "failed"
        report.longrepr = f"{item.nodeid} decides {names}: a deciding test may not be skipped"
    if report.failed:
        report.sections.append(("claims decided by this test", f"{names}, but its test fails: the page is wrong or the code is."))


def pytest_runtest_logreport(report):
    if report.failed:
        for b in claims_by_test().get(report.nodeid, []):
            _contradicted.append(f"{b.get('id')} [{b.get('status')}] {b.where} <- {report.nodeid}")


def pytest_terminal_summary(terminalreporter):
    if _contradicted:
        terminalreporter.section("claims contradicted by failing tests", red=True)
        for line in dict.fromkeys(_contradicted):
            terminalreporter.write_line(line)
