"""`make mutate`'s report: what counts, equivalents, and the goals."""

import json
import textwrap

import pytest

from devtools import mutate
from kb.project import KbError

SHOWN = textwrap.dedent("""\
    import torch

    # --8<-- [start:loss]
    def loss(x):
        return _square(x).mean()
    # --8<-- [end:loss]


    def _square(x):
        return x * x


    def make_batch(seed):
        return torch.ones(3) * seed


    def test_loss():
        assert loss(make_batch(2)) == 4
    """)
USER = textwrap.dedent("""\
    from snippets.topic.core import loss


    # --8<-- [start:train]
    def train(x):
        return loss(x) + 1
    # --8<-- [end:train]


    def unused():
        return 0
    """)


def project(tmp_path, codes: dict[str, int], equivalents: str = "") -> None:
    (tmp_path / "mkdocs.yml").write_text("site_name: t\n", encoding="utf-8")
    pkg = tmp_path / "snippets" / "topic"
    pkg.mkdir(parents=True)
    (pkg / "core.py").write_text(SHOWN, encoding="utf-8")
    (pkg / "user.py").write_text(USER, encoding="utf-8")
    meta = tmp_path / "mutants" / "snippets" / "topic"
    meta.mkdir(parents=True)
    (meta / "core.py.meta").write_text(json.dumps({"exit_code_by_key": codes}), encoding="utf-8")
    (tmp_path / "mutation").mkdir()
    (tmp_path / "mutation" / "topic.txt").write_text(equivalents, encoding="utf-8")


def test_shown_code_and_what_it_calls_count_test_helpers_do_not(tmp_path):
    project(tmp_path, {})
    measured = mutate.measured_functions(tmp_path / "snippets")
    # `_square` is called by the shown `loss`; `make_batch` only by a test.
    assert measured["topic/core.py"] == {"loss", "_square"}
    assert measured["topic/user.py"] == {"train"}


def test_report_counts_rates_over_shown_code_and_lists_helpers_apart(tmp_path):
    p = "snippets.topic.core."
    codes = {
        p + "x_loss__mutmut_1": 1,
        p + "x_loss__mutmut_2": 0,
        p + "x__square__mutmut_1": 1,
        p + "x_make_batch__mutmut_1": 0,
        p + "x_test_loss__mutmut_1": 0,
    }
    project(tmp_path, codes)
    lines: list[str] = []
    ok = mutate.report(tmp_path, out=lines.append)
    row = next(line for line in lines if line.startswith("topic/core.py"))
    assert row.split()[1:4] == ["3", "2", "1"] and "66.7%" in row  # 3 counted, 2 killed
    assert any("survived: snippets.topic.core.x_loss__mutmut_2" in line for line in lines)
    assert any("test helpers, not counted (1 mutants): make_batch" in line for line in lines)
    assert not ok  # below the 85 % overall goal
    # Listed as equivalent, with a reason, the survivor no longer counts: 2 of 2.
    project_dir = tmp_path / "again"
    project_dir.mkdir()
    project(project_dir, codes, p + "x_loss__mutmut_2  # changes nothing\n")
    lines.clear()
    assert mutate.report(project_dir, out=lines.append)
    assert "100.0%" in next(line for line in lines if line.startswith("topic/core.py"))


def test_an_equivalent_without_a_reason_is_refused_naming_the_line(tmp_path):
    project(tmp_path, {}, "\nsnippets.topic.core.x_loss__mutmut_2\n")
    with pytest.raises(KbError, match=r"mutation/topic.txt:2: an equivalent mutant needs its reason"):
        mutate.equivalents(tmp_path)


def test_only_the_mutants_that_count_are_run(tmp_path):
    project(tmp_path, {})
    measured = mutate.measured_functions(tmp_path / "snippets")
    measured["topic/core.py"] |= {"Model", "Model.forward"}
    assert mutate.mutant_globs(measured) == [
        "snippets.topic.core.xǁModelǁforward__mutmut_*",
        "snippets.topic.core.x__square__mutmut_*",
        "snippets.topic.core.x_loss__mutmut_*",
        "snippets.topic.user.x_train__mutmut_*",
    ]
    assert mutate.mutant_globs(measured, ["topic/user.py"]) == ["snippets.topic.user.x_train__mutmut_*"]
    for name in ("snippets.topic.core.x_loss__mutmut_3", "snippets.topic.core.xǁModelǁforward__mutmut_1"):
        assert mutate._function_of(name) in measured["topic/core.py"]
