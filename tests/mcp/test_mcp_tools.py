"""`conduit mcp`'s data, in this process (no SDK): what a tool call's arguments become on
the ``conduit`` child's command line, parsed back by Click as the plugin's command would
parse it, and the plugin text a client sees in tools/list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest

from conduit.builtins.mcp._tools import Settings, Tool, argv_for, load_tools, schema_for
from conduit.hosts.describe import describe

from _factory import manifest_block, write


@click.command("cmd")
@click.argument("target")
@click.option("-t", "tag", help="A short-only option.")
@click.option("--force", is_flag=True, help="Dangerous.")
def cmd(target: str, tag: str | None, force: bool) -> None:
    """A command with a short-only option."""


def _tool(command: click.Command) -> Tool:
    (leaf,) = describe(command, command.name or "cmd")
    return Tool(
        name="cmd",
        command="cmd",
        plugin="alpha",
        description="",
        schema=schema_for(leaf["params"]),
        params=leaf["params"],
    )


def _received(command: click.Command, arguments: dict[str, Any]) -> dict[str, Any]:
    """The values ``command`` gets from the command line ``argv_for`` builds."""
    argv = argv_for(_tool(command), arguments)
    assert argv[0] == "alpha:cmd"
    ctx = command.make_context("cmd", argv[1:])
    return dict(ctx.params)


def test_an_empty_value_of_a_short_option_does_not_take_the_next_word():
    # `-t` alone would take `--` as its value, and `--force` would become an option
    got = _received(cmd, {"tag": "", "target": "--force"})
    assert got == {"target": "--force", "tag": "", "force": False}


@pytest.mark.parametrize("value", ["-x", "--force", "=a", "a\nb", "--", ""])
def test_option_and_argument_values_stay_values(value):
    assert _received(cmd, {"tag": value, "target": value}) == {
        "target": value,
        "tag": value,
        "force": False,
    }


def test_a_nul_in_a_value_is_a_parameter_error():
    with pytest.raises(ValueError, match="parameter 'target': a value cannot contain a NUL"):
        argv_for(_tool(cmd), {"target": "a\0b"})
    generic = Tool("g", "g", "alpha", "", {}, None)
    with pytest.raises(ValueError, match="parameter 'args': a value cannot contain a NUL"):
        argv_for(generic, {"args": ["ok", "a\0b"]})


PAINTED = manifest_block(
    """
    name = "painted"
    api = ">=1.0,<2"
    description = "Help text with terminal sequences"

    [[commands]]
    name = "paint"
    help = "Paint."
    """
) + (
    "import click\n"
    "from conduit.sdk import Plugin\n"
    "@click.command('paint')\n"
    "@click.option('--colour', type=click.Choice(['red\\x1b[31m', 'blue']),\n"
    "              help='The \\x1b]0;pwned\\x07colour.')\n"
    "def paint(colour):\n"
    "    '''Paint \\x1b[2Jthe wall.'''\n"
    "class ThePlugin(Plugin):\n"
    "    def boot(self, ctx):\n"
    "        ctx.register_command(paint)\n"
)


def test_tools_list_text_from_a_plugin_has_no_control_sequences(run, plugin_dir: Path):
    from conduit.index import fingerprint, index_path, read
    from conduit.paths import resolve

    write(plugin_dir, "painted.py", PAINTED)
    assert run("--help").code == 0  # the index
    paths = resolve()
    index = read(index_path(paths), fingerprint(paths))
    assert index is not None
    (tool,) = load_tools(index, paths, Settings(expose=["painted"], sandbox=False, timeout=20))
    assert tool.params is not None, tool.note  # described by the plugin's own host
    shown = repr((tool.name, tool.command, tool.description, tool.schema))
    assert "\x1b" not in shown and "\x07" not in shown
    assert tool.description == "Paint the wall."
    assert tool.schema["properties"]["colour"]["description"] == "The colour."
