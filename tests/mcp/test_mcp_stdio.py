"""`conduit mcp` over stdio, driven by the MCP SDK's own client: one server for the module
(its plugins in a CONDUIT_HOME of its own), every test one request or two."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from _mcp import Client, server_env, stdio_server, write_home

CONFIG = """
[mcp]
expose = ["alpha", "needy", "plugins list"]
timeout-seconds = 20

[grants]
alpha = ["filesystem:write:{root}", "filesystem:read:{root}"]
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, Path]]:
    root = tmp_path_factory.mktemp("mcp-stdio")
    home, markers = root / "home", root / "markers"
    markers.mkdir()
    write_home(home, CONFIG.format(root=root))
    with (
        open(root / "server.log", "w") as log,
        stdio_server(server_env(home, MCP_TEST_MARKERS=str(markers)), log) as client,
    ):
        yield client, root


@pytest.fixture(scope="module")
def client(world: tuple[Client, Path]) -> Client:
    return world[0]


def text(result) -> str:
    return "".join(c.text for c in result.content)


def test_initialize_names_the_server(client):
    assert client.init.server_info.name == "conduit"
    assert client.init.capabilities.tools is not None


def _plugin_commands(home: Path) -> dict[str, click.Command]:
    """The Click objects of the test plugin, imported here (in the test, not the server)."""
    spec = importlib.util.spec_from_file_location("mcp_alpha_probe", home / "plugins/alpha.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {"greet": module.greet, "tools_fail": module.tools.commands["fail"]}


def test_tools_list_has_a_schema_from_the_click_parameters(world):
    client, root = world
    tools = {t.name: t for t in client.list_tools().tools}
    # every leaf of the exposed plugins, and from `plugins` only the command named in full
    assert set(tools) == {
        "greet",
        "secret",
        "tools_crash",
        "tools_fail",
        "tools_meet",
        "tools_sleep",
        "tools_where",
        "fetch",
        "plugins_list",
    }
    greet = tools["greet"]
    assert greet.description == "Greet WHO a number of times."
    assert greet.title == "conduit greet"
    assert greet.input_schema == {
        "type": "object",
        "additionalProperties": False,
        "required": ["who", "ratio"],
        "properties": {
            "who": {"type": "string"},
            "extra": {"type": "array", "items": {"type": "string"}},
            "times": {
                "type": "integer",
                "minimum": 1,
                "maximum": 5,
                "default": 1,
                "description": "How many times.",
            },
            "style": {
                "type": "string",
                "enum": ["plain", "loud"],
                "default": "plain",
                "description": "The style.",
            },
            "tag": {"type": "array", "items": {"type": "string"}, "description": "Tags to add."},
            "shout": {"type": "boolean", "default": False, "description": "Upper case."},
            "ratio": {"type": "number", "description": "A ratio."},
            "verbose": {
                "type": "integer",
                "minimum": 0,
                "default": 0,
                "description": "More words.",
            },
        },
    }
    # ... and the same, read off the Click objects themselves
    for name, command in _plugin_commands(root / "home").items():
        schema = tools[name].input_schema
        params = [p for p in command.params if p.name]
        assert list(schema["properties"]) == [p.name for p in params]
        assert schema.get("required", []) == [p.name for p in params if p.required]
        for p in params:
            if isinstance(p, click.Option) and p.help:
                assert schema["properties"][p.name]["description"] == p.help
    assert tools["tools_fail"].input_schema["properties"] == {}


def test_tools_list_imports_no_plugin_in_the_server(world):
    client, root = world
    client.list_tools()
    client.call("tools_where")  # a call imports it: in the call's own process
    assert not (root / "markers" / "imported-by-server").exists()


def test_a_call_returns_the_commands_output_without_control_sequences(client):
    result = client.call(
        "greet",
        {
            "who": "-ann",  # a value that looks like an option stays an argument
            "extra": ["b", "--c"],
            "times": 2,
            "tag": ["x", "y"],
            "shout": True,
            "ratio": 0.5,
            "verbose": 2,
        },
    )
    assert not result.is_error, text(result)
    assert text(result) == "HELLO -ANN B --C PLAIN X,Y 0.5 V2\n" * 2 + "red\\x07 end\n"


def test_a_usage_error_is_a_tool_error(client):
    result = client.call("greet", {"who": "ann", "ratio": 1.0, "times": 9})
    assert result.is_error
    assert "9 is not in the range 1<=x<=5" in text(result)
    assert "\n" not in text(result)


def test_unknown_and_wrong_parameters_are_tool_errors(client):
    result = client.call("greet", {"who": "ann", "ratio": 1.0, "colour": "red"})
    assert result.is_error
    assert text(result).startswith("unknown parameter 'colour'")
    assert client.call("tools_nothing").is_error


def test_a_failing_command_is_a_one_line_error(client):
    result = client.call("tools_fail")
    assert result.is_error
    assert text(result) == "it broke \\x1b[31mred\\x1b[0m (exit status 1)"
    crashed = client.call("tools_crash")
    assert crashed.is_error
    assert "boom" in text(crashed)
    assert "\x1b" not in text(crashed) and "\n" not in text(crashed)


def test_a_missing_grant_names_the_grant_command_and_never_prompts(client):
    result = client.call("fetch")
    assert result.is_error
    assert "conduit plugins grant needy network:http" in text(result)


def test_two_calls_run_at_once(world):
    client, root = world
    a, b = str(root / "a"), str(root / "b")
    first, second = client.call_together(
        ("tools_meet", {"mine": a, "theirs": b}),
        ("tools_meet", {"mine": b, "theirs": a}),
    )
    assert (text(first), text(second)) == ("met\n", "met\n")


def test_an_exposed_builtin_command_runs(client):
    result = client.call("plugins_list")
    assert not result.is_error, text(result)
    assert "alpha" in text(result)
