"""The process host: a plugin in a child process of its own, spoken to over JSON-RPC.

The child is started lazily, the first time the plugin is needed, directly with
``sys.executable`` (no shim; without ``site`` when the kernel's ``sys.path`` is all it
needs), and gets one end of a socketpair to write to and the read end of a pipe as
inherited file descriptors, so its stdin, stdout and stderr stay the terminal's.
Everything that can go wrong in the child stays there and becomes one
:class:`HostError` naming the plugin:

==========================  ============================================================
fault                       what the user sees (exit 3), and what happens to the child
==========================  ============================================================
crash, ``os._exit``,        "its host crashed (killed by signal SIGSEGV) while ..."
signal, killed from outside
no answer in time, or the   "did not answer ... within N s; its host was stopped"
request not read in time
oversized or garbled frame  "its host broke the protocol (...); it was stopped"
memory limit                the plugin's MemoryError, with the limit named (exit 1), or
                            the crash it causes
file size limit             the plugin's OSError (EFBIG) with the limit named (exit 1),
                            or, killed by SIGXFSZ, "its host was stopped ...: it wrote
                            past the file size limit of N MB"
process limit               the plugin's OSError (EAGAIN) or RuntimeError (no thread),
                            and a hint naming ``max-processes``
==========================  ============================================================

After any of these the next call in the same kernel starts a new child at once. Only a
child that failed to *start* (it died, hung or broke the protocol before it answered
``initialize``) holds the next start back, for 0.1 s, doubling while starts keep failing
(up to 5 s); a successful start resets it. A restart runs as the kernel (not as the plugin
whose call triggered it: the in-process guard does not charge it to that plugin), with
the kernel's environment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from conduit import rpc
from conduit.errors import (
    EXIT_FAILURE,
    EXIT_PLUGIN_LOAD,
    ConduitError,
    HostError,
    RemotePluginError,
    UsageError,
)

if TYPE_CHECKING:
    import socket

    from conduit.hosts.base import HostContext, KernelPort
    from conduit.hosts.zygote import Spawned
    from conduit.indexer.records import PluginRec
    from conduit.security import sandbox
    from conduit.timing import Profile

__all__ = ["TEMPLATE", "ProcessHost", "ProcessSettings", "ServiceProxy", "preload"]

#: set in a command forked by the warm kernel (conduit.warm.server): the socket of its
#: host template (conduit.hosts.zygote), which Python hosts are forked from instead of
#: starting an interpreter each
TEMPLATE: socket.socket | None = None

_CHILD = "from conduit.hosts._child import main; main()"
# Started with -S: the kernel's sys.path comes in the arguments instead of from site
# (.pth files, sitecustomize look-ups: a few ms of every host's start).
_CHILD_NO_SITE = "import sys; sys.path[:] = sys.argv[1:]; del sys.argv[1:]; " + _CHILD
# Where the import finders of a kernel whose sys.path is all a child needs come from: the
# standard ones, setuptools' distutils shim and pytest's assertion rewriting (test modules
# only). Anything else (an editable install's finder, installed by a .pth file) needs site.
_PLAIN_FINDERS = ("_frozen_importlib", "_distutils_hack", "_pytest.", "zipimport")
_FAULTY = "the plugin is faulty: report it to its author, or disable it"
_RAISE_FILE_LIMIT = (
    "if the plugin needs larger files, raise 'max-file-mb' in the config's [process] "
    "table (0 = no limit)"
)


class ProcessSettings:
    """The ``[process]`` table of the config."""

    def __init__(self, table: dict[str, Any] | None = None) -> None:
        table = table or {}
        self.timeout = float(table.get("timeout", 30.0)) or None  # 0 = no limit
        self.command_timeout = float(table.get("command-timeout", 0.0)) or None
        # The limits' defaults are conduit.config.ProcessSettings' (the index always has
        # them; these apply to a host made without a config, as in tests).
        self.memory_mb = int(table.get("memory-mb", 2048))  # RLIMIT_AS; 0 = no limit
        self.max_processes = int(table.get("max-processes", 512))  # 0 = no limit
        self.max_file_mb = int(table.get("max-file-mb", 4096))  # RLIMIT_FSIZE; 0 = no limit
        # an executable's own RLIMIT_AS (0 = none): a JVM or Node.js reserves far more
        # address space than it uses, and does not start under memory-mb's default
        self.executable_memory_mb = int(table.get("executable-memory-mb", 0))
        self.codec = str(table.get("codec", "json"))
        self.max_frame = int(table.get("max-frame-mb", 16)) * 1024 * 1024
        self.cancel_grace = float(table.get("cancel-grace", 2.0))


def describe_exit(status: int | None) -> str:
    if status is None:
        return "it stopped answering"
    if status < 0:
        try:
            return f"killed by signal {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exited with status {status}"


class ProcessHost:
    """Runs one plugin (or several trusted ones) in a child process."""

    kind = "process"

    def __init__(
        self,
        kernel: KernelPort,
        settings: ProcessSettings | None = None,
        *,
        command: list[str] | None = None,
    ) -> None:
        """``command`` starts a host that speaks the protocol on its stdin and stdout (an
        executable plugin in any language); by default the Python host is started and
        reached over an inherited socket."""
        self.kernel = kernel
        self.settings = settings or ProcessSettings()
        self.command = command
        self.proc: subprocess.Popen[bytes] | Spawned | None = None
        self.endpoint: rpc.Endpoint | None = None
        self._sock: socket.socket | None = None
        self._pipe: int | None = None  # the write end of the pipe to the child
        #: starts that failed in a row, the time before which no new start is tried, and
        #: what went wrong with the last one
        self._failures = 0
        self._retry_at = 0.0
        self._start_failure = ""
        #: between a child's spawn and its answer to ``initialize``
        self._starting = False
        self.plugins: set[str] = set()
        self._sandbox: sandbox.Plan | None = None
        #: the records of the plugins activated here, to start them again after a crash
        self._records: dict[str, PluginRec] = {}
        #: plugins whose child said they have a metrics() method
        self._metrics: set[str] = set()

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self.endpoint is not None

    def _start(self, name: str, profile: Profile) -> rpc.Endpoint:
        import socket

        now = time.monotonic()
        if now < self._retry_at:
            raise HostError(
                name,
                f"its host failed to start ({self._start_failure}); "
                f"restarting is held back for {self._retry_at - now:.1f} s",
                hint="try again in a moment; 'conduit plugins doctor' shows broken plugins",
            )
        env = dict(os.environ)
        env["CONDUIT_RPC_MAX_FRAME"] = str(self.settings.max_frame)
        # where the kernel keeps caches (single-file plugins' dependencies): the child may
        # not see CONDUIT_HOME or XDG_* in a sandbox, and must look in the same place
        env["CONDUIT_HOST_CACHE_DIR"] = self.kernel.paths.cache_dir
        settings = self.settings
        # The limits, which the Python host applies to itself (hosts/_child.py); 0 = none.
        for key, value in (
            ("CONDUIT_HOST_MEMORY_MB", settings.memory_mb),
            ("CONDUIT_HOST_MAX_FILE_MB", settings.max_file_mb),
            ("CONDUIT_HOST_MAX_PROCESSES", settings.max_processes),
        ):
            if value:
                env[key] = str(value)
        if self.command is not None:
            # stdio transport: the executable's stdout is the channel, stderr its log.
            # Its address space and file size are limited between fork and exec; it has no
            # user namespace of its own, in which alone a process limit can be counted.
            import resource

            from conduit.security.sandbox import lower_limit

            limits = [
                (which, mb << 20)
                for which, mb in (
                    (resource.RLIMIT_AS, settings.executable_memory_mb),
                    (resource.RLIMIT_FSIZE, settings.max_file_mb),
                )
                if mb
            ]

            def limit() -> None:  # runs in the child between fork and exec
                for which, value in limits:
                    lower_limit(which, value)

            with profile.span(f"host:spawn:{name}"):
                try:
                    self.proc = subprocess.Popen(
                        self.command,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        env=env,
                        # preexec_fn is safe here: the kernel has started no threads.
                        preexec_fn=limit if limits else None,
                    )
                except OSError as exc:
                    raise HostError(
                        name, f"cannot start {self.command[0]}: {exc.strerror}"
                    ) from None
            assert self.proc.stdin is not None and self.proc.stdout is not None
            # writes wait for room only until the call's deadline (rpc.Channel._write)
            os.set_blocking(self.proc.stdin.fileno(), False)
            channel = rpc.Channel(
                self.proc.stdout.fileno(),
                self.proc.stdin.fileno(),
                max_frame=self.settings.max_frame,
                name=name,
            )
        else:
            from conduit.security import sandbox

            index, paths = self.kernel.index, self.kernel.paths
            # Inline dependencies of single-file plugins are installed here, outside the
            # sandbox, which may only read them.
            deps: list[str] = []
            for plugin in sandbox.host_plugins(index, name):
                rec = index["plugins"].get(plugin)
                if rec is not None and rec.get("dependencies"):
                    from conduit.store.envs import ensure_installed

                    deps.append(ensure_installed(rec, cache_dir=paths.cache_dir))
            # The sandbox: only granted variables in env, the policy the child applies
            # before importing plugin code, and a proxy for its HTTP (docs/permissions.md).
            plan = self._sandbox = sandbox.prepare(index, paths, name, extra_read=deps)
            env = plan.child_env(env)
            env.pop("CONDUIT_RPC_TRACE", None)  # the kernel's trace shows both directions
            # The child writes to a socket, which the kernel reads with a timeout set on it
            # (SO_RCVTIMEO, no select per read), and reads from a pipe: a pipe costs a few
            # microseconds less per message than a socket here (docs/performance.md).
            parent, child = socket.socketpair()
            to_child, self._pipe = os.pipe()
            env["CONDUIT_RPC_FD"] = str(child.fileno())
            env["CONDUIT_RPC_IN_FD"] = str(to_child)
            keep = (child.fileno(), to_child, *plan.pass_fds)
            try:
                with profile.span(f"host:spawn:{name}"):
                    if TEMPLATE is not None:
                        self.proc = self._from_template(name, env, keep)
                    else:
                        self.proc = subprocess.Popen(
                            _child_argv(self.kernel.paths.cache_dir), pass_fds=keep, env=env
                        )
            finally:
                child.close()
                os.close(to_child)
            plan.started()
            self._sock = parent
            # writes wait for room only until the call's deadline (rpc.Channel._write)
            os.set_blocking(self._pipe, False)
            channel = rpc.Channel(
                parent.fileno(),
                self._pipe,
                max_frame=self.settings.max_frame,
                sock=parent,
                name=name,
            )
        # A Ctrl-C never drops what was read from the child (its last output, its answer).
        rpc.hold_interrupts()
        self.endpoint = rpc.Endpoint(
            channel,
            handlers={"kernel/service": self._kernel_service, "kernel/hook": self._kernel_hook},
            notifications={"$/output": self._output},
            # Ctrl-C while serving the child's call is the user's, not the child's.
            cancel_on_interrupt=False,
            hold_interrupts=True,
        )
        return self.endpoint

    def _from_template(self, name: str, env: dict[str, str], keep: tuple[int, ...]) -> Spawned:
        from conduit.hosts.zygote import spawn

        assert TEMPLATE is not None
        try:
            return spawn(TEMPLATE, env, keep)
        except OSError as exc:
            raise HostError(name, f"the warm kernel's host template failed: {exc}") from None

    def _stop(self, kill: bool, answered: bool = False) -> int | None:
        """Stop the child (politely unless ``kill``) and return its exit status.

        ``answered``: it has answered ``shutdown``, and has nothing left to do. A host
        the warm kernel's template forked is then ended at once, and this returns (no
        status) as soon as none of its threads can run again (:meth:`Spawned.halt`), not
        once its memory is freed: about 1 ms of every process plugin's command."""
        proc, self.proc, self.endpoint = self.proc, None, None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._pipe is not None:
            os.close(self._pipe)
            self._pipe = None
        if proc is None:
            return None
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
        halt = getattr(proc, "halt", None)
        if answered and halt is not None:
            halt(timeout=2.0)
            return None
        if kill and proc.poll() is None:
            proc.kill()
        try:
            return proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def _failed_start(self, cause: str) -> None:
        """The child being started failed (``cause``): hold the next start back."""
        self._starting = False
        self._failures += 1
        self._retry_at = time.monotonic() + min(0.1 * 2 ** (self._failures - 1), 5.0)
        self._start_failure = cause

    # -- calls ---------------------------------------------------------------------------
    def call(self, name: str, method: str, params: dict[str, Any], timeout: float | None) -> Any:
        """One request to the child, every failure turned into a HostError naming ``name``.

        If the child has died since the last call (a crash, or killed while idle), a new
        one is started first, unless the back-off holds it back. A child killed while idle
        is noticed when the request cannot be written (no liveness check per call).
        """
        endpoint = self.endpoint
        if endpoint is not None:
            try:
                return endpoint.request(method, params, timeout)
            except rpc.NotSent:
                pass  # it died since the last call: start another one below
            except BaseException as exc:
                raise self._failure(name, endpoint, method, timeout, exc) from None
        return self._request(name, self._revive(name), method, params, timeout)

    def call_many(
        self,
        name: str,
        method: str,
        params: list[dict[str, Any]],
        timeout: float | None,
    ) -> list[Any]:
        """Several requests to the child, written without waiting for each answer
        (:meth:`rpc.Endpoint.request_many`); their results in order."""
        endpoint = self.endpoint
        if endpoint is not None:
            try:
                return endpoint.request_many(method, params, timeout)
            except rpc.NotSent:
                pass  # it died since the last call: start another one below
            except BaseException as exc:
                raise self._failure(name, endpoint, method, timeout, exc) from None
        endpoint = self._revive(name)
        try:
            return endpoint.request_many(method, params, timeout)
        except BaseException as exc:
            raise self._failure(name, endpoint, method, timeout, exc) from None

    def _revive(self, name: str) -> rpc.Endpoint:
        if name not in self._records:
            self._stop(kill=True)
            raise HostError(name, "its host is not running")
        return self._restart(name)

    def _restart(self, name: str) -> rpc.Endpoint:
        """Start a new child for the plugins activated here (their registrations in the
        kernel stay: the proxies reach whichever child is current).

        Whoever's call finds the child gone (a guarded in-process plugin calling one of
        its services, say), the restart is the kernel's: with the kernel's environment,
        and not checked against the caller's grants.
        """
        from conduit.security.guard import TRUSTED

        with TRUSTED:
            self._stop(kill=True)  # reap the dead one
            profile = self.kernel.profile
            endpoint = self._start(name, profile)
            records = [self._records[n] for n in sorted(self._records)]
            self._handshake(name, endpoint, records, profile)
        return endpoint

    def _handshake(
        self, name: str, endpoint: rpc.Endpoint, records: list[PluginRec], profile: Profile
    ) -> dict[str, Any]:
        """``initialize`` a new child with ``records``; a child that fails it is stopped."""
        from conduit.sdk import API_VERSION

        codecs = ["msgpack", "json"] if self.settings.codec == "msgpack" else ["json"]
        # Imported while the child starts (msgspec takes tens of ms), not after its answer.
        fast = rpc.codec("msgpack") if "msgpack" in codecs else None
        params = {
            "protocol": rpc.PROTOCOL_VERSION,
            "conduit_api": API_VERSION,
            "codecs": codecs,
            "plugins": [self._activation_params(record) for record in records],
        }
        self._starting = True  # until it has answered
        try:
            with profile.span(f"host:initialize:{name}"):
                result = self._request(name, endpoint, "initialize", params, self.settings.timeout)
        except BaseException:
            self._starting = False
            self._stop(kill=False)  # it refused (or failed to boot the plugin)
            raise
        try:
            plugins = result["plugins"]
            chosen = result.get("codec", "json")
            if not isinstance(plugins, list) or len(plugins) != len(records):
                raise TypeError
            if chosen not in codecs:
                raise ValueError
            if fast is not None and chosen != "json":  # "msgpack", the only other offer
                endpoint.channel.codec = fast
        except (AttributeError, KeyError, TypeError, ValueError):
            raise self._malformed(name, "initialize") from None
        self._starting = False
        self._failures = 0
        return dict(result)

    def _give_up(self, name: str, problem: str, hint: str, cause: str) -> HostError:
        """Stop the child (if it is still there); if it was starting, hold the next start
        back (``cause`` says why it failed). The error to raise."""
        self._stop(kill=True)
        if self._starting:
            self._failed_start(cause)
        return HostError(name, problem, hint=hint)

    def _malformed(self, name: str, method: str) -> HostError:
        """Stop a child that answered ``method`` with nonsense; the error to raise."""
        return self._give_up(
            name,
            f"its host broke the protocol (malformed answer to '{method}'); it was stopped",
            _FAULTY,
            f"it broke the protocol: malformed answer to '{method}'",
        )

    def _request(
        self,
        name: str,
        endpoint: rpc.Endpoint,
        method: str,
        params: dict[str, Any],
        timeout: float | None,
    ) -> Any:
        try:
            return endpoint.request(method, params, timeout)
        except BaseException as exc:
            raise self._failure(name, endpoint, method, timeout, exc) from None

    def _failure(
        self,
        name: str,
        endpoint: rpc.Endpoint,
        method: str,
        timeout: float | None,
        exc: BaseException,
    ) -> BaseException:
        """What to raise for ``exc``, raised by a request to the child."""
        if isinstance(exc, rpc.Timeout):
            return self._give_up(
                name,
                f"did not answer '{method}' within {timeout:g} s; its host was stopped",
                "raise 'timeout' (or 'command-timeout') in the config's [process] table",
                f"it did not answer '{method}' within {timeout:g} s",
            )
        if isinstance(exc, rpc.ChannelClosed):
            status = self._stop(kill=False)  # it is gone: collect its exit status
            if status == -signal.SIGXFSZ and self.settings.max_file_mb:
                limit = f"the file size limit of {self.settings.max_file_mb} MB"
                return self._give_up(
                    name,
                    f"its host was stopped during '{method}': it wrote past {limit} "
                    "([process] max-file-mb)",
                    _RAISE_FILE_LIMIT,
                    f"it wrote past {limit}",
                )
            how = describe_exit(status)
            return self._give_up(
                name,
                f"its host crashed ({how}) during '{method}'",
                "run the command again; if it keeps crashing, disable the plugin",
                f"it was {how}" if status is not None and status < 0 else f"it crashed: {how}",
            )
        if isinstance(exc, rpc.StrayOutput):
            return self._give_up(
                name,
                f"its host broke the protocol ({exc}); it was stopped",
                "a protocol host writes nothing but frames to its channel (an executable's "
                "stdout): send logs to stderr (docs/protocol.md, 'Transports')",
                "it wrote non-protocol output to its channel",
            )
        if isinstance(exc, rpc.ProtocolError):
            return self._give_up(
                name,
                f"its host broke the protocol ({exc}); it was stopped",
                _FAULTY,
                f"it broke the protocol: {exc}",
            )
        if isinstance(exc, rpc.RemoteError):
            return self._remote_error(name, exc)
        if isinstance(exc, KeyboardInterrupt):
            self._cancel(name, endpoint)
        return exc

    def _remote_error(self, name: str, exc: rpc.RemoteError) -> ConduitError:
        data = exc.data if isinstance(exc.data, dict) else {}
        if exc.code == rpc.PLUGIN_ERROR:
            kind = data.get("kind")
            if kind == "UsageError":  # bad arguments: the same usage error as in-process
                hint, usage = data.get("hint"), data.get("usage")
                return UsageError(
                    exc.message,
                    hint=hint if isinstance(hint, str) and hint else None,
                    usage=usage if isinstance(usage, str) else None,
                )
            code = EXIT_PLUGIN_LOAD if kind in ("PluginLoadError", "HostError") else EXIT_FAILURE
            return RemotePluginError(
                exc.message
                if exc.message.startswith("plugin '")
                else f"plugin '{name}': {exc.message}",
                hint=data.get("hint") or "run with --debug for the traceback",
                exit_code=code,
                trace=str(data.get("traceback", "")),
            )
        return HostError(name, f"its host refused the request: {exc.message} (code {exc.code})")

    def _cancel(self, name: str, endpoint: rpc.Endpoint) -> None:
        """Ctrl-C: ask the child to stop the request the interrupt left without an
        answer; kill the child if it will not. Nothing to do when the answer was read
        before the interrupt was raised (rpc._Held): the child is idle."""
        proc = self.proc
        rid = endpoint.interrupted
        if proc is None or rid is None:
            return
        try:
            endpoint.notify("$/cancel", {"id": rid})
            proc.send_signal(signal.SIGINT)
            deadline = time.monotonic() + self.settings.cancel_grace
            while time.monotonic() < deadline:
                message = endpoint.channel.recv(max(0.0, deadline - time.monotonic()))
                if "method" in message:
                    endpoint.handle(message)
                elif message.get("id") == rid:
                    return
        except (rpc.ProtocolError, rpc.Timeout, OSError):
            pass
        except KeyboardInterrupt:  # a second Ctrl-C: wait no longer
            self._stop(kill=True)
            raise
        self._stop(kill=True)

    # -- what the child may ask of the kernel --------------------------------------------
    def _kernel_service(self, params: dict[str, Any]) -> Any:
        # Any plugin that is or may be in the child could have sent this request: those
        # it hosts, and those its sandbox was made for (one still starting, the rest of
        # [process] shared). It asks as the least trusted of them, a third-party one if
        # there is one; an executable still starting is not listed yet, and is no built-in.
        plugins = self.kernel.index["plugins"]
        present = sorted(self.plugins.union(self._sandbox.names if self._sandbox else ()))
        caller = next(
            (n for n in present if (rec := plugins.get(n)) is None or rec["source"] != "builtin"),
            present[0] if present else "?",
        )
        try:
            service = self.kernel.service(params["service"], for_plugin=caller)
            return getattr(service, params["method"])(
                *params.get("args", []), **params.get("kwargs", {})
            )
        except ConduitError as exc:
            raise rpc.RemoteError(rpc.PLUGIN_ERROR, exc.message, {"hint": exc.hint}) from None
        except Exception as exc:  # the plugin asked for something the service cannot do
            raise rpc.RemoteError(
                rpc.PLUGIN_ERROR,
                f"service '{params.get('service')}' failed: {type(exc).__name__}: {exc}",
            ) from None

    def _kernel_hook(self, params: dict[str, Any]) -> Any:
        try:
            return self.kernel.hook(params["name"], raise_errors=True, **params.get("kwargs", {}))
        except ConduitError as exc:
            raise rpc.RemoteError(rpc.PLUGIN_ERROR, exc.message, {"hint": exc.hint}) from None

    def _output(self, params: dict[str, Any]) -> None:
        stream = sys.stderr if params.get("stream") == "stderr" else sys.stdout
        stream.write(str(params.get("data", "")))
        stream.flush()

    # -- the Host protocol ---------------------------------------------------------------
    def _activation_params(self, record: PluginRec) -> dict[str, Any]:
        tables = self.kernel.index["config"].get("plugin", {})
        config = tables.get(record["name"], {}) if isinstance(tables, dict) else {}
        data_dir = self.kernel.paths.plugin_data(record["name"])
        return {"record": dict(record), "data_dir": data_dir, "config": config}

    def activate(self, record: PluginRec, ctx: HostContext, profile: Profile) -> None:
        name = record["name"]
        if not self.alive:
            self._stop(kill=True)  # reap a child that died since
            endpoint = self._start(name, profile)
            info = self._handshake(name, endpoint, [record], profile)["plugins"][0]
            method = "initialize"
        else:
            info = self.call(
                name, "plugin.activate", self._activation_params(record), self.settings.timeout
            )
            method = "plugin.activate"
        try:
            self._register_proxies(name, info, ctx)
            _child_timing(profile, name, info.get("timing"))
        except (AttributeError, KeyError, TypeError, ValueError):
            raise self._malformed(name, method) from None
        except BaseException:
            if not self.plugins:  # a child for nothing: do not leave it running
                self._stop(kill=False)
            raise
        self.plugins.add(name)
        self._records[name] = record
        if info.get("metrics") is True:
            self._metrics.add(name)

    def _register_proxies(self, name: str, info: dict[str, Any], ctx: HostContext) -> None:
        for service in info.get("services", []):
            ctx.register_service(service, _proxy_factory(self, name, service))
        seen: dict[str, int] = {}
        for hook in info.get("hooks", []):
            # One proxy per implementation, as in-process: the hook bus sees each result.
            index = seen[hook["name"]] = seen.get(hook["name"], -1) + 1
            ctx.register_hook(
                hook["name"], self._hook_proxy(name, hook["name"], hook["args"], index)
            )
        for spec in info.get("hookspecs", []):
            ctx.register_hookspec(
                _spec_function(spec["name"], spec["args"]),
                firstresult=bool(spec.get("firstresult")),
            )

    def _hook_proxy(self, name: str, hook: str, args: list[str], index: int) -> Any:
        def call(kwargs: dict[str, Any]) -> Any:
            if self.endpoint is None and time.monotonic() < self._retry_at:
                # Its host failed to start a moment ago, and that was reported (a hook such
                # as after_command runs right after the failure): one fault, one line.
                return None
            results = self.call(
                name,
                "hook.call",
                {"plugin": name, "hook": hook, "kwargs": kwargs, "index": index},
                self.settings.timeout,
            )
            if not isinstance(results, list):
                raise self._malformed(name, "hook.call")
            return results[0] if results else None

        return _function(f"{name}:{hook}", args, call)

    def run_command(self, record: PluginRec, ctx: HostContext, argv: list[str], prog: str) -> int:
        columns, lines = terminal_size()
        params = {
            "plugin": record["name"],
            "argv": argv,
            "prog": prog,
            "cwd": os.getcwd(),
            "env": dict(os.environ)
            if self._sandbox is None
            else self._sandbox.command_env(os.environ),
            "terminal": {
                "columns": columns,
                "lines": lines,
                "stdin_tty": sys.stdin.isatty() if sys.stdin else False,
                "stdout_tty": sys.stdout.isatty(),
                "stderr_tty": sys.stderr.isatty(),
            },
        }
        result = self.call(record["name"], "command.run", params, self.settings.command_timeout)
        try:
            return int(result["exit_code"])
        except (KeyError, OverflowError, TypeError, ValueError):
            raise self._malformed(record["name"], "command.run") from None

    def health(self, name: str) -> dict[str, Any]:
        return dict(self.call(name, "health", {}, self.settings.timeout))

    def metrics(self, record: PluginRec, ctx: HostContext) -> dict[str, float] | None:
        """The plugin's ``metrics()``, asked for only when its child said it has one."""
        name = record["name"]
        if name not in self._metrics or not self.alive:
            return None
        from conduit.hosts import clean_metrics

        return clean_metrics(self.call(name, "metrics", {"plugin": name}, self.settings.timeout))

    def plugin_health(self, record: PluginRec, timeout: float | None) -> tuple[str, str]:
        """The plugin's ``health()``, run in its host (``health`` with ``plugin``); a host
        that fails or does not answer within ``timeout`` makes it ``failing``."""
        from conduit.hosts.inprocess import health_result

        name = record["name"]
        try:
            answer = self.call(name, "health", {"plugin": name}, timeout)
        except ConduitError as exc:
            return "failing", exc.message
        if not isinstance(answer, dict):
            return "failing", f"its host answered 'health' with {type(answer).__name__}"
        return health_result((answer.get("status"), str(answer.get("message", ""))))

    def deactivate(self, record: PluginRec, ctx: HostContext) -> None:
        self._metrics.discard(record["name"])
        self.plugins.discard(record["name"])
        self._records.pop(record["name"], None)
        if self.plugins:
            return
        if not self.alive:
            self._stop(kill=True)  # a child that died meanwhile: reap it, close the socket
            return
        try:
            if self.endpoint is not None:
                self.endpoint.request(
                    "shutdown", {}, timeout=min(self.settings.timeout or 5.0, 5.0)
                )
        except (rpc.ProtocolError, rpc.Timeout, rpc.RemoteError, OSError):
            self._stop(kill=True)
            return
        self._stop(kill=False, answered=True)


