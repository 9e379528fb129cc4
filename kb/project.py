"""Where the project is, and the settings kb shares with MkDocs.

The project is the folder holding ``mkdocs.yml``: found from the current
directory upward (the ``kb`` command, the pytest plugin) or given by the
``mkdocs.yml`` being built (the MkDocs plugin). Nothing is read relative to
where the ``kb`` package happens to be installed, so a second clone acts on
itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import yaml

CONFIG_NAME = "mkdocs.yml"


class KbError(Exception):
    """A refusal or a content error: reported as one line, exit code 2."""


class SourceError(KbError):
    """A problem in a file, at a line: ``path:line: message``."""

    def __init__(self, path: str, line: int | None, message: str):
        self.path, self.line, self.message = path, line, message
        super().__init__(f"{path}:{line}: {message}" if line else f"{path}: {message}")


class _TolerantLoader(yaml.SafeLoader):
    """Reads mkdocs.yml without importing what its !!python tags name."""


def _ignore_tag(loader, suffix, node):
    return None


_TolerantLoader.add_multi_constructor("tag:yaml.org,2002:python/", _ignore_tag)
_TolerantLoader.add_multi_constructor("!", _ignore_tag)


def read_config(path: Path) -> dict:
    """mkdocs.yml as data (its !!python tags read as None); SourceError if unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.load(text, Loader=_TolerantLoader)
    except OSError as e:
        raise SourceError(str(path), None, f"cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise SourceError(str(path), None, "not valid UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise SourceError(
            str(path), mark.line + 1 if mark else None, f"invalid YAML ({getattr(e, 'problem', None) or e})"
        ) from None
    if not isinstance(data, dict):
        raise SourceError(str(path), 1, "expected a mapping of MkDocs settings")
    return data


@dataclass(frozen=True)
class Project:
    """One Learning Notes checkout: its root and the layout mkdocs.yml gives it."""

    root: Path
    config: dict = field(repr=False, compare=False, hash=False)
    config_file: Path

    @classmethod
    def at(cls, config_file: Path | str) -> Project:
        """The project whose MkDocs configuration is this file."""
        path = Path(config_file).resolve()
        if not path.is_file():
            raise KbError(f"{path}: no such file (a Learning Notes project has a {CONFIG_NAME})")
        return cls(root=path.parent, config=read_config(path), config_file=path)

    @classmethod
    def find(cls, start: Path | str | None = None) -> Project:
        """The project holding ``start`` (default: the current directory), found upward."""
        here = Path(start or Path.cwd()).resolve()
        for folder in (here, *here.parents):
            if (folder / CONFIG_NAME).is_file():
                return cls.at(folder / CONFIG_NAME)
        raise KbError(
            f"{here}: not inside a Learning Notes project (no {CONFIG_NAME} here or above); "
            "cd into your clone or pass --root"
        )

    # ---- layout -------------------------------------------------------------
    @cached_property
    def docs_dir(self) -> Path:
        return (self.root / str(self.config.get("docs_dir") or "docs")).resolve()

    @property
    def snippets_dir(self) -> Path:
        """The only folder pages may include code from (pymdownx.snippets)."""
        return self.root / "snippets"

    def plugin(self, name: str) -> dict:
        for entry in self.config.get("plugins") or []:
            if isinstance(entry, dict) and name in entry:
                return entry[name] or {}
            if entry == name:
                return {}
        raise SourceError(self.rel(self.config_file), None, f"plugin '{name}' is not configured")

    @cached_property
    def blog_dir(self) -> str:
        return str(self.plugin("blog").get("blog_dir") or "blog").strip("/")

    @property
    def posts_uri(self) -> str:
        """docs-relative folder of the journal posts (Material's blog: ``<blog_dir>/posts``)."""
        return f"{self.blog_dir}/posts"

    @property
    def posts_dir(self) -> Path:
        return self.docs_dir / self.posts_uri

    @cached_property
    def allowed_topics(self) -> list[str]:
        """The journal categories, defined once in mkdocs.yml (blog: categories_allowed)."""
        topics = self.plugin("blog").get("categories_allowed")
        if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
            raise SourceError(self.rel(self.config_file), None, "blog: categories_allowed must be a list of topics")
        return list(topics)

    def rel(self, path: Path | str) -> str:
        """A path relative to the project root, for messages (file:line)."""
        p = Path(path)
        try:
            return p.absolute().relative_to(self.root).as_posix()
        except ValueError:
            return str(p)

    def inside(self, path: Path, folder: Path) -> bool:
        """Whether ``path`` lies in ``folder`` once every symlink is followed."""
        return path.resolve().is_relative_to(folder.resolve())
