"""Rebuilding the plugin index: manifests to records, command routes and events.

Only runs when the fingerprint changed (or on ``plugins doctor``). It never imports
plugin code. A rebuild that reads only what changed since the last one (the usual first
run after installing a plugin) imports neither msgspec, tomllib, packaging nor
:mod:`conduit.config` unless a new manifest or the config needs them: their imports cost
more than the rest of such a rebuild. Where plugins
come from, and in which order, is :mod:`conduit.indexer.discover`; this module reads the
manifests discovery did not, checks each plugin's API range, turns manifests into
records, resolves dependencies and writes the index (:func:`rebuild`) in the format that
:mod:`conduit.index` reads.
"""

from __future__ import annotations

import marshal
import os
import sys

from conduit import DISTRIBUTION, __version__
from conduit import index as reader
from conduit.errors import ConfigError, ManifestError
from conduit.index import INDEX_FORMAT, MAGIC, empty_events, encode, read, records_path
from conduit.indexer.discover import PRECEDENCE, Found, discover
from conduit.sdk import API_VERSION
from conduit.text import inert

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Container
    from typing import Any

    from conduit.indexer.discover import DistCache, Listings
    from conduit.indexer.records import BrokenRec, Events, Index, PluginRec
    from conduit.indexer.resolve import Resolution
    from conduit.paths import Paths
    from conduit.timing import Profile

#: where the process host has an operating-system sandbox (the value of
#: ``conduit.security.grants.SANDBOX_PLATFORM``, not imported: a rebuild that reads only
#: what changed must not pay for importing it)
SANDBOX_PLATFORM = sys.platform == "linux"

__all__ = ["Previous", "build", "first_party", "identity", "load", "rebuild"]


class Cache:
    """What the last rebuild read, so that the next one reads only what changed.

    Kept in a file of its own beside the index (``.cache``; the start-up path never reads
    it): per installed distribution what discovery read of it (keyed by the stat of its
    ``.dist-info`` directory), per manifest file its validated content or its error (keyed
    by the file's stat and the name it must have), and per API range whether this
    Conduit's plugin API is in it. Only for the Conduit, interpreter and environment that
    wrote it; anything else, or a file that cannot be read, is an empty cache.
    """

    def __init__(self, data: dict[str, Any] | None = None, *, quick: bool = False) -> None:
        data = data or {}
        self.dists: DistCache = data.get("dists", {})
        self.listings: Listings = data.get("listings", {})
        self.manifests: dict[str, Any] = data.get("manifests", {})
        self.api: dict[str, bool] = data.get("api", {})
        #: (config path, its stat, the settings as plain data, the config error or None)
        self.config: tuple[Any, ...] | None = data.get("config")
        #: (index path, its stat, its fingerprint, the records file's stat, the plugins
        #: whose record in it is their cached record unchanged) as the last rebuild
        #: wrote them
        self.written: tuple[Any, ...] | None = data.get("written")
        self.used: set[str] = set()  # manifests looked up by this rebuild
        #: manifest path -> (its stat, :func:`_key` of its plugin, the marshalled base
        #: record made of it and its top-level commands): records of plugins whose
        #: manifest file is unchanged
        self.records: dict[str, tuple[Any, ...]] = data.get("records", {})
        self.records_used: dict[str, tuple[Any, ...]] = {}
        #: plugin name -> its manifest's host kind, for the records this rebuild took
        #: from the cache
        self.hits: dict[str, str] = {}
        #: new manifests are checked by conduit.indexer.quick first (not a forced rebuild)
        self.quick = quick
        #: what the last rebuild's index says about the plugins as a whole, for
        #: :func:`_patch`: (whether resolution found any edge, every plugin requirement
        #: string, whether two plugins claimed one name), or None
        self.graph: tuple[Any, ...] | None = data.get("graph")
        #: the settings came from this cache (the config file is unchanged)
        self.config_hit = False

    #: the layout of this cache (changed with it: a cache of another layout is empty)
    FORMAT = 5

    @staticmethod
    def key() -> tuple[object, ...]:
        return (Cache.FORMAT, INDEX_FORMAT, __version__, sys.version, sys.prefix, API_VERSION)

    @classmethod
    def read(cls, path: str) -> Cache:
        try:
            with open(path, "rb") as f:
                data = f.read()
            if data.startswith(MAGIC):
                table = marshal.loads(data[len(MAGIC) :])
                if type(table) is dict and table.get("key") == cls.key():
                    return cls(table, quick=True)
        except (OSError, EOFError, ValueError, TypeError):
            pass
        return cls(quick=True)

    def dump(self) -> bytes:
        manifests = {k: v for k, v in self.manifests.items() if k in self.used}
        table = {
            "key": self.key(),
            "dists": self.dists,
            "manifests": manifests,
            "api": self.api,
            "records": self.records_used,
            "listings": self.listings,
            "config": self.config,
            "written": self.written,
            "graph": self.graph,
        }
        return MAGIC + marshal.dumps(table)


