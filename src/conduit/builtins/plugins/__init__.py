"""``conduit plugins ...``: list, inspect, enable, disable and diagnose plugins.

The face holds the plugin and its group only; every subcommand lives in a module of
its own, imported when it runs (``LAZY_COMMANDS``): ``_inspect`` (list, info, enable,
disable, doctor, graph), ``_stats``, ``_permissions``, ``_store``, ``_author``, ``_wasm``
and ``_cache``, with what they share in ``_common``. The commands reach the kernel through its
``conduit.admin`` service (:mod:`conduit.kernel.admin`), asked for through this
plugin's context (``_common.admin()``).
"""

from __future__ import annotations

import click

from conduit.sdk import Plugin, PluginContext

__all__ = ["PluginsPlugin", "build_wasm"]

#: every subcommand lives in its own module, imported only when that subcommand runs
#: (or when the whole group's ``--help`` is rendered); ``name -> "module:attribute"``
LAZY_COMMANDS: dict[str, str] = {
    "list": "conduit.builtins.plugins._inspect:list_cmd",
    "info": "conduit.builtins.plugins._inspect:info_cmd",
    "enable": "conduit.builtins.plugins._inspect:enable_cmd",
    "disable": "conduit.builtins.plugins._inspect:disable_cmd",
    "doctor": "conduit.builtins.plugins._inspect:doctor_cmd",
    "graph": "conduit.builtins.plugins._inspect:graph_cmd",
    "stats": "conduit.builtins.plugins._stats:stats_cmd",
    "permissions": "conduit.builtins.plugins._permissions:permissions_cmd",
    "grant": "conduit.builtins.plugins._permissions:grant_cmd",
    "revoke": "conduit.builtins.plugins._permissions:revoke_cmd",
    "new": "conduit.builtins.plugins._author:new_cmd",
    "manifest": "conduit.builtins.plugins._author:manifest_cmd",
    "check": "conduit.builtins.plugins._author:check_cmd",
    "install": "conduit.builtins.plugins._store:install_cmd",
    "uninstall": "conduit.builtins.plugins._store:uninstall_cmd",
    "update": "conduit.builtins.plugins._store:update_cmd",
    "outdated": "conduit.builtins.plugins._store:outdated_cmd",
    "lock": "conduit.builtins.plugins._store:lock_cmd",
    "sync": "conduit.builtins.plugins._store:sync_cmd",
    "search": "conduit.builtins.plugins._store:search_cmd",
    "build": "conduit.builtins.plugins._wasm:build_cmd",
    "cache": "conduit.builtins.plugins._cache:cache_cmd",
    "bisect": "conduit.builtins.plugins._bisect:bisect_cmd",
    "health": "conduit.builtins.plugins._health:health_cmd",
}


def build_wasm(source: str, output: str) -> tuple[str, str]:
    """``conduit plugins build SOURCE -o OUTPUT`` without precompiling (for ``conduit
    dev``): the same build, cached by its inputs; returns the paths of NAME.wasm and
    NAME.toml."""
    from conduit.builtins.plugins._wasm import build_plugin

    return build_plugin(source, output)


class _LazyGroup(click.Group):
    """A group whose subcommands (list, install, grant, new, ...) are imported on use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS and cmd_name not in self.commands:
            import importlib

            module, _, attr = LAZY_COMMANDS[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attr)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


class PluginsPlugin(Plugin):
    """The built-in plugin manager."""

    def boot(self, ctx: PluginContext) -> None:
        ctx.register_command(
            _LazyGroup("plugins", help="List, inspect, enable, disable and diagnose plugins.")
        )
