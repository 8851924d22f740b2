"""The host template of the warm kernel: a process that forks Python plugin hosts.

Under the warm kernel (conduit/warm/) a process plugin's host does not start a new
interpreter: the server forks this template once, before it serves any command, with the
host child's modules imported (:func:`conduit.hosts.process.preload`), and a command that
needs a host asks it for one. The template forks, and the new process takes the
environment, file descriptors and process group it was sent and runs the host's main
(``conduit.hosts._child``), which applies the limits and the sandbox before any plugin
code, exactly as a host started from a new interpreter does.

Why a template and not a fork of the command's own process: a fork copies memory, and a
command's process has held the user's whole environment, the config and other plugins'
data; a sandboxed plugin could read them back from its own address space (or from
``/proc/self/environ``). The template has held nothing of any command: the server runs
with a reduced environment (:func:`conduit.warm.server.server_environment`), the template
is forked before the first request, and it receives each request into one buffer that it
wipes as soon as the new host has its copy.

The exchange (a ``SOCK_SEQPACKET`` socket the server's children inherit, one record per
request; a private socket pair per host for the answers)::

    command -> template   marshal((env, targets, path, pgid)), fds: [channel, *targets' fds]
    template -> command   b"P" + pid, on the channel, with a pidfd of the host
    template -> command   b"S" + wait status, on the channel, when the host has ended
"""

from __future__ import annotations

import contextlib
import marshal
import os
import select
import signal
import socket
import subprocess
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

__all__ = ["MAX_REQUEST", "Spawned", "ahead_pays", "received_fds", "serve", "spawn", "start"]

#: the largest request (the host's environment and its file descriptor table)
MAX_REQUEST = 1 << 20
_MAX_FDS = 16
#: received descriptors are moved above this number before they take their places
_HIGH_FD = 256


