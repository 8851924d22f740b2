"""The permission matrix of the process host: the user's grants, enforced by the OS.

Each case runs a real ``conduit`` command of a real ``isolation = "process"`` plugin whose
host child applies the sandbox (Landlock, seccomp, a network namespace, the kernel-side
proxy) before importing it, and asserts what the user sees: the output when allowed, the
exact ``error:`` line when denied. Servers listen on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conduit.errors import ConduitError
from conduit.indexer.build import load
from conduit.kernel import Kernel
from conduit.paths import resolve
from conduit.security import landlock, report, seccomp
from conduit.timing import Profile

from _factory import hello_server, manifest_block, write

pytestmark = [
    pytest.mark.skipif(
        sys.platform != "linux" or landlock.abi() < 4 or not seccomp.available(),
        reason="needs Linux with Landlock ABI >= 4 and seccomp on x86_64",
    ),
    pytest.mark.timeout(60),
]

needs_netns = pytest.mark.skipif(
    sys.platform != "linux" or not report.mechanisms()["netns"],
    reason="needs user and network namespaces (host filtering fails closed without them)",
)

# The plugins request nothing in their manifests: what they may do is decided by the
# user's [grants] alone, and the denials below are what happens when a plugin tries
# anyway (a plugin that lies about what it needs).
PROBE = """
import ctypes, os, signal, socket, subprocess, sys, urllib.request
import click
from conduit.sdk import Plugin

@click.command("NAME")
@click.argument("what")
@click.argument("arg", required=False)
def probe(what, arg):
    if what == "read":
        with open(arg) as f:
            click.echo(f.read().strip())
    elif what == "write":
        with open(arg, "w") as f:
            f.write("written by NAME")
        click.echo("written")
    elif what == "remove":
        os.remove(arg)
        click.echo("removed")
    elif what == "rename":
        os.rename(arg, arg + ".moved")
        click.echo("renamed")
    elif what == "exec":
        done = subprocess.run([arg, "hi"], capture_output=True, text=True)
        click.echo(done.stdout.strip())
    elif what == "env":
        click.echo(f"{arg}={os.environ.get(arg)}")
    elif what == "http":
        with urllib.request.urlopen(arg, timeout=10) as response:
            click.echo(response.read().decode().strip())
    elif what == "direct":  # around the proxy, straight to the port
        host, port = arg.rsplit(":", 1)
        socket.create_connection((host, int(port)), timeout=5).close()
        click.echo("connected")
    elif what == "ctypes-open":  # around Python's open(): the system call itself
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.open(arg.encode(), os.O_RDONLY)
        click.echo(f"fd={fd} errno={ctypes.get_errno()}")
    elif what == "unix":
        client = socket.socket(socket.AF_UNIX)
        client.connect(arg)
        click.echo(client.recv(100).decode())
    elif what == "netlink":  # the kernel's interface to the network stack
        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close()
        click.echo("netlink opened")
    elif what == "bind":  # an abstract name, seen by every process of the namespace
        a, b = socket.socketpair()
        a.bind(arg.encode().replace(b"@", b"\\0", 1))
        click.echo("bound")
    elif what == "shm":  # System V shared memory of another program, by its key
        libc = ctypes.CDLL(None, use_errno=True)
        found = libc.shmget(int(arg), 0, 0)
        click.echo(f"shm={found} errno={ctypes.get_errno() if found < 0 else 0}")
    elif what == "pair":
        a, b = socket.socketpair()
        a.sendall(b"pair ok")
        click.echo(b.recv(100).decode())
    elif what == "tiocsti":  # push a keystroke into the terminal (here: /dev/null)
        import fcntl, termios
        with open("/dev/null", "rb") as tty:
            try:
                fcntl.ioctl(tty.fileno(), termios.TIOCSTI, b"x")
                click.echo("injected")
            except OSError as exc:
                click.echo(f"errno={exc.errno}")
    elif what == "keyring":  # keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING)
        libc = ctypes.CDLL(None, use_errno=True)
        found = libc.syscall(250, 0, ctypes.c_long(-3), 0)
        click.echo(f"keyring={found} errno={ctypes.get_errno()}")
    elif what == "tmp":
        import tempfile
        with tempfile.NamedTemporaryFile() as f:
            click.echo(os.path.dirname(f.name))
    elif what == "signal":
        try:
            os.kill(int(arg), 0)
            click.echo("signalled")
        except PermissionError:
            click.echo("signal denied")

