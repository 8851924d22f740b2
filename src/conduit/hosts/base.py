"""The Host protocol every plugin host implements.

One small protocol with several implementations: the in-process host
(:mod:`conduit.hosts.inprocess`), the process host (:mod:`conduit.hosts.process`), the
WebAssembly host (:mod:`conduit.hosts.wasm`), pass-through executables
(:mod:`conduit.hosts.executable`), and :class:`~conduit.hosts.fake.FakeHost` for tests.
The kernel picks a host per plugin from its manifest's ``isolation`` and the user's
policy, then only ever talks to the protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from conduit.indexer.records import PluginRec
    from conduit.kernel.core import Context
    from conduit.timing import Profile

__all__ = ["Host"]


class Host(Protocol):
    """Loads, runs and unloads plugins of one isolation kind."""

    kind: str

    def activate(self, record: PluginRec, ctx: Context, profile: Profile) -> None:
        """Import/start the plugin and call its ``boot`` with ``ctx``.

        Raises :class:`~conduit.errors.PluginLoadError` if that fails.
        """

    def run_command(self, record: PluginRec, ctx: Context, argv: list[str], prog: str) -> int:
        """Run the command ``argv[0]`` (with its arguments) and return its exit code."""

    def deactivate(self, record: PluginRec, ctx: Context) -> None:
        """Call the plugin's ``shutdown`` and forget it."""
