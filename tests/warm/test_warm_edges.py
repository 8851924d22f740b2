"""The warm kernel tried as an attacker and an unlucky user would (review of issue 20).

Each test here is a finding: it runs the same thing cold and warm (or checks a claim of
docs/warm-kernel.md directly) against a real server started for the test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _factory import manifest_block, write
from _warm import conduit, fd_targets, popen_warm, running, status, wait_for

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(sys.platform != "linux", reason="the warm kernel is POSIX (Linux tested)"),
]

REVIEW = """\
import json, os, sys, time
import click
from conduit.sdk import Plugin

@click.group("rv")
def rv():
    pass

@rv.command("forker")
def forker():
    # a worker forked the plain way, which ends as a Python program ends (sys.exit)
    pid = os.fork()
    if pid == 0:
        sys.exit(0)
    os.waitpid(pid, 0)
    click.echo("parent done")
    sys.exit(3)

@rv.command("pid")
def pid():
    click.echo(os.getpid())

@rv.command("wait")
@click.argument("path")
def wait(path):
    click.echo(os.getpid())
    sys.stdout.flush()
    while not os.path.exists(path):
        time.sleep(0.02)
    click.echo("done")

@rv.command("mark")
@click.argument("path")
@click.argument("flag")
def mark(path, flag):
    with open(path, "a") as f:
        f.write("ran\\n")
    while not os.path.exists(flag):
        time.sleep(0.02)
    click.echo("done")

@rv.command("readsub")
def readsub():
    import subprocess
    try:
        click.echo(subprocess.run(["cat"], capture_output=True, timeout=15).returncode)
    except subprocess.TimeoutExpired:
        click.echo("hung")

@rv.command("flags")
def flags():
    import warnings
    warnings.warn("a deprecated thing", DeprecationWarning)
    click.echo(f"optimize={sys.flags.optimize} bytecode={not sys.dont_write_bytecode}")

@rv.command("many")
def many():
    for i in range(200000):
        click.echo(f"line {i}")

@rv.command("bytes")
@click.argument("arg")
def bytes_(arg):
    click.echo(repr((os.fsencode(arg), os.environb.get(b"RV_BYTES"), os.getcwdb())))

class P(Plugin):
    def boot(self, ctx):
        ctx.register_command(rv)
"""

BOXED = """\
import click
from conduit.sdk import Plugin

@click.command("boxed")
def boxed():
    click.echo("boxed ran")

class P(Plugin):
    def boot(self, ctx):
        ctx.register_command(boxed)
"""


CAPS = ("filesystem:read", "filesystem:write", "process:execute:cat")


def review_plugin(plugin_dir: Path) -> None:
    caps = ", ".join(f'"{c}"' for c in CAPS)
    toml = f'name = "rv"\napi = ">=1.0,<2"\ncapabilities = [{caps}]\n'
    for name in (
        "rv",
        "rv forker",
        "rv pid",
        "rv wait",
        "rv mark",
        "rv readsub",
        "rv flags",
        "rv many",
        "rv bytes",
    ):
        toml += f'[[commands]]\nname = "{name}"\n'
    write(plugin_dir, "rv.py", manifest_block(toml) + REVIEW)
    toml = 'name = "boxed"\napi = ">=1.0,<2"\nisolation = "process"\n'
    toml += '[[commands]]\nname = "boxed"\n'
    write(plugin_dir, "boxed.py", manifest_block(toml) + BOXED)


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
        return [int(x) for x in f.read().split()]


def pgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return 0


def template_of(server: int, command: int = 0) -> int:
    """The host template: the server's child that leads a process group of its own (as
    does a command's child: ``command``, and one that has just ended)."""
    for _ in range(500):
        found = [
            pid for pid in children(server) if pgid(pid) == pid and running(pid) and pid != command
        ]
        if len(found) == 1:
            return found[0]
        time.sleep(0.02)
    return 0


@pytest.fixture
def server(plugin_dir: Path) -> int:
    review_plugin(plugin_dir)
    granted = conduit("plugins", "grant", "rv", *CAPS, warm=False)
    assert granted.returncode == 0, granted.stderr
    started = conduit("server", "start")
    assert started.returncode == 0, started.stderr
    return int(str(status()["pid"]))


# --- findings --------------------------------------------------------------------------


