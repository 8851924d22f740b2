"""The command line end to end, in-process, with real single-file plugins on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conduit import __version__
from conduit.errors import EXIT_CONFIG, EXIT_PLUGIN_LOAD, EXIT_USAGE
from conduit.index import index_path
from conduit.paths import resolve

from _factory import manifest_block, simple_plugin, write


def test_version(run):
    r = run("--version")
    assert (r.code, r.out) == (0, f"conduit {__version__}\n")


def test_help_lists_builtin_and_plugin_commands(run, plugin_dir):
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello", "bye")))
    r = run("--help")
    assert r.code == 0, r.err
    assert r.err == ""
    assert "Commands from alpha: The alpha plugin" in r.out
    assert "hello" in r.out and "Run hello of alpha." in r.out
    assert "plugins" in r.out and "completion" in r.out
    # no arguments at all shows the same help
    assert run().out == r.out


def test_runs_plugin_command(run, plugin_dir):
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    r = run("hello")
    assert (r.code, r.out, r.err) == (0, "alpha hello\n", "")


def test_nested_commands_and_group_help_from_index(run, plugin_dir):
    toml = '[[commands]]\nname = "repos"\nhelp = "Work with repositories."\n'
    src = simple_plugin("git-tools", ("repos status", "repos list"), extra_toml=toml)
    write(plugin_dir, "git_tools.py", src)
    r = run("repos", "--help")
    assert r.code == 0, r.err
    assert "Work with repositories." in r.out
    assert "status" in r.out and "Run repos list of git-tools." in r.out
    assert run("repos", "status").out == "git-tools repos status\n"
    assert run("repos", "list").out == "git-tools repos list\n"
    # a leaf's --help is Click's own, with the full usage line
    leaf = run("repos", "status", "--help")
    assert leaf.code == 0
    assert "Usage: conduit repos status" in leaf.out


def test_unknown_command_suggests(run):
    r = run("plugns")
    assert r.code == EXIT_USAGE
    assert r.err == "error: unknown command 'plugns'\nhint: did you mean 'plugins'?\n"


def test_unknown_global_option(run):
    r = run("--verison")
    assert r.code == EXIT_USAGE
    assert r.err.splitlines() == [
        "error: unknown option '--verison'",
        "hint: did you mean '--version'?",
    ]


def test_command_usage_error_is_exit_2(run, plugin_dir):
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    r = run("hello", "--bogus")
    assert r.code == EXIT_USAGE
    assert "No such option" in r.err and "--bogus" in r.err


# -- bad plugins never break the tool ------------------------------------------------------


def _assert_skipped(r, name: str, fragment: str) -> None:
    lines = [line for line in r.err.splitlines() if f"skipped plugin '{name}'" in line]
    assert len(lines) == 1, r.err
    assert fragment in lines[0]
    assert "Traceback" not in r.err


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        ('name = "bad"\napi = ">=1.0,<2"\ndescription = "unterminated', "invalid TOML"),
        ('name = "bad"\napi = ">=1.0,<2"\ndescriptoin = "typo"', "descriptoin: unknown field"),
        (
            'name = "bad"\napi = ">=1.0,<2"\ndescription = 42',
            "description: expected `str`, got `int`",
        ),
        ('name = "bad"', "api: required field is missing"),
        ('name = "bad"\napi = ">=1.0,<2"\nisolation = "vm"', "isolation"),
        ('name = "Bad Name"\napi = ">=1.0,<2"', "is not a valid plugin name"),
        ('name = "bad"\napi = ">=7"', "supports plugin API >=7"),
    ],
    ids=[
        "invalid-toml",
        "unknown-field",
        "wrong-type",
        "missing-api",
        "bad-enum",
        "bad-name",
        "api-mismatch",
    ],
)
def test_broken_manifest_is_skipped_with_one_line(run, plugin_dir, toml, fragment):
    write(plugin_dir, "bad.py", manifest_block(toml) + "raise SystemExit('never imported')\n")
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    r = run("--help")
    assert r.code == 0
    _assert_skipped(r, "bad", fragment)
    assert str(plugin_dir / "bad.py") in r.err
    assert "hello" in r.out
    other = run("hello")
    assert other.code == 0 and other.out == "alpha hello\n"


def test_broken_manifest_reported_by_doctor(run, plugin_dir):
    write(plugin_dir, "bad.py", manifest_block('name = "bad"\napi = ">=1.0,<2"\nnmae = "x"'))
    r = run("plugins", "doctor")
    assert r.code == 1
    assert "error: plugin 'bad' (file):" in r.out
    assert "nmae: unknown field" in r.out
    assert "hint: did you mean 'name'?" in r.out


def test_missing_entry_object(run, plugin_dir):
    src = simple_plugin("alpha", ("hello",), extra_toml='entry = "Nope"')
    write(plugin_dir, "alpha.py", src)
    r = run("hello")
    assert r.code == EXIT_PLUGIN_LOAD
    assert r.err.splitlines()[0] == (
        f"error: plugin 'alpha': {plugin_dir / 'alpha.py'} has no object 'Nope' "
        "(manifest field 'entry')"
    )
    assert "Traceback" not in r.err


def test_plugin_raising_at_import(run, plugin_dir):
    src = simple_plugin("alpha", ("hello",), module_prefix="\nraise RuntimeError('kaboom')\n")
    write(plugin_dir, "alpha.py", src)
    write(plugin_dir, "beta.py", simple_plugin("beta", ("other",)))
    r = run("hello")
    assert r.code == EXIT_PLUGIN_LOAD
    assert r.err.splitlines() == [
        "error: plugin 'alpha': failed to import: RuntimeError: kaboom",
        "hint: run with --debug for the traceback; 'conduit plugins disable alpha' turns it off",
    ]
    assert run("other").out == "beta other\n"
    debug = run("--debug", "hello")
    assert debug.code == EXIT_PLUGIN_LOAD
    assert "Traceback (most recent call last)" in debug.err
    assert "RuntimeError: kaboom" in debug.err


def test_plugin_raising_at_boot(run, plugin_dir):
    src = simple_plugin("alpha", ("hello",), boot_prefix="        raise ValueError('no boot')\n")
    write(plugin_dir, "alpha.py", src)
    r = run("hello")
    assert r.code == EXIT_PLUGIN_LOAD
    assert r.err.splitlines()[0] == "error: plugin 'alpha': failed to boot: ValueError: no boot"
    assert "Traceback" not in r.err


def test_command_raising_is_exit_1(run, plugin_dir):
    src = manifest_block('name = "alpha"\napi = ">=1.0,<2"\n[[commands]]\nname = "boom"') + (
        "import click\nfrom conduit.sdk import Plugin\n"
        "@click.command()\ndef boom():\n    raise KeyError('x')\n"
        "class P(Plugin):\n    def boot(self, ctx):\n        ctx.register_command(boom)\n"
    )
    write(plugin_dir, "alpha.py", src)
    r = run("boom")
    assert r.code == 1
    assert r.err.splitlines()[0] == "error: plugin 'alpha': command 'boom' failed: KeyError: 'x'"


def test_declared_but_unregistered_command(run, plugin_dir):
    src = simple_plugin("alpha", ("hello",)).replace(
        "        ctx.register_command", "        0 and ctx.register_command"
    )
    write(plugin_dir, "alpha.py", src)
    r = run("hello")
    assert r.code == EXIT_PLUGIN_LOAD
    assert "declares command 'hello' in its manifest but did not register it" in r.err


def test_duplicate_plugin_names(run, plugin_dir):
    write(plugin_dir, "a_first.py", simple_plugin("same", ("one",)))
    write(plugin_dir, "b_second.py", simple_plugin("same", ("two",)))
    r = run("--help")
    assert r.code == 0
    _assert_skipped(r, "same", "duplicate plugin name 'same'")
    assert str(plugin_dir / "a_first.py") in r.err  # names who already has the name
    assert run("one").out == "same one\n"
    assert run("two").code == EXIT_USAGE


def test_conflicting_commands(run, plugin_dir, conduit_home):
    write(plugin_dir, "zeta.py", simple_plugin("zeta", ("deploy",)))
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("deploy",)))
    r = run("deploy")
    assert (r.code, r.out) == (0, "alpha deploy\n")  # alphabetical winner
    assert r.err == (
        "conduit: warning: command 'deploy' is provided by alpha, zeta; using 'alpha' "
        "(run 'zeta:deploy' for the other, or pin one in the config's [pins] table)\n"
    )
    assert run("zeta:deploy").out == "zeta deploy\n"
    assert run("alpha:deploy").out == "alpha deploy\n"
    assert "zeta:deploy" in run("--help").out
    (conduit_home / "config.toml").write_text('[pins]\ndeploy = "zeta"\n')
    assert run("deploy").out == "zeta deploy\n"


def test_builtin_wins_command_conflict(run, plugin_dir, conduit_home):
    write(plugin_dir, "aaa.py", simple_plugin("aaa", ("plugins",)))
    (conduit_home / "config.toml").write_text('[pins]\nplugins = "aaa"\n')
    r = run("plugins", "list")
    assert r.code == 0
    assert "NAME" in r.out
    assert run("aaa:plugins").out == "aaa plugins\n"


def test_qualified_form_errors(run, plugin_dir):
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    assert run("nope:hello").err.startswith("error: plugin 'nope' is not installed")
    r = run("alpha:nope")
    assert r.code == EXIT_USAGE
    assert r.err.startswith("error: plugin 'alpha' has no command 'nope'")


def test_corrupt_index_is_rebuilt_silently(run, plugin_dir, conduit_home):
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    assert run("hello").code == 0
    path = Path(index_path(resolve()))
    assert path.exists()
    for garbage in (b"", b"garbage", path.read_bytes()[:40], b"CONDUIT-INDEX\n\xff\x00\x13"):
        path.write_bytes(garbage)
        r = run("hello")
        assert (r.code, r.out, r.err) == (0, "alpha hello\n", "")
    assert path.read_bytes().startswith(b"CONDUIT-INDEX\n")
    # the records file beside it: truncated, or garbage of the very same size
    records = path.with_suffix(".records")
    size = records.stat().st_size
    for garbage in (
        records.read_bytes()[:100],
        b"\x00" * size,
        b"CONDUIT-INDEX\n" + b"x" * (size - 14),
    ):
        records.write_bytes(garbage)
        r = run("hello")
        assert (r.code, r.out, r.err) == (0, "alpha hello\n", "")


def test_unreadable_plugin_directory(run, conduit_home):
    (conduit_home / "plugins").write_text("not a directory")
    r = run("--help")
    assert r.code == 0
    warnings = [line for line in r.err.splitlines() if "plugin directory" in line]
    assert len(warnings) == 1
    assert "cannot read plugin directory" in warnings[0]
    assert "plugins" in r.out


def test_plugin_file_edited_in_place_is_noticed(run, plugin_dir):
    path = write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    assert run("hello").code == 0
    with path.open("a") as f:  # in place: the directory's mtime does not change
        f.write("\n# edited\n")
    path.write_text(simple_plugin("alpha", ("howdy",)))
    assert run("howdy").out == "alpha howdy\n"


# -- safe mode -----------------------------------------------------------------------------


def test_no_plugins_and_disable_env(run, plugin_dir, monkeypatch):
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    write(plugin_dir, "beta.py", simple_plugin("beta", ("other",)))
    safe = run("--no-plugins", "hello")
    assert safe.code == EXIT_USAGE
    assert "belongs to plugin 'alpha', which is disabled" in safe.err
    assert "hello" not in run("--no-plugins", "--help").out
    assert run("--no-plugins", "plugins", "list").code == 0
    monkeypatch.setenv("CONDUIT_DISABLE_PLUGINS", "alpha, gamma")
    assert run("hello").code == EXIT_USAGE
    assert run("other").out == "beta other\n"


def test_enable_disable_keeps_comments(run, plugin_dir, conduit_home):
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    config = conduit_home / "config.toml"
    config.write_text("# my settings\n[pins]  # who wins\n")
    r = run("plugins", "disable", "alpha")
    assert (r.code, r.out) == (0, "Disabled plugin 'alpha'.\n")
    assert "# my settings" in config.read_text() and "# who wins" in config.read_text()
    assert run("hello").code == EXIT_USAGE
    listed = json.loads(run("plugins", "list", "--json").out)
    assert {p["name"]: p["state"] for p in listed}["alpha"] == "disabled"
    assert run("plugins", "enable", "alpha").code == 0
    assert run("hello").out == "alpha hello\n"
    r = run("plugins", "disable", "plugins")
    assert r.code == EXIT_USAGE


def test_corrupt_config_is_reported_not_overwritten(run, conduit_home):
    config = conduit_home / "config.toml"
    config.write_text("[plugins\ndisabled = [")
    r = run("plugins", "list")
    assert r.code == EXIT_CONFIG
    assert r.err.startswith(f"error: {config}:1: invalid TOML")
    assert run("plugins", "disable", "devtools").code == EXIT_CONFIG
    assert config.read_text() == "[plugins\ndisabled = ["


def test_config_unknown_setting(run, conduit_home):
    config = conduit_home / "config.toml"
    config.write_text("# mine\n[plugins]\ndisabeld = []\n")
    r = run("plugins", "list")
    assert r.code == EXIT_CONFIG
    assert r.err == (
        f"error: {config}:3: unknown key 'disabeld' in [plugins] (did you mean 'disabled'?)\n"
        "hint: fix it with 'conduit config edit'; 'conduit config validate' checks it\n"
    )


def test_config_malformed_grant_names_plugin_and_index(run, conduit_home):
    config = conduit_home / "config.toml"
    config.write_text('[grants]\nalpha = ["env:read:HOME", "network:http:bad host"]\n')
    r = run("plugins", "list")
    assert r.code == EXIT_CONFIG
    assert r.err.splitlines()[0] == (
        f"error: {config}:2: grants.alpha[1]: 'network:http:bad host' is not a valid host scope"
    )
    assert "HOST:PORT" in r.err


# -- plugins list / info -------------------------------------------------------------------


def test_plugins_list_and_info(run, plugin_dir):
    write(
        plugin_dir,
        "alpha.py",
        simple_plugin("alpha", ("hello",), extra_toml='capabilities = ["filesystem:read:~/src"]'),
    )
    rows = {p["name"]: p for p in json.loads(run("plugins", "list", "--json").out)}
    assert rows["alpha"]["source"] == "file"
    assert rows["alpha"]["capabilities"] == ["filesystem:read:~/src"]
    assert rows["plugins"]["source"] == "builtin"
    table = run("plugins", "list").out
    assert table.splitlines()[0].split() == [
        "NAME",
        "VERSION",
        "SOURCE",
        "STATE",
        "ISOLATION",
        "CAPABILITIES",
    ]
    info = json.loads(run("plugins", "info", "alpha", "--json").out)
    assert info["load"].startswith(
        "plugin 'alpha': capabilities not granted: filesystem:read:~/src"
    )
    assert run("plugins", "grant", "alpha", "filesystem:read:~/src").code == 0
    info = json.loads(run("plugins", "info", "alpha", "--json").out)
    assert info["origin"] == str(plugin_dir / "alpha.py")
    assert info["load"]["total_ms"] > 0
    text = run("plugins", "info", "alpha").out
    assert "load time:" in text and "filesystem:read:~/src" in text
    assert run("plugins", "info", "alpah").err.startswith("error: no plugin named 'alpah'")


# -- profile -------------------------------------------------------------------------------


def test_profile_and_chrome_trace(run, plugin_dir, tmp_path):
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    out = tmp_path / "trace.json"
    r = run("--profile", "--profile-out", str(out), "hello")
    assert r.code == 0 and r.out == "alpha hello\n"
    assert "conduit start-up profile" in r.err
    for phase in ("index:fingerprint", "route", "import:alpha", "boot:alpha", "run:alpha"):
        assert phase in r.err
    trace = json.loads(out.read_text())
    names = {e["name"] for e in trace["traceEvents"]}
    assert {"kernel", "import:alpha", "boot:alpha"} <= names
    assert all(e["ph"] in ("X", "M") for e in trace["traceEvents"])


# -- completion ----------------------------------------------------------------------------


def test_complete_from_index(run, plugin_dir):
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello", "help-me")))
    assert run("__complete", "he").out.splitlines() == [
        "hello\tRun hello of alpha.",
        "help-me\tRun help-me of alpha.",
    ]
    subs = [line.split("\t")[0] for line in run("__complete", "plugins", "").out.splitlines()]
    assert subs[:6] == ["list", "info", "enable", "disable", "doctor", "graph"]
    assert {
        "new",
        "manifest",
        "check",
        "permissions",
        "grant",
        "revoke",
        "install",
        "sync",
        "build",
    } <= set(subs[6:])
    assert "--version" in run("__complete", "--v").out
    assert "alpha:hello" in run("__complete", "alpha:").out


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(run, shell):
    r = run("completion", shell)
    assert r.code == 0
    assert "conduit __complete" in r.out


def test_bash_completion_script_works_in_bash(run, plugin_dir, tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    bash = shutil.which("bash")
    assert bash, "bash is needed for this test"
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = bindir / "conduit"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m conduit "$@"\n')
    shim.chmod(0o755)
    script = run("completion", "bash").out
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}

    def complete(*words: str) -> list[str]:
        cmd = (
            f"{script}\nCOMP_WORDS=(conduit {' '.join(words)}); "
            f"COMP_CWORD={len(words)}; _conduit_complete; printf '%s\\n' \"${{COMPREPLY[@]}}\""
        )
        proc = subprocess.run(
            [bash, "-c", cmd], capture_output=True, text=True, env=env, timeout=60
        )
        return proc.stdout.split()

    assert complete("hel") == ["hello"]
    assert complete("plugins", "d") == ["disable", "doctor"]
    assert complete("--no-p") == ["--no-plugins"]


def test_safe_mode_reaches_the_plugins_commands(run, plugin_dir):
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    rows = {p["name"]: p for p in json.loads(run("--no-plugins", "plugins", "list", "--json").out)}
    assert rows["alpha"]["state"] == "disabled (env)"
    assert rows["plugins"]["state"] == "enabled"
    info = json.loads(run("--no-plugins", "plugins", "info", "alpha", "--json").out)
    assert "load" not in info  # a switched-off plugin is not imported to time it


def test_disabled_broken_plugin_is_silent(run, plugin_dir, monkeypatch):
    write(plugin_dir, "bad.py", manifest_block('name = "bad"\napi = ">=1.0,<2"\nnmae = "x"'))
    assert "skipped plugin 'bad'" in run("--help").err
    assert run("--no-plugins", "--help").err == ""
    monkeypatch.setenv("CONDUIT_DISABLE_PLUGINS", "bad")
    assert run("--help").err == ""
    monkeypatch.delenv("CONDUIT_DISABLE_PLUGINS")
    r = run("plugins", "disable", "bad")
    assert (r.code, r.out) == (0, "Disabled plugin 'bad'.\n")
    assert run("--help").err == ""


def test_pinned_conflict_is_quiet(run, plugin_dir, conduit_home):
    write(plugin_dir, "zeta.py", simple_plugin("zeta", ("deploy",)))
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("deploy",)))
    (conduit_home / "config.toml").write_text('[pins]\ndeploy = "zeta"\n')
    r = run("deploy")
    assert (r.code, r.out, r.err) == (0, "zeta deploy\n", "")


@pytest.mark.parametrize(
    ("value", "on"),
    [("1", True), ("yes", True), ("0", False), ("", False), ("false", False), ("off", False)],
)
def test_profile_env_flag(run, monkeypatch, value, on):
    monkeypatch.setenv("CONDUIT_PROFILE", value)
    assert ("start-up profile" in run("--version").err) == on


def test_kernel_hook_names_are_reserved(run, plugin_dir):
    src = manifest_block('name = "clash"\napi = ">=1.0,<2"\n[[commands]]\nname = "clash"') + (
        "import click\nfrom conduit.sdk import Plugin\n"
        "def before_command(command):\n    pass\n"
        "@click.command()\ndef clash():\n    pass\n"
        "class P(Plugin):\n    def boot(self, ctx):\n"
        "        ctx.register_hookspec(before_command)\n        ctx.register_command(clash)\n"
    )
    write(plugin_dir, "clash.py", src)
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    r = run("clash")
    assert r.code == 1
    assert r.err.splitlines()[0] == "error: plugin 'clash': hook 'before_command' is a kernel hook"
    assert run("hello").out == "alpha hello\n"


def _need(shell: str) -> str:
    """The shell's path; CI installs it (.ci/run), elsewhere the test is skipped without."""
    import os
    import shutil

    path = shutil.which(shell)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{shell} is missing: .ci/run should have installed it")
        pytest.skip(f"{shell} is not installed")
    return path


