"""The built-in ``plugins`` plugin reaches the kernel through the ``conduit.admin``
service, asked for through its context, which commands get as Click's ``obj``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest

from _factory import manifest_block, simple_plugin, write

ISOLATIONS = ["in-process", "process"]

SNEAKY = """
import click
from conduit.sdk import Plugin

BOOTED = []

@click.command()
@click.pass_obj
def who(ctx):
    click.echo(f"{ctx.name} {ctx is BOOTED[0]}")

@click.group()
def deep():
    pass

@deep.command()
@click.pass_obj
def down(ctx):
    click.echo(f"{ctx.name} {click.get_current_context().find_root().obj is ctx}")

@click.command()
@click.pass_obj
def sneak(ctx):
    click.echo(ctx.service("conduit.admin").measure_load("plugins"))

class Sneaky(Plugin):
    def boot(self, ctx):
        BOOTED.append(ctx)
        ctx.register_command(who)
        ctx.register_command(deep)
        ctx.register_command(sneak)
        if ctx.config.get("sneak-in-boot"):
            ctx.service("conduit.admin").measure_load("plugins")
"""


def _sneaky(plugin_dir: Path, isolation: str) -> None:
    toml = (
        f'name = "sneaky"\napi = ">=1.1,<2"\nisolation = "{isolation}"\n'
        '[[commands]]\nname = "who"\n[[commands]]\nname = "deep"\n'
        '[[commands]]\nname = "deep down"\n[[commands]]\nname = "sneak"\n'
    )
    write(plugin_dir, "sneaky.py", manifest_block(toml) + SNEAKY)


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_command_gets_its_plugins_context_as_click_obj(plugin_dir, run, isolation):  # type: ignore[no-untyped-def]
    _sneaky(plugin_dir, isolation)
    r = run("who")
    assert (r.code, r.out, r.err) == (0, "sneaky True\n", "")
    r = run("deep", "down")  # a subcommand: obj is inherited from the root context
    assert (r.code, r.out, r.err) == (0, "sneaky True\n", "")


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_third_party_plugin_is_refused_conduit_services(plugin_dir, run, isolation):  # type: ignore[no-untyped-def]
    _sneaky(plugin_dir, isolation)
    r = run("sneak")
    refused = "plugin 'sneaky': service 'conduit.admin' is reserved for Conduit's built-in plugins"
    assert r.code == 1
    assert r.out == ""
    if isolation == "in-process":
        assert r.err == (
            f"error: {refused}\nhint: it belongs to Conduit itself; a third-party plugin "
            "cannot use it\n"
        )
    else:  # the refusal reaches the plugin's code in the child, which does not catch it
        assert r.err.startswith(
            f"error: plugin 'sneaky': command 'sneak' failed: RemoteError: {refused}\n"
        )


GRABBER = """
import click
from conduit.sdk import Plugin

@click.command()
def grab():
    pass

class Grabber(Plugin):
    def boot(self, ctx):
        # Booted by a built-in command (plugins info / check): try the running command's
        # root context, which holds the built-in's plugin context.
        current = click.get_current_context(silent=True)
        root = current.find_root().obj if current is not None else None
        try:
            root.service("conduit.admin")
            print("GOT ADMIN via", getattr(root, "name", None))
        except Exception as exc:
            print("refused:", type(exc).__name__)
        ctx.register_command(grab)
"""


@pytest.mark.parametrize("command", [["info", "grabber"], ["check", "GRABBER"]])
def test_a_plugin_booted_by_a_built_in_command_cannot_borrow_its_context(plugin_dir, run, command):  # type: ignore[no-untyped-def]
    # plugins info times the plugin (conduit.admin's measure_load), plugins check boots it
    # with a recording context: neither may hand it the built-in's own context.
    toml = 'name = "grabber"\napi = ">=1.1,<2"\n[[commands]]\nname = "grab"\n'
    path = write(plugin_dir, "grabber.py", manifest_block(toml) + GRABBER)
    args = [str(path) if a == "GRABBER" else a for a in command]
    r = run("plugins", *args)
    assert "GOT ADMIN" not in r.out + r.err
    assert "refused: AttributeError" in r.out + r.err


def test_a_process_plugin_is_refused_while_it_starts(plugin_dir, run, conduit_home):  # type: ignore[no-untyped-def]
    # before its host lists it: the request is still answered as that plugin
    _sneaky(plugin_dir, "process")
    (conduit_home / "config.toml").write_text("[plugin.sneaky]\nsneak-in-boot = true\n")
    r = run("who")
    assert r.code == 3
    assert r.err.startswith(
        "error: plugin 'sneaky': failed to boot: RemoteError: plugin 'sneaky': "
        "service 'conduit.admin' is reserved for Conduit's built-in plugins\n"
    )


def _state_of_alpha(kernel: Any) -> str:
    """The state ``conduit plugins list`` shows for ``alpha`` when ``kernel`` runs it."""
    import io
    import json
    from contextlib import redirect_stdout

    out = io.StringIO()
    with redirect_stdout(out):
        assert kernel.run("plugins", ["plugins", "list", "--json"]) == 0
    (row,) = [r for r in json.loads(out.getvalue()) if r["name"] == "alpha"]
    return str(row["state"])


def test_each_kernel_answers_for_itself(plugin_dir):  # type: ignore[no-untyped-def]
    # No module-global kernel: two kernels alive in one process each see their own state.
    from conduit.indexer.build import load
    from conduit.kernel import Kernel
    from conduit.paths import resolve
    from conduit.timing import Profile

    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    paths = resolve()
    first = Kernel(load(paths, Profile(False)), paths, disabled={"alpha"})
    second = Kernel(load(paths, Profile(False)), paths)
    first.activate("plugins")
    second.activate("plugins")
    try:
        assert _state_of_alpha(first) == "disabled (env)"
        assert _state_of_alpha(second) == "enabled"
        assert _state_of_alpha(first) == "disabled (env)"
    finally:
        first.shutdown()
        second.shutdown()


class _Recorder:
    """Just enough of a plugin context to boot the plugin outside a kernel; its services
    are not the kernel's (as in the process host's child, where a proxy stands for it)."""

    name = "plugins"

    def __init__(self) -> None:
        self.commands: list[click.Command] = []

    def register_command(self, command: click.Command, name: str | None = None) -> None:
        self.commands.append(command)

    def service(self, name: str, kind: Any = None) -> Any:
        return object()


def test_outside_a_kernel_the_commands_use_one_of_their_own(plugin_dir, run, monkeypatch):  # type: ignore[no-untyped-def]
    from conduit.builtins.plugins import PluginsPlugin

    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    monkeypatch.setenv("CONDUIT_DISABLE_PLUGINS", "alpha")
    expected = run("plugins", "list")
    assert expected.code == 0
    assert "disabled (env)" in expected.out
    ctx = _Recorder()
    PluginsPlugin().boot(ctx)  # type: ignore[arg-type]
    (group,) = ctx.commands
    for obj in (None, ctx):  # no context at all, or one without the kernel's service
        assert run_click(group, ["list"], obj) == (0, expected.out)


def run_click(command: click.Command, args: list[str], obj: Any) -> tuple[int, str]:
    import io
    from contextlib import redirect_stdout

    out = io.StringIO()
    with redirect_stdout(out):
        try:
            command.main(args, prog_name="conduit plugins", standalone_mode=True, obj=obj)
        except SystemExit as exc:
            return int(exc.code or 0), out.getvalue()
    return 0, out.getvalue()  # pragma: no cover
