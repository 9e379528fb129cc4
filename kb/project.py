"""Where things live in the project, and the settings kb shares with MkDocs."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SNIPPETS = ROOT / "snippets"
JOURNAL_POSTS = DOCS / "journal" / "posts"
MKDOCS_YML = ROOT / "mkdocs.yml"


class _TolerantLoader(yaml.SafeLoader):
    """Reads mkdocs.yml without importing what its !!python tags name."""


def _ignore_tag(loader, suffix, node):
    return None


_TolerantLoader.add_multi_constructor("tag:yaml.org,2002:python/", _ignore_tag)
_TolerantLoader.add_multi_constructor("!", _ignore_tag)


@lru_cache(maxsize=None)
def mkdocs_config(path: Path = MKDOCS_YML) -> dict:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_TolerantLoader)


def plugin_config(name: str, path: Path = MKDOCS_YML) -> dict:
    for entry in mkdocs_config(path).get("plugins", []):
        if isinstance(entry, dict) and name in entry:
            return entry[name] or {}
        if entry == name:
            return {}
    raise KeyError(f"{path}: plugin '{name}' is not configured")


def allowed_topics(path: Path = MKDOCS_YML) -> list[str]:
    """The journal categories, defined once in mkdocs.yml (blog: categories_allowed)."""
    return list(plugin_config("blog", path)["categories_allowed"])


def rel(path: Path) -> str:
    """A path relative to the project root, for messages (file:line)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)
