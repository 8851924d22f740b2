"""``conduit config ...`` through the real CLI, and what a broken config still allows."""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

import pytest

from conduit.errors import EXIT_CONFIG, EXIT_USAGE

from _factory import pty_run, simple_plugin, write

FIX = "hint: fix it with 'conduit config edit'; 'conduit config validate' checks it\n"


def test_path_and_a_missing_file(run, conduit_home: Path) -> None:  # type: ignore[no-untyped-def]
    config = conduit_home / "config.toml"
    assert run("config", "path").out == f"{config}\n"
    r = run("config", "validate")
    assert (r.code, r.out) == (0, f"{config}: no config file; every setting has its default\n")
    r = run("config", "show")
    assert (r.code, r.out) == (0, "")
    assert r.err == f"# {config} does not exist: every setting has its default\n"
    # an unset key prints its default
    assert run("config", "get", "process.timeout").out == "30.0\n"
    assert run("config", "get", "store.installer").out == "auto\n"


def test_set_get_unset_keep_comments(run, conduit_home: Path) -> None:  # type: ignore[no-untyped-def]
    config = conduit_home / "config.toml"
    config.write_text("# my settings\n[process]  # hosts\ntimeout = 5  # seconds\n")
    assert run("config", "set", "store.index-url", "https://example.org/simple").code == 0
    assert run("config", "set", "plugins.disabled", '["a", "b"]').code == 0
    assert run("config", "set", "security.sandbox-third-party", "true").code == 0
    r = run("config", "set", "process.memory-mb", "1024")
    assert (r.code, r.out) == (0, "process.memory-mb = 1024\n")
    assert run("config", "set", "grants.alpha", '["env:read:HOME"]').code == 0
    assert run("config", "set", "plugin.git-tools.remote", "origin").code == 0
    text = config.read_text()
    assert "# my settings" in text and "# hosts" in text and "timeout = 5  # seconds" in text
    data = tomllib.loads(text)
    assert data["store"]["index-url"] == "https://example.org/simple"  # not TOML: a string
    assert data["plugins"]["disabled"] == ["a", "b"]
    assert data["security"]["sandbox-third-party"] is True
    assert data["process"] == {"timeout": 5, "memory-mb": 1024}
    assert data["plugin"] == {"git-tools": {"remote": "origin"}}
    assert run("config", "get", "plugins.disabled").out == '["a", "b"]\n'
    assert run("config", "get", "store.index-url").out == "https://example.org/simple\n"
    assert run("config", "get", "process.timeout").out == "5\n"
    assert run("config", "get", "grants.alpha").out == '["env:read:HOME"]\n'
    assert run("config", "validate").out == f"{config}: valid\n"

    assert run("config", "unset", "process.memory-mb").out == "Removed process.memory-mb.\n"
    assert run("config", "unset", "plugins.disabled").code == 0
    data = tomllib.loads(config.read_text())
    assert "plugins" not in data  # no empty [plugins] left behind
    assert data["process"] == {"timeout": 5}
    r = run("config", "unset", "plugins.disabled")
    assert (r.code, r.err) == (
        1,
        "error: 'plugins.disabled' is not set\nhint: see 'conduit config show'\n",
    )
    assert "# my settings" in config.read_text()
    assert run("config", "show").out == config.read_text()


def test_set_refuses_what_would_make_the_config_invalid(run, conduit_home: Path) -> None:  # type: ignore[no-untyped-def]
    config = conduit_home / "config.toml"
    config.write_text("[process]\ntimeout = 5\n")
    before = config.read_text()
    r = run("config", "set", "plugins.disabeld", '["a"]')
    assert (r.code, r.err) == (
        EXIT_USAGE,
        "error: unknown key 'disabeld' in [plugins] (did you mean 'disabled'?)\n"
        "hint: see 'conduit config show'\n",
    )
    r = run("config", "set", "process.memory-mb", "lots")
    assert r.code == EXIT_CONFIG
    assert r.err == (
        f"error: {config}: process.memory-mb: expected an integer, got a string\n"
        "hint: nothing was written\n"
    )
    r = run("config", "set", "grants.alpha", '["network:http:bad host"]')
    assert r.code == EXIT_CONFIG
    assert "grants.alpha[0]: 'network:http:bad host' is not a valid host scope" in r.err
    r = run("config", "set", "store.installer", "conda")
    assert (r.code, r.err.splitlines()[0]) == (
        EXIT_CONFIG,
        f"error: {config}: store.installer: invalid enum value 'conda'",
    )
    assert run("config", "get", "proces.timeout").err.startswith(
        "error: unknown key 'proces' (did you mean 'process'?)"
    )
    assert config.read_text() == before


