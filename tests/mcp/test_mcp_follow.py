"""A running `conduit mcp` follows the index: a plugin installed or removed, or `[mcp]
expose` edited, shows at the client's next tools/list, without restarting the server."""

from __future__ import annotations

from pathlib import Path

from _mcp import server_env, stdio_server, write_home

from _factory import simple_plugin


def names(client) -> set[str]:
    return {t.name for t in client.list_tools().tools}


def text(result) -> str:
    return "".join(c.text for c in result.content)


def test_the_tools_follow_installs_uninstalls_and_the_config(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_home(home, '[mcp]\nexpose = ["greet"]\n')
    config = home / "config.toml"
    with open(tmp_path / "server.log", "w") as log, stdio_server(server_env(home), log) as client:
        assert names(client) == {"greet"}

        # a new plugin, exposed by an edit of the config
        (home / "plugins" / "extra.py").write_text(simple_plugin("extra", ("hi",)))
        config.write_text('[mcp]\nexpose = ["greet", "hi"]\n')
        assert names(client) == {"greet", "hi"}
        result = client.call("hi", {})
        assert (result.is_error, text(result)) == (False, "extra hi\n")

        # a plugin removed (the config still names its command): its tool goes, a call
        # to it says so, and the server's log says why the rest stays as it was
        (home / "plugins" / "alpha.py").unlink()
        assert names(client) == {"hi"}
        result = client.call("greet", {"who": "x", "ratio": 1.0})
        assert result.is_error and "no tool 'greet'" in text(result)

        # a config with an error keeps what was listed; a call says what the command
        # line would say
        config.write_text("[mcp\n")
        assert names(client) == {"hi"}
        result = client.call("hi", {})
        assert result.is_error and text(result).startswith(f"{config}:"), text(result)
    log = (tmp_path / "server.log").read_text()
    assert (
        "conduit mcp: warning: config [mcp] expose[0]: 'greet' is neither a plugin nor a "
        "command (see 'conduit --help'); the tools stay as they were\n"
    ) in log
    assert f"conduit mcp: warning: {config}" in log
