"""``pylock.conduit.toml``: the plugin distributions of one environment, exact and hashed.

A PEP 751 lock file (``lock-version = "1.0"``), so that other tools (``uv pip install -r
pylock.conduit.toml``) can read and install it; Conduit's own data (what was requested,
the plugins each distribution provides, the sources it came from) is in ``[tool.conduit]``
tables, which PEP 751 reserves for tools. Written by Conduit (never by hand) in one
deterministic form: packages sorted by name, files sorted, no timestamps, so that a team
can commit it and a diff shows exactly what changed. The older ``conduit.lock`` (Conduit's
own format, versions 1 and 2) is still read, and migrated by the next write. See
docs/lockfile.md for the reference.

::

    # ... header comment ...
    lock-version = "1.0"
    created-by = "conduit"

    [[packages]]
    name = "conduit-knowledge"
    version = "1.4.0"
    index = "https://pypi.example.org/simple"
    wheels = [{ url = "https://.../conduit_knowledge-1.4.0-py3-none-any.whl", hashes = {...} }]

    [packages.tool.conduit]
    requested = "conduit-knowledge>=1.2"
    plugins = ["knowledge"]

    [tool.conduit]
    lock-version = 3
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from collections.abc import Callable
from typing import Any

import msgspec

from conduit.errors import ConfigError
from conduit.fs import atomic_write

__all__ = [
    "LEGACY_FILENAME",
    "LOCK_FILENAME",
    "LOCK_VERSION",
    "READABLE_VERSIONS",
    "LockFile",
    "LockedFile",
    "LockedPackage",
    "content_hash",
    "dumps",
    "find",
    "read",
]

#: PEP 751 names a lock file ``pylock.toml`` or ``pylock.<name>.toml``
LOCK_FILENAME = "pylock.conduit.toml"
#: the file of Conduit's own format (lock-version 1 and 2), read and migrated
LEGACY_FILENAME = "conduit.lock"
#: the version of Conduit's own data (``[tool.conduit] lock-version``): 1 and 2 were the
#: ``conduit.lock`` formats, 3 is the PEP 751 file
LOCK_VERSION = 3
#: the formats this Conduit reads (a version 1 or 2 file is written back as 3)
READABLE_VERSIONS = (1, 2, 3)
PEP751_VERSION = "1.0"

HEADER = (
    "# pylock.conduit.toml: the plugin distributions of a Conduit environment, with exact\n"
    "# versions, file URLs and sha256 hashes, in the PEP 751 lock file format (other tools\n"
    "# can install it: 'uv pip install -r pylock.conduit.toml'). Conduit's own data is in\n"
    "# the [tool.conduit] tables. Written by 'conduit plugins install/uninstall/update/lock';\n"
    "# applied by 'conduit plugins sync'. Commit it; do not edit it by hand.\n"
)

HINT = "regenerate it with 'conduit plugins lock' (or restore it from version control)"


class LockedFile(msgspec.Struct, frozen=True, kw_only=True):
    """One file of a locked version: a wheel or the sdist, by URL (or path) and hash."""

    url: str  # a URL, or a path relative to the lock file's directory (PEP 751 ``path``)
    hash: str  # "sha256:..."
    sdist: bool = False

    @property
    def is_path(self) -> bool:
        return "://" not in self.url


class LockedPackage(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, rename="kebab"
):
    """One distribution: a plugin distribution (``plugins`` not empty) or a dependency."""

    name: str
    version: str
    #: every sha256 the package may be installed with (the files' hashes, or an archive's)
    hashes: list[str] = []
    requested: str | None = None
    plugins: list[str] = []
    #: set when it was installed from a URL or a local file instead of an index
    url: str | None = None
    #: the sources in effect when it was installed (none: the installer's default index),
    #: used again by every later operation that needs it from an index
    index: str | None = None
    extra_indexes: list[str] = []
    find_links: list[str] = []
    #: the files of this version on its index or find-links (PEP 751 ``wheels``/``sdist``)
    files: list[LockedFile] = []
    #: a directory install: its path relative to the lock file's directory (POSIX
    #: separators), and the hash of its source files (:func:`content_hash`)
    directory: str | None = None
    content_hash: str | None = None


class LockFile(msgspec.Struct, frozen=True, kw_only=True):
    lock_version: int = LOCK_VERSION
    package: list[LockedPackage] = []

    def by_name(self) -> dict[str, LockedPackage]:
        return {p.name: p for p in self.package}


# -- the older conduit.lock (lock-version 1 and 2) -------------------------------------------


class _LegacyPackage(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, rename="kebab"
):
    name: str
    version: str
    hashes: list[str] = []
    requested: str | None = None
    plugins: list[str] = []
    url: str | None = None
    index: str | None = None
    extra_indexes: list[str] = []
    find_links: list[str] = []


class _Legacy(msgspec.Struct, forbid_unknown_fields=True, frozen=True, rename="kebab"):
    lock_version: int = 2
    package: list[_LegacyPackage] = []


# -- the PEP 751 file, as far as Conduit reads it ---------------------------------------------


class _Hashes(msgspec.Struct, frozen=True):
    sha256: str | None = None


class _File(msgspec.Struct, frozen=True, kw_only=True):
    url: str | None = None
    path: str | None = None
    hashes: _Hashes


class _Directory(msgspec.Struct, frozen=True, kw_only=True):
    path: str


class _Vcs(msgspec.Struct, frozen=True, kw_only=True, rename="kebab"):
    type: str
    url: str | None = None
    commit_id: str


class _PackageTool(msgspec.Struct, forbid_unknown_fields=True, frozen=True, rename="kebab"):
    requested: str | None = None
    plugins: list[str] = []
    extra_indexes: list[str] = []
    find_links: list[str] = []
    content_hash: str | None = None


class _Package(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    version: str
    index: str | None = None
    wheels: list[_File] = []
    sdist: _File | None = None
    archive: _File | None = None
    directory: _Directory | None = None
    vcs: _Vcs | None = None
    tool: dict[str, Any] = {}


class _FileTool(msgspec.Struct, forbid_unknown_fields=True, frozen=True, rename="kebab"):
    lock_version: int = LOCK_VERSION


class _Pylock(msgspec.Struct, frozen=True, rename="kebab"):
    lock_version: str
    created_by: str
    packages: list[_Package] = []
    tool: dict[str, Any] = {}


def find(config_dir: str, explicit: str | None, cwd: str) -> str:
    """The lock file to use: ``--lock``, else a ``pylock.conduit.toml`` (or an older
    ``conduit.lock``) in the current project (the current directory or a parent up to the
    repository root), else the config dir's (the new name when neither file exists)."""
    if explicit:
        return os.path.abspath(explicit)
    from conduit.paths import workspace_dirs

    for d in [*workspace_dirs(cwd), config_dir]:
        for name in (LOCK_FILENAME, LEGACY_FILENAME):
            candidate = os.path.join(d, name)
            if os.path.isfile(candidate):
                return candidate
    return os.path.join(config_dir, LOCK_FILENAME)


