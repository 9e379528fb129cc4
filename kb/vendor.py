"""Third-party browser assets (KaTeX, Mermaid), fetched from the npm registry.

Nothing third-party is committed: `kb assets` (run by `make`) and the MkDocs
plugin download the pinned tarballs once, check their npm integrity hash and
unpack the files the site needs into ``docs/assets/vendor/`` (git-ignored), so
the built site serves them itself and a page makes no request to a CDN.
"""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REGISTRY = "https://registry.npmjs.org"


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    integrity: str  # npm's "dist.integrity" (sha512, base64)
    files: tuple[str, ...]  # paths inside the tarball's package/ folder (dirs end with /)

    @property
    def url(self) -> str:
        return f"{REGISTRY}/{self.name}/-/{self.name}-{self.version}.tgz"


PACKAGES = (
    Package(
        "katex",
        "0.19.1",
        "sha512-jG8uKntjSEcm2EpQOh0XturpPuuC9r3Sq5HLHdsFdWZT27E672SF19QEi+of0/YeOy15lDgRhKvr5614uRrEfA==",
        ("dist/katex.min.js", "dist/katex.min.css", "dist/contrib/auto-render.min.js", "dist/fonts/"),
    ),
    Package(
        "mermaid",
        "11.12.2",
        "sha512-n34QPDPEKmaeCG4WDMGy0OT6PSyxKCfy2pJgShP+Qow2KLrvWjclwbc3yXfSIf4BanqWEhQEpngWwNp/XhZt6w==",
        ("dist/mermaid.min.js",),
    ),
)


def vendor_dir(docs_dir: Path) -> Path:
    return Path(docs_dir) / "assets" / "vendor"


def _stamp(dest: Path, pkg: Package) -> Path:
    return dest / pkg.name / ".version"


def _current(dest: Path, pkg: Package) -> bool:
    stamp = _stamp(dest, pkg)
    return stamp.is_file() and stamp.read_text() == pkg.version


def is_installed(docs_dir: Path) -> bool:
    return all(_current(vendor_dir(docs_dir), p) for p in PACKAGES)


def _check_integrity(data: bytes, pkg: Package) -> None:
    algo, _, expected = pkg.integrity.partition("-")
    digest = base64.b64encode(hashlib.new(algo, data).digest()).decode()
    if digest != expected:
        raise RuntimeError(f"{pkg.url}: integrity mismatch ({algo} {digest} != {expected})")


def install(docs_dir: Path, *, log=print) -> None:
    """Download and unpack every pinned package that is missing or outdated."""
    dest = vendor_dir(docs_dir)
    for pkg in PACKAGES:
        if _current(dest, pkg):
            continue
        log(f"kb assets: fetching {pkg.name}@{pkg.version} from {REGISTRY}")
        with urllib.request.urlopen(pkg.url, timeout=120) as response:
            data = response.read()
        _check_integrity(data, pkg)
        target = dest / pkg.name
        shutil.rmtree(target, ignore_errors=True)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar.getmembers():
                inner = member.name.removeprefix("package/")
                if not member.isfile() or not any(
                    inner == f or (f.endswith("/") and inner.startswith(f)) for f in pkg.files
                ):
                    continue
                out = target / inner.removeprefix("dist/")
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(tar.extractfile(member).read())
        _stamp(dest, pkg).write_text(pkg.version)
