"""WASI preview1 command modules (any language).

``_start`` runs with ``argv = [COMMAND, ARGS...]``, the terminal's stdin, stdout and
stderr, and the exit code from ``proc_exit``. Conduit's services are core-module imports
from ``"conduit"`` (:data:`CORE_IMPORTS`, docs/wasm.md): every parameter and result an
i32, buffers in the module's exported ``memory``, a host call's result fetched with
``conduit.result`` (its length, also of an error text, from ``conduit.result_len``).
Byte strings in the JSON of ``http`` and ``exec`` are strings when they are UTF-8 text
and base64 under ``NAME_base64`` when they are not, both ways.

``proc_exit`` is Conduit's own: wasmtime's refuses statuses from 126 up (with a trap
message); here 0-255 is the exit code and anything else a clear error.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from conduit.errors import HostError
from conduit.hosts.wasm.sandbox import Denied, GuestFault
from conduit.hosts.wasm.store import explain, link_error, new_store

if TYPE_CHECKING:
    from conduit.hosts.wasm.runtime import Runtime
    from conduit.hosts.wasm.sandbox import Sandbox

__all__ = ["CORE_IMPORTS", "CORE_MODULE", "run_module"]

#: the import module of Conduit's services for core modules
CORE_MODULE = "conduit"
#: name -> (parameter count, result count): every parameter and result is an i32
CORE_IMPORTS = {
    "log": (3, 0),  # (level, ptr, len)
    "env": (2, 1),  # (name_ptr, name_len) -> len | -1 unset
    "http": (2, 1),  # (request_json_ptr, len) -> len | -2 failed
    "exec": (2, 1),  # (request_json_ptr, len) -> len | -2 failed
    "result": (2, 1),  # (ptr, capacity) -> bytes copied from the last result
    "result_len": (0, 1),  # () -> the length of the last result
}
#: where ``proc_exit`` comes from
WASI_MODULE = "wasi_snapshot_preview1"


class GuestExit(Exception):
    """The module called ``proc_exit(status)``."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _json(doc: object) -> bytes:
    import json

    return json.dumps(doc).encode()


def _put_bytes(doc: dict[str, object], name: str, data: bytes) -> None:
    """``doc[name]``: ``data`` as a string if it is UTF-8 text, else base64 under
    ``NAME_base64``; never a lossy decoding."""
    try:
        doc[name] = data.decode("utf-8")
    except UnicodeDecodeError:
        import base64

        doc[f"{name}_base64"] = base64.b64encode(data).decode("ascii")


def _get_bytes(req: dict[str, Any], name: str) -> bytes:
    """The bytes a request gives as ``NAME_base64`` or as the string ``NAME``."""
    encoded = req.get(f"{name}_base64")
    if encoded is not None:
        import base64

        return base64.b64decode(str(encoded), validate=True)
    return str(req.get(name, "")).encode()


