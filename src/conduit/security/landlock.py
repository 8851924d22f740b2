"""Landlock (Linux >= 5.13) through ctypes: filesystem, TCP port and scope rules.

Only what the process host's sandbox needs: :func:`abi` tells which version the running
kernel speaks (0: none), :class:`Ruleset` collects rules and :meth:`Ruleset.restrict`
applies them to the calling thread and every thread or process it starts afterwards.
Landlock cannot be undone; a restricted process can only restrict itself further.

The system calls have the same numbers on every architecture (they were added after
the tables were unified), so nothing here depends on ``platform.machine()``.
"""

from __future__ import annotations

import ctypes
import os

__all__ = [
    "FS_EXECUTE",
    "FS_READ",
    "FS_WRITE",
    "LandlockError",
    "Ruleset",
    "abi",
]

_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH, _RULE_NET_PORT = 1, 2

# filesystem access rights, with the ABI that introduced them
EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13  # ABI 2
TRUNCATE = 1 << 14  # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5

NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1

SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1

FS_READ = READ_FILE | READ_DIR
FS_WRITE = (
    WRITE_FILE
    | REMOVE_DIR
    | REMOVE_FILE
    | MAKE_DIR
    | MAKE_REG
    | MAKE_SOCK
    | MAKE_FIFO
    | MAKE_SYM
    | REFER
    | TRUNCATE
)
FS_EXECUTE = EXECUTE
#: the rights that make sense on a file (the kernel refuses the others on non-directories)
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV


def _fs_rights(version: int) -> int:
    rights = (1 << 13) - 1
    if version >= 2:
        rights |= REFER
    if version >= 3:
        rights |= TRUNCATE
    if version >= 5:
        rights |= IOCTL_DEV
    return rights


class LandlockError(OSError):
    """A Landlock system call failed."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


class _NetPortAttr(ctypes.Structure):
    _fields_ = (("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64))


_libc: ctypes.CDLL | None = None


def libc() -> ctypes.CDLL:
    """The C library (with errno), loaded once for all of the sandbox's system calls."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _syscall(*args: object) -> int:
    result = int(libc().syscall(*args))
    if result < 0:
        errno = ctypes.get_errno()
        raise LandlockError(errno, os.strerror(errno))
    return result


def abi() -> int:
    """The Landlock ABI version of the running kernel; 0 if Landlock is unavailable."""
    try:
        return _syscall(ctypes.c_long(_CREATE_RULESET), None, ctypes.c_size_t(0),
                        ctypes.c_uint32(_CREATE_RULESET_VERSION))  # fmt: skip
    except (LandlockError, OSError, AttributeError):
        return 0


class Ruleset:
    """Rules to apply together.

    Filesystem rights in ``handled_fs`` are denied everywhere except beneath the paths
    given to :meth:`allow_path`; with ``handle_net`` TCP bind and connect are denied
    except to the ports given to :meth:`allow_port`. Rights the kernel's ABI does not know
    are dropped (they cannot be enforced; :func:`abi` tells the caller which).
    """

    def __init__(self, version: int, *, handled_fs: int, handle_net: bool, scoped: bool) -> None:
        self.version = version
        self.handled_fs = handled_fs & _fs_rights(version)
        self.handled_net = NET_BIND_TCP | NET_CONNECT_TCP if handle_net and version >= 4 else 0
        self.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if scoped and version >= 6 else 0
        self.paths: list[tuple[str, int]] = []
        self.ports: list[tuple[int, int]] = []

    def allow_path(self, path: str, rights: int) -> None:
        self.paths.append((path, rights))

    def allow_port(self, port: int, rights: int = NET_CONNECT_TCP) -> None:
        self.ports.append((port, rights))

    def restrict(self) -> list[str]:
        """Apply the rules to this thread (and what it starts); return the paths skipped
        because they do not exist. ``no_new_privs`` must be set already."""
        attr = _RulesetAttr(self.handled_fs, self.handled_net, self.scoped)
        size = 24 if self.version >= 6 else 16 if self.version >= 4 else 8
        fd = _syscall(ctypes.c_long(_CREATE_RULESET), ctypes.byref(attr),
                      ctypes.c_size_t(size), ctypes.c_uint32(0))  # fmt: skip
        skipped: list[str] = []
        try:
            for path, rights in self.paths:
                rights &= self.handled_fs
                if not rights:
                    continue
                try:
                    target = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    skipped.append(path)
                    continue
                try:
                    if not os.path.isdir(path):
                        rights &= _FILE_RIGHTS
                    if rights:
                        rule = _PathBeneathAttr(rights, target)
                        _syscall(ctypes.c_long(_ADD_RULE), ctypes.c_int(fd),
                                 ctypes.c_int(_RULE_PATH_BENEATH), ctypes.byref(rule),
                                 ctypes.c_uint32(0))  # fmt: skip
                finally:
                    os.close(target)
            if self.handled_net:
                for port, rights in self.ports:
                    net = _NetPortAttr(rights & self.handled_net, port)
                    _syscall(ctypes.c_long(_ADD_RULE), ctypes.c_int(fd),
                             ctypes.c_int(_RULE_NET_PORT), ctypes.byref(net),
                             ctypes.c_uint32(0))  # fmt: skip
            _syscall(ctypes.c_long(_RESTRICT_SELF), ctypes.c_int(fd), ctypes.c_uint32(0))
        finally:
            os.close(fd)
        return skipped
