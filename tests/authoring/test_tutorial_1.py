"""Tutorial 1 (docs/tutorials/1-single-file.md) followed as written on a fresh machine:
a new HOME with no ~/.config/conduit, every ``$`` command of its console blocks run by
bash in the directory the tutorial is in, and the output it shows compared (its
author's home, /home/ada, stands for the new HOME)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorials" / "1-single-file.md"
AUTHOR_HOME = "/home/ada"
#: outputs that vary from run to run: compared by exit code only
VARYING = ("python -m pytest -q", "conduit plugins check weather.py")


def blocks(lang: str) -> list[str]:
    """The fenced blocks in ``lang`` ("": the console sessions), in order."""
    out: list[str] = []
    current: list[str] | None = None
    for line in TUTORIAL.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            if current is None:
                current = [] if line[3:] == lang else None
                if current is None:
                    current = ["\0"]  # another language: skipped
            else:
                if current[:1] != ["\0"]:
                    out.append("".join(f"{ln}\n" for ln in current))
                current = None
        elif current is not None:
            current.append(line)
    return out


def sessions() -> list[list[tuple[str, str]]]:
    """Each console block as (command, the output shown under it)."""
    out = []
    for block in blocks(""):
        steps: list[tuple[str, list[str]]] = []
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif steps:
                steps[-1][1].append(line)
        out.append([(cmd, "\n".join(lines)) for cmd, lines in steps])
    return out


def test_tutorial_1_verbatim_on_a_fresh_machine(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "src").mkdir(parents=True)
    # CONDUIT_WARM and XDG_RUNTIME_DIR kept: cold, as the conftest says, and a warm kernel
    # started anyway would be the test's, stopped after it
    kept = ("CONDUIT_WARM", "XDG_RUNTIME_DIR")
    env = {
        k: v
        for k, v in os.environ.items()
        if k in kept
        or (not k.startswith(("CONDUIT_", "XDG_", "PYTEST_")) and k not in ("HOME", "COLUMNS"))
    }
    env["HOME"] = str(home)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    cwd = home / "src"
    steps = sessions()
    assert [cmd for cmd, _ in steps[0]] == ["conduit plugins new weather"]
    assert not (home / ".config").exists()
    ran = []
    for number, session in enumerate(steps):
        if number == 3:  # step 4: the tutorial's edit, made as it describes
            plugin = cwd / "weather.py"
            source = plugin.read_text(encoding="utf-8")
            head = source[: source.index('@click.command("weather")')]
            plugin.write_text(head + blocks("python")[1], encoding="utf-8")
        for command, shown in session:
            ran.append(command)
            if command.startswith("cd "):
                cwd = cwd / command[3:]
                continue
            proc = subprocess.run(
                ["bash", "-c", command],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=240,
            )
            expect_fail = "--check" in command
            assert (proc.returncode != 0) is expect_fail, (command, proc.stdout, proc.stderr)
            if command in VARYING:
                continue
            got = (proc.stdout + proc.stderr).replace(str(home), AUTHOR_HOME).rstrip("\n")
            assert got == shown, command
    assert "cp weather.py ~/.config/conduit/plugins/" in ran
    assert "conduit weather Ada" in ran
