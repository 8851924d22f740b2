"""The MCP server of ``conduit mcp``: the only module that imports the ``mcp`` SDK.

``tools/list`` is answered from the tools ``_tools`` built (index and cached parameter
data; made again when the index has changed, ``_tools.Catalog``); ``tools/call`` runs
``conduit PLUGIN:COMMAND ...`` as a child process of its own:
a fresh kernel, the plugin's host, sandbox and grants exactly as on the command line, no
terminal (so never a grant prompt), in a new session so that a timeout or a cancelled
request kills its whole process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from typing import Any

import anyio
import mcp_types as types
from mcp.server.lowlevel import Server

from conduit import __version__
from conduit.builtins.mcp._tools import (
    Catalog,
    Settings,
    Tool,
    argv_for,
    child_env,
    clean,
    error_line,
)
from conduit.paths import conduit_argv

__all__ = ["MAX_OUTPUT", "build", "serve"]

#: the most of a call's standard output a result carries (the rest is cut, and said so)
MAX_OUTPUT = 1 << 20


def _error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=text)], is_error=True)


def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


async def call(tool: Tool, arguments: dict[str, Any], settings: Settings) -> types.CallToolResult:
    """Run one call of ``tool`` in a ``conduit`` child; its result."""
    try:
        argv = argv_for(tool, arguments)
    except ValueError as exc:
        return _error(str(exc))
    proc = await asyncio.create_subprocess_exec(
        *conduit_argv(*argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(settings),
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), settings.timeout)
    except TimeoutError:
        _kill(proc)
        await proc.wait()
        return _error(
            f"'conduit {tool.command}' did not finish within {settings.timeout:g} s and was "
            "stopped ([mcp] timeout-seconds)"
        )
    finally:
        if proc.returncode is None:  # cancelled by the client
            _kill(proc)
    text = out.decode("utf-8", "replace")
    if len(text) > MAX_OUTPUT:
        text = text[:MAX_OUTPUT] + f"\n[output cut at {MAX_OUTPUT} characters]"
    if proc.returncode != 0:
        code = proc.returncode or 0
        status = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        message = error_line(err.decode("utf-8", "replace"), code)
        return _error(f"{message} ({status})" if "exit status" not in message else message)
    return types.CallToolResult(content=[types.TextContent(text=clean(text))])


def build(catalog: Catalog) -> Server[Any]:
    """The low-level server answering ``tools/list`` and ``tools/call``, from the
    catalog's tools as they are at each request."""

    async def list_tools(
        _ctx: Any, _params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        tools, _ = await anyio.to_thread.run_sync(catalog.current)
        return types.ListToolsResult(
            tools=[
                types.Tool(
                    name=t.name,
                    title=f"conduit {t.command}",
                    description=t.description,
                    input_schema=t.schema,
                )
                for t in tools
            ]
        )

    async def call_tool(_ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        tools, settings = await anyio.to_thread.run_sync(catalog.current)
        tool = next((t for t in tools if t.name == params.name), None)
        if tool is None:
            return _error(f"no tool '{clean(params.name)}' (see tools/list)")
        return await call(tool, params.arguments or {}, settings)

    return Server(
        "conduit",
        version=__version__,
        instructions="Conduit plugin commands, each run under the plugin's own grants.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


async def _stdio(server: Server[Any]) -> None:
    from mcp.server.stdio import stdio_server

    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


async def _http(server: Server[Any], host: str, port: int) -> None:
    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    # DNS rebinding: a web page the user visits must not reach this port through a name
    # of its own (Host) or from its own origin (Origin). Said here, not left to the
    # SDK's default for a loopback host.
    from mcp.server.transport_security import TransportSecuritySettings

    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{name}:{bound}" for name in ("127.0.0.1", "localhost", "[::1]")],
        allowed_origins=[f"http://{name}:{bound}" for name in ("127.0.0.1", "localhost", "[::1]")],
    )
    app = server.streamable_http_app(host=host, transport_security=security)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    sys.stderr.write(f"conduit mcp: serving on http://{shown}:{bound}/mcp\n")
    sys.stderr.flush()
    await uvicorn.Server(config).serve(sockets=[sock])


def serve(catalog: Catalog, address: tuple[str, int] | None) -> None:
    """Serve the catalog's tools over stdio, or streamable HTTP on ``address``, until the
    client goes (stdio) or the process is stopped (HTTP)."""
    server = build(catalog)
    if address is None:
        anyio.run(_stdio, server)
    else:
        anyio.run(_http, server, *address)
