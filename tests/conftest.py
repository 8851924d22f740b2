"""Shared fixtures: every test gets a fresh, temporary CONDUIT_HOME."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from _wasmbuild import build_pyhash
from conduit.cli import main

from _warm import running

#: the test modules whose ``run`` commands also run through the warm kernel (the "warm
#: pass": the CLI-level tests): each of their tests that uses ``run`` runs twice, cold
#: (in this process) and warm (a ``conduit`` process served by a server of the test's)
WARM_PASS = ("tests/cli/test_cli.py", "tests/cli/test_surface.py")


@pytest.fixture(autouse=True)
def conduit_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "conduit-home"
    home.mkdir()
    monkeypatch.setenv("CONDUIT_HOME", str(home))
    for var in ("CONDUIT_DISABLE_PLUGINS", "CONDUIT_PROFILE", "CONDUIT_REBUILD_INDEX"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("COLUMNS", "100")
    # The warm kernel only where a test asks for it, with its sockets in a directory of
    # the test's own (short: a socket's path is limited to 107 bytes); every server a
    # test started is stopped after it.
    monkeypatch.setenv("CONDUIT_WARM", "0")
    runtime = tempfile.mkdtemp(prefix="cdt-", dir="/tmp")
    monkeypatch.setenv("XDG_RUNTIME_DIR", runtime)
    yield home
    stop_servers(runtime)
    shutil.rmtree(runtime, ignore_errors=True)


def pytest_configure(config: pytest.Config) -> None:
    # Session-scoped fixtures run `conduit` before any test's conduit_home: no warm
    # kernel for them either (a test that wants one says so).
    os.environ["CONDUIT_WARM"] = "0"


@pytest.fixture(scope="session")
def pyhash_built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CONDUIT_HOME-like directory with examples/wasm/pyhash built by componentize-py
    (the session's one real build of it), installed and precompiled (tests/_wasmbuild.py)."""
    return build_pyhash(tmp_path_factory.mktemp("pyhash-build"))


def stop_servers(runtime: str) -> list[int]:
    """Stop every warm kernel server with its socket under ``runtime``; their pids."""
    stopped = []
    directory = os.path.join(runtime, "conduit")
    for name in os.listdir(directory) if os.path.isdir(directory) else ():
        if not name.endswith(".state"):
            continue
        with open(os.path.join(directory, name), encoding="utf-8") as f:
            state = dict(line.rstrip("\n").partition("=")[::2] for line in f)
        pid = int(state.get("pid", "0") or 0)
        if pid <= 0:
            continue
        stopped.append(pid)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and running(pid):
            time.sleep(0.01)
        if running(pid):
            os.kill(pid, signal.SIGKILL)
        # a server this process started (start_detached) is its child: reap it
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    return stopped


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The warm pass: ``run`` tests of :data:`WARM_PASS` modules and tests marked
    ``warm_pass``, cold and warm."""
    path = metafunc.definition.path.as_posix()
    marked = metafunc.definition.get_closest_marker("warm_pass") is not None
    if "run" in metafunc.fixturenames and (marked or path.endswith(WARM_PASS)):
        metafunc.parametrize("kernel_mode", ["cold", "warm"], indirect=True)


@pytest.fixture
def kernel_mode(request: pytest.FixtureRequest) -> str:
    """``cold`` (in this process) or ``warm`` (through the warm kernel) for ``run``."""
    return str(getattr(request, "param", "cold"))


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
def run(capsys: pytest.CaptureFixture[str], kernel_mode: str):  # type: ignore[no-untyped-def]
    """Run ``conduit ARGS...`` in this process; returns exit code, stdout, stderr. In the
    warm pass (:data:`WARM_PASS`), a ``conduit`` process runs it through a warm kernel
    started for the test, and the test fails if that server did not serve every command
    (it exits when it refuses one)."""
    if kernel_mode == "warm":
        server = WarmServer()
        yield server.run
        server.check()
        return

    def _run(*args: str) -> Result:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    yield _run


class WarmServer:
    """A warm kernel for one test, started on its first command."""

    def __init__(self) -> None:
        self.pid = 0

    def conduit(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "conduit", *args],
            capture_output=True,
            text=True,
            env={**os.environ, "CONDUIT_WARM": "1"},
            timeout=60,
        )

    def state(self) -> dict[str, str]:
        from conduit.paths import resolve
        from conduit.warm.client import address
        from conduit.warm.server import read_state

        return read_state(address(resolve()))

    def run(self, *args: str) -> Result:
        if not self.pid:
            # started here rather than with `conduit server start` (tests/warm has those)
            from conduit.warm.client import start_detached

            start_detached()
            deadline = time.monotonic() + 60
            while not self.state() and time.monotonic() < deadline:
                time.sleep(0.01)
            self.pid = int(self.state()["pid"])
        proc = self.conduit(*args)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def check(self) -> None:
        if self.pid:
            state = self.state()
            assert state.get("pid") == str(self.pid), f"the warm kernel stopped serving: {state}"


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
