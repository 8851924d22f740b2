"""The WebAssembly host: plugins run in wasmtime, with only what the user granted.

Imported only when a WebAssembly plugin is activated; ``wasmtime`` (the optional extra
``conduit-devtool[wasm]``) only when one runs. Two kinds of plugin:

* **WASI preview1 command modules** (any language): ``_start`` runs with
  ``argv = [COMMAND, ARGS...]``, the terminal's stdin, stdout and stderr, and the exit
  code from ``proc_exit``. Conduit's services are core-module imports from ``"conduit"``
  (see ``instance.CORE_IMPORTS`` and docs/wasm.md).
* **Components** of the ``conduit:plugin`` world (``conduit/wit/``), e.g. Python built
  with componentize-py: ``command.run(args)`` returns stdout, stderr and an exit code;
  Conduit's services are the ``host`` interface.

The sandbox of one command: a fresh store and instance; ``filesystem:*`` grants become
preopened directories (read-only for read grants), ``env:read`` grants the only
environment variables; ``network:http`` and ``process:execute`` are reachable only
through Conduit's host functions, which check the grants; a wall-clock deadline (epoch
interruption), a memory limit and optionally fuel. A trap, a timeout, running out of
memory or a denied capability become one :class:`~conduit.errors.HostError`
naming the plugin and the cause; the kernel carries on.

Compiled artifacts are cached under ``CACHE/wasm/``, keyed by wasmtime's version, the
engine configuration and the module's hash; an artifact whose header does not match, or
that wasmtime refuses, is compiled again and replaced.

The modules, each importing only those below it:

- ``host``: :class:`WasmHost`, the only part the kernel uses (the face exports it)
- ``component``: ``conduit:plugin`` components: the ``host`` interface, ``run_component``,
  ``describe`` (imported only when a component runs)
- ``instance``: core modules: the ``conduit`` imports, ``run_module`` (imported only when
  a core module runs)
- ``store``: what both kinds share: a fresh store per command, and the error a trap or a
  failed link becomes
- ``sandbox``: :class:`~conduit.hosts.wasm.sandbox.Sandbox` (grants to preopens,
  environment and checked host functions), ``Denied``, ``GuestFault``
- ``runtime``: ``WasmSettings``, ``import_wasmtime``, the engine, ``ArtifactCache``,
  ``Runtime`` (the epoch ticker) and ``runtime()``; no wasmtime at import

The face imports :mod:`~conduit.hosts.wasm.host` (with ``runtime`` and ``sandbox``, no
wasmtime): the kernel imports it only for :class:`WasmHost`. It holds no function, on
purpose: a lazy ``__getattr__`` would put the package's namespace in a reference cycle
that :func:`gc.freeze` (in ``import_wasmtime``) keeps to the end, and with it the
submodules; the interpreter would then clear ``runtime`` (its engines) at exit after
wasmtime's own modules, and an engine's finalizer would fail with a traceback (after
Ctrl-C: ``tests/hosts/test_wasm.py::test_ctrl_c_stops_a_running_module``).
"""

from __future__ import annotations

from conduit.hosts.wasm.host import WasmHost

__all__ = ["WasmHost"]