class Config:
    """The settings a rebuild uses, read from the config as plain data (what
    ``msgspec.to_builtins`` makes of :class:`conduit.config.Settings`: the index holds
    it, and the rebuild cache keeps it while the config file is unchanged)."""

    __slots__ = (
        "data",
        "disabled",
        "granted_to",
        "grants",
        "isolation",
        "pins",
        "sandbox_third_party",
        "trusted",
    )

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.disabled: list[str] = data["plugins"]["disabled"]
        self.pins: dict[str, str] = data["pins"]
        self.isolation: dict[str, str] = data["isolation"]
        self.grants: dict[str, list[str]] = data["grants"]
        self.granted_to: dict[str, str] = data["granted-to"]
        self.sandbox_third_party: bool = data["security"]["sandbox-third-party"]
        self.trusted: list[str] = data["security"]["trusted"]


def _config_stat(path: str) -> tuple[int, int, int, int] | bool | None:
    """The stat of the config file (:func:`_file_stat`); None when there is none; False
    when it cannot be told (then the config is read again)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError:
        return False
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def _read_config(path: str, cache: Cache) -> tuple[Config, tuple[str, str, str | None] | None]:
    """The settings, and the config error (path, message, hint) if the file is invalid:
    as the last rebuild read them while the file is the same, else read and validated
    (which imports :mod:`conduit.config`, msgspec and tomllib)."""
    stat = _config_stat(path)
    cached = cache.config
    if stat is not False and cached is not None and cached[:2] == (path, stat):
        cache.config_hit = True
        return Config(cached[2]), cached[3]
    import msgspec

    from conduit.config import Settings, read_settings

    config_error: tuple[str, str, str | None] | None = None
    try:
        settings = read_settings(path)
    except ConfigError as exc:
        # Built with the defaults so that `--help`, `config` and `plugins doctor` still
        # work; the CLI refuses every other command with this error (index["config_error"]).
        settings = Settings()
        message = exc.message.removeprefix(f"{exc.path}: ")
        config_error = (exc.path, message, exc.hint)
    data = msgspec.to_builtins(settings)
    cache.config = None if stat is False else (path, stat, data, config_error)
    return Config(marshal.loads(marshal.dumps(data))), config_error


def _file_stat(path: str) -> tuple[int, int, int, int] | None:
    """What changes when a file is written: with its change time, which no one sets back
    (a rewrite of the same size within the mtime's granularity, or an mtime restored by
    ``tar -p``, ``cp -p`` or ``touch -r``, keeps inode, size and mtime)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def _load_manifest(item: Found, cache: Cache) -> None:
    """Read and validate the manifest of ``item``, or reuse what an earlier rebuild read
    of the same file (same stat, same expected name)."""
    if item.manifest is not None or item.error is not None:
        if item.manifest is not None and item.data is None:
            import msgspec

            item.data = msgspec.to_builtins(item.manifest)
        return
    stat = _file_stat(item.origin)
    cache.used.add(item.origin)
    cached = cache.manifests.get(item.origin)
    if stat is not None and cached is not None and cached[0] == stat and cached[1] == item.name:
        result = cached[2]
    else:
        result = _quick_manifest(item) if cache.quick and stat is not None else None
        if result is None:
            import msgspec

            from conduit.manifest import read_manifest_file

            try:
                manifest = read_manifest_file(item.origin, expected_name=item.name)
                result = msgspec.to_builtins(manifest)
            except ManifestError as exc:
                result = (exc.path, exc.problem, exc.field, exc.hint)
        cache.manifests[item.origin] = (stat, item.name, result)
    if type(result) is dict:
        item.data = result
    else:
        path, problem, field, hint = result
        item.error = ManifestError(path, problem, field=field, hint=hint)


def _cached_record(item: Found, cache: Cache) -> bytes | None:
    """The :func:`_base` record and top-level commands of ``item`` as an earlier rebuild
    made them from the same manifest file (same stat) for the same plugin, or None:
    marshalled (:func:`_decoded`), decoded only if the rebuild needs them. Only for a
    plugin whose manifest is a file that was valid (:func:`_keep_record`)."""
    if item.manifest is not None or item.error is not None or not cache.quick:
        return None
    cached = cache.records.get(item.origin)
    if cached is None:
        return None
    if (  # what the record holds of the plugin (rather than of its manifest)
        cached[1] != _key(item)
        or type(cached[2]) is not bytes
        or cached[0] != _file_stat(item.origin)
    ):
        return None
    cache.records_used[item.origin] = cached
    return cached[2]


def _key(item: Found) -> tuple[object, ...]:
    """What a cached record holds of its plugin rather than of its manifest."""
    return (item.name, item.dist_version, item.source, item.dist, item.entry, item.protocol)


def _decoded(blob: bytes) -> tuple[PluginRec, dict[str, str]]:
    """A cached record (:func:`_cached_record`): the base record, its top-level commands."""
    base, top = marshal.loads(blob)
    return base, top


def _keep_record(item: Found, cache: Cache, made: tuple[PluginRec, dict[str, str]]) -> None:
    """Keep the record made for ``item`` for the next rebuild (:func:`_cached_record`):
    only for a manifest file (read by :func:`_load_manifest`), whose record's version is
    its distribution's."""
    cached = cache.manifests.get(item.origin)
    if (
        item.manifest is not None
        or item.source not in ("builtin", "entry-point")
        or cached is None
        or cached[0] is None
        or type(cached[2]) is not dict
    ):
        return
    cache.records_used[item.origin] = (cached[0], _key(item), marshal.dumps(made))  # type: ignore[arg-type]


