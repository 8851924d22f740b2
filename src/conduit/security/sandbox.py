"""The process host's sandbox: the user's grants, enforced by the operating system.

Two halves meet here. The **kernel side** (:func:`prepare`) turns the grants of the
plugin a host is started for into a policy, the child's environment and, when the plugin
may use HTTP, a proxy (:mod:`conduit.security.proxy`). The **child side** (:func:`apply`)
runs in the host child before any plugin module is imported and applies the policy to
its own process, in this order (each step needs the previous one, or must come before a
later one takes the means away):

1. the environment was already filtered by the kernel: the child never sees an
   ungranted variable;
2. rlimits: no core dumps (the address-space and file-size limits of ``[process]
   memory-mb`` and ``max-file-mb`` are set just before, by the host);
3. a user, IPC and network namespace of its own (``unshare``; the IPC namespace keeps
   the System V IPC and POSIX message queues of other programs out of reach, whatever
   the grants): no network interface but a loopback (under the warm kernel, a host
   without a network grant enters the network namespace its template made and makes a
   user and IPC namespace of its own inside: :func:`share_network`); with a scoped
   ``network:http`` grant the loopback is brought up and a listener bound on
   ``127.0.0.1:3128`` (needs the namespace's capabilities, so before step 4). With
   unscoped ``network:http``, a user and IPC namespace alone (the count of step 3a);
3a. ``RLIMIT_NPROC`` (``[process] max-processes``): after the namespace, in which the
   kernel counts this host's processes and threads apart from the user's others (see
   :func:`_limit_processes`), and before step 7, whose thread counts;
4. ``no_new_privs``: nothing it runs can gain privileges (and steps 5 and 6 require it);
5. Landlock: reads and writes only where granted (plus the interpreter's files), program
   execution only of the granted programs, TCP connect only to the proxy's port, no
   signals to or abstract sockets of processes outside the sandbox;
6. seccomp: ``execve`` without ``process:execute``, every socket family and ``bind()``
   without ``network:http`` and new Unix sockets always fail with ``EPERM`` (it is
   last: it would forbid the socket calls of step 3);
7. the forwarder thread, which hands every connection to the proxy listener to the
   kernel over the inherited socket. Threads started before step 5 would escape it
   (Landlock and seccomp bind the calling thread and its later children only).

A mechanism the machine lacks is skipped; :mod:`conduit.security.report` says so and
never claims it. Where a missing mechanism would leave a *scoped* grant unenforceable, the
sandbox fails closed (a scoped network grant without a network namespace means no network).
"""

from __future__ import annotations

import os
import sys

from conduit.errors import PluginError, PluginLoadError, SandboxDenied

TYPE_CHECKING = False  # not typing's: the host child does not import typing
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    from conduit.indexer.records import Index
    from conduit.paths import Paths
    from conduit.security.capabilities import Capability

__all__ = [
    "ALWAYS_PASSED",
    "PROXY_PORT",
    "Plan",
    "apply",
    "can_unshare",
    "explain",
    "host_plugins",
    "keep_shared_apart",
    "lower_limit",
    "prepare",
    "share_network",
    "shared_plugins",
]

#: variables every sandboxed host gets, granted or not: the interpreter needs them to find
#: Conduit and to pick its text encoding. ``PATH`` is added with a ``process:execute``
#: grant, the proxy variables with a scoped ``network:http`` grant.
ALWAYS_PASSED = ("PYTHONPATH", "PYTHONHOME", "LANG", "LC_ALL", "LC_CTYPE")
#: the proxy listener's port inside the child's own network namespace (no one else's)
PROXY_PORT = 3128
PROXY_URL = f"http://127.0.0.1:{PROXY_PORT}"
_PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")
#: read-only for every host: shared libraries, time zones, CA certificates, /dev/urandom
_SYSTEM_READ = (
    "/lib",
    "/lib32",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/usr/share/zoneinfo",
    "/etc/ssl",
    "/usr/share/ca-certificates",
    "/dev/urandom",
)
_ELF_LOADERS = ("/lib64", "/lib", "/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu")


