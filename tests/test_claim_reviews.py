"""The second readings of claims (``kb/claim_reviews.py``): each review file read once, each problem as
``file:line``; and the fast parser it uses reads exactly what PyYAML's safe loader reads."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from kb import claim_reviews
from kb.project import Project

ROOT = Path(__file__).resolve().parents[1]

GOOD = """\
claim: some-claim
reviews:
- date: 2026-12-01
  commit: abc1234
  reviewer: second reader
  fingerprint: 0123456789abcdef
  sources: [docs/a.md, snippets/a.py]
  found: nothing
  resolution: none needed
- date: 2026-12-05
  commit: def5678
  reviewer: third reader
  fingerprint: fedcba9876543210
  sources: docs/a.md
  found: |
    a counterfactual
  resolution: test tightened
"""


def readings(tmp_path: Path, files: dict[str, str]) -> claim_reviews.Readings:
    (tmp_path / "mkdocs.yml").write_text("site_name: t\n", encoding="utf-8")
    folder = tmp_path / claim_reviews.FOLDER
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return claim_reviews.load(Project.find(tmp_path))


def test_a_review_file_gives_each_reading_with_its_line(tmp_path):
    r = readings(tmp_path, {"some-claim.yml": GOOD})
    assert not r.errors
    first, second = r.by_claim["some-claim"]
    assert (first.date, first.commit, first.sources) == (
        dt.date(2026, 12, 1),
        "abc1234",
        ("docs/a.md", "snippets/a.py"),
    )
    assert (second.sources, second.found, second.where) == (
        ("docs/a.md",),
        "a counterfactual",
        "claim-reviews/some-claim.yml:10",
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("claim: some-claim\nreviews: [\n", "claim-reviews/some-claim.yml:3: not valid YAML"),
        ("claim: some-claim\nreviews: {}\n", "claim-reviews/some-claim.yml:1: a review file holds"),
        ("", "claim-reviews/some-claim.yml:1: a review file holds"),
        ("claim: other\nreviews: []\n", "claim-reviews/some-claim.yml:1: the file of claim 'other' must be named"),
        (GOOD.replace("  found: nothing\n", ""), "claim-reviews/some-claim.yml:3: a review needs found"),
        (GOOD.replace("2026-12-05", "2026-13-05"), "claim-reviews/some-claim.yml:10: value '2026-13-05' is invalid"),
        (GOOD.replace("2026-12-05", "'soon'"), "claim-reviews/some-claim.yml:10: date 'soon' is not a date"),
    ],
)
def test_a_damaged_review_file_is_one_problem_naming_its_line(tmp_path, text, expected):
    r = readings(tmp_path, {"some-claim.yml": text})
    assert any(str(e).startswith(expected) for e in r.errors), [str(e) for e in r.errors]


def test_the_fast_parser_reads_what_pyyamls_safe_loader_reads():
    """libyaml (``CSafeLoader``) replaced two pure-Python parses of each file: on every review file of
    this project, and on the damaged ones above, the data and each node's line are PyYAML's."""
    files = sorted((ROOT / claim_reviews.FOLDER).glob("*.yml"))
    assert len(files) >= 90
    for path in files:
        text = path.read_text(encoding="utf-8-sig")
        node, data = claim_reviews._parsed(text)
        assert data == yaml.safe_load(text), path
        pure = yaml.compose(text, Loader=yaml.SafeLoader)
        lines = [item.start_mark.line for item in node.value[1][1].value]
        assert lines == [item.start_mark.line for item in pure.value[1][1].value], path
    for text in ("claim: x\nreviews: [\n", "a: 1\n  b: 2\n"):
        with pytest.raises(yaml.YAMLError) as fast:
            claim_reviews._parsed(text)
        with pytest.raises(yaml.YAMLError) as pure:
            yaml.safe_load(text)
        assert fast.value.problem_mark.line == pure.value.problem_mark.line
