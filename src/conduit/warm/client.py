"""The warm kernel's client: hand a command to the server, relay signals, return its status.

This is on the start-up path of every command, so it follows the start-up rules: it
imports only ``_socket`` (the C half of :mod:`socket`; the Python half imports enum,
selectors and friends, which doubled a probe client's time) on top of what ``cli``
already has, and it gives up (returns ``None``, and the command runs on the cold path)
whenever anything is not exactly as expected: no server, a socket that is not ours, a
server that does not answer within :data:`ANSWER_TIMEOUT`, a stale server.

The exchange (one Unix stream connection per command; all integers 4 bytes, native order)::

    client -> server   b"CDT1" + length + marshal(request), with fds 0, 1, 2 (SCM_RIGHTS)
    child  -> client   b"P" + pid               the forked child, leader of its own group
    client -> child    b"G"                     go: until then the child runs nothing
    child  -> client   b"X" + exit code         the command finished (sent by the child)
    server -> client   b"S" + wait status       the child ended without saying so (a signal)
    server -> client   b"R"                     refused: stale server, run cold

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
    from typing import Any

    from conduit.paths import Paths

__all__ = [
    "ANSWER_TIMEOUT",
    "MAGIC",
    "address",
    "mode",
    "runtime_dir",
    "try_warm",
]

MAGIC = b"CDT1"
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
    installation, ``PYTHONPATH`` and set of Conduit directories."""
    key = "\0".join(
        (
            sys.prefix,
            os.path.dirname(os.path.dirname(__file__)),
            os.environ.get("PYTHONPATH", ""),
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

    def __init__(self, signal_module: object, pgid: int) -> None:
        self.s = signal_module
        self.pgid = pgid
        self.saved: dict[int, object] = {}

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
        try:  # noqa: SIM105 (contextlib is not imported on the start-up path)
            os.kill(-self.pgid, signum)
        except OSError:
            pass  # the command has just ended

    def stop(self, signum: int, frame: object) -> None:
        """Ctrl-Z: stop the command's group, then this process as the shell expects; on
        ``fg`` (SIGCONT) the command's group continues (:meth:`forward`)."""
        s: Any = self.s
        self.forward(signum, frame)
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
            )
        )
        for s in streams[1:]:
            if s is not None:
                s.flush()  # nothing of ours may come after the command's own output
        fds = b"".join(fd.to_bytes(4, sys.byteorder) for fd in (0, 1, 2))
        head = MAGIC + len(request).to_bytes(4, sys.byteorder)
        sock.sendmsg([head + request], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
        answer = _recv_exact(sock, 5)
        if answer[:1] != b"P":
            return None, "refused" if answer[:1] == b"R" else "no answer"
        pgid = int.from_bytes(answer[1:5], sys.byteorder)
        import _signal  # type: ignore[import-not-found]

        relay = _Relay(_signal, pgid)
        relay.install()
        try:
            sock.settimeout(None)  # committed: from here on the command is running
            sock.sendall(b"G")
            while True:
                message = _recv_exact(sock, 5)
                kind, value = message[:1], int.from_bytes(message[1:5], sys.byteorder, signed=True)
                if kind == b"X":
                    return value, ""
                if kind == b"S":
                    return _wait_status(value, _signal), ""
                if len(message) < 5:
                    sys.stderr.write(
                        "conduit: the warm kernel went away before the command's exit status "
                        "arrived (see 'conduit server status')\n"
                    )
                    return 1, ""
        finally:
            relay.restore()
    except OSError:
        # A failure before the go-ahead means nothing ran: run cold. After it, the
        # command ran and its status is lost (the loop above handles end-of-file).
        return None, "no answer"
    finally:
        sock.close()


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