# -- kernel side ------------------------------------------------------------------------------


class Plan:
    """What :class:`conduit.hosts.process.ProcessHost` needs to start a sandboxed child."""

    def __init__(self, names: list[str], grants: list[Capability], policy: dict[str, Any]):
        self.names = names
        self.grants = grants
        self.policy = policy
        self.proxy: Any = None
        self._child_fd: int | None = None
        if policy["net"] == "proxy":
            from conduit.security.proxy import Proxy

            self.proxy = Proxy(names[0], [g for g in grants if g.kind == "network:http"])
            self._child_fd = self.proxy.child_fd
            policy["proxy_fd"] = self._child_fd

    @property
    def pass_fds(self) -> tuple[int, ...]:
        return () if self._child_fd is None else (self._child_fd,)

    def command_env(self, environ: dict[str, str] | os._Environ[str]) -> dict[str, str]:
        """The environment a command sees: the granted variables of ``environ`` only
        (and ``TMPDIR``, the plugin's own, for :mod:`tempfile`)."""
        env = {k: v for k, v in environ.items() if self._passes(k)}
        env["TMPDIR"] = self.policy["tmp"]
        if self.policy["net"] == "proxy":
            env.update(dict.fromkeys(_PROXY_VARS, PROXY_URL))
        return env

    def child_env(self, environ: dict[str, str]) -> dict[str, str]:
        """The host child's environment: :meth:`command_env`, Conduit's own ``CONDUIT_``
        settings for the host, and the policy for :func:`apply`."""
        env = self.command_env(environ)
        env.update(
            {k: v for k, v in environ.items() if k.startswith(("CONDUIT_RPC_", "CONDUIT_HOST_"))}
        )
        import json  # the kernel's side only: the child decodes with conduit.rpc's codec

        env["CONDUIT_SANDBOX"] = json.dumps(self.policy)
        return env

    def _passes(self, name: str) -> bool:
        if name in ALWAYS_PASSED:
            return True
        if name == "PATH" and self.policy["exec"] is not None:
            return True
        return any(g.kind == "env:read" and g.allows_env(name) for g in self.grants)

    def started(self) -> None:
        """The child is running: the kernel's copy of its proxy socket end can go."""
        if self.proxy is not None:
            self.proxy.start()

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.close()


def shared_plugins(index: Index) -> list[str]:
    """The config's ``[process] shared``: the process plugins the user lets share a host.

    The one reading of that table (the kernel keys its hosts by it, :func:`host_plugins`
    puts them in one sandbox)."""
    table = index["config"].get("process")
    shared = table.get("shared", []) if isinstance(table, dict) else []
    return [str(n) for n in shared]


def host_plugins(index: Index, name: str) -> list[str]:
    """The plugins a process host started for ``name`` runs: ``name``, then, when it is in
    ``[process] shared``, the other installed plugins listed there. Raises
    :class:`~conduit.errors.PluginLoadError` unless they all have the same grants: one
    sandbox enforces one set of grants."""
    from conduit.security.grants import granted

    shared = shared_plugins(index)
    if name not in shared:
        return [name]
    plugins = index.get("plugins", {})
    names = [name] + [n for n in shared if n != name and n in plugins]
    mine = sorted(map(str, granted(index, name)))
    for other in names[1:]:
        if sorted(map(str, granted(index, other))) != mine:
            raise PluginLoadError(
                name,
                f"cannot share a host with '{other}': their grants differ, and one "
                "sandbox enforces one set of grants",
                hint="grant them the same capabilities, or remove one of them from "
                "'shared' in the config's [process] table",
            )
    return names


