"""The runtime: settings, the wasmtime import, the engine, the compiled-artifact cache
and the epoch ticker (one :class:`Runtime` per settings and cache directory).

The modules a cold WebAssembly command imports are chosen here: no :mod:`hashlib`
(the interpreter's ``_sha256``), no :mod:`threading`, :mod:`signal` or :mod:`select`
(``_thread`` and ``_signal``, loaded at start-up), wasmtime imported with the collector
held off (see docs/performance.md).

Compiled artifacts are cached under ``CACHE/wasm/``, keyed by wasmtime's version, the
engine configuration and the module's hash; an artifact whose header does not match, or
that wasmtime refuses, is compiled again and replaced. The cache is bounded (``[wasm]
cache-mb``): a load that hits touches the artifact (one ``utime``), and storing a new one
removes the least recently used artifacts until the directory fits (:func:`prune`).
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found,unused-ignore]  # loaded at start-up
import _thread
import os
import sys
from typing import TYPE_CHECKING, Any, NamedTuple

from conduit.errors import PluginLoadError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "ArtifactCache",
    "Runtime",
    "WasmSettings",
    "engine_description",
    "first_line",
    "import_wasmtime",
    "is_component",
    "make_engine",
    "prune",
    "runtime",
    "sha256_hex",
]

INSTALL_HINT = "install the extra: pip install 'conduit-devtool[wasm]'"
ARTIFACT_MAGIC = b"CONDUIT-CWASM\n"
#: the epoch ticker's period; deadlines are rounded up to whole ticks
TICK = 0.01


class WasmSettings(NamedTuple):
    """The ``[wasm]`` table of the config (validated by :mod:`conduit.config`).

    A NamedTuple rather than a dataclass: dataclasses imports inspect and ast, which
    would cost every WebAssembly command a few milliseconds."""

    timeout: float = 10.0  # seconds of wall-clock time per command; 0 = none
    memory_mb: int = 256  # linear memory per store
    fuel: int = 0  # instructions-ish per command; 0 = not metered (no fuel in the engine)
    max_stack_kb: int = 512  # wasm stack; deeper recursion traps as a stack overflow
    http_timeout: float = 30.0
    cache_mb: int = 512  # the artifact cache's size cap; least recently used pruned first

    @classmethod
    def from_table(cls, table: object) -> WasmSettings:
        """The settings of a validated ``[wasm]`` table (kebab-case keys); the defaults
        above for what it leaves out."""
        t = table if isinstance(table, dict) else {}
        given = {f: t[f.replace("_", "-")] for f in cls._fields if f.replace("_", "-") in t}
        return cls()._replace(**given)


def sha256_hex(data: bytes) -> str:
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


def make_engine(settings: WasmSettings) -> Any:
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

    def __init__(self, directory: str, description: str, cap_bytes: int = 512 << 20) -> None:
        self.directory = directory
        self.description = description
        self.cap_bytes = cap_bytes
        #: what the last load did: "hit", "compiled" or "rebuilt: REASON" (tests, --profile)
        self.last = ""

    def path_for(self, digest: str) -> str:
        key = sha256_hex(f"{self.description}\n{digest}".encode())[:32]
        return os.path.join(self.directory, f"{key}.cwasm")

    def load(
        self,
        engine: Any,
        digest: str,
        component: bool,
        read: Callable[[], bytes],
        compiling: Callable[[], None] | None = None,
    ) -> Any:
        """The compiled form of the module with hash ``digest``, from the cache (touched:
        its mtime is its recency) or compiled from ``read()`` (and stored, pruning the
        least recently used others past the cap); ``compiling()`` is called before a
        compile."""
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
                    reason = f"rebuilt: wasmtime refused the artifact ({first_line(exc)})"
                else:
                    self.last = "hit"
                    try:  # noqa: SIM105 -- contextlib: an import on the cold command path
                        os.utime(path)  # recency for pruning: one syscall per load
                    except OSError:
                        pass
                    return loaded
        if compiling is not None:
            compiling()
        compiled = kind(engine, read())
        self.last = reason
        self.store(path, meta, bytes(compiled.serialize()))
        prune(self.directory, self.cap_bytes, keep=path)
        return compiled

    def memo_path(self, path: str) -> str:
        """The ``src-*`` file remembering the hash of the module at ``path`` as it is now."""
        st = os.stat(path)
        stamp = f"{os.path.realpath(path)}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}"
        stamp += f"\0{st.st_ino}"  # a file replaced by rename is another inode
        return os.path.join(self.directory, "src-" + sha256_hex(stamp.encode())[:32])

    def identify(self, path: str) -> tuple[str, bool, bytes | None]:
        """``(sha256, is_component, data or None)`` of the module at ``path``.

        Hashing an 18 MB component costs more than loading its artifact, so the answer
        is remembered per (path, inode, size, mtime, ctime) in a small ``src-*`` file; then the
        module is not even read.
        """
        memo = self.memo_path(path)
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


def prune(directory: str, cap_bytes: int, keep: str = "") -> list[tuple[str, int]]:
    """Remove the least recently used artifacts (``KEY.cwasm`` by mtime, with its
    ``KEY.meta``, and the modules ``plugins build`` keeps, ``build-KEY.wasm``) until the
    files in ``directory`` take at most ``cap_bytes``; never ``keep`` (what was just
    written). Returns ``(path, bytes)`` of what went."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    total = 0
    artifacts: list[tuple[int, str, int]] = []
    sizes: dict[str, int] = {}
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not entry.is_file(follow_symlinks=False):
            continue
        total += st.st_size
        sizes[entry.path] = st.st_size
        if entry.name.endswith(".cwasm") or entry.name.startswith("build-"):
            artifacts.append((st.st_mtime_ns, entry.path, st.st_size))
    removed: list[tuple[str, int]] = []
    if total <= cap_bytes:
        return removed
    artifacts.sort()
    for _, path, size in artifacts:
        if total <= cap_bytes:
            break
        if path == keep:
            continue
        meta = path[: -len(".cwasm")] + ".meta"
        pair = [(meta, sizes.get(meta, 0))] if path.endswith(".cwasm") else []
        for victim, nbytes in (*pair, (path, size)):
            try:
                os.unlink(victim)  # the meta first: a reader never sees a meta alone
            except FileNotFoundError:
                pass
            except OSError:
                continue
            total -= nbytes
            removed.append((victim, nbytes))
    return removed


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Runtime:
    """One engine, its epoch ticker and its artifact cache (one per settings)."""

    def __init__(self, settings: WasmSettings, cache_dir: str) -> None:
        self.settings = settings
        self.engine = make_engine(settings)
        self.cache = ArtifactCache(
            os.path.join(cache_dir, "wasm"),
            engine_description(settings),
            settings.cache_mb << 20,
        )
        self._lock = _thread.allocate_lock()
        self._running = 0
        #: held while the ticker runs; released to stop it
        self._stop: Any = None
        self._wakeup: tuple[int, int | None] = (-1, None)
        #: set by the ticker on Ctrl-C: the next interrupt trap is the user's, not a timeout
        self.interrupted = False

    def load(self, path: str, compiling: Callable[[], None] | None = None) -> tuple[Any, bool]:
        """Compile or fetch the artifact of the ``.wasm`` file at ``path`` (calling
        ``compiling()`` first if it must be compiled)."""
        digest, component, data = self.cache.identify(path)

        def read() -> bytes:
            if data is not None:
                return data
            with open(path, "rb") as f:
                return f.read()

        return self.cache.load(self.engine, digest, component, read, compiling), component

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


#: never cleared, not even at exit (see the package's docstring)
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
