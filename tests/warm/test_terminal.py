"""Interactive commands on a real terminal, cold and warm, with the same results.

Each case runs ``conduit`` on a pseudo-terminal that is its controlling terminal (as a
shell's is), types what a person would (Enter, Ctrl-C, Ctrl-Z, ``fg``) and compares what
the terminal showed and the exit status. Under the warm kernel the command gets a
pseudo-terminal of its own, whose bytes the client copies (conduit/warm/client.py), so
prompts, hidden input, ``/dev/tty``, window sizes, Ctrl-C and job control must behave as
on the cold path.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from _factory import manifest_block, write

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(sys.platform != "linux", reason="POSIX terminals"),
]

MODES = pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])

TERM = """\
import os, shutil, signal, sys, time
import click
from conduit.sdk import Plugin

@click.command("ask")
def ask():
    click.echo(f"tty {sys.stdin.isatty()} {sys.stdout.isatty()} {sys.stderr.isatty()}")
    click.echo("size %dx%d" % tuple(shutil.get_terminal_size()))
    name = click.prompt("your name")
    word = click.prompt("password", hide_input=True)
    click.echo(f"hello {name}, {len(word)} characters")
    fd = os.open("/dev/tty", os.O_WRONLY)
    os.write(fd, b"written to /dev/tty\\n")
    os.close(fd)

@click.command("sure")
def sure():
    click.confirm("Delete everything?", abort=True)
    click.echo("deleted")

@click.command("sleepy")
@click.argument("flag")
def sleepy(flag):
    resized = []
    signal.signal(signal.SIGWINCH, lambda signum, frame: resized.append(signum))
    click.echo(f"running as {os.getpid()}")
    while not os.path.exists(flag):
        if resized:
            resized.clear()
            click.echo("resized to %dx%d" % tuple(shutil.get_terminal_size()))
        time.sleep(0.02)
    click.echo("done")

class P(Plugin):
    def boot(self, ctx):
        for cmd in (ask, sure, sleepy):
            ctx.register_command(cmd)
