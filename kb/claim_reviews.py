"""Second readings of claims: who read a claim against its sources, when, and what came of it.

Every claim is read by a reviewer who did not write it, given only the page, the
snippet, the test and the cited sources, and asked to refute the claim as worded
and to find a counterfactual under which its test would still pass. Each reading
is one YAML file, ``claim-reviews/<claim id>.yml``:

    claim: mse-predicts-conditional-mean
    reviews:
      - date: 2026-12-07
        commit: 01f415b          # the commit the reviewer read
        reviewer: second reader (fresh context)
        fingerprint: dd408f86fc79e587   # `kb claims --json`: the claim as read
        sources: [docs/foundations/mse-conditional-mean.md, snippets/foundations/mse.py]
        found: what the reviewer found (or "nothing")
        resolution: what was changed because of it (or why nothing was)

A reading is current while the claim's fingerprint (its block and its deciding
test's code) is the one recorded: a claim changed after its review shows as not
yet re-read.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import yaml

from kb import sources
from kb.project import Project, SourceError

FOLDER = "claim-reviews"
FIELDS = ("date", "commit", "reviewer", "fingerprint", "sources", "found", "resolution")


@dataclass(frozen=True)
class ClaimReview:
    claim: str
    date: dt.date
    commit: str
    reviewer: str
    fingerprint: str
    sources: tuple[str, ...]
    found: str
    resolution: str
    where: str  # file:line of the entry


@dataclass
class Readings:
    by_claim: dict[str, list[ClaimReview]] = field(default_factory=dict)
    errors: list[SourceError] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # claim id -> project-relative file


def _line_of(node: yaml.Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def _parsed(text: str) -> tuple[yaml.Node | None, object]:
    """The document's node tree (for line numbers) and its data, from one parse."""
    loader = sources.FAST_LOADER(text)  # the live check reads every review file at each save
    try:
        node = loader.get_single_node()
        return node, loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()


def load(project: Project) -> Readings:
    """Every review file of the project; each problem as file:line."""
    out = Readings()
    folder = project.root / FOLDER
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.yml")):
        rel = project.rel(path)
        try:
            text = sources.read_text(path, rel)  # not UTF-8: named by its line
            node, data = _parsed(text)
        except SourceError as e:
            out.errors.append(e)
            continue
        except yaml.YAMLError as e:  # a syntax error, or a character YAML refuses (NUL)
            line, problem = sources.yaml_error(e, text)
            out.errors.append(SourceError(rel, line, f"not valid YAML ({problem})"))
            continue
        except (ValueError, TypeError, OverflowError) as e:  # well-formed, but no value: date: 2026-13-05
            line, value = sources.invalid_value_line(text)
            out.errors.append(SourceError(rel, line, f"value '{value}' is invalid ({e})"))
            continue
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("claim"), str)
            or not isinstance(data.get("reviews"), list)
        ):
            out.errors.append(SourceError(rel, 1, "a review file holds `claim: <id>` and `reviews:` (a list)"))
            continue
        claim = data["claim"]
        if path.stem != claim:
            out.errors.append(SourceError(rel, 1, f"the file of claim '{claim}' must be named {claim}.yml"))
            continue
        items = node.value[[k.value for k, _ in node.value].index("reviews")][1].value
        reviews = []
        for entry, item in zip(data["reviews"], items):
            where = _line_of(item)
            missing = [k for k in FIELDS if not isinstance(entry, dict) or entry.get(k) in (None, "")]
            if missing:
                out.errors.append(SourceError(rel, where, f"a review needs {', '.join(missing)}"))
                continue
            if not isinstance(entry["date"], dt.date):
                out.errors.append(SourceError(rel, where, f"date '{entry['date']}' is not a date (YYYY-MM-DD)"))
                continue
            srcs = entry["sources"] if isinstance(entry["sources"], list) else [entry["sources"]]
            reviews.append(
                ClaimReview(
                    claim,
                    entry["date"],
                    str(entry["commit"]),
                    str(entry["reviewer"]),
                    str(entry["fingerprint"]),
                    tuple(str(s) for s in srcs),
                    str(entry["found"]).strip(),
                    str(entry["resolution"]).strip(),
                    f"{rel}:{where}",
                )
            )
        out.by_claim[claim] = sorted(reviews, key=lambda r: r.date)
        out.files[claim] = rel
    return out


def latest(reviews: list[ClaimReview]) -> ClaimReview | None:
    return reviews[-1] if reviews else None


def is_current(reviews: list[ClaimReview], fingerprint: str) -> bool:
    """Whether the last reading read the claim as it is now."""
    last = latest(reviews)
    return last is not None and last.fingerprint == fingerprint
