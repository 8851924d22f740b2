"""Sandboxed process plugins under the warm kernel, tried as an attacker would.

A host started by the warm kernel is forked from its host template
(conduit/hosts/zygote.py), not started as a new interpreter. What an attacker in such a
host would look for is what a fork copies: memory. The plugin here scans every page of
its own address space it can read (the ``write()`` of an unmapped address fails with
EFAULT instead of crashing) for a secret that is in the user's environment and that
another plugin was granted; it must find nothing, cold or warm. The sandbox must also
still refuse it what it was not granted.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from _factory import manifest_block, write
from _warm import fd_targets

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(sys.platform != "linux", reason="the process sandbox is Linux's"),
]

GRANTED = """\
import os
import click
from conduit.sdk import Plugin

@click.command("granted")
def granted():
    click.echo("granted sees " + str(len(os.environ.get("WARM_SECRET", ""))))

class P(Plugin):
    def boot(self, ctx):
        ctx.register_command(granted)
"""

SNOOP = """\
import ctypes, os
import click
from conduit.sdk import Plugin

PAGE = 4096

def regions():
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                span, perms = line.split()[:2]
                if perms.startswith("r"):
                    lo, hi = (int(x, 16) for x in span.split("-"))
                    yield lo, hi
        return
    except OSError:
        pass
    # no /proc here: around the heap, the interpreter's objects and a fresh mapping
    probes = [id(object()), id(bytearray(1 << 20)), ctypes.addressof(ctypes.create_string_buffer(1 << 18))]
    for p in probes:
        base = p - p % PAGE
        yield max(PAGE, base - (256 << 20)), base + (256 << 20)

@click.command("snoop")
@click.argument("first")
@click.argument("second")
def snoop(first, second):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.write.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    r, w = os.pipe()
    a, b = first.encode(), second.encode()
    found = pages = 0
    seen = set()
    for lo, hi in regions():
        addr = lo
        while addr < hi:
            if addr in seen:
                addr += PAGE
                continue
            seen.add(addr)
            if libc.write(w, addr, PAGE) == PAGE:
                data = os.read(r, PAGE)
                pages += 1
                i = data.find(a)
                while i >= 0:
                    end = i + len(a)
                    if data[end : end + len(b)] == b:
                        found += 1
                    elif end + len(b) > PAGE:
                        # a hit across the page's end: compare with the next page
                        if libc.write(w, addr + PAGE, PAGE) == PAGE:
                            rest = os.read(r, PAGE)
                            if (data[end:] + rest)[: len(b)] == b:
                                found += 1
                    i = data.find(a, i + 1)
            addr += PAGE
    click.echo(f"scanned {pages} pages, found {found}")
    try:
        open(os.environ.get("HOME", "/root") + "/.bashrc").close()
        click.echo("read outside the grants")
    except OSError:
        click.echo("denied outside the grants")

class P(Plugin):
    def boot(self, ctx):
        ctx.register_command(snoop)
"""


def plugin(name: str, caps: str, source: str) -> str:
    toml = f'name = "{name}"\napi = ">=1.0,<2"\nisolation = "process"\n'
    toml += f"capabilities = [{caps}]\n" if caps else ""
    toml += f'[[commands]]\nname = "{name}"\n'
    return manifest_block(toml) + source


def conduit(*args: str, warm: bool, secret: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conduit", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "CONDUIT_WARM": "1" if warm else "0", "WARM_SECRET": secret},
        timeout=150,
    )


@pytest.mark.slow
@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_a_host_holds_nothing_of_the_environment_it_was_not_granted(
    plugin_dir: Path, warm: bool
) -> None:
    write(plugin_dir, "granted.py", plugin("granted", '"env:read:WARM_SECRET"', GRANTED))
    write(plugin_dir, "snoop.py", plugin("snoop", "", SNOOP))
    first, second = secrets.token_hex(16), secrets.token_hex(16)
    secret = first + second
    grant = conduit("plugins", "grant", "granted", "env:read:WARM_SECRET", warm=False, secret="")
    assert grant.returncode == 0, grant.stderr
    if warm:
        started = conduit("server", "start", warm=True, secret=secret)
        assert started.returncode == 0, started.stderr
    # another plugin's host had the secret (granted to it) just before
    ran = conduit("granted", warm=warm, secret=secret)
    assert ran.stdout == "granted sees 64\n", ran.stderr
    proc = conduit("snoop", first, second, warm=warm, secret=secret)
    assert proc.returncode == 0, proc.stderr
    scanned, found = proc.stdout.splitlines()[0].split(" pages, found ")
    assert int(scanned.split()[1]) > 1000  # it did look
    assert found == "0"
    assert proc.stdout.splitlines()[1] == "denied outside the grants"


PREPARED_FILTER = """\
import os, socket
from conduit.security import seccomp
from conduit.security.landlock import libc

