"""What active plugins have registered, and the hooks the kernel calls itself.

Imported by :mod:`conduit.kernel.core` (which fills the registry), :mod:`conduit.kernel.hooks`
(which mirrors its hooks into pluggy) and :mod:`conduit.kernel.hookspecs`, so that each
of these has one definition.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import click

__all__ = ["KERNEL_HOOKS", "Registry"]

#: the hooks the kernel calls itself (their specs live in conduit.kernel.hookspecs)
KERNEL_HOOKS = ("after_command", "before_command", "config_loaded", "on_command_error")


class Registry:
    """Everything active plugins have registered, each entry tagged with its owner."""

    def __init__(self) -> None:
        self.commands: dict[tuple[str, str], click.Command] = {}
        self.services: dict[str, tuple[str, Callable[[], Any]]] = {}
        self.service_instances: dict[str, Any] = {}
        self.hooks: dict[str, list[tuple[str, Callable[..., Any]]]] = {}
        self.hookspecs: dict[str, tuple[str, Callable[..., Any], bool]] = {}
        #: bumped on every hook or hookspec change, so the pluggy manager is rebuilt
        self.generation = 0

    def owned_by(self, plugin: str) -> list[str]:
        """Describe every registration ``plugin`` still holds (empty when it holds none)."""
        held = [f"command {name}" for (owner, name) in self.commands if owner == plugin]
        held += [f"service {n}" for n, (owner, _) in self.services.items() if owner == plugin]
        held += [
            f"hook {h}" for h, impls in self.hooks.items() for owner, _ in impls if owner == plugin
        ]
        held += [f"hookspec {h}" for h, (owner, _, _) in self.hookspecs.items() if owner == plugin]
        return held
