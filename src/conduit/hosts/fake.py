"""A host for tests: plugins are plain Python callables, nothing is imported.

    host = FakeHost({"demo": {"hello": lambda argv: 0}})
    kernel = Kernel(index, paths, hosts={"in-process": host})

Every call is recorded in ``host.calls`` so a test can assert what the kernel did.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from conduit.errors import PluginLoadError

if TYPE_CHECKING:
    from conduit.hosts.base import HostContext
    from conduit.indexer.records import PluginRec
    from conduit.timing import Profile

__all__ = ["FakeHost"]


class FakeHost:
    """Implements :class:`conduit.hosts.Host` with callables ``argv -> exit code``."""

    kind = "fake"

    def __init__(
        self,
        plugins: dict[str, dict[str, Callable[[list[str]], int]]],
        *,
        fail_activation: set[str] | None = None,
    ) -> None:
        self.plugins = plugins
        self.fail_activation = fail_activation or set()
        self.calls: list[tuple[str, str, tuple[str, ...]]] = []

    def activate(self, record: PluginRec, ctx: HostContext, profile: Profile) -> None:
        name = record["name"]
        self.calls.append(("activate", name, ()))
        if name in self.fail_activation:
            raise PluginLoadError(name, "failed to boot: fake failure")

    def run_command(self, record: PluginRec, ctx: HostContext, argv: list[str], prog: str) -> int:
        name = record["name"]
        self.calls.append(("run", name, tuple(argv)))
        return self.plugins[name][argv[0]](argv[1:])

    def deactivate(self, record: PluginRec, ctx: HostContext) -> None:
        self.calls.append(("deactivate", record["name"], ()))