def prepare(
    index: Index,
    paths: Paths,
    name: str,
    *,
    environ: dict[str, str] | None = None,
    extra_read: Iterable[str] = (),
) -> Plan:
    """The sandbox for a host started for plugin ``name`` (and, for the shared host, the
    other plugins of :func:`host_plugins`), from data alone: the index (records, grants,
    config) and Conduit's paths. It creates the plugins' data directories and may compile
    a single-file plugin's bytecode; it installs nothing.

    ``extra_read`` are more paths the host may read: the process host passes the
    directories of the plugins' inline dependencies, which it installs first
    (:func:`conduit.store.envs.ensure_installed`), since the sandbox only reads them."""
    from conduit.security.capabilities import filesystem_paths
    from conduit.security.grants import granted

    environ = dict(os.environ if environ is None else environ)
    names = host_plugins(index, name)
    grants = granted(index, name)
    plugins = index.get("plugins", {})

    read: list[str] = []
    write: list[str] = []
    for other in names:
        data = paths.plugin_data(other)
        os.makedirs(data, exist_ok=True)  # a rule needs an existing directory
        read.append(data)
        write.append(data)
        rec = plugins.get(other)
        if rec is not None:
            read.append(rec["origin"])
            if rec["source"] == "file":
                read += _bytecode(rec["origin"])
    read += extra_read
    data_dir = paths.plugin_data(name)
    tmp = os.path.join(data_dir, "tmp")
    os.makedirs(tmp, exist_ok=True)
    for grant, path in filesystem_paths(grants, workspace=os.getcwd(), plugin_data=data_dir):
        (read if grant.kind == "filesystem:read" else write).append(path)
    programs: list[str] | None = None
    net = "none"
    for grant in grants:
        if grant.kind == "process:execute":
            if grant.scope is None:
                programs = ["*"]
            elif programs != ["*"]:
                programs = (programs or []) + _resolve_program(grant.scope, environ.get("PATH"))
        elif grant.kind == "network:http":
            net = "all" if grant.scope is None or net == "all" else "proxy"
    if programs == ["*"]:
        # Landlock asks for read access to a file to execute it: the directories of PATH
        # and the interpreter's (EXECUTE itself is left unrestricted).
        dirs = (environ.get("PATH") or "").split(os.pathsep)
        dirs.append(os.path.dirname(os.path.realpath(sys.executable)))
        read += sorted({os.path.realpath(d) for d in dirs if d})
    policy: dict[str, Any] = {
        "plugins": names,
        "read": read,
        "write": write,
        "exec": None if programs is None else ("all" if programs == ["*"] else programs),
        "net": net,
        "tmp": tmp,
    }
    return Plan(names, grants, policy)


def _bytecode(origin: str) -> list[str]:
    """The compiled bytecode of a single-file plugin, for its host to read.

    The host cannot write it (it may not write next to the plugin), and compiling even a
    small file is a few milliseconds of every start of a fresh interpreter. So the kernel
    lets the standard loader write it where Python itself would (``__pycache__``, unless
    bytecode writing is off), or check that it is current, and the host may read that
    file. A plugin that does not compile is left to the host to report.

    Nor for a source saved within the last two seconds
    (:func:`conduit.paths.too_new_for_bytecode`): the host compiles it from source.

    A file that is current (:func:`_current`) is not loaded again: the loader would read
    and unmarshal it only to find it current, 0.3-0.5 ms of every process plugin's
    command under the warm kernel (docs/performance.md)."""
    from importlib.util import cache_from_source

    from conduit.paths import too_new_for_bytecode

    try:
        st = os.stat(origin)
        if too_new_for_bytecode(st.st_mtime):
            return []
        pyc = cache_from_source(origin)
        if _current(pyc, st):
            return [pyc]
        from importlib.machinery import SourceFileLoader

        SourceFileLoader("conduit_plugin", origin).get_code("conduit_plugin")
    except (OSError, SyntaxError, ValueError, ImportError):
        return []
    return [pyc] if os.path.isfile(pyc) else []


