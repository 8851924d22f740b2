"""`conduit mcp` driven by the MCP SDK's own client (tests/mcp/): one server per module,
its session on an event loop in a thread (anyio's blocking portal), so that plain tests
call tools synchronously."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from anyio.from_thread import start_blocking_portal
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from _factory import manifest_block

#: a plugin of every kind of Click parameter, and commands that fail, sleep and meet
TOOLS_PLUGIN = (
    manifest_block(
        """
        name = "alpha"
        api = ">=1.0,<2"
        description = "Tools for MCP tests"

        [[commands]]
        name = "greet"
        help = "Greet someone."

        [[commands]]
        name = "tools"
        help = "Odd tools."

        [[commands]]
        name = "secret"
        help = "Never exposed."
        """
    )
    + '''
import os, sys, time
import click
from conduit.sdk import Plugin

# Where this module is imported: `conduit mcp` itself must never import it.
if "mcp" in sys.argv[1:] and os.environ.get("MCP_TEST_MARKERS"):
    with open(os.path.join(os.environ["MCP_TEST_MARKERS"], "imported-by-server"), "w") as f:
        f.write(" ".join(sys.argv))


@click.command("greet")
@click.argument("who")
@click.argument("extra", nargs=-1)
@click.option("--times", "-n", type=click.IntRange(1, 5), default=1, help="How many times.")
@click.option("--style", type=click.Choice(["plain", "loud"]), default="plain", help="The style.")
@click.option("--tag", multiple=True, help="Tags to add.")
@click.option("--shout/--no-shout", default=False, help="Upper case.")
@click.option("--ratio", type=float, required=True, help="A ratio.")
@click.option("-v", "--verbose", count=True, help="More words.")
def greet(who, extra, times, style, tag, shout, ratio, verbose):
    """Greet WHO a number of times."""
    for _ in range(times):
        text = f"hello {who} {' '.join(extra)} {style} {','.join(tag)} {ratio} v{verbose}"
        click.echo(text.upper() if shout else text)
    click.echo("\\x1b[31mred\\x1b[0m\\x07 end")


@click.group("tools")
def tools():
    """Odd tools."""


@tools.command("fail")
def fail():
    """Always fails."""
    raise click.ClickException("it broke \\x1b[31mred\\x1b[0m")


@tools.command("crash")
def crash():
    """Raises."""
    raise RuntimeError("boom")


@tools.command("sleep")
@click.argument("pidfile")
def sleep(pidfile):
    """Sleeps for ever (writes its pid first)."""
    with open(pidfile, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)


@tools.command("meet")
@click.argument("mine")
@click.argument("theirs")
def meet(mine, theirs):
    """Creates MINE, then waits for THEIRS: two calls meet only if they run at once."""
    open(mine, "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists(theirs) and time.monotonic() < deadline:
        time.sleep(0.01)
    click.echo("met" if os.path.exists(theirs) else "alone")


@tools.command("where")
def where():
    """Says which host runs it."""
    click.echo("process" if "conduit.hosts._child" in sys.modules else "in-process")


@click.command("secret")
def secret():
    """Never exposed."""
    click.echo("secret")


class ThePlugin(Plugin):
    def boot(self, ctx):
        ctx.register_command(greet)
        ctx.register_command(tools)
        ctx.register_command(secret)
'''
)

#: a plugin that asks for a capability nobody granted
NEEDY_PLUGIN = (
    manifest_block(
        """
        name = "needy"
        api = ">=1.0,<2"
        description = "Needs the network"
        capabilities = ["network:http"]

        [[commands]]
        name = "fetch"
        help = "Fetch something."
        """
    )
    + """
import click
from conduit.sdk import Plugin


@click.command("fetch")
def fetch():
    click.echo("fetched")


class ThePlugin(Plugin):
    def boot(self, ctx):
        ctx.register_command(fetch)
"""
)


def server_env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        "CONDUIT_HOME": str(home),
        "CONDUIT_WARM": "0",
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", str(home)),
        "XDG_RUNTIME_DIR": os.environ.get("XDG_RUNTIME_DIR", ""),
    }
    env.update(extra)
    return env


def write_home(home: Path, config: str, markers: Path | None = None) -> None:
    plugins = home / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    (plugins / "alpha.py").write_text(TOOLS_PLUGIN, encoding="utf-8")
    (plugins / "needy.py").write_text(NEEDY_PLUGIN, encoding="utf-8")
    (home / "config.toml").write_text(config, encoding="utf-8")


class Client:
    """A client session with a ``conduit mcp`` server, usable from synchronous tests."""

    def __init__(self, stack: contextlib.ExitStack, transport: Callable[[], Any]) -> None:
        self.portal = stack.enter_context(start_blocking_portal())
        streams = stack.enter_context(self.portal.wrap_async_context_manager(transport()))
        session = self.portal.call(lambda: ClientSession(streams[0], streams[1]))
        self.session: ClientSession = stack.enter_context(
            self.portal.wrap_async_context_manager(session)
        )
        self.init = self.portal.call(self.session.initialize)
        self.url = ""  # the server's (HTTP)

    def list_tools(self) -> Any:
        return self.portal.call(self.session.list_tools)

    def call(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        return self.portal.call(self.session.call_tool, name, arguments or {})

    def call_together(self, *calls: tuple[str, dict[str, Any]]) -> list[Any]:
        """Several calls sent at once; their results in order."""
        import anyio

        async def run() -> list[Any]:
            results: list[Any] = [None] * len(calls)

            async def one(i: int, name: str, args: dict[str, Any]) -> None:
                results[i] = await self.session.call_tool(name, args)

            async with anyio.create_task_group() as group:
                for i, (name, args) in enumerate(calls):
                    group.start_soon(one, i, name, args)
            return results

        return self.portal.call(run)


@contextlib.contextmanager
def stdio_server(env: dict[str, str], errlog: Any) -> Iterator[Client]:
    params = StdioServerParameters(command=sys.executable, args=["-m", "conduit", "mcp"], env=env)
    with contextlib.ExitStack() as stack:
        yield Client(stack, lambda: stdio_client(params, errlog=errlog))


@contextlib.contextmanager
def http_server(env: dict[str, str]) -> Iterator[tuple[Client, subprocess.Popen[str]]]:
    """``conduit mcp --http 127.0.0.1:0``: the address it prints, a client connected."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "conduit", "mcp", "--http", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.startswith("conduit mcp: serving on http://127.0.0.1:"), line
        url = line.rsplit(" ", 1)[1].strip()
        with contextlib.ExitStack() as stack:
            client = Client(stack, lambda: streamable_http_client(url))
            client.url = url
            yield client, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
