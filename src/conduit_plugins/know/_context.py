"""Where a note was written: the git repository, branch and commit (from the ``git``
program, capability ``process:execute:git``) and the directory."""

from __future__ import annotations

import os
import subprocess


def _git(cwd: str, *args: str) -> str | None:
    """``git ARGS`` in ``cwd``: its output, or None if git failed or is not installed."""
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def capture(cwd: str | None = None) -> dict[str, str | None]:
    """The context of a note written in ``cwd``: ``repo`` (the work tree's root),
    ``branch`` (None when HEAD is detached), ``commit`` (None before the first commit) and
    ``directory``; outside a git work tree only the directory."""
    directory = os.path.abspath(cwd or os.getcwd())
    context: dict[str, str | None] = {
        "repo": None,
        "branch": None,
        "commit": None,
        "directory": directory,
    }
    root = _git(directory, "rev-parse", "--show-toplevel")
    if not root:
        return context
    context["repo"] = root
    # symbolic-ref works before the first commit too, and fails on a detached HEAD
    context["branch"] = _git(directory, "symbolic-ref", "--quiet", "--short", "HEAD") or None
    context["commit"] = _git(directory, "rev-parse", "--verify", "--quiet", "HEAD") or None
    return context
