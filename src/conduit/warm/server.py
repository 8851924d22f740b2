"""The warm kernel's server: a process with the kernel imported that forks one child per
command (the exchange is described in :mod:`conduit.warm.client`).

Started by ``conduit server start`` or, with ``[kernel] warm = "auto"``, in the
background after a command ran cold. It imports what every command needs (Click, msgspec,
the kernel, the hosts, the SDK; wasmtime and its engine once the index has a WebAssembly
plugin) and runs no plugin code, so every child starts from the same clean state and
nothing one command does can reach the next. Per request it only checks the peer's uid
and hands the connection to a child it forked ahead of it (the spare), which reads the
request and checks the config and staleness; forking the next spare, reaping children
and the idle timer happen between requests.

A child becomes the command: the client's standard streams on fds 0-2, its working
directory, environment, umask, ``sys.argv`` and ``sys.path``, default signal handling,
a process group of its own (the client relays signals to it), and then
:func:`conduit.cli.main` exactly as the cold path runs it.

The server exits after ``[kernel] idle-minutes`` without a request, when the config turns
it off, and when it finds itself stale (its Conduit files changed on disk, or a client of
another version asks): the next command then runs cold and starts a fresh one.
"""

from __future__ import annotations

import atexit
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
from conduit.hosts.zygote import ahead_pays, received_fds
from conduit.index import file_stamp
from conduit.paths import resolve
from conduit.warm.client import (
    DEFAULT_IDLE_MINUTES,
    MAGIC,
    address,
    private_dir,
    runtime_dir,
    settings,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from conduit.paths import Paths

__all__ = ["main", "read_state"]

#: the largest request accepted (argv and the environment, marshalled)
MAX_REQUEST = 4 << 20
#: seconds a connected client may take to send its request
REQUEST_TIMEOUT = 2.0


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
        "path",
        "streams",
        "template",
        "tty",
        "umask",
    )

    def __init__(self, conn: socket.socket, data: tuple[Any, ...]) -> None:
        self.conn = conn
        self.template: socket.socket | None = None
        (_, self.args, self.cwd, self.env, self.umask, self.argv0, self.path, self.streams) = data[
            :8
        ]
        #: the client's descriptors (of 0-2) that are its terminal: the command gets a
        #: pseudo-terminal of its own in their place
        self.tty: list[int] = data[8]


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
        #: the address's lock (flock), held from before the socket exists until the exit (or
        #: until the socket is gone, when the server stops with commands running)
        self.lock = -1
        #: the child forked ahead for the next connection, and its socket
        self.spare: tuple[int, socket.socket] | None = None
        #: running commands whose clients have gone (not watched any more)
        self.settled: set[int] = set()
        #: in a spare child: whether it rehearses its command while it waits
        #: (:func:`_rehearse_command`; set by :meth:`_fork_spare`)
        self.rehearse = False
        self.listener: socket.socket

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
                    out[file] = file_stamp(file)
        return out

    def stale(self) -> bool:
        return any(file_stamp(file) != key for file, key in self.modules.items())

    def read_config(self) -> None:
        """``[kernel]`` again when the config file changed (one stat otherwise)."""
        key = file_stamp(self.paths.config_file)
        if key == self.config_key:
            return
        self.config_key = key
        try:
            data = _config_data(self.paths.config_file)
        except Exception:  # a broken config: the cold path reports it; keep defaults
            data = {}
        self.warm, self.idle = settings(data)
        self.wasm_table = data.get("wasm")

    def preload_wasm(self) -> None:
        """wasmtime and the engine, once the index has a usable WebAssembly plugin (so
        that a WebAssembly command does not pay for the import; the epoch thread starts
        only inside a command). Its fault handlers are then in every command's child too,
        as in a cold WebAssembly command: a fault in native code still crashes the
        process, but a SIGSEGV sent with kill() is swallowed."""
        if self.wasm_loaded:
            return
        from conduit.index import index_path

        file = index_path(self.paths)
        key = file_stamp(file)
        if key == self.index_key:
            return
        self.index_key = key
        try:
            # Read as it is on disk, never rebuilt here: this process's fingerprint is not
            # its clients' (its sys.path[0] is gone), so a rebuild here wrote an index that
            # every next command rebuilt again (about 3.5 ms each, every other command).
            from conduit.index import MAGIC, Records, records_path

            with open(file, "rb") as f:
                data = f.read()
            if not data.startswith(MAGIC):
                return
            index = marshal.loads(data[len(MAGIC) :])
            records = Records(records_path(file), dict)
            if not any(
                name in records and records[name].get("isolation") == "wasm"
                for name in index["usable"]
            ):
                return
            from conduit.hosts.wasm.runtime import (
                WasmSettings,
                import_wasmtime,
                runtime,
                sha256_hex,
            )

            import_wasmtime()
            runtime(WasmSettings.from_table(self.wasm_table), self.paths.cache_dir)
            sha256_hex(b"")  # imports the digest's module (the artifact cache's keys)
            import conduit.hosts.wasm.host
            import conduit.hosts.wasm.instance  # noqa: F401  (what a command's run imports)
        except Exception:
            return  # no wasm extra installed: the child reports it the usual way
        self.wasm_loaded = True
        self.modules = self._module_files()  # these are Conduit's files in memory too

    def start_template(self) -> None:
        """(Re)start the host template (conduit.hosts.zygote): between requests only."""
        from conduit.hosts.zygote import start

        if self.template is not None:
            self.template.close()
        # nor the running commands' connections (a host would hold its clients' sockets)
        conns = tuple(conn.fileno() for conn in self.children.values())
        self.template, self.template_pid = start((*self.own, *conns))

    # --- the loop --------------------------------------------------------------------

    def serve(self, listener: socket.socket, keep: list[int]) -> socket.socket:
        """Accept until idle, handing each connection to a spare child forked ahead of
        it (so that the fork is not on the client's time); in a spare child, return the
        socket its connection will come on (:meth:`take`)."""
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.signal(signal.SIGTERM, self._stop)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        self.own = (listener.fileno(), wake_r, wake_w, *keep)
        self.listener = listener
        last = time.monotonic()
        while True:
            # Checked before each wait as well as after it: a SIGTERM whose wake-up byte
            # was read with a SIGCHLD's (below) leaves nothing for the wait to wake on.
            if self.stopping:
                self._exit()
            if self.spare is None and not self.children:
                end = self._fork_spare(ahead=True)  # between commands: off anyone's time
                if end is not None:
                    return end
            timeout = None if self.children else max(0.0, last + self.idle - time.monotonic())
            ready = self._wait(listener.fileno(), wake_r, timeout)
            if wake_r in ready:
                os.read(wake_r, 512)
                self._reap()  # (a signal whose byte was just read is handled by now)
            if self.stopping:
                self._exit()
            if not ready:
                if not self.children and time.monotonic() >= last + self.idle:
                    self._exit()
                continue
            if listener.fileno() in ready:
                last = time.monotonic()
                try:
                    conn, _ = listener.accept()
                except OSError:
                    continue
                if not _ours(conn):  # another user: nothing for them (the spare checks too)
                    conn.close()
                    continue
                for _attempt in range(2):
                    if self.spare is None:
                        end = self._fork_spare(ahead=False)
                        if end is not None:
                            return end
                    assert self.spare is not None
                    pid, handle = self.spare
                    self.spare = None
                    try:
                        fd = conn.fileno().to_bytes(4, sys.byteorder)
                        handle.sendmsg([b"C"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fd)])
                    except OSError:  # the spare died: another one
                        continue
                    finally:
                        handle.close()
                    self.children[pid] = conn
                    break
                else:
                    conn.close()
                self.preload_wasm()

    def _wait(self, listener: int, wake_r: int, timeout: float | None) -> list[int]:
        """The descriptors of the listener and the wake-up pipe that are ready; and a
        running command whose client has gone without saying it was done (killed: no
        signal could be relayed) is killed, as the cold path's process would have been."""
        poller = select.poll()
        poller.register(listener, select.POLLIN)
        poller.register(wake_r, select.POLLIN)
        watched = {}
        for pid, conn in self.children.items():
            if pid not in self.settled:
                watched[conn.fileno()] = pid
                poller.register(conn, select.POLLRDHUP)
        try:
            events = poller.poll(None if timeout is None else timeout * 1000)
        except InterruptedError:
            return []
        ready = []
        for fd, _ in events:
            pid = watched.get(fd, 0)
            if not pid:
                ready.append(fd)
                continue
            self.settled.add(pid)
            try:
                pending = self.children[pid].recv(64, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except OSError:
                pending = b""
            if not pending.endswith(b"D"):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        return ready

    def _fork_spare(self, ahead: bool) -> socket.socket | None:
        """A spare child, waiting for a connection: None in the server, the socket to
        wait on in the child. ``ahead``: forked between commands (not for a connection
        that is waiting), so that it may rehearse while it waits, where another CPU than
        the starting client's can take the work (:func:`conduit.hosts.zygote.ahead_pays`)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            self.rehearse = ahead and ahead_pays()
            signal.set_wakeup_fd(-1)
            ours.close()
            for fd in self.own:
                os.close(fd)
            for conn in self.children.values():
                conn.close()
            return theirs
        theirs.close()
        self.spare = (pid, ours)
        return None

    def take(self, end: socket.socket) -> _Request:
        """In a spare child: wait for the connection, check its peer and read the
        request; a stale or switched-off server refuses it (and stops)."""
        _default_signals()  # (nothing of a request's: done while waiting for one)
        _rehearse_request()
        if self.rehearse:
            try:
                _rehearse_command(self.paths)
            except KeyboardInterrupt:  # (as while it waits, below)
                os._exit(0)
        try:
            _, ancdata, _, _ = end.recvmsg(1, socket.CMSG_SPACE(4))
        except (OSError, KeyboardInterrupt):
            ancdata = []
        fds = received_fds(ancdata)
        end.close()
        if len(fds) != 1:
            os._exit(0)  # the server has gone
        conn = socket.socket(fileno=fds[0])
        try:
            if not _ours(conn):
                os._exit(0)
            conn.settimeout(REQUEST_TIMEOUT)
            data = _receive(conn)
            self.read_config()
            if data[0] != __version__ or self.warm == "off" or self.stale():
                conn.sendall(b"R")  # run it cold, and the next one starts a new server
                os.kill(os.getppid(), signal.SIGTERM)
                os._exit(0)
            conn.settimeout(None)
            request = _Request(conn, data)
        except (OSError, ValueError, EOFError, TypeError, IndexError):
            os._exit(0)
        request.template = self.template
        return request

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True  # (SIGTERM, from `conduit server stop`): leave at once

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG | os.WUNTRACED)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if os.WIFSTOPPED(status):  # Ctrl-Z on its terminal: the client stops too
                if pid in self.children:
                    with contextlib.suppress(OSError):
                        self.children[pid].sendall(b"T\0\0\0\0")
                continue
            if pid == self.template_pid:
                if self.spare is not None:  # it holds the dead template's socket
                    self.spare[1].close()  # it reads end-of-file and exits
                    self.spare = None
                self.start_template()
                continue
            if self.spare is not None and pid == self.spare[0]:
                self.spare[1].close()
                self.spare = None
                continue
            self.settled.discard(pid)
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            with contextlib.suppress(OSError):  # the client may have gone (with the status)
                conn.sendall(b"S" + status.to_bytes(4, sys.byteorder, signed=True))
            conn.close()

    def _exit(self) -> NoReturn:
        """Leave: the socket is removed, the spare and the host template are let go, and
        the process exits once the running commands' statuses have been passed on."""
        # Both files are this server's: it holds the address's lock until they are gone,
        # so no other server has replaced them. Then, when commands run, the lock goes: a
        # new server may start (and `conduit server stop` returns, saying they finish
        # first) while this one waits for them. With none, it is kept until the exit
        # (`server stop` then returns once this process has gone).
        for file in (self.path, self.path + ".state"):
            with contextlib.suppress(OSError):
                os.unlink(file)
        self.listener.close()
        if self.lock >= 0 and self.children:
            os.close(self.lock)
        if self.spare is not None:
            self.spare[1].close()  # it reads end-of-file and exits
        if self.template is not None:
            self.template.close()  # it exits once the last command has closed it too
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


def _config_data(path: str) -> dict[str, Any]:
    """The config file's data (a missing file: empty), read without :mod:`conduit.config`:
    that module (msgspec's validation, and through :mod:`conduit.fs` tempfile, shutil,
    random, zlib, bz2 and lzma) is what only the commands that write the config or
    rebuild the index need. Left out of this process, it is not in every command's fork
    (fewer pages and mappings to copy) nor in its at-fork work (``random`` reseeds)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return {}
    import tomllib

    data = tomllib.loads(raw.decode("utf-8"))
    return data if isinstance(data, dict) else {}


def _ours(conn: socket.socket) -> bool:
    """Whether the peer of ``conn`` runs as this user (SO_PEERCRED, set at connect)."""
    cred = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    return int.from_bytes(cred[4:8], sys.byteorder) == os.getuid()


def _receive(conn: socket.socket) -> tuple[Any, ...]:
    """One request's data: no descriptors (they come with the client's go-ahead; any sent
    with the request are closed and it is refused)."""
    data, ancdata, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(3 * 4))
    fds = received_fds(ancdata)
    if data[:4] != MAGIC or fds:
        for fd in fds:
            os.close(fd)
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
    if not isinstance(request, tuple) or len(request) != 9:
        raise ValueError("not a request")
    return request


def _preload() -> None:
    """What every command imports, imported once here (no plugin code)."""
    import importlib.util  # noqa: F401
    import json  # noqa: F401
    import struct  # noqa: F401

    import click  # noqa: F401
    import msgspec  # noqa: F401

    import conduit.cli
    import conduit.errors
    import conduit.hosts.inprocess
    import conduit.index
    import conduit.kernel.activation
    import conduit.kernel.admin
    import conduit.kernel.core
    import conduit.runlog
    import conduit.sdk
    import conduit.security.capabilities
    import conduit.security.grants
    import conduit.security.guard
    import conduit.style
    from conduit.hosts.process import preload

    preload()
    import conduit.text  # noqa: F401
    from conduit.hosts.inprocess import rehearse_click

    rehearse_click(20)  # the last: the modules it needs are all here


def _become(request: _Request) -> int:
    """In the forked child: take on the client's process state and run the command."""
    conn = request.conn
    # A group of its own (a session, on a terminal) before the client learns the pid and
    # relays signals to it; the client's descriptors come with its go-ahead.
    with contextlib.suppress(OSError):
        if request.tty:
            os.setsid()
        else:
            os.setpgid(0, 0)
    try:
        conn.settimeout(REQUEST_TIMEOUT)
        conn.sendall(b"P" + os.getpid().to_bytes(4, sys.byteorder))
        go, ancdata, _, _ = conn.recvmsg(1, socket.CMSG_SPACE(3 * 4))
    except OSError:  # the client gave up and runs the command itself: nothing to say
        os._exit(0)
    fds = received_fds(ancdata)
    if go != b"G" or len(fds) != 3:
        os._exit(0)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    if request.tty:
        master = _terminal(request.tty)
        # The command's group is orphaned (a session of its own, its parent in another),
        # so the terminal's SIGTSTP would be discarded: Ctrl-Z stops the group itself,
        # which the server sees and tells the client, which stops too (as a job does).
        signal.signal(signal.SIGTSTP, _stop_group)
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, master.to_bytes(4, sys.byteorder))]
        conn.sendmsg([b"M\0\0\0\0"], rights)
        os.close(master)
    conn.settimeout(None)
    try:
        os.chdir(request.cwd)
    except OSError as exc:
        os.write(2, f"conduit: cannot enter {request.cwd!r}: {exc.strerror}\n".encode())
        return 1
    _set_environment(request.env)
    time.tzset()
    os.umask(request.umask)
    sys.argv = [request.argv0, *request.args]
    sys.path[:] = request.path
    _streams(request.streams)
    from conduit.hosts import process

    process.TEMPLATE = request.template  # Python hosts are forked from the template
    atexit.register(_report, conn, os.getpid())
    from conduit.cli import main

    code = main(request.args)
    _CODE[0] = code
    return code


