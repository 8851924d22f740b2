"""Pass-through executables: ``conduit-NAME`` without Conduit's protocol.

Like gh, kubectl or docker CLI plugins: ``conduit NAME ARGS...`` runs the executable
with ``ARGS``, with the terminal's stdin, stdout and stderr, and its exit status becomes
Conduit's. There is nothing to activate and nothing it can register.
"""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

from conduit.errors import HostError

if TYPE_CHECKING:
    from conduit.hosts.base import HostContext
    from conduit.indexer.records import PluginRec
    from conduit.timing import Profile

__all__ = ["ExecHost"]


class ExecHost:
    """Runs an executable plugin as a plain command."""

    kind = "exec"

    def activate(self, record: PluginRec, ctx: HostContext, profile: Profile) -> None:
        pass

    def run_command(self, record: PluginRec, ctx: HostContext, argv: list[str], prog: str) -> int:
        try:
            return subprocess.call([record["origin"], *argv[1:]])
        except OSError as exc:
            raise HostError(
                record["name"],
                f"cannot run {record['origin']}: {exc.strerror}",
                hint="reinstall it, or remove it from PATH and the plugin directory",
            ) from None

    def deactivate(self, record: PluginRec, ctx: HostContext) -> None:
        pass
