"""Components of the ``conduit:plugin`` world (``conduit/wit/``), e.g. Python built with
componentize-py.

``command.run(args)`` returns stdout, stderr and an exit code; ``command.describe()``
the commands the component provides. Conduit's services are the ``host`` interface.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from conduit.errors import HostError
from conduit.hosts.wasm.runtime import runtime
from conduit.hosts.wasm.sandbox import Denied, Sandbox
from conduit.hosts.wasm.store import explain, link_error, new_store, writer

if TYPE_CHECKING:
    from conduit.hosts.wasm.runtime import Runtime, WasmSettings

__all__ = ["WIT_COMMAND", "WIT_PACKAGE", "describe", "run_component"]

WIT_PACKAGE = "conduit:plugin/host@0.1.0"
WIT_COMMAND = "conduit:plugin/command@0.1.0"


def _call_component(
    rt: Runtime, box: Sandbox, component: Any, argv: list[str], export: str, *args: Any
) -> Any:
    """Instantiate ``component`` in a fresh store and call ``command.EXPORT(*args)``."""
    store = new_store(rt, box, argv)
    try:
        return _call_component_in(store, rt, box, component, export, *args)
    finally:
        store.close()  # see instance.run_module


def _call_component_in(
    store: Any, rt: Runtime, box: Sandbox, component: Any, export: str, *args: Any
) -> Any:
    import wasmtime
    from wasmtime import component as wc

    linker = wc.Linker(rt.engine)
    linker.add_wasip2()
    _define_wit_imports(linker, box, rt)
    try:
        instance = linker.instantiate(store, component)
    except wasmtime.WasmtimeError as exc:
        raise link_error(rt, box, exc) from None
    try:
        index = instance.get_export_index(store, WIT_COMMAND)
        func = None
        if index is not None:
            func_index = instance.get_export_index(store, export, index)
            func = instance.get_func(store, func_index) if func_index is not None else None
        if func is None:
            raise HostError(
                box.plugin,
                f"the component does not export {WIT_COMMAND}#{export}",
                hint="build it against the conduit:plugin world (conduit/wit/)",
            )
        result = func(store, *args)
    except (wasmtime.Trap, wasmtime.WasmtimeError, Denied) as exc:
        raise explain(rt, box, exc, None) from None
    if box.denied is not None:  # the guest swallowed the error it got
        raise explain(rt, box, box.denied, None)
    return result


def run_component(rt: Runtime, box: Sandbox, component: Any, argv: list[str]) -> int:
    out = _call_component(rt, box, component, argv, "run", list(argv))
    if isinstance(out, str):  # result<output, string>: the error case
        raise HostError(box.plugin, f"command '{argv[0]}' failed: {out}")
    writer(sys.stdout)(bytes(out.stdout))
    writer(sys.stderr)(bytes(out.stderr))
    return int(out.code)


def describe(
    path: str, settings: WasmSettings, cache_dir: str, plugin: str
) -> list[dict[str, str]]:
    """The commands a component says it provides (``command.describe``), run with no
    grants; ``[]`` for a core module, which cannot describe itself."""
    rt = runtime(settings, cache_dir, plugin)
    artifact, component = rt.load(path)
    if not component:
        return []
    box = Sandbox(plugin, [], os.getcwd())
    with rt:
        infos = _call_component(rt, box, artifact, [plugin], "describe")
    return [{"name": i.name, "help": i.help, "usage": i.usage} for i in infos]


def _record(**fields: Any) -> Any:
    from wasmtime import component as wc

    rec = wc.Record()
    for key, value in fields.items():
        setattr(rec, key, value)
    return rec


def _define_wit_imports(linker: Any, box: Sandbox, rt: Runtime) -> None:
    """The ``host`` interface. wasmtime-py passes a ``result`` whose two cases have
    different Python types as the bare value (a Record or the error string) and one whose
    cases share a type (``get-env``: str and str) as a tagged Variant."""
    from wasmtime import component as wc

    host = linker.root().add_instance(WIT_PACKAGE)

    def log(store: Any, level: str, message: str) -> None:
        box.log(level, message)

    def get_env(store: Any, name: str) -> Any:
        try:
            box.check_env(name)
        except Denied as exc:
            return wc.Variant("err", str(exc))
        return wc.Variant("ok", box.env.get(name))

    def http_request(store: Any, method: str, url: str, headers: Any, body: bytes) -> Any:
        try:
            status, hdrs, data = box.http(
                method, url, [tuple(h) for h in headers], bytes(body), rt.settings.http_timeout
            )
        except Denied as exc:
            return str(exc)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return _record(status=status, headers=hdrs, body=data)

    def exec_(store: Any, program: str, args: list[str], stdin: bytes) -> Any:
        try:
            code, out, errb = box.exec(
                program, list(args), bytes(stdin), rt.settings.timeout or None
            )
        except Denied as exc:
            return str(exc)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return _record(code=code, stdout=out, stderr=errb)

    host.add_func("log", log)
    host.add_func("get-env", get_env)
    host.add_func("http-request", http_request)
    host.add_func("exec", exec_)
