"""Issue 14, escape 2: Unix datagram sockets must not reach outside the process sandbox.

A real ``isolation = "process"`` plugin tries every way the red team (and we) found to
send a datagram to a Unix socket outside its sandbox: a socket the test binds in a temp
directory (as ``/dev/log`` or journald would be) and one in the abstract namespace. The
plugin reports where each attempt stopped; the test asserts that each stopped with a
``PermissionError`` (or, for the connected stream pair the sandbox allows, with the
kernel's own refusal) and that nothing arrived. It also tries the sockets the host
inherited, and the kernel's own descriptors (``pidfd_getfd``).
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conduit.security import landlock, report, seccomp

from _factory import manifest_block, write

pytestmark = [
    pytest.mark.skipif(
        sys.platform != "linux" or landlock.abi() < 4 or not seccomp.available(),
        reason="needs Linux with Landlock ABI >= 4 and seccomp on x86_64",
    ),
    pytest.mark.timeout(60),
]

ATTACKER = r'''
import ctypes, errno, os, socket
import click
from conduit.sdk import Plugin

PATH, ABSTRACT = "", b""  # set by the command
libc = ctypes.CDLL(None, use_errno=True)


def check(result):
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))  # PermissionError for EPERM
    return result


def dgram_sendto(step):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    step.append("sendto")
    a.sendto(b"dgram-sendto", PATH)


def dgram_connect(step):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    step.append("connect")
    a.connect(PATH)
    step.append("send")
    a.send(b"dgram-connect")


def dgram_sendmsg(step):  # the address in msg_name, where seccomp cannot look
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    step.append("sendmsg")
    a.sendmsg([b"dgram-sendmsg"], [], 0, PATH)


def dgram_sendmmsg(step):  # straight to the system calls, flags and all
    pair = (ctypes.c_int * 2)()
    check(libc.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK
                          | socket.SOCK_CLOEXEC, 0, pair))

    class Addr(ctypes.Structure):
        _fields_ = [("family", ctypes.c_ushort), ("path", ctypes.c_char * 108)]

    class IoVec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_char_p), ("len", ctypes.c_size_t)]

    class MsgHdr(ctypes.Structure):
        _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint),
                    ("iov", ctypes.POINTER(IoVec)), ("iovlen", ctypes.c_size_t),
                    ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                    ("flags", ctypes.c_int)]

    class MMsgHdr(ctypes.Structure):
        _fields_ = [("hdr", MsgHdr), ("len", ctypes.c_uint)]

    addr = Addr(socket.AF_UNIX, PATH.encode())
    data = b"dgram-sendmmsg"
    iov = IoVec(data, len(data))
    msg = MMsgHdr(MsgHdr(ctypes.cast(ctypes.byref(addr), ctypes.c_void_p),
                         ctypes.sizeof(addr), ctypes.pointer(iov), 1, None, 0, 0), 0)
    step.append("sendmmsg")
    try:
        check(libc.sendmmsg(pair[0], ctypes.byref(msg), 1, 0))
    finally:
        os.close(pair[0])
        os.close(pair[1])


def raw_pair(step):  # Linux makes an AF_UNIX SOCK_RAW socket a datagram socket
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_RAW)
    step.append("sendto")
    a.sendto(b"raw-pair", PATH)


def seqpacket_pair(step):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    step.append("connect")
    a.connect(PATH)


def abstract(step):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    step.append("sendto")
    a.sendto(b"abstract", ABSTRACT)


def socket_dgram(step):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    step.append("sendto")
    s.sendto(b"socket-dgram", PATH)


def stream_pair_sendto(step):
    a, b = socket.socketpair()
    step.append("sendto")
    a.sendto(b"stream-pair-sendto", PATH)


def stream_pair_connect(step):
    a, b = socket.socketpair()
    b.close()  # a closed peer does not make it connectable either
    step.append("connect")
    a.connect(PATH)


ATTACKS = [dgram_sendto, dgram_connect, dgram_sendmsg, dgram_sendmmsg, raw_pair,
           seqpacket_pair, abstract, socket_dgram, stream_pair_sendto, stream_pair_connect]


def inherited():
    """Every socket the host was handed (its channel to the kernel, the proxy's)."""
    tried = sent = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            s = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue  # not a socket (or already closed)
        tried += 1
        with s:
            for call in (lambda: s.sendto(b"inherited", PATH),
                         lambda: s.connect(PATH), lambda: s.sendto(b"inherited", ABSTRACT)):
                try:
                    call()
                    sent += 1
                except (OSError, TypeError):  # TypeError: an AF_INET socket
                    pass
    return tried, sent


def stolen():
    """The kernel's descriptors, taken with pidfd_getfd() (Landlock keeps a sandboxed
    process from ptrace-like access to processes outside it)."""
    pidfd = libc.syscall(434, os.getppid(), 0)  # pidfd_open
    if pidfd < 0:
        return 0
    taken = 0
    for fd in range(64):
        got = libc.syscall(438, pidfd, fd, 0)  # pidfd_getfd
        if got >= 0:
            taken += 1
            os.close(got)
    os.close(pidfd)
    return taken


@click.command("attacker")
@click.argument("what")
@click.argument("path")
@click.argument("name")
def attacker(what, path, name):
    global PATH, ABSTRACT
    PATH, ABSTRACT = path, b"\0" + name.encode()
    if what == "uncaught":
        socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        return
    for attack in ATTACKS:
        step = ["socket" if attack is socket_dgram else "socketpair"]
        label = attack.__name__.replace("_", "-")
        try:
            attack(step)
            click.echo(f"{label}: sent")
        except OSError as exc:
            code = errno.errorcode.get(exc.errno, exc.errno)
            click.echo(f"{label}: {step[-1]} {type(exc).__name__} {code}")
    tried, sent = inherited()
    click.echo(f"inherited: {sent} sent through {'some' if tried else 'no'} sockets")
    click.echo(f"stolen: {stolen()} of the kernel's descriptors")

class P(Plugin):
    def boot(self, ctx):
        ctx.register_command(attacker)
'''

#: where each attempt must stop: no datagram socket can be made, and the connected
#: stream pair the sandbox allows cannot be pointed at a path
STOPPED = [
    "dgram-sendto: socketpair PermissionError EPERM",
    "dgram-connect: socketpair PermissionError EPERM",
    "dgram-sendmsg: socketpair PermissionError EPERM",
    "dgram-sendmmsg: socketpair PermissionError EPERM",
    "raw-pair: socketpair PermissionError EPERM",
    "seqpacket-pair: socketpair PermissionError EPERM",
    "abstract: socketpair PermissionError EPERM",
    "socket-dgram: socket PermissionError EPERM",
    "stream-pair-sendto: sendto OSError EISCONN",
    "stream-pair-connect: connect OSError EPROTOTYPE",
    "inherited: 0 sent through some sockets",
    "stolen: 0 of the kernel's descriptors",
]


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[tuple[Path, str, list[socket.socket]]]:
    """Two datagram sockets outside the sandbox, as /dev/log would be: one bound to a
    path, one in the abstract namespace."""
    path = tmp_path / "log.sock"
    name = f"conduit-escape-{os.getpid()}"
    at_path = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    at_path.bind(str(path))
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    abstract.bind(b"\0" + name.encode())
    for s in (at_path, abstract):
        s.setblocking(False)
    yield path, name, [at_path, abstract]
    at_path.close()
    abstract.close()


def arrived(sockets: list[socket.socket]) -> list[bytes]:
    got = []
    for s in sockets:
        while True:
            try:
                got.append(s.recv(100))
            except BlockingIOError:
                break
    return got


def attacker_plugin(plugin_dir: Path) -> None:
    toml = 'name = "attacker"\napi = ">=1.0,<2"\nisolation = "process"\n'
    toml += '[[commands]]\nname = "attacker"\n'
    write(plugin_dir, "attacker.py", manifest_block(toml) + ATTACKER)


GRANTS = {
    "no grants": [],
    "scoped network": ["network:http:localhost"],
    "every grant": ["filesystem:read", "filesystem:write", "network:http", "process:execute"],
}


@pytest.mark.parametrize("grants", list(GRANTS), ids=list(GRANTS))
def test_no_datagram_reaches_a_unix_socket_outside(
    plugin_dir, conduit_home, run, receivers, grants
):
    if grants == "scoped network" and not report.mechanisms()["netns"]:
        pytest.skip("needs user and network namespaces")
    path, name, sockets = receivers
    attacker_plugin(plugin_dir)
    caps = ", ".join(f'"{c}"' for c in GRANTS[grants])
    (conduit_home / "config.toml").write_text(f"[grants]\nattacker = [{caps}]\n")
    r = run("attacker", "all", str(path), name)
    assert r.code == 0, r.err
    assert arrived(sockets) == []
    assert r.out.splitlines() == STOPPED
    # the receivers were there to be reached: the same datagrams from outside arrive
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        a.sendto(b"from outside", str(path))
        a.sendto(b"from outside", b"\0" + name.encode())
    assert arrived(sockets) == [b"from outside", b"from outside"]


def test_a_refused_datagram_pair_is_reported_as_a_unix_socket(
    plugin_dir, conduit_home, run, receivers
):
    path, name, _ = receivers
    attacker_plugin(plugin_dir)
    r = run("attacker", "uncaught", str(path), name)
    assert r.code == 1
    assert r.err.splitlines()[0] == (
        "error: plugin 'attacker': command 'attacker' tried to open a Unix socket, "
        "which the sandbox never allows"
    )
