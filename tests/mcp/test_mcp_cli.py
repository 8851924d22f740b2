"""`conduit mcp` on the command line: `--list`, the config's `[mcp]` table and its errors,
the HTTP address rule, a missing SDK, and what other commands import (nothing of it)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from _mcp import NEEDY_PLUGIN, TOOLS_PLUGIN

from _factory import imported_by, simple_plugin, write


@pytest.fixture
def tools_home(conduit_home: Path, plugin_dir: Path) -> Path:
    write(plugin_dir, "alpha.py", TOOLS_PLUGIN)
    write(plugin_dir, "needy.py", NEEDY_PLUGIN)
    return conduit_home


def configure(home: Path, text: str) -> None:
    (home / "config.toml").write_text(text, encoding="utf-8")


def test_list_shows_tools_hosts_and_grants(run, tools_home):
    configure(
        tools_home,
        '[mcp]\nexpose = ["tools where", "needy"]\n[grants]\nalpha = ["env:read:HOME"]\n',
    )
    r = run("mcp", "--list")
    assert r.code == 0, r.err
    assert r.out.splitlines() == [
        "conduit mcp exposes 2 tools (sandbox off, 60 s per call):",
        "  fetch  'conduit fetch' of needy, in-process; grants: none",
        "    parameters unknown (plugin 'needy': capabilities not granted: network:http (run "
        "'conduit plugins grant needy network:http' to allow it)): takes 'args'",
        "  tools_where  'conduit tools where' of alpha, in-process; grants: env:read:HOME",
    ]


def test_list_under_sandbox_says_the_process_sandbox(run, tools_home):
    configure(tools_home, '[mcp]\nexpose = ["greet"]\nsandbox = true\ntimeout-seconds = 9\n')
    r = run("mcp", "--list")
    assert r.code == 0, r.err
    assert r.out.splitlines() == [
        "conduit mcp exposes 1 tool (sandbox on, 9 s per call):",
        "  greet  'conduit greet' of alpha, process sandbox ([mcp] sandbox); grants: none",
    ]


def test_nothing_exposed_by_default(run, tools_home):
    r = run("mcp", "--list")
    assert r.code == 0
    assert "exposes no tools" in r.out
    assert "[mcp] expose" in r.out


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('expose = ["plugins"]', "mcp.expose[0]: 'plugins' is never exposed whole"),
        ('expose = ["config"]', "mcp.expose[0]: 'config' is never exposed whole"),
        ('expose = ["repos  status"]', "mcp.expose[0]: 'repos  status' is not a plugin or"),
        ("timeout-seconds = 0", "mcp.timeout-seconds: expected a number > 0.0"),
        ('sandbox = "yes"', "mcp.sandbox: expected true or false"),
        ("exposed = []", "unknown key 'exposed' in [mcp] (did you mean 'expose'?)"),
    ],
)
def test_a_bad_mcp_table_is_one_config_error(run, tools_home, table, expected):
    configure(tools_home, f"[mcp]\n{table}\n")
    r = run("mcp", "--list")
    assert r.code == 4
    assert expected in r.err.splitlines()[0], r.err


def test_an_unknown_name_is_one_error_with_a_guess(run, tools_home):
    configure(tools_home, '[mcp]\nexpose = ["greeet"]\n')
    r = run("mcp", "--list")
    assert r.code == 1
    assert r.err.splitlines() == [
        "error: config [mcp] expose[0]: 'greeet' is neither a plugin nor a command",
        "hint: did you mean 'greet'?",
    ]


def test_mcp_cannot_expose_itself(run, tools_home):
    configure(tools_home, '[mcp]\nexpose = ["mcp"]\n')
    r = run("mcp", "--list")
    assert r.code == 1
    assert "'mcp' cannot expose itself" in r.err


@pytest.mark.parametrize("address", ["0.0.0.0:8765", "192.168.1.2:80", "[::]:8765"])
def test_http_refuses_an_address_that_is_not_loopback(run, tools_home, address):
    r = run("mcp", "--http", address)
    assert r.code == 1
    assert "serves HTTP on a loopback address only" in r.err.splitlines()[0]


def test_http_wants_host_and_port(run, tools_home):
    r = run("mcp", "--http", "8765")
    assert r.code == 2
    assert "is not HOST:PORT" in r.err


def test_a_missing_sdk_is_one_line_naming_the_extra(run, tools_home, monkeypatch):
    configure(tools_home, '[mcp]\nexpose = ["greet"]\n')
    monkeypatch.setitem(sys.modules, "mcp", None)  # import mcp raises ImportError
    monkeypatch.setitem(sys.modules, "mcp.server", None)
    monkeypatch.setitem(sys.modules, "mcp.server.lowlevel", None)
    r = run("mcp")
    assert r.code == 1
    assert r.err == "error: conduit mcp needs the MCP SDK: pip install 'conduit-devtool[mcp]'\n"


def test_other_commands_import_nothing_of_mcp(plugin_dir):
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))

    def of_mcp(modules: set[str]) -> list[str]:
        return sorted(
            m
            for m in modules
            if m.split(".")[0] in ("mcp", "mcp_types", "uvicorn", "starlette", "pydantic")
            or m.startswith(("conduit.builtins.mcp", "conduit.hosts.describe"))
        )

    imported_by("--help", watch_kernel=False)  # builds the index
    for args in (("--help",), ("hello",), ("plugins", "list")):
        code, new = imported_by(*args, watch_kernel=args != ("--help",))
        assert code == 0
        assert of_mcp(new) == [], args
    # ... and `conduit mcp --list` needs no SDK either
    code, new = imported_by("mcp", "--list")
    assert code == 0
    assert [m for m in of_mcp(new) if not m.startswith("conduit.")] == []


def test_mcp_never_goes_to_the_warm_kernel(monkeypatch):
    from conduit.__main__ import wanted

    monkeypatch.setenv("CONDUIT_WARM", "1")
    assert not wanted(["mcp"])
    assert not wanted(["--debug", "mcp", "--http", "127.0.0.1:0"])
    assert wanted(["greet"]) == sys.platform.startswith("linux")
