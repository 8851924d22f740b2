"""``conduit.lock``: the plugin distributions of one environment, exact and hashed.

The file is TOML, written by Conduit (never by hand) in one deterministic form: packages
sorted by name, hashes sorted, no timestamps, so that a team can commit it and a diff
shows exactly what changed. See docs/lockfile.md for the reference.

::

    # ... header comment ...
    lock-version = 1

    [[package]]
    name = "conduit-knowledge"
    version = "1.4.0"
    requested = "conduit-knowledge>=1.2"   # what was asked for (plugin distributions only)
    plugins = ["knowledge"]                # the plugins it provides
    hashes = ["sha256:..."]
    index = "https://pypi.example.org/simple"  # where it came from: the sources in
    find-links = ["/srv/wheels"]                 # effect when it was installed

    [[package]]
    name = "markdown-it-py"                # a dependency of a plugin
    version = "3.0.0"
    hashes = ["sha256:...", "sha256:..."]
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Callable

import msgspec

from conduit.errors import ConfigError
from conduit.fs import atomic_write

__all__ = [
    "LOCK_FILENAME",
    "LOCK_VERSION",
    "READABLE_VERSIONS",
    "LockFile",
    "LockedPackage",
    "dumps",
    "find",
    "read",
]

LOCK_FILENAME = "conduit.lock"
#: 2 added each package's sources (index, extra-indexes, find-links): a Conduit that
#: writes 1 refuses the file ("upgrade Conduit") instead of failing on an unknown field
LOCK_VERSION = 2
#: the formats this Conduit reads (a version 1 file is written back as 2)
READABLE_VERSIONS = (1, 2)

HEADER = (
    "# conduit.lock: the plugin distributions of a Conduit environment, with exact versions\n"
    "# and sha256 hashes. Written by 'conduit plugins install/uninstall/update/lock'; applied\n"
    "# by 'conduit plugins sync'. Commit it; do not edit it by hand.\n"
)


class LockedPackage(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, rename="kebab"
):
    """One distribution: a plugin distribution (``plugins`` not empty) or a dependency."""

    name: str
    version: str
    hashes: list[str] = []
    requested: str | None = None
    plugins: list[str] = []
    #: set when it was installed from a URL or a local path instead of an index
    url: str | None = None
    #: the sources in effect when it was installed (none: the installer's default index),
    #: used again by every later operation that needs it from an index
    index: str | None = None
    extra_indexes: list[str] = []
    find_links: list[str] = []


class LockFile(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, rename="kebab"
):
    lock_version: int = LOCK_VERSION
    package: list[LockedPackage] = []

    def by_name(self) -> dict[str, LockedPackage]:
        return {p.name: p for p in self.package}


def find(config_dir: str, explicit: str | None, cwd: str) -> str:
    """The lock file to use: ``--lock``, else a ``conduit.lock`` in the current project
    (the current directory or a parent up to the repository root), else the config dir's.
    """
    if explicit:
        return os.path.abspath(explicit)
    from conduit.paths import workspace_dirs

    for d in workspace_dirs(cwd):
        candidate = os.path.join(d, LOCK_FILENAME)
        if os.path.isfile(candidate):
            return candidate
    return os.path.join(config_dir, LOCK_FILENAME)


def read(path: str) -> LockFile | None:
    """The lock file at ``path``, ``None`` if there is none; a bad one is a ConfigError."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(path, f"cannot read: {exc.strerror}") from None
    hint = "regenerate it with 'conduit plugins lock' (or restore it from version control)"
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(path, f"invalid TOML: {exc}", hint=hint) from None
    try:
        lock = msgspec.convert(data, LockFile)
    except msgspec.ValidationError as exc:
        problem, _, where = str(exc).partition(" - at `$")
        where = where.rstrip("`").lstrip(".")
        raise ConfigError(path, f"{where + ': ' if where else ''}{problem}", hint=hint) from None
    if lock.lock_version not in READABLE_VERSIONS:
        raise ConfigError(
            path,
            f"lock-version {lock.lock_version} is not supported (this Conduit writes "
            f"{LOCK_VERSION})",
            hint="upgrade Conduit, or regenerate the file with 'conduit plugins lock'",
        )
    for i, pkg in enumerate(lock.package):
        wrong = _problem(pkg)
        if wrong is not None:
            field, what = wrong
            where = f"package[{i}] ({pkg.name})" if field != "name" else f"package[{i}]"
            raise ConfigError(path, f"{where}.{field}: {what}", hint=hint)
    return lock


