"""The WebAssembly host: plugins run in wasmtime, with only what the user granted.

Imported only when a WebAssembly plugin is activated; ``wasmtime`` (the optional extra
``conduit-devtool[wasm]``) only when one runs. Two kinds of plugin:

* **WASI preview1 command modules** (any language): ``_start`` runs with
  ``argv = [COMMAND, ARGS...]``, the terminal's stdin, stdout and stderr, and the exit
  code from ``proc_exit``. Conduit's services are core-module imports from ``"conduit"``
  (see :data:`CORE_IMPORTS` and docs/wasm.md).
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
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found,unused-ignore]  # loaded at start-up
import _thread
import os
import sys
from typing import TYPE_CHECKING, Any, NamedTuple

from conduit.errors import HostError, PluginLoadError

if TYPE_CHECKING:
    from collections.abc import Callable

    from conduit.hosts.base import HostContext, KernelPort
    from conduit.indexer.records import PluginRec
    from conduit.security.capabilities import Capability
    from conduit.timing import Profile

__all__ = [
    "CORE_IMPORTS",
    "ArtifactCache",
    "Runtime",
    "WasmHost",
    "WasmSettings",
    "describe",
    "engine_description",
    "is_component",
    "runtime",
]

INSTALL_HINT = "install the extra: pip install 'conduit-devtool[wasm]'"
ARTIFACT_MAGIC = b"CONDUIT-CWASM\n"
#: the epoch ticker's period; deadlines are rounded up to whole ticks
TICK = 0.01
MIB = 1024 * 1024
#: the import module of Conduit's services for core modules
CORE_MODULE = "conduit"
#: name -> (parameter count, result count): every parameter and result is an i32
CORE_IMPORTS = {
    "log": (3, 0),  # (level, ptr, len)
    "env": (2, 1),  # (name_ptr, name_len) -> len | -1 unset
    "http": (2, 1),  # (request_json_ptr, len) -> len | -2 failed
    "exec": (2, 1),  # (request_json_ptr, len) -> len | -2 failed
    "result": (2, 1),  # (ptr, capacity) -> bytes copied from the last result
}
WIT_PACKAGE = "conduit:plugin/host@0.1.0"
WIT_COMMAND = "conduit:plugin/command@0.1.0"


class WasmSettings(NamedTuple):
    """The ``[wasm]`` table of the config (validated by :mod:`conduit.config`).

    A NamedTuple rather than a dataclass: dataclasses imports inspect and ast, which
    would cost every WebAssembly command a few milliseconds."""

    timeout: float = 10.0  # seconds of wall-clock time per command; 0 = none
    memory_mb: int = 256  # linear memory per store
    fuel: int = 0  # instructions-ish per command; 0 = not metered (no fuel in the engine)
    max_stack_kb: int = 512  # wasm stack; deeper recursion traps as a stack overflow
    http_timeout: float = 30.0

    @classmethod
    def from_table(cls, table: object) -> WasmSettings:
        """The settings of a validated ``[wasm]`` table (kebab-case keys); the defaults
        above for what it leaves out."""
        t = table if isinstance(table, dict) else {}
        given = {f: t[f.replace("_", "-")] for f in cls._fields if f.replace("_", "-") in t}
        return cls()._replace(**given)


def _sha256_hex(data: bytes) -> str:
    """SHA-256 of a short ``data`` (a cache key) in hex, without :mod:`hashlib`: importing
    it loads OpenSSL's libcrypto (about 11 million instructions, 5% of a cold WebAssembly
    command); the interpreter's own ``_sha256`` gives the same digest. hashlib where
    there is none."""
    try:
        from _sha256 import sha256  # type: ignore[import-not-found,unused-ignore]  # 3.11
    except ImportError:
        try:
            from _sha2 import sha256  # type: ignore[import-not-found,no-redef,unused-ignore]  # 3.12+
        except ImportError:
            from hashlib import sha256  # type: ignore[assignment,unused-ignore]
    return str(sha256(data).hexdigest())


def import_wasmtime() -> Any:
    """``import wasmtime``, with the cyclic garbage collector held off while it runs.

    wasmtime-py's import defines thousands of ctypes types; with the collector on it
    runs many collections over them (16 million instructions, about 7% of a cold
    WebAssembly command). Afterwards everything alive, which is module-level state
    that lives as long as the process, is moved to the permanent generation
    (:func:`gc.freeze`) so that later collections, and the one at interpreter exit,
    do not walk it again (another 17 million). Done once per process; the collector is
    left as it was found (enabled or not).
    """
    mod = sys.modules.get("wasmtime")
    if mod is not None:
        return mod
    import gc

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        import wasmtime
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()
    return wasmtime


def is_component(data: bytes) -> bool:
    """Whether ``data`` is a component (layer 1) rather than a core module."""
    return data[:4] == b"\0asm" and data[6:8] == b"\x01\x00"


def _wasmtime_version() -> str:
    """wasmtime-py's version from its dist-info name (importlib.metadata costs more)."""
    import wasmtime

    pkg_dir = os.path.dirname(os.path.dirname(wasmtime.__file__ or ""))
    try:
        for entry in os.listdir(pkg_dir):
            if entry.startswith("wasmtime-") and entry.endswith(".dist-info"):
                return entry[len("wasmtime-") : -len(".dist-info")]
    except OSError:
        pass
    import importlib.metadata

    return importlib.metadata.version("wasmtime")


