"""In-process trust, stated honestly (docs/permissions.md#trust-model).

An in-process plugin's limits are advisory: the prompt and ``plugins permissions`` say
so, the prompt moves the plugin into the process sandbox in one keystroke, and
``[security] sandbox-third-party`` makes the process sandbox the default for every
third-party plugin (built-ins and ``trusted`` plugins stay in-process). Real plugins,
real hosts; the prompt on a real pseudo-terminal.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from conduit.errors import EXIT_CONFIG
from conduit.hosts.inprocess import InProcessHost
from conduit.hosts.process import ProcessHost
from conduit.indexer.build import load
from conduit.kernel import Kernel
from conduit.paths import resolve
from conduit.security import landlock, seccomp
from conduit.timing import Profile

from _factory import manifest_block, pty_run, write

CONDUIT = [sys.executable, "-m", "conduit"]

needs_sandbox = pytest.mark.skipif(
    sys.platform != "linux" or landlock.abi() < 1 or not seccomp.available(),
    reason="needs Linux with Landlock and seccomp (the process sandbox)",
)


@pytest.fixture(autouse=True)
def no_prompt_in_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "1")


# Where does it run? In a fresh `conduit` process, only the process host's child has
# loaded conduit.hosts._child; run in pytest's own process, the pid tells.
WHERE = """
import os, sys
import click
from conduit.sdk import Plugin

@click.command("NAME")
def where():
    host = "process" if "conduit.hosts._child" in sys.modules else "in-process"
    click.echo(f"host={host} pid={os.getpid()}")

class ThePlugin(Plugin):
    def boot(self, ctx):
        ctx.register_command(where)
"""


def where_plugin(name: str, caps: tuple[str, ...] = (), isolation: str = "in-process") -> str:
    listed = ", ".join(json.dumps(c) for c in caps)
    toml = (
        f'name = "{name}"\napi = ">=1.0,<2"\ndescription = "where"\n'
        f'isolation = "{isolation}"\ncapabilities = [{listed}]\n'
        f'[[commands]]\nname = "{name}"\nhelp = "Where am I?"\n'
    )
    return manifest_block(toml) + WHERE.replace("NAME", name)


@needs_sandbox
def test_the_prompt_says_advisory_and_p_moves_the_plugin_into_the_sandbox(plugin_dir, conduit_home):
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["CONDUIT_HOME"] = str(conduit_home)
    write(plugin_dir, "alpha.py", where_plugin("alpha", ("env:read:HOME",)))
    code, _, text = pty_run([*CONDUIT, "alpha"], "p", env)
    lines = text.splitlines()
    assert (
        "├ It runs inside Conduit's own process, where these limits are advisory: code that "
        "means to can get around them (ctypes, _posixsubprocess)." in lines
    )
    assert lines[-2] == "└ Grant? [y/N] p"
    assert code == 0
    assert lines[-1].startswith("host=process pid=")  # this very run
    config = (conduit_home / "config.toml").read_text()
    assert '[isolation]\nalpha = "process"' in config
    assert 'alpha = ["env:read:HOME"]' in config
    # and from now on, without a prompt
    code, _, text = pty_run([*CONDUIT, "alpha"], None, env)
    assert code == 0
    assert text.startswith("host=process pid=")


def test_permissions_say_an_in_process_plugin_is_advisory(run, plugin_dir, conduit_home):
    write(plugin_dir, "alpha.py", where_plugin("alpha", ("env:read:HOME",)))
    write(plugin_dir, "boxed.py", where_plugin("boxed", ("env:read:HOME",), "process"))
    lines = run("plugins", "permissions", "alpha").out.splitlines()
    assert lines[1:3] == [
        "  host: in-process (guarded)",
        "  ! advisory: it runs inside Conduit's own process, where code that means to gets",
    ]
    if sys.platform == "linux":
        assert lines[3:5] == [
            "    around the guard (ctypes, _posixsubprocess); to enforce its grants, run it in the",
            f'    process sandbox: [isolation] alpha = "process" in {conduit_home / "config.toml"}',
        ]
    assert json.loads(run("plugins", "permissions", "alpha", "--json").out)["advisory"] is True
    assert json.loads(run("plugins", "permissions", "boxed", "--json").out)["advisory"] is False
    assert "advisory" not in run("plugins", "permissions", "boxed").out
    builtin = json.loads(run("plugins", "permissions", "devtools", "--json").out)
    assert builtin["advisory"] is False


@needs_sandbox
def test_sandbox_third_party_runs_them_in_a_process_host_but_not_builtins_or_trusted(
    run, plugin_dir, conduit_home
):
    write(plugin_dir, "third.py", where_plugin("third"))
    write(plugin_dir, "mine.py", where_plugin("mine"))
    (conduit_home / "config.toml").write_text(
        '[security]\nsandbox-third-party = true\ntrusted = ["mine"]\n'
    )
    r = run("third")
    assert r.code == 0
    host, pid = (part.split("=")[1] for part in r.out.split())
    assert host == "process" and int(pid) != os.getpid()
    assert run("mine").out.split()[1] == f"pid={os.getpid()}"
    assert json.loads(run("plugins", "permissions", "third", "--json").out)["host"] == (
        "process (sandboxed)"
    )

    paths = resolve()
    kernel = Kernel(load(paths, Profile(False)), paths)
    plugins = kernel.index["plugins"]
    assert isinstance(kernel.host_for(plugins["plugins"]), InProcessHost)  # a built-in
    assert isinstance(kernel.host_for(plugins["mine"]), InProcessHost)
    assert isinstance(kernel.host_for(plugins["third"]), ProcessHost)


@needs_sandbox
def test_a_newcomer_claiming_a_trusted_name_is_not_trusted(run, plugin_dir, conduit_home):
    """[security] trusted and [dependencies] allow-build name a plugin the user knows: a
    new file that takes the name (it sorts first) gets neither."""
    write(plugin_dir, "notes.py", where_plugin("notes"))
    (conduit_home / "config.toml").write_text(
        '[security]\nsandbox-third-party = true\ntrusted = ["notes"]\n'
        '[dependencies]\nallow-build = ["notes"]\n'
    )
    assert run("notes").out.split()[1] == f"pid={os.getpid()}"  # trusted: in-process
    write(plugin_dir, "aaa-evil.py", where_plugin("notes"))  # wins the name
    r = run("notes")
    assert r.code == 0, r.err
    host, pid = (part.split("=")[1] for part in r.out.split())
    assert host == "process" and int(pid) != os.getpid()
    paths = resolve()
    config = load(paths, Profile(False))["config"]
    assert config["security"]["trusted"] == []
    assert config["dependencies"]["allow-build"] == []
    (plugin_dir / "aaa-evil.py").unlink()  # the one the user trusts is alone again
    assert run("notes").out.split()[1] == f"pid={os.getpid()}"


def test_security_settings_are_validated(run, conduit_home: Path):
    path = conduit_home / "config.toml"
    path.write_text('[security]\nsandbox-third-party = "yes"\n')
    r = run("plugins", "list")
    assert r.code == EXIT_CONFIG
    assert r.err.splitlines()[0] == (
        f"error: {path}:2: security.sandbox-third-party: expected true or false, got a string"
    )
