"""Rebuilding the plugin index: discovery, manifest validation, command routes.

Only runs when the fingerprint changed (or on ``plugins doctor``), so it may import
importlib.metadata, tomllib and msgspec. It never imports plugin code.

Discovery order, which is also precedence for duplicate names:

1. built-in plugins (``conduit.builtins.BUILTINS``);
2. installed distributions, entry point group ``conduit.plugins``;
3. single-file plugins ``*.py`` in the plugin directory;
4. WebAssembly plugins ``NAME.wasm`` + ``NAME.toml`` in the plugin directory;
5. ``conduit-NAME`` executables.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from conduit import __version__
from conduit import index as reader
from conduit.builtins import BUILTINS
from conduit.config import read_settings
from conduit.errors import ManifestError
from conduit.fs import atomic_write, locked
from conduit.index import INDEX_FORMAT, empty_events, encode, read, records_path, site_dirs
from conduit.indexer.resolve import Node, Resolution, resolve
from conduit.manifest import (
    MANIFEST_FILENAME,
    CommandSpec,
    Manifest,
    parse_inline_manifest,
    parse_manifest,
    read_manifest_file,
)
from conduit.sdk import API_VERSION

if TYPE_CHECKING:
    from collections.abc import Callable

    from conduit.indexer.records import BrokenRec, Events, Index, PluginRec
    from conduit.paths import Paths
    from conduit.timing import Profile

__all__ = ["ENTRY_POINT_GROUP", "build", "load", "rebuild"]

ENTRY_POINT_GROUP = "conduit.plugins"
_PRECEDENCE = {"builtin": 0, "entry-point": 1, "file": 2, "wasm": 3, "executable": 4}
EXECUTABLE_PREFIX = "conduit-"
MANIFEST_FLAG = "--conduit-manifest"
PROBE_TIMEOUT = 5.0


@dataclass
class _Found:
    name: str
    source: str
    origin: str
    dist: str | None = None
    dist_version: str | None = None
    entry: str | None = None
    manifest: Manifest | None = None
    error: ManifestError | None = None
    protocol: str = "python"  # "python", or for executables "jsonrpc" or "exec"


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
    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec(parts[0])
        if spec is not None and spec.submodule_search_locations:
            base = next(iter(spec.submodule_search_locations))
            for pkg in candidates:
                path = os.path.join(base, *pkg[1:], MANIFEST_FILENAME)
                if os.path.isfile(path):
                    return path
    return None


def _discover_builtins() -> list[_Found]:
    import conduit.builtins as pkg

    base = os.path.dirname(pkg.__file__ or "")
    found = []
    for name, entry in BUILTINS.items():
        origin = os.path.join(base, name, MANIFEST_FILENAME)
        found.append(
            _Found(name, "builtin", origin, dist="conduit", entry=entry, dist_version=__version__)
        )
    return found


def _discover_entry_points(warnings: list[str]) -> list[_Found]:
    found = []
    seen: set[str] = set()
    for dist in importlib.metadata.distributions(path=site_dirs()):
        try:
            dist_name = dist.metadata["Name"] or "?"
        except Exception:  # a damaged dist-info must not stop discovery
            continue
        key = dist_name.lower().replace("_", "-").replace(".", "-")
        if key in seen:  # shadowed by an earlier sys.path entry, as importlib does
            continue
        seen.add(key)
        try:
            eps = dist.entry_points.select(group=ENTRY_POINT_GROUP)
        except Exception as exc:
            warnings.append(f"distribution {dist_name}: cannot read entry points: {exc}")
            continue
        for ep in eps:
            module = ep.value.partition(":")[0].strip()
            manifest = _manifest_for_module(module, dist.locate_file)
            item = _Found(
                ep.name,
                "entry-point",
                manifest or f"{dist_name} (entry point {ep.name} = {ep.value})",
                dist=dist_name,
                dist_version=dist.version,
                entry=ep.value.strip(),
            )
            if manifest is None:
                item.error = ManifestError(
                    item.origin,
                    f"no {MANIFEST_FILENAME} found next to module '{module}'",
                    hint=f"ship {MANIFEST_FILENAME} inside the package (package data)",
                )
            found.append(item)
    return found


def _discover_files(plugin_dir: str, warnings: list[str]) -> list[_Found]:
    found = []
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
            item = _Found(stem, "file", path)
            item.error = ManifestError(path, f"cannot read: {exc}")
            found.append(item)
            continue
        item = _Found(stem, "file", path)
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


def _discover_wasm(plugin_dir: str) -> list[_Found]:
    """``NAME.wasm`` with its manifest ``NAME.toml`` beside it (docs/manifest.md)."""
    from conduit.manifest import _loads_toml

    found = []
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
        item = _Found(stem, "wasm", toml, entry=wasm)
        found.append(item)
        try:
            with open(toml, "rb") as f:
                data = _loads_toml(f.read().decode("utf-8"), toml)
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


def executable_dirs(plugin_dir: str) -> list[str]:
    """Where ``conduit-NAME`` executables are looked for: the plugin directory, then PATH."""
    dirs = [plugin_dir]
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        if entry and os.path.isabs(entry) and entry not in dirs:
            dirs.append(entry)
    return dirs


def _probe(path: str, name: str) -> _Found:
    """Ask an executable for its manifest (``--conduit-manifest``), once per rebuild.

    A JSON manifest with ``"protocol": "jsonrpc"`` makes it a protocol plugin; anything
    else (the flag unknown, no JSON) makes it a pass-through command, like a gh or
    kubectl plugin.
    """
    import json
    import subprocess

    item = _Found(name, "executable", path, entry=None)
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


def _discover_executables(plugin_dir: str, warnings: list[str]) -> list[_Found]:
    found: list[_Found] = []
    seen: set[str] = set()
    for directory in executable_dirs(plugin_dir):
        try:
            names = sorted(os.listdir(directory))
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
    return found


def _load_manifest(item: _Found) -> None:
    if item.manifest is not None or item.error is not None:
        return
    try:
        item.manifest = read_manifest_file(item.origin, expected_name=item.name)
    except ManifestError as exc:
        item.error = exc


def _check_api(item: _Found) -> None:
    from packaging.specifiers import SpecifierSet

    if item.manifest is None:
        return
    if not SpecifierSet(item.manifest.api).contains(API_VERSION, prereleases=True):
        item.error = ManifestError(
            item.origin,
            f"plugin '{item.name}' supports plugin API {item.manifest.api}, "
            f"but this Conduit provides {API_VERSION}",
            field="api",
            hint="upgrade the plugin, or install a Conduit release it supports",
        )


_STRICTNESS = {"in-process": 0, "process": 1, "wasm": 2}


def _record(item: _Found, disabled: set[str], forced: dict[str, str]) -> PluginRec:
    m = item.manifest
    assert m is not None
    data = msgspec.to_builtins(m)
    return {
        "name": item.name,
        "version": m.version
        if item.source in ("file", "executable", "wasm")
        else item.dist_version,
        "description": m.description,
        "source": item.source,
        "origin": item.origin,
        "dist": item.dist,
        "entry": item.entry,
        "api": m.api,
        "commands": [
            {"name": c.name, "help": c.help, "usage": c.usage, "hidden": c.hidden}
            for c in m.commands
        ],
        "activation": list(m.activation),
        "provides": data["provides"],
        "requires": data["requires"],
        "capabilities": list(m.capabilities),
        # The user's policy may make isolation stricter, never weaker.
        "isolation": max(
            m.isolation, forced.get(item.name, m.isolation), key=_STRICTNESS.__getitem__
        ),
        "dependencies": list(m.dependencies),
        "protocol": item.protocol,
        "enabled": item.name not in disabled or item.name == "plugins",
        "blocked": None,
        "blocked_hint": None,
        "after": [],
    }


def _interrupted_store_operation(paths: Paths) -> str | None:
    """A warning when a ``conduit plugins install`` (or the like) was killed midway."""
    import json

    try:
        with open(paths.store_file("journal", ".json"), encoding="utf-8") as f:
            entry = json.load(f)
        pid, op = int(entry["pid"]), str(entry["op"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        pid, op = 0, "plugin operation"
    if pid > 0:
        try:
            os.kill(pid, 0)
            return None  # still running (this rebuild may be its own validation)
        except ProcessLookupError:
            pass
        except PermissionError:
            return None
    return (
        f"'conduit plugins {op}' was interrupted and may have left plugins half-changed; "
        "run 'conduit plugins lock' to restore the state from before it"
    )


def build(paths: Paths, fp: tuple[object, ...]) -> Index:
    """Discover every plugin and return a fresh index (does not write it)."""
    settings = read_settings(paths.config_file)
    warnings: list[str] = []
    found = _discover_builtins() + _discover_entry_points(warnings)
    found += _discover_files(paths.plugin_dir, warnings)
    found += _discover_wasm(paths.plugin_dir)
    found += _discover_executables(paths.plugin_dir, warnings)
    for item in found:
        _load_manifest(item)
        _check_api(item)

    disabled = set(settings.plugins.disabled)
    plugins: dict[str, PluginRec] = {}
    broken: list[BrokenRec] = []
    winners: dict[str, _Found] = {}
    for item in sorted(found, key=lambda f: (_PRECEDENCE[f.source], f.origin)):
        if item.error is not None:
            broken.append(
                {
                    "name": item.name,
                    "source": item.source,
                    "origin": item.origin,
                    "error": item.error.message,
                    "hint": item.error.hint,
                    "disabled": item.name in disabled,
                }
            )
            continue
        if item.name in winners:
            first = winners[item.name]
            broken.append(
                {
                    "name": item.name,
                    "source": item.source,
                    "origin": item.origin,
                    "error": f"{item.origin}: duplicate plugin name '{item.name}' "
                    f"(already provided by {first.origin})",
                    "hint": "uninstall or rename one of them",
                    "disabled": item.name in disabled,
                }
            )
            continue
        winners[item.name] = item
        plugins[item.name] = _record(item, disabled, dict(settings.isolation))

    for key, plugin in sorted(settings.pins.items()):
        if plugin not in plugins:
            what = "service" if key.startswith("service:") else "command"
            warnings.append(
                f"config pins {what} '{key.removeprefix('service:')}' to plugin '{plugin}', "
                "which is not installed"
            )

    interrupted = _interrupted_store_operation(paths)
    if interrupted:
        warnings.append(interrupted)

    resolution = _resolve(plugins, settings.pins)
    routes: dict[str, list[str]] = {}
    for name, rec in plugins.items():
        if not rec["enabled"] or rec["blocked"]:
            continue
        for word in dict.fromkeys(c["name"].split(" ")[0] for c in rec["commands"]):
            routes.setdefault(word, []).append(name)
    for word, claimants in routes.items():
        claimants.sort(
            key=lambda p: (
                plugins[p]["source"] != "builtin",
                settings.pins.get(word) != p,
                p,
            )
        )
    ambiguous: dict[str, list[str]] = {}
    for rec in plugins.values():
        for svc in rec["provides"]["services"]:
            if rec["enabled"] and not rec["blocked"] and svc not in resolution.providers:
                ambiguous.setdefault(svc, []).append(rec["name"])
    index: Index = {
        "format": INDEX_FORMAT,
        "fingerprint": fp,
        "conduit": __version__,
        "plugins": dict(sorted(plugins.items())),
        "broken": broken,
        "routes": dict(sorted(routes.items())),
        "pins": dict(settings.pins),
        "warnings": warnings,
        "events": _events(plugins),
        "services": dict(sorted(resolution.providers.items())),
        "ambiguous": ambiguous,
        "boot_order": resolution.boot_order,
        "config": msgspec.to_builtins(settings),
        "help": "",
        "usable": [n for n, r in plugins.items() if r["enabled"] and not r["blocked"]],
        "builtins": [n for n, r in plugins.items() if r["source"] == "builtin"],
        "blocked": {
            n: (r["blocked"], r["blocked_hint"])
            for n, r in plugins.items()
            if r["enabled"] and r["blocked"]
        },
    }
    return index


def _resolve(plugins: dict[str, PluginRec], pins: dict[str, str]) -> Resolution:
    """Run dependency resolution over the enabled plugins and record it in their records."""
    nodes = {
        name: Node(
            name,
            rec["version"],
            tuple(rec["requires"]["plugins"]),
            tuple(rec["requires"]["services"]),
            tuple(rec["provides"]["services"]),
        )
        for name, rec in plugins.items()
        if rec["enabled"]
    }
    unavailable = {name: "is disabled" for name, rec in plugins.items() if not rec["enabled"]}
    resolution = resolve(nodes, pins=pins, unavailable=unavailable)
    for name, rec in plugins.items():
        blocked = resolution.blocked.get(name)
        rec["blocked"] = blocked.error if blocked else None
        rec["blocked_hint"] = blocked.hint if blocked else None
        rec["after"] = [] if blocked else list(resolution.requires.get(name, []))
    return resolution


def _events(plugins: dict[str, PluginRec]) -> Events:
    """Index activation events by kind; a provider implies ``service:NAME``."""
    events = empty_events()
    for name, rec in plugins.items():
        if not rec["enabled"] or rec["blocked"]:
            continue
        for svc in rec["provides"]["services"]:
            events["service"].setdefault(svc, []).append(name)
        for event in rec["activation"]:
            kind, _, arg = event.partition(":")
            if kind == "startup":
                events["startup"].append(name)
            elif kind == "env":
                var, eq, value = arg.partition("=")
                events["env"].append((name, var, value if eq else None))
            elif kind == "file":
                events["file"].append((name, arg))
            elif kind in ("command", "event", "service"):
                table = events[kind]  # type: ignore[literal-required]
                if name not in table.setdefault(arg, []):
                    table[arg].append(name)
    return events


def rebuild(
    paths: Paths,
    path: str,
    fp: tuple[object, ...],
    *,
    force: bool = False,
    render_help: Callable[[Index], str] | None = None,
) -> Index:
    """Rebuild the index and write it atomically under the index lock.

    Another process may have rebuilt it while we waited for the lock; then its result is
    used. An index that cannot be written (read-only cache) is still returned.
    """

    def fresh() -> Index:
        index = build(paths, fp)
        if render_help is not None:
            index["help"] = render_help(index)
        return index

    index: Index | None = None
    try:
        with locked(path):
            if not force:
                current = read(path, fp)
                if current is not None:
                    return current
            index = fresh()
            header, records = encode(index)
            # Records first: a reader that sees the new index also sees its records.
            atomic_write(records_path(path), records)
            atomic_write(path, header)
            return index
    except OSError as exc:  # the lock or the cache directory cannot be written
        if index is None:
            index = fresh()
        index["warnings"].append(
            f"cannot write the plugin index to {path}: {exc.strerror or exc}; "
            "it will be rebuilt on every run"
        )
        return index


def load(
    paths: Paths,
    profile: Profile,
    *,
    force_rebuild: bool = False,
    render_help: Callable[[Index], str] | None = None,
) -> Index:
    """:func:`conduit.index.load` with this builder: the current index, rebuilt if needed.

    For every caller but the CLI's start-up path, which injects the builder lazily.
    """
    return reader.load(
        paths, profile, rebuild=rebuild, force_rebuild=force_rebuild, render_help=render_help
    )
