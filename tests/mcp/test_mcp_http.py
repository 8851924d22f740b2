"""`conduit mcp --http 127.0.0.1:0` (the SDK's streamable HTTP transport) under
``[mcp] sandbox = true`` and a short ``timeout-seconds``: one server for the module."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from _mcp import Client, http_server, server_env, write_home

CONFIG = """
[mcp]
expose = ["tools where", "tools sleep", "tools meet"]
sandbox = true
timeout-seconds = 5

[grants]
alpha = ["filesystem:write:{root}", "filesystem:read:{root}"]
"""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process sandbox")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, Path]]:
    root = tmp_path_factory.mktemp("mcp-http")
    home = root / "home"
    write_home(home, CONFIG.format(root=root))
    with http_server(server_env(home)) as (client, _):
        yield client, root


def text(result) -> str:
    return "".join(c.text for c in result.content)


def test_http_lists_only_the_commands_named(world):
    client, _ = world
    assert client.init.server_info.name == "conduit"
    names = sorted(t.name for t in client.list_tools().tools)
    assert names == ["tools_meet", "tools_sleep", "tools_where"]


def test_sandbox_runs_an_in_process_plugin_in_the_process_host(world):
    client, _ = world
    result = client.call("tools_where")
    assert not result.is_error, text(result)
    assert text(result) == "process\n"


def test_the_same_command_runs_in_process_on_the_command_line(world, monkeypatch):
    _, root = world
    monkeypatch.setenv("CONDUIT_HOME", str(root / "home"))
    done = subprocess.run(
        [sys.executable, "-m", "conduit", "tools", "where"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout == "in-process\n", done.stderr


def test_a_call_past_the_timeout_is_stopped_with_its_host(world):
    client, root = world
    pidfile = root / "sleeper.pid"
    result = client.call("tools_sleep", {"pidfile": str(pidfile)})
    assert result.is_error
    assert text(result) == (
        "'conduit tools sleep' did not finish within 5 s and was stopped ([mcp] timeout-seconds)"
    )
    pid = int(pidfile.read_text())
    # the sandboxed host that ran it is gone (or a zombie about to be reaped)
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[0]
    except OSError:
        state = b"gone"
    assert state in (b"gone", b"Z"), state


def test_two_http_calls_run_at_once(world):
    client, root = world
    a, b = str(root / "a"), str(root / "b")
    first, second = client.call_together(
        ("tools_meet", {"mine": a, "theirs": b}),
        ("tools_meet", {"mine": b, "theirs": a}),
    )
    assert (text(first), text(second)) == ("met\n", "met\n")


def _post(url: str, **headers: str) -> int:
    """The status of an initialize request with these headers."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "0"},
        },
    }
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            **headers,
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_dns_rebinding_another_host_or_origin_is_refused(world):
    client, _ = world
    port = client.url.split(":")[2].split("/")[0]
    assert _post(client.url) == 200
    assert _post(client.url, Origin=f"http://localhost:{port}") == 200
    # a page of a rebound name, or of another local port (another local server's)
    assert _post(client.url, Host=f"attacker.example:{port}") == 421
    assert _post(client.url, Origin="http://attacker.example") == 403
    assert _post(client.url, Origin=f"http://127.0.0.1:{int(port) + 1}") == 403