class P(Plugin):
    def boot(self, ctx):
        ctx.register_command(probe)
"""


def probe_plugin(plugin_dir: Path, name: str = "probe", extra: str = "") -> None:
    toml = f'name = "{name}"\napi = ">=1.0,<2"\nisolation = "process"\n{extra}'
    toml += f'[[commands]]\nname = "{name}"\n'
    write(plugin_dir, f"{name}.py", manifest_block(toml) + PROBE.replace("NAME", name))


def grant(home: Path, **grants: list[str]) -> None:
    lines = [f"{name} = {caps!r}".replace("'", '"') for name, caps in grants.items()]
    (home / "config.toml").write_text("[grants]\n" + "\n".join(lines) + "\n")


def denial(plugin: str, capability: str) -> str:
    return (
        f"error: plugin '{plugin}': command '{plugin}' needs '{capability}', which is not granted"
    )


def hint(plugin: str, capability: str) -> str:
    return (
        f"hint: grant it with 'conduit plugins grant {plugin} {capability}' if you trust the plugin"
    )


@pytest.fixture
def files(tmp_path: Path) -> Path:
    root = tmp_path / "files"
    (root / "granted").mkdir(parents=True)
    (root / "granted" / "ok.txt").write_text("readable")
    (root / "secret.txt").write_text("top secret")
    return root


@pytest.fixture
def server() -> Iterator[str]:
    """An HTTP server on 127.0.0.1 answering "hello from PATH"; yields ``host:port``."""

    with hello_server(lambda path: f"hello from {path}\n".encode()) as port:
        yield f"127.0.0.1:{port}"


# -- filesystem ---------------------------------------------------------------------------------


def test_read_inside_the_grant_is_allowed_outside_denied(plugin_dir, conduit_home, run, files):
    probe_plugin(plugin_dir)
    grant(conduit_home, probe=[f"filesystem:read:{files / 'granted'}"])
    ok = run("probe", "read", str(files / "granted" / "ok.txt"))
    assert (ok.code, ok.out) == (0, "readable\n"), ok.err
    secret = files / "secret.txt"
    r = run("probe", "read", str(secret))
    assert r.code == 1
    assert r.out == ""
    assert r.err.splitlines() == [
        denial("probe", f"filesystem:read:{secret}"),
        hint("probe", f"filesystem:read:{secret}"),
    ]


def test_write_inside_the_grant_is_allowed_outside_denied(plugin_dir, conduit_home, run, files):
    probe_plugin(plugin_dir)
    grant(conduit_home, probe=[f"filesystem:write:{files / 'granted'}"])
    target = files / "granted" / "new.txt"
    assert run("probe", "write", str(target)).out == "written\n"
    assert target.read_text() == "written by probe"
    outside = files / "new.txt"
    r = run("probe", "write", str(outside))
    assert r.code == 1
    assert r.err.splitlines()[0] == denial("probe", f"filesystem:write:{outside}")
    assert not outside.exists()
    # overwriting an existing file it may read but not write is a write denial too
    grant(conduit_home, probe=[f"filesystem:read:{files}"])
    r = run("probe", "write", str(files / "secret.txt"))
    assert r.err.splitlines()[0] == denial("probe", f"filesystem:write:{files / 'secret.txt'}")
    assert (files / "secret.txt").read_text() == "top secret"


def test_deleting_renaming_and_tmp_need_a_write_grant(plugin_dir, conduit_home, run, files):
    # docs/permissions-process.md: outside its write grants a plugin cannot create,
    # overwrite, delete or rename; and /tmp itself is not granted (TMPDIR is its own)
    probe_plugin(plugin_dir)
    grant(conduit_home, probe=[f"filesystem:read:{files}"])
    secret = files / "secret.txt"
    for what in ("remove", "rename"):
        r = run("probe", what, str(secret))
        assert r.code == 1, (what, r.out)
        assert r.err.splitlines()[0] == denial("probe", f"filesystem:write:{secret}"), what
    assert secret.read_text() == "top secret"
    assert not (files / "secret.txt.moved").exists()
    target = Path("/tmp") / f"conduit-probe-{os.getpid()}.txt"
    r = run("probe", "write", str(target))
    assert r.err.splitlines()[0] == denial("probe", f"filesystem:write:{target}")
    assert not target.exists()


def test_path_variables_are_expanded_when_the_host_starts(
    plugin_dir, conduit_home, run, files, monkeypatch
):
    probe_plugin(plugin_dir)
    grant(conduit_home, probe=["filesystem:read:${workspace}/granted"])
    monkeypatch.chdir(files)
    assert run("probe", "read", "granted/ok.txt").out == "readable\n"
    r = run("probe", "read", "secret.txt")
    assert r.err.splitlines()[0] == denial("probe", f"filesystem:read:{files / 'secret.txt'}")


def test_the_plugin_data_directory_is_its_own(plugin_dir, conduit_home, run):
    probe_plugin(plugin_dir)
    data = conduit_home / "state" / "plugins" / "probe"
    assert run("probe", "write", str(data / "cache.txt")).out == "written\n"
    assert run("probe", "read", str(data / "cache.txt")).out == "written by probe\n"
    # tempfile works: TMPDIR is a directory of its own in there
    assert run("probe", "tmp").out == f"{data / 'tmp'}\n"


def test_inline_dependencies_are_readable_not_writable(plugin_dir, conduit_home, run):
    from conduit.store.envs import env_dir

    # installed before the host starts (here: already cached), outside its sandbox
    deps = Path(env_dir(str(conduit_home / "cache"), ["cproc-dep==1.0"]))
    deps.mkdir(parents=True)
    (deps / "data.txt").write_text("dependency data")
    probe_plugin(plugin_dir, extra='dependencies = ["cproc-dep==1.0"]\n')
    # the user consented to installing them (docs/permissions.md#dependencies)
    (conduit_home / "config.toml").write_text(
        '[dependencies.consented]\nprobe = ["cproc-dep==1.0"]\n'
    )
    ok = run("probe", "read", str(deps / "data.txt"))
    assert (ok.code, ok.out) == (0, "dependency data\n"), ok.err
    r = run("probe", "write", str(deps / "data.txt"))
    assert r.err.splitlines()[0] == denial("probe", f"filesystem:write:{deps / 'data.txt'}")


def test_ctypes_does_not_get_around_the_filesystem_rules(plugin_dir, conduit_home, run, files):
    """Unlike an audit hook, Landlock is enforced by the kernel, below any library."""
    probe_plugin(plugin_dir)
    r = run("probe", "ctypes-open", str(files / "secret.txt"))
    assert r.out == "fd=-1 errno=13\n", r.err


def test_the_kernel_process_is_out_of_reach(plugin_dir, conduit_home, run):
    """No reading the kernel's environment through /proc, no signals to it."""
    probe_plugin(plugin_dir)
    environ = f"/proc/{os.getpid()}/environ"
    r = run("probe", "read", environ)
    assert r.err.splitlines()[0] == denial("probe", f"filesystem:read:{environ}")
    if landlock.abi() >= 6:  # signal scoping
        assert run("probe", "signal", str(os.getpid())).out == "signal denied\n"


