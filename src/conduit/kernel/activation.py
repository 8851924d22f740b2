"""Activation events, evaluated from the index without importing any plugin.

==================  =============================================================
event               fires when
==================  =============================================================
``command:NAME``    the command NAME runs (implied for a plugin's own commands;
                    explicit to react to another plugin's command)
``startup``         any command runs (eager; ``plugins doctor`` shows its cost)
``env:VAR``         VAR is set to a non-empty value when a command runs
``env:VAR=VALUE``   VAR equals VALUE (the seed's ``env:production`` is written
                    ``env:CONDUIT_ENV=production``)
``file:GLOB``       the workspace contains a match: GLOB is tried in the current
                    directory and each parent up to the repository root
``event:HOOK``      the hook HOOK is called
``service:NAME``    the service NAME is asked for (implied for its provider)
==================  =============================================================

The index groups events by kind, so evaluation touches only the plugins that declared
an event of that kind, never every installed plugin.
"""

from __future__ import annotations

import os

from conduit.paths import workspace_dirs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from conduit.indexer.records import Index

__all__ = ["fires_now", "triggered"]

_GLOB_CHARS = frozenset("*?[")


def _file_matches(pattern: str, dirs: list[str]) -> str | None:
    if not _GLOB_CHARS.intersection(pattern):
        for d in dirs:
            path = os.path.join(d, pattern)
            if os.path.exists(path):
                return path
        return None
    import glob  # only when a plugin declared a wildcard pattern

    for d in dirs:
        for match in glob.iglob(pattern, root_dir=d, recursive=True):
            return os.path.join(d, match)
    return None


def _env_matches(current: str | None, value: str | None) -> bool:
    return current == value if value is not None else bool(current)


def fires_now(event: str, *, environ: Mapping[str, str], cwd: str) -> bool | None:
    """Whether a ``startup``, ``env:`` or ``file:`` event fires for a command run here and
    now; None for the kinds that fire on something else (a command, a hook, a service)."""
    kind, _, arg = event.partition(":")
    if kind == "startup":
        return True
    if kind == "env":
        var, eq, value = arg.partition("=")
        return _env_matches(environ.get(var), value if eq else None)
    if kind == "file":
        return _file_matches(arg, workspace_dirs(cwd)) is not None
    return None


def triggered(
    index: Index,
    *,
    command: list[str],
    environ: Mapping[str, str],
    cwd: str,
    usable: frozenset[str] | set[str] | None = None,
) -> list[tuple[str, str]]:
    """Plugins whose events fire for running ``command`` (its words), with the event.

    Covers ``startup``, ``env:``, ``file:`` and ``command:``; ``event:`` and
    ``service:`` fire later, when the kernel calls a hook or looks up a service. A plugin
    appears once, with the first event that fired, in a deterministic order.
    """
    events = index["events"]
    fired: dict[str, str] = {}

    def fire(plugin: str, event: str) -> None:
        if plugin not in fired and (usable is None or plugin in usable):
            fired[plugin] = event

    for plugin in events["startup"]:
        fire(plugin, "startup")
    for plugin, var, value in events["env"]:
        if _env_matches(environ.get(var), value):
            fire(plugin, f"env:{var}" + (f"={value}" if value is not None else ""))
    for i in range(1, len(command) + 1):
        name = " ".join(command[:i])
        for plugin in events["command"].get(name, ()):
            fire(plugin, f"command:{name}")
    if events["file"]:
        dirs = workspace_dirs(cwd)
        cache: dict[str, str | None] = {}
        for plugin, pattern in events["file"]:
            if plugin in fired or (usable is not None and plugin not in usable):
                continue
            if pattern not in cache:
                cache[pattern] = _file_matches(pattern, dirs)
            if cache[pattern] is not None:
                fire(plugin, f"file:{pattern}")
    return list(fired.items())
