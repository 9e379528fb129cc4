"""``kb publish``: the strict site, pushed to a branch (gh-pages), as ``mkdocs gh-deploy`` does.

The site is built with MkDocs' own build (strict) into a temporary folder, for the
address it will be read at (``--site-url``; for a GitHub remote, its Pages address), and
without ``kb serve``'s live status line. A built page that still names 127.0.0.1 stops
the publication before anything is pushed. The push is MkDocs' own ``gh-deploy``
(ghp-import): one commit on the branch, with ``.nojekyll``.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
from pathlib import Path

from kb.live import STATUS_ENV
from kb.project import KbError, Project

GITHUB = re.compile(
    r"^(?:https://github\.com/|git@github\.com:|ssh://git@github\.com/)"
    r"(?P<owner>[^/]+)/(?P<repo>[^/]+?)(?:\.git)?/?$"
)
LOCAL = ("127.0.0.1", "localhost", "0.0.0.0")


def remote_url(root: Path, remote: str) -> str:
    """A remote's URL (a name is looked up in the repository's git config; a URL or path is itself)."""
    r = subprocess.run(["git", "config", "--get", f"remote.{remote}.url"], cwd=root, capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else remote


def site_url_for(given: str | None, configured: str | None, remote: str) -> str | None:
    """Where the published site will be read: --site-url, else GitHub Pages of the remote,
    else mkdocs.yml's site_url unless it is a local address (None: unknown)."""
    if given:
        return given if given.endswith("/") else given + "/"
    m = GITHUB.match(remote)
    if m:
        return f"https://{m['owner']}.github.io/{m['repo']}/"
    if configured and not any(host in configured for host in LOCAL):
        return configured
    return None


@contextlib.contextmanager
def _in(folder: Path):
    before = Path.cwd()
    os.chdir(folder)  # pymdownx.snippets and ghp-import work from the current directory
    try:
        yield
    finally:
        os.chdir(before)


def local_links(site: Path) -> list[str]:
    """Built files that name a local address (a published site must not)."""
    found = []
    for path in sorted(site.rglob("*")):
        if path.is_file() and path.suffix in {".html", ".xml", ".json", ".js", ".txt"}:
            text = path.read_text(encoding="utf-8", errors="replace")
            if any(host in text for host in ("127.0.0.1", "localhost:8000")):
                found.append(path.relative_to(site).as_posix())
    return found


def publish(
    project: Project,
    remote: str = "origin",
    branch: str = "gh-pages",
    site_url: str | None = None,
    message: str | None = None,
) -> str:
    """Build and push; returns the site's address. KbError (nothing pushed) on any problem."""
    from mkdocs.commands import build, gh_deploy
    from mkdocs.config import load_config
    from mkdocs.exceptions import Abort, MkDocsException

    root = project.root
    if subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=root, capture_output=True).returncode:
        raise KbError(f"{root}: not a git repository; kb publish pushes a branch of it (git init first)")
    url = site_url_for(site_url, project.config.get("site_url"), remote_url(root, remote))
    if url is None:
        raise KbError(
            f"{project.rel(project.config_file)}: site_url is {project.config.get('site_url')!r}, a local "
            "address, and the remote is not on GitHub; pass --site-url URL (where the site will be read)"
        )
    saved = os.environ.pop(STATUS_ENV, None)  # never the live status line
    try:
        with tempfile.TemporaryDirectory(prefix="kb-publish-") as tmp, _in(root):
            try:
                cfg = load_config(
                    str(project.config_file),
                    site_url=url,
                    site_dir=str(Path(tmp) / "site"),
                    strict=True,
                    remote_name=remote,
                    remote_branch=branch,
                )
                cfg.plugins.on_startup(command="gh-deploy", dirty=False)
                try:
                    build.build(cfg)
                finally:
                    cfg.plugins.on_shutdown()
            except (Abort, MkDocsException) as e:
                raise KbError(f"the strict build failed ({e}); nothing pushed") from None
            bad = local_links(Path(cfg.site_dir))
            if bad:
                raise KbError(f"{bad[0]}: the built site names 127.0.0.1 ({len(bad)} files); nothing pushed")
            try:
                gh_deploy.gh_deploy(cfg, message=message, ignore_version=True)
            except Abort as e:
                raise KbError(f"pushing to {remote} {branch} failed ({e}); see the lines above") from None
    finally:
        if saved is not None:
            os.environ[STATUS_ENV] = saved
    return url
