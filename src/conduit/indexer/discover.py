"""Discovery: where plugins come from, and their manifests as found.

Runs only when the index is rebuilt (:mod:`conduit.indexer.build`). It never imports
plugin code. Discovery order, which is also precedence for duplicate names:

1. built-in plugins (``conduit.builtins.BUILTINS``);
2. installed distributions, entry point group :data:`ENTRY_POINT_GROUP`;
3. single-file plugins ``*.py`` in the plugin directory;
4. WebAssembly plugins ``NAME.wasm`` + ``NAME.toml`` in the plugin directory;
5. ``conduit-NAME`` executables (the plugin directory, then ``PATH``), asked for their
   manifest with ``--conduit-manifest``.

Names, versions and entry points that do not come from a manifest (a distribution's
metadata, an executable's file name) are refused when they hold a control character,
as the manifest validator refuses them in identifiers (:mod:`conduit.text`).

Only ``os`` and :mod:`conduit.errors` are imported with this module (no dataclasses: its
import, with ``inspect``, costs more than the rest of a rebuild that reads one new plugin):
:mod:`conduit.authoring` and :mod:`conduit.store` import :data:`ENTRY_POINT_GROUP` from
here, and the heavier modules (importlib.metadata, the manifest parser) are imported by
the functions that need them.
"""

from __future__ import annotations

import os

from conduit.errors import ManifestError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from conduit.manifest import Manifest

    #: one installed distribution as discovery read it: its name and version (from its
    #: metadata, only for a plugin distribution), and per plugin entry point (name, value,
    #: the manifest found for it or None), or the warning that its entry points could not
    #: be read
    DistEntry = tuple[str, str | None, list[tuple[str, str, str | None]] | str]
    #: ``.dist-info``/``.egg-info`` path -> (its stat, what was read of it)
    DistCache = dict[str, tuple[tuple[int, int, int] | None, DistEntry]]
    #: (directory, what was kept of it) -> (its stat, the names kept, sorted)
    Listings = dict[tuple[str, str], tuple[tuple[int, int, int], list[str]]]

__all__ = [
    "ENTRY_POINT_GROUP",
    "EXECUTABLE_PREFIX",
    "MANIFEST_FLAG",
    "PRECEDENCE",
    "PROBE_TIMEOUT",
    "Found",
    "discover",
    "executable_dirs",
    "executable_plugin_name",
]

#: the entry point group installed distributions declare their plugins in (the one
#: definition: the authoring tools and the store import it from here)
ENTRY_POINT_GROUP = "conduit.plugins"
#: discovery order, which is also precedence for duplicate plugin names
PRECEDENCE = {"builtin": 0, "entry-point": 1, "file": 2, "wasm": 3, "executable": 4}
EXECUTABLE_PREFIX = "conduit-"
MANIFEST_FLAG = "--conduit-manifest"
PROBE_TIMEOUT = 5.0
#: ``conduit.manifest.MANIFEST_FILENAME``, not imported from there: that module imports
#: msgspec and tomllib, which a rebuild reading no new manifest does not need
MANIFEST_FILENAME = "conduit-plugin.toml"


class Found:
    """One plugin as discovery found it: its manifest, or why it has none."""

    __slots__ = (
        "data",
        "dist",
        "dist_version",
        "entry",
        "error",
        "manifest",
        "name",
        "origin",
        "protocol",
        "source",
    )

    def __init__(
        self,
        name: str,
        source: str,
        origin: str,
        dist: str | None = None,
        dist_version: str | None = None,
        entry: str | None = None,
        manifest: Manifest | None = None,
        error: ManifestError | None = None,
        protocol: str = "python",  # "python", or for executables "jsonrpc" or "exec"
        data: dict[str, Any] | None = None,  # the validated manifest as plain data
    ) -> None:
        self.name = name
        self.source = source
        self.origin = origin
        self.dist = dist
        self.dist_version = dist_version
        self.entry = entry
        self.manifest = manifest
        self.error = error
        self.protocol = protocol
        self.data = data

    def __repr__(self) -> str:
        return f"Found({self.name!r}, {self.source!r}, {self.origin!r})"