# -- environment ----------------------------------------------------------------------------------


def test_only_granted_environment_variables_are_passed(plugin_dir, conduit_home, run, monkeypatch):
    probe_plugin(plugin_dir)
    monkeypatch.setenv("PROBE_TOKEN", "s3cret")
    monkeypatch.setenv("PROBE_OTHER", "visible")
    grant(conduit_home, probe=["env:read:PROBE_OTHER"])
    assert run("probe", "env", "PROBE_TOKEN").out == "PROBE_TOKEN=None\n"
    assert run("probe", "env", "HOME").out == "HOME=None\n"
    assert run("probe", "env", "PROBE_OTHER").out == "PROBE_OTHER=visible\n"
    grant(conduit_home, probe=["env:read:PROBE_*"])
    assert run("probe", "env", "PROBE_TOKEN").out == "PROBE_TOKEN=s3cret\n"
    grant(conduit_home, probe=["env:read"])  # unscoped: everything
    assert run("probe", "env", "HOME").out == f"HOME={os.environ['HOME']}\n"


# -- programs -------------------------------------------------------------------------------------


def test_exec_without_a_grant_is_denied(plugin_dir, conduit_home, run):
    probe_plugin(plugin_dir)
    r = run("probe", "exec", "echo")
    assert r.code == 1
    assert r.err.splitlines() == [
        denial("probe", "process:execute:echo"),
        hint("probe", "process:execute:echo"),
    ]


