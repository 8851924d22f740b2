"""The warm kernel's server: a process with the kernel imported that forks one child per
command (the exchange is described in :mod:`conduit.warm.client`).

Started by ``conduit server start`` or, with ``[kernel] warm = "auto"``, in the
background after a command ran cold. It imports what every command needs (Click, msgspec,
the kernel, the hosts, the SDK; wasmtime and its engine once the index has a WebAssembly
plugin) and runs no plugin code, so every child starts from the same clean state and
nothing one command does can reach the next. Per request it only checks the peer's uid,
reads the request and forks: everything else (re-reading the config, reaping children,
the idle timer) happens between requests.

A child becomes the command: the client's standard streams on fds 0-2, its working
directory, environment, umask, ``sys.argv`` and ``sys.path``, default signal handling,
a process group of its own (the client relays signals to it), and then
:func:`conduit.cli.main` exactly as the cold path runs it.

The server exits after ``[kernel] idle-minutes`` without a request, when the config turns
it off, and when it finds itself stale (its Conduit files changed on disk, or a client of
another version asks): the next command then runs cold and starts a fresh one.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import marshal
import os
import select
import signal
import socket
import sys
import time

from conduit import __version__
from conduit.paths import resolve
from conduit.warm.client import MAGIC, address, private_dir, runtime_dir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, NoReturn

    from conduit.paths import Paths

__all__ = [
    "SERVER_VARIABLES",
    "main",
    "read_state",
    "server_environment",
    "settings",
    "start_detached",
]

#: the largest request accepted (argv and the environment, marshalled)
MAX_REQUEST = 4 << 20
#: seconds a connected client may take to send its request
REQUEST_TIMEOUT = 2.0
DEFAULT_IDLE_MINUTES = 30


def settings(config: dict[str, Any]) -> tuple[str, float]:
    """``[kernel] warm`` and ``idle-minutes`` from the config's data."""
    table = config.get("kernel")
    table = table if isinstance(table, dict) else {}
    warm = table.get("warm", "auto")
    idle = table.get("idle-minutes", DEFAULT_IDLE_MINUTES)
    return (warm if warm in ("auto", "off") else "auto", float(idle) * 60.0)


def read_state(sock_path: str) -> dict[str, str]:
    """What the running server wrote beside its socket (``pid``, ``version``,
    ``started``, ``socket``): empty when there is none."""
    try:
        with open(sock_path + ".state", encoding="utf-8") as f:
            return dict(line.rstrip("\n").partition("=")[::2] for line in f if "=" in line)
    except OSError:
        return {}


class _Request:
    __slots__ = (
        "args",
        "argv0",
        "conn",
        "cwd",
        "env",
        "fds",
        "path",
        "streams",
        "template",
        "umask",
    )

    def __init__(self, conn: socket.socket, fds: list[int], data: tuple[Any, ...]) -> None:
        self.conn = conn
        self.fds = fds
        self.template: socket.socket | None = None
        (_, self.args, self.cwd, self.env, self.umask, self.argv0, self.path, self.streams) = data


