"""``kb topic new NAME``: a new topic, registered where the project reads topics from.

A topic is a journal category (``mkdocs.yml``: blog ``categories_allowed``), an entry in
the nav's topics section (when the nav is written out), a page ``docs/topics/<slug>.md``
and a snippet package ``snippets/<module>/`` with a first module whose test decides the
page's first claim. ``mkdocs.yml`` is edited with ruamel.yaml's round trip, so that its
comments and layout survive; the edit is then checked to have only added lines (anything
else is refused, the file untouched). Everything that can be refused is refused before
anything is written, in one line.
"""

from __future__ import annotations

import difflib
import json
import keyword
import os
import shlex
import tempfile
import unicodedata
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

from slugify import slugify as _slugify

from kb.project import KbError, Project

TEMPLATES = Path(__file__).parent / "templates" / "topic"


def slugify(value: str, separator: str = "-") -> str:
    """A URL slug: ASCII, lower case, Chinese transliterated to pinyin (python-slugify).

    Also Material's ``categories_slugify`` (called as ``slugify(text, separator)``), so that a
    category's URL and its topic page's URL agree: ``扩散策略`` -> ``kuo-san-ce-lue``.
    """
    return _slugify(str(value), separator=separator)


def module_name(slug: str) -> str:
    """The snippet package for a slug: a Python identifier (``flow-grpo`` -> ``flow_grpo``)."""
    name = slug.replace("-", "_")
    if name and (name[0].isdigit() or keyword.iskeyword(name)):
        name = f"topic_{name}"
    return name


@dataclass(frozen=True)
class NewTopic:
    name: str
    slug: str
    module: str

    @property
    def page_uri(self) -> str:
        return f"topics/{self.slug}.md"


def plan(project: Project, name: str) -> NewTopic:
    """The new topic's names, or a one-line refusal (empty, existing, colliding)."""
    config = project.rel(project.config_file)
    clean = unicodedata.normalize("NFC", name).strip()
    if not clean:
        raise KbError("the topic name is empty: kb topic new NAME (e.g. kb topic new 扩散策略)")
    if any(unicodedata.category(c)[0] == "C" for c in clean):
        raise KbError(f"the topic name {clean!r} holds a control or invisible character")
    if '"' in clean or "\n" in clean:
        raise KbError(f"the topic name {clean!r} holds a double quote (claim and card titles cannot)")
    slug = slugify(clean)
    if not slug:
        raise KbError(f"the topic name {clean!r} has no letters or digits to make a URL from")
    line = _line_of(project.config_file, "categories_allowed")
    for existing in project.allowed_topics:
        if existing.casefold() == clean.casefold():
            raise KbError(f"{config}:{line}: the topic '{existing}' already exists")
        if slugify(existing) == slug:
            raise KbError(
                f"{config}:{line}: the topic '{clean}' would have the URL slug '{slug}' of the "
                f"existing topic '{existing}'; choose another name"
            )
    module = module_name(slug)
    topic = NewTopic(clean, slug, module)
    docs_topics = project.docs_dir / "topics"
    for path in (docs_topics / f"{slug}.md", docs_topics / slug, project.snippets_dir / module):
        if path.exists() or path.is_symlink():
            raise KbError(
                f"{project.rel(path)}: already exists; the topic '{clean}' (slug '{slug}') would "
                "collide with it; choose another name"
            )
    return topic


def _line_of(path: Path, key: str) -> int:
    for i, text in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if text.strip().startswith(f"{key}:"):
            return i
    return 1


# ---- mkdocs.yml -----------------------------------------------------------------------------


def _yaml():
    from ruamel.yaml import YAML

    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096  # never re-wrap a long line
    y.indent(mapping=2, sequence=4, offset=2)
    return y


