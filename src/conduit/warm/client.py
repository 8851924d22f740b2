"""The warm kernel's client: hand a command to the server, relay signals, return its status.

This is on the start-up path of every command that loads the kernel, so it follows the
start-up rules: on top of ``conduit.paths`` it imports only ``_socket`` (the C half of
:mod:`socket`; the Python half imports enum, selectors and friends, which doubled a probe
client's time) and ``_signal``, plus ``termios``, ``fcntl`` and ``select`` when standard
input is a terminal. It gives up (returns ``None``, and the command runs on the cold
path) whenever anything is not exactly as expected: no server, a directory or a server
that is not ours, no answer within :data:`ANSWER_TIMEOUT`, a refusal.

The exchange (one Unix stream connection per command; integers 4 bytes, native order)::

    client -> server   b"CDT1" + length + marshal(request)
    child  -> client   b"P" + pid                the child that took the connection, leader
                                                 of its group
    client -> child    b"G", with fds 0, 1, 2    go: until then the child runs nothing and
                       (SCM_RIGHTS)              the server holds no descriptor of ours
    child  -> client   b"M" + 0, with the        when stdin is a terminal: the command's
                       master side (SCM_RIGHTS)  pseudo-terminal
    child  -> client   b"X" + exit code          the command finished (sent by the child)
    server -> client   b"S" + wait status        the child ended without saying so (a signal)
    server -> client   b"T" + 0                  the child stopped (Ctrl-Z on its terminal)
    client -> server   b"D"                      done, before it closes: a client that
                                                 closes without it was killed, and so is
                                                 its command (SIGKILL, as on the cold path)
    child  -> client   b"R"                      refused (stale or switched off): run cold

The ``G`` step means a client that gave up waiting can never see its command run twice:
a child that reads end-of-file instead of ``G`` exits without running anything.
"""

from __future__ import annotations

import marshal
import os
import sys

from conduit import __version__
from conduit.paths import resolve, stable_hash

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from conduit.paths import Paths

__all__ = [
    "ANSWER_TIMEOUT",
    "DEFAULT_IDLE_MINUTES",
    "MAGIC",
    "SERVER_VARIABLES",
    "address",
    "mode",
    "private_dir",
    "runtime_dir",
    "server_environment",
    "settings",
    "start_detached",
    "try_warm",
]

MAGIC = b"CDT1"
DEFAULT_IDLE_MINUTES = 30
#: seconds the client waits for the forked child's first answer before running cold
ANSWER_TIMEOUT = 1.0
#: the signals relayed to the command's process group while it runs (Ctrl-C, Ctrl-\,
#: termination, hang-up, window size, the user signals); Ctrl-Z and fg have their own
_RELAYED = ("SIGINT", "SIGQUIT", "SIGTERM", "SIGHUP", "SIGWINCH", "SIGUSR1", "SIGUSR2")
#: a child that ended by one of these ends this process the same way; the others (those
#: that dump core) become exit status 128 + N
_REPRODUCED = ("SIGHUP", "SIGINT", "SIGKILL", "SIGPIPE", "SIGALRM", "SIGTERM", "SIGUSR1", "SIGUSR2")


def mode(environ: dict[str, str] | os._Environ[str] | None = None) -> str:
    """``CONDUIT_WARM``: ``"off"`` (0, false, no, off), ``"on"`` (1, true, yes, on), or
    ``""``: the config's ``[kernel] warm`` decides."""
    value = (os.environ if environ is None else environ).get("CONDUIT_WARM", "").strip().lower()
    if value in ("0", "false", "no", "off"):
        return "off"
    if value in ("1", "true", "yes", "on"):
        return "on"
    return ""


def runtime_dir() -> str:
    """The per-user directory of the servers' sockets: ``$XDG_RUNTIME_DIR/conduit``, else
    ``/tmp/conduit-UID`` (short: a socket's path is limited to 107 bytes)."""
    base = os.environ.get("XDG_RUNTIME_DIR", "")
    if base and os.path.isabs(base):
        return os.path.join(base, "conduit")
    return f"/tmp/conduit-{os.getuid()}"


