"""``conduit plugins health``: plugins' optional ``health()`` in every host kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _factory import simple_plugin, write


def health_plugin(name: str, body: str, isolation: str = "in-process") -> str:
    """A single-file plugin whose ``health()`` runs ``body``."""
    source = simple_plugin(name, (f"{name}-cmd",), extra_toml=f'isolation = "{isolation}"')
    method = "\n    def health(self):\n" + "".join(
        f"        {line}\n" for line in body.splitlines()
    )
    return source + method


PLUGINS = {
    "fine": "return 'ok'",
    "tired": "return ('warning', 'the cache is 95% full')",
    "broken": "raise RuntimeError('database unreachable\\nsecond line')",
    "stuck": "import time\ntime.sleep(30)",
    "odd": "return 42",
}


@pytest.fixture
def plugins(plugin_dir: Path) -> None:
    for name, body in PLUGINS.items():
        write(plugin_dir, f"{name}.py", health_plugin(name, body))
    write(plugin_dir, "plain.py", simple_plugin("plain", ("plain-cmd",)))  # no health()
    write(
        plugin_dir,
        "remote.py",
        health_plugin("remote", "return ('warning', 'from the sandbox')", "process"),
    )
    write(plugin_dir, "remotebad.py", health_plugin("remotebad", "1 / 0", "process"))
    write(
        plugin_dir,
        "remotestuck.py",
        health_plugin("remotestuck", "import time\ntime.sleep(30)", "process"),
    )


def test_every_state_in_every_python_host(run, plugins: None, conduit_home: Path) -> None:
    (conduit_home / "config.toml").write_text("[process]\ntimeout = 2\n", encoding="utf-8")
    result = run("plugins", "health", "--json", "--timeout", "1")
    assert result.code == 1, result.err  # something is failing
    assert "Traceback" not in result.out + result.err
    rows = {r["name"]: r for r in json.loads(result.out)}
    assert rows["fine"] == {"name": "fine", "host": "in-process", "status": "ok", "message": ""}
    assert (rows["tired"]["status"], rows["tired"]["message"]) == (
        "warning",
        "the cache is 95% full",
    )
    assert rows["broken"]["status"] == "failing"
    assert rows["broken"]["message"] == "health() raised RuntimeError: database unreachable"
    assert rows["stuck"]["status"] == "failing"
    assert rows["stuck"]["message"] == "health() did not answer within 1 s"
    assert rows["odd"]["status"] == "failing"
    assert rows["odd"]["message"].startswith("health() returned 42: expected 'ok'")
    assert (rows["plain"]["status"], rows["plain"]["message"]) == ("ok", "no health check")
    assert rows["plugins"]["status"] == "ok"  # built-ins too
    assert rows["remote"] == {
        "name": "remote",
        "host": "process",
        "status": "warning",
        "message": "from the sandbox",
    }
    assert rows["remotebad"]["status"] == "failing"
    assert rows["remotebad"]["message"] == "health() raised ZeroDivisionError: division by zero"
    assert rows["remotestuck"]["status"] == "failing"
    assert rows["remotestuck"]["message"] == (
        "plugin 'remotestuck': did not answer 'health' within 1 s; its host was stopped"
    )


def test_one_plugin_as_a_table(run, plugins: None) -> None:
    ok = run("plugins", "health", "tired")
    assert ok.code == 0, ok.err
    assert ok.out.splitlines() == [
        "NAME   HOST        STATUS   MESSAGE",
        "tired  in-process  warning  the cache is 95% full",
        "1 checked: 0 failing, 1 warning.",
    ]
    bad = run("plugins", "health", "broken")
    assert bad.code == 1
    assert "broken  in-process  failing  health() raised RuntimeError: database unreachable" in (
        bad.out
    )
    unknown = run("plugins", "health", "nope")
    assert unknown.code == 2
    assert unknown.err.startswith("error: no plugin named 'nope'")


def test_a_plugin_that_fails_to_load_is_failing(run, plugin_dir: Path) -> None:
    source = simple_plugin(
        "crash", ("crash-cmd",), boot_prefix="        raise OSError('no disk')\n"
    )
    write(plugin_dir, "crash.py", source)
    result = run("plugins", "health", "crash")
    assert result.code == 1
    assert "crash  in-process  failing  plugin 'crash': failed to boot: OSError: no disk" in (
        result.out
    )


def test_a_webassembly_plugin_is_ok_without_a_health_export(run, plugin_dir: Path) -> None:
    wasmtime = pytest.importorskip("wasmtime")
    wat = '(module (memory (export "memory") 1) (func (export "_start")))'
    (plugin_dir / "mod.wasm").write_bytes(wasmtime.wat2wasm(wat))
    (plugin_dir / "mod.toml").write_text(
        'api = ">=1.0"\n\n[[commands]]\nname = "mod"\nhelp = "Run mod."\n', encoding="utf-8"
    )
    result = run("plugins", "health", "mod", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out) == [
        {
            "name": "mod",
            "host": "wasm",
            "status": "ok",
            "message": "no health check in the wasm host",
        }
    ]
