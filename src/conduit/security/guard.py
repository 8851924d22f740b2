"""The in-process guard: a PEP 578 audit hook that holds in-process plugins to their grants.

A guard against mistakes, not a security boundary: code in the kernel's interpreter can
always get around it (ctypes, native extensions, ...; docs/permissions.md lists the
ways). Untrusted plugins belong in the process or WebAssembly host.

How it works:

- :func:`install` adds one audit hook to the interpreter, the first time an in-process
  third-party plugin is activated (an audit hook cannot be removed again).
- The kernel enters a plugin's :class:`Running` around every call into its code
  (import and boot, commands, hook implementations, service factories, shutdown) and
  :data:`TRUSTED` around its own work; that sets the module's current :class:`Policy`.
- The hook returns at once for unwatched events or when no plugin is running; otherwise
  it checks the event against the running plugin's grants and raises
  :class:`~conduit.errors.CapabilityDenied`.
- While a plugin runs, ``os.environ`` (and so ``os.getenv``) is a view that shows only
  the variables it was granted: environment reads cannot be audited.

Python's own imports keep working: reads under the interpreter's prefixes and
``sys.path`` (but not the current directory), the plugin's own file, and whatever the
import system itself reads or caches (``.py``/``.pyc``/extension modules, directory
listings, ``__pycache__`` writes) are allowed without a grant.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from types import FrameType
from typing import Any

from conduit.errors import CapabilityDenied

TYPE_CHECKING = False
if TYPE_CHECKING:
    from conduit.security.capabilities import Capability

__all__ = [
    "TRUSTED",
    "Policy",
    "Running",
    "current",
    "install",
    "own_files",
]

#: the policy of the plugin whose code is running, None for the kernel's own code
_current: Policy | None = None
_installed = False
_real_environ = os.environ


class _EnvDenied(CapabilityDenied, KeyError):
    """Reading an ungranted variable: a KeyError too, so ``environ.get()`` and
    ``os.getenv()`` see it as unset."""

    __str__ = CapabilityDenied.__str__


class _GrantedEnviron(MutableMapping[str, str]):
    """``os.environ`` as a guarded plugin sees it: only its granted variables.

    Reading an ungranted variable raises :class:`CapabilityDenied` (a ``KeyError``, so
    ``.get()``, ``in`` and ``os.getenv()`` treat it as unset); writes go to the real
    environment.
    """

    def __init__(self, policy: Policy) -> None:
        self._policy = policy

    def _allowed(self, key: str) -> bool:
        return any(cap.allows_env(key) for cap in self._policy.env)

    def __getitem__(self, key: str) -> str:
        if not self._allowed(key):
            raise _EnvDenied(
                self._policy.name, "reading the environment variable", key, f"env:read:{key}"
            )
        return _real_environ[key]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._allowed(key) and key in _real_environ

    def get(self, key: str, default: Any = None) -> Any:
        # Not Mapping.get, which would build (and drop) a CapabilityDenied for every
        # ungranted variable asked for: Click and gettext ask for five on every command.
        if isinstance(key, str) and self._allowed(key):
            return _real_environ.get(key, default)
        return default

    def __iter__(self) -> Iterator[str]:
        return iter([k for k in _real_environ if self._allowed(k)])

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __setitem__(self, key: str, value: str) -> None:
        _real_environ[key] = value

    def __delitem__(self, key: str) -> None:
        del _real_environ[key]

    def copy(self) -> dict[str, str]:
        return dict(self)

    def __repr__(self) -> str:
        return f"<environ of plugin {self._policy.name!r}: {len(self)} granted variables>"


class Policy:
    """The grants of one plugin, prepared for fast checks in the audit hook.

    ``own`` lists what the plugin may read without a grant besides the interpreter's
    files: its own file or package (:func:`own_files`) and, for a single-file plugin
    with inline dependencies, their directory (the kernel knows where the store puts it;
    this module imports nothing from the store).
    """

    def __init__(
        self,
        name: str,
        grants: list[Capability],
        *,
        own: Iterable[str] = (),
        plugin_data: str | None = None,
        workspace: str | None = None,
    ) -> None:
        self.name = name
        by_kind: dict[str, list[Capability]] = {}
        for cap in grants:
            by_kind.setdefault(cap.kind, []).append(cap)
        paths: list[tuple[Capability, str]] = []
        if grants:  # (most plugins hold none: no grammar module to import)
            from conduit.security.capabilities import filesystem_paths

            paths = filesystem_paths(grants, workspace=workspace, plugin_data=plugin_data)

        def roots(kind: str) -> list[str] | None:
            if any(c.scope is None for c in by_kind.get(kind, [])):
                return None  # everything
            return [path for cap, path in paths if cap.kind == kind]

        self.read_roots = roots("filesystem:read")
        self.write_roots = roots("filesystem:write")
        if plugin_data is not None and self.write_roots is not None:
            # ctx.data_dir is the plugin's own: the SDK promises it may keep files there
            self.write_roots.append(os.path.abspath(plugin_data))
        self.net = by_kind.get("network:http", [])
        self.programs = by_kind.get("process:execute", [])
        self.env = by_kind.get("env:read", [])
        implicit = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
        here = os.getcwd()
        implicit += [p for p in sys.path[1:] if p and os.path.abspath(p) != here]
        implicit += list(own)
        if plugin_data is not None:
            implicit.append(plugin_data)
        #: read without a grant: the interpreter, sys.path (not the current directory),
        #: the plugin's own files, its dependencies and its data directory
        self.implicit_read = sorted({os.path.abspath(p) for p in implicit})
        # The hot path (every open) is one set lookup and one str.startswith(tuple).
        self.read_all, self.read_exact, self.read_prefixes = _matcher(
            None if self.read_roots is None else [*self.read_roots, *self.implicit_read]
        )
        self.write_all, self.write_exact, self.write_prefixes = _matcher(self.write_roots)
        #: (address, port or None) that a granted host name resolved to
        self.resolved: set[tuple[str, int | None]] = set()
        self.environ = _GrantedEnviron(self)
        self._resolving = False

    # -- checks ----------------------------------------------------------------------------

    def deny(self, operation: str, target: str, capability: str) -> CapabilityDenied:
        return CapabilityDenied(self.name, operation, target, capability)

    def check_path(self, path: str, write: bool, read: bool) -> None:
        """Raise unless ``path`` (absolute and normalised) may be read / written."""
        if (
            read
            and not self.read_all
            and path not in self.read_exact
            and not path.startswith(self.read_prefixes)
            and not _import_system(path, write=False)
        ):
            raise self.deny("reading", path, f"filesystem:read:{path}")
        if (
            write
            and not self.write_all
            and path not in self.write_exact
            and not path.startswith(self.write_prefixes)
            and not _import_system(path, write=True)
        ):
            raise self.deny("writing", path, f"filesystem:write:{path}")

    def host_allowed(self, host: str, port: int | None) -> list[Capability]:
        """The grants that allow ``host:port``; with no port known (a bare lookup), the
        grants that name the host at all."""
        return [c for c in self.net if c.allows_host(host, c.port if port is None else port)]

    def check_resolve(self, host: str, port: int | None) -> None:
        if self._resolving:
            return
        caps = self.host_allowed(host, port)
        if not caps and ((host, port) in self.resolved or (host, None) in self.resolved):
            return  # an address a granted name resolved to (what connect() would allow)
        if not caps:
            target = host if port is None else f"{host}:{port}"
            raise self.deny("connecting to", target, f"network:http:{target}")
        if any(c.scope is None for c in caps):
            return
        # Remember what the granted name resolves to, so that connecting there is allowed.
        import socket

        self._resolving = True
        try:
            infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
        except OSError:
            return
        finally:
            self._resolving = False
        for *_, addr in infos:
            for c in caps:
                self.resolved.add((str(addr[0]), c.port))

    def check_connect(self, address: Any, family: int) -> None:
        import socket

        if family == socket.AF_UNIX:
            path = os.fsdecode(address) if isinstance(address, str | bytes) else str(address)
            if path.startswith("\0"):  # abstract namespace: no file to grant
                if not any(c.scope is None for c in self.net):
                    raise self.deny("connecting to", f"unix socket @{path[1:]}", "network:http")
                return
            self.check_path(os.path.abspath(path), write=True, read=False)
            return
        if family not in (socket.AF_INET, socket.AF_INET6):
            if not any(c.scope is None for c in self.net):
                raise self.deny("connecting to", f"socket family {family}", "network:http")
            return
        host, port = str(address[0]), int(address[1])
        if self.host_allowed(host, port):
            return
        if (host, port) in self.resolved or (host, None) in self.resolved:
            return
        if ":" in host:  # IPv6: the grammar has no scope for an address literal
            raise self.deny("connecting to", f"[{host}]:{port}", "network:http")
        raise self.deny("connecting to", f"{host}:{port}", f"network:http:{host}:{port}")

    def check_program(self, program: str, shown: str) -> None:
        for cap in self.programs:
            if cap.allows_program(program):
                return
            if cap.scope and os.sep in cap.scope and os.sep not in program:
                import shutil

                found = shutil.which(program)
                if found and cap.allows_program(found):
                    return
        raise self.deny("running", shown, f"process:execute:{program}")


class Running:
    """Attributes the code run inside ``with`` to a plugin (``None``: to the kernel).

    Re-entrant and cheap: it swaps the current policy and ``os.environ``.
    """

    __slots__ = ("_saved", "policy")

    def __init__(self, policy: Policy | None) -> None:
        self.policy = policy
        self._saved: list[tuple[Policy | None, Any]] = []

    def __enter__(self) -> None:
        global _current
        self._saved.append((_current, os.environ))
        _current = self.policy
        # Swapping the object (not clearing it) is the point: os.getenv() reads os.environ.
        view: Any = self.policy.environ if self.policy is not None else _real_environ
        os.environ = view  # noqa: B003

    def __exit__(self, *exc: object) -> None:
        global _current
        _current, os.environ = self._saved.pop()

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` run inside this attribution (keeps its signature for pluggy)."""
        import functools

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            with self:
                return fn(*args, **kwargs)

        return call


