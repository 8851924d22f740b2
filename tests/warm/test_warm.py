"""The warm kernel (conduit/warm/): a server that forks a child per command.

Every test here runs real ``conduit`` processes against a real server started for the
test's own ``CONDUIT_HOME`` and runtime directory (tests/conftest.py stops it after),
and compares with the same command on the cold path where that is the claim.
"""

from __future__ import annotations

import contextlib
import json
import marshal
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _factory import manifest_block, write
from _warm import conduit, popen_warm, running, status, wait_for

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(sys.platform != "linux", reason="the warm kernel is POSIX (Linux tested)"),
]

PROBE = """\
import json, os, sys, time
import click
from conduit.sdk import Plugin

@click.group("probe")
def probe():
    pass

@probe.command("info")
def info():
    umask = os.umask(0); os.umask(umask)
    click.echo(json.dumps({
        "pid": os.getpid(), "ppid": os.getppid(), "cwd": os.getcwd(), "umask": umask,
        "argv0": sys.argv[0], "var": os.environ.get("PROBE_VAR"),
        "tty": [sys.stdin.isatty(), sys.stdout.isatty()],
        "path0": sys.path[0],
    }))

@probe.command("modules")
def modules():
    click.echo(json.dumps({"ppid": os.getppid(), "modules": sorted(sys.modules)}))

@probe.command("cat")
def cat():
    click.echo(sys.stdin.read().upper(), nl=False)

@probe.command("exit")
@click.argument("code", type=int)
def exit_(code):
    click.echo("leaving", err=True)
    sys.exit(code)

@probe.command("fail")
def fail():
    raise RuntimeError("it broke")

@probe.command("kill")
@click.argument("signum", type=int)
def kill(signum):
    click.echo("dying")
    sys.stdout.flush()
    os.kill(os.getpid(), signum)

@probe.command("mark")
@click.argument("path")
def mark(path):
    with open(path, "a") as f:
        f.write("ran\\n")
    click.echo(os.getppid())

@probe.command("wait")
@click.argument("path")
def wait(path):
    click.echo("waiting")
    sys.stdout.flush()
    while not os.path.exists(path):
        time.sleep(0.02)
    click.echo("done")

class P(Plugin):
    def boot(self, ctx):
        ctx.register_command(probe)
"""


PROBE_CAPS = ("filesystem:read", "filesystem:write", "env:read:PROBE_VAR")


def probe_plugin(plugin_dir: Path) -> None:
    toml = 'name = "probe"\napi = ">=1.0,<2"\n'
    toml += f"capabilities = [{', '.join(repr(c).replace(chr(39), chr(34)) for c in PROBE_CAPS)}]\n"
    for name in ("probe", "probe info", "probe modules", "probe cat", "probe exit", "probe fail"):
        toml += f'[[commands]]\nname = "{name}"\n'
    for name in ("probe kill", "probe wait", "probe mark"):
        toml += f'[[commands]]\nname = "{name}"\n'
    write(plugin_dir, "probe.py", manifest_block(toml) + PROBE)


@pytest.fixture
def server(plugin_dir: Path) -> int:
    """A running warm kernel (started with ``conduit server start``): its pid."""
    probe_plugin(plugin_dir)
    conduit("plugins", "grant", "probe", *PROBE_CAPS, warm=False)
    started = conduit("server", "start")
    assert started.returncode == 0, started.stderr
    assert "Started the warm kernel" in started.stdout
    return int(str(status()["pid"]))


def test_start_status_stop(conduit_home: Path) -> None:
    before = conduit("server", "status")
    assert before.returncode == 3
    assert "not running" in before.stdout
    assert conduit("server", "start").returncode == 0
    state = status()
    assert state["running"] is True
    sock = Path(str(state["socket"]))
    assert sock.is_socket()
    assert oct(sock.parent.stat().st_mode & 0o777) == "0o700"
    again = conduit("server", "start")
    assert again.returncode == 0
    assert f"already running (pid {state['pid']})" in again.stdout
    stopped = conduit("server", "stop")
    assert f"Stopped the warm kernel (pid {state['pid']})" in stopped.stdout
    assert conduit("server", "status").returncode == 3
    assert not sock.exists()
    assert "not running" in conduit("server", "stop").stdout


