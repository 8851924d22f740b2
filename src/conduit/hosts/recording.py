"""What a plugin's ``boot()`` registers, recorded: the context shared by the author tools
and the process host's child, and the one rule for a command's registered name.

Three classes implement :class:`conduit.sdk.PluginContext`: the kernel's
:class:`~conduit.kernel.core.Context` (registrations go into the kernel's registry),
:class:`RecordingContext` here (registrations are kept in plain attributes, for
``conduit plugins manifest``/``check`` and :mod:`conduit.authoring`), and the host
child's :class:`~conduit.hosts._child.ChildContext`, a :class:`RecordingContext` whose
``hook()`` and ``service()`` reach the kernel over RPC. All three name commands with
:func:`conduit.hosts.command_key` and raise :class:`~conduit.errors.PluginError` for the same
mistakes, so that a plugin behaves the same in every host.

The process host's child imports this module before its plugin: standard library only,
and no ``typing`` at run time (the ``TYPE_CHECKING = False`` idiom).
"""

from __future__ import annotations

import os

from conduit.errors import PluginLoadError
from conduit.hosts import command_key, registered_twice

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    import click

    T = TypeVar("T")

__all__ = ["RecordingContext"]


class RecordingContext:
    """A :class:`conduit.sdk.PluginContext` that records what ``boot()`` registers.

    ``hook()`` answers ``[]`` and ``service()`` raises: nothing else runs beside the
    plugin here. The host child's context overrides both.
    """

    def __init__(self, name: str, data_dir: str, config: dict[str, Any] | None = None) -> None:
        self._name = name
        self._data_dir = data_dir
        self._config = dict(config or {})
        #: the commands, by full name (:func:`command_key`), in registration order
        self.registered: dict[str, click.Command] = {}
        #: the service factories, by service name
        self.services: dict[str, Callable[[], Any]] = {}
        #: (hook name, implementation), in registration order
        self.hooks: list[tuple[str, Callable[..., Any]]] = []
        #: (spec, firstresult), in registration order
        self.hookspecs: list[tuple[Callable[..., Any], bool]] = []
        #: what ``on_dispose()`` was given, in registration order
        self.disposers: list[Callable[[], object]] = []

    @property
    def name(self) -> str:
        return self._name

    @property
    def data_dir(self) -> str:
        os.makedirs(self._data_dir, exist_ok=True)
        return self._data_dir

    @property
    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def register_command(self, command: click.Command, name: str | None = None) -> None:
        key = command_key(self._name, command, name)
        if key in self.registered:
            raise registered_twice(self._name, key)
        self.registered[key] = command

    def register_service(self, name: str, factory: Callable[[], Any]) -> None:
        self.services[name] = factory

    def register_hook(self, hook: str, implementation: Callable[..., Any]) -> None:
        self.hooks.append((hook, implementation))

    def register_hookspec(self, spec: Callable[..., Any], *, firstresult: bool = False) -> None:
        self.hookspecs.append((spec, firstresult))

    def on_dispose(self, dispose: Callable[[], object]) -> None:
        self.disposers.append(dispose)

    def dispose(self) -> list[str]:
        """Call the disposers, newest first, each even when an earlier one raised;
        return one line per failure."""
        failures = []
        while self.disposers:
            dispose = self.disposers.pop()
            try:
                dispose()
            except Exception as exc:
                what = getattr(dispose, "__qualname__", "dispose")
                failures.append(f"disposer {what} failed: {type(exc).__name__}: {exc}")
        return failures

    def hook(self, name: str, **kwargs: Any) -> list[Any]:
        return []

    def service(self, name: str, kind: type[T] | None = None) -> T:
        raise PluginLoadError(
            self._name,
            f"asked for service '{name}' in boot(); only commands are collected here",
            hint="ask for services when a command runs, not in boot()",
        )

    def commands(self) -> dict[str, click.Command]:
        """The registered commands, by full name."""
        return dict(self.registered)
