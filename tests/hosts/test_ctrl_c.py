"""Ctrl-C ends a command the same way in every host: ``Aborted.`` on stderr, exit 130.

Each command runs on a pseudo-terminal in a session of its own; once it has printed that
it runs, SIGINT goes to its whole process group, as a terminal sends it.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_wasm import install, module, with_sigint

from _factory import manifest_block, write

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(sys.platform != "linux", reason="POSIX signals"),
]

SLEEPER = """\
import sys, time
import click
from conduit.sdk import Plugin

@click.command("{name}")
def cmd():
    click.echo("running")
    sys.stdout.flush()
    time.sleep(60)

@click.command("{name}-ask")
def ask():
    click.prompt("your name")

class P(Plugin):
    def boot(self, ctx):
        ctx.register_command(cmd, "{name}")
        ctx.register_command(ask, "{name}-ask")
"""


def sleeper(name: str, isolation: str) -> str:
    toml = f'name = "{name}"\napi = ">=1.0,<2"\nisolation = "{isolation}"\n'
    toml += f'[[commands]]\nname = "{name}"\n[[commands]]\nname = "{name}-ask"\n'
    return manifest_block(toml) + SLEEPER.format(name=name)


def interrupt(argv: list[str], env: dict[str, str], ready: bytes) -> tuple[int, str]:
    """Run ``argv`` on a terminal; SIGINT to its process group once ``ready`` is shown.
    Returns the exit code and what the terminal showed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        with_sigint(argv),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
        close_fds=True,
    )
    os.close(slave)
    seen, sent = b"", False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready_fds, _, _ = select.select([master], [], [], 0.1)
            if ready_fds:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            if not sent and ready in seen:
                time.sleep(0.3)  # into the sleep (or the prompt's read)
                os.killpg(proc.pid, signal.SIGINT)
                sent = True
            if proc.poll() is not None and not ready_fds:
                break
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert sent, seen
    return code, seen.decode(errors="replace").replace("\r\n", "\n")


@pytest.fixture
def env(conduit_home: Path) -> dict[str, str]:
    return {**os.environ, "CONDUIT_HOME": str(conduit_home)}


@pytest.mark.parametrize("isolation", ["in-process", "process"])
def test_ctrl_c_in_a_python_command(plugin_dir, env, isolation):
    write(plugin_dir, "nap.py", sleeper("nap", isolation))
    code, shown = interrupt([sys.executable, "-m", "conduit", "nap"], env, b"running")
    assert code == 130, shown
    assert shown.rstrip().endswith("Aborted."), shown
    assert "Aborted!" not in shown and "Traceback" not in shown


@pytest.mark.parametrize("isolation", ["in-process", "process"])
def test_ctrl_c_at_a_prompt(plugin_dir, env, isolation):
    write(plugin_dir, "nap.py", sleeper("nap", isolation))
    code, shown = interrupt([sys.executable, "-m", "conduit", "nap-ask"], env, b"your name")
    assert code == 130, shown
    assert shown.rstrip().endswith("Aborted."), shown
    assert "Aborted!" not in shown and "Traceback" not in shown


def test_ctrl_c_in_a_webassembly_command(plugin_dir, env):
    install(
        plugin_dir,
        "spin",
        module(
            "(call $print (i32.const 100) (i32.const 8)) (loop $l (br $l))", data={100: "running\n"}
        ),
    )
    code, shown = interrupt([sys.executable, "-m", "conduit", "spin"], env, b"running")
    assert code == 130, shown
    assert shown.rstrip().endswith("Aborted."), shown
    assert "Traceback" not in shown


def test_ctrl_c_at_the_grant_prompt(plugin_dir, env):
    # the kernel's own prompt, before any plugin code runs
    toml = 'name = "needy"\napi = ">=1.0,<2"\ncapabilities = ["network:http"]\n'
    toml += '[[commands]]\nname = "needy"\n'
    write(plugin_dir, "needy.py", manifest_block(toml) + SLEEPER.format(name="needy"))
    env = {k: v for k, v in env.items() if k != "CI"}
    code, shown = interrupt([sys.executable, "-m", "conduit", "needy"], env, b"[y/N]")
    assert code == 130, shown
    assert shown.rstrip().endswith("Aborted."), shown