def engine_description(settings: WasmSettings) -> str:
    """Everything that makes a compiled artifact loadable: part of the cache key."""
    import platform

    return (
        f"wasmtime={_wasmtime_version()};arch={platform.machine()};epoch=1;"
        f"fuel={int(bool(settings.fuel))};max-stack={settings.max_stack_kb * 1024};"
        "component-model=1"
    )


def _make_engine(settings: WasmSettings) -> Any:
    import wasmtime

    config = wasmtime.Config()
    config.epoch_interruption = True
    config.consume_fuel = bool(settings.fuel)
    config.max_wasm_stack = settings.max_stack_kb * 1024
    config.wasm_component_model = True
    return wasmtime.Engine(config)


class ArtifactCache:
    """Compiled modules and components under ``CACHE/wasm/``, two files per key.

    ``KEY.cwasm`` is wasmtime's serialized artifact, loaded with ``deserialize_file``
    (mapped, not copied: an 18 MB component loads in about a millisecond);
    ``KEY.meta`` is ``ARTIFACT_MAGIC`` plus one line naming the engine description and
    the module's hash. wasmtime only loads an artifact into an engine with a compatible
    configuration; the meta line lets Conduit notice a mismatch before asking it, and a
    refusal by wasmtime is handled the same way: compile, replace.
    """

    def __init__(self, directory: str, description: str) -> None:
        self.directory = directory
        self.description = description
        #: what the last load did: "hit", "compiled" or "rebuilt: REASON" (tests, --profile)
        self.last = ""

    def path_for(self, digest: str) -> str:
        key = _sha256_hex(f"{self.description}\n{digest}".encode())[:32]
        return os.path.join(self.directory, f"{key}.cwasm")

    def load(self, engine: Any, digest: str, component: bool, read: Callable[[], bytes]) -> Any:
        """The compiled form of the module with hash ``digest``, from the cache or
        compiled from ``read()`` (and stored)."""
        import wasmtime

        kind: Any
        if component:  # wasmtime.component costs an import of its own
            from wasmtime import component as wc

            kind = wc.Component
        else:
            kind = wasmtime.Module
        path = self.path_for(digest)
        meta = ARTIFACT_MAGIC + f"{self.description} module={digest}\n".encode()
        reason = "compiled"
        try:
            with open(path[: -len(".cwasm")] + ".meta", "rb") as f:
                found = f.read()
        except OSError:
            found = None
        if found is not None:
            if found != meta:
                reason = "rebuilt: built by another engine configuration or module"
            else:
                try:
                    loaded = kind.deserialize_file(engine, path)
                except wasmtime.WasmtimeError as exc:
                    reason = f"rebuilt: wasmtime refused the artifact ({_first_line(exc)})"
                else:
                    self.last = "hit"
                    return loaded
        compiled = kind(engine, read())
        self.last = reason
        self.store(path, meta, bytes(compiled.serialize()))
        return compiled

    def identify(self, path: str) -> tuple[str, bool, bytes | None]:
        """``(sha256, is_component, data or None)`` of the module at ``path``.

        Hashing an 18 MB component costs more than loading its artifact, so the answer
        is remembered per (path, inode, size, mtime, ctime) in a small ``src-*`` file; then the
        module is not even read.
        """
        st = os.stat(path)
        stamp = f"{os.path.realpath(path)}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}"
        stamp += f"\0{st.st_ino}"  # a file replaced by rename is another inode
        name = "src-" + _sha256_hex(stamp.encode())[:32]
        memo = os.path.join(self.directory, name)
        try:
            with open(memo, "rb") as f:  # bytes: a text file would import encodings.ascii
                digest, kind = f.read().decode().split()
            return digest, kind == "component", None
        except (OSError, ValueError, UnicodeDecodeError):
            pass
        with open(path, "rb") as f:
            data = f.read()
        import hashlib  # a miss only: OpenSSL hashes an 18 MB component several times faster

        digest = hashlib.sha256(data).hexdigest()
        component = is_component(data)
        try:
            from conduit.fs import atomic_write

            kind = "component" if component else "module"
            atomic_write(memo, f"{digest} {kind}\n".encode())
        except OSError:
            pass
        return digest, component, data

    @staticmethod
    def store(path: str, meta: bytes, artifact: bytes) -> None:
        from conduit.fs import atomic_write, locked

        try:
            with locked(path):
                # The artifact first: a reader that sees the new meta sees its artifact.
                atomic_write(path, artifact)
                atomic_write(path[: -len(".cwasm")] + ".meta", meta)
        except OSError:
            pass  # an unwritable cache only costs the next run a compile


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Runtime:
    """One engine, its epoch ticker and its artifact cache (one per settings)."""

    def __init__(self, settings: WasmSettings, cache_dir: str) -> None:
        self.settings = settings
        self.engine = _make_engine(settings)
        self.cache = ArtifactCache(os.path.join(cache_dir, "wasm"), engine_description(settings))
        self._lock = _thread.allocate_lock()
        self._running = 0
        #: held while the ticker runs; released to stop it
        self._stop: Any = None
        self._wakeup: tuple[int, int | None] = (-1, None)
        #: set by the ticker on Ctrl-C: the next interrupt trap is the user's, not a timeout
        self.interrupted = False

    def load(self, path: str) -> tuple[Any, bool]:
        """Compile or fetch the artifact of the ``.wasm`` file at ``path``."""
        digest, component, data = self.cache.identify(path)

        def read() -> bytes:
            if data is not None:
                return data
            with open(path, "rb") as f:
                return f.read()

        return self.cache.load(self.engine, digest, component, read), component

    @property
    def deadline_ticks(self) -> int:
        """A store's epoch deadline: the timeout in ticks, or 1 tick when there is no
        timeout (then the epoch only advances on Ctrl-C)."""
        if not self.settings.timeout:
            return 1
        return max(1, int(self.settings.timeout / TICK + 0.999))

    # While a command runs, one daemon thread advances the epoch every TICK (if there is
    # a timeout) and on Ctrl-C: Python runs its SIGINT handler only between bytecodes,
    # never inside a call into wasm, so the signal also goes to a wakeup pipe that this
    # thread polls every TICK, and it pushes the epoch past the deadline. The guest traps
    # as interrupted, and the pending KeyboardInterrupt is raised once the call returns.
    # Built on _thread and _signal, which the interpreter has loaded at start-up:
    # threading, signal and select would cost a cold command 8 million instructions.
    def __enter__(self) -> Runtime:
        with self._lock:
            self._running += 1
            if self._stop is None:
                stop = self._stop = _thread.allocate_lock()
                stop.acquire()
                r, w = os.pipe()
                os.set_blocking(r, False)
                os.set_blocking(w, False)
                try:
                    previous: int | None = _signal.set_wakeup_fd(w, warn_on_full_buffer=False)
                except ValueError:  # not the main thread: Ctrl-C is not ours to see
                    previous = None
                self._wakeup = (w, previous)
                # a _thread thread is a daemon: the interpreter does not wait for it
                _thread.start_new_thread(self._tick, (stop, r))
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._running -= 1
            if self._running == 0 and self._stop is not None:
                w, previous = self._wakeup
                if previous is not None:
                    _signal.set_wakeup_fd(previous)
                # The ticker wakes, stops and closes its end. Nothing is written to the
                # pipe here: the ticker may have closed its end already (EPIPE).
                self._stop.release()
                self._stop = None
                os.close(w)

    def _tick(self, stop: Any, r: int) -> None:
        engine = self.engine
        timed = bool(self.settings.timeout)
        try:
            while not stop.acquire(timeout=TICK):
                if timed:
                    engine.increment_epoch()
                try:
                    data = os.read(r, 512)
                except BlockingIOError:
                    continue
                if _signal.SIGINT in data and stop.locked():
                    self.interrupted = True
                    for _ in range(self.deadline_ticks + 1):
                        engine.increment_epoch()
        finally:
            os.close(r)