def _child_timing(profile: Profile, name: str, timing: object) -> None:
    """The child's import and boot times of ``name`` as the spans ``import:NAME`` and
    ``boot:NAME``, ending now (the answer comes right after the boot), for ``--profile``
    and the run journal."""
    if not isinstance(timing, dict):
        return
    end = time.perf_counter_ns()
    boot = int(float(timing.get("boot_ms", 0)) * 1e6)
    imp = int(float(timing.get("import_ms", 0)) * 1e6)
    depth = profile.depth + 1
    profile.spans.append((f"import:{name}", end - boot - imp, end - boot, depth))
    profile.spans.append((f"boot:{name}", end - boot, end, depth))


def terminal_size() -> tuple[int, int]:
    """Columns and lines, as ``shutil.get_terminal_size()`` finds them (``COLUMNS`` and
    ``LINES`` first, then the terminal of ``sys.__stdout__``, else 80x24), without
    importing :mod:`shutil`: it imports zlib, bz2 and lzma, about 3.8 ms of every
    process-isolated command."""
    size = [0, 0]
    for i, name in enumerate(("COLUMNS", "LINES")):
        try:  # noqa: SIM105 -- contextlib is not on a command's path
            size[i] = int(os.environ[name])
        except (KeyError, ValueError):
            pass
    if size[0] <= 0 or size[1] <= 0:
        try:
            found = os.get_terminal_size(sys.__stdout__.fileno())  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            found = os.terminal_size((0, 0))
        size = [size[0] if size[0] > 0 else found.columns, size[1] if size[1] > 0 else found.lines]
    return (size[0] if size[0] > 0 else 80, size[1] if size[1] > 0 else 24)