def address(paths: Paths) -> str:
    """The server socket for this environment: one per interpreter prefix, Conduit
    installation, set of ``PYTHON*`` variables (read when an interpreter starts:
    ``PYTHONPATH``, ``PYTHONWARNINGS``, ``PYTHONOPTIMIZE``...; the server keeps them, so
    it computes the same address) and set of Conduit directories."""
    python = sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith("PYTHON"))
    key = "\0".join(
        (
            sys.prefix,
            os.path.dirname(os.path.dirname(__file__)),
            *python,
            paths.config_dir,
            paths.cache_dir,
            paths.state_dir,
        )
    )
    return os.path.join(runtime_dir(), stable_hash(key) + ".sock")


def private_dir(path: str) -> bool:
    """Whether ``path`` is a real directory owned by this user that nobody else can enter
    (else another user could have put a socket there to read our environment)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return st.st_uid == os.getuid() and (st.st_mode & 0o170077) == 0o040000


class _Relay:
    """Signal handlers that pass the signals this process gets to the command's group."""

    def __init__(self, signal_module: object, pgid: int, stops_itself: bool) -> None:
        self.s = signal_module
        self.pgid = pgid
        self.saved: dict[int, object] = {}
        #: Ctrl-Z stops this process too (without a terminal of the command's own; with
        #: one, the server says when the command has stopped)
        self.stops_itself = stops_itself
        #: on a terminal, a new window size goes to the command's terminal instead
        self.on_winch: Any = None

    def install(self) -> None:
        s: Any = self.s
        for name in _RELAYED:
            self.saved[getattr(s, name)] = s.signal(getattr(s, name), self.forward)
        self.saved[s.SIGTSTP] = s.signal(s.SIGTSTP, self.stop)
        self.saved[s.SIGCONT] = s.signal(s.SIGCONT, self.forward)

    def restore(self) -> None:
        for signum, handler in self.saved.items():
            self.s.signal(signum, handler)  # type: ignore[attr-defined]

    def forward(self, signum: int, frame: object) -> None:
        if self.on_winch is not None and signum == self.s.SIGWINCH:  # type: ignore[attr-defined]
            self.on_winch()
            return
        try:  # noqa: SIM105 (contextlib is not imported on the start-up path)
            os.kill(-self.pgid, signum)
        except OSError:
            pass  # the command has just ended

    def stop(self, signum: int, frame: object) -> None:
        """Ctrl-Z: stop the command's group, then this process as the shell expects; on
        ``fg`` (SIGCONT) the command's group continues (:meth:`forward`)."""
        s: Any = self.s
        self.forward(signum, frame)
        if not self.stops_itself:
            return
        s.signal(s.SIGTSTP, s.SIG_DFL)
        os.kill(os.getpid(), s.SIGTSTP)  # stopped here until fg or bg
        s.signal(s.SIGTSTP, self.stop)


def _recv_exact(sock: object, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))  # type: ignore[attr-defined]
        if not chunk:
            return data
        data += chunk
    return data


def try_warm(args: list[str]) -> tuple[int | None, str]:
    """Run ``conduit ARGS`` in the warm kernel: ``(exit status, "")``, or ``(None,
    reason)`` when the command must run on the cold path (nothing of it ran)."""
    paths = resolve()
    path = address(paths)
    if not private_dir(os.path.dirname(path)):
        return None, "no server"
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        if sock.fileno() <= 2:
            # fd 0, 1 or 2 is closed, and the connection took its number: it would go to
            # the command as that stream (a closed one is what the cold path gives it)
            return None, "a standard stream is closed"
        sock.settimeout(ANSWER_TIMEOUT)
        try:
            sock.connect(path)
        except OSError:
            return None, "no server"
        cred = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
        if int.from_bytes(cred[4:8], sys.byteorder) != os.getuid():
            return None, "not ours"
        umask = os.umask(0o022)
        os.umask(umask)
        streams = (sys.stdin, sys.stdout, sys.stderr)
        # On a terminal (stdin one), the command gets a pseudo-terminal of its own, whose
        # controlling terminal it is, and this process copies bytes both ways.
        terminal = os.isatty(0)
        request = marshal.dumps(
            (
                __version__,
                args,
                os.getcwd(),
                dict(os.environ),
                umask,
                sys.argv[0] if sys.argv else "conduit",
                sys.path,
                [(s.encoding, s.errors) if s is not None else None for s in streams],
                [fd for fd in (0, 1, 2) if terminal and os.isatty(fd)],
            )
        )
        for s in streams[1:]:
            if s is not None:
                s.flush()  # nothing of ours may come after the command's own output
        head = MAGIC + len(request).to_bytes(4, sys.byteorder)
        sock.sendall(head + request)
        answer = _recv_exact(sock, 5)
        if answer[:1] != b"P" or len(answer) < 5:
            return None, "refused" if answer[:1] == b"R" else "no answer"
        pgid = int.from_bytes(answer[1:5], sys.byteorder)
        return _Session(sock, pgid, terminal, _socket).run(), ""
    except OSError:
        # A failure before the go-ahead means nothing ran: run cold. After it, the
        # command ran and its status is lost (:meth:`_Session.run` handles end-of-file).
        return None, "no answer"
    finally:
        sock.close()


