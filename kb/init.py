"""``kb init DIR``: a new, empty knowledge base with the same machinery.

The new project gets a copy of the tooling (this ``kb`` package), the pins
(``requirements.lock``), the site's own assets and template override, and a
``mkdocs.yml`` made from the one beside this ``kb`` with everything that is
content reset: the site's name, the journal's topics, the nav. Then one example
topic is added from ``kb topic new``'s templates and one journal post with ``kb new``'s
machinery, so the new project starts with a claim decided by a test. Nothing
of this repository's pages, notes or snippets is copied.

Everything is made in a hidden folder beside DIR and renamed into place at the
end: a refused or failed init leaves nothing behind.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import tomllib
from io import StringIO
from pathlib import Path

import kb
from kb import topics
from kb.project import KbError, Project
from kb.render import Layout

PACKAGE = Path(kb.__file__).resolve().parent
TEMPLATE = PACKAGE / "templates" / "init"
EXAMPLE_TOPIC = "高斯分布"
# What the new project takes from the knowledge base this kb lives in: the machinery only.
MACHINERY = ("requirements.lock", "overrides", "docs/assets/javascripts", "docs/assets/stylesheets")


def source_checkout() -> Path:
    """The knowledge base whose kb is running (its mkdocs.yml, pyproject.toml, pins)."""
    root = PACKAGE.parent
    missing = [p for p in ("mkdocs.yml", "pyproject.toml", *MACHINERY) if not (root / p).exists()]
    if missing:
        raise KbError(
            f"{root}: kb init copies the machinery beside the kb package, and {', '.join(missing)} "
            "is not there (run kb init from a knowledge base's own kb)"
        )
    return root


def _config(source: Path, name: str, example: topics.NewTopic) -> str:
    y = topics._yaml()
    data = y.load((source / "mkdocs.yml").read_text(encoding="utf-8"))
    data["site_name"] = name
    data["site_description"] = f"{name}：学习笔记，每个结论都有可运行的代码和测试。"
    for key in ("repo_url", "repo_name", "edit_uri"):
        data.pop(key, None)
    blog = next((p["blog"] for p in data.get("plugins") or [] if isinstance(p, dict) and "blog" in p), None)
    if blog is None:
        raise KbError(f"{source / 'mkdocs.yml'}: no blog plugin (the journal) to copy")
    blog["categories_allowed"][:] = [example.name]
    data["nav"] = [
        {"首页": "index.md"},
        {"主题": ["topics/index.md", {example.name: example.page_uri}, {"标签": "tags.md"}]},
        {"日志": ["journal/index.md"]},
        {"问题": Layout.questions},
        {"论断": Layout.claims},
        {"复习": Layout.review},
    ]  # the pages kb generates
    out = StringIO()
    y.dump(data, out)
    return out.getvalue()


def _pyproject(source: Path, package: str) -> str:
    text = (source / "pyproject.toml").read_text(encoding="utf-8")
    text = re.sub(r'(?m)^name = ".*"$', f'name = "{package}"', text, count=1)
    text = re.sub(
        r'(?m)^description = ".*"$', 'description = "A personal knowledge base, made with kb init."', text, count=1
    )
    text = re.sub(r"(?m)^include = \[.*\]$", 'include = ["kb*", "snippets*"]', text, count=1)
    text = re.sub(r"(?m)^testpaths = \[.*\]$", 'testpaths = ["tests", "snippets", "docs"]', text, count=1)
    # the developers' tools of the source checkout (mutation testing, coverage) stay there
    text = re.split(r"(?m)^# `make mutate`", text)[0].rstrip("\n") + "\n"
    data = tomllib.loads(text)
    if data["project"]["name"] != package or "mutmut" in data.get("tool", {}):
        raise KbError(f"{source / 'pyproject.toml'}: its layout changed; kb init cannot derive a project from it")
    return text


def _render(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def _git_init(root: Path) -> None:
    if shutil.which("git"):
        subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True, capture_output=True)


def init(target: Path, name: str | None = None, topic: str = EXAMPLE_TOPIC, today: dt.date | None = None) -> Path:
    """Make the knowledge base DIR; returns its path. KbError (nothing made) if DIR is in use."""
    target = Path(target).absolute()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise KbError(f"{target}: already exists and is not an empty folder; kb init makes a new one")
    if not target.parent.is_dir():
        raise KbError(f"{target.parent}: no such folder")
    source = source_checkout()
    name = (name or target.name).strip() or "Learning Notes"
    package = topics.slugify(name) or "knowledge-base"
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.kb-init-", dir=target.parent))
    # mkdtemp makes a private (0700) folder; the project is an ordinary one (and page blocks,
    # which run as another user in their sandbox, must be able to read it)
    umask = os.umask(0)
    os.umask(umask)
    work.chmod(0o777 & ~umask)
    try:
        shutil.copytree(PACKAGE, work / "kb", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for rel in MACHINERY:
            src, dst = source / rel, work / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            (
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
                if src.is_dir()
                else shutil.copy2(src, dst)
            )
        example = topics.NewTopic(topic, topics.slugify(topic), topics.module_name(topics.slugify(topic)))
        values = {"name": name, "topic_shell": shlex.quote(topic), "topic_slug": example.slug}
        for src in sorted(TEMPLATE.rglob("*")):
            if src.is_file():
                dst = work / src.relative_to(TEMPLATE)
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_text(_render(src.read_text(encoding="utf-8"), values), encoding="utf-8")
                shutil.copymode(src, dst)
        (work / "mkdocs.yml").write_text(_config(source, name, example), encoding="utf-8")
        (work / "pyproject.toml").write_text(_pyproject(source, package), encoding="utf-8")
        (work / "search-terms.txt").write_text(f"{topic}\n", encoding="utf-8")  # jieba's user words
        for rel, text in topics.rendered(example).items():  # what kb topic new writes
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            (work / rel).write_text(text, encoding="utf-8")
        Project.at(work / "mkdocs.yml").posts_dir.mkdir(parents=True)
        _first_post(Project.at(work / "mkdocs.yml"), topic, today or dt.date.today())
        (Project.at(work / "mkdocs.yml").posts_dir / ".kb-journal.lock").unlink(missing_ok=True)
        _git_init(work)
        if target.exists():
            target.rmdir()
        work.rename(target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return target


def _first_post(project: Project, topic: str, day: dt.date) -> None:
    from kb.journal import Journal

    journal = Journal(project.posts_dir, project.docs_dir / project.blog_dir, project.allowed_topics, shown=project.rel)
    journal.add(
        day,
        [topic],
        (
            f"用 `kb init` 建好了这个知识库，第一个主题是「{topic}」。\n\n"
            f"- 主题页上的论断由 `snippets/{topics.module_name(topics.slugify(topic))}/` 里的测试判定\n"
            "- `torch.distributions.Normal` 的第二个参数是标准差还是方差？\n"
        ),
    )
