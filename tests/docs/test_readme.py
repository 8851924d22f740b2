"""The README's first command, verbatim, on a copy of this checkout with a clean home."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from _doctest import REPO


def first_bash_block() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(r"^```bash\n(.*?)\n```", text, re.S | re.M)
    assert m, "README.md has no bash block"
    return m.group(1)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_readme_first_command(tmp_path: Path) -> None:
    checkout = tmp_path / "conduit"
    checkout.mkdir()
    # The committed tree plus the working tree's changes to tracked files, without .venv.
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = REPO / os.fsdecode(name)
        if src.is_file():
            dst = checkout / os.fsdecode(name)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
            dst.chmod(src.stat().st_mode & 0o777)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=checkout, check=True)
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "HOME": str(home),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "GIT_AUTHOR_NAME": "Ada",
        "GIT_AUTHOR_EMAIL": "ada@example.org",
        "GIT_COMMITTER_NAME": "Ada",
        "GIT_COMMITTER_EMAIL": "ada@example.org",
    }
    # XDG_RUNTIME_DIR: the warm kernel these commands start is the test's, stopped after it
    for var in (
        "PIP_INDEX_URL",
        "PIP_CERT",
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "UV_INDEX_URL",
        "XDG_RUNTIME_DIR",
    ):
        if var in os.environ:
            env[var] = os.environ[var]
    subprocess.run(["git", "add", "-A"], cwd=checkout, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "checkout"], cwd=checkout, check=True, env=env)
    proc = subprocess.run(
        ["bash", "-c", first_bash_block()],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    # repos status: this checkout, on main, with its files committed
    assert re.search(r"^REPO\s+BRANCH\s+UPSTREAM\s+SYNC\s+DIRTY\s+STASHES$", proc.stdout, re.M), out
    assert re.search(r"^\.\s+main\s+-\s+no upstream\s+0\s+0$", proc.stdout, re.M), out
    # the know round trip: recorded with its context, then found by full-text search
    assert re.search(r"^recorded note #1 \(conduit@main\)$", proc.stdout, re.M), out
    found = proc.stdout.split("recorded note #1", 1)[1]
    assert re.search(
        r"^#1 .*conduit@main #setup\n +\[Conduit\] works in this checkout$", found, re.M
    ), out
    assert re.search(r"^Python\s+\d+", proc.stdout, re.M), out  # loc src
    assert "error" not in proc.stderr.lower(), proc.stderr