_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+!_-]*")  # PEP 440 characters, no space
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")
_SOURCE = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]*://|/)[^\s'\"]*")
_HASH = re.compile(r"sha256:[0-9a-fA-F]{64}")


def _problem(pkg: LockedPackage) -> tuple[str, str] | None:
    """What is wrong with one entry: every value is checked before it goes near an
    installer, so that none can become an option or another line of a requirements
    file (a name, version or URL is written into one by 'sync')."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    if not _NAME.fullmatch(pkg.name):
        return "name", f"{pkg.name!r} is not a distribution name"
    if not _valid(Version, pkg.version, _VERSION):
        return "version", f"{pkg.version!r} is not a version"
    if pkg.url is not None and not _valid(
        lambda url: Requirement(f"{pkg.name} @ {url}"), pkg.url, _URL
    ):
        return "url", f"{pkg.url!r} is not a URL"
    if pkg.requested is not None:
        try:
            req = Requirement(pkg.requested)
            valid = (
                not any(c in pkg.requested for c in "\r\n")
                and req.url is None
                and canonicalize_name(req.name) == canonicalize_name(pkg.name)
            )
        except InvalidRequirement:
            valid = False
        if not valid:
            return "requested", f"{pkg.requested!r} is not a requirement of this package"
    for field, values in (
        ("index", [pkg.index] if pkg.index is not None else []),
        ("extra-indexes", pkg.extra_indexes),
        ("find-links", pkg.find_links),
    ):
        for value in values:
            if not _SOURCE.fullmatch(value):
                return field, f"{value!r} is not a URL or an absolute path"
    bad = [h for h in pkg.hashes if not _HASH.fullmatch(h)]
    if bad:
        return "hashes", f"{bad[0]!r} is not 'sha256:' + 64 hex digits"
    return None


def _valid(parse: Callable[[str], object], text: str, pattern: re.Pattern[str]) -> bool:
    """Whether ``text`` parses (packaging raises a ValueError subclass otherwise) and is
    made of ``pattern``'s characters only."""
    try:
        parse(text)
    except ValueError:
        return False
    return pattern.fullmatch(text) is not None


def _s(value: str) -> str:
    # A JSON string of ASCII-escaped text is a valid TOML basic string.
    return json.dumps(value, ensure_ascii=True)


def dumps(lock: LockFile) -> str:
    """The one textual form of ``lock`` (same input, same bytes)."""
    out = [HEADER, f"lock-version = {LOCK_VERSION}\n"]
    for pkg in sorted(lock.package, key=lambda p: p.name):
        out.append("\n[[package]]\n")
        out.append(f"name = {_s(pkg.name)}\nversion = {_s(pkg.version)}\n")
        if pkg.requested is not None:
            out.append(f"requested = {_s(pkg.requested)}\n")
        if pkg.plugins:
            out.append(f"plugins = [{', '.join(_s(p) for p in sorted(pkg.plugins))}]\n")
        if pkg.url is not None:
            out.append(f"url = {_s(pkg.url)}\n")
        if pkg.index is not None:
            out.append(f"index = {_s(pkg.index)}\n")
        for key, values in (("extra-indexes", pkg.extra_indexes), ("find-links", pkg.find_links)):
            if values:
                out.append(f"{key} = [{', '.join(_s(v) for v in values)}]\n")
        hashes = sorted(set(pkg.hashes))
        if len(hashes) <= 1:
            out.append(f"hashes = [{', '.join(_s(h) for h in hashes)}]\n")
        else:
            out.append("hashes = [\n" + "".join(f"    {_s(h)},\n" for h in hashes) + "]\n")
    return "".join(out)


def write(path: str, lock: LockFile) -> bool:
    """Write ``lock`` atomically (the caller holds the store lock); False if unchanged."""
    text = dumps(lock)
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return False
    except (OSError, UnicodeDecodeError):
        pass
    atomic_write(path, text.encode("utf-8"))
    return True
