"""Grants follow a plugin's identity, not its bare name (docs/permissions.md#identity).

The attack: a plugin holds ``filesystem:read:SECRET``; a new plugin claiming its name (a
file ``aaa-evil.py`` that sorts first, another distribution) must not run with that
grant: it is asked again on a terminal, refused with the grant command otherwise. Real
plugins in real hosts, the prompt on a real pseudo-terminal.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from conduit.errors import EXIT_CONFIG, EXIT_PLUGIN_LOAD
from conduit.security import landlock, seccomp

from _factory import manifest_block, pty_run, write

CONDUIT = [sys.executable, "-m", "conduit"]

needs_sandbox = pytest.mark.skipif(
    sys.platform != "linux" or landlock.abi() < 1 or not seccomp.available(),
    reason="needs Linux with Landlock and seccomp",
)


@pytest.fixture(autouse=True)
def no_prompt_in_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands run in pytest's process never prompt; the prompt tests use a pty."""
    monkeypatch.setenv("CI", "1")


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A directory holding a key, the kind of thing a grant protects (~/.ssh)."""
    folder = tmp_path / "secret"
    folder.mkdir()
    (folder / "key").write_text("TOPSECRET\n")
    return folder


PROBE = """
import click
from conduit.sdk import Plugin

@click.command("NAME")
@click.argument("path", required=False)
def probe(path):
    click.echo("TAG ran")
    if path:
        with open(path) as f:
            click.echo(f.read().strip())

class ThePlugin(Plugin):
    def boot(self, ctx):
        ctx.register_command(probe)