seccomp.prepare()  # as the host template does, before it forks hosts


def built_again(**kwargs):
    raise AssertionError("the filter was built again after the fork")


seccomp.program = built_again
pid = os.fork()
if pid == 0:
    assert libc().prctl(38, 1, 0, 0, 0) == 0  # no_new_privs
    seccomp.install(allow_exec=False, allow_inet=False)
    try:
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    except PermissionError:
        os._exit(0)
    os._exit(1)
print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


def test_a_host_installs_the_filter_its_template_built() -> None:
    from conduit.security import seccomp

    if not seccomp.available():
        pytest.skip("no seccomp here")
    # The host template builds every variant of the seccomp filter before it forks; a
    # host installs its own after the fork, without building it again.
    out = subprocess.run(
        [sys.executable, "-c", PREPARED_FILTER], capture_output=True, text=True, timeout=60
    )
    assert (out.returncode, out.stdout, out.stderr) == (0, "0\n", "")


FDS = """\
import os, sys, time
import click
from conduit.sdk import Plugin

@click.command("fds")
def fds():
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            found[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass  # the listing's own descriptor
    click.echo(repr(sorted(found.items())))

@click.command("hold")
@click.argument("path")
def hold(path):
    click.echo("holding")
    sys.stdout.flush()
    while not os.path.exists(path):
        time.sleep(0.02)

class P(Plugin):
    def boot(self, ctx):
        ctx.register_command(fds)
        ctx.register_command(hold)
"""