def _shim(tmp_path):  # type: ignore[no-untyped-def]
    import os
    import sys

    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    shim = bindir / "conduit"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m conduit "$@"\n')
    shim.chmod(0o755)
    return {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}


def test_fish_completion_script_works_in_fish(run, plugin_dir, tmp_path):
    import subprocess

    fish = _need("fish")
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    script = tmp_path / "conduit.fish"
    script.write_text(run("completion", "fish").out)
    env = _shim(tmp_path)

    def complete(line: str) -> list[str]:
        proc = subprocess.run(
            [fish, "--no-config", "-c", f"source {script}; complete -C '{line}'"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        return proc.stdout.splitlines()

    assert complete("conduit hel") == ["hello\tRun hello of alpha."]
    assert [x.split("\t")[0] for x in complete("conduit plugins d")] == ["disable", "doctor"]


def test_zsh_completion_script_works_in_zsh(run, plugin_dir, tmp_path):
    import subprocess

    zsh = _need("zsh")
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    script = run("completion", "zsh").out
    env = _shim(tmp_path)
    # Outside an interactive shell there is no completion system: stand in for its two
    # functions and call the script's function the way zsh would.
    harness = (
        "compdef() { :; }\n_files() { print FILES; }\n"
        '_describe() { local name=$2; print -rl -- "${(@P)name}"; }\n'
        f"{script}\n"
    )

    def complete(*words: str) -> list[str]:
        cmd = harness + f"words=(conduit {' '.join(words)}); CURRENT={len(words) + 1}; _conduit"
        proc = subprocess.run(
            [zsh, "-f", "-c", cmd], capture_output=True, text=True, env=env, timeout=60
        )
        return proc.stdout.splitlines()

    assert complete("hel") == ["hello:Run hello of alpha."]
    assert complete("alpha:he") == ["alpha\\:hello:Run hello of alpha."]
    assert complete("nothing-matches") == ["FILES"]


def test_unwritable_cache_still_works_and_says_so(run, plugin_dir, conduit_home):
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    (conduit_home / "cache").write_text("a file where the cache directory should be")
    for _ in range(2):  # rebuilt, and said, on every run
        r = run("hello")
        assert (r.code, r.out) == (0, "alpha hello\n")
        [line] = r.err.splitlines()
        assert line.startswith("conduit: warning: cannot write the plugin index to ")
        assert line.endswith("; it will be rebuilt on every run")
    assert "hello" in run("--help").out