def migrated_path(path: str) -> str:
    """Where the lock read from ``path`` is written: an older ``conduit.lock`` becomes a
    ``pylock.conduit.toml`` next to it; any other path stays."""
    if os.path.basename(path) == LEGACY_FILENAME:
        return os.path.join(os.path.dirname(path), LOCK_FILENAME)
    return path


def read(path: str) -> LockFile | None:
    """The lock file at ``path``, ``None`` if there is none; a bad one is a ConfigError."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(path, f"cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(path, f"invalid TOML: {exc}", hint=HINT) from None
    version = data.get("lock-version")
    legacy = isinstance(version, int) and not isinstance(version, bool)
    if legacy or (version is None and "package" in data and "packages" not in data):
        lock = _read_legacy(path, data)
    else:
        lock = _read_pylock(path, data)
    for i, pkg in enumerate(lock.package):
        wrong = _problem(pkg)
        if wrong is not None:
            field, what = wrong
            if lock.lock_version >= 3 and field in _TOOL_KEYS:
                field = f"tool.conduit.{field}"
            where = f"packages[{i}] ({pkg.name})" if field != "name" else f"packages[{i}]"
            raise ConfigError(path, f"{where}.{field}: {what}", hint=HINT)
    return lock


#: the keys of a package's [packages.tool.conduit] table that _problem names
_TOOL_KEYS = ("requested", "plugins", "extra-indexes", "find-links")


def _convert(path: str, data: object, kind: type[Any], prefix: str = "") -> Any:
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        problem, _, where = str(exc).partition(" - at `$")
        where = prefix + where.rstrip("`").lstrip(".")
        raise ConfigError(path, f"{where + ': ' if where else ''}{problem}", hint=HINT) from None


def _read_legacy(path: str, data: dict[str, Any]) -> LockFile:
    old = _convert(path, data, _Legacy)
    if old.lock_version not in (1, 2):
        raise ConfigError(
            path,
            f"lock-version {old.lock_version} is not supported (this Conduit writes PEP 751 "
            f'lock-version "{PEP751_VERSION}")',
            hint="upgrade Conduit, or regenerate the file with 'conduit plugins lock'",
        )
    packages = [LockedPackage(**msgspec.structs.asdict(p)) for p in old.package]
    return LockFile(lock_version=old.lock_version, package=packages)


def _read_pylock(path: str, data: dict[str, Any]) -> LockFile:
    for key in ("lock-version", "created-by"):
        if key not in data:
            raise ConfigError(path, f"{key}: missing (a PEP 751 lock file needs it)", hint=HINT)
    version = data["lock-version"]
    if not isinstance(version, str) or version.split(".")[0] != "1":
        raise ConfigError(
            path,
            f"lock-version: {version!r} is not supported (this Conduit reads PEP 751 "
            f'lock files of major version 1, "{PEP751_VERSION}")',
            hint="upgrade Conduit, or regenerate the file with 'conduit plugins lock'",
        )
    doc = _convert(path, data, _Pylock)
    own = _convert(path, doc.tool.get("conduit", {}), _FileTool, "tool.conduit.")
    if own.lock_version not in READABLE_VERSIONS:
        raise ConfigError(
            path,
            f"tool.conduit.lock-version: {own.lock_version} is not supported (this Conduit "
            f"writes {LOCK_VERSION})",
            hint="upgrade Conduit, or regenerate the file with 'conduit plugins lock'",
        )
    return LockFile(
        lock_version=own.lock_version,
        package=[_from_pylock(path, i, p) for i, p in enumerate(doc.packages)],
    )


def _sha(path: str, where: str, f: _File) -> str:
    if f.hashes.sha256 is None:
        raise ConfigError(path, f"{where}.hashes: no sha256 (Conduit needs one)", hint=HINT)
    return f"sha256:{f.hashes.sha256}"


def _location(path: str, where: str, f: _File) -> str:
    if (f.url is None) == (f.path is None):
        raise ConfigError(path, f"{where}: needs one of 'url' or 'path'", hint=HINT)
    return f.url if f.url is not None else str(f.path)


def _from_pylock(path: str, i: int, p: _Package) -> LockedPackage:
    where = f"packages[{i}] ({p.name})"
    tool = _convert(path, p.tool.get("conduit", {}), _PackageTool, f"{where}.tool.conduit.")
    files = [
        LockedFile(url=_location(path, f"{where}.wheels[{j}]", w), hash=_sha(path, where, w))
        for j, w in enumerate(p.wheels)
    ]
    if p.sdist is not None:
        sd = p.sdist
        files.append(
            LockedFile(
                url=_location(path, f"{where}.sdist", sd), hash=_sha(path, where, sd), sdist=True
            )
        )
    url = directory = None
    hashes = [f.hash for f in files]
    if p.archive is not None:
        url = _location(path, f"{where}.archive", p.archive)
        if "://" not in url:
            url = "file://" + url if url.startswith("/") else url
        sha = p.archive.hashes.sha256
        hashes = [f"sha256:{sha}"] if sha else []
    elif p.vcs is not None:
        if p.vcs.url is None:
            raise ConfigError(path, f"{where}.vcs.url: missing (Conduit needs a URL)", hint=HINT)
        url = f"{p.vcs.type}+{p.vcs.url}@{p.vcs.commit_id}"
    elif p.directory is not None:
        directory = p.directory.path
        if tool.content_hash is None:
            raise ConfigError(
                path, f"{where}.tool.conduit.content-hash: missing for a directory", hint=HINT
            )
    return LockedPackage(
        name=p.name,
        version=p.version,
        hashes=sorted(set(hashes)),
        requested=tool.requested,
        plugins=tool.plugins,
        url=url,
        index=p.index,
        extra_indexes=tool.extra_indexes,
        find_links=tool.find_links,
        files=files,
        directory=directory,
        content_hash=tool.content_hash,
    )


_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+!_-]*")  # PEP 440 characters, no space
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")
_SOURCE = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]*://|/)[^\s'\"]*")
_HASH = re.compile(r"sha256:[0-9a-fA-F]{64}")
_PATH = re.compile(r"[^\s'\"-][^\s'\"]*")  # no option, no blank, no quote


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
    bad = [h for h in [*pkg.hashes, *(f.hash for f in pkg.files)] if not _HASH.fullmatch(h)]
    if bad:
        return "hashes", f"{bad[0]!r} is not 'sha256:' + 64 hex digits"
    for f in pkg.files:
        if not (_URL.fullmatch(f.url) or _PATH.fullmatch(f.url)):
            return "wheels", f"{f.url!r} is not a URL or a path"
    if pkg.directory is not None and (
        not _PATH.fullmatch(pkg.directory) or pkg.directory.startswith("/")
    ):
        return "directory.path", f"{pkg.directory!r} is not a path relative to the lock file"
    if pkg.content_hash is not None and not _HASH.fullmatch(pkg.content_hash):
        return "tool.conduit.content-hash", f"{pkg.content_hash!r} is not 'sha256:' + 64 hex digits"
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


def _strings(values: list[str]) -> str:
    return f"[{', '.join(_s(v) for v in values)}]"


def _file(location: str, sha: str | None) -> str:
    key = "url" if "://" in location else "path"
    hashes = f"{{ sha256 = {_s(sha.partition(':')[2])} }}" if sha else "{}"
    return f"{{ {key} = {_s(location)}, hashes = {hashes} }}"


def _vcs(url: str) -> str | None:
    """PEP 751 ``vcs`` table of a ``git+URL@COMMIT`` (PEP 610, as :mod:`_env` spells it)."""
    kind, plus, rest = url.partition("+")
    repo, at, commit = rest.rpartition("@")
    if not plus or not at or kind not in ("git", "hg", "svn", "bzr") or not commit:
        return None
    return f"{{ type = {_s(kind)}, url = {_s(repo)}, commit-id = {_s(commit)} }}"


def dumps(lock: LockFile) -> str:
    """The one textual form of ``lock`` (same input, same bytes): PEP 751, keys in the
    specification's order, packages by name, files by URL."""
    out = [HEADER, f'lock-version = {_s(PEP751_VERSION)}\ncreated-by = "conduit"\n']
    for pkg in sorted(lock.package, key=lambda p: p.name):
        out.append("\n[[packages]]\n")
        out.append(f"name = {_s(pkg.name)}\nversion = {_s(pkg.version)}\n")
        if pkg.index is not None:
            out.append(f"index = {_s(pkg.index)}\n")
        if pkg.directory is not None:
            out.append(f"directory = {{ path = {_s(pkg.directory)} }}\n")
        elif pkg.url is not None:
            vcs = _vcs(pkg.url)
            if vcs is not None:
                out.append(f"vcs = {vcs}\n")
            else:
                out.append(f"archive = {_file(pkg.url, min(pkg.hashes, default=None))}\n")
        else:
            sdists = sorted((f.url, f.hash) for f in pkg.files if f.sdist)
            wheels = sorted({(f.url, f.hash) for f in pkg.files if not f.sdist})
            if sdists:
                out.append(f"sdist = {_file(*sdists[0])}\n")
            if len(wheels) == 1:
                out.append(f"wheels = [{_file(*wheels[0])}]\n")
            elif wheels:
                out.append("wheels = [\n" + "".join(f"    {_file(*w)},\n" for w in wheels) + "]\n")
        tool = []
        if pkg.requested is not None:
            tool.append(f"requested = {_s(pkg.requested)}\n")
        if pkg.plugins:
            tool.append(f"plugins = {_strings(sorted(pkg.plugins))}\n")
        if pkg.extra_indexes:
            tool.append(f"extra-indexes = {_strings(pkg.extra_indexes)}\n")
        if pkg.find_links:
            tool.append(f"find-links = {_strings(pkg.find_links)}\n")
        if pkg.content_hash is not None:
            tool.append(f"content-hash = {_s(pkg.content_hash)}\n")
        if tool:
            out.append("\n[packages.tool.conduit]\n" + "".join(tool))
    out.append(f"\n[tool.conduit]\nlock-version = {LOCK_VERSION}\n")
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