def _define_core_imports(linker: Any, box: Sandbox, rt: Runtime) -> None:
    import wasmtime

    i32 = wasmtime.ValType.i32()

    def memory(caller: Any) -> Any:
        mem = caller.get("memory")
        if not isinstance(mem, wasmtime.Memory):
            raise GuestFault("it called a conduit import but exports no 'memory'")
        return mem

    def span(caller: Any, ptr: int, length: int) -> Any:
        mem = memory(caller)
        # i32 arrive signed; wasmtime-py would read a negative start from the end
        if ptr < 0 or length < 0 or ptr + length > mem.data_len(caller):
            raise GuestFault(f"it passed a buffer outside its memory ({ptr}, {length})")
        return mem

    def read(caller: Any, ptr: int, length: int) -> bytes:
        return bytes(span(caller, ptr, length).read(caller, ptr, ptr + length))

    def set_result(data: bytes) -> int:
        box.result = data
        return len(data)

    def log(caller: Any, level: int, ptr: int, length: int) -> None:
        names = {0: "debug", 1: "info", 2: "warning", 3: "error"}
        box.log(names.get(level, "info"), read(caller, ptr, length).decode("utf-8", "replace"))

    def env(caller: Any, ptr: int, length: int) -> int:
        var = read(caller, ptr, length).decode("utf-8", "replace")
        box.check_env(var)  # a refusal traps the module
        value = box.env.get(var)
        return -1 if value is None else set_result(value.encode())

    def http(caller: Any, ptr: int, length: int) -> int:
        try:
            import json  # only when a module makes a request

            req = json.loads(read(caller, ptr, length))
            status, headers, body = box.http(
                str(req.get("method", "GET")),
                str(req["url"]),
                [(str(k), str(v)) for k, v in dict(req.get("headers", {})).items()],
                _get_bytes(req, "body"),
                rt.settings.http_timeout,
            )
        except Denied:
            raise  # traps the module
        except Exception as exc:  # bad request, refused connection: the plugin's to handle
            set_result(f"{type(exc).__name__}: {exc}".encode())
            return -2
        doc: dict[str, object] = {"status": status, "headers": headers}
        _put_bytes(doc, "body", body)
        return set_result(_json(doc))

    def exec_(caller: Any, ptr: int, length: int) -> int:
        try:
            import json

            req = json.loads(read(caller, ptr, length))
            code, out, err = box.exec(
                str(req["program"]),
                [str(a) for a in req.get("args", [])],
                _get_bytes(req, "stdin"),
                rt.settings.timeout or None,
            )
        except Denied:
            raise  # traps the module
        except Exception as exc:
            set_result(f"{type(exc).__name__}: {exc}".encode())
            return -2
        doc: dict[str, object] = {"code": code}
        _put_bytes(doc, "stdout", out)
        _put_bytes(doc, "stderr", err)
        return set_result(_json(doc))

    def result(caller: Any, ptr: int, capacity: int) -> int:
        data = box.result[: max(0, capacity)]
        span(caller, ptr, len(data)).write(caller, data, ptr)
        return len(data)

    def result_len(caller: Any) -> int:
        return len(box.result)

    funcs = {
        "log": log,
        "env": env,
        "http": http,
        "exec": exec_,
        "result": result,
        "result_len": result_len,
    }
    for fname, (nparams, nresults) in CORE_IMPORTS.items():
        ty = wasmtime.FuncType([i32] * nparams, [i32] * nresults)
        linker.define_func(CORE_MODULE, fname, ty, funcs[fname], access_caller=True)

    def proc_exit(status: int) -> None:
        raise GuestExit(status)  # unwinds the module; caught in _run_module_in

    linker.allow_shadowing = True
    linker.define_func(WASI_MODULE, "proc_exit", wasmtime.FuncType([i32], []), proc_exit)
    linker.allow_shadowing = False


def run_module(rt: Runtime, box: Sandbox, module: Any, argv: list[str]) -> int:
    store = new_store(rt, box, argv)
    try:
        return _run_module_in(store, rt, box, module, argv)
    finally:
        # Freed now, not at interpreter exit: wasmtime's WASI output threads must not
        # call back into a finalizing interpreter (that aborts the process).
        store.close()


def _run_module_in(store: Any, rt: Runtime, box: Sandbox, module: Any, argv: list[str]) -> int:
    import wasmtime

    linker = wasmtime.Linker(rt.engine)
    linker.define_wasi()
    _define_core_imports(linker, box, rt)
    try:
        instance = linker.instantiate(store, module)
    except wasmtime.WasmtimeError as exc:
        raise link_error(rt, box, exc) from None
    start = instance.exports(store).get("_start")
    if not isinstance(start, wasmtime.Func):
        raise HostError(
            box.plugin,
            "the module exports no '_start' function",
            hint="build it as a WASI command (a program with main)",
        )
    try:
        start(store)
    except (GuestExit, wasmtime.ExitTrap) as exc:
        if box.denied is not None:
            raise explain(rt, box, exc, None) from None
        return _exit_code(box, exc.status if isinstance(exc, GuestExit) else int(exc.code))
    except GuestFault as exc:
        raise HostError(
            box.plugin, f"bad call to a conduit import: {exc}", hint="a bug in the plugin"
        ) from None
    except (wasmtime.Trap, wasmtime.WasmtimeError, Denied) as exc:
        mem = instance.exports(store).get("memory")
        used = mem.data_len(store) if isinstance(mem, wasmtime.Memory) else None
        raise explain(rt, box, exc, used) from None
    finally:
        sys.stdout.flush()
    return 0


def _exit_code(box: Sandbox, status: int) -> int:
    """Conduit's exit code for ``proc_exit(status)`` (``status`` as the i32 it is)."""
    if 0 <= status <= 255:
        return status
    raise HostError(
        box.plugin,
        f"exited with status {status}, which is not an exit code (0-255)",
        hint="a bug in the plugin; report it to its author",
    )