_CODE = [1]


def _default_signals() -> None:
    """A spare child's signal handling, as a new interpreter's: set while it waits for
    its connection, off the command's time."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGTSTP):
        signal.signal(signum, signal.SIG_DFL)


def _rehearse_request() -> None:
    """In a spare child, before it waits: go through what taking on a request does that
    needs no request (decode one, set the environment, make the standard streams), with
    this process's own values. Each first write to a page this process shares with the
    server copies it (about 4 us): done here, while the spare waits, those copies are not
    on the command's time. Nothing is kept: the environment is set to what it was, the
    streams are dropped."""
    import io

    try:
        env = dict(os.environ)
        streams = [("utf-8", "strict")] * 3
        marshal.loads(marshal.dumps((__version__, [], "/", env, 18, "", sys.path, streams, [])))
        os.environ.clear()
        _set_environment(env)
        time.tzset()
        for fd in range(3):
            raw = io.FileIO(fd, "r" if fd == 0 else "w", closefd=False)
            buffered = io.BufferedReader(raw) if fd == 0 else io.BufferedWriter(raw)
            io.TextIOWrapper(buffered, "utf-8", "strict", line_buffering=raw.isatty())
    except (OSError, ValueError):  # (closed descriptors): only a rehearsal
        pass


def _set_environment(env: dict[str, str]) -> None:
    """Make ``os.environ`` (and so the C library's environment) ``env``, changing only
    what differs: the variables the server kept (``PATH``, ``HOME``...) are usually the
    client's too, and each change is an ``unsetenv`` or ``putenv`` and a copied page."""
    current = os.environ
    for key in [key for key in current if key not in env]:
        del current[key]
    for key, value in env.items():
        if current.get(key) != value:
            current[key] = value


def _rehearse_command(paths: Paths) -> None:
    """In a spare child, before it waits: go through what its command will do next that
    needs no request and runs no plugin code: a throwaway Click command, the index read
    and its first records decoded, a module's bytecode read by the import system's own
    loader. CPython writes to every object it uses (its reference count), so the first use
    of each object on a page this process still shares with the server copies that page
    (about 4 us on this VM); here those copies are made while the spare waits, not on the
    command's time. Measured on ``conduit tiny`` (page faults from the request to the end
    of the command, median of 30 commands): 636 without, 279 with (docs/performance.md).
    Nothing is kept, nothing is written (bytecode writing is off while the loader runs):
    what it reads is dropped, and a failure is only a rehearsal's (any exception but
    KeyboardInterrupt is dropped too)."""
    from importlib.machinery import SourceFileLoader

    import conduit.sdk
    from conduit.hosts.inprocess import rehearse_click
    from conduit.index import MAGIC as INDEX_MAGIC
    from conduit.index import index_path, read

    with contextlib.suppress(Exception):  # only a rehearsal: the command will say what fails
        rehearse_click(2)
    try:
        path = index_path(paths)
        with open(path, "rb") as f:
            data = f.read()
        stored = marshal.loads(data[len(INDEX_MAGIC) :]) if data.startswith(INDEX_MAGIC) else 0
        # read() with the index's own fingerprint: no stat of the plugin tree here
        index = read(path, stored.get("fingerprint", ()) if type(stored) is dict else ())
        if index is not None:
            for name in index["usable"][:4]:
                index["plugins"].get(name)
    except Exception:  # (a missing or changing index: the command's)
        pass
    writing, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        loader = SourceFileLoader(conduit.sdk.__name__, conduit.sdk.__file__)
        loader.get_code(conduit.sdk.__name__)  # (the module is not executed nor stored)
    except Exception:
        pass
    finally:
        sys.dont_write_bytecode = writing


def _stop_group(signum: int, frame: object) -> None:
    os.kill(0, signal.SIGSTOP)


def _terminal(ttys: list[int]) -> int:
    """A pseudo-terminal for the command, the controlling terminal of the session it
    leads (so ``/dev/tty``, job control and Ctrl-C work as on the user's), with the
    user's terminal's modes and size, on the descriptors in ``ttys``. Returns the master
    side, for the client."""
    import fcntl
    import termios

    master, slave = os.openpty()
    outer = ttys[0]
    with contextlib.suppress(termios.error, OSError):
        termios.tcsetattr(slave, termios.TCSANOW, termios.tcgetattr(outer))
        fcntl.ioctl(slave, termios.TIOCSWINSZ, fcntl.ioctl(outer, termios.TIOCGWINSZ, b"\0" * 8))
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in ttys:
        os.dup2(slave, fd)
    os.close(slave)
    return master


def _report(conn: socket.socket, pid: int) -> None:
    """The last thing the child does (the first atexit handler registered, so the last
    run): flush the command's output, then give the client its exit status. Not in a
    process the command forked (``pid`` is the command's): its exit is not the command's."""
    if os.getpid() != pid:
        return
    for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
        try:
            if stream is not None:
                stream.flush()
        except BrokenPipeError:
            # (`| head`): what is left goes nowhere, silently, as the interpreter's own
            # streams do on the cold path (this one would say so when it is finalized)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
        except (OSError, ValueError):
            pass
    with contextlib.suppress(OSError):
        conn.sendall(b"X" + _CODE[0].to_bytes(4, sys.byteorder, signed=True))
    # No interpreter teardown: it would free, one by one, objects this process shares with
    # the server (copying each page it touches) for no one (5-10 ms of CPU per command,
    # taken from the commands that come next). Threads were joined and the atexit
    # handlers have run. (A file a plugin left open and unflushed is not written out on
    # the cold path either: tests/warm/test_warm.py checks the two agree.)
    os._exit(_CODE[0] & 0xFF)


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


def _close_inherited() -> None:
    """Close what the process that started this one passed on besides fds 0-2 (a
    ``flock 9`` lock, a build tool's pipe): this process lives for many commands, and
    its children would pass them on to every one. Python's own descriptors are not
    inheritable, so those are the inheritable ones."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return
    for name in names:
        fd = int(name)
        with contextlib.suppress(OSError):  # (the listing's own descriptor, now closed)
            if fd > 2 and os.get_inheritable(fd):
                os.close(fd)


def main() -> None:
    """The server process: claim the socket (one server per address), preload, serve."""
    _close_inherited()
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
    server.own = (lock_fd,)
    server.lock = lock_fd
    # The template first: wasmtime installs fault handlers (SIGSEGV, SIGILL, SIGFPE) for
    # its traps, and a host must crash on a fault as one started from a new interpreter
    # does, not have it swallowed.
    server.start_template()
    server.preload_wasm()
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
    end = server.serve(listener, [lock_fd])  # returns in a spare child only
    sys.exit(_become(server.take(end)))