_LOST = (
    "conduit: the warm kernel went away before the command's exit status arrived "
    "(see 'conduit server status')\n"
)


def _lost() -> int:
    try:  # noqa: SIM105 (contextlib is not imported on the start-up path)
        sys.stderr.write(_LOST)
    except (OSError, ValueError, AttributeError):
        pass  # (no stderr to say it on)
    return 1


class _Session:
    """One command, once its child runs: signals relayed to its group and, on a
    terminal, the bytes between this terminal and the command's pseudo-terminal."""

    def __init__(self, sock: Any, pgid: int, terminal: bool, socket_module: Any) -> None:
        import _signal  # type: ignore[import-not-found]

        self.sock = sock
        self.pgid = pgid
        self.terminal = terminal
        self.master = -1
        self.s: Any = _signal
        self.socket: Any = socket_module
        self.relay = _Relay(_signal, pgid, stops_itself=not terminal)
        self.saved_mode: Any = None

    def run(self) -> int:
        self.relay.install()
        k = self.socket
        try:
            self.sock.settimeout(None)
            # The go-ahead carries fds 0-2: until then the server holds nothing of ours,
            # so one that never answered keeps none of our pipes open.
            fds = b"".join(fd.to_bytes(4, sys.byteorder) for fd in (0, 1, 2))
            self.sock.sendmsg([b"G"], [(k.SOL_SOCKET, k.SCM_RIGHTS, fds)])
        except BaseException:
            self.finish()
            raise
        # Committed: the command runs. No error from here on may reach try_warm as
        # "nothing ran" (the command would run again, cold).
        try:
            if self.terminal:
                # b"M": the master side of the command's pseudo-terminal (or a status,
                # when the command ended before it had one)
                message, ancdata, _, _ = self.sock.recvmsg(5, k.CMSG_SPACE(4))
                for level, kind, data in ancdata:
                    if level == k.SOL_SOCKET and kind == k.SCM_RIGHTS and len(data) >= 4:
                        self.master = int.from_bytes(data[:4], sys.byteorder)
                if message[:1] != b"M":
                    code = self.status(message) if len(message) == 5 else None
                    return _lost() if code is None else code
            if self.master >= 0:
                try:
                    self.raw()
                    return self.pump()
                except OSError:
                    # this terminal has gone (EIO): so does the command's, which gets
                    # SIGHUP as on a terminal that hangs up; its status still comes
                    os.close(self.master)
                    self.master = -1
            return self.wait()
        except OSError:
            return _lost()
        finally:
            try:  # noqa: SIM105
                self.sock.sendall(b"D")  # done: leaving now is not dying (the server kills
            except OSError:  # the command of a client that goes without saying so)
                pass
            self.finish()

    def finish(self) -> None:
        self.relay.restore()
        self.cooked()
        if self.master >= 0:
            os.close(self.master)
            self.master = -1

    def status(self, message: bytes) -> int | None:
        """The exit status a message carries (None: not a status)."""
        kind, value = message[:1], int.from_bytes(message[1:5], sys.byteorder, signed=True)
        if kind == b"X":
            return value
        if kind == b"S":
            self.cooked()
            return _wait_status(value, self.s)
        if kind == b"T" and self.master >= 0:
            self.stopped()
        return None

    def wait(self) -> int:
        while True:
            message = _recv_exact(self.sock, 5)
            if len(message) < 5:
                return _lost()
            code = self.status(message)
            if code is not None:
                return code

    # --- on a terminal -------------------------------------------------------------

    def raw(self) -> None:
        """This terminal in raw mode: every key goes to the command's terminal, whose
        own line discipline echoes, edits and turns Ctrl-C into SIGINT."""
        import termios

        t: Any = termios
        try:
            if self.saved_mode is None:
                self.saved_mode = t.tcgetattr(0)
            mode = [list(x) if isinstance(x, list) else x for x in self.saved_mode]
            mode[0] &= ~(t.BRKINT | t.ICRNL | t.INPCK | t.ISTRIP | t.IXON)
            mode[1] &= ~t.OPOST
            mode[2] = (mode[2] & ~(t.CSIZE | t.PARENB)) | t.CS8
            mode[3] &= ~(t.ECHO | t.ICANON | t.IEXTEN | t.ISIG)
            mode[6][t.VMIN], mode[6][t.VTIME] = 1, 0
            t.tcsetattr(0, t.TCSADRAIN, mode)
        except t.error as exc:  # (not an OSError): the terminal has gone
            raise OSError(*exc.args) from None

    def cooked(self) -> None:
        if self.saved_mode is not None:
            import termios

            try:  # noqa: SIM105 (contextlib is not imported on the start-up path)
                termios.tcsetattr(0, termios.TCSADRAIN, self.saved_mode)
            except termios.error:
                pass

    def stopped(self) -> None:
        """The command stopped (Ctrl-Z on its terminal): give this terminal back and stop
        as the shell expects; on ``fg`` take it again and let the command go on."""
        s = self.s
        self.cooked()
        handler = s.signal(s.SIGTSTP, s.SIG_DFL)
        os.kill(os.getpid(), s.SIGTSTP)  # stopped here until fg or bg
        s.signal(s.SIGTSTP, handler)
        self.raw()
        self.resize()
        try:  # noqa: SIM105
            os.kill(-self.pgid, s.SIGCONT)
        except OSError:
            pass

    def resize(self) -> None:
        import fcntl
        import termios

        try:
            size = fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, size)
        except OSError:
            pass

    def pump(self) -> int:
        import select

        out = 1 if os.isatty(1) else 2
        sock = self.sock.fileno()
        self.relay.on_winch = self.resize
        reading = [sock, 0, self.master]
        while True:
            try:
                ready, _, _ = select.select(reading, [], [])
            except InterruptedError:
                continue
            if self.master in ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:  # EIO: nobody has the command's terminal open any more
                    data = b""
                if data:
                    _write_all(out, data)
                else:
                    reading = [fd for fd in reading if fd not in (0, self.master)]
            if 0 in ready:
                data = os.read(0, 65536)
                if data:
                    _write_all(self.master, data)
                else:
                    reading.remove(0)
            if sock in ready:
                message = _recv_exact(self.sock, 5)
                if len(message) < 5:
                    self.drain(out)
                    return _lost()
                code = self.status(message)
                if code is not None:
                    self.drain(out)
                    return code

    def drain(self, out: int) -> None:
        """What the command wrote before it ended, still in its terminal."""
        os.set_blocking(self.master, False)
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            _write_all(out, data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _wait_status(status: int, signal_module: object) -> int:
    """The exit status of a child that ended by a signal, reproduced: this process ends
    by the same signal (as the cold path's process would have), except for signals that
    dump core, which become ``128 + N``."""
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    s: Any = signal_module
    signum = os.WTERMSIG(status)
    if signum in [getattr(s, name) for name in _REPRODUCED]:
        s.signal(signum, s.SIG_DFL)
        os.kill(os.getpid(), signum)
    return 128 + signum


def settings(config: dict[str, Any]) -> tuple[str, float]:
    """``[kernel] warm`` and ``idle-minutes`` from the config's data."""
    table = config.get("kernel")
    table = table if isinstance(table, dict) else {}
    warm = table.get("warm", "auto")
    idle = table.get("idle-minutes", DEFAULT_IDLE_MINUTES)
    return (warm if warm in ("auto", "off") else "auto", float(idle) * 60.0)


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
