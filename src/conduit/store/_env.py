"""What is installed in Conduit's own environment, read from the distributions' metadata.

Nothing here resolves anything: it reads what the installer put on disk (``METADATA``,
``entry_points.txt``, ``direct_url.json``) and walks the dependency edges that are
already installed, to tell Conduit's own distributions from the plugins' ones.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import sys
from dataclasses import dataclass, field
from typing import Any

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from conduit import DISTRIBUTION
from conduit.errors import ConduitError
from conduit.indexer.discover import ENTRY_POINT_GROUP

__all__ = [
    "CONDUIT_DIST",
    "Dist",
    "Snapshot",
    "archive_sha256",
    "closure",
    "conduit_closure",
    "constraints_text",
    "plugin_closure",
    "snapshot",
    "stub_wheel",
]

CONDUIT_DIST = DISTRIBUTION


@dataclass(frozen=True)
class Dist:
    """One installed distribution, as far as the store cares."""

    name: str  # canonical (PEP 503) name
    display: str  # the name as the distribution spells it
    version: str
    requires: tuple[str, ...] = ()
    plugins: tuple[str, ...] = ()  # entry point names in the conduit.plugins group
    #: the URL it was installed from when it was not a plain index install (PEP 610)
    url: str | None = None
    url_hash: str | None = None  # "sha256:..." recorded by the installer, if any

    def pin(self) -> str:
        """A requirement that reinstalls exactly this distribution."""
        if self.url is not None:
            return f"{self.display} @ {self.url}"
        return f"{self.display}=={self.version}"


@dataclass
class Snapshot:
    """Every distribution visible to this interpreter, by canonical name."""

    dists: dict[str, Dist] = field(default_factory=dict)

    def to_json(self) -> dict[str, dict[str, str | None]]:
        return {n: {"version": d.version, "url": d.url} for n, d in sorted(self.dists.items())}


def _site_dirs() -> list[str]:
    from conduit.index import site_dirs

    return site_dirs()


def _read_dist(dist: importlib.metadata.Distribution) -> Dist | None:
    try:
        display = dist.metadata["Name"]
        version = dist.version
    except Exception:  # a damaged or half-written dist-info: not ours to judge here
        return None
    if not display or not version:
        return None
    try:
        plugins = tuple(sorted(ep.name for ep in dist.entry_points.select(group=ENTRY_POINT_GROUP)))
    except Exception:
        plugins = ()
    url = url_hash = None
    raw = dist.read_text("direct_url.json")
    if raw:
        try:
            info = json.loads(raw)
            url = str(info["url"])
            if "vcs_info" in info:
                vcs = info["vcs_info"]
                url = f"{vcs.get('vcs', 'git')}+{url}@{vcs.get('commit_id', '')}".rstrip("@")
            elif "dir_info" not in info:
                sha = archive_sha256(info.get("archive_info", {}))
                url_hash = f"sha256:{sha}" if sha else None
        except (ValueError, KeyError, TypeError):
            url = url_hash = None
    return Dist(
        name=canonicalize_name(display),
        display=display,
        version=version,
        requires=tuple(dist.requires or ()),
        plugins=plugins,
        url=url,
        url_hash=url_hash,
    )


def archive_sha256(archive: dict[str, Any]) -> str | None:
    """The sha256 hex digest of a PEP 610 ``archive_info`` (also in pip's installation
    report): its ``hashes``, or the older single ``hash`` field."""
    sha = archive.get("hashes", {}).get("sha256")
    if not sha and str(archive.get("hash", "")).startswith("sha256="):
        sha = archive["hash"].partition("=")[2]
    return str(sha) if sha else None


def snapshot() -> Snapshot:
    """Read the installed distributions now (first one on ``sys.path`` wins)."""
    importlib.invalidate_caches()
    snap = Snapshot()
    for dist in importlib.metadata.distributions(path=_site_dirs()):
        rec = _read_dist(dist)
        if rec is not None and rec.name not in snap.dists:
            snap.dists[rec.name] = rec
    return snap


def _deps(dist: Dist, extras: set[str]) -> list[tuple[str, set[str]]]:
    """The installed-environment edges of ``dist`` (markers evaluated here)."""
    env: dict[str, str] = dict(default_environment())  # type: ignore[arg-type]
    out: list[tuple[str, set[str]]] = []
    for text in dist.requires:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is not None and not any(
            req.marker.evaluate({**env, "extra": extra}) for extra in (extras or {""})
        ):
            continue
        out.append((canonicalize_name(req.name), set(req.extras)))
    return out


def closure(snap: Snapshot, roots: list[str], stop: set[str]) -> set[str]:
    """``roots`` and every installed distribution they need (extras and markers
    honoured), not walking into ``stop``."""
    names: set[str] = set()
    walked: set[tuple[str, frozenset[str]]] = set()
    todo: list[tuple[str, set[str]]] = [(r, set()) for r in roots]
    while todo:
        name, extras = todo.pop()
        key = (name, frozenset(extras))
        if name in stop or name not in snap.dists or key in walked:
            continue
        walked.add(key)
        names.add(name)
        todo.extend(_deps(snap.dists[name], extras))
    return names


def conduit_closure(snap: Snapshot) -> set[str]:
    """Conduit itself and everything it needs: what no plugin operation may touch."""
    if CONDUIT_DIST not in snap.dists:
        raise ConduitError(
            f"Conduit is not installed as the distribution '{CONDUIT_DIST}' in {sys.prefix}",
            hint="install Conduit with pip or uv (not from a source checkout on PYTHONPATH) "
            "to manage plugins with it",
        )
    return closure(snap, [CONDUIT_DIST], set())


def plugin_closure(snap: Snapshot, own: set[str] | None = None) -> set[str]:
    """Plugin distributions and their dependencies, minus Conduit's own closure."""
    own = conduit_closure(snap) if own is None else own
    roots = [n for n, d in snap.dists.items() if d.plugins and n not in own]
    return closure(snap, roots, own)


def constraints_text(snap: Snapshot, own: set[str]) -> str:
    """A constraints file pinning Conduit and its requirements at their installed versions."""
    lines = [
        "# Conduit's own requirements at their installed versions: no plugin may change them.",
    ]
    for name in sorted(own):
        d = snap.dists[name]
        lines.append(f"{d.name}=={d.version}")
    return "\n".join(lines) + "\n"


def stub_wheel(directory: str, dist: Dist, *, requires: bool) -> str:
    """Write a wheel that stands for the installed ``dist`` in a resolution: its name and
    version, its requirements when ``requires`` (else none: they are installed too), no
    code. A resolver given ``NAME @ file://stub`` takes the installed version as the only
    candidate and never asks an index for it. Returns the file's path."""
    import base64
    import hashlib
    import os
    import re
    import zipfile

    from packaging.version import InvalidVersion, Version

    stem = re.sub(r"[-_.]+", "_", dist.name)
    try:
        version = str(Version(dist.version))
    except InvalidVersion:
        version = dist.version
    info = f"{stem}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {dist.display}\nVersion: {version}\n"
    if requires:
        meta += "".join(f"Requires-Dist: {r}\n" for r in dist.requires)
    files = {
        f"{info}/METADATA": meta,
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: conduit\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for name, text in files.items():
        data = text.encode("utf-8")
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}\n")
    files[f"{info}/RECORD"] = "".join(record) + f"{info}/RECORD,,\n"
    path = os.path.join(directory, f"{stem}-{version}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path
