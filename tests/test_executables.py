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


@pytest.mark.parametrize("mode", [0o644, 0o755])
def test_non_executable_files_are_ignored(run, plugin_dir, mode):
    path = plugin_dir / "conduit-notes"
    path.write_text("just notes")
    path.chmod(mode)
    if mode == 0o644:
        assert "notes" not in run("--help").out