def _quick_manifest(item: Found) -> dict[str, Any] | None:
    """The manifest file of ``item`` as plain data if :mod:`conduit.indexer.quick` can
    tell it is valid (without importing msgspec, tomllib and packaging), else None."""
    from conduit.indexer.quick import check

    try:
        with open(item.origin, "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return check(raw, item.name)


def _api_ok(spec: str, cache: Cache) -> bool:
    ok = cache.api.get(spec)
    if ok is None:
        from packaging.specifiers import SpecifierSet

        ok = cache.api[spec] = SpecifierSet(spec).contains(API_VERSION, prereleases=True)
    return ok


def _check_api(item: Found, cache: Cache) -> None:
    if item.data is None or item.error is not None:
        return
    api = item.data["api"]
    if not _api_ok(api, cache):
        item.error = ManifestError(
            item.origin,
            f"plugin '{item.name}' supports plugin API {api}, "
            f"but this Conduit provides {API_VERSION}",
            field="api",
            hint="upgrade the plugin, or install a Conduit release it supports",
        )


_STRICTNESS = {"in-process": 0, "process": 1, "wasm": 2}


def _normalise(dist: str) -> str:
    """A distribution name as PEP 503 compares them (``Git_Tools`` is ``git-tools``):
    ``re.sub(r"[-_.]+", "-", dist).lower()``, without ``re``."""
    name = dist.replace("_", "-").replace(".", "-")
    while "--" in name:
        name = name.replace("--", "-")
    return name.lower()


def _module_hash(path: str) -> str:
    """``sha256:HEX`` of a WebAssembly module (an unreadable one: of its path, a value no
    module has; it cannot be loaded anyway)."""
    import hashlib

    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError:
        digest = hashlib.sha256(b"unreadable:" + os.fsencode(path))
    return f"sha256:{digest.hexdigest()}"


def identity(item: Found) -> str:
    """What binds a grant to the plugin ``item`` (docs/permissions.md#identity): the
    distribution of an entry point (its upgrades keep grants), the path of a single file
    or an executable (editing it in place keeps them), the hash of a WebAssembly module
    (another module, even at the same path, is asked again)."""
    # inert: an identity is printed at the prompt, kept in the config
    if item.source == "builtin":
        return "builtin"
    if item.source == "entry-point":
        return f"entry-point:{inert(_normalise(item.dist or item.name))}"
    if item.source == "wasm":
        return f"wasm:{_module_hash(item.entry or item.origin)}"
    return f"{item.source}:{inert(os.path.abspath(item.origin))}"


def first_party(item: Found) -> bool:
    """Whether ``item`` is one of Conduit's first-party plugins: an entry point of
    Conduit's own distribution (``conduit-devtool``) whose manifest lies in the
    ``conduit_plugins`` package installed beside ``conduit`` itself. Its declared
    capabilities are granted by default (docs/permissions.md#first-party-plugins)."""
    if item.source != "entry-point" or _normalise(item.dist or "") != DISTRIBUTION:
        return False
    import conduit

    here = os.path.dirname(os.path.dirname(os.path.realpath(conduit.__file__)))
    home = os.path.join(here, "conduit_plugins") + os.sep
    return os.path.realpath(item.origin).startswith(home)


def _isolation(kind: str, name: str, source: str, forced: dict[str, str], config: Config) -> str:
    """The host kind: the manifest's (``kind``), or the process sandbox for a third-party
    in-process plugin under ``[security] sandbox-third-party``, or stricter by
    ``[isolation]``."""
    if (
        config.sandbox_third_party
        and SANDBOX_PLATFORM
        and kind == "in-process"
        and source in ("entry-point", "file")
        and name not in config.trusted
    ):
        kind = "process"
    # The user's policy may make isolation stricter, never weaker.
    return max(kind, forced.get(name, kind), key=_STRICTNESS.__getitem__)


def _bind_grants(settings: Config, plugins: dict[str, PluginRec]) -> dict[str, list[str]]:
    """The ``[grants]`` that apply: those given to the identity of the plugin that now
    holds the name (``[granted-to]``), and unbound ones (an older config, or written by
    hand) when only one plugin claims the name; bound on first use by
    :func:`conduit.security.grants.ensure_granted`. Others are kept out of the index's
    grants, so no host applies them, and noted in the record as ``withheld``."""
    applied: dict[str, list[str]] = {}
    for name, caps in settings.grants.items():
        rec = plugins.get(name)
        bound = settings.granted_to.get(name)
        if (
            rec is None
            or rec["source"] == "builtin"
            or bound == rec["identity"]
            or (bound is None and not rec["shadowed"])
        ):
            applied[name] = list(caps)
        else:
            rec["withheld"] = {"granted_to": bound, "grants": list(caps)}
    return applied


def _contested(settings: Config, plugins: dict[str, PluginRec]) -> set[str]:
    """Names whose trust settings (``[security] trusted``, ``[dependencies] allow-build``)
    must not apply: another plugin also claims the name, or its grants were given to
    another plugin (``[granted-to]``). Those settings name a plugin the user knows, as
    grants do (docs/permissions.md#identity); a newcomer that takes the name gets none
    of them: a third-party one runs in the process sandbox when
    ``sandbox-third-party`` is on."""
    names = set()
    for name, rec in plugins.items():
        bound = settings.granted_to.get(name)
        if rec["source"] != "builtin" and (
            rec["shadowed"] or (bound is not None and bound != rec["identity"])
        ):
            names.add(name)
            if (
                name in settings.trusted
                and rec["isolation"] == "in-process"
                and (settings.sandbox_third_party and SANDBOX_PLATFORM)
            ):
                rec["isolation"] = "process"
    return names


def _effective_config(
    settings: Config, grants: dict[str, list[str]], untrusted: set[str]
) -> dict[str, Any]:
    """The config as the index holds it: the grants that apply, and the trust settings
    without the names that :func:`_contested` found."""
    config: dict[str, Any] = {**settings.data, "grants": grants}
    security = config.get("security")
    if isinstance(security, dict) and untrusted:
        config["security"] = {
            **security,
            "trusted": [n for n in security.get("trusted", []) if n not in untrusted],
        }
    dependencies = config.get("dependencies")
    if isinstance(dependencies, dict) and untrusted:
        config["dependencies"] = {
            **dependencies,
            "allow-build": [n for n in dependencies.get("allow-build", []) if n not in untrusted],
        }
    return config


def _record(item: Found, disabled: set[str], forced: dict[str, str], config: Config) -> PluginRec:
    return _configured(_base(item), disabled, forced, config)


def _configured(
    base: PluginRec, disabled: set[str], forced: dict[str, str], config: Config
) -> PluginRec:
    """The record of a plugin from its :func:`_base` (not changed: it may be kept in
    the rebuild cache) and the config: enabled or not, its host kind."""
    name = base["name"]
    return {
        **base,
        "isolation": _isolation(base["isolation"], name, base["source"], forced, config),
        "enabled": name not in disabled or name == "plugins",
        "after": [],
        "shadowed": [],
    }


def _base(item: Found) -> PluginRec:
    """What the record of ``item`` holds whatever the config says (``isolation``: the
    manifest's; ``enabled``: True); :func:`_configured` makes it the record."""
    data = item.data
    assert data is not None
    return {
        "name": item.name,
        "version": data["version"]
        if item.source in ("file", "executable", "wasm")
        else item.dist_version,
        "description": data["description"],
        "source": item.source,
        "origin": item.origin,
        "dist": item.dist,
        "entry": item.entry,
        "api": data["api"],
        "commands": [
            {"name": c["name"], "help": c["help"], "usage": c["usage"], "hidden": c["hidden"]}
            for c in data["commands"]
        ],
        "activation": list(data["activation"]),
        "provides": {
            "services": list(data["provides"]["services"]),
            "hooks": list(data["provides"]["hooks"]),
        },
        "requires": {
            "plugins": list(data["requires"]["plugins"]),
            "services": list(data["requires"]["services"]),
        },
        "capabilities": list(data["capabilities"]),
        "isolation": data["isolation"],
        "dependencies": list(data["dependencies"]),
        "protocol": item.protocol,
        "enabled": True,
        "blocked": None,
        "blocked_hint": None,
        "after": [],
        "identity": identity(item),
        "shadowed": [],
        "withheld": None,
        "first_party": first_party(item),
    }


def build(
    paths: Paths,
    fp: tuple[object, ...],
    cache: Cache | None = None,
    previous: Previous | None = None,
    *,
    extra: list[Found] | None = None,
) -> Index:
    """Discover every plugin and return a fresh index (does not write it).

    ``extra`` adds plugins found elsewhere (``conduit dev``'s sources, not installed),
    each in the place of a discovered plugin of the same name.

    With ``cache`` (what the last rebuild read), only the distributions and manifests
    that changed since are read again; the index is the same as without. The cache is
    updated in place. With ``previous`` too (the index the last rebuild wrote, with that
    cache), a change of a few simple plugins is patched into it (:func:`_patch`; the
    result is ``previous.patched``), else everything is recomputed.
    """
    if cache is None:
        cache = Cache()
    settings, config_error = _read_config(paths.config_file, cache)
    warnings: list[str] = []
    found = discover(paths.plugin_dir, warnings, cache.dists, cache.listings)
    replaced: dict[str, list[str]] = {}  # name -> identities of the plugins ``extra`` replaced
    if extra:
        names = {item.name for item in extra}
        for item in found:
            if item.name in names:
                replaced.setdefault(item.name, []).append(identity(item))
        found = [item for item in found if item.name not in names] + extra
    bases: dict[int, bytes] = {}  # id(item) -> its record from the cache (_decoded)
    for item in found:
        cached = _cached_record(item, cache)
        if cached is not None:
            bases[id(item)] = cached
            continue
        _load_manifest(item, cache)
        _check_api(item, cache)
    if previous is not None and not extra:
        patched = _patch(previous, found, bases, cache, settings, config_error, warnings, paths)
        if patched is not None:
            patched["fingerprint"] = fp
            return patched

    disabled = set(settings.disabled)
    plugins: dict[str, PluginRec] = {}
    broken: list[BrokenRec] = []
    winners: dict[str, Found] = {}
    tops: dict[str, dict[str, str]] = {}  # name -> _top_commands of its record
    for item in sorted(found, key=lambda f: (PRECEDENCE[f.source], f.origin)):
        if item.error is not None:
            broken.append(_broken(item, disabled))
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
            plugins[item.name]["shadowed"].append(identity(item))
            continue
        winners[item.name] = item
        blob = bases.get(id(item))
        if blob is None:
            base = _base(item)
            hit = (base, _top_commands(base))
            _keep_record(item, cache, hit)
        else:
            hit = _decoded(blob)
            cache.hits[item.name] = hit[0]["isolation"]
        plugins[item.name] = _configured(hit[0], disabled, settings.isolation, settings)
        tops[item.name] = hit[1]
    for name, shadowed in replaced.items():
        # the name's grants and trust are the replaced plugin's, unless it is the same one
        rec = plugins.get(name)
        if rec is not None:
            rec["shadowed"] += [i for i in shadowed if i != rec["identity"]]
    grants = _bind_grants(settings, plugins)
    untrusted = _contested(settings, plugins)
    _more_warnings(settings, plugins, found, paths, warnings)
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
    top = {n: tops[n] for n in plugins}
    broken_names = [(b["name"], b["source"]) for b in broken]
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
        "config": _effective_config(settings, grants, untrusted),
        "help": "",
        "usable": [n for n, r in plugins.items() if r["enabled"] and not r["blocked"]],
        "commands": marshal.dumps(top),
        "complete": _completions(top, routes, [n for n, _ in broken_names]),
        "config_error": config_error,
        "builtins": [n for n, r in plugins.items() if r["source"] == "builtin"],
        "blocked": {
            n: (r["blocked"], r["blocked_hint"])
            for n, r in plugins.items()
            if r["enabled"] and r["blocked"]
        },
    }
    cache.graph = (
        any(rec["after"] for rec in plugins.values()),
        sorted({t for rec in plugins.values() for t in rec["requires"]["plugins"]}),
        len(winners) != sum(1 for item in found if item.error is None),
    )
    return index


