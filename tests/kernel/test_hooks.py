"""Hooks: kernel hooks around commands, plugin-declared hooks, failures attributed."""

from __future__ import annotations

import pytest

from conduit.errors import PluginError
from conduit.indexer.build import load
from conduit.kernel import Kernel
from conduit.paths import resolve
from conduit.timing import Profile

from _factory import imported_by, manifest_block, simple_plugin, write

RECORDER = """
import click
from conduit.sdk import Plugin

class Recorder(Plugin):
    def boot(self, ctx):
        ctx.register_hook("config_loaded", lambda config: click.echo(f"config {sorted(config)}"))
        ctx.register_hook("before_command", lambda command, argv: click.echo(f"before {command} {argv}"))
        ctx.register_hook("after_command", lambda command, exit_code: click.echo(f"after {command} {exit_code}"))
        ctx.register_hook("on_command_error", lambda error: click.echo(f"error {error}"))
"""


def recorder(plugin_dir, name="recorder", body=RECORDER):  # type: ignore[no-untyped-def]
    toml = f'name = "{name}"\napi = ">=1.0,<2"\nactivation = ["startup"]'
    write(plugin_dir, f"{name}.py", manifest_block(toml) + body)


def test_kernel_hooks_frame_a_command(plugin_dir, run):
    recorder(plugin_dir)
    write(plugin_dir, "target.py", simple_plugin("target", ("build",)))
    r = run("build", "--help")
    assert r.code == 0
    lines = r.out.splitlines()
    assert lines[0] == (
        "config ['dependencies', 'granted-to', 'grants', 'isolation', 'journal', 'kernel', 'mcp', 'pins', 'plugin', "
        "'plugins', 'process', 'security', 'store', 'wasm']"
    )
    assert lines[1] == "before build ['--help']"
    assert lines[-1] == "after build 0"


def test_error_hook_and_exit_code(plugin_dir, run):
    recorder(plugin_dir)
    src = manifest_block('name = "bad"\napi = ">=1.0,<2"\n[[commands]]\nname = "boom"') + (
        "import click\nfrom conduit.sdk import Plugin\n"
        "@click.command()\ndef boom():\n    raise KeyError('x')\n"
        "class P(Plugin):\n    def boot(self, ctx):\n        ctx.register_command(boom)\n"
    )
    write(plugin_dir, "bad.py", src)
    r = run("boom")
    assert r.code == 1
    assert r.out.splitlines()[-2:] == [
        "error plugin 'bad': command 'boom' failed: KeyError: 'x'",
        "after boom 1",
    ]


def test_failing_hook_is_a_warning_and_others_still_run(plugin_dir, run):
    failing = (
        "from conduit.sdk import Plugin\n"
        "def explode(command):\n    raise RuntimeError('hook broke')\n"
        "class P(Plugin):\n    def boot(self, ctx):\n"
        "        ctx.register_hook('before_command', explode)\n"
    )
    recorder(plugin_dir, "aaa-failing", failing)
    recorder(plugin_dir)
    write(plugin_dir, "target.py", simple_plugin("target", ("build",)))
    r = run("build")
    assert r.code == 0
    assert "before build []" in r.out and "target build" in r.out
    assert r.err == (
        "conduit: warning: plugin 'aaa-failing': hook 'before_command' failed: "
        "RuntimeError: hook broke\n"
    )


def test_implementation_with_unknown_argument_is_rejected(plugin_dir):
    bad = (
        "from conduit.sdk import Plugin\n"
        "class P(Plugin):\n    def boot(self, ctx):\n"
        "        ctx.register_hook('before_command', lambda nonsense: None)\n"
    )
    recorder(plugin_dir, "wrongargs", bad)
    paths = resolve()
    k = Kernel(load(paths, Profile(False)), paths)
    k.activate("wrongargs")
    assert k.hook("before_command", command="x", argv=[]) == []
    [warning] = k.warnings
    assert warning.message == (
        "plugin 'wrongargs': hook 'before_command': implementation <lambda> does not match the "
        "hookspec: Argument(s) {'nonsense'} are declared in the hookimpl but can not be found "
        "in the hookspec"
    )
    with pytest.raises(PluginError, match="does not match the hookspec"):
        k.hook("before_command", raise_errors=True, command="x", argv=[])
    k.shutdown()


def test_invalid_implementation_never_stops_the_command(plugin_dir, run):
    bad = (
        "from conduit.sdk import Plugin\n"
        "class P(Plugin):\n    def boot(self, ctx):\n"
        "        ctx.register_hook('before_command', lambda nonsense: None)\n"
    )
    recorder(plugin_dir, "wrongargs", bad)
    write(plugin_dir, "target.py", simple_plugin("target", ("build",)))
    r = run("build")
    assert (r.code, r.out) == (0, "target build\n")
    assert len(r.err.splitlines()) == 1 and "does not match the hookspec" in r.err


PRODUCER = """
from conduit.sdk import Plugin

def on_sync(repo: str) -> str:
    '''Called for each synchronised repository; return a status line.'''

class Producer(Plugin):
    def boot(self, ctx):
        ctx.register_hookspec(on_sync)
        self.ctx = ctx
"""

CONSUMER = """
from conduit.sdk import Plugin

class Consumer(Plugin):
    def boot(self, ctx):
        ctx.register_hook("on_sync", lambda repo: f"{repo} synced")
"""


def test_plugin_declared_hook_activates_event_plugins(plugin_dir):
    write(
        plugin_dir,
        "producer.py",
        manifest_block('name = "producer"\napi = ">=1.0,<2"\n[provides]\nhooks = ["on_sync"]')
        + PRODUCER,
    )
    write(
        plugin_dir,
        "consumer.py",
        manifest_block('name = "consumer"\napi = ">=1.0,<2"\nactivation = ["event:on_sync"]')
        + CONSUMER,
    )
    paths = resolve()
    k = Kernel(load(paths, Profile(False)), paths)
    ctx = k.activate("producer")
    assert "consumer" not in k.states
    assert ctx.hook("on_sync", repo="conduit") == ["conduit synced"]
    assert k.reasons["consumer"] == "event:on_sync"
    k.deactivate("consumer")
    assert k.registry.hooks == {}
    k.shutdown()
    assert k.registry.hookspecs == {}


def test_pluggy_only_imported_when_a_hook_has_implementations(plugin_dir):
    write(plugin_dir, "target.py", simple_plugin("target", ("build",)))
    code, modules = imported_by("build")
    assert code == 0 and "pluggy" not in modules
    recorder(plugin_dir)
    code, modules = imported_by("build")
    assert code == 0 and "pluggy" in modules


def test_the_kernel_calls_exactly_the_hooks_it_specifies():
    # KERNEL_HOOKS is defined once, in the kernel; the pluggy specs must name the same hooks.
    from conduit.kernel import hookspecs
    from conduit.kernel.core import KERNEL_HOOKS

    assert sorted(KERNEL_HOOKS) == sorted(hookspecs.__all__)
    assert all(callable(getattr(hookspecs, name)) for name in KERNEL_HOOKS)
