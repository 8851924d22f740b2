"""A Python plugin built into a component with componentize-py, run in the wasm host.

The example plugin (examples/wasm/pyhash) is built once per test session with
``conduit plugins build`` and precompiled into a session cache (``pyhash_built``,
tests/_wasmbuild.py); each test copies the plugin and the compiled artifact into its own
CONDUIT_HOME.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conduit.errors import ConduitError
from conduit.indexer.build import load
from conduit.kernel import Kernel
from conduit.paths import resolve
from conduit.timing import Profile

from _factory import hello_server

pytest.importorskip("wasmtime")
# Building and first compiling an 18 MB component takes seconds on a quiet machine and
# minutes on a busy one: the timeout covers the session fixture.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture
def built(pyhash_built: Path) -> Path:
    """A CONDUIT_HOME-like directory with pyhash installed and precompiled: the session's
    build (tests/_wasmbuild.py), which runs componentize-py."""
    return pyhash_built


@pytest.fixture
def pyhash(built: Path, conduit_home: Path) -> Path:
    shutil.copytree(built / "plugins", conduit_home / "plugins")
    shutil.copytree(built / "cache" / "wasm", conduit_home / "cache" / "wasm")
    return conduit_home


def configure(home: Path, text: str) -> None:
    (home / "config.toml").write_text(text)


def test_hash_a_granted_file(pyhash, tmp_path, run, monkeypatch):
    (tmp_path / "data.txt").write_bytes(b"hello\n")
    monkeypatch.chdir(tmp_path)
    configure(pyhash, '[grants]\npyhash = ["filesystem:read:${workspace}"]\n')
    result = run("pyhash", "data.txt")
    assert result.code == 0, result.err
    hello = b"hello\n"
    assert result.out == f"{hashlib.sha256(hello).hexdigest()}  data.txt\n"
    result = run("pyhash", "-a", "md5", str(tmp_path / "data.txt"))
    assert result.out == f"{hashlib.md5(hello).hexdigest()}  {tmp_path / 'data.txt'}\n"


def test_paths_name_the_files_they_name(pyhash, tmp_path, run, monkeypatch):
    # docs/wasm.md, "Paths": relative paths against the workspace whatever the grant's
    # shape, absolute paths to the file they name or to nothing. The sandbox alone: the
    # manifest asks for nothing, so that any grant lets it start.
    toml = pyhash / "plugins" / "pyhash.toml"
    toml.write_text(toml.read_text().replace('capabilities = ["filesystem:read:${workspace}"]', ""))
    ws = tmp_path / "ws"
    (ws / "sub").mkdir(parents=True)
    (ws / "notes.txt").write_bytes(b"notes")
    (ws / "sub" / "s.txt").write_bytes(b"sub")
    (ws / "conduit-test-outside").mkdir()
    (ws / "conduit-test-outside" / "secret.txt").write_bytes(b"the workspace's copy")
    monkeypatch.chdir(ws)

    def pyhash_with(grant: str, path: str) -> str:
        configure(pyhash, f'[grants]\npyhash = ["{grant}"]\n')
        result = run("pyhash", path)
        if result.code == 0:
            return result.out
        assert result.code == 1, result.err
        assert "(is it under a granted directory?)" in result.err
        return "refused"

    def sha(data: bytes, path: str) -> str:
        return f"{hashlib.sha256(data).hexdigest()}  {path}\n"

    outside = "/conduit-test-outside/secret.txt"
    assert pyhash_with("filesystem:read:${workspace}", outside) == "refused"
    assert pyhash_with("filesystem:read:${workspace}", f"{ws}/notes.txt") == sha(
        b"notes", f"{ws}/notes.txt"
    )
    assert pyhash_with("filesystem:read", "notes.txt") == sha(b"notes", "notes.txt")
    assert pyhash_with(f"filesystem:read:{tmp_path}", "notes.txt") == sha(b"notes", "notes.txt")
    assert pyhash_with("filesystem:read:${workspace}/sub", "sub/s.txt") == sha(b"sub", "sub/s.txt")
    assert pyhash_with("filesystem:read:${workspace}/sub", "notes.txt") == "refused"


def test_without_a_grant_files_are_out_of_reach(pyhash, tmp_path, run, monkeypatch):
    # The sandbox alone, whatever the manifest asks for: nothing granted, no files.
    toml = pyhash / "plugins" / "pyhash.toml"
    toml.write_text(toml.read_text().replace('capabilities = ["filesystem:read:${workspace}"]', ""))
    (tmp_path / "data.txt").write_bytes(b"hello\n")
    monkeypatch.chdir(tmp_path)
    result = run("pyhash", "data.txt")
    assert result.code == 1
    assert (
        "pyhash: data.txt: No such file or directory (is it under a granted directory?)"
        in result.err
    )


@pytest.fixture
def server() -> Iterator[int]:
    with hello_server(lambda path: b"served " + path.encode()) as port:
        yield port


def test_http_through_the_host_import_is_checked(pyhash, server, run, capsys):
    url = f"http://127.0.0.1:{server}/doc"
    configure(
        pyhash,
        f'[grants]\npyhash = ["filesystem:read:${{workspace}}", "network:http:127.0.0.1:{server}"]\n',
    )
    result = run("pyhash", url)
    assert result.code == 0, result.err
    assert result.out == f"{hashlib.sha256(b'served /doc').hexdigest()}  {url}\n"
    # Not granted: the guest gets an error from the import, and Conduit reports the
    # denial as the command's error; the same kernel then runs the plugin again.
    configure(
        pyhash,
        '[grants]\npyhash = ["filesystem:read:${workspace}", "network:http:example.com"]\n',
    )
    paths = resolve()
    kernel = Kernel(load(paths, Profile(False)), paths)
    try:
        with pytest.raises(ConduitError) as info:
            kernel.run("pyhash", ["pyhash", url])
        assert info.value.message == (
            f"plugin 'pyhash': denied: an HTTP request to 127.0.0.1:{server}: "
            f"network:http:127.0.0.1:{server} is not granted"
        )
        assert info.value.exit_code == 3
        capsys.readouterr()
        assert kernel.run("pyhash", ["pyhash", "--help"]) == 0
        assert "usage: conduit pyhash" in capsys.readouterr().out
    finally:
        kernel.shutdown()


def test_stdin_goes_to_the_component(pyhash, conduit_home):
    configure(pyhash, '[grants]\npyhash = ["filesystem:read:${workspace}"]\n')

    def conduit(*args: str, data: bytes) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "conduit", *args],
            input=data,
            capture_output=True,
            timeout=120,
            check=False,
        )

    encoded = conduit("pyb64", data=b"sandboxed\n")
    assert encoded.returncode == 0, encoded.stderr
    assert encoded.stdout == b"c2FuZGJveGVkCg==\n"
    decoded = conduit("pyb64", "-d", data=encoded.stdout)
    assert decoded.stdout == b"sandboxed\n"
    hashed = conduit("pyhash", data=b"abc")
    assert hashed.stdout.decode() == f"{hashlib.sha256(b'abc').hexdigest()}  -\n"


def build_from(source: Path, run, built: Path, conduit_home: Path, toml: str):  # type: ignore[no-untyped-def]
    """``plugins build`` of the built component as a prebuilt plugin.wasm, with ``toml``."""
    source.mkdir()
    shutil.copyfile(built / "plugins" / "pyhash.wasm", source / "plugin.wasm")
    (source / "conduit-plugin.toml").write_text(toml)
    shutil.copytree(built / "cache" / "wasm", conduit_home / "cache" / "wasm")
    return run("plugins", "build", str(source))


def test_build_takes_the_commands_from_the_component(built, conduit_home, tmp_path, run):
    result = build_from(
        tmp_path / "src", run, built, conduit_home, 'name = "pyhash"\napi = ">=1.0"\n'
    )
    assert result.code == 0, result.err
    assert "commands from the component: pyhash, pyb64" in result.out
    assert "already precompiled" in result.out
    help_text = run("--help").out
    assert "pyhash  Print the SHA-256 (or -a ALGO) of files, URLs or stdin." in help_text
    assert "pyb64   Base64-encode stdin (-d decodes)." in help_text


def test_build_refuses_a_manifest_that_disagrees_with_the_component(
    built, conduit_home, tmp_path, run
):
    toml = 'name = "pyhash"\napi = ">=1.0"\n[[commands]]\nname = "pyhash"\n'
    result = build_from(tmp_path / "src", run, built, conduit_home, toml)
    assert result.code == 1
    assert (
        "the manifest lists the commands pyhash, but the component describes pyhash, pyb64"
        in result.err
    )
