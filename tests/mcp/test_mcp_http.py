"""`conduit mcp --http 127.0.0.1:0` (the SDK's streamable HTTP transport) under
``[mcp] sandbox = true`` and a short ``timeout-seconds``: one server for the module."""

from __future__ import annotations

import subprocess
import sys
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