"""


def term_plugin(plugin_dir: Path) -> None:
    toml = 'name = "term"\napi = ">=1.0,<2"\n'
    toml += 'capabilities = ["filesystem:read", "filesystem:write:/dev/tty"]\n'
    for name in ("ask", "sure", "sleepy"):
        toml += f'[[commands]]\nname = "{name}"\n'
    write(plugin_dir, "term.py", manifest_block(toml) + TERM)


class Terminal:
    """A program on a pseudo-terminal that is its controlling terminal."""

    def __init__(self, argv: list[str], env: dict[str, str], rows: int = 30, cols: int = 90):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # pragma: no cover (the child)
            try:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.resize(rows, cols)
        self.seen = b""

    def resize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.fd, 4096)
        except OSError:  # EIO: everyone closed the terminal
            return False
        self.seen += chunk
        return bool(chunk)

    def expect(self, pattern: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        start = len(self.seen)
        while time.monotonic() < deadline:
            text = self.seen.decode("utf-8", "replace")
            match = re.search(pattern, text[start:] if False else text)
            if match:
                return match.group(0)
            if not self.read(0.05):
                break
        raise AssertionError(f"{pattern!r} never showed; the terminal has: {self.seen!r}")

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def wait(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                while self.read(0.05):
                    pass
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            self.read(0.05)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError(f"still running; the terminal has: {self.seen!r}")

    @property
    def text(self) -> str:
        return self.seen.decode("utf-8", "replace")


def environment(warm: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}  # CI means nobody to ask
    env["CONDUIT_WARM"] = "1" if warm else "0"
    env["TERM"] = "dumb"
    env.pop("COLUMNS", None)
    return env


def conduit_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "conduit", *args]


@pytest.fixture
def started(plugin_dir: Path) -> None:
    """The plugin, its grants and a running warm kernel (used by the warm cases; the cold
    ones run with CONDUIT_WARM=0 beside it)."""
    term_plugin(plugin_dir)
    env = {**os.environ, "CONDUIT_WARM": "0"}
    subprocess.run(
        [*conduit_argv("plugins", "grant", "term", "filesystem:read", "filesystem:write:/dev/tty")],
        env=env,
        check=True,
        capture_output=True,
    )
    subprocess.run(conduit_argv("server", "start"), env=env, check=True, capture_output=True)


def session(argv: list[str], warm: bool, script: list[tuple[str, str]]) -> tuple[int, str]:
    term = Terminal(argv, environment(warm))
    for wanted, typed in script:
        term.expect(wanted)
        term.send(typed)
    code = term.wait()
    return code, term.text


@pytest.mark.usefixtures("started")
def test_prompts_hidden_input_dev_tty_and_the_terminal_size() -> None:
    script = [("your name: ", "Ada\r"), ("password: ", "s3cret\r")]
    results = [session(conduit_argv("ask"), warm, script) for warm in (False, True)]
    cold, warm = results
    assert cold[0] == 0, cold[1]
    assert "tty True True True" in cold[1]
    assert "size 90x30" in cold[1]
    assert "hello Ada, 6 characters" in cold[1]
    assert "s3cret" not in cold[1]  # not echoed
    assert "written to /dev/tty" in cold[1]
    assert warm == cold


@pytest.mark.usefixtures("started")
@pytest.mark.parametrize("answer, code, shown", [("y", 0, "deleted"), ("n", 1, "Aborted.")])
def test_a_confirmation(answer: str, code: int, shown: str) -> None:
    script = [(r"Delete everything\? \[y/N\]: ", answer + "\r")]
    cold, warm = (session(conduit_argv("sure"), w, script) for w in (False, True))
    assert cold[0] == code and shown in cold[1], cold
    assert warm == cold


@pytest.mark.usefixtures("started")
@MODES
def test_ctrl_c_aborts_with_130(warm: bool, tmp_path: Path) -> None:
    term = Terminal(conduit_argv("sleepy", str(tmp_path / "never")), environment(warm))
    term.expect(r"running as \d+")
    term.send("\x03")
    assert term.wait() == 130
    assert term.text.rstrip().endswith("Aborted.")


@pytest.mark.usefixtures("started")
@MODES
def test_a_new_window_size_reaches_the_command(warm: bool, tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    term = Terminal(conduit_argv("sleepy", str(flag)), environment(warm))
    term.expect(r"running as \d+")
    term.resize(40, 120)  # the terminal signals its foreground job
    term.expect("resized to 120x40")
    flag.touch()
    assert term.wait() == 0
    assert "done" in term.text


@pytest.mark.usefixtures("started")
@MODES
def test_ctrl_z_stops_the_command_and_fg_resumes_it(warm: bool, tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    env = environment(warm)
    env["PS1"] = "$ "
    term = Terminal(["/bin/bash", "--norc", "--noprofile", "-i"], env)
    term.expect(r"\$ ")
    command = " ".join(conduit_argv("sleepy", str(flag)))
    term.send(f"{command}\r")
    pid = int(term.expect(r"running as (\d+)").split()[-1])
    term.send("\x1a")
    term.expect("Stopped")
    assert _state(pid) == "T"  # the command itself is stopped, not only the client
    flag.touch()
    time.sleep(0.3)
    assert _state(pid) == "T"
    term.send("fg\r")
    # the shell's prompt first: keys typed while a warm command still runs are its (they
    # go to its terminal, as with ssh), not the shell's
    term.expect(r"done\r\n(.*\r\n)*\$ $")
    term.send("echo status=$?\r")
    term.expect("status=0")
    term.send("exit\r")
    term.wait()


@pytest.mark.usefixtures("started")
@MODES
def test_the_editor_gets_the_terminal(warm: bool, conduit_home: Path, tmp_path: Path) -> None:
    editor = tmp_path / "editor.sh"
    editor.write_text(
        '#!/bin/sh\ntest -t 0 && test -t 1 && echo "# edited on a terminal" >> "$1"\n',
        encoding="utf-8",
    )
    editor.chmod(0o755)
    env = environment(warm)
    env["EDITOR"] = str(editor)
    term = Terminal(conduit_argv("config", "edit"), env)
    assert term.wait() == 0, term.text
    assert "# edited on a terminal" in (conduit_home / "config.toml").read_text(encoding="utf-8")


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rpartition(b")")[2].split()[0].decode()
