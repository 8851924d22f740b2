"""The process host: a plugin in a child process, reached over the documented protocol."""

from __future__ import annotations

import json

from _factory import manifest_block, write

PLUGIN = """
import os
import click
from conduit.sdk import Plugin

class Counter:
    def incr(self, n):
        return n + 1

@click.command("iso-hello")
@click.option("--name", default="world")
def hello(name):
    click.echo(f"hello {name} from {os.getpid()}")
    click.echo("to stderr", err=True)

@click.command("iso-env")
def env():
    click.echo(f"{os.getcwd()} {os.environ.get('ISO_VAR')}")

@click.command("iso-exit")
def exit_():
    raise SystemExit(7)

@click.command("iso-ask")
def ask():
    click.echo(click.get_current_context().obj)

class P(Plugin):
    def boot(self, ctx):
        ctx.register_command(hello)
        ctx.register_command(env)
        ctx.register_command(exit_, "iso-exit")
        ctx.register_service("counter", Counter)
        ctx.register_hook("before_command", lambda command: click.echo(f"[iso saw {command}]"))
"""

TOML = """name = "iso"
api = ">=1.0,<2"
isolation = "process"
[provides]
services = ["counter"]
[[commands]]
name = "iso-hello"
[[commands]]
name = "iso-env"
[[commands]]
name = "iso-exit"
"""


def test_command_runs_in_a_child_process(plugin_dir, run):
    import os

    write(plugin_dir, "iso.py", manifest_block(TOML) + PLUGIN)
    r = run("iso-hello", "--name", "x")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0] == "[iso saw iso-hello]"  # its hook, proxied into the kernel
    assert lines[1].startswith("hello x from ")
    assert int(lines[1].rsplit(" ", 1)[1]) != os.getpid()
    assert r.err == "to stderr\n"


def test_cwd_env_and_exit_code_cross_over(plugin_dir, run, tmp_path, monkeypatch):
    write(plugin_dir, "iso.py", manifest_block(TOML) + PLUGIN)
    # the sandbox passes granted variables only (tests/test_permissions_process.py)
    (plugin_dir.parent / "config.toml").write_text('[grants]\niso = ["env:read:ISO_VAR"]\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ISO_VAR", "forty-two")
    assert run("iso-env").out.splitlines()[-1] == f"{tmp_path} forty-two"
    assert run("iso-exit").code == 7


def test_service_of_a_process_plugin_is_proxied(plugin_dir, run):
    write(plugin_dir, "iso.py", manifest_block(TOML) + PLUGIN)
    user = manifest_block('name = "user"\napi = ">=1.0,<2"\n[[commands]]\nname = "count"') + (
        "import click\nfrom conduit.sdk import Plugin\n"
        "class P(Plugin):\n    def boot(self, ctx):\n"
        "        @click.command('count')\n        def count():\n"
        "            click.echo(ctx.service('counter').incr(41))\n"
        "        ctx.register_command(count)\n"
    )
    write(plugin_dir, "user.py", user)
    r = run("count")
    assert (r.code, r.out.splitlines()[-1]) == (0, "42"), r.err


def test_policy_forces_a_stricter_host(plugin_dir, run, conduit_home):
    src = manifest_block('name = "plain"\napi = ">=1.0,<2"\n[[commands]]\nname = "where"') + (
        "import os, click\nfrom conduit.sdk import Plugin\n"
        "@click.command()\ndef where():\n    click.echo(os.getpid())\n"
        "class P(Plugin):\n    def boot(self, ctx):\n        ctx.register_command(where)\n"
    )
    write(plugin_dir, "plain.py", src)
    import os

    assert run("where").out.strip() == str(os.getpid())
    (conduit_home / "config.toml").write_text('[isolation]\nplain = "process"\n')
    assert run("where").out.strip() != str(os.getpid())
    info = json.loads(run("plugins", "info", "plain", "--json", "--no-load").out)
    assert info["isolation"] == "process"


def test_trusted_plugins_may_share_a_host(plugin_dir, conduit_home):
    from conduit._profile import Profile
    from conduit.index import load
    from conduit.kernel import Kernel
    from conduit.paths import resolve

    for name in ("one", "two", "three"):
        src = manifest_block(
            f'name = "{name}"\napi = ">=1.0,<2"\nisolation = "process"\n'
            f'[[commands]]\nname = "{name}-pid"'
        ) + (
            "import os, click\nfrom conduit.sdk import Plugin\n"
            f"@click.command('{name}-pid')\ndef pid():\n    click.echo(os.getpid())\n"
            "class P(Plugin):\n    def boot(self, ctx):\n        ctx.register_command(pid)\n"
        )
        write(plugin_dir, f"{name}.py", src)
    (conduit_home / "config.toml").write_text('[process]\nshared = ["one", "two"]\n')
    paths = resolve()
    kernel = Kernel(load(paths, Profile(False)), paths)
    hosts = {name: kernel.host_for(kernel.record(name)) for name in ("one", "two", "three")}
    assert hosts["one"] is hosts["two"]
    assert hosts["three"] is not hosts["one"]
    for name in ("one", "two", "three"):
        kernel.activate(name)
    pids = {name: hosts[name].proc.pid for name in ("one", "two", "three")}  # type: ignore[union-attr]
    assert pids["one"] == pids["two"] != pids["three"]
    kernel.deactivate("one")
    assert hosts["two"].alive  # still serving "two"
    kernel.shutdown()
    assert not hosts["two"].alive and not hosts["three"].alive