def preload() -> None:
    """Import what the warm kernel's host template needs to fork Python hosts
    (conduit.hosts.zygote, which imports the host child's own modules when it starts)
    and the sandbox's kernel side: the server calls it before it forks anything."""
    import conduit.hosts.zygote
    import conduit.security.sandbox  # noqa: F401


def _child_argv(cache_dir: str) -> list[str]:
    """The command line of a Python host child: without site when the kernel's
    ``sys.path`` is all the child needs (site's .pth files installed no import finder and
    no coverage measurement) or when it runs from a bundle, then with the kernel's
    ``sys.path`` in the arguments, less the current directory and the private
    environments of single-file plugins."""
    from conduit.paths import BUNDLE

    finders = [*sys.meta_path, *sys.path_hooks]
    plain = "coverage" not in sys.modules and all(
        str(getattr(f, "__module__", "")).startswith(_PLAIN_FINDERS) for f in finders
    )
    # A bundle's kernel (conduit bundle) imports nothing from the interpreter's
    # site-packages: nor does its child, whatever .pth files installed there.
    if not plain and BUNDLE is None:
        return [sys.executable, "-c", _CHILD]
    from conduit.index import site_dirs

    envs = os.path.join(cache_dir, "envs") + os.sep
    path = [p for p in site_dirs() if not p.startswith(envs)]
    return [sys.executable, "-S", "-c", _CHILD_NO_SITE, *path]