def discover(
    plugin_dir: str,
    warnings: list[str],
    cache: DistCache | None = None,
    listings: Listings | None = None,
) -> list[Found]:
    """Every plugin found, in discovery order; problems that are no plugin's are appended
    to ``warnings``. Manifests not read yet are read by the builder.

    ``cache`` holds what earlier rebuilds read of each installed distribution; entries
    whose ``.dist-info`` directory is unchanged are reused, and it is updated in place.
    ``listings`` holds the relevant names of the ``sys.path`` and ``PATH`` directories
    (:func:`_names`), also updated in place.
    """
    listings = {} if listings is None else listings
    found = _discover_builtins()
    found += _discover_entry_points(warnings, {} if cache is None else cache, listings)
    found += _discover_files(plugin_dir, warnings)
    found += _discover_wasm(plugin_dir)
    found += _discover_executables(plugin_dir, warnings, listings)
    return found


#: a directory modified this recently (ns) may change again within its mtime's
#: granularity: its listing is not kept ("racy git")
_RACY = 2_000_000_000


def _names(directory: str, kind: str, listings: Listings, used: Listings) -> list[str]:
    """``sorted(os.listdir(directory))``, only the names discovery looks at (``kind``:
    "dist" the ``.dist-info`` then ``.egg-info`` entries, "exe" the ``conduit-NAME``
    executables). Reused from ``listings`` while the directory's stat is the same: a
    large ``PATH`` directory costs more to list and sort than the rest of a rebuild that
    reads one new plugin. Raises OSError as listdir does."""
    st = os.stat(directory)
    stat = (st.st_ino, st.st_mtime_ns, st.st_size)
    key = (directory, kind)
    cached = listings.get(key)
    if cached is not None and cached[0] == stat:
        used[key] = cached
        return cached[1]
    names = os.listdir(directory)
    if kind == "dist":  # filtered before sorting: the same order, fewer names to sort
        kept = sorted(n for n in names if n.endswith(".dist-info"))
        kept += sorted(n for n in names if n.endswith(".egg-info"))
    else:
        kept = sorted(n for n in names if executable_plugin_name(n) is not None)
    import time

    if time.time_ns() - st.st_mtime_ns > _RACY:
        used[key] = (stat, kept)
    return kept


def _manifest_for_module(module: str, locate: object) -> str | None:
    """Find ``conduit-plugin.toml`` for an entry point's module without importing it.

    Looks in the module's own package directory, then each parent package up to the
    top-level one; the nearest file wins.
    """
    parts = module.split(".")
    candidates = [parts[:i] for i in range(len(parts), 0, -1)]
    for pkg in candidates:
        rel = "/".join([*pkg, MANIFEST_FILENAME])
        path = str(locate(rel))  # type: ignore[operator]
        if os.path.isfile(path):
            return path
    # Editable installs: the package lives outside site-packages. find_spec() on a
    # top-level name locates it without executing it.
    import importlib.util

    try:
        spec = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        return None
    if spec is not None and spec.submodule_search_locations:
        base = next(iter(spec.submodule_search_locations))
        for pkg in candidates:
            path = os.path.join(base, *pkg[1:], MANIFEST_FILENAME)
            if os.path.isfile(path):
                return path
    return None


def _discover_builtins() -> list[Found]:
    import conduit.builtins as pkg
    from conduit import __version__
    from conduit.builtins import BUILTINS

    base = os.path.dirname(pkg.__file__ or "")
    found = []
    for name, entry in BUILTINS.items():
        origin = os.path.join(base, name, MANIFEST_FILENAME)
        found.append(
            Found(name, "builtin", origin, dist="conduit", entry=entry, dist_version=__version__)
        )
    return found


