"""Completion end to end: ``__complete`` answers, and the generated scripts in real bash,
zsh and fish (interactive bash and zsh on a pseudo-terminal, pressing TAB)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from conduit.builtins import BUILTINS
from conduit.indexer.discover import ENTRY_POINT_GROUP

from _factory import manifest_block, write

#: the installed console script, as a user runs it
CONDUIT = os.path.join(os.path.dirname(sys.executable), "conduit")

GREET = (
    manifest_block("""
    name = "greet"
    description = "Greetings"
    api = ">=1.0,<2"

    [[commands]]
    name = "hello"
    help = "Say hello."
    usage = "[NAME] [--shout] [--lang en|fr] [--out FILE]"
""")
    + """
import click
from conduit.sdk import Plugin


@click.command("hello")
@click.argument("name", required=False)
@click.option("--shout", is_flag=True)
@click.option("--lang", type=click.Choice(["en", "fr"]))
@click.option("--out")
def hello(name, shout, lang, out):
    click.echo("hello")


class GreetPlugin(Plugin):
    def boot(self, ctx):
        ctx.register_command(hello)
"""
)


@pytest.fixture
def greet(plugin_dir: Path) -> Path:
    return write(plugin_dir, "greet.py", GREET)


def values(out: str) -> list[str]:
    return [line.split("\t")[0] for line in out.splitlines() if line]


def test_plugin_names_where_a_plugin_is_expected(run, greet) -> None:  # type: ignore[no-untyped-def]
    for sub in ("info", "enable", "disable", "grant", "revoke", "uninstall", "permissions"):
        # the built-ins, the installed first-party plugins and the test's own
        expected = sorted(
            [*BUILTINS, *(e.name for e in entry_points(group=ENTRY_POINT_GROUP)), "greet"]
        )
        assert values(run("__complete", "plugins", sub, "").out) == expected, sub
    assert values(run("__complete", "plugins", "info", "gre").out) == ["greet"]
    assert values(run("__complete", "plugins:plugins", "enable", "gre").out) == ["greet"]
    # one name only where the command takes one; several for uninstall
    assert run("__complete", "plugins", "info", "greet", "").out == "\n"
    assert values(run("__complete", "plugins", "uninstall", "greet", "dev").out) == [
        "dev",
        "devtools",
    ]
    # not where a new name is expected
    assert run("__complete", "plugins", "new", "").out == "\n"


def test_command_options_and_their_values(run, greet) -> None:  # type: ignore[no-untyped-def]
    assert values(run("__complete", "plugins", "info", "greet", "--").out) == [
        "--json",
        "--no-load",
        "--help",
    ]
    assert values(run("__complete", "plugins", "graph", "--format", "").out) == ["text", "dot"]
    assert values(run("__complete", "plugins", "cache", "prune", "-").out) == ["--all", "--help"]
    assert values(run("__complete", "hello", "--").out) == [
        "--shout",
        "--lang",
        "--out",
        "--help",
    ]
    assert values(run("__complete", "greet:hello", "--lang", "").out) == ["en", "fr"]
    assert run("__complete", "hello", "--out", "").out == "\n"  # a file: the shell's own
    assert values(run("__complete", "--debug", "config", "v").out) == ["validate"]
    assert values(run("__complete", "greet:").out) == ["greet:hello"]


def test_plugins_disabled_for_one_run_are_not_offered(run, greet, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert values(run("__complete", "hel").out) == ["hello"]
    assert values(run("__complete", "--no-plugins", "hel").out) == []
    monkeypatch.setenv("CONDUIT_DISABLE_PLUGINS", "greet")
    assert values(run("__complete", "hel").out) == []
    assert values(run("__complete", "greet:").out) == []
    assert values(run("__complete", "plugins:").out)[:2] == ["plugins:plugins"]


def test_scripts_call_the_installed_conduit_by_absolute_path(run) -> None:  # type: ignore[no-untyped-def]
    proc = subprocess.run(
        [CONDUIT, "completion", "bash"], capture_output=True, text=True, timeout=60, check=True
    )
    assert f"< <({CONDUIT} __complete " in proc.stdout
    # in-process (sys.argv[0] is not conduit): the script next to this interpreter
    for shell in ("bash", "zsh", "fish"):
        assert f"{CONDUIT} __complete" in run("completion", shell).out


def _need(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed")
    return found


def _script(shell: str, tmp_path: Path) -> Path:
    script = tmp_path / f"conduit.{shell}"
    proc = subprocess.run(
        [CONDUIT, "completion", shell], capture_output=True, text=True, timeout=60, check=True
    )
    script.write_text(proc.stdout)
    return script


def _env() -> dict[str, str]:
    # No conduit on PATH (a venv not activated): the scripts must not need one.
    env = {**os.environ, "PATH": "/usr/bin:/bin", "TERM": "dumb", "INPUTRC": "/dev/null"}
    assert shutil.which("conduit", path=env["PATH"]) is None
    return env


def _tab(argv: list[str], setup: str, line: str) -> str:
    """Type ``line`` and TAB into an interactive shell; the line as the shell completed it."""
    import pty
    import select
    import time

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, env=_env(), start_new_session=True
    )
    os.close(slave)
    seen = b""

    def until(marker: bytes, timeout: float = 30) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while marker not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    break

    try:
        os.write(master, f"{setup}; echo @@READ''Y@@\n".encode())
        until(b"@@READY@@")
        seen = seen[seen.index(b"@@READY@@") :]
        until(b"@@> ")  # the next prompt: the line editor is ready for a TAB
        seen = b""
        os.write(master, f"{line}\t".encode())
        # the shell redraws the line with the completion and a space after it
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _shown(seen, line).endswith(" "):
            if select.select([master], [], [], 0.1)[0]:
                seen += os.read(master, 4096)
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
    return _shown(seen, line)


def _shown(seen: bytes, line: str) -> str:
    """The command line as the terminal shows it, once it is longer than what was typed."""
    import re

    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", seen.decode(errors="replace"))
    text = text.replace("\r", "")
    shown = text[text.rfind("conduit ") :].split("\n")[0]
    return shown if len(shown) > len(line) else ""


@pytest.mark.parametrize(
    ("line", "completed"),
    [
        ("conduit greet:he", "conduit greet:hello "),
        ("conduit plugins info gr", "conduit plugins info greet "),
        ("conduit greet:hello --sh", "conduit greet:hello --shout "),
        ("conduit hello --lang f", "conduit hello --lang fr "),
        ("conduit config val", "conduit config validate "),
    ],
)
@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_tab_in_an_interactive_shell(
    greet, tmp_path: Path, shell: str, line: str, completed: str
) -> None:  # type: ignore[no-untyped-def]
    script = _script(shell, tmp_path)
    if shell == "bash":
        argv = [_need("bash"), "--norc", "--noprofile", "-i"]
        setup = f"PS1='@@> '; source {script}"
    else:
        argv = [_need("zsh"), "-f", "-i"]
        setup = f"PS1='@@> '; autoload -U compinit; compinit -u; source {script}"
    assert _tab(argv, setup, line) == completed


def test_fish(greet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fish = _need("fish")
    script = _script("fish", tmp_path)

    def complete(line: str) -> list[str]:
        proc = subprocess.run(
            [fish, "--no-config", "-c", f"source {script}; complete -C '{line}'"],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=60,
        )
        return values(proc.stdout)

    assert complete("conduit greet:") == ["greet:hello"]
    assert complete("conduit plugins info gr") == ["greet"]
    assert sorted(complete("conduit hello --")) == ["--help", "--lang", "--out", "--shout"]
    assert complete("conduit hello --lang ") == ["en", "fr"]
