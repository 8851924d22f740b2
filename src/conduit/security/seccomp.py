"""A seccomp filter (x86_64 only) written as a classic BPF program, through ctypes.

The filter answers ``EPERM`` (so Python raises :class:`PermissionError`) to:

- ``execve`` and ``execveat``, unless running programs is allowed;
- ``socket()`` of any family when the network is not allowed; when it is, of any but
  ``AF_INET``/``AF_INET6`` and ``AF_NETLINK`` (glibc's resolver asks it about
  interfaces; it only ever reaches the process's own network namespace). ``AF_UNIX`` is
  refused always: Landlock (up to ABI 7) does not govern ``connect()`` to a Unix
  socket's path, so a new Unix socket could reach ``/run/docker.sock`` or an ssh-agent.
  Without the network, netlink is refused too: the warm kernel's hosts share one network
  namespace (:func:`conduit.security.sandbox.share_network`), in which netlink sockets
  (``NETLINK_USERSOCK``) could reach each other;
- ``bind()`` without the network: the end of a Unix socket pair may be bound to an
  abstract name, which every process of the network namespace sees (in
  ``/proc/net/unix``): hosts sharing one could pass data through names;
- ``socketpair()`` of anything but ``AF_UNIX``/``SOCK_STREAM`` (``SOCK_NONBLOCK`` and
  ``SOCK_CLOEXEC`` allowed). A datagram pair (``SOCK_DGRAM``, or ``SOCK_RAW``, which
  Linux makes a datagram socket) is not bound to its peer: ``sendto()``/``sendmsg()``
  with an address, or ``connect()`` then ``send()``, deliver to any datagram socket on
  the machine (``/dev/log``, journald). The filter cannot see those addresses (they are
  behind pointers, ``sendmsg``'s inside a struct) nor a socket's type in ``connect()``,
  so no unconnected Unix datagram socket may exist in the child at all: ``socket()``
  cannot make one, ``socketpair()`` makes connected stream pairs only, which the kernel
  never re-points (``EISCONN`` for an address, ``EISCONN``/``EPROTOTYPE`` for
  ``connect()``, even after the peer closed). ``SOCK_SEQPACKET`` is refused too, as
  nothing Conduit runs needs it. The sockets the host inherits (the RPC channel, the
  proxy's) are connected stream sockets as well;
- ``ioctl(TIOCSTI)`` and ``ioctl(TIOCLINUX)`` always: the host inherits the user's
  terminal, and these push keystrokes into it, to be run by the shell after Conduit
  exits (Landlock's ioctl rules do not cover descriptors opened before it applies);
- ``add_key``, ``request_key`` and ``keyctl`` always: the host shares the user's
  session keyring, which may hold credentials (Kerberos tickets, encryption keys);
- ``io_uring_setup``/``enter``/``register`` always: io_uring can open sockets and run
  operations the filter never sees;
- every x32 system call and every call made through another architecture's entry
  (``int 0x80``), whose numbers differ and would slip past the checks above.

Everything else is allowed: this is a filter for the capabilities Conduit grants, not a
general hardening profile. Once installed it cannot be removed, and processes started
later inherit it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

__all__ = ["SeccompError", "available", "install", "program"]

_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_BIT = 0x40000000
_NR_IOCTL, _NR_SOCKET, _NR_BIND, _NR_SOCKETPAIR, _NR_EXECVE, _NR_EXECVEAT = 16, 41, 49, 53, 59, 322
_TIOCSTI, _TIOCLINUX = 0x5412, 0x541C
_NR_IO_URING = (425, 426, 427)
_NR_KEYS = (248, 249, 250)  # add_key, request_key, keyctl
_AF_UNIX, _AF_INET, _AF_INET6, _AF_NETLINK = 1, 2, 10, 16
_SOCK_STREAM, _SOCK_TYPE_MASK = 1, 0xF  # the type without SOCK_NONBLOCK, SOCK_CLOEXEC

_LD_W_ABS, _JEQ_K, _JGE_K, _ALU_AND_K, _RET_K = 0x20, 0x15, 0x35, 0x54, 0x06
_RET_ALLOW = 0x7FFF0000
_RET_EPERM = 0x00050000 | errno.EPERM
_OFF_NR, _OFF_ARCH, _OFF_ARG0, _OFF_ARG1 = (
    0,
    4,
    16,
    24,
)  # struct seccomp_data, little-endian low words

_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, _PR_GET_SECCOMP = 22, 2, 21


class SeccompError(OSError):
    """Installing the filter failed."""


def available() -> bool:
    """Whether this machine can install the filter (x86_64 Linux with seccomp)."""
    if _AVAILABLE:
        return _AVAILABLE[0]
    # os.uname(), not platform.machine(): platform imports re and compiles patterns (ms)
    if not hasattr(os, "uname") or os.uname().machine != "x86_64":
        return False
    from conduit.security.landlock import libc

    try:
        return int(libc().prctl(_PR_GET_SECCOMP, 0, 0, 0, 0)) >= 0
    except (OSError, AttributeError):
        return False


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> tuple[int, int, int, int]:
    return (code, jt, jf, k)


def program(*, allow_exec: bool, allow_inet: bool) -> list[tuple[int, int, int, int]]:
    """The filter as ``(code, jt, jf, k)`` instructions (a jump skips that many)."""
    ops = [
        _op(_LD_W_ABS, _OFF_ARCH),
        _op(_JEQ_K, _AUDIT_ARCH_X86_64, jt=1),
        _op(_RET_K, _RET_EPERM),
        _op(_LD_W_ABS, _OFF_NR),
        _op(_JGE_K, _X32_BIT, jf=1),
        _op(_RET_K, _RET_EPERM),
    ]
    denied = [*_NR_IO_URING, *_NR_KEYS]
    if not allow_exec:
        denied += [_NR_EXECVE, _NR_EXECVEAT]
    if not allow_inet:
        denied.append(_NR_BIND)
    for nr in denied:
        ops += [_op(_JEQ_K, nr, jf=1), _op(_RET_K, _RET_EPERM)]
    ops += [
        _op(_JEQ_K, _NR_IOCTL, jf=5),  # not ioctl(): on to socket()
        _op(_LD_W_ABS, _OFF_ARG1),
        _op(_JEQ_K, _TIOCSTI, jt=1),
        _op(_JEQ_K, _TIOCLINUX, jf=1),
        _op(_RET_K, _RET_EPERM),
        _op(_RET_K, _RET_ALLOW),
    ]
    families = [_AF_NETLINK, _AF_INET, _AF_INET6] if allow_inet else []
    ops += [
        _op(_JEQ_K, _NR_SOCKET, jf=len(families) + 3),  # not socket(): on to socketpair()
        _op(_LD_W_ABS, _OFF_ARG0),
    ]
    for i, family in enumerate(families):
        ops.append(_op(_JEQ_K, family, jt=len(families) - i))  # to this block's allow
    ops += [_op(_RET_K, _RET_EPERM), _op(_RET_K, _RET_ALLOW)]
    # socketpair(AF_UNIX, SOCK_STREAM) only (with any of SOCK_NONBLOCK, SOCK_CLOEXEC):
    # a datagram pair could be pointed at any path by connect() or sendto()
    ops += [
        _op(_JEQ_K, _NR_SOCKETPAIR, jf=6),  # not socketpair(): to the final allow
        _op(_LD_W_ABS, _OFF_ARG0),
        _op(_JEQ_K, _AF_UNIX, jf=3),
        _op(_LD_W_ABS, _OFF_ARG1),
        _op(_ALU_AND_K, _SOCK_TYPE_MASK),
        _op(_JEQ_K, _SOCK_STREAM, jt=1),
        _op(_RET_K, _RET_EPERM),
        _op(_RET_K, _RET_ALLOW),
    ]
    return ops


#: the filters built ahead by :func:`prepare`, by ``(allow_exec, allow_inet)``
_PREPARED: dict[tuple[bool, bool], bytes] = {}
#: :func:`available`'s answer, once :func:`prepare` has asked
_AVAILABLE: list[bool] = []


class _Prog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def _raw(allow_exec: bool, allow_inet: bool) -> bytes:
    ops = program(allow_exec=allow_exec, allow_inet=allow_inet)
    return b"".join(struct.pack("<HBBI", *op) for op in ops)


def prepare() -> None:
    """Build every variant of the filter now, and ask :func:`available` once: the warm
    kernel's host template calls it before it forks hosts, so that a host's
    :func:`install` only copies its filter and installs it (the filter is still
    installed by each host, after the fork, before any plugin code)."""
    _AVAILABLE[:] = [available()]
    for allow_exec in (False, True):
        for allow_inet in (False, True):
            _PREPARED[(allow_exec, allow_inet)] = _raw(allow_exec, allow_inet)


def install(*, allow_exec: bool, allow_inet: bool) -> None:
    """Install the filter on this thread (``no_new_privs`` must be set already)."""
    raw = _PREPARED.get((allow_exec, allow_inet)) or _raw(allow_exec, allow_inet)
    buffer = ctypes.create_string_buffer(raw, len(raw))
    prog = _Prog(len(raw) // 8, ctypes.addressof(buffer))
    from conduit.security.landlock import libc

    if libc().prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise SeccompError(err, os.strerror(err))