class Spawned:
    """The part of :class:`subprocess.Popen` the process host uses, for a host the
    template forked: its status arrives on ``channel``, signals go through a pidfd."""

    stdin = stdout = None

    def __init__(self, pid: int, pidfd: int, channel: socket.socket) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.channel = channel
        self.returncode: int | None = None

    def _take(self, timeout: float | None) -> None:
        if self.returncode is not None:
            return
        ready, _, _ = select.select([self.channel.fileno()], [], [], timeout)
        if not ready:
            return
        message = self.channel.recv(8)
        if message[:1] == b"S":
            status = int.from_bytes(message[1:5], sys.byteorder, signed=True)
            self.returncode = os.waitstatus_to_exitcode(status)
        else:  # the template went away: the host's status is lost, not its end
            ready, _, _ = select.select([self.pidfd], [], [], timeout)  # its exit
            if ready:
                self.returncode = -signal.SIGKILL
        if self.returncode is not None:
            self.channel.close()
            os.close(self.pidfd)

    def poll(self) -> int | None:
        self._take(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._take(left)
            if self.returncode is None and deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
        return self.returncode

    def halt(self, timeout: float) -> None:
        """End the host (SIGKILL) and return once it cannot run again: every thread of it
        is exiting (``PF_EXITING``, the kernel's first step of an exit: no system call
        of its is left in progress, and none can start), or it has ended. The rest of its
        exit goes on without the caller: freeing its memory (about 1 ms) and closing its
        descriptors, which releases the file locks it held and ends the pipes it wrote
        to. Its status is not waited for."""
        if self.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):  # (it has just ended)
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        # (if it has ended and its pid is another process's, the pidfd is readable)
        while not _exiting(self.pid):
            ready, _, _ = select.select([self.pidfd], [], [], 0.0002)
            if ready:
                break
            if time.monotonic() >= deadline:  # (a thread in uninterruptible sleep)
                select.select([self.pidfd], [], [])  # until it has ended, however long
                break
        self.channel.close()
        os.close(self.pidfd)
        self.returncode = -signal.SIGKILL

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # it has just ended
                signal.pidfd_send_signal(self.pidfd, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


#: the kernel's flag of a task that has begun to exit (``include/linux/sched.h``)
_PF_EXITING = 0x4


def _exiting(pid: int) -> bool:
    """Whether every thread of process ``pid`` is exiting, or it is gone (from
    ``/proc/PID/task/TID/stat``: the ninth field is the task's flags). False when
    ``/proc`` does not tell (the caller then waits for the end)."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError):
        return True
    except OSError:
        return False
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                fields = f.read().rpartition(b")")[2].split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # that thread has gone
        except OSError:
            return False
        if not int(fields[6]) & _PF_EXITING:
            return False
    return True


def spawn(template: socket.socket, env: dict[str, str], keep: tuple[int, ...]) -> Spawned:
    """A new host from ``template``: fds 0-2 and ``keep`` at the same numbers, ``env`` as
    its environment, in this process's group. Raises OSError when the template is gone."""
    from conduit.index import site_dirs

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        targets = [0, 1, 2, *keep]
        data = marshal.dumps((env, targets, site_dirs(), os.getpgid(0)))
        fds = b"".join(fd.to_bytes(4, sys.byteorder) for fd in (theirs.fileno(), *targets))
        template.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
    finally:
        theirs.close()
    ours.settimeout(30.0)
    message, ancdata, _, _ = ours.recvmsg(8, socket.CMSG_SPACE(4))
    received = received_fds(ancdata)
    ours.settimeout(None)
    if message[:1] != b"P" or len(received) != 1:
        for fd in received:
            os.close(fd)
        ours.close()
        raise OSError("the host template did not start the host")
    return Spawned(int.from_bytes(message[1:5], sys.byteorder), received[0], ours)


def received_fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    """The file descriptors an ``SCM_RIGHTS`` message brought (``recvmsg``'s ancdata)."""
    out: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            out += [int.from_bytes(payload[i : i + 4], sys.byteorder) for i in range(0, usable, 4)]
    return out


def start(close: tuple[int, ...] = ()) -> tuple[socket.socket, int]:
    """Fork the template (in the server, before the first request); return the socket
    that commands send their requests to, and its pid. ``close``: the server's own
    descriptors, which the template must not hold."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        ours.close()
        for fd in close:
            os.close(fd)
        try:
            serve(theirs)
        finally:
            os._exit(0)
    theirs.close()
    return ours, pid


def serve(requests: socket.socket) -> NoReturn:
    """The template's loop: hand each request to a host forked ahead of it (the fork is
    then not on the command's time), until the server and every command have closed the
    other end."""
    os.setpgid(0, 0)  # not in the server's group: a signal to that one is not for us
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _preload()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    buffer = bytearray(MAX_REQUEST)
    hosts: dict[int, socket.socket] = {}
    own = (requests.fileno(), wake_r, wake_w)
    spare: tuple[int, socket.socket] | None = None
    while True:
        if spare is None and not hosts:
            spare = _fork_spare(own, hosts, ahead=True)  # between commands: off anyone's time
        try:
            ready, _, _ = select.select([requests.fileno(), wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in ready:
            os.read(wake_r, 512)
            if _reap(hosts, spare):
                spare = None
        if requests.fileno() not in ready:
            continue
        try:
            size, ancdata, flags, _ = requests.recvmsg_into(
                [buffer], socket.CMSG_SPACE(4 * _MAX_FDS)
            )
        except InterruptedError:
            continue
        fds = received_fds(ancdata)
        if size == 0 and not fds:
            os._exit(0)  # every holder of the other end is gone
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(fds) < 4:
            for fd in fds:
                os.close(fd)
            continue
        channel = socket.socket(fileno=fds[0])
        for _attempt in range(2):
            if spare is None:
                # (nor this request's descriptors: the host is given its own copies)
                spare = _fork_spare((*own, *fds), hosts, ahead=False)
            pid, handle = spare
            spare = None
            try:
                # the request, its descriptors but the channel, to the spare
                rights = b"".join(_int4(fd) for fd in fds[1:])
                handle.sendmsg(
                    [memoryview(buffer)[:size]], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)]
                )
            except OSError:
                continue  # it died: another one
            finally:
                handle.close()
            break
        else:
            pid = 0
        buffer[:size] = bytes(size)  # nothing of this host's environment stays here
        for fd in fds[1:]:
            os.close(fd)
        if not pid:
            channel.close()
            continue
        with contextlib.suppress(OSError):  # else the command went away, and so will the host
            pidfd = os.pidfd_open(pid)
            message = b"P" + pid.to_bytes(4, sys.byteorder)
            channel.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, _int4(pidfd))])
            os.close(pidfd)
        hosts[pid] = channel


def _preload() -> None:
    """What a host imports before plugin code: the host's child side and the sandbox's
    system-call modules (ctypes and the C library: most of ``sandbox.apply()``'s time in
    a new interpreter); and the network namespace hosts without a network grant share
    (:func:`conduit.security.sandbox.share_network`)."""
    import resource  # noqa: F401  (the host's limits)

    import conduit.hosts._child  # noqa: F401
    from conduit.security import sandbox, seccomp
    from conduit.security.landlock import libc

    libc()
    seccomp.prepare()  # the filters built here, each host still installs its own
    sandbox.share_network()


def _fork_spare(
    close: tuple[int, ...], hosts: dict[int, socket.socket], ahead: bool
) -> tuple[int, socket.socket]:
    """A host forked ahead, waiting for its request (:func:`_spare`). ``close``: the
    template's own descriptors (and those of a request it holds), which the host must not
    hold."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        signal.set_wakeup_fd(-1)
        ours.close()
        for fd in close:
            os.close(fd)
        for channel in hosts.values():
            channel.close()
        _spare(theirs, rehearse=ahead and ahead_pays())
    theirs.close()
    return pid, ours


def ahead_pays() -> bool:
    """Whether a spare forked ahead should rehearse while it waits (copy the pages its
    request will need): only where this process may run on more than one CPU, so that the
    work can go to a CPU the starting client does not need; on one CPU it only delays the
    client (docs/performance.md, rounds 7 and 9)."""
    return len(os.sched_getaffinity(0)) > 1


def _spare(end: socket.socket, rehearse: bool = False) -> NoReturn:
    """In a spare host: wait for a request, then become that host."""
    # a host's signal handling (as a new interpreter's), set while it waits
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # The pages a Click command uses, copied while it waits (the warm kernel's template
    # has Click preloaded): not for a request that is already waiting (:func:`ahead_pays`)
    if rehearse and "click" in sys.modules:
        from conduit.hosts.inprocess import rehearse_click

        try:
            rehearse_click(2)
        except KeyboardInterrupt:  # (as while it waits, below)
            os._exit(0)
        except Exception:  # only a rehearsal: the host will say what fails
            pass
    try:
        data, ancdata, flags, _ = end.recvmsg(MAX_REQUEST, socket.CMSG_SPACE(4 * _MAX_FDS))
    except (OSError, KeyboardInterrupt):
        os._exit(0)
    fds = received_fds(ancdata)
    end.close()
    if not data or flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        os._exit(0)  # the template has gone
    _become_host(data, fds)


def _int4(fd: int) -> bytes:
    return fd.to_bytes(4, sys.byteorder)


def _reap(hosts: dict[int, socket.socket], spare: tuple[int, socket.socket] | None) -> bool:
    """Pass on the statuses of hosts that ended; True if the spare was one of them."""
    lost = False
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return lost
        if pid == 0:
            return lost
        if spare is not None and pid == spare[0]:
            spare[1].close()
            lost = True
            continue
        channel = hosts.pop(pid, None)
        if channel is not None:
            with contextlib.suppress(OSError):
                channel.sendall(b"S" + status.to_bytes(4, sys.byteorder, signed=True))
            channel.close()


def _become_host(data: bytes, fds: list[int]) -> NoReturn:
    """In the new host: the command's fds (0-2 and the host's own, in the order of the
    request's targets) at their numbers, its group, the environment it sent, then the
    host's main (which never returns)."""
    try:
        env, targets, path, pgid = marshal.loads(data)
        import fcntl

        from conduit.security.sandbox import keep_shared_apart

        keep_shared_apart(targets)

        # out of the way of every target number first, then each to its number
        moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _HIGH_FD) for fd in fds]
        for fd in fds:
            os.close(fd)
        for source, target in zip(moved, targets, strict=True):
            os.dup2(source, target)
            os.close(source)
        with contextlib.suppress(OSError):  # Ctrl-C, relayed to the command's group, too
            os.setpgid(0, pgid)
        os.environ.clear()
        os.environ.update(env)
        sys.path[:] = path
        sys.argv = [sys.executable]
        from conduit.hosts._child import main

        main()
    except BaseException:
        import traceback

        os.write(2, traceback.format_exc().encode("utf-8", "replace")[-4000:])
    os._exit(70)
