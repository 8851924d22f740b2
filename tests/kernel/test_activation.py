"""Activation events: each one activates its plugin when it should (in process) and leaves
it unimported when it should not (a fresh interpreter, checked through sys.modules)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conduit.indexer.build import load
from conduit.kernel import Kernel
from conduit.kernel.activation import triggered
from conduit.paths import resolve, workspace_dirs
from conduit.timing import Profile

from _factory import imported_by, manifest_block, simple_plugin, write

WATCHER = """
import click
from conduit.sdk import Plugin

class Watcher(Plugin):
    def boot(self, ctx):
        ctx.register_hook("before_command", lambda command: click.echo(f"watcher saw {command}"))
"""


def watcher(plugin_dir: Path, activation: list[str], name: str = "watcher") -> None:
    events = ", ".join(f'"{e}"' for e in activation)
    toml = f'name = "{name}"\napi = ">=1.0,<2"\nactivation = [{events}]\n'
    write(plugin_dir, f"{name}.py", manifest_block(toml) + WATCHER)


def kernel() -> Kernel:
    paths = resolve()
    return Kernel(load(paths, Profile(False)), paths)


@pytest.fixture
def target(plugin_dir: Path) -> None:
    write(plugin_dir, "target.py", simple_plugin("target", ("build", "stack status")))


CASES = [
    # (activation, environment, files in the workspace, command, fires)
    (["command:build"], {}, [], ["build"], "command:build"),
    (["command:build"], {}, [], ["stack", "status"], None),
    (["command:stack status"], {}, [], ["stack", "status"], "command:stack status"),
    (["startup"], {}, [], ["build"], "startup"),
    (["env:CI"], {"CI": "1"}, [], ["build"], "env:CI"),
    (["env:CI"], {"CI": ""}, [], ["build"], None),
    (
        ["env:CONDUIT_ENV=production"],
        {"CONDUIT_ENV": "production"},
        [],
        ["build"],
        "env:CONDUIT_ENV=production",
    ),
    (["env:CONDUIT_ENV=production"], {"CONDUIT_ENV": "staging"}, [], ["build"], None),
    (["file:pyproject.toml"], {}, ["pyproject.toml"], ["build"], "file:pyproject.toml"),
    (["file:pyproject.toml"], {}, ["setup.py"], ["build"], None),
    (["file:*.tf"], {}, ["infra/../main.tf"], ["build"], "file:*.tf"),
    (["file:**/Cargo.toml"], {}, ["crates/a/Cargo.toml"], ["build"], "file:**/Cargo.toml"),
]
IDS = [
    "command",
    "command-other",
    "command-nested",
    "startup",
    "env-set",
    "env-empty",
    "env-value",
    "env-other-value",
    "file",
    "file-absent",
    "file-glob",
    "file-recursive",
]


def _workspace(tmp_path: Path, files: list[str]) -> Path:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    sub = repo / "src" / "pkg"
    sub.mkdir(parents=True)
    for f in files:
        path = (repo / f).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    return sub  # run from a subdirectory: the workspace reaches up to the repo root


@pytest.mark.parametrize(("activation", "env", "files", "command", "fires"), CASES, ids=IDS)
def test_event_activates_in_process(
    target, plugin_dir, tmp_path, monkeypatch, activation, env, files, command, fires
):
    watcher(plugin_dir, activation)
    cwd = _workspace(tmp_path, files)
    k = kernel()
    environ = {"PATH": "/usr/bin", **env}
    code = k.run("target", command, environ=environ, cwd=str(cwd))
    assert code == 0
    if fires:
        assert k.reasons["watcher"] == fires
    else:
        assert "watcher" not in k.states
    k.shutdown()


@pytest.mark.parametrize(("activation", "env", "files", "command", "fires"), CASES, ids=IDS)
def test_event_imports_in_subprocess_only_when_it_fires(
    target, plugin_dir, tmp_path, activation, env, files, command, fires
):
    watcher(plugin_dir, activation)
    cwd = _workspace(tmp_path, files)
    for var in ("CI", "CONDUIT_ENV"):
        env.setdefault(var, "")
    code, modules = imported_by(*command, env=env, cwd=str(cwd))
    assert code == 0
    assert "conduit_plugin_target" in modules
    assert ("conduit_plugin_watcher" in modules) == bool(fires)


def test_event_hook_activation(plugin_dir, run):
    watcher(plugin_dir, ["event:before_command"])
    write(plugin_dir, "target.py", simple_plugin("target", ("build",)))
    r = run("build")
    assert r.out == "watcher saw build\ntarget build\n"


def test_event_hook_activation_not_imported_without_the_hook(plugin_dir):
    watcher(plugin_dir, ["event:on_sync"])
    write(plugin_dir, "target.py", simple_plugin("target", ("build",)))
    code, modules = imported_by("build")
    assert code == 0
    assert "conduit_plugin_watcher" not in modules
    # no implementation of any hook was registered: pluggy is never imported
    assert "pluggy" not in modules


SERVICE_USER = """
import click
from conduit.sdk import Plugin