"""


def file_plugin(name: str, tag: str, caps: list[str], isolation: str = "in-process") -> str:
    listed = ", ".join(json.dumps(c) for c in caps)
    toml = f"""\
        name = "{name}"
        api = ">=1.0,<2"
        description = "{tag}"
        isolation = "{isolation}"
        capabilities = [{listed}]

        [[commands]]
        name = "{name}"
        help = "Probe."
        """
    return manifest_block(toml) + PROBE.replace("NAME", name).replace("TAG", tag)


def config(home: Path) -> str:
    path = home / "config.toml"
    return path.read_text() if path.exists() else ""


def not_granted(name: str, caps: list[str]) -> str:
    them = "it" if len(caps) == 1 else "them"
    return (
        f"error: plugin '{name}': capabilities not granted: {', '.join(caps)} "
        f"(run 'conduit plugins grant {name} {' '.join(caps)}' to allow {them})"
    )


# -- single files --------------------------------------------------------------------------------


def test_a_new_file_claiming_a_granted_name_does_not_get_its_grants(
    run, plugin_dir, conduit_home, secret
):
    cap = f"filesystem:read:{secret}"
    write(plugin_dir, "alpha.py", file_plugin("alpha", "alpha", [cap]))
    assert run("plugins", "grant", "alpha", cap).code == 0
    r = run("alpha", str(secret / "key"))
    assert (r.code, r.out) == (0, "alpha ran\nTOPSECRET\n")
    assert f'alpha = "file:{plugin_dir / "alpha.py"}"' in config(conduit_home)

    # aaa-evil.py sorts before alpha.py: it wins the name (alpha.py is the duplicate)
    write(plugin_dir, "aaa-evil.py", file_plugin("alpha", "evil", [cap]))
    r = run("alpha", str(secret / "key"))
    assert r.code == EXIT_PLUGIN_LOAD
    assert "evil ran" not in r.out and "TOPSECRET" not in r.out
    lines = r.err.splitlines()
    assert lines[0].startswith("conduit: warning: skipped plugin 'alpha'")  # the duplicate
    assert lines[1] == not_granted("alpha", [cap])
    assert lines[2] == (
        "hint: the grants of 'alpha' were given to another plugin, file "
        f"{plugin_dir / 'alpha.py'}; this one is file {plugin_dir / 'aaa-evil.py'}, and "
        "granting gives them to it instead"
    )
    # the real plugin's grant is left as it was
    assert f'alpha = "file:{plugin_dir / "alpha.py"}"' in config(conduit_home)
    report = json.loads(run("plugins", "permissions", "alpha", "--json").out)
    assert report["withheld"] == [cap]
    assert report["granted"] == []
    assert report["granted_to"] == f"file:{plugin_dir / 'alpha.py'}"


@pytest.mark.parametrize("isolation", ["in-process", pytest.param("process", marks=needs_sandbox)])
def test_a_newcomer_asking_for_nothing_gets_no_grants_either(
    run, plugin_dir, conduit_home, secret, isolation
):
    # Nothing to prompt for, so nothing is asked: the hosts must not apply the grants.
    cap = f"filesystem:read:{secret}"
    write(plugin_dir, "alpha.py", file_plugin("alpha", "alpha", [cap]))
    assert run("plugins", "grant", "alpha", cap).code == 0
    write(plugin_dir, "aaa-evil.py", file_plugin("alpha", "evil", [], isolation))
    r = run("alpha", str(secret / "key"))
    assert r.out == "evil ran\n"
    assert r.code == 1
    assert "TOPSECRET" not in r.out + r.err
    assert f"reading {secret / 'key'} is not granted" in r.err or (
        f"needs 'filesystem:read:{secret / 'key'}'" in r.err
    )


def test_the_prompt_asks_again_for_a_newcomer_and_yes_replaces_the_grants(
    plugin_dir, conduit_home, secret
):
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["CONDUIT_HOME"] = str(conduit_home)
    cap = f"filesystem:read:{secret}"
    write(plugin_dir, "alpha.py", file_plugin("alpha", "alpha", [cap]))
    assert pty_run([*CONDUIT, "plugins", "grant", "alpha", cap], None, env)[0] == 0
    write(plugin_dir, "aaa-evil.py", file_plugin("alpha", "evil", [cap]))

    code, _, text = pty_run([*CONDUIT, "alpha", str(secret / "key")], "n", env)
    assert code == EXIT_PLUGIN_LOAD
    assert "TOPSECRET" not in text
    assert (
        "├ ! Not the plugin you granted before: the grants of 'alpha' were given to another "
        f"plugin, file {plugin_dir / 'alpha.py'}; this one is file "
        f"{plugin_dir / 'aaa-evil.py'}, and granting gives them to it instead." in text
    )
    assert f'alpha = "file:{plugin_dir / "alpha.py"}"' in config(conduit_home)

    code, _, text = pty_run([*CONDUIT, "alpha"], "y", env)
    assert code == 0
    assert text.splitlines()[-1] == "evil ran"
    assert f'alpha = "file:{plugin_dir / "aaa-evil.py"}"' in config(conduit_home)
    assert f'alpha = ["{cap}"]' in config(conduit_home)


def test_editing_a_granted_file_in_place_keeps_its_grants(run, plugin_dir, conduit_home, secret):
    cap = f"filesystem:read:{secret}"
    write(plugin_dir, "alpha.py", file_plugin("alpha", "alpha", [cap]))
    assert run("plugins", "grant", "alpha", cap).code == 0
    write(plugin_dir, "alpha.py", file_plugin("alpha", "alpha v2", [cap]))
    r = run("alpha", str(secret / "key"))
    assert (r.code, r.out) == (0, "alpha v2 ran\nTOPSECRET\n")


def test_grants_of_an_older_config_are_bound_on_first_use(run, plugin_dir, conduit_home, secret):
    cap = f"filesystem:read:{secret}"
    write(plugin_dir, "alpha.py", file_plugin("alpha", "alpha", [cap]))
    (conduit_home / "config.toml").write_text(f'[grants]\nalpha = ["{cap}"]\n')
    r = run("alpha", str(secret / "key"))
    assert (r.code, r.out) == (0, "alpha ran\nTOPSECRET\n")  # still works
    assert f'alpha = "file:{plugin_dir / "alpha.py"}"' in config(conduit_home)  # bound now
    write(plugin_dir, "aaa-evil.py", file_plugin("alpha", "evil", [cap]))
    r = run("alpha", str(secret / "key"))
    assert r.code == EXIT_PLUGIN_LOAD
    assert "TOPSECRET" not in r.out


def test_unbound_grants_apply_to_nobody_while_several_plugins_claim_the_name(
    run, plugin_dir, conduit_home, secret
):
    cap = f"filesystem:read:{secret}"
    write(plugin_dir, "alpha.py", file_plugin("alpha", "alpha", [cap]))
    write(plugin_dir, "aaa-evil.py", file_plugin("alpha", "evil", [cap]))
    (conduit_home / "config.toml").write_text(f'[grants]\nalpha = ["{cap}"]\n')
    r = run("alpha", str(secret / "key"))
    assert r.code == EXIT_PLUGIN_LOAD
    assert "TOPSECRET" not in r.out
    assert r.err.splitlines()[-1] == (
        "hint: several plugins claim the name 'alpha' and its grants were never bound to one "
        "of them: they apply to none until you grant them to this one "
        f"(file {plugin_dir / 'aaa-evil.py'})"
    )
    assert "granted-to" not in config(conduit_home)


def test_revoking_everything_forgets_the_binding(run, plugin_dir, conduit_home, secret):
    cap = f"filesystem:read:{secret}"
    write(plugin_dir, "alpha.py", file_plugin("alpha", "alpha", [cap]))
    assert run("plugins", "grant", "alpha", cap).code == 0
    assert "[granted-to]" in config(conduit_home)
    assert run("plugins", "revoke", "alpha", "--all").code == 0
    assert "alpha" not in config(conduit_home)


def test_a_bad_identity_in_the_config_is_one_clear_line(run, plugin_dir, conduit_home):
    (conduit_home / "config.toml").write_text('[granted-to]\nalpha = "somewhere"\n')
    r = run("plugins", "list")
    assert r.code == EXIT_CONFIG
    path = conduit_home / "config.toml"
    assert r.err.splitlines()[0] == (
        f"error: {path}:2: granted-to.alpha: 'somewhere' is not a plugin identity: write "
        "KIND:ORIGIN with KIND one of entry-point, file, wasm, executable"
    )


# -- installed distributions --------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory of installed distributions on sys.path (and PYTHONPATH for hosts)."""
    folder = tmp_path / "site"
    folder.mkdir()
    # not sys.path[0]: Conduit leaves the script's directory out of discovery
    monkeypatch.setattr(sys, "path", [sys.path[0], str(folder), *sys.path[1:]])
    monkeypatch.setenv("PYTHONPATH", str(folder))
    return folder