def _broken(item: Found, disabled: set[str]) -> BrokenRec:
    assert item.error is not None
    return {
        "name": item.name,
        "source": item.source,
        "origin": item.origin,
        "error": item.error.message,
        "hint": item.error.hint,
        "disabled": item.name in disabled,
    }


def _more_warnings(
    settings: Config, plugins: Container[str], found: list[Found], paths: Paths, warnings: list[str]
) -> None:
    """The warnings of a rebuild that discovery does not give: the config's, pins to
    plugins not installed, drift from the lock file."""
    if settings.sandbox_third_party and not SANDBOX_PLATFORM:
        warnings.append(
            "config [security] sandbox-third-party: this platform has no process sandbox "
            "(Linux only); third-party plugins run in-process"
        )

    for key, plugin in sorted(settings.pins.items()):
        if plugin not in plugins:
            what = "service" if key.startswith("service:") else "command"
            warnings.append(
                f"config pins {what} '{key.removeprefix('service:')}' to plugin '{plugin}', "
                "which is not installed"
            )

    # An interrupted store operation is warned of by the CLI on every run (the index may
    # not be rebuilt after the kill); drift from the lock file is known only here. Conduit's
    # own distribution provides the first-party plugins but is never a plugin
    # distribution of the lock.
    # No lock bound to this environment (journal.bound_lock's file), no drift: then
    # conduit.journal (json, tempfile) is not imported.
    if os.path.exists(paths.store_file("lock", ".path")):
        from conduit.journal import lock_drift

        drift = lock_drift(
            paths,
            {
                _normalise(item.dist): item.dist_version or ""
                for item in found
                if item.source == "entry-point"
                and item.dist
                and _normalise(item.dist) != DISTRIBUTION
            },
        )
        if drift:
            warnings.append(drift)


