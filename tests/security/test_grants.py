"""Grants: the check before activation, the prompt on a real terminal, and
`conduit plugins permissions | grant | revoke`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from conduit.errors import EXIT_PLUGIN_LOAD, EXIT_USAGE, SandboxDenied
from conduit.security.report import WASM_ENFORCES, describe_sandbox

from _factory import pty_run, simple_plugin, write

CAPS = ["filesystem:read:/srv/data", "network:http:api.example.com"]


@pytest.fixture(autouse=True)
def no_prompt_in_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands run in pytest's process never prompt, even with ``pytest -s`` on a
    terminal; the prompt tests below run conduit on a pseudo-terminal without CI."""
    monkeypatch.setenv("CI", "1")


def plugin(name: str = "alpha", caps: list[str] = CAPS, version: str = "1.0") -> str:
    listed = ", ".join(f'"{c}"' for c in caps)
    return simple_plugin(
        name, ("hello",), extra_toml=f'version = "{version}"\ncapabilities = [{listed}]'
    )


def refusal(name: str, caps: list[str], declined: bool = False) -> str:
    what = "declined" if declined else "not granted"
    them = "it" if len(caps) == 1 else "them"
    return (
        f"error: plugin '{name}': capabilities {what}: {', '.join(caps)} "
        f"(run 'conduit plugins grant {name} {' '.join(caps)}' to allow {them})"
    )


# -- non-interactive -------------------------------------------------------------------------------


def test_missing_grants_refuse_in_one_line(run, plugin_dir):
    write(plugin_dir, "alpha.py", plugin())
    r = run("hello")  # pytest's stdin is not a terminal
    assert r.code == EXIT_PLUGIN_LOAD
    assert r.out == ""
    assert r.err.splitlines() == [refusal("alpha", CAPS)]


def test_the_printed_grant_command_works(run, plugin_dir, conduit_home):
    write(plugin_dir, "alpha.py", plugin())
    line = run("hello").err.splitlines()[0]
    command = line.split("(run '")[1].split("' to allow")[0].split()
    assert command[:3] == ["conduit", "plugins", "grant"]
    assert run(*command[1:]).code == 0
    assert run("hello").out == "alpha hello\n"
    assert (
        'alpha = ["filesystem:read:/srv/data", "network:http:api.example.com"]'
        in (conduit_home / "config.toml").read_text()
    )


def test_a_broader_grant_covers_a_narrower_request(run, plugin_dir, conduit_home):
    write(plugin_dir, "alpha.py", plugin())
    (conduit_home / "config.toml").write_text(
        '[grants]\nalpha = ["filesystem:read:/srv", "network:http:*.example.com"]\n'
    )
    assert run("hello").out == "alpha hello\n"


def test_a_new_version_that_asks_for_more_is_refused_until_granted(run, plugin_dir, conduit_home):
    write(plugin_dir, "alpha.py", plugin())
    assert run("plugins", "grant", "alpha", *CAPS).code == 0
    assert run("hello").code == 0
    write(plugin_dir, "alpha.py", plugin(caps=[*CAPS, "process:execute:git"], version="2.0"))
    r = run("hello")
    assert r.code == EXIT_PLUGIN_LOAD
    assert r.err.splitlines() == [refusal("alpha", ["process:execute:git"])]


def test_a_plugin_without_capabilities_needs_no_grant(run, plugin_dir):
    write(plugin_dir, "alpha.py", plugin(caps=[]))
    assert run("hello").out == "alpha hello\n"


def test_builtins_are_trusted_without_grants(run):
    # devtools declares filesystem:read and process:execute:git; built-ins are not checked
    r = run("plugins", "permissions", "devtools")
    assert r.code == 0
    assert "built-in plugins are trusted and not checked" in r.out
    r = run("plugins", "grant", "devtools", "env:read")
    assert r.code == EXIT_USAGE
    assert r.err.startswith(
        "error: plugin 'devtools' is built in; built-in plugins are trusted and need no grants"
    )


# -- the prompt, on a real pseudo-terminal ----------------------------------------------------


CONDUIT = [sys.executable, "-m", "conduit"]