def edited_config(project: Project, topic: NewTopic) -> str:
    """mkdocs.yml's new text: the topic among the categories and in the nav's topics section.

    Refused (KbError) unless the new text is the old one with lines added only.
    """
    path = project.config_file
    shown = project.rel(path)
    old = path.read_text(encoding="utf-8")
    y = _yaml()
    try:
        data = y.load(old)
    except Exception as e:  # ruamel's errors carry a mark
        mark = getattr(e, "problem_mark", None)
        raise KbError(f"{shown}:{mark.line + 1 if mark else 1}: cannot read it as YAML ({e})") from None
    blog = next((p["blog"] for p in data.get("plugins") or [] if isinstance(p, dict) and "blog" in p), None)
    if blog is None or "categories_allowed" not in blog:
        raise KbError(f"{shown}: no blog plugin with categories_allowed: the journal's topics are defined there")
    blog["categories_allowed"].append(topic.name)
    nav = data.get("nav")
    if nav is not None:
        section = _topics_section(nav)
        if section is None:
            raise KbError(
                f"{shown}:{_line_of(path, 'nav')}: the nav has no section holding topics/index.md; "
                "add the topic's page to the nav by hand"
            )
        last = max((i for i, item in enumerate(section) if _mentions_topics(item)), default=len(section) - 1)
        from ruamel.yaml.comments import CommentedMap

        section.insert(last + 1, CommentedMap([(topic.name, topic.page_uri)]))
    out = StringIO()
    y.dump(data, out)
    new = out.getvalue()
    changes = [
        op
        for op in difflib.SequenceMatcher(None, old.split("\n"), new.split("\n"), autojunk=False).get_opcodes()
        if op[0] != "equal"
    ]
    if any(op[0] != "insert" for op in changes):
        tag, i1, _, _, _ = next(op for op in changes if op[0] != "insert")
        raise KbError(
            f"{shown}:{i1 + 1}: adding the topic would rewrite this line, not only add lines; "
            f"add '{topic.name}' to categories_allowed and the nav by hand"
        )
    return new


def _topics_section(nav) -> list | None:
    for item in nav:
        if isinstance(item, dict):
            for value in item.values():
                if isinstance(value, list) and "topics/index.md" in value:
                    return value
    return None


def _mentions_topics(item) -> bool:
    if isinstance(item, str):
        return item.startswith("topics/")
    if isinstance(item, dict):
        return any(_mentions_topics(v) for v in item.values())
    if isinstance(item, list):
        return any(_mentions_topics(v) for v in item)
    return False


# ---- files ----------------------------------------------------------------------------------


def rendered(topic: NewTopic) -> dict[str, str]:
    """The new files (project-relative path -> text), from the templates in kb/templates/topic."""
    values = {
        "name": topic.name,
        "slug": topic.slug,
        "module": topic.module,
        "name_yaml": json.dumps(topic.name, ensure_ascii=False),
        "name_shell": shlex.quote(topic.name),
    }
    files = {}
    for src in sorted(TEMPLATES.rglob("*")):
        if src.is_file():
            rel = src.relative_to(TEMPLATES).as_posix().replace("__module__", topic.module)
            rel = rel.replace("__slug__", topic.slug).removesuffix(".tmpl")
            text = src.read_text(encoding="utf-8")
            for key, value in values.items():
                text = text.replace("{{" + key + "}}", value)
            files[rel] = text
    return files


def _write_new(path: Path, text: str) -> None:
    """Write a file that must not exist yet (never replaces one that appeared meanwhile)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.link(tmp, path)
    finally:
        os.unlink(tmp)


def _replace(path: Path, text: str) -> None:
    mode = path.stat().st_mode & 0o777
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def create(project: Project, name: str, dry_run: bool = False) -> tuple[NewTopic, list[str]]:
    """Add the topic; returns it and the project-relative paths written (or that would be)."""
    topic = plan(project, name)
    config = edited_config(project, topic)
    files = rendered(topic)
    written = [project.rel(project.config_file), *files]
    if dry_run:
        return topic, written
    root = project.root
    made: list[Path] = []
    new_dirs = sorted(
        {d for rel in files for d in (root / rel).parents if d.is_relative_to(root) and d != root and not d.exists()},
        reverse=True,
    )
    try:
        for rel, text in files.items():
            path = root / rel
            try:
                _write_new(path, text)
            except FileExistsError:
                raise KbError(f"{rel}: appeared meanwhile; the topic was not added") from None
            made.append(path)
        _replace(project.config_file, config)
    except BaseException:
        for path in reversed(made):  # all or nothing: the project is as it was
            path.unlink(missing_ok=True)
        for folder in new_dirs:  # deepest first; only the folders made here
            try:
                folder.rmdir()
            except OSError:
                pass
        raise
    return topic, written
