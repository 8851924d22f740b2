"""The kernel's hooks: what a plugin can implement with ``ctx.register_hook(NAME, fn)``.

An implementation may accept any subset of a hook's arguments, by name. Arguments and
results are plain data (str, int, list, dict), so that a plugin in another process can
implement them too. A failing implementation never stops the command or the other
implementations: the kernel reports it as a warning naming the plugin and the hook.

A plugin that implements a hook is activated for it when its manifest lists
``event:NAME`` in ``activation``; otherwise only if it is already active.
"""

from __future__ import annotations

from typing import Any

import pluggy

__all__ = ["after_command", "before_command", "config_loaded", "on_command_error"]

hookspec = pluggy.HookspecMarker("conduit")


@hookspec
def config_loaded(config: dict[str, Any]) -> None:
    """The configuration was read, before any command runs.

    ``config`` is the validated config file as plain data (``plugins``, ``pins`` and the
    per-plugin ``plugin`` tables).
    """


@hookspec
def before_command(command: str, argv: list[str]) -> None:
    """A command is about to run: ``command`` is its name, ``argv`` its arguments."""


@hookspec
def after_command(command: str, argv: list[str], exit_code: int) -> None:
    """A command finished with ``exit_code`` (also called after a failure)."""


@hookspec
def on_command_error(command: str, argv: list[str], error: str) -> None:
    """A command failed; ``error`` is the one-line message the user sees."""