class Server:
    """The accept loop (:meth:`serve`), which returns only in a forked child."""

    def __init__(self, paths: Paths, path: str) -> None:
        self.paths = paths
        self.path = path
        self.children: dict[int, socket.socket] = {}
        self.config_key: object = None
        self.warm, self.idle = "auto", DEFAULT_IDLE_MINUTES * 60.0
        self.modules = self._module_files()
        self.index_key: object = None
        self.wasm_loaded = False
        self.wasm_table: object = None
        self.stopping = False
        self.template: socket.socket | None = None
        self.template_pid = 0
        #: descriptors only the server may hold (its lock, listener, wake-up pipe)
        self.own: tuple[int, ...] = ()

    # --- staleness -----------------------------------------------------------------

    @staticmethod
    def _module_files() -> dict[str, tuple[int, int] | None]:
        """The files of the Conduit modules this process has imported, with their mtime
        and size: a changed one means the installed Conduit is not the one in memory."""
        out = {}
        for name, module in list(sys.modules.items()):
            if name == "conduit" or name.startswith("conduit."):
                file = getattr(module, "__file__", None)
                if file:
                    out[file] = _stat(file)
        return out

    def stale(self) -> bool:
        return any(_stat(file) != key for file, key in self.modules.items())

    def read_config(self) -> None:
        """``[kernel]`` again when the config file changed (one stat otherwise)."""
        key = _stat(self.paths.config_file)
        if key == self.config_key:
            return
        self.config_key = key
        try:
            from conduit.config import read_data

            data = read_data(self.paths.config_file)
        except Exception:  # a broken config: the cold path reports it; keep defaults
            data = {}
        self.warm, self.idle = settings(data)
        self.wasm_table = data.get("wasm")

    def preload_wasm(self) -> None:
        """wasmtime and the engine, once the index has a WebAssembly plugin (so that a
        WebAssembly command does not pay for the import; the epoch thread starts only
        inside a command)."""
        if self.wasm_loaded:
            return
        from conduit.index import index_path

        file = index_path(self.paths)
        key = _stat(file)
        if key == self.index_key:
            return
        self.index_key = key
        try:
            with open(file, "rb") as f:
                if b"wasm" not in f.read():
                    return
            from conduit.hosts.wasm.runtime import WasmSettings, import_wasmtime, runtime

            import_wasmtime()
            runtime(WasmSettings.from_table(self.wasm_table), self.paths.cache_dir)
            import conduit.hosts.wasm.host  # noqa: F401
        except Exception:
            return  # no wasm extra installed: the child reports it the usual way
        self.wasm_loaded = True

    def start_template(self) -> None:
        """(Re)start the host template (conduit.hosts.zygote): between requests only."""
        from conduit.hosts.zygote import start

        if self.template is not None:
            self.template.close()
        self.template, self.template_pid = start(self.own)

    # --- the loop --------------------------------------------------------------------

    def serve(self, listener: socket.socket, keep: list[int]) -> _Request | None:
        """Accept and fork until idle; in a forked child, return its request."""
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.signal(signal.SIGTERM, self._stop)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        own = [listener.fileno(), wake_r, wake_w, *keep]
        self.own = tuple(own)
        last = time.monotonic()
        while True:
            timeout = None if self.children else max(0.0, last + self.idle - time.monotonic())
            try:
                ready, _, _ = select.select([listener.fileno(), wake_r], [], [], timeout)
            except InterruptedError:
                ready = []
            if self.stopping:
                self._exit(listener)
            if not ready:
                if not self.children and time.monotonic() >= last + self.idle:
                    self._exit(listener)
                continue
            if wake_r in ready:
                os.read(wake_r, 512)
                self._reap()
            if listener.fileno() in ready:
                last = time.monotonic()
                request = self._accept(listener)
                if request is None:
                    continue
                if request.args is None:  # stale or refused: said so; stop
                    self._exit(listener)
                pid = os.fork()
                if pid == 0:
                    signal.set_wakeup_fd(-1)
                    for fd in own:
                        os.close(fd)
                    for conn in self.children.values():
                        conn.close()
                    request.template = self.template
                    return request
                with contextlib.suppress(OSError):
                    os.setpgid(pid, pid)  # (the child does it too: whichever runs first)
                for fd in request.fds:
                    os.close(fd)
                self.children[pid] = request.conn
                self.preload_wasm()

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True  # (SIGTERM, from `conduit server stop`): leave at once

    def _accept(self, listener: socket.socket) -> _Request | None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return None
        fds: list[int] = []
        try:
            cred = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
            if int.from_bytes(cred[4:8], sys.byteorder) != os.getuid():
                conn.close()
                return None
            conn.settimeout(REQUEST_TIMEOUT)
            data, fds = _receive(conn)
            self.read_config()
            if data[0] != __version__ or self.warm == "off" or self.stale():
                conn.sendall(b"R")
                for fd in fds:
                    os.close(fd)
                conn.close()
                return _Request(conn, [], (None,) * 8)
            conn.settimeout(None)
            return _Request(conn, fds, data)
        except (OSError, ValueError, EOFError, TypeError, IndexError):
            for fd in fds:
                os.close(fd)
            conn.close()
            return None

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.template_pid:
                self.start_template()
                continue
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            with contextlib.suppress(OSError):  # the client may have gone (with the status)
                conn.sendall(b"S" + status.to_bytes(4, sys.byteorder, signed=True))
            conn.close()

    def _exit(self, listener: socket.socket) -> NoReturn:
        """Leave: the socket is removed (if it is still this server's), then the process
        exits once the running commands' statuses have been passed on."""
        try:
            if os.stat(self.path).st_ino == os.fstat(listener.fileno()).st_ino:
                os.unlink(self.path)
        except OSError:
            pass
        listener.close()
        if read_state(self.path).get("pid") == str(os.getpid()):
            with contextlib.suppress(OSError):
                os.unlink(self.path + ".state")
        deadline = time.monotonic() + 3600.0
        while self.children and time.monotonic() < deadline:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            conn = self.children.pop(pid, None)
            if conn is not None:
                with contextlib.suppress(OSError):
                    conn.sendall(b"S" + status.to_bytes(4, sys.byteorder, signed=True))
                conn.close()
        os._exit(0)


