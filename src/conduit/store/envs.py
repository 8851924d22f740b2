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

The installer runs outside any sandbox, with the user's rights, so (docs/permissions.md
#dependencies): the user's consent to the plugin's very dependency list must be in the
config (``[dependencies.consented]``, written by the kernel's grant prompt), and only
wheels are installed and URL or path requirements refused, unless ``[dependencies]
allow-build`` names the plugin. A wheel is unpacked, never run: no code of a dependency
runs before the plugin imports it, in its host.
"""

from __future__ import annotations

import os
import sys

from conduit.errors import ConduitError, NotConsented, PluginLoadError

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


def _install(rec: PluginRec, deps: list[str], target: str, *, consented: bool) -> None:
    import shutil

    from conduit.config import read_settings
    from conduit.fs import locked
    from conduit.paths import resolve
    from conduit.security.grants import has_consent, refuse_direct_references
    from conduit.store._env import conduit_closure, constraints_text, snapshot
    from conduit.store._tools import Sources, choose_tool
    from conduit.text import inert

    name = rec["name"]
    config = read_settings(resolve().config_file)
    if not consented and not has_consent(dict(config.dependencies.consented), rec):
        raise NotConsented(name, [], [inert(d) for d in deps])
    builds = name in config.dependencies.allow_build
    refuse_direct_references(name, deps, builds)
    settings = config.store
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
                build=None if builds else (),  # () : wheels only
                what=f"dependencies of plugin '{name}'",
            )
            os.replace(tmp, target)  # complete, or not there at all
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def add_dependencies(rec: PluginRec) -> str:
    """Make ``rec``'s inline dependencies importable, installing them on first use.

    For the in-process loader: in the kernel, :func:`conduit.security.grants.ensure_granted`
    has checked the user's consent before the plugin is activated; the author tools load a
    file the author named; in a plugin host process, the kernel installed them first."""
    target = ensure_installed(rec, consented=True)
    if target not in sys.path:
        sys.path.append(target)
    return target


def ensure_installed(
    rec: PluginRec, *, cache_dir: str | None = None, consented: bool = False
) -> str:
    """Install ``rec``'s inline dependencies unless they are cached; return their directory.

    The process host calls this before it prepares a host's sandbox, which may only read
    it, with the kernel's ``cache_dir``, for every plugin the host will run (a shared
    host runs some that are not activated yet). Without one: the cache the kernel names
    to its plugin host processes, else Conduit's. Installing needs the consent recorded
    in the config (:class:`~conduit.errors.NotConsented` otherwise) unless the caller
    says it is ``consented``; the rules on builds and URLs hold in any case.
    """
    deps = sorted(set(rec["dependencies"]))
    if cache_dir is None:
        from conduit.paths import resolve

        # in a plugin host process, the kernel says where its cache is (hosts/process.py)
        cache_dir = os.environ.get("CONDUIT_HOST_CACHE_DIR") or resolve().cache_dir
    target = env_dir(cache_dir, deps)
    if not os.path.isdir(target):
        try:
            _install(rec, deps, target, consented=consented)
        except PluginLoadError:
            raise
        except ConduitError as exc:
            from conduit.store._tools import BUILD_REFUSED
            from conduit.text import inert

            hint = "check the plugin's dependencies, and [store] index-url in the config"
            if any(m in exc.message.lower() for m in BUILD_REFUSED):
                hint = (
                    "only wheels are installed for a plugin's dependencies; to let them "
                    f"build from source: conduit plugins grant {rec['name']} --dependencies "
                    "--allow-build (their build code runs with your rights)"
                )
            raise PluginLoadError(
                rec["name"],
                f"cannot install its dependencies ({inert(', '.join(deps))}): {exc.message}",
                hint=hint,
            ) from None
    return target