_RUNTIMES: dict[tuple[WasmSettings, str], Runtime] = {}


def runtime(settings: WasmSettings, cache_dir: str, plugin: str = "?") -> Runtime:
    """The shared runtime for these settings; a clear error if wasmtime is missing."""
    key = (settings, cache_dir)
    if key not in _RUNTIMES:
        try:
            import_wasmtime()
        except ImportError:
            raise PluginLoadError(
                plugin,
                "WebAssembly plugins need wasmtime, which is not installed",
                hint=INSTALL_HINT,
            ) from None
        _RUNTIMES[key] = Runtime(settings, cache_dir)
    return _RUNTIMES[key]


# -- the sandbox of one command ----------------------------------------------------------------


class GuestFault(Exception):
    """A module called a host function wrongly (no memory, a buffer out of bounds)."""


class Denied(Exception):
    """A host function refused a call: the capability it needs is not granted."""

    def __init__(self, capability: str, what: str) -> None:
        super().__init__(f"{what}: {capability} is not granted")
        self.capability = capability
        self.what = what


class Sandbox:
    """What one plugin may do, computed from its grants for one command."""

    def __init__(self, plugin: str, grants: list[Capability], workspace: str) -> None:
        self.plugin = plugin
        self.grants = grants
        self.workspace = workspace
        self.env: dict[str, str] = {}
        self.preopens: list[tuple[str, bool]] = []  # (directory, writable)
        #: the last result of a core-module host call, fetched with conduit.result
        self.result = b""
        #: the first refused call, reported as the command's error
        self.denied: Denied | None = None

    @classmethod
    def build(cls, plugin: str, grants: list[str], workspace: str, plugin_data: str) -> Sandbox:
        box = cls(plugin, [], workspace)
        if not grants:  # nothing granted: no need to import the grammar of grants
            return box
        from conduit.security.capabilities import CapabilityError, expand_path, parse

        try:
            caps = [parse(g) for g in grants]
        except CapabilityError as exc:  # the config validator should have caught it
            raise PluginLoadError(plugin, f"invalid grant: {exc.message}", hint=exc.hint) from None
        box.grants = caps
        for cap in caps:
            if cap.kind == "env:read":
                box.env.update({k: v for k, v in os.environ.items() if cap.allows_env(k)})
        dirs: dict[str, bool] = {}
        for cap in caps:
            if not cap.kind.startswith("filesystem:"):
                continue
            path = (
                "/"
                if cap.scope is None
                else expand_path(cap.scope, workspace=workspace, plugin_data=plugin_data)
            )
            if os.path.isfile(path):
                raise PluginLoadError(
                    plugin,
                    f"grant '{cap}' names a file; WebAssembly plugins are given directories",
                    hint="grant the directory that holds it",
                )
            if not os.path.isdir(path):
                continue  # nothing to see there yet; a missing directory grants nothing
            dirs[path] = dirs.get(path, False) or cap.kind == "filesystem:write"
        box.preopens = sorted(dirs.items())
        return box

    def _granted(self, kind: str) -> list[Capability]:
        return [c for c in self.grants if c.kind == kind]

    def _refuse(self, capability: str, what: str) -> Denied:
        """The error for a refused call; the first one is kept as the command's error,
        whatever the guest does with the error it gets."""
        exc = Denied(capability, what)
        if self.denied is None:
            self.denied = exc
        return exc

    def check_env(self, name: str) -> None:
        if not any(c.allows_env(name) for c in self._granted("env:read")):
            raise self._refuse(f"env:read:{name}", f"reading the environment variable {name}")

    def check_http(self, url: str) -> tuple[str, str, int, str]:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = parts.hostname
        if not any(c.allows_host(host, port) for c in self._granted("network:http")):
            raise self._refuse(f"network:http:{host}:{port}", f"an HTTP request to {host}:{port}")
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        return parts.scheme, host, port, target

    def check_program(self, program: str) -> str:
        """The path to run for ``program``, if a ``process:execute`` grant allows it."""
        import shutil

        for cap in self._granted("process:execute"):
            scope = cap.scope
            # A grant for a bare name allows that name looked up on PATH, not any file
            # of that name the plugin points at.
            same_form = scope is None or (os.sep in scope) == (os.sep in program)
            if same_form and cap.allows_program(program):
                found = program if os.sep in program else shutil.which(program)
                if found is None:
                    raise FileNotFoundError(f"{program}: not found on PATH")
                return found
        raise self._refuse(f"process:execute:{program}", f"running {program}")

    # -- the services, shared by core modules and components ----------------------------

    def http(
        self, method: str, url: str, headers: list[tuple[str, str]], body: bytes, timeout: float
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        import http.client

        scheme, host, port, target = self.check_http(url)
        conn_type = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        conn = conn_type(host, port, timeout=timeout)
        try:
            conn.request(method, target, body=body or None, headers=dict(headers))
            resp = conn.getresponse()
            return resp.status, list(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def exec(
        self, program: str, args: list[str], stdin: bytes, timeout: float | None
    ) -> tuple[int, bytes, bytes]:
        import subprocess

        path = self.check_program(program)
        proc = subprocess.run(
            [path, *args],
            input=stdin,
            capture_output=True,
            env=dict(self.env),
            cwd=self.workspace,
            timeout=timeout,
            check=False,
        )
        return proc.returncode, proc.stdout, proc.stderr

    def log(self, level: str, message: str) -> None:
        sys.stderr.write(f"{self.plugin}: {level}: {message}\n")
        sys.stderr.flush()


def _is_fd(stream: Any, fd: int) -> bool:
    try:
        return bool(stream.fileno() == fd)
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return False


def _writer(stream: Any) -> Any:
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
                self._loaded[name] = rt.load(path)
            except OSError as exc:
                raise PluginLoadError(name, f"cannot read {path}: {exc.strerror}") from None
            except Exception as exc:  # wasmtime.WasmtimeError: invalid module
                raise PluginLoadError(
                    name,
                    f"{path} is not a valid WebAssembly module: {_first_line(exc)}",
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
        )
        rt = self._runtime(name)
        with rt:
            if component:
                return _run_component(rt, box, artifact, argv)
            return _run_module(rt, box, artifact, argv)


# -- running ---------------------------------------------------------------------------------


def _new_store(rt: Runtime, box: Sandbox, argv: list[str]) -> Any:
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
        wasi.stdout_custom = _writer(sys.stdout)
    if _is_fd(sys.stderr, 2):
        sys.stderr.flush()
        wasi.inherit_stderr()
    else:
        wasi.stderr_custom = _writer(sys.stderr)
    for directory, writable in box.preopens:
        wasi.preopen_dir(directory, directory, writable)
        if directory == box.workspace:
            # wasi-libc resolves relative paths against a preopen named ".".
            wasi.preopen_dir(directory, ".", writable)
    store.set_wasi(wasi)
    return store


def _explain(rt: Runtime, box: Sandbox, exc: BaseException, memory_used: int | None) -> HostError:
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
    limit = settings.memory_mb * MIB
    if memory_used is not None and memory_used + 64 * 1024 > limit:
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


def _json(doc: object) -> bytes:
    import json

    return json.dumps(doc).encode()


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
                str(req.get("body", "")).encode(),
                rt.settings.http_timeout,
            )
        except Denied:
            raise  # traps the module
        except Exception as exc:  # bad request, refused connection: the plugin's to handle
            set_result(f"{type(exc).__name__}: {exc}".encode())
            return -2
        doc = {"status": status, "headers": headers, "body": body.decode("utf-8", "replace")}
        return set_result(_json(doc))

    def exec_(caller: Any, ptr: int, length: int) -> int:
        try:
            import json

            req = json.loads(read(caller, ptr, length))
            code, out, err = box.exec(
                str(req["program"]),
                [str(a) for a in req.get("args", [])],
                str(req.get("stdin", "")).encode(),
                rt.settings.timeout or None,
            )
        except Denied:
            raise  # traps the module
        except Exception as exc:
            set_result(f"{type(exc).__name__}: {exc}".encode())
            return -2
        doc = {
            "code": code,
            "stdout": out.decode("utf-8", "replace"),
            "stderr": err.decode("utf-8", "replace"),
        }
        return set_result(_json(doc))

    def result(caller: Any, ptr: int, capacity: int) -> int:
        data = box.result[: max(0, capacity)]
        span(caller, ptr, len(data)).write(caller, data, ptr)
        return len(data)

    funcs = {"log": log, "env": env, "http": http, "exec": exec_, "result": result}
    for fname, (nparams, nresults) in CORE_IMPORTS.items():
        ty = wasmtime.FuncType([i32] * nparams, [i32] * nresults)
        linker.define_func(CORE_MODULE, fname, ty, funcs[fname], access_caller=True)


def _run_module(rt: Runtime, box: Sandbox, module: Any, argv: list[str]) -> int:
    store = _new_store(rt, box, argv)
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
        raise _link_error(rt, box, exc) from None
    start = instance.exports(store).get("_start")
    if not isinstance(start, wasmtime.Func):
        raise HostError(
            box.plugin,
            "the module exports no '_start' function",
            hint="build it as a WASI command (a program with main)",
        )
    try:
        start(store)
    except wasmtime.ExitTrap as exc:
        if box.denied is not None:
            raise _explain(rt, box, exc, None) from None
        return int(exc.code)
    except GuestFault as exc:
        raise HostError(
            box.plugin, f"bad call to a conduit import: {exc}", hint="a bug in the plugin"
        ) from None
    except (wasmtime.Trap, wasmtime.WasmtimeError, Denied) as exc:
        mem = instance.exports(store).get("memory")
        used = mem.data_len(store) if isinstance(mem, wasmtime.Memory) else None
        raise _explain(rt, box, exc, used) from None
    finally:
        sys.stdout.flush()
    return 0


def _link_error(rt: Runtime, box: Sandbox, exc: BaseException) -> HostError:
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


def _call_component(
    rt: Runtime, box: Sandbox, component: Any, argv: list[str], export: str, *args: Any
) -> Any:
    """Instantiate ``component`` in a fresh store and call ``command.EXPORT(*args)``."""
    store = _new_store(rt, box, argv)
    try:
        return _call_component_in(store, rt, box, component, export, *args)
    finally:
        store.close()  # see _run_module


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
        raise _link_error(rt, box, exc) from None
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
        raise _explain(rt, box, exc, None) from None
    if box.denied is not None:  # the guest swallowed the error it got
        raise _explain(rt, box, box.denied, None)
    return result


def _run_component(rt: Runtime, box: Sandbox, component: Any, argv: list[str]) -> int:
    out = _call_component(rt, box, component, argv, "run", list(argv))
    if isinstance(out, str):  # result<output, string>: the error case
        raise HostError(box.plugin, f"command '{argv[0]}' failed: {out}")
    _writer(sys.stdout)(bytes(out.stdout))
    _writer(sys.stderr)(bytes(out.stderr))
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
