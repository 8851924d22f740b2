"""What core modules and components share: a fresh store per command, and the one
error a trap, a refusal or a failed link becomes.

The store carries the runtime's limits (memory, epoch deadline, fuel) and the sandbox's
WASI view: argv, the granted environment, the preopened directories and the terminal's
stdin, stdout and stderr. :func:`explain` turns a trap into a
:class:`~conduit.errors.HostError` naming the plugin and a cause the user can act on.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from conduit.errors import HostError

if TYPE_CHECKING:
    from conduit.hosts.wasm.runtime import Runtime
    from conduit.hosts.wasm.sandbox import Sandbox

__all__ = ["explain", "link_error", "new_store", "writer"]

MIB = 1024 * 1024
#: a trap with less than this (or a 16th of the limit) left below the memory limit is
#: "out of memory": an allocator grows memory in steps (1 MB mallocs: 17 pages), and
#: traps or aborts when a step no longer fits
OOM_MARGIN = 2 * MIB


def new_store(rt: Runtime, box: Sandbox, argv: list[str]) -> Any:
    """A fresh store for one command: the runtime's limits, the sandbox's WASI view."""
    import wasmtime

    settings = rt.settings
    store = wasmtime.Store(rt.engine)
    store.set_limits(memory_size=settings.memory_mb * MIB)
    store.set_epoch_deadline(rt.deadline_ticks)
    if settings.fuel:
        store.set_fuel(settings.fuel)
    wasi = wasmtime.WasiConfig()
    wasi.argv = argv
    wasi.env = sorted(box.env.items())
    wasi.inherit_stdin()
    # The terminal's descriptors when sys.stdout/sys.stderr are them: wasmtime writes
    # there itself. Only a replaced stream (a test's capture, a library caller) gets a
    # Python callback, which wasmtime calls from its own threads; those must not outlive
    # the interpreter (an exit right after Ctrl-C aborted the process).
    if _is_fd(sys.stdout, 1):
        sys.stdout.flush()
        wasi.inherit_stdout()
    else:
        wasi.stdout_custom = writer(sys.stdout)
    if _is_fd(sys.stderr, 2):
        sys.stderr.flush()
        wasi.inherit_stderr()
    else:
        wasi.stderr_custom = writer(sys.stderr)
    for directory, name, writable in box.preopens:  # see the sandbox module: paths
        wasi.preopen_dir(directory, name, writable)
    store.set_wasi(wasi)
    return store


def explain(rt: Runtime, box: Sandbox, exc: BaseException, memory_used: int | None) -> HostError:
    """One clear error for a trap: the cause a user can act on, then wasmtime's words."""
    import wasmtime

    if box.denied is not None:
        denied = box.denied
        return HostError(
            box.plugin,
            f"denied: {denied.what}: {denied.capability} is not granted",
            hint=f'grant it in the config: [grants] {box.plugin} = ["{denied.capability}"]',
        )
    settings = rt.settings
    code = getattr(exc, "trap_code", None) if isinstance(exc, wasmtime.Trap) else None
    T = wasmtime.TrapCode
    if code == T.INTERRUPT and rt.interrupted:
        rt.interrupted = False
        raise KeyboardInterrupt
    if code == T.INTERRUPT:
        return HostError(
            box.plugin,
            f"timed out after {settings.timeout:g} s (wall-clock limit)",
            hint="raise [wasm] timeout in the config (0 = no limit)",
        )
    if code == T.STACK_OVERFLOW:
        return HostError(
            box.plugin,
            "stack overflow (infinite recursion?)",
            hint=f"the wasm stack is {settings.max_stack_kb} KB ([wasm] max-stack-kb)",
        )
    if code == T.OUT_OF_FUEL:
        return HostError(
            box.plugin,
            f"ran out of fuel ({settings.fuel} units)",
            hint="raise [wasm] fuel in the config (0 = not metered)",
        )
    if _below_zero(exc):
        return HostError(
            box.plugin,
            "stack overflow: its stack in linear memory ran below address 0 "
            "(large local arrays or deep recursion?)",
            hint="a module's own stack is sized when it is linked (clang: "
            f"-Wl,-z,stack-size=BYTES); the wasm stack is {settings.max_stack_kb} KB "
            "([wasm] max-stack-kb)",
        )
    limit = settings.memory_mb * MIB
    if memory_used is not None and limit - memory_used < max(OOM_MARGIN, limit // 16):
        return HostError(
            box.plugin,
            f"out of memory: it reached the limit of {settings.memory_mb} MB "
            f"and then trapped ({_trap_words(exc)})",
            hint="raise [wasm] memory-mb in the config",
        )
    return HostError(
        box.plugin,
        f"trapped: {_trap_words(exc)}",
        hint="a bug in the plugin; report it to its author",
    )


def _below_zero(exc: BaseException) -> bool:
    """Whether the trap is an access at a "negative" address, beyond the memory: what a
    stack in linear memory (C, Rust) does when it grows down past address 0 and wraps.
    wasmtime names the address of a faulting load or store ("memory fault at wasm
    address 0x... in linear memory of size 0x...") and of a pointer passed to a WASI
    function ("Pointer out of bounds: Region { start: N, ... }")."""
    import re

    text = getattr(exc, "message", None) or str(exc)
    found = re.search(
        r"memory fault at wasm address (0x[0-9a-f]+) in linear memory of size (0x[0-9a-f]+)", text
    )
    if found:
        address, size = int(found[1], 16), int(found[2], 16)
    else:
        found = re.search(r"Pointer out of bounds: Region \{ start: (\d+)", text)
        if not found:
            return False
        address, size = int(found[1]), 0
    return address >= max(2**31, size)


def _trap_words(exc: BaseException) -> str:
    """The line of wasmtime's report that names the cause (not the backtrace)."""
    import wasmtime

    text = exc.message if isinstance(exc, wasmtime.Trap) else str(exc)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in lines:
        if line.startswith("wasm trap:"):
            return line
    if "Caused by:" in lines:
        cause = lines[lines.index("Caused by:") + 1 :]
        if cause:
            return cause[-1].lstrip("0123456789: ")
    return lines[0] if lines else type(exc).__name__


def link_error(rt: Runtime, box: Sandbox, exc: BaseException) -> HostError:
    words = _trap_words(exc)
    if "memory" in words and ("limit" in words or "minimum" in words):
        return HostError(
            box.plugin,
            f"out of memory: it needs more than the limit of {rt.settings.memory_mb} MB "
            f"to start ({words})",
            hint="raise [wasm] memory-mb in the config",
        )
    return HostError(
        box.plugin,
        f"cannot be linked: {words}",
        hint="it imports something Conduit does not provide (see docs/wasm.md)",
    )


def _is_fd(stream: Any, fd: int) -> bool:
    try:
        return bool(stream.fileno() == fd)
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return False


def writer(stream: Any) -> Any:
    """A WASI output callback that writes bytes through ``stream`` (stdout or stderr)."""

    def write(data: bytes) -> None:
        buffer = getattr(stream, "buffer", None)
        if buffer is not None:
            stream.flush()
            buffer.write(data)
            buffer.flush()
        else:
            stream.write(data.decode("utf-8", "replace"))

    return write