def test_a_process_forked_by_a_command_does_not_report_the_commands_status(
    server: int,
) -> None:
    # The warm child registers an atexit handler that sends "X" + status to the client;
    # a process the command forks inherits it, and its exit ended the client early with
    # its own status.
    cold = conduit("rv", "forker", warm=False)
    warm = conduit("rv", "forker")
    assert (cold.returncode, cold.stdout) == (3, "parent done\n"), cold.stderr
    assert (warm.returncode, warm.stdout) == (cold.returncode, cold.stdout), warm.stderr
    assert status()["pid"] == server


def test_the_server_holds_none_of_the_descriptors_of_the_command_that_started_it(
    plugin_dir: Path,
) -> None:
    # A cold command that finds no server starts one (posix_spawn): every descriptor the
    # command inherited without close-on-exec (a `flock 9` lock, a pipe of a build tool,
    # a CI runner's status fd) went to the server, which held it for 30 minutes and gave
    # it to every command after.
    review_plugin(plugin_dir)
    conduit("plugins", "grant", "rv", *CAPS, warm=False)
    r, w = os.pipe()
    try:
        first = conduit("rv", "pid", env={"CONDUIT_WARM": "1"}, pass_fds=(w,))
        assert first.returncode == 0, first.stderr
        os.close(w)
        w = -1
        assert wait_for(lambda: status()["running"] is True)
        os.set_blocking(r, False)
        try:
            data = os.read(r, 1)
        except BlockingIOError:
            data = None  # somebody (the server) still holds the write end
        assert data == b""
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


@pytest.mark.slow
def test_a_process_plugin_runs_after_the_host_template_was_killed(server: int) -> None:
    # The server restarts a dead template, but the spare child forked before holds the
    # dead one's socket: the next process plugin command failed where cold succeeds.
    cold = conduit("boxed", warm=False)
    assert (cold.returncode, cold.stdout) == (0, "boxed ran\n"), cold.stderr
    first = conduit("boxed")
    assert (first.returncode, first.stdout) == (0, "boxed ran\n"), first.stderr
    old = template_of(server)
    assert old
    os.kill(old, signal.SIGKILL)
    assert wait_for(lambda: template_of(server) not in (0, old))
    for _ in range(2):
        warm = conduit("boxed")
        assert (warm.returncode, warm.stdout, warm.stderr) == (0, "boxed ran\n", "")
    assert status()["pid"] == server


def _sockets(pid: int) -> set[str]:
    return fd_targets(pid, "socket:")


@pytest.mark.slow
def test_a_restarted_host_template_holds_no_connection_of_the_server(
    server: int, tmp_path: Path
) -> None:
    # A template restarted while a command runs was forked with the server's connection
    # to that command's client (and the spare's socket), and every host it forks after
    # inherits them: a sandboxed host could write a status to another command's client.
    flag = tmp_path / "go"
    proc = popen_warm("rv", "wait", str(flag))
    try:
        assert proc.stdout is not None
        command = int(proc.stdout.readline())
        old = template_of(server, command)
        assert old
        os.kill(old, signal.SIGKILL)
        assert wait_for(lambda: template_of(server, command) not in (0, old))
        new = template_of(server, command)
        assert _sockets(new) & _sockets(server) == set()
    finally:
        flag.touch()
        out, _ = proc.communicate(timeout=60)
    assert (proc.returncode, out) == (0, "done\n")


def test_a_command_runs_once_when_its_terminal_goes_away(server: int, tmp_path: Path) -> None:
    # On a terminal, an error of the client's own terminal after the go-ahead (EIO once
    # the terminal has gone: a closed ssh or terminal window) escaped as "no answer", and
    # the client ran the command again on the cold path, while the warm one still ran.
    import pty

    marks, flag = tmp_path / "marks", tmp_path / "flag"
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "conduit", "rv", "mark", str(marks), str(flag)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "CONDUIT_WARM": "1"},
        start_new_session=True,
    )
    os.close(slave)
    try:
        assert wait_for(lambda: marks.exists() and marks.read_text() == "ran\n", 60)
    finally:
        os.close(master)  # the terminal goes away
    # The command goes on without its terminal, as it does cold (the pty was never the
    # client's controlling terminal: no SIGHUP), so the client waits for it. The faulty
    # client read EIO from its terminal at once and ran the command again within
    # milliseconds: give it a few seconds to (wrongly) do so, not a minute.
    wait_for(lambda: proc.poll() is not None or marks.read_text().count("ran") > 1, 5)
    flag.touch()
    proc.wait(timeout=60)
    assert marks.read_text() == "ran\n"


