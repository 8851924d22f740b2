"""The surface: colour (terminal, pipe, NO_COLOR, FORCE_COLOR, --color), one error style
for usage errors at every level, -h everywhere, --help at scale, hints that do not
defeat themselves."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest
from pyte import Screen, Stream

from conduit.store._tools import Tool

from _factory import imported_by, manifest_block, pty_run, simple_plugin, write

CONDUIT = [sys.executable, "-m", "conduit"]
ESC = "\x1b"
RED_ERROR = "\x1b[1;31merror:\x1b[0m"

GREET = manifest_block(
    """
    name = "greet"
    api = ">=1.0,<2"
    isolation = "ISOLATION"

    [[commands]]
    name = "greet"
    help = "Greet someone."
    """
) + textwrap.dedent(
    """
    import click
    from conduit.sdk import Plugin

    @click.command("greet")
    @click.argument("name")
    @click.option("--shout", is_flag=True)
    def greet(name, shout):
        \"\"\"Greet someone.\"\"\"
        click.echo(f"Hello, {name}!")

    class P(Plugin):
        def boot(self, ctx):
            ctx.register_command(greet)
    """
)


def greet_plugin(plugin_dir: Path, isolation: str = "in-process") -> None:
    write(plugin_dir, "greet.py", GREET.replace("ISOLATION", isolation))


@pytest.fixture
def env(conduit_home: Path) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    out["CONDUIT_HOME"] = str(conduit_home)
    out.pop("TERM", None)
    return out


def shown(text: str) -> list[str]:
    """The lines a terminal shows for ``text`` (colour codes interpreted)."""
    screen = Screen(200, 40)
    Stream(screen).feed(text.replace("\n", "\r\n"))
    return [line.rstrip() for line in screen.display if line.strip()]


# -- colour ----------------------------------------------------------------------------------


def test_errors_and_hints_are_coloured_on_a_terminal(env):
    code, _, text = pty_run([*CONDUIT, "nosuchcommand"], None, env)
    assert code == 2
    assert RED_ERROR in text and "\x1b[36mhint:\x1b[0m" in text
    assert shown(text) == ["error: unknown command 'nosuchcommand'", "hint: see 'conduit --help'"]


def test_table_header_and_states_are_coloured_on_a_terminal(env, plugin_dir):
    write(plugin_dir, "alpha.py", simple_plugin("alpha"))
    env["CONDUIT_DISABLE_PLUGINS"] = "alpha"
    code, _, text = pty_run([*CONDUIT, "plugins", "list"], None, env)
    assert code == 0
    assert "\x1b[1mNAME" in text
    assert "\x1b[32menabled\x1b[0m" in text and "\x1b[2mdisabled (env)\x1b[0m" in text
    lines = shown(text)
    assert lines[0].split() == ["NAME", "VERSION", "SOURCE", "STATE", "ISOLATION", "CAPABILITIES"]
    assert any(line.startswith("alpha ") and "disabled (env)" in line for line in lines)


def test_no_colour_when_piped(run_subprocess, plugin_dir):
    write(plugin_dir, "bad.py", manifest_block('name = "bad"\napi = ">=1.0,<2"\nnmae = "x"'))
    r = run_subprocess("nosuchcommand")
    assert r.code == 2 and ESC not in r.err and r.err.startswith("conduit: warning: ")
    assert "error: unknown command" in r.err
    r = run_subprocess("plugins", "list")
    assert r.code == 0 and ESC not in r.out and r.out.startswith("NAME ")


@pytest.mark.parametrize(
    ("args", "environ", "coloured"),
    [
        ((), {"NO_COLOR": "1"}, False),
        ((), {"NO_COLOR": "", "FORCE_COLOR": ""}, True),  # empty NO_COLOR: not set
        ((), {"TERM": "dumb"}, False),
        (("--color", "never"), {"FORCE_COLOR": "1"}, False),
        (("--color=never",), {}, False),
        (("--color", "auto"), {"NO_COLOR": "yes"}, False),
        (("--color", "always"), {"NO_COLOR": "1"}, True),
        ((), {"NO_COLOR": "1", "FORCE_COLOR": "1"}, False),  # NO_COLOR before FORCE_COLOR
    ],
)
def test_colour_settings_on_a_terminal(env, args, environ, coloured):
    code, _, text = pty_run([*CONDUIT, *args, "nosuchcommand"], None, {**env, **environ})
    assert code == 2
    assert (RED_ERROR in text) is coloured, text
    assert (ESC in text) is coloured, text


@pytest.mark.parametrize(
    ("args", "environ", "coloured"),
    [
        ((), {"FORCE_COLOR": "1"}, True),
        ((), {"FORCE_COLOR": "0"}, False),
        (("--color", "always"), {}, True),
        ((), {}, False),
    ],
)
def test_colour_settings_when_piped(run_subprocess, plugin_dir, args, environ, coloured):
    write(plugin_dir, "alpha.py", simple_plugin("alpha"))
    r = run_subprocess(*args, "nosuchcommand", env=environ)
    assert (RED_ERROR in r.err) is coloured, r.err
    r = run_subprocess(*args, "plugins", "list", env=environ)
    assert ("\x1b[1mNAME" in r.out) is coloured, r.out
    assert ("\x1b[32menabled\x1b[0m" in r.out) is coloured, r.out


def test_a_bad_color_value_is_a_usage_error(run):
    r = run("--color", "sometimes", "--help")
    assert r.code == 2
    assert r.err == "error: --color needs one of auto, always, never\nhint: --color never\n"


def test_colour_codes_from_a_plugin_stay_inert_when_conduit_adds_its_own(
    run_subprocess, plugin_dir
):
    source = simple_plugin("spy", ("peek",)).replace(
        "click.echo('spy peek')", "raise RuntimeError('boom \\x1b[2J')"
    )
    write(plugin_dir, "spy.py", source)
    r = run_subprocess("--color", "always", "peek")
    assert r.code == 1
    assert r.err.startswith(RED_ERROR + " plugin 'spy': command 'peek' failed")
    assert "boom \\x1b[2J" in r.err
    # Conduit's own codes are the only escapes: error:, hint:
    assert r.err.count(ESC) == 4, r.err


def test_the_color_option_adds_only_the_style_module_to_help():
    # (plain --help: tests/cli/test_imports.py, unchanged)
    probe = ("--color", "always", "--help")
    imported_by(*probe, watch_kernel=False)
    code, new = imported_by(*probe, watch_kernel=False)
    assert code == 0
    assert {m for m in new if m.startswith("conduit")} == {
        "conduit",
        "conduit.cli",
        "conduit.index",
        "conduit.paths",
        "conduit.style",
        "conduit.timing",
    }


# -- one error style -------------------------------------------------------------------------


@pytest.mark.parametrize("isolation", ["in-process", "process"])
def test_a_plugin_command_usage_error_is_in_the_one_style(run, plugin_dir, isolation):
    greet_plugin(plugin_dir, isolation)
    r = run("greet")
    assert r.code == 2
    assert r.err == (
        "error: Missing argument 'NAME'.\n"
        "hint: see 'conduit greet --help'\n"
        "usage: conduit greet [OPTIONS] NAME\n"
    )
    r = run("greet", "Ada", "--shuot")
    assert r.code == 2
    assert r.err.splitlines()[0] == "error: No such option '--shuot'. Did you mean '--shout'?"
    assert "Usage:" not in r.err and "Error:" not in r.err


def test_a_builtin_subcommand_usage_error_is_in_the_one_style(run):
    r = run("plugins", "info")
    assert r.code == 2
    assert r.err == (
        "error: Missing argument 'NAME'.\n"
        "hint: see 'conduit plugins info --help'\n"
        "usage: conduit plugins info [OPTIONS] NAME\n"
    )


def test_a_usage_error_is_coloured_on_a_terminal(env):
    code, _, text = pty_run([*CONDUIT, "plugins", "info"], None, env)
    assert code == 2
    assert RED_ERROR in text and "\x1b[1musage:\x1b[0m" in text
    assert shown(text)[-1] == "usage: conduit plugins info [OPTIONS] NAME"


# -- -h everywhere ---------------------------------------------------------------------------


@pytest.mark.parametrize("isolation", ["in-process", "process"])
def test_dash_h_works_for_plugin_commands(run, plugin_dir, isolation):
    greet_plugin(plugin_dir, isolation)
    r = run("greet", "-h")
    assert r.code == 0, r.err
    assert r.out.startswith("Usage: conduit greet [OPTIONS] NAME")
    assert "-h, --help" in r.out


@pytest.mark.parametrize(
    "argv", [("plugins", "-h"), ("plugins", "list", "-h"), ("-h", "plugins", "info")]
)
def test_dash_h_works_for_builtin_subcommands(run, argv):
    r = run(*argv)
    assert r.code == 0, r.err
    assert r.out.startswith("Usage: conduit plugins")


# -- --help at scale -------------------------------------------------------------------------


def test_help_at_scale_is_one_line_per_plugin(run, plugin_dir):
    for i in range(100):
        write(plugin_dir, f"p{i:03d}.py", simple_plugin(f"p{i:03d}", (f"c{i:03d}", f"d{i:03d}")))
    r = run("--help")
    assert r.code == 0
    lines = r.out.splitlines()
    assert len(lines) < 130, len(lines)
    assert any(line.split() == ["p042", "c042,", "d042"] for line in lines), r.out
    assert "Run c042 of p042." not in r.out
    assert "'conduit --help --all'" in r.out
    full = run("--help", "--all")
    assert full.code == 0
    assert "Run c042 of p042." in full.out and "Run d042 of p042." in full.out
    assert "Commands from p042: The p042 plugin" in full.out
    assert len(full.out.splitlines()) > 400


def test_help_under_the_threshold_lists_every_command(run, plugin_dir):
    for i in range(5):
        write(plugin_dir, f"p{i}.py", simple_plugin(f"p{i}", (f"c{i}",)))
    r = run("--help")
    assert "Run c3 of p3." in r.out and "Commands from p3: The p3 plugin" in r.out
    assert r.out == run("--help", "--all").out


def test_all_without_help_is_a_usage_error(run):
    r = run("--all", "plugins", "list")
    assert r.code == 2
    assert r.err.startswith("error: --all goes with --help")


# -- hints that do not defeat themselves -----------------------------------------------------


def test_no_debug_hint_under_debug(run, plugin_dir):
    source = simple_plugin("alpha", ("boom",)).replace(
        "click.echo('alpha boom')", "raise KeyError('x')"
    )
    write(plugin_dir, "alpha.py", source)
    r = run("boom")
    assert r.err.splitlines()[-1] == "hint: run again with --debug for the traceback"
    r = run("--debug", "boom")
    assert r.code == 1
    assert "Traceback" in r.err and "--debug" not in r.err


def test_an_import_failure_under_debug_keeps_the_rest_of_its_hint(run, plugin_dir):
    write(plugin_dir, "alpha.py", simple_plugin("alpha", module_prefix="raise RuntimeError('no')"))
    r = run("--debug", "hello")
    assert r.code == 3
    assert r.err.splitlines()[-1] == "hint: 'conduit plugins disable alpha' turns it off"


def test_doctor_does_not_tell_you_to_run_doctor(run, plugin_dir):
    write(plugin_dir, "bad.py", manifest_block('name = "bad"\napi = ">=1.0,<2"\nnmae = "x"'))
    assert "(see 'conduit plugins doctor')" in run("plugins", "list").err
    r = run("plugins", "doctor")
    assert "skipped plugin 'bad'" in r.err
    assert "plugins doctor" not in r.err


def test_no_verbose_hint_after_the_installer_output_was_shown(tmp_path: Path) -> None:
    """--verbose is suggested only when output was held back: not with --verbose, not
    when the installer's last lines (shown above the error) were all it said."""
    chatty = tmp_path / "chatty"
    chatty.write_text("#!/bin/sh\nfor i in $(seq 30); do echo line $i; done\nexit 1\n")
    chatty.chmod(0o755)
    with pytest.raises(Exception) as quiet:
        Tool("pip", str(chatty)).install(["nothing-here"])
    assert quiet.value.hint == "run again with --verbose to see all of pip's output"  # type: ignore[attr-defined]
    with pytest.raises(Exception) as verbose:
        Tool("pip", str(chatty), verbose=True).install(["nothing-here"])
    assert verbose.value.hint is None  # type: ignore[attr-defined]
    with pytest.raises(Exception) as short:
        Tool("pip", "/bin/false").install(["nothing-here"])
    assert short.value.hint is None  # type: ignore[attr-defined]


def test_the_plugin_directory_exists_after_the_first_run(conduit_home: Path, run) -> None:  # type: ignore[no-untyped-def]
    """A newcomer's first step after installing may be `cp weather.py` into the plugin
    directory: any first run creates it (and the config directory above it)."""
    plugins = conduit_home / "plugins"
    assert not plugins.exists()
    assert run("--help").code == 0
    assert plugins.is_dir()
    (plugins / "weather.py").write_text(simple_plugin("weather", ("weather",), output="sunny"))
    result = run("weather")
    assert (result.code, result.out) == (0, "sunny\n")