def install(site: Path, dist: str, version: str, plugin: str, caps: list[str]) -> None:
    """Install (or upgrade to) ``dist`` ``version``, a distribution with one plugin."""
    pkg = dist.replace("-", "_")
    for old in site.glob(f"{pkg}-*.dist-info"):
        shutil.rmtree(old)
    shutil.rmtree(site / pkg, ignore_errors=True)
    (site / pkg).mkdir()
    (site / pkg / "__init__.py").write_text("")
    listed = ", ".join(json.dumps(c) for c in caps)
    (site / pkg / "conduit-plugin.toml").write_text(
        textwrap.dedent(f"""\
            api = ">=1.0,<2"
            description = "{dist} {version}"
            capabilities = [{listed}]

            [[commands]]
            name = "{plugin}"
            help = "Probe."
            """)
    )
    (site / pkg / "plugin.py").write_text(
        PROBE.replace("NAME", plugin).replace("TAG", f"{dist} {version}")
    )
    info = site / f"{pkg}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(
        f"[conduit.plugins]\n{plugin} = {pkg}.plugin:ThePlugin\n"
    )
    for module in [m for m in sys.modules if m == pkg or m.startswith(pkg + ".")]:
        del sys.modules[module]  # as a new interpreter would
    importlib.invalidate_caches()


def test_upgrading_a_distribution_keeps_its_grants(run, site, conduit_home, secret):
    cap = f"filesystem:read:{secret}"
    install(site, "ztool", "1.0", "tool", [cap])
    assert run("plugins", "grant", "tool", cap).code == 0
    assert 'tool = "entry-point:ztool"' in config(conduit_home)
    assert run("tool", str(secret / "key")).out == "ztool 1.0 ran\nTOPSECRET\n"

    install(site, "ztool", "2.0", "tool", [cap])
    r = run("tool", str(secret / "key"))
    assert (r.code, r.out) == (0, "ztool 2.0 ran\nTOPSECRET\n")
    assert "grants bound to: distribution ztool" in run("plugins", "permissions", "tool").out

    # asking for more still asks, as before (here: refused, no terminal)
    install(site, "ztool", "3.0", "tool", [cap, "env:read:HOME"])
    r = run("tool")
    assert r.code == EXIT_PLUGIN_LOAD
    assert r.err.splitlines() == [not_granted("tool", ["env:read:HOME"])]