def test_a_client_with_stdin_closed_does_not_hand_its_own_socket_as_stdin(
    server: int,
) -> None:
    # With fd 0 closed, the client's socket took fd 0 and went to the command as its
    # standard input: a subprocess reading stdin waited on the client's own connection
    # (forever: the client waits for the command) instead of failing as it does cold.
    closed = {"stdin": subprocess.DEVNULL, "preexec_fn": lambda: os.close(0)}
    cold = conduit("rv", "readsub", warm=False, **closed)
    assert (cold.returncode, cold.stdout) == (0, "1\n"), cold.stderr
    warm = conduit("rv", "readsub", **closed)
    assert (warm.returncode, warm.stdout) == (cold.returncode, cold.stdout), warm.stderr


@pytest.mark.parametrize(
    "variable",
    [
        ("PYTHONWARNINGS", "error::DeprecationWarning"),
        ("PYTHONOPTIMIZE", "1"),
        ("PYTHONDONTWRITEBYTECODE", ""),
    ],
    ids=lambda v: v[0],
)
def test_the_interpreters_settings_of_the_client_hold_warm(
    server: int, variable: tuple[str, str]
) -> None:
    # The interpreter's PYTHON* settings are read when it starts: a command served by a
    # server started with other ones ran with the server's (warnings as errors, asserts,
    # bytecode written into the plugins' directories or not).
    name, value = variable
    env = {k: v for k, v in os.environ.items() if k != name}
    if value:
        env[name] = value
    args = [sys.executable, "-m", "conduit", "rv", "flags"]
    run = {"capture_output": True, "text": True, "timeout": 60}
    cold = subprocess.run(args, env={**env, "CONDUIT_WARM": "0"}, **run)  # type: ignore[call-overload]
    warm = subprocess.run(args, env={**env, "CONDUIT_WARM": "1"}, **run)  # type: ignore[call-overload]
    assert (warm.returncode, warm.stdout) == (cold.returncode, cold.stdout), warm.stderr


def test_a_pipe_closed_by_head_ends_the_command_as_cold(server: int) -> None:
    script = 'conduit rv many | head -n 1; echo "status ${PIPESTATUS[0]}"'
    results = []
    for warm in ("0", "1"):
        proc = subprocess.run(
            ["bash", "-c", script.replace("conduit", f"{sys.executable} -m conduit")],
            capture_output=True,
            text=True,
            env={**os.environ, "CONDUIT_WARM": warm},
            timeout=60,
        )
        results.append((proc.stdout, proc.stderr))
    assert results[0] == results[1]
    assert status()["pid"] == server


def test_arguments_environment_and_directory_that_are_not_utf8(server: int, tmp_path: Path) -> None:
    work = tmp_path / os.fsdecode(b"dir-\xff")
    work.mkdir()
    args = [sys.executable.encode(), b"-m", b"conduit", b"rv", b"bytes", b"arg-\xfe"]
    env = {**os.environb, b"RV_BYTES": b"val-\xfd"}
    outs = []
    for warm in (b"0", b"1"):
        proc = subprocess.run(
            args, capture_output=True, env={**env, b"CONDUIT_WARM": warm}, cwd=work, timeout=60
        )
        outs.append((proc.returncode, proc.stdout, proc.stderr))
    assert outs[0] == outs[1]
    assert outs[0][0] == 0, outs[0]
    assert status()["pid"] == server


@pytest.mark.parametrize(
    "signum",
    [
        signal.SIGTERM,
        signal.SIGKILL,
    ],
    ids=["SIGTERM", "SIGKILL"],
)
def test_a_killed_client_takes_its_command_with_it(
    server: int, tmp_path: Path, signum: int
) -> None:
    # Cold, the command is the process: killing it ends the command. Warm, SIGTERM is
    # relayed; SIGKILL (timeout -s KILL, a CI job cancelled, the OOM killer) cannot be:
    # the server sees the client's end close without its "done" and kills the command.
    flag = tmp_path / "go"
    proc = popen_warm("rv", "wait", str(flag))
    try:
        assert proc.stdout is not None
        command = int(proc.stdout.readline())
        assert command != proc.pid  # served warm
        proc.send_signal(signum)
        assert proc.wait(timeout=60) == -signum
        assert wait_for(lambda: not running(command), 20)
    finally:
        flag.touch()
        proc.stdout.close()


def test_concurrent_clients_each_get_their_own_child(server: int) -> None:
    procs = [popen_warm("rv", "pid", stderr=subprocess.PIPE) for _ in range(12)]
    results = [(p.communicate(timeout=120), p.returncode) for p in procs]
    assert all(code == 0 and err == "" for (_, err), code in results), results
    pids = {int(out) for (out, _), _ in results}
    assert len(pids) == 12
    assert status()["pid"] == server