class ServiceProxy:
    """A service provided by a process plugin: each method call is one RPC."""

    def __init__(self, host: ProcessHost, plugin: str, service: str) -> None:
        self._host = host
        self._plugin = plugin
        self._service = service

    def __getattr__(self, method: str) -> Any:
        host, plugin, service = self._host, self._plugin, self._service
        timeout = host.settings.timeout
        call_host = host.call

        def call(*args: Any, **kwargs: Any) -> Any:
            return call_host(
                plugin,
                "service.call",
                {"service": service, "method": method, "args": args, "kwargs": kwargs},
                timeout,
            )

        setattr(self, method, call)  # later calls skip __getattr__
        return call

    def __conduit_call_many__(self, method: str, calls: list[tuple[Any, ...]]) -> list[Any]:
        """``method`` called with each of ``calls``, pipelined: what
        :func:`conduit.sdk.call_many` uses for a proxy (it looks the name up on the type,
        so that :meth:`__getattr__` never takes it for a method of the service)."""
        return self._host.call_many(
            self._plugin,
            "service.call",
            [
                {"service": self._service, "method": method, "args": args, "kwargs": {}}
                for args in calls
            ],
            self._host.settings.timeout,
        )


def _proxy_factory(host: ProcessHost, plugin: str, service: str) -> Any:
    return lambda: ServiceProxy(host, plugin, service)


def _function(name: str, args: list[str], body: Any) -> Any:
    """A function with exactly the parameters ``args`` that calls ``body(kwargs)``.

    pluggy matches hook implementations to specs by their parameter names (from the code
    object), so a proxy for a hook implemented in another process needs real ones.
    """
    import keyword

    for arg in args:
        if not arg.isidentifier() or keyword.iskeyword(arg):
            raise ValueError(f"invalid hook argument name {arg!r}")
    params = ", ".join(args)
    mapping = ", ".join(f"{a!r}: {a}" for a in args)
    namespace: dict[str, Any] = {"_body": body}
    exec(f"def proxy({params}):\n    return _body({{{mapping}}})\n", namespace)
    function = namespace["proxy"]
    function.__qualname__ = function.__name__ = name
    return function


def _spec_function(name: str, args: list[str]) -> Any:
    spec = _function(name, args, lambda kwargs: None)
    spec.__doc__ = "A hook declared by a process plugin."
    return spec
