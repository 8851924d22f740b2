"""Fixtures for the first-party plugins' tests: Conduit through ``conduit.testing`` and
real git repositories in temporary directories."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conduit.testing import Conduit


@pytest.fixture
def kit(conduit_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Conduit]:
    """``conduit.testing``'s :class:`Conduit` in this test's home; the first-party
    plugins are installed with Conduit (entry points of conduit-devtool)."""
    c = Conduit(conduit_home, tmp_path / "conduit-testing", monkeypatch)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def git_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git set-up of our own (identity, default branch main), and no repository above
    ``tmp_path`` for git to find."""
    config = tmp_path / "gitconfig"
    config.write_text(
        "[user]\n\tname = Ada\n\temail = ada@example.org\n"
        "[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n"
    )
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    return tmp_path


Git = Callable[..., str]


@pytest.fixture
def git(git_env: Path) -> Git:
    """``git(repo, *args)``: run git in ``repo``, return its output, fail the test on error."""

    def run(repo: Path, *args: str) -> str:
        proc = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, f"git {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    return run
