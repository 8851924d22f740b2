"""The compiled-artifact cache is bounded (``[wasm] cache-mb``, least recently used
first), ``plugins cache prune`` empties it of what nothing uses, a compile on a terminal
says so, and ``plugins build`` of the same source gives the same module."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from _wasmbuild import (
    CACHE_HIT,
    EXAMPLE,
    build_cache,
    componentize_py,
    copy_example,
    plugins_build,
    seed_cache,
)

from _factory import pty_run

wasmtime = pytest.importorskip("wasmtime")

#: each module carries this much data, so that its artifact weighs about as much
PAD = 300_000


def padded(text: str, seed: int) -> str:
    """A WASI command that prints ``text``, with PAD bytes of data no compiler can drop
    (printable, pseudo-random): four of its artifacts do not fit in 1 MB."""
    rng = random.Random(seed)
    pad = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(PAD))
    return f"""(module
 (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
 (memory (export "memory") 8)
 (data (i32.const 100) "{text}\\0a")
 (data (i32.const 4096) "{pad}")
 (func (export "_start")
   (i32.store (i32.const 0) (i32.const 100))
   (i32.store (i32.const 4) (i32.const {len(text) + 1}))
   (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"""


def install(plugin_dir: Path, name: str, seed: int) -> str:
    """``NAME.wasm`` (printing NAME) and its manifest; returns the module's sha256."""
    data = wasmtime.wat2wasm(padded(name, seed))
    (plugin_dir / f"{name}.wasm").write_bytes(data)
    (plugin_dir / f"{name}.toml").write_text(
        f'api = ">=1.0"\n[[commands]]\nname = "{name}"\nhelp = "Print {name}."\n'
    )
    return hashlib.sha256(data).hexdigest()


def artifacts(home: Path) -> dict[str, Path]:
    """module sha256 -> its compiled artifact, from the meta files."""
    found = {}
    for meta in (home / "cache" / "wasm").glob("*.meta"):
        digest = meta.read_bytes().decode().rsplit("module=", 1)[1].strip()
        found[digest] = meta.with_suffix(".cwasm")
    return found


def cache_bytes(home: Path) -> int:
    return sum(p.stat().st_size for p in (home / "cache" / "wasm").iterdir() if p.is_file())


def test_the_cache_stays_under_its_cap_and_drops_the_least_recently_used(
    plugin_dir, conduit_home, run
):
    (conduit_home / "config.toml").write_text("[wasm]\ncache-mb = 1\n")
    digests = {name: install(plugin_dir, name, seed) for seed, name in enumerate("abc")}
    for name in "abc":
        assert run(name).out == f"{name}\n"
    cached = artifacts(conduit_home)
    assert set(cached) == set(digests.values())
    assert cached[digests["a"]].stat().st_size > PAD  # three fit, a fourth does not
    # a is the oldest, then b, then c; using a makes it the most recent
    for age, name in enumerate("abc"):
        os.utime(cached[digests[name]], (1_000_000 + age, 1_000_000 + age))
    assert run("a").out == "a\n"
    assert cached[digests["a"]].stat().st_mtime > 1_000_002
    digests["d"] = install(plugin_dir, "d", 3)
    assert run("d").out == "d\n"
    cached = artifacts(conduit_home)
    assert set(cached) == {digests["a"], digests["c"], digests["d"]}  # b went, not a
    assert not any(p.name.endswith(".cwasm") for p in cached.values() if not p.exists())
    assert cache_bytes(conduit_home) <= 1 << 20


def test_the_cache_cap_is_validated(conduit_home, run):
    (conduit_home / "config.toml").write_text("[wasm]\ncache-mb = 0\n")
    result = run("plugins", "list")
    assert result.code == 4
    assert "wasm.cache-mb: expected an integer >= 1" in result.err


def test_cache_prune_removes_what_no_installed_plugin_uses(plugin_dir, conduit_home, run):
    digests = {name: install(plugin_dir, name, seed) for seed, name in enumerate("ab")}
    for name in "ab":
        assert run(name).out == f"{name}\n"
    cached = artifacts(conduit_home)
    gone = cached[digests["b"]]
    size = gone.stat().st_size
    (plugin_dir / "b.wasm").unlink()
    (plugin_dir / "b.toml").unlink()
    result = run("plugins", "cache", "prune")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == f"removed {gone} ({size / 1024:.1f} KB)"
    assert lines[-1].startswith("freed ")
    held = cache_bytes(conduit_home)
    assert lines[-1].endswith(f"the cache holds {held / 1024:.1f} KB in {gone.parent}")
    assert set(artifacts(conduit_home)) == {digests["a"]}
    # what stays still serves: a runs from its artifact
    assert run("a").out == "a\n"
    result = run("plugins", "cache", "prune", "--all")
    assert result.code == 0, result.err
    assert f"removed {cached[digests['a']]} (" in result.out
    assert [p for p in (conduit_home / "cache" / "wasm").iterdir() if p.is_file()] == []
    assert "the cache holds 0 B" in result.out


def test_compiling_says_so_on_a_terminal_once(plugin_dir, conduit_home):
    install(plugin_dir, "hello", 0)
    env = {**os.environ, "CONDUIT_HOME": str(conduit_home)}
    argv = [sys.executable, "-m", "conduit", "hello"]
    note = "conduit: compiling plugin 'hello' for this machine (once)..."
    code, _, shown = pty_run(argv, None, env)
    assert code == 0, shown
    assert note in shown
    assert shown.index(note) < shown.index("hello\n", shown.index(note) + len(note))
    code, _, shown = pty_run(argv, None, env)  # compiled: nothing to say
    assert code == 0, shown
    assert "compiling" not in shown


def test_compiling_is_quiet_when_stderr_is_not_a_terminal(plugin_dir, conduit_home):
    install(plugin_dir, "hello", 0)
    proc = subprocess.run(
        [sys.executable, "-m", "conduit", "hello"],
        capture_output=True,
        text=True,
        env={**os.environ, "CONDUIT_HOME": str(conduit_home)},
        timeout=120,
        check=False,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "hello\n", "")
    assert artifacts(conduit_home)  # it did compile


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_building_the_same_source_twice_gives_the_same_module(tmp_path, conduit_home, pyhash_built):
    """The first build is the session's (``pyhash_built``: componentize-py, into its home's
    build cache); this one builds the same source, copied elsewhere, in a home with that
    cache: the module built the first time, byte for byte, and its artifact reused."""
    seed_cache(conduit_home, pyhash_built, compiled=True)
    source = copy_example(tmp_path / "pyhash")
    out = tmp_path / "out"
    proc = plugins_build(conduit_home, str(source), "-o", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert CACHE_HIT in proc.stdout
    first = (pyhash_built / "plugins" / "pyhash.wasm").read_bytes()
    assert (out / "pyhash.wasm").read_bytes() == first
    assert "already precompiled" in proc.stdout  # so the artifact is reused
    assert sorted(p.name for p in source.iterdir()) == ["app.py", "conduit-plugin.toml"]
    assert [p.name for p in build_cache(conduit_home)] == [
        p.name for p in build_cache(pyhash_built)
    ]


def test_the_build_key_follows_the_source_not_its_bytecode(tmp_path):
    from conduit.builtins.plugins._wasm import _build_key

    tool = componentize_py()
    source = copy_example(tmp_path / "pyhash")
    key = _build_key(str(source), tool)
    (source / "__pycache__").mkdir()
    (source / "__pycache__" / "app.cpython-312.pyc").write_bytes(b"whatever")
    assert _build_key(str(source), tool) == key
    (source / "app.py").write_text((source / "app.py").read_text() + "\n# changed\n")
    assert _build_key(str(source), tool) != key
    (source / "app.py").write_text((EXAMPLE / "app.py").read_text())
    (source / "helper.py").write_text("")
    assert _build_key(str(source), tool) != key