@pytest.fixture
def tty_env(conduit_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["CONDUIT_HOME"] = str(conduit_home)
    env["NO_COLOR"] = "1"  # plain text on the terminal (colour: tests/cli/test_surface.py)
    return env


def test_prompt_yes_grants_and_runs(plugin_dir, conduit_home, tty_env):
    write(plugin_dir, "alpha.py", plugin(caps=["env:read:HOME", "network:http"]))
    code, _, text = pty_run([*CONDUIT, "hello"], "y", tty_env)
    config = conduit_home / "config.toml"
    assert text.splitlines()[:8] == [
        "┌ conduit: plugin 'alpha' 1.0 requests:",
        "├   env:read:HOME  read the environment variable HOME",
        "├   network:http   connect to ANY host (unscoped!)",
        "├ It runs inside Conduit's own process, where these limits are advisory: code that "
        "means to can get around them (ctypes, _posixsubprocess).",
        "├ Answer p to grant and run it in the process sandbox instead, where the operating "
        'system enforces them ([isolation] alpha = "process").',
        f"├ Granting saves this in {config}; 'conduit plugins revoke alpha CAPABILITY...' "
        "takes it back.",
        "├ ! In all 2 capabilities; unscoped (all of that kind): network:http.",
        "└ Grant? [y/N] y",
    ]
    assert text.splitlines()[8:] == ["alpha hello"]
    assert code == 0
    assert 'alpha = ["env:read:HOME", "network:http"]' in config.read_text()
    assert f'alpha = "file:{plugin_dir / "alpha.py"}"' in config.read_text()  # bound to it
    # remembered: no prompt the next time
    code, _, text = pty_run([*CONDUIT, "hello"], None, tty_env)
    assert (code, text) == (0, "alpha hello\n")


def test_prompt_default_is_no(plugin_dir, conduit_home, tty_env):
    write(plugin_dir, "alpha.py", plugin(caps=["env:read:HOME"]))
    code, _, text = pty_run([*CONDUIT, "hello"], "", tty_env)
    assert code == EXIT_PLUGIN_LOAD
    assert text.splitlines()[-1] == refusal("alpha", ["env:read:HOME"], declined=True)
    assert not (conduit_home / "config.toml").exists()


def test_no_prompt_when_ci_is_set(plugin_dir, tty_env):
    write(plugin_dir, "alpha.py", plugin(caps=["env:read:HOME"]))
    code, _, text = pty_run([*CONDUIT, "hello"], None, {**tty_env, "CI": "true"})
    assert code == EXIT_PLUGIN_LOAD
    assert text.splitlines() == [refusal("alpha", ["env:read:HOME"])]


# -- plugins permissions / grant / revoke ----------------------------------------------------


def test_permissions_report(run, plugin_dir, conduit_home):
    write(plugin_dir, "alpha.py", plugin(caps=[*CAPS, "env:read"]))
    (conduit_home / "config.toml").write_text(
        '[grants]\nalpha = ["filesystem:read:/srv", "process:execute:git"]\n'
    )
    report = json.loads(run("plugins", "permissions", "alpha", "--json").out)
    assert report["host"] == "in-process (guarded)"
    assert [(r["capability"], r["granted"], r["unscoped"]) for r in report["requested"]] == [
        ("filesystem:read:/srv/data", True, False),
        ("network:http:api.example.com", False, False),
        ("env:read", False, True),
    ]
    assert report["missing"] == ["network:http:api.example.com", "env:read"]
    assert report["granted_not_requested"] == ["process:execute:git"]
    assert report["grant_command"] == (
        "conduit plugins grant alpha network:http:api.example.com env:read"
    )
    text = run("plugins", "permissions", "alpha").out
    assert "! env:read" in text and "MISSING" in text and "read ANY environment variable" in text
    assert "not a security boundary" in text


def test_permissions_show_a_forced_host_without_claiming_enforcement(run, plugin_dir, conduit_home):
    write(plugin_dir, "alpha.py", plugin())
    (conduit_home / "config.toml").write_text('[isolation]\nalpha = "process"\n')
    report = json.loads(run("plugins", "permissions", "alpha", "--json").out)
    assert report["isolation_forced_by_policy"] is True
    assert report["host"] == "process (sandboxed)"
    # the sandbox's own description of what it applies for no grants, split by what is enforced
    assert sorted(report["enforced"] + report["not_enforced"]) == sorted(describe_sandbox([]))
    assert all("NOT restricted" in line for line in report["not_enforced"])
    assert not any("NOT restricted" in line for line in report["enforced"])


def test_grant_validates_and_warns(run, plugin_dir, conduit_home):
    write(plugin_dir, "alpha.py", plugin())
    config = conduit_home / "config.toml"
    config.write_text("# my settings\n[pins]\n")
    r = run("plugins", "grant", "alpha", "filesytem:read:/srv")
    assert r.code == EXIT_USAGE
    assert r.err.splitlines()[0] == "error: 'filesytem:read:/srv' is not a valid capability"
    assert run("plugins", "grant", "alhpa", "env:read").err.startswith(
        "error: no plugin named 'alhpa'\nhint: did you mean 'alpha'?"
    )
    r = run("plugins", "grant", "alpha", "network:http", "filesystem:read:/srv/data")
    assert r.code == 0
    assert r.out == "Granted to 'alpha': network:http, filesystem:read:/srv/data.\n"
    assert r.err.splitlines() == ["warning: network:http is unscoped: connect to ANY host"]
    r = run("plugins", "grant", "alpha", "env:read:HOME", "filesystem:read:/srv/data/x")
    assert r.err.splitlines() == [
        "warning: plugin 'alpha' does not request env:read:HOME; granting it anyway "
        "(it takes effect if a later version asks for it)",
        "note: filesystem:read:/srv/data/x is already granted (by filesystem:read:/srv/data)",
    ]
    text = config.read_text()
    assert text.startswith("# my settings\n")  # the user's comments survive
    assert 'alpha = ["network:http", "filesystem:read:/srv/data", "env:read:HOME"]' in text
    assert run("hello").code == 0


def test_grant_requested_and_revoke(run, plugin_dir, conduit_home):
    write(plugin_dir, "alpha.py", plugin())
    assert run("plugins", "grant", "alpha").code == EXIT_USAGE
    assert run("plugins", "grant", "alpha", "--requested").out == (
        "Granted to 'alpha': filesystem:read:/srv/data, network:http:api.example.com.\n"
    )
    r = run("plugins", "revoke", "alpha", "network:http")
    assert r.code == EXIT_USAGE
    assert r.err.splitlines()[0] == "error: plugin 'alpha' was not granted network:http"
    r = run("plugins", "revoke", "alpha", "network:http:api.example.com")
    assert r.out == "Revoked from 'alpha': network:http:api.example.com.\n"
    assert "it will be asked for again" in r.err
    assert run("hello").err.splitlines() == [refusal("alpha", ["network:http:api.example.com"])]
    assert run("plugins", "revoke", "alpha", "--all").out == (
        "Revoked from 'alpha': filesystem:read:/srv/data.\n"
    )
    assert "alpha" not in (conduit_home / "config.toml").read_text().split("[grants]")[1]


def test_list_and_info_mark_unscoped_capabilities(run, plugin_dir):
    write(plugin_dir, "alpha.py", plugin(caps=["network:http", "env:read:HOME"]))
    out = run("plugins", "list").out
    assert "network:http!,env:read:HOME" in out
    assert out.splitlines()[-1].startswith("! unscoped: all of that kind")
    info = run("plugins", "info", "alpha", "--no-load").out
    assert "capabilities: network:http!, env:read:HOME  (! unscoped: all of that kind)" in info


def test_an_event_plugin_without_grants_is_skipped_with_a_warning(run, plugin_dir, monkeypatch):
    write(plugin_dir, "alpha.py", plugin(caps=[]))
    side = simple_plugin(
        "side",
        ("side-cmd",),
        extra_toml='activation = ["env:SIDE_ON"]\ncapabilities = ["env:read:HOME"]',
    )
    write(plugin_dir, "side.py", side)
    monkeypatch.setenv("SIDE_ON", "1")
    r = run("hello")
    assert (r.code, r.out) == (0, "alpha hello\n")
    assert r.err.splitlines() == [
        "conduit: warning: plugin 'side': not activated for env:SIDE_ON: capabilities not "
        "granted: env:read:HOME (run 'conduit plugins grant side env:read:HOME' to allow it)"
    ]


def test_permissions_of_a_webassembly_plugin_name_the_wasm_sandbox(run, plugin_dir, conduit_home):
    write(plugin_dir, "alpha.py", plugin())
    (conduit_home / "config.toml").write_text('[isolation]\nalpha = "wasm"\n')
    report = json.loads(run("plugins", "permissions", "alpha", "--json").out)
    assert (report["host"], report["enforced"], report["not_enforced"]) == (
        "wasm",
        WASM_ENFORCES,
        [],
    )


def test_every_printed_grant_command_survives_a_shell(plugin_dir, conduit_home):
    # "${workspace}" unquoted would be expanded by the shell the command is pasted into,
    # granting "/build" instead of what the plugin asked for
    import subprocess

    from conduit.indexer.build import load
    from conduit.paths import resolve
    from conduit.security.grants import offer
    from conduit.timing import Profile

    cap = "filesystem:write:${workspace}/build"
    write(plugin_dir, "alpha.py", plugin(caps=[cap]))
    paths = resolve()
    notes = offer(load(paths, Profile(False)), ["alpha"], paths.config_file, ask=False)
    offered = notes[1].removeprefix("  grant with: ")
    hint = SandboxDenied("alpha", "writing /x", cap).hint or ""
    hinted = hint.split("'", 1)[1].rsplit("'", 1)[0]
    for command in (offered, hinted):
        words = subprocess.run(  # the words a POSIX shell makes of it
            ["sh", "-c", f'set -- {command}; printf "%s\\n" "$@"'],
            capture_output=True,
            text=True,
            check=True,
            env={"PATH": os.environ["PATH"]},
        ).stdout.splitlines()
        assert words == ["conduit", "plugins", "grant", "alpha", cap], command


# -- the grant engines work from data alone ------------------------------------------------------


def test_security_imports_nothing_from_the_store_the_kernel_or_the_hosts(tmp_path):
    """The guard and the sandbox are given what they need (grants, paths, dependency
    directories); they never reach up into the kernel, the hosts or the store, and
    grants and sandbox do not import each other at run time (security/report.py joins
    them)."""
    import subprocess

    code = f"""
import sys
import conduit.security.grants
assert "conduit.security.sandbox" not in sys.modules, "grants imports sandbox"
from conduit.paths import Paths
from conduit.security import guard, sandbox
from conduit.security.capabilities import parse
policy = guard.Policy("p", [parse("filesystem:read:${{plugin_data}}")], plugin_data={str(tmp_path)!r})
index = {{"config": {{"grants": {{"p": ["env:read:HOME"]}}}}, "plugins": {{}}}}
paths = Paths({str(tmp_path / "config")!r}, {str(tmp_path / "cache")!r}, {str(tmp_path / "state")!r})
sandbox.prepare(index, paths, "p", environ={{}}).close()
up = ("conduit.store", "conduit.kernel", "conduit.hosts", "conduit.indexer", "conduit.config")
print(sorted(m for m in sys.modules if m.startswith(up)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (out.returncode, out.stderr, out.stdout) == (0, "", "[]\n")


def _rec(name: str, origin: str, source: str = "file") -> dict[str, object]:
    return {"name": name, "origin": origin, "source": source, "dependencies": []}


def test_the_sandbox_is_prepared_from_the_index_and_the_paths(tmp_path, monkeypatch):
    from conduit.errors import PluginLoadError
    from conduit.paths import Paths
    from conduit.security import sandbox

    monkeypatch.chdir(tmp_path)
    single = tmp_path / "p.py"
    single.write_text("X = 1\n")
    same = [
        "filesystem:read:${workspace}/src",
        "filesystem:write:${plugin_data}/out",
        "env:read:HOME",
    ]
    index: Any = {
        "config": {"grants": {"p": same, "q": same}, "process": {"shared": ["q", "p", "gone"]}},
        "plugins": {"p": _rec("p", str(single)), "q": _rec("q", "/pkgs/q", "entry-point")},
    }
    paths = Paths(str(tmp_path / "config"), str(tmp_path / "cache"), str(tmp_path / "state"))
    deps = str(tmp_path / "cache" / "envs" / "abc")
    assert sandbox.shared_plugins(index) == ["q", "p", "gone"]
    assert sandbox.host_plugins(index, "p") == ["p", "q"]
    plan = sandbox.prepare(
        index, paths, "p", environ={"HOME": "/h", "SECRET": "s"}, extra_read=[deps]
    )
    data_p, data_q = paths.plugin_data("p"), paths.plugin_data("q")
    policy = plan.policy
    assert policy["plugins"] == ["p", "q"]
    assert policy["read"][:2] == [data_p, str(single)]
    assert policy["read"][-4:] == [data_q, "/pkgs/q", deps, str(tmp_path / "src")]
    assert policy["write"] == [data_p, data_q, os.path.join(data_p, "out")]
    assert (policy["exec"], policy["net"], policy["tmp"]) == (None, "none", f"{data_p}/tmp")
    assert os.path.isdir(policy["tmp"]) and os.path.isdir(data_q)  # rules need directories
    assert plan.command_env({"HOME": "/h", "SECRET": "s"}) == {
        "HOME": "/h",
        "TMPDIR": policy["tmp"],
    }
    # not shared: a host of its own, whatever the other's grants
    alone = {**index, "config": {"grants": {"p": same}}}
    assert sandbox.prepare(alone, paths, "p").policy["plugins"] == ["p"]
    different = {**index, "config": {**index["config"], "grants": {"p": same}}}
    with pytest.raises(PluginLoadError, match="cannot share a host with 'q'"):
        sandbox.prepare(different, paths, "p")