# A server whose os.read sends it SIGTERM just before it reads its wake-up pipe: the
# moment a real SIGTERM can come (after the loop looked at its stop flag, before the
# read that takes the signal's byte away).
LATE_SIGTERM = """\
import os, signal
from conduit.warm import server

real_read, me = os.read, os.getpid()

def read(fd, n):
    if os.getpid() == me and n == 512:
        os.kill(me, signal.SIGTERM)
    return real_read(fd, n)

os.read = read
server.main()
"""


def test_a_sigterm_that_comes_with_a_commands_end_stops_the_server(plugin_dir: Path) -> None:
    # The loop checked its stop flag only after a wait: a SIGTERM handled between that
    # check and the read of the wake-up pipe lost its byte with the SIGCHLD's, and the
    # server waited for its idle timeout (30 minutes) instead of stopping.
    review_plugin(plugin_dir)
    conduit("plugins", "grant", "rv", *CAPS, warm=False)
    with patched_server(LATE_SIGTERM) as server:
        ran = conduit("rv", "pid")  # its child's end wakes the loop with SIGCHLD
        assert ran.returncode == 0, ran.stderr
        assert int(ran.stdout) != server.pid
        server.wait(timeout=20)


@contextlib.contextmanager
def patched_server(source: str) -> Iterator[subprocess.Popen[bytes]]:
    """A warm server run by ``python -c SOURCE`` (which patches it, then calls
    ``server.main()``), serving once this yields; killed after if it still runs."""
    server = subprocess.Popen(
        [sys.executable, "-c", source],
        env={**os.environ, "CONDUIT_WARM": "1"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert wait_for(lambda: status().get("pid") == server.pid)
        yield server
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def slow_to_exit(seconds: float, lock_first: bool = False) -> str:
    """Source of a warm server whose exit (the server process's ``os._exit``) takes
    ``seconds`` (a loaded machine); with ``lock_first``, after it has let go of the
    address's lock, as an exit does when it closes the files before it is reported."""
    return f"""\
import os, time
from conduit.warm import server

real_exit, me = os._exit, os.getpid()

def slow_exit(code):
    if os.getpid() == me:
        for fd in os.listdir("/proc/self/fd") if {lock_first!r} else ():
            try:
                if os.readlink(f"/proc/self/fd/{{fd}}").endswith(".sock.lock"):
                    os.close(int(fd))
            except OSError:
                pass
        time.sleep({seconds!r})
    real_exit(code)

os._exit = slow_exit
server.main()
"""


def test_stop_waits_for_an_idle_server_to_exit(plugin_dir: Path) -> None:
    # An idle server let go of its lock before it exited: `server stop`, seeing the lock
    # free while the process still ran, said "its running commands finish first" (there
    # were none) and returned with the server still there.
    with patched_server(slow_to_exit(1.0)) as server:
        stopped = conduit("server", "stop")
        assert stopped.stdout == f"Stopped the warm kernel (pid {server.pid}).\n"
        assert server.poll() is not None  # (exited: the stop waited for it)


def test_stop_does_not_take_an_exiting_server_for_a_draining_one(plugin_dir: Path) -> None:
    # `server stop` saw the lock free before the exit was reported and said "its running
    # commands finish first" of an idle server that was only exiting (2 of 25 runs under
    # load).
    with patched_server(slow_to_exit(0.1, lock_first=True)) as server:
        stopped = conduit("server", "stop")
        assert stopped.stdout == f"Stopped the warm kernel (pid {server.pid}).\n"
        assert server.wait(timeout=30) == 0


# A server that does not leave on SIGTERM (hung): its stop flag is never set.
DEAF = """\
from conduit.warm import server

server.Server._stop = lambda self, signum, frame: None
server.main()
"""


def test_stop_kills_a_server_that_does_not_answer_sigterm(
    plugin_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # docs/warm-kernel.md: a server that does not answer within the wait is killed (15 s;
    # shortened here, in this process's `conduit server stop`)
    import conduit.builtins.server as control
    from conduit.cli import main

    monkeypatch.setattr(control, "WAIT", 1.0)
    with patched_server(DEAF) as server:
        assert main(["server", "stop"]) == 0
        assert capsys.readouterr().out == f"Stopped the warm kernel (pid {server.pid}).\n"
        assert server.wait(timeout=30) == -signal.SIGKILL
