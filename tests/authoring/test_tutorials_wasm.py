"""Tutorial 4 (docs/tutorials/4-webassembly.md) followed as written: its install line,
its files and its commands, run by a shell in a fresh directory, with the outputs it
shows wherever they are not times or the author's paths.

Slow: each of the plugin's own tests builds the component (componentize-py, each into
its own Conduit home); ``plugins build`` then takes the module they built (the build
cache) and compiles it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _wasmbuild import CACHE_HIT, seed_from_tests

pytest.importorskip("wasmtime")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorials" / "4-webassembly.md"
#: where the tutorial's author ran it
AUTHOR_SRC = "/home/ada/src"


def fenced(lang: str) -> list[str]:
    """The tutorial's code blocks in ``lang`` (``""``: the console sessions)."""
    blocks: list[tuple[str, str]] = []
    current: list[str] | None = None
    for line in TUTORIAL.read_text(encoding="utf-8").splitlines(keepends=True):
        if line.startswith("```") and current is None:
            current, info = [], line[3:].strip()
        elif line.startswith("```") and current is not None:
            blocks.append((info, "".join(current)))
            current = None
        elif current is not None:
            current.append(line)
    return [text for info, text in blocks if info == lang]


def commands() -> list[tuple[str, str]]:
    """Each ``$ COMMAND`` of the console sessions with the output shown under it."""
    found: list[tuple[str, str]] = []
    for block in fenced(""):
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, _, output = chunk.partition("\n")
            found.append((command, output))
    return found


def shown(command: str) -> str:
    """The output the tutorial shows for ``command``."""
    outputs = [out for cmd, out in commands() if cmd == command]
    assert outputs, f"the tutorial no longer runs {command!r}"
    return outputs[0]


def test_tutorial_4_as_written(tmp_path: Path, conduit_home: Path) -> None:
    bindir = os.path.dirname(sys.executable)  # conduit, python and pytest, as installed
    if shutil.which("componentize-py", path=bindir) is None:
        pytest.skip("componentize-py is not installed (it is in the [test] extra)")
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ["PATH"]}

    def shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["bash", "-c", command],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert proc.returncode == 0, f"$ {command}\n{proc.stdout}{proc.stderr}"
        return proc

    # Install: everything the steps run
    (install,) = [cmd for cmd, _ in commands() if cmd.startswith("pip install")]
    for needed in ("conduit-devtool[wasm]", "componentize-py", "pytest"):
        assert needed in install

    # 1. Create it
    new = "conduit plugins new count --template wasm"
    out = shell(new, tmp_path).stdout
    assert out == shown(new).replace(AUTHOR_SRC, str(tmp_path))
    project = tmp_path / "count"

    # 2. Make it yours; 3. Test it
    app, test = fenced("python")
    (project / "app.py").write_text(app)
    (toml,) = fenced("toml")
    (project / "conduit-plugin.toml").write_text(toml)
    (project / "tests" / "test_count.py").write_text(test)
    basetemp = tmp_path / "project-tests"  # where its tests' Conduit homes are
    out = shell(f"python -m pytest -q -p no:cacheprovider --basetemp={basetemp}", project).stdout
    assert re.search(r"^2 passed", out, re.M), out

    # 4. Install it (no terminal: the grant is the command it prints, run as printed).
    # Its tests built this source (componentize-py): with their build cache, as on the
    # author's machine after a build, it takes that module and compiles it.
    seed_from_tests(conduit_home, basetemp)
    out = shell("conduit plugins build .", project).stdout
    assert CACHE_HIT in out
    assert f"installed {conduit_home / 'plugins' / 'count.wasm'}" in out
    assert "precompiled in" in out
    grant = re.search(r"grant with: (conduit plugins grant .*)", out)
    assert grant is not None, out
    assert "filesystem:read:${workspace}" in shell(grant[1], project).stdout
    for command in (
        "printf 'a b\\nc\\n' | conduit count",
        "conduit count app.py",
        "conduit count --help",
    ):
        assert shell(command, project).stdout == shown(command), command