def _current(pyc: str, source: os.stat_result) -> bool:
    """Whether ``pyc`` holds the bytecode of a source with the stat ``source``, by the
    checks the import system makes of a timestamp-based file (PEP 552): this
    interpreter's magic number, no flags, the source's mtime and size. A hash-based file
    is left to the loader."""
    from importlib.util import MAGIC_NUMBER

    try:
        fd = os.open(pyc, os.O_RDONLY | os.O_CLOEXEC)
        try:
            head = os.read(fd, 16)
        finally:
            os.close(fd)
    except OSError:
        return False
    return (
        len(head) == 16
        and head[:8] == MAGIC_NUMBER + bytes(4)
        and int.from_bytes(head[8:12], "little") == int(source.st_mtime) & 0xFFFFFFFF
        and int.from_bytes(head[12:16], "little") == source.st_size & 0xFFFFFFFF
    )


def _resolve_program(scope: str, path: str | None) -> list[str]:
    """The file(s) Landlock must let the child execute for ``process:execute:scope``:
    the program resolved on ``PATH`` now, and a script's interpreter."""
    import shutil

    found = shutil.which(os.path.expanduser(scope), path=path)
    if found is None:
        return []
    program = os.path.realpath(found)
    result = [program]
    try:
        with open(program, "rb") as f:
            head = f.read(256)
    except OSError:
        return result
    if head.startswith(b"#!"):
        interpreter = head[2:].split(b"\n", 1)[0].split()
        if interpreter:
            result.append(os.path.realpath(interpreter[0].decode(errors="replace")))
    return result


# -- child side -------------------------------------------------------------------------------

_applied: dict[str, Any] = {}
_UNIX = "unix"  # not a capability: no grant opens Unix sockets


def apply(*, max_processes: int = 0) -> None:
    """Apply the policy the kernel passed in ``CONDUIT_SANDBOX`` to this process, and
    the limit ``max_processes`` (``[process] max-processes``; 0 = none).

    Called by the host child before it imports any plugin code; does nothing without a
    policy. See the module docstring for the order of the steps.
    """
    text = os.environ.pop("CONDUIT_SANDBOX", "")
    shared = tuple(_SHARED_NETWORK)
    del _SHARED_NETWORK[:]
    try:
        if not text or sys.platform != "linux":  # the mechanisms below are Linux's
            return
        from conduit.rpc import codec  # JSON without the json package (and its re import)

        _apply(codec("json").decode(text.encode()), max_processes, shared)
    except (OSError, ValueError, KeyError) as exc:
        # Fail closed: a host that cannot be sandboxed as asked runs no plugin code.
        os.write(2, f"conduit plugin host: cannot apply the sandbox: {exc}\n".encode())
        os._exit(71)
    finally:
        for fd in shared:  # no plugin code holds the template's namespaces
            os.close(fd)


def _apply(policy: dict[str, Any], max_processes: int = 0, shared: tuple[int, ...] = ()) -> None:
    net = policy["net"]
    proxy_fd = policy.get("proxy_fd")
    if proxy_fd is not None:
        os.set_inheritable(proxy_fd, False)  # programs the plugin runs must not reach it

    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    listener = None
    namespace = False
    if net == "none" and shared:
        namespace = _enter_shared(*shared)
    elif net != "all":
        namespace = _unshare(network=True)
        if namespace:
            if net == "proxy":
                listener = _proxy_listener()
        elif net == "proxy":
            net = "none"  # fail closed: no namespace, no host filtering, no network
    else:  # (its own IPC, and where processes are counted: see below)
        namespace = _unshare(network=False)
    if max_processes:
        _limit_processes(max_processes, namespace)

    _prctl_no_new_privs()
    _landlock(policy, net)
    from conduit.security import seccomp

    if seccomp.available():
        seccomp.install(allow_exec=policy["exec"] is not None, allow_inet=net != "none")
    if listener is not None and proxy_fd is not None:
        from conduit.security.proxy import forward

        forward(listener, proxy_fd)
    _applied.update(policy, net=net)


def _libc() -> Any:
    from conduit.security.landlock import libc

    return libc()


_CLONE_NEWUSER, _CLONE_NEWNET, _CLONE_NEWIPC = 0x10000000, 0x40000000, 0x08000000

