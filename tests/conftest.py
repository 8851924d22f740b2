"""Shared fixtures: every test gets a fresh, temporary CONDUIT_HOME."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conduit.cli import main


@pytest.fixture(autouse=True)
def conduit_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "conduit-home"
    home.mkdir()
    monkeypatch.setenv("CONDUIT_HOME", str(home))
    for var in ("CONDUIT_DISABLE_PLUGINS", "CONDUIT_PROFILE", "CONDUIT_REBUILD_INDEX"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("COLUMNS", "100")
    yield home


@pytest.fixture
def plugin_dir(conduit_home: Path) -> Path:
    path = conduit_home / "plugins"
    path.mkdir(exist_ok=True)
    return path


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run ``conduit ARGS...`` in this process; returns exit code, stdout, stderr."""

    def _run(*args: str) -> Result:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return _run


@pytest.fixture
def run_subprocess():  # type: ignore[no-untyped-def]
    """Run ``python -m conduit ARGS...`` in a fresh interpreter (for import checks)."""

    def _run(*args: str, env: dict[str, str] | None = None) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "conduit", *args],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            timeout=60,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return _run
