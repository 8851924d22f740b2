"""``conduit server start | stop | status``: the warm kernel (conduit/warm/).

These commands always run on the cold path (the client never hands ``server`` to a
server), so that ``stop`` and ``status`` work whatever state the server is in.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

import click

from conduit.errors import ConduitError
from conduit.sdk import Plugin, PluginContext

__all__ = ["ServerPlugin"]

#: seconds `start` waits for a new server to listen, and `stop` for one to exit
WAIT = 15.0
#: exit status of `status` when no server runs (the LSB's "program is not running")
NOT_RUNNING = 3


def _address() -> str:
    from conduit.paths import resolve
    from conduit.warm.client import address

    return address(resolve())


def _serving(path: str) -> bool:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(1.0)
        sock.connect(path)
        return True
    except OSError:
        return False
    finally:
        sock.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _running(path: str) -> dict[str, str] | None:
    """The state of the server at ``path`` when one serves there."""
    from conduit.warm.server import read_state

    state = read_state(path)
    pid = state.get("pid", "")
    if pid.isdigit() and _alive(int(pid)) and _serving(path):
        return state
    return None


@click.group("server")
def server_group() -> None:
    """Start, stop and inspect the warm kernel (a server that runs commands faster)."""


@server_group.command("start")
@click.pass_obj
def start_cmd(ctx: PluginContext) -> None:
    """Start the warm kernel for this environment and wait until it serves."""
    from conduit.warm.client import mode
    from conduit.warm.server import settings, start_detached

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
    pid = start_detached()
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        state = _running(path)
        if state is not None:
            click.echo(f"Started the warm kernel (pid {state['pid']}).")
            return
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited:
            break  # it exited: another one took the address, or it failed
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
    import signal

    path = _address()
    state = _running(path)
    if state is None:
        click.echo("The warm kernel is not running.")
        return
    pid = int(state["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + WAIT
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
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