def test_another_distribution_claiming_a_granted_name_is_refused(run, site, conduit_home, secret):
    cap = f"filesystem:read:{secret}"
    install(site, "ztool", "1.0", "tool", [cap])
    assert run("plugins", "grant", "tool", cap).code == 0
    # aaa_evil/conduit-plugin.toml sorts before ztool's: it takes the name
    install(site, "aaa-evil", "1.0", "tool", [cap])
    r = run("tool", str(secret / "key"))
    assert r.code == EXIT_PLUGIN_LOAD
    assert "TOPSECRET" not in r.out
    assert r.err.splitlines()[-1] == (
        "hint: the grants of 'tool' were given to another plugin, distribution ztool; this "
        "one is distribution aaa-evil, and granting gives them to it instead"
    )
    # the printed command gives them to the newcomer, explicitly
    r = run("plugins", "grant", "tool", cap)
    assert r.code == 0
    assert 'tool = "entry-point:aaa-evil"' in config(conduit_home)
    assert run("tool").out == "aaa-evil 1.0 ran\n"


# -- WebAssembly ---------------------------------------------------------------------------------


def test_a_webassembly_plugin_is_bound_to_its_module(run, run_subprocess, plugin_dir, conduit_home):
    # The modules run in a subprocess: a wasmtime engine made in pytest's process this
    # early has its trap handlers replaced by later tests (test_wasm's traps then crash).
    wasmtime = pytest.importorskip("wasmtime")

    def module(text: str) -> bytes:
        return wasmtime.wat2wasm(
            '(module (import "wasi_snapshot_preview1" "fd_write" '
            "(func $w (param i32 i32 i32 i32) (result i32)))"
            f' (memory (export "memory") 1) (data (i32.const 16) "{text}")'
            ' (func (export "_start") (i32.store (i32.const 0) (i32.const 16))'
            f" (i32.store (i32.const 4) (i32.const {len(text)}))"
            " (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"
        )

    (plugin_dir / "mod.wasm").write_bytes(module("first"))
    (plugin_dir / "mod.toml").write_text(
        'api = ">=1.0"\ndescription = "m"\ncapabilities = ["env:read:HOME"]\n'
        '[[commands]]\nname = "mod"\nhelp = "Run."\n'
    )
    assert run("plugins", "grant", "mod", "env:read:HOME").code == 0
    assert "granted-to" in config(conduit_home)
    assert run_subprocess("mod").out == "first"
    # another module at the same path is another plugin: asked again
    (plugin_dir / "mod.wasm").write_bytes(module("other"))
    r = run_subprocess("mod")
    assert r.code == EXIT_PLUGIN_LOAD
    assert r.err.splitlines()[0] == not_granted("mod", ["env:read:HOME"])
    assert r.err.splitlines()[1].startswith(
        "hint: the grants of 'mod' were given to another plugin, WebAssembly module sha256:"
    )


# -- executables ---------------------------------------------------------------------------------


def test_an_executable_earlier_on_path_does_not_get_the_grants(run, tmp_path, monkeypatch):
    manifest = {
        "name": "ex",
        "api": ">=1.0,<2",
        "protocol": "jsonrpc",
        "description": "ex",
        "capabilities": ["env:read:HOME"],
        "commands": [{"name": "ex", "help": "Run ex."}],
    }
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
    path = second / "conduit-ex"
    path.write_text(f"#!/bin/sh\necho '{json.dumps(manifest)}'\n")
    path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{first}{os.pathsep}{second}{os.pathsep}{os.environ['PATH']}")
    assert run("plugins", "grant", "ex", "env:read:HOME").code == 0
    report = json.loads(run("plugins", "permissions", "ex", "--json").out)
    assert report["granted_to"] == report["identity"] == f"executable:{path}"
    shutil.copy2(path, first / "conduit-ex")  # the same program, found first elsewhere
    r = run("ex")
    assert r.code == EXIT_PLUGIN_LOAD
    assert r.err.splitlines() == [
        not_granted("ex", ["env:read:HOME"]),
        f"hint: the grants of 'ex' were given to another plugin, executable {path}; this "
        f"one is executable {first / 'conduit-ex'}, and granting gives them to it instead",
    ]