def test_exec_of_the_granted_program_only(plugin_dir, conduit_home, run):
    probe_plugin(plugin_dir)
    grant(conduit_home, probe=["process:execute:echo"])
    r = run("probe", "exec", "echo")
    assert (r.code, r.out) == (0, "hi\n"), r.err
    # another program, even one it may read, is still denied (Landlock EXECUTE)
    r = run("probe", "exec", "cat")
    assert r.err.splitlines()[0] == denial("probe", "process:execute:cat")
    cat = shutil.which("cat")
    assert cat is not None
    r = run("probe", "exec", cat)
    assert r.err.splitlines()[0] == denial("probe", f"process:execute:{cat}")
    # nor is the Python interpreter the host itself runs on implied by the grant
    r = run("probe", "exec", sys.executable)
    assert r.err.splitlines()[0] == denial("probe", f"process:execute:{sys.executable}")


# -- network --------------------------------------------------------------------------------------


@pytest.mark.warm_pass
def test_no_network_without_a_grant(plugin_dir, conduit_home, run, server):
    probe_plugin(plugin_dir)
    r = run("probe", "http", f"http://{server}/x")
    assert r.code == 1
    assert r.err.splitlines()[0] == denial("probe", "network:http")


@needs_netns
def test_granted_host_is_reached_through_the_proxy(plugin_dir, conduit_home, run, server):
    probe_plugin(plugin_dir)
    port = server.rsplit(":", 1)[1]
    grant(conduit_home, probe=["network:http:localhost"])
    r = run("probe", "http", f"http://localhost:{port}/granted?q=1")
    assert (r.code, r.out) == (0, "hello from /granted?q=1\n"), r.err
    # the host is gone after the command, and so is its proxy (no thread, no socket left)
    deadline = time.monotonic() + 10
    while any(t.name == "conduit-proxy:probe" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the proxy outlived its host"
        time.sleep(0.05)


@needs_netns
def test_ungranted_host_is_refused_by_the_proxy(plugin_dir, conduit_home, run, server):
    probe_plugin(plugin_dir)
    grant(conduit_home, probe=["network:http:localhost"])
    # the same server by another name: the proxy checks names, as granted
    r = run("probe", "http", f"http://{server}/x")
    assert r.code == 1
    assert r.err.splitlines() == [
        denial("probe", "network:http:127.0.0.1"),
        hint("probe", "network:http:127.0.0.1"),
    ]
    # HTTPS is tunnelled with CONNECT, and refused the same way before any TLS
    r = run("probe", "http", f"https://{server}/x")
    assert r.err.splitlines()[0] == denial("probe", "network:http:127.0.0.1")


@needs_netns
def test_no_way_around_the_proxy(plugin_dir, conduit_home, run, server):
    """A plugin with a network grant that connects directly reaches nothing: it lives in a
    network namespace of its own, and Landlock lets it connect to the proxy's port only."""
    probe_plugin(plugin_dir)
    grant(conduit_home, probe=["network:http:localhost", "network:http:127.0.0.1"])
    r = run("probe", "direct", server)
    assert r.code == 1
    # a direct connection is what the unscoped grant is for
    assert r.err.splitlines()[0] == denial("probe", "network:http")


@pytest.mark.warm_pass
def test_netlink_needs_a_network_grant(plugin_dir, conduit_home, run):
    """Without the network, no socket at all: under the warm kernel, hosts without a
    network grant share one network namespace (conduit.security.sandbox.share_network),
    in which netlink sockets (NETLINK_USERSOCK) could reach each other."""
    probe_plugin(plugin_dir)
    r = run("probe", "netlink")
    assert r.code == 1
    assert r.err.splitlines()[0] == denial("probe", "network:http")
    grant(conduit_home, probe=["network:http"])
    assert run("probe", "netlink").out == "netlink opened\n"


@pytest.mark.warm_pass
def test_no_abstract_socket_name_without_a_network_grant(plugin_dir, conduit_home, run):
    """Under the warm kernel, hosts without a network grant share a network namespace, in
    which an abstract Unix name (a socket pair's end may be bound to one) is seen by every
    other host (/proc/net/unix): without the network, seccomp refuses bind()."""
    probe_plugin(plugin_dir)
    name = f"@conduit-probe-{os.getpid()}"
    r = run("probe", "bind", name)
    assert r.code == 1
    assert "Operation not permitted" in r.err.splitlines()[0], r.err
    grant(conduit_home, probe=["network:http"])
    assert run("probe", "bind", name).out == "bound\n"


@pytest.mark.warm_pass
def test_system_v_ipc_of_other_programs_is_out_of_reach(plugin_dir, conduit_home, run):
    """A host has an IPC namespace of its own: the shared memory (and semaphores and
    message queues) of the user's other programs, which the same user could otherwise
    attach by key, do not exist for it, whatever the grants."""
    import ctypes
    import random

    libc = ctypes.CDLL(None, use_errno=True)
    key = random.randrange(1 << 20, 1 << 30)
    ipc_creat_excl, ipc_rmid = 0o1000 | 0o2000, 0
    segment = libc.shmget(key, 4096, ipc_creat_excl | 0o600)
    assert segment >= 0, ctypes.get_errno()
    try:
        assert libc.shmget(key, 0, 0) == segment  # here, the same user finds it
        probe_plugin(plugin_dir)
        assert run("probe", "shm", str(key)).out == "shm=-1 errno=2\n"
        grant(conduit_home, probe=["network:http"])  # no network namespace: no difference
        assert run("probe", "shm", str(key)).out == "shm=-1 errno=2\n"
    finally:
        libc.shmctl(segment, ipc_rmid, None)


@pytest.mark.warm_pass
def test_unix_sockets_are_out_of_reach_whatever_the_grants(plugin_dir, conduit_home, run, tmp_path):
    """Landlock (ABI <= 7) does not govern connect() to a socket's path: seccomp refuses to
    create Unix sockets at all, so /run/docker.sock or an ssh-agent stays out of reach."""
    import socket

    server = socket.socket(socket.AF_UNIX)
    path = str(tmp_path / "agent.sock")
    server.bind(path)
    server.listen(1)
    probe_plugin(plugin_dir)
    grant(
        conduit_home,
        probe=[f"filesystem:read:{tmp_path}", f"filesystem:write:{tmp_path}", "network:http"],
    )
    try:
        r = run("probe", "unix", path)
    finally:
        server.close()
    assert r.code == 1
    assert r.err.splitlines() == [
        "error: plugin 'probe': command 'probe' tried to open a Unix socket, which the sandbox never allows",
        "hint: Unix sockets (Docker's, ssh-agent's, X11's) are out of reach of process plugins; "
        "run it in-process only if you trust it with all your access",
    ]
    # a connected pair (asyncio's self-pipe, for one) reaches nothing outside: allowed
    assert run("probe", "pair").out == "pair ok\n"


def test_no_keystrokes_pushed_into_the_terminal(plugin_dir, conduit_home, run):
    """TIOCSTI on the inherited terminal would have the user's shell run what the plugin
    typed after Conduit exits. Refused outright (EPERM, not the ENOTTY /dev/null gives)."""
    probe_plugin(plugin_dir)
    assert run("probe", "tiocsti").out == "errno=1\n"


def test_the_session_keyring_is_out_of_reach(plugin_dir, conduit_home, run):
    probe_plugin(plugin_dir)
    assert run("probe", "keyring").out == "keyring=-1 errno=1\n"


# -- isolation between plugins --------------------------------------------------------------------


def test_a_denial_in_one_plugin_does_not_affect_another(plugin_dir, conduit_home, files, capsys):
    probe_plugin(plugin_dir, "first")
    probe_plugin(plugin_dir, "second")
    grant(conduit_home, second=[f"filesystem:read:{files}"])
    paths = resolve()
    kernel = Kernel(load(paths, Profile(False)), paths)
    secret = str(files / "secret.txt")
    try:
        with pytest.raises(ConduitError) as info:
            kernel.run("first", ["first", "read", secret])
        assert info.value.message == (
            f"plugin 'first': command 'first' needs 'filesystem:read:{secret}', which is not granted"
        )
        capsys.readouterr()
        assert kernel.run("second", ["second", "read", secret]) == 0
        assert capsys.readouterr().out == "top secret\n"
        # and the first one's host is still there, still sandboxed
        first = kernel.host_for(kernel.index["plugins"]["first"])
        pid = first.proc.pid  # type: ignore[attr-defined]
        with pytest.raises(ConduitError):
            kernel.run("first", ["first", "read", secret])
        assert first.proc.pid == pid  # type: ignore[attr-defined]
    finally:
        kernel.shutdown()


def test_plugins_with_different_grants_do_not_share_a_host(plugin_dir, conduit_home, run, files):
    probe_plugin(plugin_dir, "first")
    probe_plugin(plugin_dir, "second")
    (conduit_home / "config.toml").write_text(
        f'[process]\nshared = ["first", "second"]\n[grants]\nsecond = ["filesystem:read:{files}"]\n'
    )
    r = run("first", "env", "X")
    assert r.code == 3
    assert r.err.splitlines()[0] == (
        "error: plugin 'first': cannot share a host with 'second': their grants differ, "
        "and one sandbox enforces one set of grants"
    )
    (conduit_home / "config.toml").write_text('[process]\nshared = ["first", "second"]\n')
    assert run("first", "env", "X").out == "X=None\n"


# -- what is claimed ------------------------------------------------------------------------------


def test_describe_claims_what_is_applied_here():
    lines = report.describe_sandbox(
        ["env:read:HOME", "process:execute:git", "network:http:*.github.com"]
    )
    text = "\n".join(lines)
    assert "environment: only HOME (granted), PYTHONPATH" in text
    assert f"filesystem (Landlock ABI {landlock.abi()})" in text
    assert "programs: only git may run (Landlock)" in text
    assert "network: HTTP(S) to *.github.com only, through Conduit's proxy" in text
    assert "programs: none may run (Landlock and seccomp)" in report.describe_sandbox([])[2]
    assert report.describe_sandbox([])[3] == "network: none (network namespace and seccomp)"


def test_doctor_lists_the_sandbox_mechanisms(run):
    r = run("plugins", "doctor")
    assert f"sandbox: Landlock ABI {landlock.abi()}" in r.out
    assert "sandbox: seccomp filter" in r.out
    assert "warning: sandbox" not in r.out


def test_the_sandbox_adds_no_heavy_imports_to_the_host_child():
    """The child's start-up is part of every process plugin's first command (json, and
    the re it imports, come with the JSON codec anyway)."""
    import subprocess

    code = (
        "import sys, conduit.hosts._child, conduit.security.sandbox, "
        "conduit.security.landlock, conduit.security.seccomp; "
        "print(sorted(m for m in ('typing', 'platform', 'threading') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "[]\n"


def test_a_policy_that_cannot_be_applied_runs_no_plugin_code():
    import subprocess

    code = "from conduit.security.sandbox import apply; apply(); print('plugin code ran')"
    env = {**os.environ, "CONDUIT_SANDBOX": '{"plugins": ["x"]}'}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 71
    assert proc.stdout == ""
    assert proc.stderr == "conduit plugin host: cannot apply the sandbox: 'net'\n"


def test_the_proxy_tunnels_to_granted_hosts_only(server):
    """CONNECT (what HTTPS clients send), driven directly: a tunnel to the granted host
    carries bytes both ways; any other name is refused before a connection is made."""
    import socket

    from conduit.security.capabilities import parse
    from conduit.security.proxy import Proxy

    proxy = Proxy("tunnel", [parse("network:http:127.0.0.1")])
    channel = socket.socket(fileno=os.dup(proxy.child_fd))  # the child's end
    proxy.start()

    def ask(target: str) -> socket.socket:
        mine, theirs = socket.socketpair()
        socket.send_fds(channel, [b"c"], [theirs.fileno()])
        theirs.close()
        mine.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        mine.settimeout(10)
        return mine

    def read_all(sock: socket.socket) -> bytes:
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        return data

    try:
        with ask(server) as tunnel:
            assert tunnel.recv(4096) == b"HTTP/1.1 200 Connection established\r\n\r\n"
            tunnel.sendall(b"GET /through HTTP/1.0\r\n\r\n")
            assert read_all(tunnel).endswith(b"hello from /through\n")
        port = server.rsplit(":", 1)[1]
        with ask(f"localhost:{port}") as refused:
            head = read_all(refused).split(b"\r\n", 1)[0]
            assert head == b"HTTP/1.1 403 Conduit denied network:http:localhost"
    finally:
        channel.close()
        proxy.close()


def test_describe_and_doctor_never_claim_a_missing_mechanism(monkeypatch, run):
    monkeypatch.setattr(report, "_probed", {"landlock": 0, "seccomp": False, "netns": False})
    lines = report.describe_sandbox(["network:http:example.com", "process:execute:git"])
    assert lines[1] == "filesystem: NOT restricted (Landlock is not available on this kernel)"
    assert lines[2] == "programs: any program may run, not only git (Landlock is not available)"
    assert lines[3] == "network: NOT restricted (no network namespaces and no seccomp here)"
    monkeypatch.setattr(report, "_probed", {"landlock": 3, "seccomp": True, "netns": False})
    assert report.describe_sandbox(["network:http:example.com"])[3] == (
        "network: none (seccomp); host filtering needs network namespaces, which are not available"
    )
    out = run("plugins", "doctor").out
    assert "sandbox: Landlock ABI 3 (filesystem)" in out
    assert (
        "warning: sandbox: user/network namespaces are not available: network:http grants "
        "limited to hosts cannot be enforced, so such plugins get no network at all"
    ) in out


def test_no_sandbox_and_no_crash_where_the_mechanisms_are_not_linux(tmp_path):
    # docs/permissions-process.md: "Non-Linux systems: no sandbox at all". Shown on Linux
    # with sys.platform faked, in a subprocess: the policy is dropped, nothing is applied
    # (the libc calls it would make do not exist on macOS), and the process goes on.
    code = """
import json, os, socket, sys
sys.platform = "darwin"
os.environ["CONDUIT_SANDBOX"] = json.dumps(
    {"net": "none", "exec": None, "read": [], "write": [], "tmp": sys.argv[1]}
)
from conduit.security.sandbox import apply
apply()
assert "CONDUIT_SANDBOX" not in os.environ
with open("/proc/self/status") as f:
    seccomp = [line.split()[1] for line in f if line.startswith("Seccomp:")]
socket.socket(socket.AF_INET).close()  # no seccomp filter, no namespace
print("ok", seccomp[0])
"""
    r = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert (r.returncode, r.stdout, r.stderr) == (0, "ok 0\n", "")
