"""``conduit mcp``: the commands ``[mcp] expose`` names, as Model Context Protocol tools.

The tools, their schemas and the command line of a call are plain data (``_tools``, no SDK,
no plugin code); the server (``_server``) is the only module that imports the ``mcp`` SDK,
the optional extra ``conduit-devtool[mcp]``. Each call is a ``conduit`` child process, so
a plugin runs in its own host under its own grants exactly as on the command line
(docs/user-guide.md, "Using Conduit plugins from an MCP client"; docs/architecture.md).
"""

from __future__ import annotations

import sys

import click

from conduit.errors import ConduitError
from conduit.sdk import Plugin, PluginContext

TYPE_CHECKING = False
if TYPE_CHECKING:
    from conduit.builtins.mcp._tools import Settings, Tool
    from conduit.indexer.records import Index

__all__ = ["McpPlugin"]

#: the one line a missing extra gets
MISSING_SDK = "conduit mcp needs the MCP SDK: pip install 'conduit-devtool[mcp]'"


def _address(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) on a loopback address."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]") if host.startswith("[") else host
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(
            f"'{value}' is not HOST:PORT (e.g. 127.0.0.1:8765; port 0 picks a free one)"
        )
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ConduitError(
            f"conduit mcp serves HTTP on a loopback address only, not '{host}': whoever "
            "reaches the port runs your plugins with your grants",
            hint="use 127.0.0.1:PORT (a client elsewhere can reach it through an SSH tunnel)",
        )
    return host, int(port)


@click.command("mcp")
@click.option(
    "--http",
    "http",
    metavar="HOST:PORT",
    help="Serve the streamable HTTP transport on HOST:PORT (loopback only) instead of stdio.",
)
@click.option("--list", "list_", is_flag=True, help="Print the tools and their grants, and exit.")
@click.pass_obj
def mcp_cmd(ctx: PluginContext, http: str | None, list_: bool) -> None:
    """Serve the commands [mcp] expose names as MCP tools (stdio, or --http 127.0.0.1:PORT)."""
    from conduit.builtins.mcp._tools import Catalog, Settings
    from conduit.paths import resolve

    address = _address(http) if http is not None else None
    index: Index = ctx.service("conduit.admin").index
    settings = Settings.of(index["config"])
    if settings.sandbox and not sys.platform.startswith("linux"):
        raise ConduitError(
            "config [mcp] sandbox = true: this platform has no process sandbox",
            hint='set it to false, or run plugins as WebAssembly ([isolation] NAME = "wasm")',
        )
    if not list_:
        try:
            import mcp.server.lowlevel  # noqa: F401
        except ImportError:
            raise ConduitError(MISSING_SDK) from None
    catalog = Catalog(index, resolve(), settings)
    if list_:
        _print_list(index, catalog.tools, settings)
        return
    from conduit.builtins.mcp._server import serve

    serve(catalog, address)


def _print_list(index: Index, tools: list[Tool], settings: Settings) -> None:
    from conduit.builtins.mcp._tools import host_of
    from conduit.text import inert

    sandbox = "on" if settings.sandbox else "off"
    if not tools:
        click.echo(
            "conduit mcp exposes no tools: list plugins or commands in the config's "
            "[mcp] expose (conduit config edit)"
        )
        return
    click.echo(
        f"conduit mcp exposes {len(tools)} tool{'s' if len(tools) != 1 else ''} "
        f"(sandbox {sandbox}, {settings.timeout:g} s per call):"
    )
    for tool in tools:
        host = host_of(index, tool.plugin, settings)
        grants = ", ".join(inert(g) for g in tool.grants) or "none"
        click.echo(
            f"  {inert(tool.name)}  'conduit {inert(tool.command)}' of {inert(tool.plugin)}, "
            f"{host}; grants: {grants}"
        )
        if tool.note:
            click.echo(f"    parameters unknown ({inert(tool.note)}): takes 'args'")


class McpPlugin(Plugin):
    """The built-in ``mcp`` command."""

    def boot(self, ctx: PluginContext) -> None:
        ctx.register_command(mcp_cmd)
