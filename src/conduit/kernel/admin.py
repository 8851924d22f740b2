"""The ``conduit.admin`` service: what Conduit's built-in plugins may see of the kernel.

Datasette hands its default plugins a public host object; this is Conduit's. Each
:class:`~conduit.kernel.core.Kernel` registers one :class:`Admin` over itself under the
name :data:`~conduit.kernel.core.ADMIN_SERVICE` (owner :data:`~conduit.kernel.core.KERNEL_OWNER`)
when it is created, and serves
the services it owns to built-in plugins only (``source = "builtin"`` in the index): a
third-party plugin that asks gets a :class:`~conduit.errors.PluginError`. Services that
plugins provide are not affected, whatever their names.

Like the in-process guard, the refusal is a boundary only for plugins in a process host
(their requests carry the plugin's name); a third-party plugin in the kernel's own
interpreter can reach anything the kernel holds. The obvious path is closed all the same:
a plugin that :meth:`Admin.measure_load` activates boots under a Click context of its own,
not under the built-in command's.

A built-in command reaches it through its plugin's context, which the in-process host
passes to Click as the root context's ``obj``::

    admin = click.get_current_context().find_root().obj.service("conduit.admin")

The kernel imports this module when a built-in first asks for the service; it imports
nothing else at run time until a method needs it.
"""

from __future__ import annotations

import time

from conduit.errors import ConduitError

# Not `from typing import TYPE_CHECKING`: conduit.kernel.core imports this module on
# every command.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from conduit.indexer.records import Index
    from conduit.kernel.core import Kernel

__all__ = ["Admin"]


class Admin:
    """The kernel's own state and tools, for the built-in ``plugins`` plugin."""

    def __init__(self, kernel: Kernel) -> None:
        self._kernel = kernel

    @property
    def index(self) -> Index:
        """The index this kernel runs from (plain data: do not change it)."""
        return self._kernel.index

    @property
    def disabled(self) -> frozenset[str]:
        """Plugins disabled for this run only (``CONDUIT_DISABLE_PLUGINS``, and every
        third-party plugin with ``--no-plugins``), on top of the config's ``disabled``."""
        return self._kernel.disabled

    def rebuild(self) -> Index:
        """Re-read every manifest now, ignoring the cached index, and return the new
        index (it is written to the cache as usual). The kernel keeps running from its
        own :attr:`index`."""
        from conduit.indexer.build import load
        from conduit.timing import Profile

        return load(self._kernel.paths, Profile(False), force_rebuild=True)

    def measure_load(self, name: str, *, index: Index | None = None) -> dict[str, float] | str:
        """Activate ``name`` in a fresh kernel of its own and time it.

        Returns ``{"import_ms", "boot_ms", "total_ms"}``, or the error message if the
        plugin fails to load. ``index`` (default: :attr:`index`) is the index the fresh
        kernel runs from. Timing never prompts for grants: a plugin that lacks them is
        reported as failing to load.
        """
        from conduit.timing import Profile

        profile = Profile(True)
        kernel = type(self._kernel)(
            self.index if index is None else index,
            self._kernel.paths,
            profile=profile,
            approve=lambda rec, caps: False,
        )
        import click  # a built-in command is running: Click is imported already

        start = time.perf_counter_ns()
        # The plugin boots under an empty Click context of its own: the running command's
        # root context holds the built-in's plugin context (its ``obj``), which is not
        # the measured plugin's to use.
        with click.Context(click.Command(name)):
            try:
                kernel.activate(name)
            except ConduitError as exc:
                return exc.message
            finally:
                kernel.shutdown()
        spans = {s[0].split(":", 1)[0]: (s[2] - s[1]) / 1e6 for s in profile.spans}
        return {
            "import_ms": round(spans.get("import", 0.0), 3),
            "boot_ms": round(spans.get("boot", 0.0), 3),
            "total_ms": round((time.perf_counter_ns() - start) / 1e6, 3),
        }

    def health(self, names: list[str], timeout: float) -> list[dict[str, str]]:
        """Activate each of ``names`` in a fresh kernel of its own and ask its
        ``health()`` (conduit.sdk) in its own host; one dict per plugin: ``name``,
        ``host``, ``status`` (``ok``, ``warning``, ``failing``) and a one-line ``message``.

        A plugin that fails to load, raises, or does not answer within ``timeout``
        seconds is ``failing``; a host without health checks (WebAssembly, pass-through
        executables) reports ``ok``. Never prompts for grants.
        """
        import contextlib

        import click  # a built-in command is running: Click is imported already

        kernel = type(self._kernel)(
            self.index, self._kernel.paths, disabled=self.disabled, approve=lambda r, c: False
        )
        results = []
        with click.Context(click.Command("health")):
            try:
                for name in names:
                    rec = self.index["plugins"][name]
                    host = "executable" if rec["source"] == "executable" else rec["isolation"]
                    row = {"name": name, "host": host, "status": "failing", "message": ""}
                    results.append(row)
                    try:
                        kernel.activate(name, "health")
                        running = kernel.host_for(rec)
                    except ConduitError as exc:
                        row["message"] = exc.message
                        continue
                    probe = getattr(running, "plugin_health", None)
                    if probe is None:
                        row["status"] = "ok"
                        row["message"] = f"no health check in the {running.kind} host"
                        continue
                    guard = kernel._guards.get(name, contextlib.nullcontext())
                    with guard:
                        row["status"], row["message"] = probe(rec, timeout)
            finally:
                with contextlib.suppress(ConduitError):
                    kernel.shutdown()
        return results
