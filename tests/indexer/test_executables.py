"""`conduit-NAME` executables on PATH or in the plugin directory (the gh/kubectl model)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest


def script(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


# A pass-through command writes to the terminal's file descriptors, not to sys.stdout:
# these tests run Conduit in a subprocess to see its real output.


def test_pass_through_executable_in_the_plugin_dir(run, run_subprocess, plugin_dir):
    script(plugin_dir, "conduit-greet", 'echo "args: $*"\necho "err" >&2\nexit 3\n')
    r = run_subprocess("greet", "a", "b c")
    assert (r.code, r.out, r.err) == (3, "args: a b c\n", "err\n")
    assert "greet" in run("--help").out
    rows = {p["name"]: p for p in json.loads(run("plugins", "list", "--json").out)}
    assert rows["greet"]["source"] == "executable"


def test_executable_on_path(run_subprocess, tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script(bindir, "conduit-where", "pwd\n")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    assert run_subprocess("where").out == f"{tmp_path}\n"
    # a new executable on PATH is noticed without any command
    script(bindir, "conduit-other", "echo other\n")
    assert run_subprocess("other").out == "other\n"


def test_manifest_probe_is_cached(run, plugin_dir, tmp_path):
    counter = tmp_path / "probes"
    script(plugin_dir, "conduit-count", f'echo probe >> "{counter}"\nexit 1\n')
    run("--help")
    run("--help")
    assert counter.read_text().count("probe") == 1  # probed once, at the rebuild


def test_invalid_manifest_is_a_skipped_plugin(run, plugin_dir):
    manifest = {"name": "bad", "api": ">=1.0,<2", "protocol": "jsonrpc", "comands": []}
    script(plugin_dir, "conduit-bad", f"echo '{json.dumps(manifest)}'\n")
    r = run("--help")
    assert r.code == 0
    line = next(x for x in r.err.splitlines() if "skipped plugin 'bad'" in x)
    assert "conduit-bad --conduit-manifest: comands: unknown field" in line


@pytest.mark.parametrize(("mode", "listed"), [(0o644, False), (0o755, True)])
def test_only_executable_files_are_plugins(run, plugin_dir, mode, listed):
    path = plugin_dir / "conduit-notes"
    path.write_text("just notes")
    path.chmod(mode)
    assert ("Run conduit-notes." in run("--help").out) == listed


JS_PLUGIN = Path(__file__).resolve().parents[2] / "examples" / "js-plugin" / "conduit-hello-js"


@pytest.fixture
def js_plugin(plugin_dir: Path) -> Path:
    import shutil

    if shutil.which("node") is None:
        if os.environ.get("CI"):
            pytest.fail("node is missing: .ci/run should have installed it")
        pytest.skip("node is not installed")
    target = plugin_dir / JS_PLUGIN.name
    shutil.copy(JS_PLUGIN, target)
    target.chmod(0o755)
    return target


def test_javascript_plugin_speaks_the_protocol(run, js_plugin, tmp_path):
    listed = {p["name"]: p for p in json.loads(run("plugins", "list", "--json").out)}
    assert listed["hello-js"]["source"] == "executable"
    assert listed["hello-js"]["isolation"] == "process"
    # it declares filesystem:read and filesystem:write: nothing runs until they are granted
    assert run("hello-js", "greet").code == 3
    assert run("plugins", "grant", "hello-js", "--requested").code == 0
    r = run("hello-js", "greet", "--name", "Ada")
    assert (r.code, r.out) == (0, "Hello, Ada!\n"), r.err
    data = tmp_path / "x.json"
    data.write_text('{"b": 1, "a": [1, 2]}')
    r = run("hello-js", "json-pretty", str(data), "--sort-keys")
    assert r.code == 0
    assert json.loads(r.out) == {"a": [1, 2], "b": 1}
    assert r.out.index('"a"') < r.out.index('"b"')
    assert run("hello-js", "nope").code == 2


def test_python_plugin_uses_a_javascript_service(run, js_plugin, plugin_dir):
    from _factory import manifest_block, write

    user = manifest_block('name = "user"\napi = ">=1.0,<2"\n[[commands]]\nname = "shout"') + (
        "import click\nfrom conduit.sdk import Plugin\n"
        "class P(Plugin):\n    def boot(self, ctx):\n"
        "        @click.command('shout')\n        @click.argument('text')\n"
        "        def shout(text):\n            click.echo(ctx.service('js.upper').upper(text))\n"
        "        ctx.register_command(shout)\n"
    )
    write(plugin_dir, "user.py", user)
    assert run("plugins", "grant", "hello-js", "--requested").code == 0
    # the guarded in-process plugin asks for the service; the kernel (not the plugin)
    # starts the JavaScript host, so the guard does not stop it
    r = run("shout", "quiet words")
    assert (r.code, r.out) == (0, "QUIET WORDS\n"), r.err


def test_javascript_plugin_info(run, js_plugin):
    info = json.loads(run("plugins", "info", "hello-js", "--json", "--no-load").out)
    assert info["version"] == "1.0.0"
    assert info["protocol"] == "jsonrpc"
    text = run("plugins", "info", "hello-js", "--no-load").out
    assert f"entry:        {js_plugin} (JSON-RPC on stdin/stdout)" in text


def test_a_relative_path_entry_does_not_change_the_fingerprint(tmp_path, monkeypatch):
    # Relative PATH entries are not searched for executables, so changing directory
    # must not make the index look stale (a rebuild probes every executable).
    from conduit.index import fingerprint
    from conduit.paths import resolve

    (tmp_path / "a" / "bin").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    monkeypatch.setenv("PATH", f"bin{os.pathsep}{os.environ['PATH']}")
    paths = resolve()
    monkeypatch.chdir(tmp_path / "a")
    here = fingerprint(paths)
    monkeypatch.chdir(tmp_path / "b")
    assert fingerprint(paths) == here
