"""Third-party browser assets (KaTeX, Mermaid), fetched from the npm registry, checked, served by the site.

Nothing third-party is committed: ``kb assets`` (run by ``make``) downloads the
pinned tarballs, checks npm's integrity hash, and unpacks exactly the files
listed in ``vendor-files.json`` (each with its sha256) into
``docs/assets/vendor/`` (git-ignored). The build checks every listed file
against its hash and fails, saying to run ``kb assets``, if one is missing or
changed: the site never silently falls back to a CDN.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from kb.project import KbError

REGISTRY = os.environ.get("KB_NPM_REGISTRY", "https://registry.npmjs.org")
MANIFEST = Path(__file__).with_name("vendor-files.json")


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    integrity: str  # npm's "dist.integrity" (sha512, base64)

    @property
    def url(self) -> str:
        return f"{REGISTRY}/{self.name}/-/{self.name}-{self.version}.tgz"


PACKAGES = (
    Package(
        "katex",
        "0.19.1",
        "sha512-jG8uKntjSEcm2EpQOh0XturpPuuC9r3Sq5HLHdsFdWZT27E672SF19QEi+of0/YeOy15lDgRhKvr5614uRrEfA==",
    ),
    Package(
        "mermaid",
        "11.12.2",
        "sha512-n34QPDPEKmaeCG4WDMGy0OT6PSyxKCfy2pJgShP+Qow2KLrvWjclwbc3yXfSIf4BanqWEhQEpngWwNp/XhZt6w==",
    ),
)


def vendor_dir(docs_dir: Path) -> Path:
    return Path(docs_dir) / "assets" / "vendor"


def manifest() -> dict[str, dict[str, str]]:
    """package -> {path inside the tarball: sha256 of the file}; served as vendor/<package>/<path minus dist/>."""
    return json.loads(MANIFEST.read_text(encoding="utf-8"))


def served_path(package: str, inner: str) -> str:
    return f"{package}/{inner.removeprefix('dist/')}"


def problems(docs_dir: Path) -> list[str]:
    """What is missing or changed among the vendored files (empty when all is in place)."""
    dest = vendor_dir(docs_dir)
    out = []
    for package, files in manifest().items():
        for inner, digest in files.items():
            path = dest / served_path(package, inner)
            if not path.is_file():
                out.append(f"{path} is missing")
            elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                out.append(f"{path} differs from {package}'s published file")
    return out


def check(docs_dir: Path) -> None:
    found = problems(docs_dir)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise KbError(
            f"{found[0]}{more}: run `kb assets` (or `make setup`) to fetch KaTeX and Mermaid; "
            "the site serves them itself and never loads them from a CDN"
        )


def _check_integrity(data: bytes, pkg: Package) -> None:
    algo, _, expected = pkg.integrity.partition("-")
    digest = base64.b64encode(hashlib.new(algo, data).digest()).decode()
    if digest != expected:
        raise KbError(f"{pkg.url}: integrity mismatch ({algo}); refusing to unpack it")


def _fetch(pkg: Package) -> bytes:
    try:
        with urllib.request.urlopen(pkg.url, timeout=120) as response:
            return response.read()
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", None) or e
        raise KbError(f"cannot fetch {pkg.url} ({reason}); kb assets needs the npm registry once, online") from None


def unpack(data: bytes, pkg: Package, files: dict[str, str], target: Path) -> None:
    """Unpack exactly the listed files of a checked tarball, each matching its sha256, into ``target``."""
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            name = PurePosixPath(member.name)
            if name.is_absolute() or ".." in name.parts:
                raise KbError(f"{pkg.url}: archive entry {member.name} escapes its folder; refusing the archive")
            inner = str(PurePosixPath(*name.parts[1:])) if len(name.parts) > 1 else ""
            if inner in files:
                if not member.isfile():
                    raise KbError(f"{pkg.url}: {member.name} is not a regular file; refusing the archive")
                found[inner] = tar.extractfile(member).read()
    missing = sorted(set(files) - set(found))
    if missing:
        raise KbError(f"{pkg.url}: the archive lacks {missing[0]} (and {len(missing) - 1} more); refusing it")
    for inner, content in found.items():
        if hashlib.sha256(content).hexdigest() != files[inner]:
            raise KbError(f"{pkg.url}: {inner} differs from the recorded file; refusing the archive")
    staging = Path(tempfile.mkdtemp(prefix=f".{pkg.name}-", dir=target.parent))
    try:
        for inner, content in found.items():
            out = staging / inner.removeprefix("dist/")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(content)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def install(docs_dir: Path, *, log=print) -> None:
    """Fetch and unpack every package whose files are missing or changed."""
    dest = vendor_dir(docs_dir)
    listed = manifest()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KbError(f"{dest}: cannot create the folder ({e.strerror or e})") from None
    for pkg in PACKAGES:
        files = listed[pkg.name]
        if all(
            (dest / served_path(pkg.name, inner)).is_file()
            and hashlib.sha256((dest / served_path(pkg.name, inner)).read_bytes()).hexdigest() == digest
            for inner, digest in files.items()
        ):
            continue
        log(f"kb assets: fetching {pkg.name}@{pkg.version} from {REGISTRY}")
        data = _fetch(pkg)
        _check_integrity(data, pkg)
        try:
            unpack(data, pkg, files, dest / pkg.name)
        except OSError as e:
            raise KbError(f"{dest / pkg.name}: cannot write ({e.strerror or e})") from None
