"""The WebAssembly host: a package from here on; the next commit splits ``host`` by role."""

from __future__ import annotations

from conduit.hosts.wasm.host import (
    CORE_IMPORTS,
    ArtifactCache,
    Denied,
    Runtime,
    Sandbox,
    WasmHost,
    WasmSettings,
    _make_engine,
    describe,
    engine_description,
    import_wasmtime,
    is_component,
    runtime,
)

__all__ = [
    "CORE_IMPORTS",
    "ArtifactCache",
    "Denied",
    "Runtime",
    "Sandbox",
    "WasmHost",
    "WasmSettings",
    "_make_engine",
    "describe",
    "engine_description",
    "import_wasmtime",
    "is_component",
    "runtime",
]