def test_a_host_forked_for_a_waiting_request_holds_only_its_own_descriptors(
    plugin_dir: Path, tmp_path: Path
) -> None:
    # With a command's host running, the template forks the next host when the request
    # comes, while it holds that request's descriptors: the host must not inherit copies
    # of them (inheritable copies of the kernel's RPC socket and pipe, which programs the
    # plugin runs would keep open, and the channel on which the template reports the
    # host's status to its command).
    import ast

    toml = 'name = "fds"\napi = ">=1.0,<2"\nisolation = "process"\n'
    toml += '[[commands]]\nname = "fds"\n[[commands]]\nname = "hold"\n'
    write(plugin_dir, "fds.py", manifest_block(toml) + FDS)
    started = conduit("server", "start", warm=True, secret="")
    assert started.returncode == 0, started.stderr
    release = tmp_path / "release"
    holder = subprocess.Popen(
        [sys.executable, "-m", "conduit", "hold", str(release)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "CONDUIT_WARM": "1"},
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "holding\n"  # its host took the spare
        proc = conduit("fds", warm=True, secret="")
    finally:
        release.touch()
        holder.wait(timeout=60)
        if holder.stdout is not None:
            holder.stdout.close()
    assert proc.returncode == 0, proc.stderr
    fds = ast.literal_eval(proc.stdout.strip())
    assert [fd for fd, _ in fds][:3] == [0, 1, 2]
    beyond = [target for fd, target in fds if fd > 2]
    assert len(beyond) == len(set(beyond)) == 2, fds  # its RPC socket and pipe only


NAMESPACES = """\
import fcntl, os
import click
from conduit.sdk import Plugin

NS_GET_USERNS = 0xB701  # _IO(0xb7, 0x1): the user namespace that owns a namespace

@click.command("NAME")
def probe():
    net, user = os.readlink("/proc/self/ns/net"), os.readlink("/proc/self/ns/user")
    fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        owner = fcntl.ioctl(fd, NS_GET_USERNS)
    except PermissionError:  # the owner is an ancestor of this process's user namespace
        found = "owned-from-outside"
    else:
        mine = os.fstat(owner).st_ino == os.stat("/proc/self/ns/user").st_ino
        found = "owns" if mine else "owned-by-another"
        os.close(owner)
    finally:
        os.close(fd)
    click.echo(f"{net} {user} {found}")

class P(Plugin):
    def boot(self, ctx):
        ctx.register_command(probe)
"""


def test_hosts_without_network_share_a_network_namespace_they_cannot_configure(
    plugin_dir: Path, conduit_home: Path
) -> None:
    # The host template makes one network namespace and its hosts without a network
    # grant enter it (creating one per host cost about 1 ms): each host still has a user
    # namespace of its own, which does not own that network namespace, so no host can
    # bring its loopback up or configure it for the next. A host granted the network
    # stays out of it.
    from conduit.security import report

    if not (report.mechanisms()["netns"] and report.mechanisms()["seccomp"]):
        pytest.skip("no namespaces or no seccomp here: each host makes its own")
    for name in ("nsa", "nsb", "nsnet"):
        toml = f'name = "{name}"\napi = ">=1.0,<2"\nisolation = "process"\n'
        toml += f'[[commands]]\nname = "{name}"\n'
        write(plugin_dir, f"{name}.py", manifest_block(toml) + NAMESPACES.replace("NAME", name))
    (conduit_home / "config.toml").write_text('[grants]\nnsnet = ["network:http"]\n')
    mine = os.readlink("/proc/self/ns/net")

    def namespaces(name: str, warm: bool) -> list[str]:
        out = conduit(name, warm=warm, secret="")
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    cold = namespaces("nsa", warm=False)
    assert cold[0] != mine and cold[2] == "owns"  # a host from a new interpreter makes its own
    started = conduit("server", "start", warm=True, secret="")
    assert started.returncode == 0, started.stderr
    first, second = namespaces("nsa", True), namespaces("nsb", True)
    assert first[0] == second[0] == held_by_the_template() != mine
    assert first[2] == second[2] == "owned-from-outside"
    granted = namespaces("nsnet", True)
    assert granted[0] == mine


def held_by_the_template() -> str:
    """The network namespace the warm kernel's host template holds open."""
    from conduit.paths import resolve
    from conduit.warm.client import address
    from conduit.warm.server import read_state

    server = read_state(address(resolve()))["pid"]
    with open(f"/proc/{server}/task/{server}/children") as f:
        children = f.read().split()
    held = set().union(*(fd_targets(int(pid), "net:") for pid in children))
    assert len(held) == 1, held
    return held.pop()


LINGER = """\
import os, threading, time
import click
from conduit.sdk import Plugin

@click.command("linger")
@click.argument("path")
def linger(path):
    with open(path, "a") as f:
        f.write("first\\n")
    def scribble():
        with open(path, "a", buffering=1) as f:
            while True:
                f.write("x\\n")
                time.sleep(0.001)
    threading.Thread(target=scribble, daemon=True).start()
    # and the host's own exit after its shutdown answer is taken away
    os._exit = lambda code: time.sleep(60)
    click.echo("started")

class P(Plugin):
    def boot(self, ctx):
        ctx.register_command(linger)
"""


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_nothing_of_a_plugin_runs_once_its_command_has_returned(
    plugin_dir: Path, conduit_home: Path, tmp_path: Path, warm: bool
) -> None:
    # Under the warm kernel a host that has answered `shutdown` is killed and the command
    # returns as soon as none of its threads can run again, not once its memory is freed
    # (conduit.hosts.zygote.Spawned.halt). Tried by a plugin that keeps writing from a
    # thread and disables its host's own exit: once the command has returned, the file
    # no longer grows.
    out = tmp_path / "out"
    out.mkdir()
    toml = 'name = "linger"\napi = ">=1.0,<2"\nisolation = "process"\n'
    toml += '[[commands]]\nname = "linger"\n'
    write(plugin_dir, "linger.py", manifest_block(toml) + LINGER)
    (conduit_home / "config.toml").write_text(f'[grants]\nlinger = ["filesystem:write:{out}"]\n')
    if warm:
        started = conduit("server", "start", warm=True, secret="")
        assert started.returncode == 0, started.stderr
    target = out / "scribbles"
    proc = conduit("linger", str(target), warm=warm, secret="")
    assert (proc.returncode, proc.stdout) == (0, "started\n"), proc.stderr
    size = target.stat().st_size
    assert size > 0
    time.sleep(0.3)
    assert target.stat().st_size == size


def test_a_host_is_taken_as_exiting_once_all_its_threads_are() -> None:
    from conduit.hosts.zygote import _exiting

    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a second thread that runs on, the main thread blocked
        try:
            threading.Thread(target=lambda: time.sleep(60), daemon=True).start()
            os.write(ready_w, b"1")
            time.sleep(60)
        finally:
            os._exit(0)
    try:
        assert os.read(ready_r, 1) == b"1"
        assert len(os.listdir(f"/proc/{pid}/task")) == 2
        assert not _exiting(pid)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not _exiting(pid):  # (a zombie until it is waited for: exiting)
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(ready_r)
        os.close(ready_w)
    assert _exiting(pid)  # gone