def _stat(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _receive(conn: socket.socket) -> tuple[tuple[Any, ...], list[int]]:
    """One request: its data and the three file descriptors that came with it."""
    fds: list[int] = []
    data, ancdata, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(3 * 4))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds += [int.from_bytes(payload[i : i + 4], sys.byteorder) for i in range(0, usable, 4)]
    if data[:4] != MAGIC or len(fds) != 3:
        raise ValueError("not a request")
    size = int.from_bytes(data[4:8], sys.byteorder)
    if size > MAX_REQUEST:
        raise ValueError("request too large")
    body = bytearray(data[8:])
    while len(body) < size:
        chunk = conn.recv(min(65536, size - len(body)))
        if not chunk:
            raise EOFError
        body += chunk
    request = marshal.loads(bytes(body))
    if not isinstance(request, tuple) or len(request) != 8:
        raise ValueError("not a request")
    return request, fds


def _preload() -> None:
    """What every command imports, imported once here (no plugin code)."""
    import click  # noqa: F401
    import msgspec  # noqa: F401

    import conduit.cli
    import conduit.config
    import conduit.errors
    import conduit.hosts.inprocess
    import conduit.kernel.core
    import conduit.runlog
    import conduit.sdk
    import conduit.style
    from conduit.hosts.process import preload

    preload()
    import conduit.text  # noqa: F401


def _become(request: _Request) -> int:
    """In the forked child: take on the client's process state and run the command."""
    conn = request.conn
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGTSTP):
        signal.signal(signum, signal.SIG_DFL)
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    for target, fd in enumerate(request.fds):
        os.dup2(fd, target)
        os.close(fd)
    conn.sendall(b"P" + os.getpid().to_bytes(4, sys.byteorder))
    conn.settimeout(REQUEST_TIMEOUT)
    try:
        go = conn.recv(1)
    except OSError:
        go = b""
    if go != b"G":
        os._exit(0)  # the client gave up and runs the command itself
    conn.settimeout(None)
    try:
        os.chdir(request.cwd)
    except OSError as exc:
        os.write(2, f"conduit: cannot enter {request.cwd!r}: {exc.strerror}\n".encode())
        return 1
    os.environ.clear()
    os.environ.update(request.env)
    time.tzset()
    os.umask(request.umask)
    sys.argv = [request.argv0, *request.args]
    sys.path[:] = request.path
    _streams(request.streams)
    from conduit.hosts import process

    process.TEMPLATE = request.template  # Python hosts are forked from the template
    import atexit

    atexit.register(_report, conn)
    from conduit.cli import main

    code = main(request.args)
    _CODE[0] = code
    return code


_CODE = [1]