class Previous:
    """The index and records files the last rebuild wrote (the caller checks that they
    are the ones written with the rebuild cache), decoded when :func:`_patch` needs
    them; ``patched`` is the new records table and the plugins whose record in it is
    their cached record unchanged, when the new index was patched from them."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.patched: tuple[dict[str, bytes], list[str]] | None = None

    def read(self) -> tuple[dict[str, Any], dict[str, bytes]] | None:
        try:
            with open(self.path, "rb") as f:
                head = f.read()
            with open(records_path(self.path), "rb") as f:
                body = f.read()
            if not (head.startswith(MAGIC) and body.startswith(MAGIC)):
                return None
            header = marshal.loads(head[len(MAGIC) :])
            table = marshal.loads(body[len(MAGIC) :])
        except (OSError, EOFError, ValueError, TypeError):
            return None
        if (
            type(header) is not dict
            or type(table) is not dict
            or header.get("format") != INDEX_FORMAT
            or header.get("plugins") != len(body)
        ):
            return None
        return header, table


#: activation events kept in lists in plugin order (a patch does not place them)
_ORDERED_EVENTS = ("startup", "env", "file")


def _simple(rec: PluginRec, settings: Config, required: list[str]) -> bool:
    """Whether adding or removing the plugin of ``rec`` changes nothing in the index but
    its own record and its own entries (:func:`_patch`): not a built-in, enabled,
    unblocked, alone with its name, no grants or pins or trust settings naming it, and
    nothing required of it or by it, no service provided, no ordered activation event."""
    name = rec["name"]
    return (
        rec["source"] != "builtin"
        and name != "plugins"
        and rec["enabled"] is True
        and rec["blocked"] is None
        and not rec["after"]
        and not rec["shadowed"]
        and rec["withheld"] is None
        and not rec["requires"]["plugins"]
        and not rec["requires"]["services"]
        and not rec["provides"]["services"]
        and not any(e.partition(":")[0] in _ORDERED_EVENTS for e in rec["activation"])
        and name not in settings.grants
        and name not in settings.granted_to
        and name not in settings.trusted
        and name not in settings.pins.values()
        and not any(name in text for text in required)  # a superset: "a" in "ab>=1"
    )


def _patch(
    previous: Previous,
    found: list[Found],
    bases: dict[int, bytes],
    cache: Cache,
    settings: Config,
    config_error: tuple[str, str, str | None] | None,
    warnings: list[str],
    paths: Paths,
) -> Index | None:
    """The new index made from the previous one by replacing the records, routes, event
    entries and completion lines of the plugins that changed, or None when that could
    give another index than a full rebuild (then everything is recomputed).

    Only when the config is unchanged, the last index had no dependency edge and no two
    plugins claiming one name, no plugin is broken but those that were, and every
    plugin added, removed or changed is :func:`_simple` and claims command words and
    events no other plugin claims. Everything else in the index is then what it was.
    (The fingerprint and ``help`` are set by the caller.)
    """
    graph = cache.graph
    if graph is None or graph[0] or graph[2] or not cache.config_hit:
        return None
    if cache.written is None or len(cache.written) < 5:
        return None
    got = previous.read()
    if got is None:
        return None
    old, table = got
    if old.get("config_error") != config_error:
        return None
    disabled = set(settings.disabled)
    items: dict[str, Found] = {}
    errors: list[tuple[int, Found]] = []
    # name -> its record, its top-level commands, its cached base's host kind (if a hit)
    made: dict[str, tuple[PluginRec, dict[str, str], str | None]] = {}
    for i, item in enumerate(found):
        if item.name in items:
            return None  # two plugins claim one name
        items[item.name] = item
        if item.error is not None:
            errors.append((i, item))
            continue
        blob = bases.get(id(item))
        if blob is None:
            base = _base(item)
            hit = (base, _top_commands(base))
            _keep_record(item, cache, hit)
            made[item.name] = (
                _configured(base, disabled, settings.isolation, settings),
                hit[1],
                None,
            )
        elif item.name not in table:
            hit = _decoded(blob)
            made[item.name] = (
                _configured(hit[0], disabled, settings.isolation, settings),
                hit[1],
                hit[0]["isolation"],
            )
    errors.sort(key=lambda e: (PRECEDENCE[e[1].source], e[1].origin, e[0]))
    broken = [_broken(item, disabled) for _, item in errors]
    if broken != old["broken"]:
        return None
    gone = [n for n in table if n not in items or items[n].error is not None]
    for name, (rec, _, _) in list(made.items()):
        blob = table.get(name)
        if blob is not None:
            if marshal.loads(blob) == rec:  # re-read, the same (a single-file plugin)
                del made[name]
            else:
                gone.append(name)
    required = graph[1]
    olds: dict[str, PluginRec] = {n: marshal.loads(table[n]) for n in gone}
    if not all(
        _simple(r, settings, required) for r in (*olds.values(), *(m[0] for m in made.values()))
    ):
        return None

    routes: dict[str, list[str]] = dict(old["routes"])
    was: Events = old["events"]
    events: Events = {
        **was,
        "command": dict(was["command"]),
        "event": dict(was["event"]),
        "service": dict(was["service"]),
    }
    for name, rec in olds.items():
        for word in _words(rec):
            if routes.get(word) != [name]:
                return None
            del routes[word]
        for kind, arg in _keyed_events(rec):
            entries = events[kind]  # type: ignore[literal-required]
            if entries.get(arg) != [name]:
                return None
            del entries[arg]
    for name, (rec, _, _) in made.items():
        for word in _words(rec):
            if word in routes:
                return None  # claimed by another plugin too
            routes[word] = [name]
        for kind, arg in _keyed_events(rec):
            entries = events[kind]  # type: ignore[literal-required]
            if arg in entries:
                return None
            entries[arg] = [name]

    top: dict[str, dict[str, str]] = marshal.loads(old["commands"])
    drop_words, drop_scoped, add_words, add_scoped = set(), set(), [], []
    for name in olds:
        for word, text in top.pop(name).items():
            drop_words.add(f"{word}\t{inert(text)}")
            drop_scoped.add(f"{name}:{word}\t{inert(text)}")
    for name, (_, words, _) in made.items():
        top[name] = words
        for word, text in words.items():
            add_words.append(f"{word}\t{inert(text)}")
            add_scoped.append(f"{name}:{word}\t{inert(text)}")
    complete = old["complete"]
    named = {b["name"] for b in broken}  # a name stays listed while a broken plugin has it
    complete = {
        "words": _patch_lines(complete["words"], drop_words, add_words),
        "scoped": _patch_lines(complete["scoped"], drop_scoped, add_scoped),
        "names": _patch_lines(
            complete["names"],
            {n for n in olds if n not in made and n not in named},
            [n for n in made if n not in olds and n not in named],
        ),
    }

    usable = [n for n in old["usable"] if n not in olds]
    if made:
        order = {
            item.name: (PRECEDENCE[item.source], item.origin, i) for i, item in enumerate(found)
        }
        usable += made
        usable.sort(key=order.__getitem__)
    valid = {n for n, item in items.items() if item.error is None}
    _more_warnings(settings, valid, found, paths, warnings)

    for name in olds:
        del table[name]
    for name, (rec, _, _) in made.items():
        table[name] = marshal.dumps(rec)  # type: ignore[arg-type]
    table = dict(sorted(table.items()))
    before = set(cache.written[4])
    pristine = [n for n in before if n in table and n not in olds and n not in made]
    pristine += [
        n for n, (rec, _, kind) in made.items() if kind is not None and _pristine_rec(rec, kind)
    ]
    previous.patched = (table, pristine)
    index: Index = {
        **old,  # type: ignore[typeddict-item]
        "plugins": reader.Records.of(table),
        "broken": broken,
        "routes": dict(sorted(routes.items())),
        "warnings": warnings,
        "events": events,
        "boot_order": sorted(usable),
        "help": "",
        "usable": usable,
        "commands": marshal.dumps(top),
        "complete": complete,
    }
    return index


def _words(rec: PluginRec) -> dict[str, None]:
    """The command words ``rec`` claims (its routes)."""
    return dict.fromkeys(c["name"].split(" ")[0] for c in rec["commands"])


def _keyed_events(rec: PluginRec) -> dict[tuple[str, str], None]:
    """The activation events of ``rec`` that :func:`_events` keys by their argument."""
    out: dict[tuple[str, str], None] = {}
    for event in rec["activation"]:
        kind, _, arg = event.partition(":")
        if kind in ("command", "event", "service"):
            out[kind, arg] = None
    return out


def _patch_lines(text: str, drop: set[str], add: list[str]) -> str:
    """Sorted lines ``text`` without those in ``drop``, with those in ``add``."""
    if not drop and not add:
        return text
    lines = [line for line in text.split("\n") if line and line not in drop]
    lines += add
    lines.sort()
    return "\n".join(lines)


def _completions(
    top: dict[str, dict[str, str]], routes: dict[str, list[str]], broken: list[str]
) -> dict[str, str]:
    """Completion answers rendered once, for the usual run (nothing disabled for it
    alone): ``words`` (each command word with its help, by the plugin that runs it),
    ``scoped`` (``plugin:word`` of every usable plugin) and ``names`` (every plugin's
    name); lines sorted, filtered by a prefix at completion time."""

    words, scoped = [], []
    for word, claimants in routes.items():
        words.append(
            f"{word}\t{inert(top[claimants[0]][word])}" if word in top[claimants[0]] else ""
        )
        for name in claimants:
            if word in top[name]:
                scoped.append(f"{name}:{word}\t{inert(top[name][word])}")
    return {
        "words": "\n".join(sorted(w for w in words if w)),
        "scoped": "\n".join(sorted(scoped)),
        "names": "\n".join(sorted({*top, *broken})),
    }


def _top_commands(rec: PluginRec) -> dict[str, str]:
    """A plugin's top-level command words with their help lines (a group's: how many
    subcommands it has), for `--help` and completion without decoding its record."""
    out: dict[str, str] = {}
    for cmd in rec["commands"]:
        if cmd["hidden"]:
            continue
        word, _, rest = cmd["name"].partition(" ")
        if not rest:
            out[word] = cmd["help"]
        elif word not in out:
            out[word] = ""
    for word, text in out.items():
        if not text:
            n = sum(1 for c in rec["commands"] if c["name"].startswith(word + " "))
            out[word] = f"({n} subcommand{'s' if n != 1 else ''})"
    return out


def _resolve(plugins: dict[str, PluginRec], pins: dict[str, str]) -> Resolution:
    """Run dependency resolution over the enabled plugins and record it in their records."""
    # Imported here: a patched rebuild (build._patch) does not resolve.
    from conduit.indexer.resolve import Node, resolve

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

    Unless ``force``d (``plugins doctor``, ``CONDUIT_REBUILD_INDEX=1``), only what changed
    since the last rebuild is read (:class:`Cache`); a forced rebuild reads everything.
    """
    cache_path = path[: -len(".bin")] + ".cache"
    fp = _with_pycache(paths, fp)

    def fresh(cache: Cache | None = None, previous: Previous | None = None) -> Index:
        index = build(paths, fp, cache, previous)
        if render_help is not None:
            if previous is not None and previous.patched is not None:
                # Not index["plugins"].items(), which would decode every record.
                plugins = {n: _Lazy(b) for n, b in previous.patched[0].items()}
                index["help"] = render_help({**index, "plugins": plugins})  # type: ignore[typeddict-item]
            else:
                index["help"] = render_help(index)
        return index

    import gc

    # A rebuild allocates tens of thousands of containers (the cache it decodes, the
    # records) and frees few until it is done: the cyclic collector would only walk them
    # again and again (a tenth of a rebuild that reads one new plugin).
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _rebuild(paths, path, fp, cache_path, fresh, force)
    finally:
        if enabled:
            gc.enable()


