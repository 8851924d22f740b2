"""Private environments for the inline dependencies of single-file plugins.

A single-file plugin may declare ``dependencies`` (in its ``# /// conduit`` block, or a
PEP 723 ``# /// script`` block). They are not installed into Conduit's environment: the
first time such a plugin is activated, they are installed with uv or pip (``--target``)
into ``<cache>/envs/KEY/``, where ``KEY`` is a hash of the sorted dependency set and the
interpreter, and that directory is appended to ``sys.path`` before the file is imported.
Plugins with the same dependency set share the directory; a later activation only checks
that it exists (no import beyond the standard library), the way ``uv run`` caches the
environment of a script.

Conduit's own requirements are pinned at their installed versions while installing
(the same constraints file as ``plugins install``), and the directory comes after
Conduit's environment on ``sys.path``, so Conduit's own packages always win.
"""

from __future__ import annotations

import os
import sys

from conduit.errors import ConduitError, PluginLoadError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from conduit.indexer.records import PluginRec

__all__ = ["add_dependencies", "ensure_installed", "env_dir"]


def env_dir(cache_dir: str, dependencies: list[str]) -> str:
    """Where the environment for ``dependencies`` lives (it may not exist yet)."""
    import hashlib

    deps = sorted({d.strip() for d in dependencies if d.strip()})
    key = "\n".join([sys.implementation.cache_tag or "", sys.platform, *deps])
    return os.path.join(cache_dir, "envs", hashlib.sha256(key.encode()).hexdigest()[:20])


def _install(name: str, deps: list[str], target: str) -> None:
    import shutil

    from conduit.config import read_settings
    from conduit.fs import locked
    from conduit.paths import resolve
    from conduit.store._env import conduit_closure, constraints_text, snapshot
    from conduit.store._tools import Sources, choose_tool

    settings = read_settings(resolve().config_file).store
    sources = Sources(
        settings.index_url, tuple(settings.extra_index_url), tuple(settings.find_links)
    )
    with locked(target):
        if os.path.isdir(target):
            return  # another process installed it meanwhile
        tmp = f"{target}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        snap = snapshot()
        tool = choose_tool(settings.installer, sources, verbose=False)
        try:
            tool.install(
                deps,
                constraints=constraints_text(snap, conduit_closure(snap)),
                target=tmp,
                what=f"dependencies of plugin '{name}'",
            )
            os.replace(tmp, target)  # complete, or not there at all
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def add_dependencies(rec: PluginRec) -> str:
    """Make ``rec``'s inline dependencies importable, installing them on first use."""
    target = ensure_installed(rec)
    if target not in sys.path:
        sys.path.append(target)
    return target


def ensure_installed(rec: PluginRec, *, cache_dir: str | None = None) -> str:
    """Install ``rec``'s inline dependencies unless they are cached; return their directory.

    The process host calls this before it prepares a host's sandbox, which may only read
    it, with the kernel's ``cache_dir``. Without one: the cache the kernel names to its
    plugin host processes, else Conduit's.
    """
    deps = sorted(set(rec["dependencies"]))
    if cache_dir is None:
        from conduit.paths import resolve

        # in a plugin host process, the kernel says where its cache is (hosts/process.py)
        cache_dir = os.environ.get("CONDUIT_HOST_CACHE_DIR") or resolve().cache_dir
    target = env_dir(cache_dir, deps)
    if not os.path.isdir(target):
        try:
            _install(rec["name"], deps, target)
        except ConduitError as exc:
            raise PluginLoadError(
                rec["name"],
                f"cannot install its dependencies ({', '.join(deps)}): {exc.message}",
                hint="check the plugin's dependencies, and [store] index-url in the config",
            ) from None
    return target