#: the warm kernel's host template only: a user namespace and, owned by it, a network
#: namespace with no interface up, made once (:func:`share_network`) and entered by the
#: hosts it forks for plugins without a network grant (:func:`_enter_shared`)
_SHARED_NETWORK: list[int] = []


def _unshare(network: bool, *, mapped: bool = False) -> bool:
    """A user namespace of our own, the same user ID inside it, and an IPC namespace (the
    System V IPC objects and POSIX message queues of the user's other programs, and of
    other hosts, out of reach); a network namespace too when ``network``. False when the
    machine does not allow it, and with ``mapped`` when the IDs could not be mapped."""
    uid, gid = os.geteuid(), os.getegid()
    flags = _CLONE_NEWUSER | _CLONE_NEWIPC | (_CLONE_NEWNET if network else 0)
    if _libc().unshare(flags) != 0:
        return False
    for name, text in (
        ("setgroups", "deny"),
        ("uid_map", f"{uid} {uid} 1"),
        ("gid_map", f"{gid} {gid} 1"),
    ):
        try:  # (os's calls: open()'s text layer is most of this step's time)
            fd = os.open(f"/proc/self/{name}", os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
        except OSError:
            if mapped:
                return False
            # unmapped IDs show as "nobody"; the isolation holds all the same
    return True


def share_network() -> None:
    """Make the namespaces the warm kernel's host template hands on (:data:`_SHARED_NETWORK`).

    Creating a network namespace costs a host about 0.5-1 ms, and its teardown as much
    again (docs/performance.md): the template makes one, with no interface up, before it
    forks any host, and a host without a network grant enters it instead. The host then
    makes a user namespace of its own inside (:func:`_enter_shared`), in which it has no
    capability over the shared network namespace: it cannot bring the loopback up or
    configure anything there. Hosts sharing it could still meet through the namespace's
    sockets (netlink; abstract Unix names, which a Unix socket pair's end may be bound
    to), which is why only a machine with the seccomp filter shares one: without a
    network grant the filter refuses every socket family and ``bind()``. Elsewhere each
    host makes its own, as a host started from a new interpreter does."""
    from conduit.security import seccomp

    if sys.platform != "linux" or not seccomp.available():
        return
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # makes them, waits until the template holds them, and exits
        code = 1
        try:
            os.close(ready_r)
            os.close(done_w)
            os.write(ready_w, b"1" if _unshare(network=True, mapped=True) else b"0")
            os.read(done_r, 1)
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 1) == b"1":
            flags = os.O_RDONLY | os.O_CLOEXEC
            _SHARED_NETWORK[:] = [
                os.open(f"/proc/{pid}/ns/{kind}", flags) for kind in ("user", "net")
            ]
    except OSError:
        for fd in _SHARED_NETWORK:
            os.close(fd)
        del _SHARED_NETWORK[:]
    finally:
        os.close(ready_r)
        os.close(done_w)
        os.waitpid(pid, 0)


def keep_shared_apart(numbers: Iterable[int]) -> None:
    """Move the shared namespaces' descriptors (:func:`share_network`) above
    ``numbers``: a new host is about to put the command's descriptors there."""
    top = max(numbers, default=-1) + 1
    for i, fd in enumerate(_SHARED_NETWORK):
        if fd < top:
            import fcntl

            _SHARED_NETWORK[i] = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, top)
            os.close(fd)


def _enter_shared(user: int, net: int) -> bool:
    """Enter the template's namespaces (:func:`share_network`), then make a user namespace
    (and an IPC namespace) of this host's own inside them: its processes are counted
    apart from other hosts' (:func:`_limit_processes`), and it holds no capability over
    the network namespace, which the parent user namespace owns. If it cannot enter the
    user namespace, namespaces of its own (:func:`_unshare`), as a host started from a
    new interpreter makes. Raises OSError (the host then runs no plugin code) when it
    has entered it but cannot go on: it would hold every capability there, over the
    network namespace and over the other hosts' user namespaces."""
    libc = _libc()
    if libc.setns(user, _CLONE_NEWUSER) != 0:
        return _unshare(network=True)
    if libc.setns(net, _CLONE_NEWNET) != 0 or not _unshare(network=False, mapped=True):
        raise OSError("cannot make a user namespace of its own in the shared one")
    return True