def _report(conn: socket.socket) -> None:
    """The last thing the child does (the first atexit handler registered, so the last
    run): flush the command's output, then give the client its exit status."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    with contextlib.suppress(OSError):
        conn.sendall(b"X" + _CODE[0].to_bytes(4, sys.byteorder, signed=True))


def _streams(spec: list[tuple[str, str] | None]) -> None:
    """New ``sys.stdin``/``stdout``/``stderr`` on fds 0-2, with the client's encodings
    and Python's buffering rules (stdout line-buffered on a terminal, stderr always)."""
    import io

    made: list[io.TextIOWrapper | None] = []
    for fd, item in enumerate(spec):
        if item is None:
            made.append(None)
            continue
        encoding, errors = item
        raw = io.FileIO(fd, "r" if fd == 0 else "w", closefd=False)
        buffered = io.BufferedReader(raw) if fd == 0 else io.BufferedWriter(raw)
        line = fd == 2 or (fd == 1 and raw.isatty())
        made.append(io.TextIOWrapper(buffered, encoding, errors, line_buffering=line))
    sys.stdin, sys.stdout, sys.stderr = made
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = made  # type: ignore[misc]


def start_detached(environ: dict[str, str] | None = None) -> int:
    """Start a server for this environment in the background (a new session, standard
    streams on /dev/null); return its pid. Does not wait for it to listen."""
    argv = [sys.executable, "-c", "from conduit.warm.server import main; main()"]
    devnull = "/dev/null"
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, devnull, os.O_WRONLY, 0),
    ]
    env = server_environment(os.environ if environ is None else environ)
    return os.posix_spawn(sys.executable, argv, env, file_actions=actions, setsid=True)


#: the variables the server keeps of the environment it was started with: what finds
#: Python, Conduit and its directories, and the text encoding. Every command gets its
#: client's whole environment; the server itself (and the host template forked from it,
#: and so every host) never holds anything else of anyone's (no tokens or keys).
SERVER_VARIABLES = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TMPDIR",
    "VIRTUAL_ENV",
    "CONDUIT_HOME",
    "XDG_CONFIG_HOME",
    "XDG_CACHE_HOME",
    "XDG_STATE_HOME",
    "XDG_RUNTIME_DIR",
)


def server_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The server's environment: :data:`SERVER_VARIABLES` and ``PYTHON*`` of
    ``environ``, nothing else."""
    return {k: v for k, v in environ.items() if k in SERVER_VARIABLES or k.startswith("PYTHON")}


def main() -> None:
    """The server process: claim the socket (one server per address), preload, serve."""
    paths = resolve()
    path = address(paths)
    directory = runtime_dir()
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o700)
    if not private_dir(directory):
        sys.stderr.write(f"conduit server: {directory} is not a private directory of this user\n")
        os._exit(1)
    lock_fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os._exit(0)  # another server has this address
    os.chdir("/")
    if sys.path and sys.path[0] == "":
        del sys.path[0]  # `-c` put the current directory first; a command never sees it
    _preload()
    server = Server(paths, path)
    server.read_config()
    if server.warm == "off":
        os._exit(0)
    server.preload_wasm()
    server.own = (lock_fd,)
    server.start_template()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    temporary = f"{path}.{os.getpid()}"
    with contextlib.suppress(OSError):
        os.unlink(temporary)
    listener.bind(temporary)
    listener.listen(64)
    os.rename(temporary, path)  # replaces a dead server's socket file atomically
    state = path + ".state"
    with open(state + ".tmp", "w", encoding="utf-8") as f:
        f.write(
            f"pid={os.getpid()}\nversion={__version__}\nstarted={time.time():.0f}\n"
            f"socket={path}\nidle-minutes={server.idle / 60:g}\n"
        )
    os.replace(state + ".tmp", state)
    gc.collect()
    gc.freeze()  # the children's first collections do not touch (and copy) these pages
    request = server.serve(listener, [lock_fd])
    if request is None:  # pragma: no cover (serve exits the process itself)
        os._exit(0)
    sys.exit(_become(request))