#: the kernel's own code: no plugin is charged, the real environment is visible
TRUSTED = Running(None)


def own_files(source: str, origin: str, entry: str | None) -> list[str]:
    """What a plugin may always read: its own file, or its top-level package's directory."""
    if source == "file":
        return [origin]
    if source != "entry-point" or not entry:
        return []
    top = entry.partition(":")[0].strip().split(".")[0]
    # What importlib.util.find_spec() does for a top-level name, without importing
    # importlib.util (every command of an in-process plugin comes here)
    spec: Any = None
    if not top:
        return []
    if top in sys.modules:
        spec = getattr(sys.modules[top], "__spec__", None)
    else:
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            try:
                spec = find(top, None) if find is not None else None
            except (ImportError, ValueError):
                return []
            if spec is not None:
                break
    if spec is None:
        return []
    if spec.submodule_search_locations:
        return list(spec.submodule_search_locations)
    return [spec.origin] if spec.origin else []


def current() -> str | None:
    """The name of the plugin whose code is running under the guard, if any."""
    return _current.name if _current is not None else None


def install() -> None:
    """Add the audit hook to this interpreter (once; it cannot be removed)."""
    global _installed
    if not _installed:
        sys.addaudithook(_hook)
        _installed = True


# -- the hook ----------------------------------------------------------------------------------