def _dist_stat(path: str) -> tuple[int, int, int] | None:
    """What changes when an installer writes a ``.dist-info`` directory: installing,
    upgrading, reinstalling or removing one creates, renames or replaces files in it."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _project_key(entry: str) -> str:
    """The normalised project name in a ``.dist-info``/``.egg-info`` name
    (``Foo_Bar-1.0.dist-info`` is ``foo-bar``): installed twice, the first one wins."""
    stem = entry.rpartition(".")[0]
    return stem.partition("-")[0].lower().replace("_", "-").replace(".", "-")


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except OSError:
        return None


def _plugin_entry_points(text: str) -> list[tuple[str, str]]:
    """``(name, value)`` of the :data:`ENTRY_POINT_GROUP` entries of an
    ``entry_points.txt``, read as importlib.metadata reads it (a line that is not
    ``name = value`` makes the whole file unreadable: ValueError)."""
    out = []
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line.strip("[]")
            continue
        if section is None:
            continue
        name, eq, value = line.partition("=")
        if not eq:
            raise ValueError(f"line {line!r} is not 'name = value'")
        if section == ENTRY_POINT_GROUP:
            out.append((name.strip(), value.strip()))
    return out


def _name_and_version(info: str, entry: str) -> tuple[str, str | None]:
    """``Name`` and ``Version`` from a distribution's metadata headers (``METADATA``, or
    ``PKG-INFO`` of an egg), the first of each; the directory name when it has none."""
    headers = "METADATA" if entry.endswith(".dist-info") else "PKG-INFO"
    text = _read_text(os.path.join(info, headers))
    fields: dict[str, str] = {}
    for line in (text or "").splitlines():
        if not line.strip():
            break  # the headers end at the first empty line
        key, colon, value = line.partition(":")
        key = key.lower()
        if colon and key in ("name", "version") and key not in fields:
            fields[key] = value.strip()
    stem = entry.rpartition(".")[0]
    name, _, version = stem.partition("-")
    return fields.get("name") or name, fields.get("version") or version.partition("-")[0] or None


def _read_dist(site: str, entry: str) -> DistEntry:
    """What discovery needs of one installed distribution, read from its files: nothing
    but its ``entry_points.txt`` unless that declares plugins."""
    info = os.path.join(site, entry)
    text = _read_text(os.path.join(info, "entry_points.txt")) if os.path.isdir(info) else None
    if text is None or ENTRY_POINT_GROUP not in text:
        return ("", None, [])  # not a plugin distribution: its name is never needed
    name, version = _name_and_version(info, entry)
    try:
        eps = _plugin_entry_points(text)
    except ValueError as exc:
        return (name, version, f"distribution {name}: cannot read entry points: {exc}")
    plugins = []
    for ep_name, value in eps:
        module = value.partition(":")[0].strip()
        manifest = _manifest_for_module(module, lambda rel: os.path.join(site, rel))
        plugins.append((ep_name, value, manifest))
    return (name, version, plugins)


def _relocate(
    site: str, prefix: str, cached: tuple[tuple[int, int, int] | None, DistEntry]
) -> tuple[tuple[int, int, int] | None, DistEntry]:
    """``cached`` (a distribution whose ``.dist-info`` is unchanged) with the manifests
    looked for again that its ``.dist-info`` does not vouch for: one not found (it may
    have been added to the package since) or found outside ``site`` (an editable
    install's package, found on ``sys.path``, which may have changed)."""
    stat, (name, version, plugins) = cached
    if isinstance(plugins, str) or all(m is not None and m.startswith(prefix) for *_, m in plugins):
        return cached
    located = [
        (ep, value, m)
        if m is not None and m.startswith(prefix)
        else (
            ep,
            value,
            _manifest_for_module(value.partition(":")[0].strip(), lambda r: os.path.join(site, r)),
        )
        for ep, value, m in plugins
    ]
    return (stat, (name, version, located))


def _discover_entry_points(
    warnings: list[str], cache: DistCache, listings: Listings
) -> list[Found]:
    """Plugins of the installed distributions, as importlib.metadata would list them
    without importing it: each ``sys.path`` directory's ``*.dist-info`` then ``*.egg-info``
    entries in name order, the first of a project's name winning. Only a distribution
    whose entry is new or changed since the last rebuild (``cache``) is read."""
    from conduit.index import site_dirs

    found = []
    seen: set[str] = set()
    fresh: DistCache = {}
    used: Listings = {}
    for site in site_dirs():
        try:
            entries = _names(site, "dist", listings, used)
        except OSError:
            continue  # missing, not a directory (a zip file), unreadable: nothing found
        prefix = site if site.endswith(os.sep) else site + os.sep  # os.path.join, faster
        for entry in entries:
            key = _project_key(entry)
            if key in seen:  # shadowed by an earlier sys.path entry, as importlib does
                continue
            seen.add(key)
            path = prefix + entry
            stat = _dist_stat(path)
            cached = cache.get(path)
            if cached is None or cached[0] != stat:
                cached = (stat, _read_dist(site, entry))
            else:
                cached = _relocate(site, prefix, cached)
            fresh[path] = cached
            dist_name, dist_version, plugins = cached[1]
            if not plugins:
                continue  # not a plugin distribution
            if isinstance(plugins, str):
                warnings.append(plugins)
                continue
            for ep_name, value, manifest in plugins:
                item = Found(
                    ep_name,
                    "entry-point",
                    manifest or f"{dist_name} (entry point {ep_name} = {value})",
                    dist_name,
                    dist_version,
                    value,
                )
                # Not from the manifest, but shown beside it (plugins list/info, the prompt).
                item.error = _unsafe_field(
                    item.origin,
                    ("distribution name", dist_name),
                    ("distribution version", dist_version),
                    ("entry point", f"{ep_name} = {value}"),
                )
                if item.error is None and manifest is None:
                    module = value.partition(":")[0].strip()
                    item.error = ManifestError(
                        item.origin,
                        f"no {MANIFEST_FILENAME} found next to module '{module}'",
                        hint=f"ship {MANIFEST_FILENAME} inside the package (package data)",
                    )
                found.append(item)
    cache.clear()
    cache.update(fresh)
    _keep(listings, used, "dist")
    return found


def _keep(listings: Listings, used: Listings, kind: str) -> None:
    """Keep in ``listings`` only this rebuild's listings of ``kind`` (and the others)."""
    for key in [k for k in listings if k[1] == kind]:
        del listings[key]
    listings.update(used)


def _discover_files(plugin_dir: str, warnings: list[str]) -> list[Found]:
    found: list[Found] = []
    try:
        names = sorted(os.listdir(plugin_dir))
    except FileNotFoundError:
        return []
    except OSError as exc:
        warnings.append(
            f"cannot read plugin directory {plugin_dir}: {exc.strerror}; "
            "its single-file plugins are skipped (check its permissions)"
        )
        return []
    for fname in names:
        if not fname.endswith(".py") or fname.startswith((".", "_")):
            continue
        path = os.path.join(plugin_dir, fname)
        stem = fname[:-3]
        try:
            with open(path, encoding="utf-8") as f:
                source = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            item = Found(stem, "file", path)
            item.error = ManifestError(path, f"cannot read: {exc}")
            found.append(item)
            continue
        item = Found(stem, "file", path)
        from conduit.manifest import parse_inline_manifest

        try:
            manifest = parse_inline_manifest(source, path)
        except ManifestError as exc:
            item.error = exc
            found.append(item)
            continue
        if manifest is None:
            continue  # a helper module, not a plugin
        assert manifest.name is not None
        item.name = manifest.name
        item.manifest = manifest
        item.entry = manifest.entry
        found.append(item)
    return found


def _discover_wasm(plugin_dir: str) -> list[Found]:
    """``NAME.wasm`` with its manifest ``NAME.toml`` beside it (docs/manifest.md)."""
    found: list[Found] = []
    try:
        names = sorted(os.listdir(plugin_dir))
    except OSError:
        return []  # reported by _discover_files
    for fname in names:
        if not fname.endswith(".wasm") or fname.startswith((".", "_")):
            continue
        stem = fname[: -len(".wasm")]
        wasm = os.path.join(plugin_dir, fname)
        toml = os.path.join(plugin_dir, stem + ".toml")
        item = Found(stem, "wasm", toml, entry=wasm)
        found.append(item)
        from conduit.manifest import loads_toml, parse_manifest

        try:
            with open(toml, "rb") as f:
                data = loads_toml(f.read().decode("utf-8"), toml)
        except FileNotFoundError:
            item.origin = wasm
            item.error = ManifestError(
                wasm,
                f"no manifest {stem}.toml beside it",
                hint=f"write {toml} (name, api, [[commands]]; see docs/wasm.md)",
            )
            continue
        except (OSError, UnicodeDecodeError) as exc:
            item.error = ManifestError(toml, f"cannot read: {exc}")
            continue
        except ManifestError as exc:
            item.error = exc
            continue
        data.setdefault("isolation", "wasm")
        try:
            item.manifest = parse_manifest(data, toml, expected_name=stem)
        except ManifestError as exc:
            item.error = exc
            continue
        if item.manifest.isolation != "wasm":
            item.error = ManifestError(
                toml,
                "a WebAssembly plugin runs in the WebAssembly host",
                field="isolation",
                hint='set isolation = "wasm" or leave it out',
            )
    return found


def _unsafe_field(origin: str, *fields: tuple[str, str | None]) -> ManifestError | None:
    """The error for the first of ``fields`` (label, value) that holds a control, bidi or
    invisible format character (:mod:`conduit.text`), as the manifest validator refuses
    them in identifiers; None when all are plain text."""
    for _, value in fields:  # the usual case, without a call per field
        if value is not None and not (value.isascii() and value.isprintable()):
            break
    else:
        return None
    from conduit.text import inert, unsafe_char

    for field, value in fields:
        bad = unsafe_char(value) if isinstance(value, str) else None
        if bad is not None:
            return ManifestError(
                origin,
                f"'{inert(value or '')}' contains the control character {bad}",
                field=field,
                hint="remove it: names, versions and entry points are plain text, without "
                "control, bidi or invisible format characters",
            )
    return None


def executable_dirs(plugin_dir: str) -> list[str]:
    """Where ``conduit-NAME`` executables are looked for: the plugin directory, then PATH
    (not for a bundle: its set of plugins is what it was built with, plus the user's
    plugin directory)."""
    from conduit.paths import BUNDLE

    dirs = [plugin_dir]
    if BUNDLE is not None:
        return dirs
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        if entry and os.path.isabs(entry) and entry not in dirs:
            dirs.append(entry)
    return dirs


def _probe(path: str, name: str) -> Found:
    """Ask an executable for its manifest (``--conduit-manifest``), once per rebuild.

    A JSON manifest with ``"protocol": "jsonrpc"`` makes it a protocol plugin; anything
    else (the flag unknown, no JSON) makes it a pass-through command, like a gh or
    kubectl plugin.
    """
    import json
    import subprocess

    from conduit.manifest import CommandSpec, Manifest, parse_manifest
    from conduit.sdk import API_VERSION

    item = Found(name, "executable", path, entry=None)
    item.error = _unsafe_field(path, ("file name", os.path.basename(path)))
    if item.error is not None:
        return item  # not run: its name would be a command word, shown in --help
    try:
        proc = subprocess.run(
            [path, MANIFEST_FLAG],
            capture_output=True,
            timeout=PROBE_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        data = json.loads(proc.stdout) if proc.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError):
        data = None
    if not isinstance(data, dict):
        item.protocol = "exec"
        item.manifest = Manifest(
            name=name,
            description=f"external command {path}",
            api=f">={API_VERSION}",
            commands=[
                CommandSpec(name=name, help=f"Run {os.path.basename(path)}.", usage="[ARGS]...")
            ],
            isolation="process",
        )
        return item
    protocol = data.pop("protocol", "jsonrpc")
    if protocol != "jsonrpc":
        item.error = ManifestError(
            f"{path} {MANIFEST_FLAG}",
            f"unknown protocol {protocol!r}",
            field="protocol",
            hint='use "jsonrpc" (see docs/protocol.md)',
        )
        return item
    data.setdefault("isolation", "process")
    try:
        manifest = parse_manifest(data, f"{path} {MANIFEST_FLAG}", expected_name=name)
    except ManifestError as exc:
        item.error = exc
        return item
    if manifest.isolation != "process":
        item.error = ManifestError(
            f"{path} {MANIFEST_FLAG}",
            "an executable plugin runs in its own process",
            field="isolation",
            hint='set "isolation": "process" or leave it out',
        )
        return item
    item.protocol = "jsonrpc"
    item.manifest = manifest
    return item


def executable_plugin_name(fname: str) -> str | None:
    """The plugin an executable called ``fname`` provides (``conduit-x`` and
    ``conduit-x.js`` are the plugin "x"), or None if the name does not make one."""
    if not fname.startswith(EXECUTABLE_PREFIX) or fname.endswith((".py", "~")):
        return None
    name = fname[len(EXECUTABLE_PREFIX) :]
    stem, dot, ext = name.rpartition(".")
    return stem if dot and ext in ("js", "sh", "rb", "pl") else name


def _discover_executables(
    plugin_dir: str, warnings: list[str], listings: Listings | None = None
) -> list[Found]:
    found: list[Found] = []
    seen: set[str] = set()
    listings = {} if listings is None else listings
    used: Listings = {}
    for directory in executable_dirs(plugin_dir):
        try:
            names = _names(directory, "exe", listings, used)
        except OSError:
            continue  # missing PATH entries are normal; the plugin dir is reported above
        for fname in names:
            name = executable_plugin_name(fname)
            if name is None:
                continue
            path = os.path.join(directory, fname)
            if name in seen or not os.path.isfile(path) or not os.access(path, os.X_OK):
                continue  # the first one on the search path wins, as a shell would
            seen.add(name)
            found.append(_probe(path, name))
    _keep(listings, used, "exe")
    return found