def _limit_processes(count: int, namespace: bool) -> None:
    """At most ``count`` processes and threads for this host and everything it starts.

    ``RLIMIT_NPROC`` is checked at every fork and thread start against the number of
    tasks of the real user ID; since Linux 5.14 that number is kept per user namespace, so
    in the namespace this host just created it counts this host's tasks and their
    descendants' only, not the user's other programs. (Set before the namespace, the limit
    would also become the namespace's allowance in the parent one, where every process of
    the user counts.) Where it cannot be counted apart (no namespace, or an older kernel)
    the limit is ``count`` on top of every task on the machine now: looser, but it still
    stops a fork bomb without failing the user's other programs. The kernel never applies
    it to the real user ID 0 (docs/permissions-process.md#limits)."""
    import resource

    if not (namespace and _kernel_at_least(5, 14)):
        try:
            with open("/proc/loadavg", encoding="ascii") as f:
                count += int(f.read().split()[3].partition("/")[2])  # running/total
        except (OSError, ValueError, IndexError):
            return  # no bound we can set without the risk of failing other programs
    lower_limit(resource.RLIMIT_NPROC, count)


def lower_limit(which: int, value: int) -> int:
    """Set the resource limit ``which`` (soft and hard) to ``value``, or keep the hard
    limit the process already has if it is lower (raising it would fail); the limit set.
    Used by the host child and, for an executable, between fork and exec."""
    import resource

    hard = resource.getrlimit(which)[1]
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))
    return value


def _kernel_at_least(major: int, minor: int) -> bool:
    try:
        found = tuple(int(n) for n in os.uname().release.split("-")[0].split(".")[:2])
    except ValueError:
        return False
    return found >= (major, minor)


def _proxy_listener() -> Any:
    """Bring up this namespace's loopback and listen on the proxy port."""
    import fcntl
    import socket
    import struct

    siocsifflags, iff_up = 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), siocsifflags, struct.pack("16sH22x", b"lo", iff_up))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", PROXY_PORT))
    listener.listen(16)
    return listener


def _prctl_no_new_privs() -> None:
    pr_set_no_new_privs = 38
    if _libc().prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0:
        raise OSError("prctl(PR_SET_NO_NEW_PRIVS) failed")


def _read_baseline() -> list[str]:
    """What the interpreter itself needs to read: its modules and the system's libraries."""
    # sys.path holds the stdlib, lib-dynload, site-packages and editable installs
    paths = [p for p in sys.path if p]
    paths.append(os.path.dirname(os.__file__))
    paths += _SYSTEM_READ
    paths.append(f"/proc/{os.getpid()}")
    return paths


def _elf_loaders() -> list[str]:
    found = []
    for directory in _ELF_LOADERS:
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        found += [
            os.path.realpath(os.path.join(directory, n)) for n in names if n.startswith("ld-")
        ]
    return found


def _landlock(policy: dict[str, Any], net: str) -> None:
    from conduit.security import landlock

    version = landlock.abi()
    if not version:
        return
    programs = policy["exec"]
    handled = landlock.FS_READ | landlock.FS_WRITE | landlock.IOCTL_DEV
    handled |= landlock.MAKE_CHAR | landlock.MAKE_BLOCK
    if programs != "all":
        handled |= landlock.FS_EXECUTE
    rules = landlock.Ruleset(version, handled_fs=handled, handle_net=net != "all", scoped=True)
    for path in _read_baseline() + policy["read"]:
        rules.allow_path(path, landlock.FS_READ)
    for path in policy["write"]:
        rules.allow_path(path, landlock.FS_WRITE)
    rules.allow_path("/dev/null", landlock.READ_FILE | landlock.WRITE_FILE | landlock.IOCTL_DEV)
    if isinstance(programs, list) and programs:
        for path in programs + _elf_loaders():
            rules.allow_path(path, landlock.FS_EXECUTE | landlock.READ_FILE)
    if net == "proxy":
        rules.allow_port(PROXY_PORT, landlock.NET_CONNECT_TCP)
    rules.restrict()