@click.command()
def greet():
    click.echo(click.get_current_context().obj or "")

class User(Plugin):
    def boot(self, ctx):
        self.ctx = ctx
        @click.command("greet")
        def greet():
            click.echo(ctx.service("greeting", str))
        ctx.register_command(greet)
"""

PROVIDER = """
from conduit.sdk import Plugin

class Provider(Plugin):
    def boot(self, ctx):
        ctx.register_service("greeting", lambda: "hello from the provider")
"""


def test_service_event_activates_provider_lazily(plugin_dir, run):
    write(
        plugin_dir,
        "user.py",
        manifest_block('name = "user"\napi = ">=1.0,<2"\n[[commands]]\nname = "greet"')
        + SERVICE_USER,
    )
    write(
        plugin_dir,
        "provider.py",
        manifest_block('name = "provider"\napi = ">=1.0,<2"\n[provides]\nservices = ["greeting"]')
        + PROVIDER,
    )
    watcher(plugin_dir, ["service:greeting"], name="observer")
    r = run("greet")
    assert (r.code, r.out, r.err) == (0, "hello from the provider\n", "")
    # not asked for: neither the provider nor the observer is imported
    write(plugin_dir, "other.py", simple_plugin("other", ("other",)))
    code, modules = imported_by("other")
    assert code == 0
    assert not {"conduit_plugin_provider", "conduit_plugin_observer"} & modules
    code, modules = imported_by("greet")
    assert {"conduit_plugin_provider", "conduit_plugin_observer"} <= modules


def test_failed_side_activation_is_a_warning(plugin_dir, run, monkeypatch):
    src = simple_plugin(
        "flaky",
        (),
        extra_toml='activation = ["env:CI"]',
        boot_prefix="        raise RuntimeError('no')\n",
    )
    write(plugin_dir, "flaky.py", src)
    write(plugin_dir, "target.py", simple_plugin("target", ("build",)))
    monkeypatch.setenv("CI", "1")
    r = run("build")
    assert r.code == 0 and r.out == "target build\n"
    assert r.err == (
        "conduit: warning: plugin 'flaky': not activated for env:CI: failed to boot:"
        " RuntimeError: no (run with --debug for the traceback; 'conduit plugins "
        "disable flaky' turns it off)\n"
    )


def test_workspace_dirs(tmp_path):
    (tmp_path / "r" / ".git").mkdir(parents=True)
    deep = tmp_path / "r" / "a" / "b"
    deep.mkdir(parents=True)
    assert workspace_dirs(str(deep)) == [str(deep), str(deep.parent), str(tmp_path / "r")]
    outside = tmp_path / "plain"
    outside.mkdir()
    assert workspace_dirs(str(outside)) == [str(outside)]


def test_triggered_reads_only_the_event_tables():
    index = {
        "events": {
            "startup": ["s"],
            "env": [("e", "X", None)],
            "file": [],
            "command": {"go": ["c"]},
            "event": {},
            "service": {},
        }
    }
    fired = triggered(
        index,
        command=["go"],
        environ={"X": "1"},
        cwd="/",  # type: ignore[arg-type]
        usable={"s", "c"},
    )
    assert fired == [("s", "startup"), ("c", "command:go")]