#: what :func:`content_hash` leaves out: version control, caches and build outputs
SKIPPED_DIRS = frozenset({".git", ".hg", ".svn", ".bzr", "__pycache__"})
SKIPPED_TOP_DIRS = frozenset({"build", "dist", ".venv", ".tox", ".nox"})


def content_hash(directory: str) -> str:
    """The hash of a source directory's files, for a directory install in the lock.

    ``sha256`` over every regular file under ``directory`` (symbolic links followed for
    files, not for directories), in the order of their relative POSIX paths sorted as
    UTF-8 bytes, each as: the relative path, a NUL byte, the size in decimal, a NUL byte,
    the content. Left out: the version control directories (``.git``, ``.hg``, ``.svn``,
    ``.bzr``) and ``__pycache__`` directories anywhere, ``*.egg-info`` directories
    anywhere, ``*.pyc`` files, and the build outputs and tool environments at the top
    (``build``, ``dist``, ``.venv``, ``.tox``, ``.nox``). The same sources give the same
    hash wherever the directory is.
    """
    entries: list[tuple[bytes, str]] = []
    for root, dirs, names in os.walk(directory):
        rel_root = os.path.relpath(root, directory)
        top = rel_root == "."
        dirs[:] = [
            d
            for d in dirs
            if d not in SKIPPED_DIRS
            and not d.endswith(".egg-info")
            and not (top and d in SKIPPED_TOP_DIRS)
        ]
        for name in names:
            if name.endswith(".pyc"):
                continue
            full = os.path.join(root, name)
            if not os.path.isfile(full):
                continue
            rel = name if top else f"{rel_root.replace(os.sep, '/')}/{name}"
            entries.append((rel.encode("utf-8", "surrogateescape"), full))
    h = hashlib.sha256()
    for key, full in sorted(entries):
        with open(full, "rb") as f:
            content = f.read()
        h.update(key + b"\0" + str(len(content)).encode() + b"\0" + content)
    return f"sha256:{h.hexdigest()}"