def test_a_broken_config_stops_commands_but_not_help_config_and_doctor(
    run, conduit_home: Path, plugin_dir: Path
) -> None:  # type: ignore[no-untyped-def]
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    config = conduit_home / "config.toml"
    config.write_text("# mine\n[plugins]\ndisabeld = []\n")
    problem = f"{config}:3: unknown key 'disabeld' in [plugins] (did you mean 'disabled'?)"
    warning = f"conduit: warning: {problem} (fix it with 'conduit config edit')\n"
    for args in (["--help"], [], ["plugins", "--help"], ["config", "path"], ["-h", "hello"]):
        r = run(*args)
        assert (r.code, r.err) == (0, warning), args
    assert run("--help").out.startswith("Usage: conduit")
    r = run("--version")
    assert (r.code, r.err) == (0, "")
    r = run("plugins", "doctor")
    assert r.err.startswith(warning)
    assert "Checked" in r.out
    r = run("hello")
    assert (r.code, r.err) == (EXIT_CONFIG, f"error: {problem}\n{FIX}")
    r = run("config", "validate")  # its result, not a warning as well
    assert (r.code, r.out, r.err) == (EXIT_CONFIG, "", f"error: {problem}\n{FIX}")
    assert run("__complete", "hel").out == "hello\tRun hello of alpha.\n"
    # the way out: fix it with `config`, and everything works again
    r = run("config", "unset", "plugins.disabeld")
    assert (r.code, r.out) == (0, "Removed plugins.disabeld.\n")
    assert config.read_text() == "# mine\n"
    r = run("hello")
    assert (r.code, r.out, r.err) == (0, "alpha hello\n", "")


def test_invalid_toml_says_where(run, conduit_home: Path) -> None:  # type: ignore[no-untyped-def]
    config = conduit_home / "config.toml"
    config.write_text("[process]\ntimeout = 5\n[plugins\n")
    r = run("plugins", "list")
    assert r.code == EXIT_CONFIG
    assert r.err.splitlines()[0] == (
        f"error: {config}:3: invalid TOML: expected ']' at the end of a table declaration "
        "(column 9)"
    )
    assert "docs/" not in r.err
    assert run("config", "set", "process.timeout", "3").code == EXIT_CONFIG
    assert config.read_text() == "[process]\ntimeout = 5\n[plugins\n"  # never overwritten


def _editor(tmp_path: Path, *contents: str) -> str:
    """An editor that writes ``contents[i]`` on its i-th run."""
    script = tmp_path / "editor.py"
    count = tmp_path / "count"
    script.write_text(
        "import sys, pathlib\n"
        f"count = pathlib.Path({str(count)!r})\n"
        "n = int(count.read_text()) if count.exists() else 0\n"
        "count.write_text(str(n + 1))\n"
        f"contents = {list(contents)!r}\n"
        "pathlib.Path(sys.argv[1]).write_text(contents[min(n, len(contents) - 1)])\n"
    )
    return f"{sys.executable} {script}"


def test_edit_validates_and_keeps_what_was_written(
    run, conduit_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    config = conduit_home / "config.toml"
    config.write_text("# mine\n")
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDITOR", _editor(tmp_path, "# mine\n[process]\ntimeout = 7\n"))
    r = run("config", "edit")
    assert (r.code, r.out) == (0, f"{config}: valid\n")
    assert config.read_text() == "# mine\n[process]\ntimeout = 7\n"
    # not a terminal: an invalid result is kept, said in one line, and exits 4
    (tmp_path / "count").unlink()
    monkeypatch.setenv("VISUAL", _editor(tmp_path, "[process]\ntimeuot = 7\n"))
    r = run("config", "edit")
    assert r.code == EXIT_CONFIG
    assert r.err.splitlines()[0] == (
        f"error: {config}:2: unknown key 'timeuot' in [process] (did you mean 'timeout'?)"
    )
    assert config.read_text() == "[process]\ntimeuot = 7\n"


def test_edit_on_a_terminal_offers_to_edit_again(conduit_home: Path, tmp_path: Path) -> None:
    config = conduit_home / "config.toml"
    editor = _editor(tmp_path, "[plugins]\ndisabeld = []\n", '[plugins]\ndisabled = ["x"]\n')
    env = {**os.environ, "EDITOR": editor, "VISUAL": ""}
    code, _, screen = pty_run([sys.executable, "-m", "conduit", "config", "edit"], "y", env)
    assert code == 0, screen
    assert "unknown key 'disabeld' in [plugins] (did you mean 'disabled'?)" in screen
    assert "Edit it again? [y/N]" in screen
    assert f"{config}: valid" in screen
    assert config.read_text() == '[plugins]\ndisabled = ["x"]\n'
    assert (tmp_path / "count").read_text() == "2"


def test_get_escapes_control_characters_like_show(run, conduit_home: Path) -> None:  # type: ignore[no-untyped-def]
    (conduit_home / "config.toml").write_text(
        '[store]\nindex-url = "https://x\\u001b]0;t\\u0007/"\n'
    )
    r = run("config", "get", "store.index-url")
    assert (r.code, r.out) == (0, "https://x\\x1b]0;t\\x07/\n")
