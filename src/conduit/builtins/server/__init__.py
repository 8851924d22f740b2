"""``conduit server start | stop | status``: the warm kernel (conduit/warm/).

These commands always run on the cold path (the client never hands ``server`` to a
server), so that ``stop`` and ``status`` work whatever state the server is in.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
import time
from typing import Any

import click

from conduit.errors import ConduitError
from conduit.sdk import Plugin, PluginContext

__all__ = ["ServerPlugin"]

#: seconds `start` waits for a new server to listen, and `stop` for one to exit
WAIT = 15.0
#: seconds `server stop` gives a server that let go of its lock to be reported as exited
#: before it says that the server is draining its running commands
EXITING = 0.5
#: exit status of `status` when no server runs (the LSB's "program is not running")
NOT_RUNNING = 3


def _address() -> str:
    from conduit.paths import resolve
    from conduit.warm.client import address

    return address(resolve())


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet reaped by its new parent, does
    not: a server is nobody's child once ``start`` has returned)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _lock_held(path: str) -> bool:
    """Whether a server holds the address's lock (it may still be starting)."""
    import fcntl

    try:
        fd = os.open(path + ".lock", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # (releases it when it was ours)
    return False


def _lock_holder(path: str) -> int:
    """The pid of the process that holds the address's lock (``flock``, read from
    /proc/locks): the server, which takes it before anything else and keeps it until it
    exits. 0: nobody holds it (or it cannot be told)."""
    try:
        st = os.stat(path + ".lock")
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return 0
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 1234 00:2f:5678 0 EOF" ("1: -> FLOCK ...": a waiter)
        parts = line.split()
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == wanted:
            return int(parts[4]) if parts[4].isdigit() else 0
    return 0


def _mode(path: str) -> int:
    try:
        return os.stat(path).st_mode
    except OSError:
        return 0


def _running(path: str) -> dict[str, str] | None:
    """The state of the server at ``path`` when one serves there: the pid its state file
    names holds the address's lock (a pid alone may have been reused by another process
    since a server that was killed wrote it)."""
    from conduit.warm.server import read_state

    state = read_state(path)
    pid = state.get("pid", "")
    # (not by connecting: a connection is a request, and would keep it from going idle)
    if (
        pid.isdigit()
        and _alive(int(pid))
        and stat.S_ISSOCK(_mode(path))
        and _lock_holder(path) == int(pid)
    ):
        return state
    return None


@click.group("server")
def server_group() -> None:
    """Start, stop and inspect the warm kernel."""


@server_group.command("start")
@click.pass_obj
def start_cmd(ctx: PluginContext) -> None:
    """Start the warm kernel for this environment and wait until it serves."""
    from conduit.warm.client import mode, settings, start_detached

    if not sys.platform.startswith("linux"):
        raise ConduitError(
            "the warm kernel runs on Linux only", hint="commands run cold here, as before"
        )
    path = _address()
    state = _running(path)
    if state is not None:
        click.echo(f"The warm kernel is already running (pid {state['pid']}).")
        return
    config: dict[str, Any] = ctx.service("conduit.admin").index["config"]
    if settings(config)[0] == "off" and mode() != "on":
        raise ConduitError(
            'the warm kernel is off in the config ([kernel] warm = "off")',
            hint="turn it on with 'conduit config set kernel.warm auto'",
        )
    pid, tries = start_detached(), 1
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        state = _running(path)
        if state is not None:
            click.echo(f"Started the warm kernel (pid {state['pid']}).")
            return
        if pid and os.waitpid(pid, os.WNOHANG)[0]:
            pid = 0  # it exited: another server (starting) has the address, or it failed
        if not pid and not _lock_held(path):
            if tries == 2:
                break  # nobody is starting one, and ours failed twice
            pid, tries = start_detached(), 2  # the other one gave up: ours again
        time.sleep(0.02)
    state = _running(path)
    if state is not None:
        click.echo(f"The warm kernel is running (pid {state['pid']}).")
        return
    raise ConduitError(
        "the warm kernel did not start",
        hint="run 'python -c \"from conduit.warm.server import main; main()\"' to see why",
    )


@server_group.command("stop")
def stop_cmd() -> None:
    """Stop the warm kernel; commands run cold until it starts again."""
    import select
    import signal

    path = _address()
    state = _running(path)
    pidfd = -1
    if state is not None:
        # A pidfd first, then the check that its process is the server (holds the lock):
        # the signals go to that process, never to one that took its pid since.
        try:
            pidfd = os.pidfd_open(int(state["pid"]))
        except OSError:
            pidfd = -1
        if pidfd >= 0 and _running(path) is None:
            os.close(pidfd)
            pidfd = -1
    if state is None or pidfd < 0:
        click.echo("The warm kernel is not running.")
        return
    pid = int(state["pid"])
    draining = False
    try:
        with contextlib.suppress(ProcessLookupError):  # (it has just exited)
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)  # readable once the process has exited
        # Stopped once it has exited, or has let go of the address's lock: then it takes
        # no more commands, and exits once its running ones have ended (they are not cut
        # short, and a new server may start meanwhile).
        deadline = time.monotonic() + WAIT
        while not poller.poll(20):
            if _lock_holder(path) != pid:
                # It let go of the lock: it drains its running commands, or it is exiting
                # (an exit closes the files, and so lets go of the lock, a moment before
                # it is reported): an exit is seen within EXITING seconds.
                draining = _alive(pid) and not poller.poll(EXITING * 1000)
                break
            if time.monotonic() >= deadline:  # it does not answer SIGTERM: hung
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                poller.poll(WAIT * 1000)
                break
    finally:
        os.close(pidfd)
    if draining:
        click.echo(f"Stopped the warm kernel (pid {pid}); its running commands finish first.")
    else:
        click.echo(f"Stopped the warm kernel (pid {pid}).")


@server_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print it as a JSON object.")
def status_cmd(as_json: bool) -> None:
    """Say whether the warm kernel runs, with its pid and socket (exit 3: not running)."""
    path = _address()
    state = _running(path)
    if as_json:
        out: dict[str, object] = {"running": state is not None, "socket": path}
        if state is not None:
            out.update(
                pid=int(state["pid"]),
                version=state.get("version", ""),
                started=int(state.get("started", "0") or 0),
                idle_minutes=float(state.get("idle-minutes", "0") or 0),
            )
        click.echo(json.dumps(out, indent=2))
    elif state is None:
        click.echo(f"The warm kernel is not running (socket {path}).")
    else:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(state.get("started", "0"))))
        click.echo(
            f"The warm kernel is running: pid {state['pid']}, Conduit {state.get('version')}, "
            f"since {since}, socket {path}; it exits after "
            f"{state.get('idle-minutes')} idle minutes."
        )
    if state is None:
        raise click.exceptions.Exit(NOT_RUNNING)


class ServerPlugin(Plugin):
    """The built-in ``server`` commands."""

    def boot(self, ctx: PluginContext) -> None:
        ctx.register_command(server_group)