def _hook(event: str, args: tuple[Any, ...]) -> None:
    policy = _current
    if policy is None:
        return
    handler = _HANDLERS.get(event)
    if handler is None:
        return
    handler(policy, args)


def _fspath(path: Any, dir_fd: Any = None) -> str | None:
    """An absolute path for an audited path argument; None for a file descriptor."""
    if path is None:
        path = "."
    if isinstance(path, int):
        return None
    path = str(os.fsdecode(os.fspath(path)))
    # -1 is how audit events such as os.rename spell "no directory descriptor"
    if isinstance(dir_fd, int) and dir_fd >= 0 and not os.path.isabs(path):
        try:  # Linux: the directory a descriptor refers to
            base = os.readlink(f"/proc/self/fd/{dir_fd}")
        except OSError:
            base = f"/proc/self/fd/{dir_fd}"
        return os.path.normpath(os.path.join(base, path))
    return str(os.path.abspath(path))


def _matcher(roots: list[str] | None) -> tuple[bool, frozenset[str], tuple[str, ...]]:
    """``(everything, exact paths, directory prefixes)`` for a list of allowed roots."""
    if roots is None or os.sep in roots:
        return True, frozenset(), ()
    return False, frozenset(roots), tuple(root.rstrip(os.sep) + os.sep for root in roots)


_IMPORTABLE = (".py", ".pyc", ".pyw", ".so", ".pth")


def _import_system(path: str, *, write: bool) -> bool:
    """Whether the operation on ``path`` comes from Python's import system itself (reading
    modules, listing directories, writing ``__pycache__``)."""
    if write:
        if "__pycache__" not in path.split(os.sep):
            return False
    elif not path.endswith(_IMPORTABLE) and not os.path.isdir(path):
        return False
    frame: FrameType | None = sys._getframe(2)
    for _ in range(12):
        if frame is None:
            break
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


_ACCMODE, _RDONLY, _WRONLY = os.O_ACCMODE, os.O_RDONLY, os.O_WRONLY
_CHANGES = os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _dot_segments(path: str) -> bool:
    """Whether a path has ``.`` or ``..`` segments (not just names starting with a dot)."""
    return "/./" in path or "/../" in path or path.endswith(("/.", "/.."))


