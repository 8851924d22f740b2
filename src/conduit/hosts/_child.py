"""The Python plugin host: the child process a :class:`ProcessHost` starts.

Started as ``sys.executable -c "from conduit.hosts._child import main; main()"`` with
the socket to the kernel inherited as file descriptor ``CONDUIT_RPC_FD``. Before any
plugin code is imported it applies the limits it was given (memory, file size and
processes: :func:`_prepare_process`). Then it serves the kernel's requests
(docs/protocol.md): it activates plugins with the same loader as the in-process host,
runs their commands with output streamed back, and forwards the plugins' calls to kernel
services and hooks.
"""

from __future__ import annotations

import os
import sys

from conduit import rpc
from conduit.errors import CommandFailed, ConduitError
from conduit.hosts.recording import RecordingContext

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from conduit.hosts.inprocess import InProcessHost
    from conduit.indexer.records import PluginRec

__all__ = ["main"]

INTERFACES = ["command.run", "hook.call", "service.call", "health", "metrics", "shutdown"]
# Output is streamed to the kernel in notifications of at most this many characters.
_OUTPUT_CHUNK = 256 * 1024


class _Stream:
    """A text stream whose writes become ``$/output`` notifications to the kernel."""

    def __init__(self, endpoint: rpc.Endpoint, name: str, tty: bool, encoding: str) -> None:
        self._endpoint = endpoint
        self.name = name
        self.tty = tty
        self.encoding = encoding
        self.errors = "replace"
        # Each notification must fit in a frame: a long write goes as several. A chunk
        # of n characters encodes to at most 6n bytes (a JSON escape like \u001b).
        self._step = max(1, min(_OUTPUT_CHUNK, (endpoint.channel.max_frame - 256) // 6))

    def write(self, data: str | bytes) -> int:
        if isinstance(data, (bytes, bytearray, memoryview)):  # some writers skip .buffer
            data = bytes(data).decode(self.encoding or "utf-8", "replace")
        step = self._step
        for start in range(0, len(data), step):
            chunk = data[start : start + step]
            self._endpoint.notify("$/output", {"stream": self.name, "data": chunk})
        return len(data)

    def writelines(self, lines: list[str]) -> None:
        self.write("".join(lines))

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return self.tty

    def fileno(self) -> int:
        raise OSError("output of a process plugin is forwarded to the kernel")

    def readable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return False

    @property
    def buffer(self) -> _BinaryStream:
        return _BinaryStream(self)


class _BinaryStream:
    """The ``buffer`` of a :class:`_Stream`: bytes are decoded and forwarded as text."""

    def __init__(self, text: _Stream) -> None:
        self._text = text

    def write(self, data: bytes) -> int:
        self._text.write(bytes(data).decode(self._text.encoding or "utf-8", "replace"))
        return len(data)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return self._text.isatty()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return False


class RemoteService:
    """A kernel-side service seen from the child: each method call is one RPC."""

    def __init__(self, endpoint: rpc.Endpoint, name: str) -> None:
        self._endpoint = endpoint
        self._name = name

    def __getattr__(self, method: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            return self._endpoint.request(
                "kernel/service",
                {"service": self._name, "method": method, "args": list(args), "kwargs": kwargs},
            )

        return call


class ChildContext(RecordingContext):
    """The :class:`conduit.sdk.PluginContext` of a plugin inside the child: it records
    what the plugin registers (the kernel registers proxies for it) and reaches the
    kernel's hooks and services over RPC."""

    def __init__(self, child: Child, record: PluginRec, data_dir: str, config: dict[str, Any]):
        super().__init__(record["name"], data_dir, config)
        self._child = child

    def hook(self, name: str, **kwargs: Any) -> list[Any]:
        result = self._child.endpoint.request("kernel/hook", {"name": name, "kwargs": kwargs})
        return list(result)

    def service(self, name: str, kind: type[Any] | None = None) -> Any:
        if name in self.services:
            return self._child.service_instance(name, self.services[name])
        return RemoteService(self._child.endpoint, name)


def _arg_names(fn: Callable[..., Any]) -> list[str]:
    import inspect

    return [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


def _limit_reached(exc: BaseException) -> tuple[str, str] | None:
    """When ``exc`` is how one of this host's limits makes plugin code fail: what to add
    to its message (naming the limit, or "" to leave it), and the hint."""
    import errno

    cause = exc.__cause__ if isinstance(exc, CommandFailed) else exc
    error = cause.errno if isinstance(cause, OSError) else None
    if error == errno.EFBIG and LIMITS["max-file-mb"]:  # or the filesystem's own maximum
        return (
            f" (the file size limit of a plugin host is {LIMITS['max-file-mb']} MB: "
            "[process] max-file-mb)",
            "if the plugin needs larger files, raise 'max-file-mb' in the config's "
            "[process] table (0 = no limit)",
        )
    count = LIMITS["max-processes"]
    if count and (
        error == errno.EAGAIN  # fork, clone, spawn
        or (isinstance(cause, RuntimeError) and "can't start new thread" in str(cause))
    ):
        return "", (
            f"a plugin host and the programs it runs may have {count} processes and threads "
            "at once; if the plugin needs more, raise 'max-processes' in the config's "
            "[process] table (0 = no limit)"
        )
    if isinstance(cause, MemoryError) and LIMITS["memory-mb"]:
        return (
            f" (the memory limit of a plugin host is {LIMITS['memory-mb']} MB: "
            "[process] memory-mb)",
            "if the plugin needs more memory, raise 'memory-mb' in the config's [process] "
            "table (0 = no limit)",
        )
    return None


def _plugin_error(exc: BaseException) -> rpc.RemoteError:
    import traceback

    from conduit.security.sandbox import explain

    exc = explain(exc) or exc  # a sandbox denial: name the missing capability
    limit = _limit_reached(exc)
    suffix = limit[0] if limit else ""
    if isinstance(exc, ConduitError):
        message = exc.message
        if suffix and message.endswith(": "):  # an exception without a message
            message = message[:-2]
        return rpc.RemoteError(
            rpc.PLUGIN_ERROR,
            message + suffix,
            {
                "kind": type(exc).__name__,
                "hint": limit[1] if limit else exc.hint,
                "detail": getattr(exc, "detail", None),
                "usage": getattr(exc, "usage", None),
                "traceback": "".join(traceback.format_exception(exc.__cause__ or exc)),
            },
        )
    text = str(exc)
    return rpc.RemoteError(
        rpc.PLUGIN_ERROR,
        f"{type(exc).__name__}{': ' + text if text or not suffix else ''}{suffix}",
        {
            "kind": "exception",
            "hint": limit[1] if limit else None,
            "traceback": "".join(traceback.format_exception(exc)),
        },
    )


class Child:
    """Serves one kernel connection."""

    def __init__(self, endpoint: rpc.Endpoint) -> None:
        self.endpoint = endpoint
        self.contexts: dict[str, ChildContext] = {}
        self.records: dict[str, PluginRec] = {}
        self.instances: dict[str, Any] = {}
        self._host: InProcessHost | None = None

    @property
    def host(self) -> InProcessHost:
        if self._host is None:
            from conduit.hosts.inprocess import InProcessHost

            self._host = InProcessHost()
        return self._host

    def service_instance(self, name: str, factory: Callable[[], Any]) -> Any:
        if name not in self.instances:
            self.instances[name] = factory()
        return self.instances[name]

    # -- handlers ------------------------------------------------------------------------
    def initialize(self, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("protocol") != rpc.PROTOCOL_VERSION:
            raise rpc.RemoteError(
                rpc.INVALID_PARAMS,
                f"unsupported protocol version {params.get('protocol')!r}; "
                f"this host speaks {rpc.PROTOCOL_VERSION}",
            )
        offered = [c for c in params.get("codecs", ["json"]) if c in ("msgpack", "json")]
        chosen = offered[0] if offered else "json"
        plugins = [self.activate(p) for p in params.get("plugins", [])]
        if chosen != "json":
            channel = self.endpoint.channel

            def switch() -> None:  # after the answer: the import does not delay it
                channel.codec = rpc.codec(chosen)

            self.endpoint.after_reply = switch
        return {
            "protocol": rpc.PROTOCOL_VERSION,
            "codec": chosen,
            "pid": os.getpid(),
            "interfaces": INTERFACES,
            "plugins": plugins,
        }

    def activate(self, params: dict[str, Any]) -> dict[str, Any]:
        from conduit.timing import Profile

        record: PluginRec = params["record"]
        name = record["name"]
        ctx = ChildContext(self, record, params.get("data_dir", ""), params.get("config", {}))
        profile = Profile(False)  # records spans all the same: the timings below
        try:
            self.host.activate(record, ctx, profile)
        except BaseException as exc:
            ctx.dispose()  # what boot() registered before it failed
            raise _plugin_error(exc) from None
        self.contexts[name] = ctx
        self.records[name] = record
        timing = {s[0].partition(":")[0] + "_ms": (s[2] - s[1]) / 1e6 for s in profile.spans}
        return {
            "name": name,
            "timing": timing,
            "metrics": self.host.offers_metrics(name),
            "commands": sorted(ctx.registered),
            "services": sorted(ctx.services),
            "hooks": [{"name": h, "args": _arg_names(fn)} for h, fn in ctx.hooks],
            "hookspecs": [
                {"name": fn.__name__, "args": _arg_names(fn), "firstresult": first}
                for fn, first in ctx.hookspecs
            ],
        }

    def run(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["plugin"]
        ctx, record = self.contexts[name], self.records[name]
        terminal = params.get("terminal", {})
        saved = (os.getcwd(), dict(os.environ))
        try:
            os.chdir(params.get("cwd") or saved[0])
            if "env" in params:
                os.environ.clear()
                os.environ.update(params["env"])
            if terminal.get("columns"):
                os.environ["COLUMNS"] = str(terminal["columns"])
                os.environ["LINES"] = str(terminal.get("lines", 24))
            for stream, key in ((sys.stdout, "stdout_tty"), (sys.stderr, "stderr_tty")):
                if isinstance(stream, _Stream):
                    stream.tty = bool(terminal.get(key))
            argv, prog = list(params["argv"]), params.get("prog", "conduit")
            try:
                code = self.host.run_command(record, ctx, argv, prog)
            except (CommandFailed, ConduitError) as exc:
                raise _plugin_error(exc) from None
            return {"exit_code": code}
        finally:
            os.environ.clear()
            os.environ.update(saved[1])
            os.chdir(saved[0])

    def hook_call(self, params: dict[str, Any]) -> list[Any]:
        ctx = self.contexts[params["plugin"]]
        implementations = [fn for hook, fn in ctx.hooks if hook == params["hook"]]
        index = params.get("index")
        if index is not None:  # the kernel's proxy for one implementation
            implementations = implementations[index : index + 1]
        results = []
        for fn in implementations:
            try:
                result = fn(**params.get("kwargs", {}))
            except Exception as exc:
                raise _plugin_error(exc) from None
            if result is not None:
                results.append(result)
        return results

    def service_call(self, params: dict[str, Any]) -> Any:
        name = params["service"]
        instances = self.instances
        if name not in instances:  # its first call: find the plugin that provides it
            for ctx in self.contexts.values():
                if name in ctx.services:
                    try:
                        self.service_instance(name, ctx.services[name])
                    except Exception as exc:
                        raise _plugin_error(exc) from None
                    break
            else:
                raise rpc.RemoteError(rpc.METHOD_NOT_FOUND, f"no service {name!r} in this host")
        try:
            method = getattr(instances[name], params["method"])
            return method(*params.get("args", ()), **params.get("kwargs", {}))
        except Exception as exc:
            raise _plugin_error(exc) from None

    def health(self, params: dict[str, Any]) -> dict[str, Any]:
        plugin = params.get("plugin")
        if plugin in self.records:  # the plugin's own health(); the kernel side times it
            status, message = self.host.plugin_health(self.records[plugin], None)
            return {"status": status, "message": message, "pid": os.getpid()}
        # The current resident size, from /proc: getrusage's high-water mark is carried
        # over fork and exec, so it would report the kernel's peak, not this host's.
        rss_kb = None
        try:
            with open("/proc/self/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss_kb = int(line.split()[1])
                        break
        except (OSError, ValueError):
            pass
        return {
            "status": "ok",
            "pid": os.getpid(),
            "plugins": sorted(self.contexts),
            "rss_kb": rss_kb,
        }

    def metrics(self, params: dict[str, Any]) -> dict[str, float] | None:
        name = params["plugin"]
        try:
            return self.host.metrics(self.records[name], self.contexts[name])
        except Exception as exc:
            raise _plugin_error(exc) from None

    def shutdown(self, params: dict[str, Any]) -> None:
        for name in list(self.contexts):
            try:  # noqa: SIM105 -- contextlib would add its imports to every host's start
                self.host.deactivate(self.records[name], self.contexts[name])
            except ConduitError:
                pass
            # ctx.on_dispose() (plugin API 1.6): after shutdown(), newest first
            for failure in self.contexts[name].dispose():
                from conduit.text import inert  # the plugin's text: never raw (on failure only)

                sys.stderr.write(f"conduit: warning: plugin '{name}': {inert(failure)}\n")
        self.endpoint.closing = True


def _connect() -> rpc.Endpoint:
    """The connection to the kernel: the inherited socket (and the pipe the kernel writes
    to, when it passed one), its frame limit."""
    fd = int(os.environ.pop("CONDUIT_RPC_FD"))
    rfd = int(os.environ.pop("CONDUIT_RPC_IN_FD", fd))
    # Programs the plugin starts must not hold the connection open: the kernel has to see
    # EOF as soon as this process dies.
    os.set_inheritable(fd, False)
    os.set_inheritable(rfd, False)
    max_frame = int(os.environ.pop("CONDUIT_RPC_MAX_FRAME", str(rpc.MAX_FRAME)))
    return rpc.Endpoint(rpc.Channel(rfd, fd, max_frame=max_frame))


#: the limits this host applied to itself (0 = none), for the errors that name them
LIMITS = {"memory-mb": 0, "max-file-mb": 0, "max-processes": 0}
# glibc's malloc arenas a host may have: each reserves 64 MiB of address space, and with
# up to 8 per core a pool of threads would spend the memory limit on reservations alone.
# Under the GIL more arenas buy little.
_MALLOC_ARENAS = 4


def _prepare_process() -> None:
    """Restrict this process before any plugin code is imported: the limits the kernel
    passed (``CONDUIT_HOST_MEMORY_MB`` as RLIMIT_AS, ``CONDUIT_HOST_MAX_FILE_MB`` as
    RLIMIT_FSIZE; ``CONDUIT_HOST_MAX_PROCESSES`` goes to the sandbox, which counts
    processes in the host's own user namespace), then the sandbox the grants ask for (see
    conduit.security.sandbox for the order of its steps). The limits are hard: neither
    the plugin nor a program it runs can raise them."""
    for key in LIMITS:
        value = os.environ.pop("CONDUIT_HOST_" + key.upper().replace("-", "_"), "")
        LIMITS[key] = max(0, int(value or 0))
    from conduit.security.sandbox import apply as apply_sandbox
    from conduit.security.sandbox import lower_limit

    if LIMITS["memory-mb"] or LIMITS["max-file-mb"]:
        import resource

        if LIMITS["memory-mb"]:
            if sys.platform == "linux":
                from conduit.security.landlock import libc

                m_arena_max = -8
                libc().mallopt(m_arena_max, _MALLOC_ARENAS)  # glibc's; musl ignores it
            limit = lower_limit(resource.RLIMIT_AS, LIMITS["memory-mb"] << 20)
            LIMITS["memory-mb"] = limit >> 20
        if LIMITS["max-file-mb"]:
            # Python ignores SIGXFSZ: a write past the limit fails with EFBIG (reported
            # by _limit_reached); programs the plugin runs are stopped by the signal.
            limit = lower_limit(resource.RLIMIT_FSIZE, LIMITS["max-file-mb"] << 20)
            LIMITS["max-file-mb"] = limit >> 20
    apply_sandbox(max_processes=LIMITS["max-processes"])


def _interruptible(endpoint: rpc.Endpoint) -> None:
    """SIGINT (Ctrl-C reaches this process too, and the kernel forwards cancellations)
    interrupts a running request; between requests it is ignored, so that a late signal
    never kills the host."""
    # signal's C half: the signal module itself imports enum (7 ms of a host's start here)
    import _signal  # type: ignore[import-not-found]

    def on_sigint(signum: int, frame: object) -> None:
        # Once per request: Ctrl-C reaches this process and the kernel forwards it as
        # well, and the second signal must not break the "cancelled" answer of the first.
        if endpoint.busy and not endpoint.sigint_taken:
            endpoint.sigint_taken = True
            raise KeyboardInterrupt

    _signal.signal(_signal.SIGINT, on_sigint)


def main() -> None:
    """Entry point of the child process."""
    if sys.flags.no_site:  # started with -S (ProcessHost): what site would have added
        import builtins

        builtins.exit = builtins.quit = sys.exit  # type: ignore[assignment]
    endpoint = _connect()
    _prepare_process()
    _interruptible(endpoint)
    # Whatever plugin code prints (in a command, a hook or a service) goes to the kernel,
    # which writes it where its own output goes. The real fds 1 and 2 stay the terminal's
    # for the programs a plugin runs.
    encoding = sys.stdout.encoding if sys.stdout else "utf-8"
    sys.stdout = _Stream(endpoint, "stdout", False, encoding)
    sys.stderr = _Stream(endpoint, "stderr", False, encoding)
    child = Child(endpoint)
    endpoint.handlers.update(
        {
            "initialize": child.initialize,
            "plugin.activate": child.activate,
            "command.run": child.run,
            "hook.call": child.hook_call,
            "service.call": child.service_call,
            "health": child.health,
            "metrics": child.metrics,
            "shutdown": child.shutdown,
        }
    )
    # `$/cancel` needs no handler: the kernel also sends SIGINT, which interrupts the
    # running command; the notification is for hosts that read while they work.
    endpoint.notifications["$/cancel"] = lambda params: None
    try:
        endpoint.serve()
    except rpc.ProtocolError as exc:
        os.write(2, f"conduit plugin host: {exc}\n".encode())
        os._exit(70)
    os._exit(0)
