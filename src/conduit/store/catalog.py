"""The plugin catalog: a JSON list at a configurable URL, cached, searched by
``conduit plugins search`` and used to resolve short names in ``plugins install``.

Format (``[store] catalog = "https://..."``; ``file://`` works too)::

    [
      {"name": "knowledge", "summary": "Search your notes",
       "package": "conduit-knowledge>=1.2", "capabilities": ["filesystem:read"]}
    ]
"""

from __future__ import annotations

import contextlib
import os
import time

import msgspec

from conduit.errors import StoreError
from conduit.fs import atomic_write

__all__ = ["DEFAULT_CATALOG", "CatalogEntry", "default", "load", "lookup", "requirement", "search"]

#: the catalog shipped with Conduit: its first-party plugins (package data)
DEFAULT_CATALOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default-catalog.json")


class CatalogEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One catalog entry (unknown fields are ignored, for catalogs newer than Conduit)."""

    name: str
    package: str
    summary: str = ""
    capabilities: list[str] = []


_decoder = msgspec.json.Decoder(list[CatalogEntry])


def _cache_file(url: str, cache_dir: str) -> str:
    from conduit.paths import stable_hash

    return os.path.join(cache_dir, f"catalog-{stable_hash(url)}.json")


def _fetch(url: str) -> bytes:
    import urllib.error
    import urllib.request

    if not url.startswith(("https://", "http://", "file://")):
        raise StoreError(
            f"catalog URL '{url}' is not https://, http:// or file://",
            hint="fix [store] catalog in the config",
        )
    try:
        with urllib.request.urlopen(url, timeout=15) as resp:
            data: bytes = resp.read()
            return data
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StoreError(f"cannot fetch the plugin catalog {url}: {reason}") from None


def _decode(url: str, data: bytes) -> list[CatalogEntry]:
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise StoreError(
            f"the plugin catalog {url} is not a valid catalog: {exc}",
            hint="it must be a JSON list of {name, package, summary, capabilities}",
        ) from None


def load(url: str, cache_dir: str, max_age: float, *, refresh: bool = False) -> list[CatalogEntry]:
    """The catalog, from the cache when it is younger than ``max_age`` seconds."""
    path = _cache_file(url, cache_dir)
    cached: bytes | None = None
    try:
        with open(path, "rb") as f:
            cached = f.read()
        fresh = time.time() - os.stat(path).st_mtime < max_age
    except OSError:
        fresh = False
    if cached is not None and fresh and not refresh:
        try:
            return _decoder.decode(cached)
        except msgspec.DecodeError:
            pass  # a damaged cache is only a cache: fetch again
    try:
        data = _fetch(url)
    except StoreError:
        if cached is None:
            raise
        return _decode(url, cached)  # offline: a stale catalog beats none
    entries = _decode(url, data)
    with contextlib.suppress(OSError):  # an unwritable cache only costs a fetch next time
        atomic_write(path, data)
    return entries


def default() -> list[CatalogEntry]:
    """The catalog shipped with Conduit (:data:`DEFAULT_CATALOG`): read from the
    installation, never fetched."""
    with open(DEFAULT_CATALOG, "rb") as f:
        return _decode(DEFAULT_CATALOG, f.read())


def lookup(entries: list[CatalogEntry], name: str) -> CatalogEntry | None:
    return next((e for e in entries if e.name == name), None)


def requirement(entry: CatalogEntry) -> str:
    """``entry``'s package as a requirement for the installer: a name from the package
    index with optional extras, version range and marker. Anything else (an option such
    as ``--index-url=...``, a URL or a path, more than one line) is refused: a catalog
    only says which package a short name means, never where or how to install it."""
    from packaging.requirements import InvalidRequirement, Requirement

    text = entry.package.strip()
    try:
        req = Requirement(text)
        valid = req.url is None and not any(c in text for c in "\r\n")
    except InvalidRequirement:
        valid = False
    if not valid:
        raise StoreError(
            f"the catalog entry {entry.name!r} names the package {entry.package!r}, which is "
            "not a requirement from the package index; refusing it",
            hint="fix the catalog ([store] catalog), or install the package by its own name",
        )
    return text


def search(entries: list[CatalogEntry], term: str) -> list[CatalogEntry]:
    """Entries whose name, summary or package contains ``term`` (case-insensitive),
    exact name matches first; every entry, by name, for an empty ``term``."""
    t = term.lower()
    hits = [
        e
        for e in entries
        if t in e.name.lower() or t in e.summary.lower() or t in e.package.lower()
    ]
    return sorted(hits, key=lambda e: (e.name.lower() != t, e.name))