@pytest.mark.parametrize("lock", ["free", "held by another process"])
def test_stop_never_signals_a_process_that_took_a_dead_servers_pid(
    conduit_home: Path, tmp_path: Path, lock: str
) -> None:
    """A server that was killed leaves its socket and state file; its pid may since be
    another process's. ``stop`` (and ``status``) go by the address's lock, which only a
    live server holds: that process is not signalled, whoever holds the lock."""
    path = str(status()["socket"])
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    holder = None
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        leftover.bind(path)  # the dead server's socket file
        Path(path + ".state").write_text(
            f"pid={victim.pid}\nversion=0\nstarted=0\nsocket={path}\nidle-minutes=30\n",
            encoding="utf-8",
        )
        if lock != "free":  # a lock someone holds is not enough: it must be that pid's
            holder = subprocess.Popen(
                ["flock", path + ".lock", "sleep", "60"], stdout=subprocess.DEVNULL
            )
            assert wait_for(lambda: Path(path + ".lock").exists())
            time.sleep(0.2)
        stopped = conduit("server", "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert "not running" in stopped.stdout
        assert conduit("server", "status").returncode == 3
        time.sleep(0.2)
        assert victim.poll() is None  # not signalled
    finally:
        leftover.close()
        for proc in (victim, holder):
            if proc is not None:
                proc.kill()
                proc.wait()


def test_a_command_runs_in_a_child_of_the_server_with_the_clients_state(
    server: int, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "conduit", "probe", "info"],
        capture_output=True,
        text=True,
        cwd=work,
        env={**os.environ, "CONDUIT_WARM": "1", "PROBE_VAR": "from the client"},
        preexec_fn=lambda: os.umask(0o027),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["ppid"] == server  # forked by the server, not started by this test
    assert info["cwd"] == str(work)
    assert info["umask"] == 0o027
    assert info["var"] == "from the client"
    assert info["tty"] == [False, False]
    cold = subprocess.run(
        [sys.executable, "-m", "conduit", "probe", "info"],
        capture_output=True,
        text=True,
        cwd=work,
        env={**os.environ, "CONDUIT_WARM": "0"},
        timeout=60,
    )
    assert info["path0"] == json.loads(cold.stdout)["path0"]  # sys.path as the client had it
    piped = conduit("probe", "cat", input="through stdin\n")
    assert piped.stdout == "THROUGH STDIN\n"


CASES = [
    ("probe", "info", "--help"),
    ("probe", "exit", "7"),
    ("probe", "fail"),
    ("probe", "nosuch"),
    ("nosuch",),
    ("--no-plugins", "probe", "info"),
    ("plugins", "permissions", "probe"),
    ("config", "get", "store.installer"),
]


@pytest.mark.parametrize("args", CASES, ids=[" ".join(c) for c in CASES])
def test_warm_and_cold_give_the_same_results(server: int, args: tuple[str, ...]) -> None:
    cold = conduit(*args, warm=False)
    warm = conduit(*args)
    assert (warm.returncode, warm.stdout, warm.stderr) == (
        cold.returncode,
        cold.stdout,
        cold.stderr,
    )
    assert status()["pid"] == server  # served, not refused (a refusal stops the server)


def test_the_server_leaves_the_index_its_commands_read_as_it_is(
    server: int, conduit_home: Path
) -> None:
    # The server looks into the index for WebAssembly plugins after each hand-off; it used
    # to rebuild it there with its own fingerprint (its sys.path is not its clients'),
    # and every next command rebuilt it back: 3.5 ms on every other command.
    assert conduit("probe", "info", warm=False).returncode == 0  # the index, current
    (index,) = (conduit_home / "cache").glob("index-*.bin")
    before = index.stat()
    for _ in range(3):
        assert conduit("probe", "info").returncode == 0
    after = index.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert status()["pid"] == server


def _signal_masks(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        fields = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    return {key: int(fields[key], 16) for key in ("SigCgt", "SigIgn")}


def _bit(signum: int) -> int:
    return 1 << (signum - 1)


def test_spares_wait_with_a_new_interpreters_signal_handling(server: int) -> None:
    # The spare child (and the host template's spare host) set their signal handling
    # while they wait, not on the command's time: a new interpreter's (SIGINT caught by
    # Python, the rest default), not the server's (SIGTERM, SIGCHLD caught) nor the
    # template's (SIGINT ignored).
    assert conduit("probe", "info").returncode == 0

    def children(pid: int) -> list[int]:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            return [int(n) for n in f.read().split()]

    def spares() -> tuple[int, int] | None:
        found = {}
        for pid in children(server):
            try:
                found[os.getpgid(pid) == pid] = pid
            except ProcessLookupError:  # the last command's child, reaped just now
                return None
        if len(found) != 2:
            return None
        hosts = children(found[True])  # the template leads a group of its own
        return (found[False], hosts[0]) if hosts else None

    def settled() -> bool:
        found = spares()
        if found is None:
            return False
        spare, host = (_signal_masks(pid) for pid in found)
        return (
            spare["SigCgt"] & (_bit(signal.SIGTERM) | _bit(signal.SIGCHLD)) == 0
            and spare["SigCgt"] & _bit(signal.SIGINT) != 0
            and host["SigCgt"] & _bit(signal.SIGCHLD) == 0
            and host["SigIgn"] & _bit(signal.SIGINT) == 0
            and host["SigCgt"] & _bit(signal.SIGINT) != 0
        )

    assert wait_for(settled, timeout=10.0), spares()


def test_the_server_holds_none_of_what_only_writing_the_config_needs(
    server: int, conduit_home: Path
) -> None:
    # conduit.config (through conduit.fs: tempfile, shutil, random, zlib, bz2, lzma) is
    # for the commands that write the config or rebuild the index: every command's fork
    # would copy it, and random's at-fork hook would reseed in every child. The server
    # has a config to read (the fixture granted capabilities).
    assert (conduit_home / "config.toml").exists()
    with open(f"/proc/{server}/maps", encoding="utf-8") as f:
        mapped = {os.path.basename(line.split()[-1]) for line in f if "/" in line}
    loaded = {name.partition(".")[0] for name in mapped}
    assert not loaded & {"_lzma", "_bz2", "zlib", "_random"}, sorted(loaded)
    # What a command's child has imported before its plugin is what the server had (on a
    # Python that builds those modules in, the mappings above say nothing): the second
    # command, the index being fresh then, finds none of them.
    for _ in range(2):
        info = conduit("probe", "modules")
    assert info.returncode == 0, info.stderr
    child = json.loads(info.stdout)
    assert child["ppid"] == server
    assert not set(child["modules"]) & {"conduit.config", "conduit.fs", "tempfile", "random"}
    # and a command that needs them still runs warm, in a child of the server
    done = conduit("config", "set", "kernel.idle-minutes", "45")
    assert done.returncode == 0, done.stderr
    assert "idle-minutes = 45" in (conduit_home / "config.toml").read_text(encoding="utf-8")
    info = conduit("probe", "info")
    assert json.loads(info.stdout)["ppid"] == server


def test_the_servers_click_rehearsal_leaves_nothing_behind(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The server runs a throwaway Click command before it forks anything (so that the
    # commands' children find Click's code quickened): no output, no context left, the
    # streams as they were.
    import click

    from conduit.hosts.inprocess import rehearse_click

    stdout = sys.stdout
    rehearse_click(20)
    assert sys.stdout is stdout
    assert click.get_current_context(silent=True) is None
    assert capsys.readouterr() == ("", "")


def test_a_spares_rehearsal_of_a_command_changes_nothing(
    plugin_dir: Path, conduit_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A spare child goes through what its command will do (Click, the index, a module's
    # bytecode) while it waits: nothing imported, written or printed, no context left.
    import click

    from conduit import sdk  # noqa: F401  (the server has it imported: warm.server._preload)
    from conduit.paths import resolve
    from conduit.warm.server import _rehearse_command

    probe_plugin(plugin_dir)
    assert conduit("plugins", "list", warm=False).returncode == 0  # an index to read
    files = {p: p.stat().st_mtime_ns for p in conduit_home.rglob("*") if p.is_file()}
    modules = set(sys.modules)
    stdout = sys.stdout
    _rehearse_command(resolve())
    assert set(sys.modules) == modules
    assert {p: p.stat().st_mtime_ns for p in conduit_home.rglob("*") if p.is_file()} == files
    assert sys.stdout is stdout
    assert click.get_current_context(silent=True) is None
    assert capsys.readouterr() == ("", "")


def test_a_spares_rehearsal_of_a_request_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A spare goes through a request's set-up with its own values while it waits (the
    # page copies it causes are then not on the command's time): its environment and
    # streams are as they were.
    from conduit.warm.server import _rehearse_request

    monkeypatch.setenv("REHEARSAL_PROBE", "kept")
    env = dict(os.environ)
    streams = (sys.stdin, sys.stdout, sys.stderr)
    _rehearse_request()
    assert dict(os.environ) == env
    assert (sys.stdin, sys.stdout, sys.stderr) == streams
    assert capsys.readouterr() == ("", "")


def test_a_command_gets_exactly_its_clients_environment() -> None:
    # Only what differs is changed (conduit/warm/server.py, _set_environment): a variable
    # the server has and the client does not is gone, in os.environ and in the C
    # library's environment that a program the command starts inherits.
    source = """
import os, subprocess, sys
from conduit.warm.server import _set_environment
os.environ.update({"KEPT": "same", "CHANGED": "old", "GONE": "x"})
_set_environment({"KEPT": "same", "CHANGED": "new", "ADDED": "a=b", "PATH": os.environ["PATH"]})
print(sorted(os.environ.items()))
print(subprocess.run(["env"], capture_output=True, text=True, env=None).stdout)
"""
    out = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, check=True
    ).stdout.split("\n", 1)
    expected = {"KEPT": "same", "CHANGED": "new", "ADDED": "a=b", "PATH": os.environ["PATH"]}
    assert out[0] == str(sorted(expected.items()))
    inherited = dict(line.split("=", 1) for line in out[1].splitlines() if line)
    assert inherited == expected


def test_a_command_killed_by_a_signal_ends_the_client_the_same_way(server: int) -> None:
    cold = conduit("probe", "kill", str(int(signal.SIGTERM)), warm=False)
    warm = conduit("probe", "kill", str(int(signal.SIGTERM)))
    assert cold.returncode == warm.returncode == -signal.SIGTERM
    assert cold.stdout == warm.stdout == "dying\n"


def test_a_killed_server_between_commands_means_a_cold_run_then_a_new_server(
    server: int,
) -> None:
    os.kill(server, signal.SIGKILL)
    assert wait_for(lambda: status()["running"] is False)
    proc = conduit("probe", "info")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ppid"] != server
    # ... and that cold run started a new server (CONDUIT_WARM=1) for the next command
    assert wait_for(lambda: status()["running"] is True)
    new = int(str(status()["pid"]))
    assert new != server
    assert json.loads(conduit("probe", "info").stdout)["ppid"] == new


def test_a_server_killed_mid_command_still_gets_the_command_its_status(
    server: int, tmp_path: Path
) -> None:
    flag = tmp_path / "go"
    proc = popen_warm("probe", "wait", str(flag), stderr=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "waiting\n"
    os.kill(server, signal.SIGKILL)
    flag.touch()
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out, err) == (0, "done\n", "")


def test_an_exit_status_is_kept_when_the_server_goes_mid_command(
    server: int, tmp_path: Path
) -> None:
    # the child reports its own status: the server's going does not turn it into 1
    flag = tmp_path / "go"
    proc = popen_warm("probe", "wait", str(flag))
    assert proc.stdout is not None
    proc.stdout.readline()
    stopped = conduit("server", "stop")  # the server leaves; the running command goes on
    assert stopped.stdout == (
        f"Stopped the warm kernel (pid {server}); its running commands finish first.\n"
    )
    # stop returned without waiting for the command (it waited for it, 15 s, and then
    # killed the server), and a new server may start while the old one waits
    assert running(server)
    assert conduit("server", "status").returncode == 3
    assert conduit("server", "start").returncode == 0
    assert status()["pid"] != server
    flag.touch()
    out, _ = proc.communicate(timeout=60)
    assert (proc.returncode, out) == (0, "done\n")
    assert wait_for(lambda: not running(server))


def test_a_changed_conduit_module_makes_the_server_refuse_and_stop(server: int) -> None:
    import conduit.warm.client as client

    path = Path(client.__file__)
    before = path.stat()
    try:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
        proc = conduit("probe", "info")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["ppid"] != server  # ran cold
        assert wait_for(lambda: not running(server))
    finally:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_a_client_of_another_version_is_refused(server: int) -> None:
    from conduit.paths import resolve
    from conduit.warm.client import MAGIC, address

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(address(resolve()))
    request = marshal.dumps(
        ("0.0.0-other", ["probe", "info"], "/", {}, 0o22, "x", [], [None] * 3, [])
    )
    sock.sendall(MAGIC + len(request).to_bytes(4, sys.byteorder) + request)
    sock.settimeout(10)
    # (only the first byte: the server may already have passed on the refusing child's
    # exit status behind it)
    assert sock.recv(1) == b"R"
    sock.close()
    assert wait_for(lambda: not running(server))


def test_warm_off_in_the_config_stops_the_server_and_start_refuses(
    server: int, conduit_home: Path
) -> None:
    with (conduit_home / "config.toml").open("a", encoding="utf-8") as f:
        f.write('\n[kernel]\nwarm = "off"\n')
    proc = conduit("probe", "info", env={"CONDUIT_WARM": ""})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ppid"] != server
    assert wait_for(lambda: not running(server))
    refused = conduit("server", "start", env={"CONDUIT_WARM": ""})
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: the warm kernel is off in the config")
    assert "conduit config set kernel.warm auto" in refused.stderr
    # and a cold command does not start one either
    conduit("probe", "info", env={"CONDUIT_WARM": ""})
    time.sleep(1.0)
    assert status()["running"] is False


def test_the_client_does_not_use_a_directory_others_can_enter(
    server: int, conduit_home: Path
) -> None:
    runtime = Path(str(status()["socket"])).parent
    runtime.chmod(0o755)
    try:
        proc = conduit("probe", "info")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["ppid"] != server  # ran cold
    finally:
        runtime.chmod(0o700)
    assert json.loads(conduit("probe", "info").stdout)["ppid"] == server


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_another_user_is_refused_by_the_server(server: int, tmp_path: Path) -> None:
    sock_path = str(status()["socket"])
    runtime = Path(sock_path).parent
    marker = tmp_path / "ran"
    # the test's XDG_RUNTIME_DIR and the socket's directory opened up for the attacker
    runtime.parent.chmod(0o711)
    runtime.chmod(0o711)
    os.chmod(sock_path, 0o777)
    try:
        pid = os.fork()
        if pid == 0:  # the attacker: another uid that reached the socket
            code = 1
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(sock_path)
                from conduit import __version__
                from conduit.warm.client import MAGIC

                args = ["probe", "wait", str(marker)]
                request = marshal.dumps(
                    (__version__, args, "/", {}, 0o22, "x", sys.path, [None] * 3, [])
                )
                sock.sendall(MAGIC + len(request).to_bytes(4, sys.byteorder) + request)
                sock.settimeout(10)
                answer = sock.recv(5)
                os.write(2, f"answer: {answer!r}\n".encode())
                code = 0 if answer == b"" else 2
            except (BrokenPipeError, ConnectionResetError):
                code = 0  # closed on it before it had sent its request
            except BaseException as exc:
                os.write(2, f"attacker: {exc!r}\n".encode())
            finally:
                os._exit(code)
        _, st = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(st) == 0  # connection closed, nothing answered
    finally:
        runtime.chmod(0o700)
        runtime.parent.chmod(0o700)
    assert not marker.exists()
    assert status()["pid"] == server
    assert json.loads(conduit("probe", "info").stdout)["ppid"] == server


def test_an_idle_server_exits(conduit_home: Path) -> None:
    (conduit_home / "config.toml").write_text("[kernel]\nidle-minutes = 0.01\n", encoding="utf-8")
    assert conduit("server", "start").returncode == 0
    assert wait_for(lambda: status()["running"] is False, timeout=30)


CRASHY = """\
import os, signal
import click
from conduit.sdk import Plugin

@click.command("crashy")
def crashy():
    os.kill(os.getpid(), signal.SIGSEGV)

class P(Plugin):
    def boot(self, ctx):
        ctx.register_command(crashy)
"""


def test_a_host_that_crashes_is_reported_as_on_the_cold_path(plugin_dir: Path) -> None:
    pytest.importorskip("wasmtime")
    toml = (
        'name = "crashy"\napi = ">=1.0,<2"\nisolation = "process"\n[[commands]]\nname = "crashy"\n'
    )
    write(plugin_dir, "crashy.py", manifest_block(toml) + CRASHY)
    # a WebAssembly plugin installed: the server imports wasmtime, whose fault handlers a
    # host forked from the template must not inherit (they swallowed this SIGSEGV)
    (plugin_dir / "mod.wasm").write_bytes(b"\0asm\1\0\0\0")
    (plugin_dir / "mod.toml").write_text('api = ">=1.0"\n[[commands]]\nname = "mod"\n')
    cold = conduit("crashy", warm=False)
    assert cold.returncode == 3
    assert "its host crashed (killed by signal SIGSEGV)" in cold.stderr
    assert conduit("server", "start").returncode == 0
    warm = conduit("crashy")
    assert (warm.returncode, warm.stdout, warm.stderr) == (
        cold.returncode,
        cold.stdout,
        cold.stderr,
    )


def test_start_while_another_server_is_starting_waits_for_it(conduit_home: Path) -> None:
    """A server that a command started (auto) an instant before holds the address's lock
    while it imports: `server start` waits for it instead of failing, and starts its own
    again if that one gives up."""
    import fcntl
    import threading

    from conduit.paths import resolve
    from conduit.warm.client import address, runtime_dir

    os.makedirs(runtime_dir(), mode=0o700, exist_ok=True)
    lock = os.open(address(resolve()) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)  # "a server is starting"

    def finish_starting() -> None:
        time.sleep(1.5)
        os.close(lock)  # ... and gives up

    helper = threading.Thread(target=finish_starting)
    helper.start()
    try:
        started = conduit("server", "start")
    finally:
        helper.join()
    assert started.returncode == 0, started.stderr
    assert status()["running"] is True


LEAKY = """\
import os
import click
from conduit.sdk import Plugin

LOG = None

@click.command("leaky")
@click.argument("path")
def leaky(path):
    global LOG
    LOG = open(path, "w")  # never closed: the interpreter's teardown flushes it
    LOG.write("written at exit\\n")

class P(Plugin):
    def boot(self, ctx):
        ctx.register_command(leaky)
"""


def test_a_file_the_command_left_open_ends_as_on_the_cold_path(
    plugin_dir: Path, tmp_path: Path
) -> None:
    """The warm child skips the interpreter's teardown (os._exit after its status): what
    a command left open must come out as it does cold."""
    toml = 'name = "leaky"\napi = ">=1.0,<2"\ncapabilities = ["filesystem:write"]\n'
    toml += '[[commands]]\nname = "leaky"\n'
    write(plugin_dir, "leaky.py", manifest_block(toml) + LEAKY)
    conduit("plugins", "grant", "leaky", "filesystem:write", warm=False)
    results = []
    for warm in (False, True):
        if warm:
            assert conduit("server", "start").returncode == 0
        out = tmp_path / f"log-{warm}.txt"
        proc = conduit("leaky", str(out), warm=warm)
        assert proc.returncode == 0, proc.stderr
        results.append(out.read_text(encoding="utf-8") if out.exists() else None)
    assert results[1] == results[0]


def test_only_linux_goes_warm(monkeypatch: pytest.MonkeyPatch) -> None:
    import conduit.__main__ as entry

    monkeypatch.setenv("CONDUIT_WARM", "1")
    assert entry.wanted(["probe", "info"]) is True
    for platform in ("darwin", "win32", "freebsd14"):
        monkeypatch.setattr(sys, "platform", platform)
        assert entry.wanted(["probe", "info"]) is False  # SO_PEERCRED, pidfds: Linux's


def test_a_server_that_does_not_answer_means_one_cold_run(server: int, tmp_path: Path) -> None:
    """A server that does not answer within a second (here: stopped) leaves the command
    to the cold path; when it wakes, the connection its client gave up on runs nothing,
    and nothing of it reaches the client's terminal."""
    marks, errors = tmp_path / "marks", tmp_path / "stderr"
    os.kill(server, signal.SIGSTOP)
    try:
        with errors.open("w") as stderr:
            proc = subprocess.run(
                [sys.executable, "-m", "conduit", "probe", "mark", str(marks)],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env={**os.environ, "CONDUIT_WARM": "1"},
                timeout=60,
            )
    finally:
        os.kill(server, signal.SIGCONT)
    assert proc.returncode == 0, errors.read_text()
    assert int(proc.stdout) != server  # ran here, cold
    time.sleep(2.0)  # the awake server hands the abandoned connection to its spare
    assert marks.read_text() == "ran\n"
    assert errors.read_text() == ""
    assert int(conduit("probe", "mark", str(marks)).stdout) == server  # and serves again
    assert marks.read_text() == "ran\nran\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to be another user")
def test_the_client_does_not_use_a_server_of_another_user(server: int, tmp_path: Path) -> None:
    """A socket at the address whose listener runs as another user (SO_PEERCRED) is not
    used: the command runs cold and that listener reads nothing."""
    path = str(status()["socket"])
    conduit("server", "stop")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    got = tmp_path / "got"
    pid = os.fork()
    if pid == 0:  # the impostor: listens (its credentials are the socket's) as nobody
        code = 1
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            listener.listen(1)
            listener.settimeout(30)
            conn, _ = listener.accept()
            conn.settimeout(5)
            data = conn.recv(65536)
            with open(got, "wb") as f:  # (tmp_path is root's: write what it read via fd)
                f.write(data)
            code = 0
        except OSError:
            code = 0
        finally:
            os._exit(code)
    listener.close()
    try:
        time.sleep(0.5)
        marks = tmp_path / "marks"
        proc = conduit("probe", "mark", str(marks))
        assert proc.returncode == 0, proc.stderr
        assert marks.read_text() == "ran\n"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert not got.exists() or got.read_bytes() == b""  # no request, no environment


def test_a_spare_rehearses_only_when_forked_ahead_with_a_cpu_to_spare(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A spare's rehearsal (and the spare host's) copies pages ahead, off the command's time
    # only if another CPU than the starting client's is free for it (a server that may
    # run on one CPU only would delay the client it shares it with), and only in a spare
    # forked between commands: not in one forked for a connection that is already waiting.
    from conduit.hosts import zygote
    from conduit.paths import resolve
    from conduit.warm.server import Server

    def in_server_spare(ahead: bool) -> bool:
        server = Server(resolve(), str(tmp_path / "s"))
        r, w = os.pipe()
        if server._fork_spare(ahead=ahead) is not None:  # the spare
            os.write(w, b"1" if server.rehearse else b"0")
            os._exit(0)
        assert server.spare is not None
        pid, end = server.spare
        end.close()
        os.waitpid(pid, 0)
        os.close(w)
        try:
            return os.read(r, 1) == b"1"
        finally:
            os.close(r)

    def in_host_spare(ahead: bool) -> bool:
        r, w = os.pipe()

        def spare(end: object, rehearse: bool = False) -> None:
            os.write(w, b"1" if rehearse else b"0")
            os._exit(0)

        monkeypatch.setattr(zygote, "_spare", spare)
        pid, end = zygote._fork_spare((), {}, ahead=ahead)
        end.close()
        os.waitpid(pid, 0)
        os.close(w)
        try:
            return os.read(r, 1) == b"1"
        finally:
            os.close(r)

    for one, cpus in ((True, {3}), (False, {0, 3})):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, cpus=cpus: cpus)
        assert zygote.ahead_pays() is not one
        for spare in (in_server_spare, in_host_spare):
            assert spare(ahead=True) is not one, spare.__name__
            assert spare(ahead=False) is False, spare.__name__
