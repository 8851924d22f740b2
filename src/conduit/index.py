"""The cached plugin index: fingerprint and fast load (the start-up path).

All manifests live in one cache file, rebuilt only when a cheap fingerprint of the plugin
sources changes: the mtimes of the ``sys.path`` directories (a distribution installed,
removed or upgraded adds, removes or renames a ``.dist-info`` directory there), the plugin
directory and each ``*.py`` in it, the config file, Conduit's version and the interpreter.
The fingerprint costs a few ``stat`` calls whatever the number of installed plugins.

The file is the :mod:`marshal` encoding of plain data validated with msgspec at rebuild
time. marshal is built into the interpreter; msgspec, json and tomllib would each add
more to start-up than the whole of the rest (measured in docs/performance.md). A file
that is missing, stale, truncated or corrupt is rebuilt without the user noticing.

Standard library only, and only modules the interpreter has already loaded at start-up.
"""

from __future__ import annotations

import marshal
import os
import sys

from conduit import __version__
from conduit.paths import stable_hash

TYPE_CHECKING = False
if TYPE_CHECKING:
    from _collections_abc import dict_items, dict_keys, dict_values
    from collections.abc import Callable, Iterator
    from typing import Any

    from conduit.indexer.records import Events, Index, PluginRec
    from conduit.paths import Paths
    from conduit.timing import Profile

__all__ = ["INDEX_FORMAT", "file_stamp", "fingerprint", "index_path", "load", "site_dirs"]

INDEX_FORMAT = 7
MAGIC = b"CONDUIT-INDEX\n"


def site_dirs() -> list[str]:
    """The ``sys.path`` entries plugins are discovered from.

    The first entry is the script's directory or the current directory (unless
    ``-P``/``PYTHONSAFEPATH``); it is left out so that running Conduit from another
    directory does not invalidate the index.
    """
    entries = sys.path if sys.flags.safe_path else sys.path[1:]
    return [os.path.abspath(p) for p in entries if p]


def file_stamp(path: str) -> tuple[int, int] | None:
    """``(mtime_ns, size)`` of ``path``, None when it cannot be stat'ed: what the
    fingerprint and the warm kernel's staleness check compare."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def fingerprint(paths: Paths) -> tuple[object, ...]:
    """A value that changes whenever the set of plugins or their manifests may have."""
    if paths.bundle is not None:
        return _bundle_fingerprint(paths, paths.bundle)
    parts: list[object] = [INDEX_FORMAT, __version__, sys.version, sys.prefix]
    for entry in site_dirs():
        parts.append((entry, file_stamp(entry)))
    parts.append(("config", file_stamp(paths.config_file)))
    plugin_dir = paths.plugin_dir
    found = file_stamp(plugin_dir)
    if found is None:  # created on the first run, so that `cp x.py` into it just works
        try:  # noqa: SIM105 (contextlib is not imported on the start-up path)
            os.makedirs(plugin_dir, exist_ok=True)
        except OSError:
            pass  # a read-only home: nothing to discover there, nothing to create
        found = file_stamp(plugin_dir)
    parts.append(("plugins", found))
    # `conduit-NAME` executables on PATH: a new one appears in its directory's mtime.
    # Only absolute entries are searched (indexer.discover.executable_dirs); a relative
    # one would make every change of directory look like a new index.
    search_path = os.environ.get("PATH", "")
    parts.append(search_path)
    for entry in search_path.split(os.pathsep):
        if os.path.isabs(entry):
            parts.append(file_stamp(entry))
    try:
        # Editing a single-file plugin (or a .wasm and its .toml) in place does not
        # touch the directory's mtime.
        with os.scandir(plugin_dir) as it:
            files = sorted(
                (e.name, e.stat().st_mtime_ns, e.stat().st_size)
                for e in it
                if e.name.endswith((".py", ".wasm", ".toml"))
            )
        parts.append(tuple(files))
    except OSError as exc:
        parts.append(exc.errno)
    return tuple(parts)


def _bundle_fingerprint(paths: Paths, bundle: tuple[str, str, bool]) -> tuple[object, ...]:
    """The fingerprint of a bundle's index (``conduit bundle``): the bundle's content
    hash stands for every ``sys.path`` directory (its plugins never change), so that the
    index frozen at bundle time is current until the user's config or single-file
    plugins change (a sealed bundle reads neither: its fingerprint is the bundle's id
    alone). A missing plugin directory is not created and counts as an empty one."""
    parts: list[object] = [INDEX_FORMAT, __version__, "bundle", bundle[1], bundle[2]]
    if bundle[2]:
        return tuple(parts)  # sealed: nothing outside the bundle counts, nothing to stat
    parts.append(("config", file_stamp(paths.config_file)))
    try:
        with os.scandir(paths.plugin_dir) as it:
            files = sorted(
                (e.name, e.stat().st_mtime_ns, e.stat().st_size)
                for e in it
                if e.name.endswith((".py", ".wasm", ".toml"))
                or e.name.startswith("conduit-")  # executables in the plugin directory
            )
    except OSError:
        files = []
    parts.append(tuple(files))
    return tuple(parts)


class Records(dict[str, "Any"]):
    """Plugin records, read and decoded only when asked for.

    The records live in a file of their own beside the index (``.records``): reading the
    index for ``conduit --help`` or routing never touches them. The file is a table of
    per-record marshal blobs, read on first use; each record is decoded when it is first
    looked up, so a command decodes only its own plugin's. A records file that cannot be
    read is rebuilt through ``recover``. Behaves as a ``dict[str, PluginRec]`` for every
    method Conduit uses; a value is a ``PluginRec`` or, until it is looked up, its blob.
    """

    __slots__ = ("_path", "_recover")

    def __init__(self, path: str, recover: Callable[[], dict[str, object]]) -> None:
        super().__init__()
        self._path: str | None = path
        self._recover = recover

    @classmethod
    def of(cls, table: dict[str, bytes]) -> Records:
        """Records of an encoded table already in memory (a patched index)."""
        records = cls("", lambda: {})
        records._path = None
        dict.update(records, table)
        return records

    def _fill(self) -> None:
        if self._path is None:
            return
        path, self._path = self._path, None
        try:
            with open(path, "rb") as f:
                data = f.read()
            if not data.startswith(MAGIC):
                raise ValueError("bad magic")
            table = marshal.loads(data[len(MAGIC) :])
            if type(table) is not dict:
                raise ValueError("not a table")
        except (OSError, EOFError, ValueError, TypeError):
            table = self._recover()
        dict.update(self, table)

    def __getitem__(self, name: str) -> PluginRec:
        self._fill()
        value = dict.__getitem__(self, name)
        if type(value) is bytes:
            try:
                value = marshal.loads(value)
            except (EOFError, ValueError, TypeError):
                value = self._recover()[name]
            dict.__setitem__(self, name, value)
        record: PluginRec = value  # decoded now
        return record

    def __contains__(self, name: object) -> bool:
        self._fill()
        return dict.__contains__(self, name)

    def __iter__(self) -> Iterator[str]:
        self._fill()
        return dict.__iter__(self)

    def __len__(self) -> int:
        self._fill()
        return dict.__len__(self)

    def keys(self) -> dict_keys[str, Any]:
        self._fill()
        return dict.keys(self)

    def get(self, name: str, default: Any = None, /) -> Any:
        return self[name] if name in self else default  # noqa: SIM401 (self.get recurses)

    def values(self) -> dict_values[str, Any]:
        for name in self:
            self[name]  # decodes it in place
        return dict.values(self)

    def items(self) -> dict_items[str, Any]:
        for name in self:
            self[name]  # decodes it in place
        return dict.items(self)


def encode(index: Index, encoded: dict[str, bytes] | None = None) -> tuple[bytes, bytes]:
    """The on-disk form of an index: the index file and its records file. ``encoded``:
    records already marshalled (by name), as the builder's cache holds them."""
    encoded = encoded or {}
    table = {
        n: encoded[n] if n in encoded else marshal.dumps(r)  # type: ignore[arg-type]
        for n, r in index["plugins"].items()
    }
    records = MAGIC + marshal.dumps(table)
    header = dict(index)
    header["plugins"] = len(records)  # the size a matching records file must have
    return MAGIC + marshal.dumps(header), records


