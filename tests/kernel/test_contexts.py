"""The three PluginContext implementations agree: the kernel's Context, the host child's
ChildContext and the author tools' RecordingContext (conduit.hosts.recording)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest

from conduit.errors import PluginError, PluginLoadError
from conduit.hosts import command_key
from conduit.hosts._child import ChildContext
from conduit.hosts.recording import RecordingContext
from conduit.indexer.build import load
from conduit.kernel import Kernel
from conduit.kernel.core import Context
from conduit.paths import resolve
from conduit.sdk import PluginContext
from conduit.timing import Profile

RECORD: Any = {"name": "p"}


def kernel_context(tmp_path: Path) -> Context:
    paths = resolve()
    return Context(Kernel(load(paths, Profile(False)), paths), RECORD)


def child_context(tmp_path: Path) -> ChildContext:
    # registrations never reach the child's connection: no Child needed for them
    return ChildContext(None, RECORD, str(tmp_path), {})  # type: ignore[arg-type]


def recording_context(tmp_path: Path) -> RecordingContext:
    return RecordingContext("p", str(tmp_path))


CONTEXTS = [kernel_context, child_context, recording_context]
Factory = Callable[[Path], Any]


@pytest.fixture(params=CONTEXTS, ids=lambda f: f.__name__)
def ctx(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    factory: Factory = request.param
    return factory(tmp_path)


def cmd(name: str | None) -> click.Command:
    return click.Command(name, callback=lambda: None)


def test_each_is_a_plugin_context(ctx: Any) -> None:
    assert isinstance(ctx, PluginContext)
    assert ctx.name == "p"


def test_the_same_names(ctx: Any) -> None:
    ctx.register_command(cmd("hello"))
    ctx.register_command(cmd("status"), "repos   status")  # whitespace runs: one space
    ctx.register_command(cmd("ignored"), " \tadmin\nusers ")
    ctx.register_command(cmd("own"), "")  # an empty name: the command's own
    assert list(ctx.commands()) == ["hello", "repos status", "admin users", "own"]


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        (None, (cmd(None), None), "register_command() needs a named Click command"),
        (None, (cmd(None), "  \t "), "register_command() needs a named Click command"),
        (None, (cmd(""), None), "register_command() needs a named Click command"),
        ((cmd("dup"), None), (cmd("dup"), None), "command 'dup' is registered twice"),
        ((cmd("a"), "g  sub"), (cmd("b"), "g sub"), "command 'g sub' is registered twice"),
    ],
)
def test_the_same_error_for_the_same_mistake(ctx: Any, first: Any, second: Any, message: str):
    if first is not None:
        ctx.register_command(*first)
    with pytest.raises(PluginError) as info:
        ctx.register_command(*second)
    assert type(info.value) is PluginError  # not a PluginLoadError in one of them
    assert info.value.plugin == "p"
    assert info.value.message == f"plugin 'p': {message}"


def test_command_key_is_the_rule() -> None:
    assert command_key("p", cmd("x"), " a  b ") == "a b"
    assert command_key("p", cmd(" x \n y"), None) == "x y"
    with pytest.raises(PluginError, match="needs a named Click command"):
        command_key("p", cmd(None), " ")


def test_recording_context_records_everything_boot_registers(tmp_path: Path) -> None:
    ctx = RecordingContext("p", str(tmp_path / "data"), {"k": 1})

    def spec() -> None:
        """A hook."""

    def impl() -> None:
        pass

    ctx.register_service("svc", dict)
    ctx.register_hook("before_command", impl)
    ctx.register_hookspec(spec, firstresult=True)
    assert (ctx.services, ctx.hooks, ctx.hookspecs) == (
        {"svc": dict},
        [("before_command", impl)],
        [(spec, True)],
    )
    assert ctx.config == {"k": 1} and ctx.config is not ctx.config
    assert ctx.data_dir == str(tmp_path / "data") and (tmp_path / "data").is_dir()
    assert ctx.hook("before_command") == []
    with pytest.raises(PluginLoadError, match="asked for service 'svc' in boot"):
        ctx.service("svc")


def test_plugins_manifest_reports_a_duplicate_command_as_the_kernel_does(
    tmp_path: Path, run: Any
) -> None:
    """``conduit plugins manifest`` boots the plugin with a RecordingContext: the same
    message and exit code (1, a PluginError) as running the plugin."""
    plugin = tmp_path / "dup.py"
    plugin.write_text(
        textwrap.dedent("""\
            # /// conduit
            # name = "dup"
            # api = ">=1.0,<2"
            # [[commands]]
            # name = "dup"
            # ///
            import click
            from conduit.sdk import Plugin

            @click.command("dup")
            def one():
                pass

            class Dup(Plugin):
                def boot(self, ctx):
                    ctx.register_command(one)
                    ctx.register_command(one)
            """)
    )
    result = run("plugins", "manifest", str(plugin))
    assert "plugin 'dup': command 'dup' is registered twice" in result.err
    assert result.code == 1
