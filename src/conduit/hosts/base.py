"""The Host protocol every plugin host implements, and the narrow port a host sees.

One small protocol with several implementations: the in-process host
(:mod:`conduit.hosts.inprocess`), the process host (:mod:`conduit.hosts.process`), the
WebAssembly host (:mod:`conduit.hosts.wasm`), pass-through executables
(:mod:`conduit.hosts.executable`), and :class:`~conduit.hosts.fake.FakeHost` for tests.
The kernel picks a host per plugin from its manifest's ``isolation`` and the user's
policy, then only ever talks to the protocol.

A host never sees the :class:`~conduit.kernel.Kernel` (as an httpx transport never sees
the ``Client``): it gets a :class:`KernelPort`, the few things it may ask of the kernel
that runs it, and per plugin a :class:`HostContext`, the SDK's context plus what the host
reads back. The kernel, its per-plugin context, the host child's context and the author
tools' recording context all satisfy these structurally.

This module imports ``typing`` at run time: import it under ``TYPE_CHECKING`` only (the
process host's child must not import typing before its plugin).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import click

    from conduit.indexer.records import Index, PluginRec
    from conduit.paths import Paths
    from conduit.sdk import PluginContext
    from conduit.timing import Profile

__all__ = ["Host", "HostContext", "KernelPort"]


class KernelPort(Protocol):
    """What a host may ask of the kernel that runs it."""

    #: the plain-data index (read only)
    index: Index
    paths: Paths
    profile: Profile

    def service(self, name: str, *, for_plugin: str | None = None) -> Any:
        """The instance of service ``name``, activating its provider if needed;
        ``for_plugin`` names the plugin that asks (``conduit.*`` names are for built-ins)."""

    def hook(self, name: str, *, raise_errors: bool = False, **kwargs: Any) -> list[Any]:
        """Call hook ``name`` on every implementation and return their results."""


if TYPE_CHECKING:  # conduit.sdk's PluginContext is a typing.Protocol only to type checkers

    class HostContext(PluginContext, Protocol):
        """A plugin's SDK context plus what its host reads back from it."""

        def commands(self) -> dict[str, click.Command]:
            """The plugin's registered commands, by full name."""


class Host(Protocol):
    """Loads, runs and unloads plugins of one isolation kind."""

    kind: str

    def activate(self, record: PluginRec, ctx: HostContext, profile: Profile) -> None:
        """Import/start the plugin and call its ``boot`` with ``ctx``.

        Raises :class:`~conduit.errors.PluginLoadError` if that fails.
        """

    def run_command(self, record: PluginRec, ctx: HostContext, argv: list[str], prog: str) -> int:
        """Run the command ``argv[0]`` (with its arguments) and return its exit code."""

    def deactivate(self, record: PluginRec, ctx: HostContext) -> None:
        """Call the plugin's ``shutdown`` and forget it."""

    # Optional: ``metrics(record, ctx) -> dict[str, float] | None``, the plugin's own
    # ``metrics()`` (conduit.hosts.clean_metrics), asked for before ``deactivate`` by the
    # kernel for the run journal; a host without it reports none.
    # Optional: ``prepare_command() -> None``, called by ``Kernel.run`` before the plugin
    # whose command runs is activated (and before anything that event activates), to load
    # what running a command needs outside any plugin's attribution (the in-process host:
    # Click, ahead of the guard's audit hook).
