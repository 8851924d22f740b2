"""``conduit plugins cache prune``: empty the compiled-artifact cache of what no installed
WebAssembly plugin uses (docs/wasm.md, "The artifact cache").

``CACHE/wasm/`` is bounded by ``[wasm] cache-mb`` on every store (least recently used
first, :func:`conduit.hosts.wasm.runtime.prune`); this command removes what is stale now:
artifacts of modules that are no longer installed or of another engine configuration
(another wasmtime, other limits), modules ``plugins build`` kept that are not the
installed ones, the hash memos of files that changed, and leftovers of interrupted
writes. ``--all`` removes every file.
"""

from __future__ import annotations

import os

import click

__all__ = ["cache_cmd"]


def _size(nbytes: int) -> str:
    if nbytes >= 1 << 20:
        return f"{nbytes / (1 << 20):.1f} MB"
    if nbytes >= 1 << 10:
        return f"{nbytes / (1 << 10):.1f} KB"
    return f"{nbytes} B"


def _in_use(directory: str) -> set[str]:
    """The file names in ``directory`` that installed WebAssembly plugins use now: the
    artifact and meta of each, under the configured engine, and the hash memos."""
    from conduit.hosts.wasm.runtime import (
        ArtifactCache,
        WasmSettings,
        engine_description,
        import_wasmtime,
    )
    from conduit.indexer.build import load
    from conduit.paths import resolve
    from conduit.timing import Profile

    index = load(resolve(), Profile(False))
    settings = WasmSettings.from_table(index["config"].get("wasm"))
    try:
        import_wasmtime()
    except ImportError:  # no wasmtime: no artifact can be loaded
        return set()
    cache = ArtifactCache(directory, engine_description(settings))
    keep: set[str] = set()
    installed: set[str] = set()
    for rec in index["plugins"].values():
        if rec["source"] != "wasm" or not rec["entry"]:
            continue
        try:
            digest, _, _ = cache.identify(rec["entry"])
            keep.add(os.path.basename(cache.memo_path(rec["entry"])))
        except OSError:
            continue
        installed.add(digest)
        artifact = os.path.basename(cache.path_for(digest))
        keep.update((artifact, artifact[: -len(".cwasm")] + ".meta"))
    # a module `plugins build` keeps stays while it is the one installed
    try:
        built = [e.path for e in os.scandir(directory) if e.name.startswith("build-")]
    except OSError:
        built = []
    for path in built:
        try:
            digest, _, _ = cache.identify(path)
            if digest in installed:
                keep.update((os.path.basename(path), os.path.basename(cache.memo_path(path))))
        except OSError:
            continue
    return keep


@click.group("cache")
def cache_cmd() -> None:
    """Manage the compiled WebAssembly artifact cache."""


@cache_cmd.command("prune")
@click.option("--all", "everything", is_flag=True, help="Remove every file in the cache.")
def prune_cmd(everything: bool) -> None:
    """Remove compiled artifacts no installed WebAssembly plugin uses (--all: every one)."""
    from conduit.paths import resolve

    directory = os.path.join(resolve().cache_dir, "wasm")
    keep = set() if everything else _in_use(directory)
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except FileNotFoundError:
        entries = []
    freed = count = 0
    for entry in entries:
        if entry.name in keep or entry.name.removesuffix(".lock") in keep:
            continue
        if not entry.is_file(follow_symlinks=False):
            continue
        try:
            nbytes = entry.stat(follow_symlinks=False).st_size
            os.unlink(entry.path)
        except FileNotFoundError:
            continue
        freed += nbytes
        count += 1
        if entry.name.endswith(".cwasm") or entry.name.startswith("build-"):
            click.echo(f"removed {entry.path} ({_size(nbytes)})")
    kept = 0
    for entry in os.scandir(directory) if os.path.isdir(directory) else ():
        if entry.is_file(follow_symlinks=False):
            kept += entry.stat(follow_symlinks=False).st_size
    click.echo(
        f"freed {_size(freed)} ({count} file{'s' if count != 1 else ''}); "
        f"the cache holds {_size(kept)} in {directory}"
    )