def _with_pycache(paths: Paths, fp: tuple[object, ...]) -> tuple[object, ...]:
    """``fp``, or the fingerprint taken again once the plugin directory's ``__pycache__``
    exists. Python makes that directory the first time it imports a single-file plugin
    from there, which changes the plugin directory's mtime (a part of the fingerprint):
    the index built just before would be built again by the next command."""
    if sys.dont_write_bytecode or sys.pycache_prefix is not None or paths.bundle is not None:
        return fp
    pycache = os.path.join(paths.plugin_dir, "__pycache__")
    try:
        if os.path.isdir(pycache) or not any(
            name.endswith(".py") for name in os.listdir(paths.plugin_dir)
        ):
            return fp
        os.mkdir(pycache)
    except OSError:  # (no plugin directory, or a read-only one: nothing changes either)
        return fp
    return reader.fingerprint(paths)


def _rebuild(
    paths: Paths,
    path: str,
    fp: tuple[object, ...],
    cache_path: str,
    fresh: Callable[..., Index],
    force: bool,
) -> Index:
    """:func:`rebuild` with the collector off."""
    index: Index | None = None
    try:
        with _locked(path):
            cache = Cache() if force else Cache.read(cache_path)
            # Another process may have rebuilt the index while we waited for the lock.
            # When it is still the file the last rebuild wrote (same stat), its
            # fingerprint is known without decoding it.
            if not force and (
                cache.written is None
                or cache.written[:2] != (path, _file_stat(path))
                or cache.written[2] == fp
            ):
                current = read(path, fp)
                if current is not None:
                    return current
            # The files the last rebuild wrote with this cache, to patch (build._patch).
            previous = None
            written = cache.written
            if (
                not force
                and written is not None
                and len(written) >= 5
                and written[:2] == (path, _file_stat(path))
                and written[3] is not None
                and written[3] == _file_stat(records_path(path))
            ):
                previous = Previous(path)
            index = fresh(cache, previous)
            if previous is not None and previous.patched is not None:
                table, pristine = previous.patched
                records = MAGIC + marshal.dumps(table)
                header = MAGIC + marshal.dumps({**index, "plugins": len(records)})
            else:
                pristine = [n for n, kind in cache.hits.items() if _pristine(index, n, kind)]
                header, records = encode(index, _unchanged(path, cache, pristine))
            # Records first: a reader that sees the new index also sees its records.
            _replace(records_path(path), records)
            _replace(path, header)
            cache.written = (path, _file_stat(path), fp, _file_stat(records_path(path)), pristine)
            _replace(cache_path, cache.dump())
            return index
    except OSError as exc:  # the lock or the cache directory cannot be written
        if index is None:
            index = fresh()
        index["warnings"].append(
            f"cannot write the plugin index to {path}: {exc.strerror or exc}; "
            "it will be rebuilt on every run"
        )
        return index