def records_path(path: str) -> str:
    return path[: -len(".bin")] + ".records"


def empty_events() -> Events:
    """An activation-event table with no events."""
    return {"startup": [], "env": [], "file": [], "command": {}, "event": {}, "service": {}}


def index_path(paths: Paths) -> str:
    """One index per interpreter environment, so two venvs sharing a cache never fight;
    a bundle's is in its extracted directory (one per bundle and user)."""
    if paths.bundle is not None:
        return os.path.join(paths.bundle[0], "index", "index.bin")
    return os.path.join(paths.cache_dir, f"index-{stable_hash(sys.prefix)}.bin")


def read(
    path: str, fp: tuple[object, ...], recover: Callable[[], dict[str, object]] | None = None
) -> Index | None:
    """The cached index if it is intact and current, else None."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if not data.startswith(MAGIC):
        return None
    try:
        index = marshal.loads(data[len(MAGIC) :])
    except (EOFError, ValueError, TypeError):
        return None
    if (
        type(index) is not dict
        or index.get("format") != INDEX_FORMAT
        or index.get("fingerprint") != fp
    ):
        return None
    records = records_path(path)
    found = file_stamp(records)
    if found is None or found[1] != index.get("plugins"):
        return None  # the records file is missing or not the one written with this index
    index["plugins"] = Records(records, recover or (lambda: {}))
    return index  # type: ignore[return-value]


def load(
    paths: Paths,
    profile: Profile,
    *,
    rebuild: Callable[..., Index],
    force_rebuild: bool = False,
    render_help: Callable[[Index], str] | None = None,
) -> Index:
    """Return the current index, calling ``rebuild`` when it is missing, stale or corrupt.

    ``rebuild(paths, path, fingerprint, *, force, render_help)`` is
    :func:`conduit.indexer.build.rebuild`, injected so that this reader never imports the
    builder (the CLI passes a function that imports it only on a miss).

    ``render_help`` lets the CLI layer store its rendered ``--help`` in the index when it
    is rebuilt (the index layer knows nothing of help text). Callers other than the CLI
    use :func:`conduit.indexer.build.load`, which passes the builder.
    """
    with profile.span("index:fingerprint"):
        fp = fingerprint(paths)
    path = index_path(paths)

    def rebuild_now(force: bool = force_rebuild) -> Index:
        return rebuild(paths, path, fp, force=force, render_help=render_help)

    if not force_rebuild:
        with profile.span("index:read"):
            index = read(path, fp, lambda: dict(rebuild_now(True)["plugins"]))
        if index is not None:
            return index
    with profile.span("index:rebuild"):
        return rebuild_now()
