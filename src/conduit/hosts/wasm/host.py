"""The WebAssembly host: what the kernel sees of this package.

A plugin is loaded (its compiled artifact, from the cache or compiled) when it is
activated; each command builds the plugin's sandbox from its grants and runs in a fresh
instance, through :mod:`~conduit.hosts.wasm.instance` (core modules) or
:mod:`~conduit.hosts.wasm.component` (components).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from conduit.errors import PluginLoadError
from conduit.hosts.wasm.runtime import WasmSettings, first_line, runtime
from conduit.hosts.wasm.sandbox import Sandbox

if TYPE_CHECKING:
    from conduit.hosts.base import HostContext, KernelPort
    from conduit.hosts.wasm.runtime import Runtime
    from conduit.indexer.records import PluginRec
    from conduit.timing import Profile

__all__ = ["WasmHost"]


def _compiling_note(name: str) -> None:
    """One line on stderr before a module is compiled for this machine (seconds for a
    component), on a terminal only: a progress note, like pip's or uv's. The host prints
    it because the wait happens inside activation, before the CLI gets control back; the
    plugin's name is escaped."""
    import sys

    stream = sys.stderr
    try:
        if not stream.isatty():
            return
    except (AttributeError, ValueError):
        return
    from conduit.text import inert

    stream.write(f"conduit: compiling plugin '{inert(name)}' for this machine (once)...\n")
    stream.flush()


class WasmHost:
    """Runs WebAssembly plugins; one compiled artifact per plugin, a fresh instance per
    command."""

    kind = "wasm"

    def __init__(self, kernel: KernelPort) -> None:
        self.kernel = kernel
        config = kernel.index["config"]
        self.settings = WasmSettings.from_table(config.get("wasm"))
        self._loaded: dict[str, tuple[Any, bool]] = {}

    def _runtime(self, name: str) -> Runtime:
        return runtime(self.settings, self.kernel.paths.cache_dir, name)

    def activate(self, record: PluginRec, ctx: HostContext, profile: Profile) -> None:
        name = record["name"]
        path = record["entry"]
        if record["source"] != "wasm" or not path:
            raise PluginLoadError(
                name,
                f"isolation 'wasm' needs a WebAssembly module, and this is a "
                f"{record['source']} plugin ({record['origin']})",
                hint="build it as a component ('conduit plugins build'), or remove it from "
                "the config's [isolation] table",
            )
        rt = self._runtime(name)
        with profile.span("wasm:load"):
            try:
                self._loaded[name] = rt.load(path, lambda: _compiling_note(name))
            except OSError as exc:
                raise PluginLoadError(name, f"cannot read {path}: {exc.strerror}") from None
            except Exception as exc:  # wasmtime.WasmtimeError: invalid module
                raise PluginLoadError(
                    name,
                    f"{path} is not a valid WebAssembly module: {first_line(exc)}",
                    hint="rebuild the plugin",
                ) from None

    def deactivate(self, record: PluginRec, ctx: HostContext) -> None:
        self._loaded.pop(record["name"], None)

    def run_command(self, record: PluginRec, ctx: HostContext, argv: list[str], prog: str) -> int:
        name = record["name"]
        artifact, component = self._loaded[name]
        grants = self.kernel.index["config"].get("grants", {})
        box = Sandbox.build(
            name,
            list(grants.get(name, [])) if isinstance(grants, dict) else [],
            os.getcwd(),
            ctx.data_dir,
            os.path.join(self.kernel.paths.cache_dir, "wasm", "empty"),
        )
        rt = self._runtime(name)
        with rt:
            if component:  # only the kind that runs is imported
                from conduit.hosts.wasm.component import run_component

                return run_component(rt, box, artifact, argv)
            from conduit.hosts.wasm.instance import run_module

            return run_module(rt, box, artifact, argv)