class _Lazy:
    """A record for ``render_help`` that is decoded only if it is looked into (a plain
    object: a thousand dicts would cost more to make and free than the help itself)."""

    __slots__ = ("blob",)

    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    def __getitem__(self, key: str) -> Any:
        return marshal.loads(self.blob)[key]


def _pristine(index: Index, name: str, isolation: str) -> bool:
    """Whether the record of ``name`` is still the base record the cache holds for it
    (its manifest's host kind ``isolation``): nothing that the config, resolution,
    shadowing or grants set differs."""
    return _pristine_rec(index["plugins"][name], isolation)


def _pristine_rec(rec: PluginRec, isolation: str) -> bool:
    return (
        rec["enabled"] is True
        and rec["isolation"] == isolation
        and rec["blocked"] is None
        and rec["blocked_hint"] is None
        and not rec["after"]
        and not rec["shadowed"]
        and rec["withheld"] is None
    )


def _unchanged(path: str, cache: Cache, pristine: list[str]) -> dict[str, bytes]:
    """The encoded records of the ``pristine`` plugins as the records file on disk holds
    them, where that file is the one the last rebuild wrote and their record in it was
    the same cached record, unchanged: written again as they are, not re-encoded."""
    written = cache.written
    records = records_path(path)
    if not pristine or written is None or len(written) < 5:
        return {}
    if written[0] != path or written[3] is None or written[3] != _file_stat(records):
        return {}
    try:
        with open(records, "rb") as f:
            data = f.read()
        table = marshal.loads(data[len(MAGIC) :]) if data.startswith(MAGIC) else None
    except (OSError, EOFError, ValueError, TypeError):
        return {}
    if type(table) is not dict:
        return {}
    before = set(written[4])
    return {n: table[n] for n in pristine if n in before and type(table.get(n)) is bytes}


def _replace(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file renamed over it), under the
    index lock (so one temporary name is enough).

    Unlike :func:`conduit.fs.atomic_write`, without ``fsync`` (and without importing
    tempfile): the index, its records and the rebuild cache are caches. After a power
    loss a file may be empty or truncated, and it is then rebuilt (a reader checks the
    magic, the decoding and the records' size); nothing else is lost. The three fsyncs
    cost more wall time than the rest of a rebuild that reads one new plugin.
    """
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:  # noqa: SIM105 (contextlib is not imported here)
            os.unlink(tmp)
        except OSError:
            pass
        raise


class _locked:
    """Hold ``path + '.lock'`` (an exclusive ``flock``) while the index is rebuilt.

    :func:`conduit.fs.locked` without filelock, whose import alone costs more than a
    rebuild that reads one new distribution (and without contextlib). Raises
    TimeoutError (an OSError) when another process holds it for ``timeout`` seconds.
    """

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        self.path, self.timeout, self.fd = path, timeout, -1

    def __enter__(self) -> None:
        import fcntl
        import time

        path = self.path
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + self.timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the index lock {path}.lock is held") from None
                    time.sleep(0.05)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # releases the lock


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