def explain(exc: BaseException) -> PluginError | None:
    """If ``exc`` (or what it wraps) is the sandbox refusing something, the error that
    names the missing capability; else ``None``. Used by the host child to report
    denials in one clear line."""
    if not _applied:
        return None
    cause: BaseException = exc
    if isinstance(exc, PluginError) and exc.__cause__ is not None:
        cause = exc.__cause__
    reason = getattr(cause, "reason", None)  # urllib's URLError wraps the OSError
    if isinstance(reason, BaseException):
        cause = reason
    capability = _denied_capability(cause)
    if capability is None:
        return None
    plugin = exc.plugin if isinstance(exc, PluginError) else _applied["plugins"][0]
    command = getattr(exc, "command", None)
    what = f"command '{command}'" if command else "it"
    if isinstance(exc, PluginLoadError):
        what = "loading it"
    denied: PluginError
    if capability == _UNIX:
        denied = PluginError(
            plugin,
            f"{what} tried to open a Unix socket, which the sandbox never allows",
            hint="Unix sockets (Docker's, ssh-agent's, X11's) are out of reach of process "
            "plugins; run it in-process only if you trust it with all your access",
        )
    else:
        denied = SandboxDenied(plugin, what, capability)
    denied.__cause__ = cause
    return denied


def _denied_capability(cause: BaseException) -> str | None:
    import errno
    import re

    found = re.search(r"Conduit denied (network:http:\S+)", str(cause))
    if found:
        return found.group(1).rstrip(">")
    if not isinstance(cause, PermissionError) or cause.errno not in (errno.EACCES, errno.EPERM):
        return None
    frames = []
    family = None
    tb = cause.__traceback__
    while tb is not None:
        frames.append(
            (os.path.basename(tb.tb_frame.f_code.co_filename), tb.tb_frame.f_code.co_name)
        )
        family = (
            tb.tb_frame.f_locals.get("family")
            if frames[-1][1] in ("__init__", "socketpair")
            else None
        )
        tb = tb.tb_next
    last_file, last_function = frames[-1] if frames else ("", "")
    if last_file == "socket.py" or last_function in ("connect", "create_connection"):
        if family == 1:  # AF_UNIX
            return _UNIX
        return None if _applied["net"] == "all" else "network:http"
    name = cause.filename
    if not isinstance(name, str):
        return None
    if (last_file == "os.py" and "exec" in last_function) or any(
        f == "subprocess.py" for f, _ in frames
    ):
        programs = _applied["exec"]
        if programs == "all":
            return None
        if programs and os.path.realpath(name) in programs:
            return None
        return f"process:execute:{os.path.basename(name) if os.sep not in name else name}"
    path = os.path.abspath(name)
    kind = _probe(path)
    granted = _applied["read"] if kind == "filesystem:read" else _applied["write"]
    from conduit.security.capabilities import Capability

    if any(Capability(kind, root).allows_path(path) for root in granted):
        return None  # granted: the OS refused for another reason
    return f"{kind}:{path}"


def _probe(path: str) -> str:
    """Was a refused open of ``path`` a read or a write? Reading it again tells."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        return "filesystem:write"  # creating a file
    except OSError:
        return "filesystem:read"
    os.close(fd)
    return "filesystem:write"


# -- what this machine offers ------------------------------------------------------------------


def can_unshare() -> bool:
    """Whether this process may create a user, network and IPC namespace (tried in a forked
    child, which exits at once). :mod:`conduit.security.report` asks, to claim only what
    is applied."""
    libc = _libc()  # loaded before fork: the child must not import anything
    pid = os.fork()
    if pid == 0:  # the child only tries, and reports in its exit status
        code = 1
        try:
            code = 0 if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET | _CLONE_NEWIPC) == 0 else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0