def _open(policy: Policy, args: tuple[Any, ...]) -> None:
    path, mode, flags = args
    if (
        type(path) is str
        and path[:1] == "/"
        and "//" not in path
        and ("/." not in path or not _dot_segments(path))
    ):
        target = path  # already absolute and normal: the common case, no abspath()
    else:
        found = _fspath(path)
        if found is None:
            return
        target = found
    if type(flags) is int:
        access = flags & _ACCMODE
        read = access != _WRONLY
        write = access != _RDONLY or bool(flags & _CHANGES)
    else:
        mode = str(mode or "r")
        read = "r" in mode or "+" in mode
        write = any(ch in mode for ch in "wax+")
    if (
        read
        and not write
        and (
            policy.read_all
            or target in policy.read_exact
            or target.startswith(policy.read_prefixes)
        )
    ):
        return  # the common case, without a method call
    policy.check_path(target, write=write, read=read)


def _read_dir(policy: Policy, args: tuple[Any, ...]) -> None:
    target = _fspath(args[0])
    if target is not None:
        policy.check_path(target, write=False, read=True)


def _write_path(index: int, dir_fd: int | None) -> Callable[[Policy, tuple[Any, ...]], None]:
    def check(policy: Policy, args: tuple[Any, ...]) -> None:
        fd = args[dir_fd] if dir_fd is not None and len(args) > dir_fd else None
        target = _fspath(args[index], fd)
        if target is not None:
            policy.check_path(target, write=True, read=False)

    return check


def _rename(policy: Policy, args: tuple[Any, ...]) -> None:
    for path, fd in ((args[0], args[2]), (args[1], args[3])):
        target = _fspath(path, fd)
        if target is not None:
            policy.check_path(target, write=True, read=False)


def _symlink(policy: Policy, args: tuple[Any, ...]) -> None:
    src, dst, dir_fd = args
    link = _fspath(dst, dir_fd)
    if link is None:
        return
    policy.check_path(link, write=True, read=False)
    # A link into an ungranted place would make it readable through a granted one.
    pointee = os.path.normpath(os.path.join(os.path.dirname(link), os.fsdecode(src)))
    policy.check_path(pointee, write=False, read=True)


def _port(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str):
        if value.isdigit():
            return int(value)
        return {"http": 80, "https": 443}.get(value)
    return None


def _getaddrinfo(policy: Policy, args: tuple[Any, ...]) -> None:
    host = args[0]
    if host is None:
        return  # a local, passive address (binding), no lookup
    if isinstance(host, bytes):
        host = host.decode("idna")
    policy.check_resolve(str(host).lower().rstrip("."), _port(args[1]))


def _gethostbyname(policy: Policy, args: tuple[Any, ...]) -> None:
    _getaddrinfo(policy, (args[0], None))


def _connect(policy: Policy, args: tuple[Any, ...]) -> None:
    sock, address = args[0], args[1]
    policy.check_connect(address, sock.family)


def _popen(policy: Policy, args: tuple[Any, ...]) -> None:
    executable, argv = args[0], args[1]
    program = os.fsdecode(os.fspath(executable)) if executable is not None else ""
    if not program and argv:
        first = argv if isinstance(argv, str | bytes) else argv[0]
        program = os.fsdecode(os.fspath(first))
    policy.check_program(program, program)


def _exec(policy: Policy, args: tuple[Any, ...]) -> None:
    program = os.fsdecode(os.fspath(args[0]))
    policy.check_program(program, program)


def _spawn(policy: Policy, args: tuple[Any, ...]) -> None:
    _exec(policy, args[1:])


def _system(policy: Policy, args: tuple[Any, ...]) -> None:
    command = os.fsdecode(args[0])
    policy.check_program("/bin/sh", f"'{command}' through /bin/sh")


_HANDLERS: dict[str, Callable[[Policy, tuple[Any, ...]], None]] = {
    "open": _open,
    "os.listdir": _read_dir,
    "os.scandir": _read_dir,
    "os.mkdir": _write_path(0, 2),
    "os.rmdir": _write_path(0, 1),
    "os.remove": _write_path(0, 1),
    "os.truncate": _write_path(0, None),
    "os.chmod": _write_path(0, 2),
    "os.chown": _write_path(0, 3),
    "os.utime": _write_path(0, 3),
    "os.link": _rename,
    "os.rename": _rename,
    "os.symlink": _symlink,
    "socket.getaddrinfo": _getaddrinfo,
    "socket.gethostbyname": _gethostbyname,
    "socket.gethostbyname_ex": _gethostbyname,
    "socket.connect": _connect,
    "socket.sendto": _connect,
    "subprocess.Popen": _popen,
    "os.exec": _exec,
    "os.posix_spawn": _exec,
    "os.spawn": _spawn,
    "os.system": _system,
}
