"""The first-party ``repos`` plugin against real git repositories: status, pull, prune."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from conduit.testing import Conduit

Git = Callable[..., str]


def commit(git: Git, repo: Path, name: str, text: str = "x\n") -> None:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-qm", f"add {name}")


@pytest.fixture
def origin(git: Git, git_env: Path) -> Path:
    """A bare repository with one commit on main, as a remote."""
    bare = git_env / "origin.git"
    git(git_env, "init", "-q", "--bare", str(bare))
    seed = git_env / "seed"
    git(git_env, "clone", "-q", str(bare), str(seed))
    commit(git, seed, "README")
    git(seed, "push", "-q", "-u", "origin", "main")
    return bare


def clone(git: Git, origin: Path, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    git(path.parent, "clone", "-q", str(origin), str(path))
    return path


def push_from_seed(git: Git, git_env: Path, name: str) -> None:
    seed = git_env / "seed"
    commit(git, seed, name)
    git(seed, "push", "-q")


@pytest.fixture
def ws(git_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = git_env / "ws"
    path.mkdir()
    monkeypatch.chdir(path)
    return path


def status_json(kit: Conduit) -> dict[str, dict]:
    r = kit.run("repos", "status", "--json")
    assert r.exit_code == 0, r.stderr
    return {s["name"]: s for s in json.loads(r.stdout)}


def test_status_reports_branch_sync_dirty_and_stashes(
    kit: Conduit, git: Git, git_env: Path, origin: Path, ws: Path
) -> None:
    app = clone(git, origin, ws / "app")
    clean = clone(git, origin, ws / "libs" / "clean")
    push_from_seed(git, git_env, "upstream-change")
    git(app, "fetch", "-q")
    commit(git, app, "local-change")  # ahead 1, behind 1
    (app / "README").write_text("changed\n")
    (app / "new-file").write_text("untracked\n")
    (app / "stashed").write_text("s\n")
    git(app, "stash", "push", "-q", "--include-untracked", "--", "stashed")
    (ws / "not-a-repo").mkdir()

    got = status_json(kit)
    assert set(got) == {"app", "libs/clean"}
    a = got["app"]
    assert (a["branch"], a["upstream"], a["ahead"], a["behind"]) == ("main", "origin/main", 1, 1)
    assert (a["changed"], a["untracked"], a["dirty"], a["stashes"]) == (1, 1, 2, 1)
    c = got["libs/clean"]
    assert (c["ahead"], c["behind"], c["dirty"], c["stashes"]) == (0, 0, 0, 0)
    assert clean.is_dir()

    r = kit.run("repos", "status")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines() == [
        "REPO        BRANCH  UPSTREAM     SYNC               DIRTY  STASHES",
        "app         main    origin/main  ahead 1, behind 1  2      1",
        "libs/clean  main    origin/main  up to date         0      0",
    ]


def test_detached_head_and_no_upstream_are_shown_plainly(
    kit: Conduit, git: Git, origin: Path, ws: Path
) -> None:
    detached = clone(git, origin, ws / "detached")
    git(detached, "checkout", "-q", "--detach", "HEAD")
    lonely = clone(git, origin, ws / "lonely")
    git(lonely, "checkout", "-q", "-b", "feature")
    sha = git(detached, "rev-parse", "--short=7", "HEAD").strip()

    got = status_json(kit)
    assert got["detached"]["detached"] is True and got["detached"]["branch"] is None
    assert got["lonely"]["upstream"] is None and got["lonely"]["branch"] == "feature"
    lines = kit.run("repos", "status").stdout.splitlines()
    assert lines[1].split() == [
        "detached",
        "(detached",
        "at",
        f"{sha})",
        "-",
        "detached",
        "HEAD",
        "0",
        "0",
    ]
    assert lines[2].split() == ["lonely", "feature", "-", "no", "upstream", "0", "0"]


def test_inside_a_repository_status_covers_that_repository(
    kit: Conduit, git: Git, origin: Path, ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = clone(git, origin, ws / "app")
    clone(git, origin, ws / "other")
    (app / "src").mkdir()
    monkeypatch.chdir(app / "src")
    got = status_json(kit)
    assert [s["path"] for s in got.values()] == [str(app)]


def test_outside_any_repository_is_one_line_with_a_hint(kit: Conduit, ws: Path) -> None:
    (ws / "plain").mkdir()
    for command in ("status", "pull", "prune"):
        r = kit.run("repos", command)
        assert r.exit_code == 1
        assert r.stderr.splitlines() == [
            "error: not inside a git repository, and none below this directory",
            "hint: run it inside a git repository, or list directories in [plugin.repos] roots = [...] in Conduit's config.toml",
        ]


def test_configured_roots_are_scanned_wherever_conduit_runs(
    kit: Conduit, git: Git, git_env: Path, origin: Path, ws: Path
) -> None:
    (git_env / "src").mkdir()
    clone(git, origin, git_env / "src" / "one")
    clone(git, origin, git_env / "src" / "deep" / "two")
    kit.configure(f'[plugin.repos]\nroots = ["{git_env / "src"}"]\n')
    got = status_json(kit)  # ws itself holds no repository
    assert sorted(s["path"] for s in got.values()) == [
        str(git_env / "src" / "deep" / "two"),
        str(git_env / "src" / "one"),
    ]
    kit.configure(f'[plugin.repos]\nroots = ["{git_env / "missing"}"]\n')
    r = kit.run("repos", "status")
    assert r.exit_code == 1
    assert (
        r.stderr.splitlines()[0]
        == f"error: [plugin.repos] roots: {git_env / 'missing'} is not a directory"
    )
    kit.configure('[plugin.repos]\nroots = "~/src"\n')
    r = kit.run("repos", "status")
    assert r.stderr.splitlines()[0] == "error: [plugin.repos] roots must be a list of directories"


def test_pull_fast_forwards_and_says_why_it_skipped_the_rest(
    kit: Conduit, git: Git, git_env: Path, origin: Path, ws: Path
) -> None:
    behind = clone(git, origin, ws / "a-behind")
    dirty = clone(git, origin, ws / "b-dirty")
    diverged = clone(git, origin, ws / "c-diverged")
    detached = clone(git, origin, ws / "d-detached")
    lonely = clone(git, origin, ws / "e-lonely")
    push_from_seed(git, git_env, "news")
    (dirty / "README").write_text("mine\n")
    commit(git, diverged, "mine")
    git(detached, "checkout", "-q", "--detach")
    git(lonely, "checkout", "-q", "-b", "topic")

    r = kit.run("repos", "pull", "--json")
    assert r.exit_code == 0, r.stderr
    got = {p["name"]: (p["action"], p["reason"]) for p in json.loads(r.stdout)}
    assert got["a-behind"][0] == "pulled" and got["a-behind"][1].endswith("(1 commit(s))")
    assert got["b-dirty"] == ("skipped", "dirty: 1 changed file(s)")
    assert got["c-diverged"] == ("skipped", "diverged: 1 ahead, 1 behind origin/main")
    assert got["d-detached"] == ("skipped", "detached HEAD")
    assert got["e-lonely"] == ("skipped", "no upstream")
    assert (behind / "news").exists()
    assert not (dirty / "news").exists() and (dirty / "README").read_text() == "mine\n"
    assert not (diverged / "news").exists()

    r = kit.run("repos", "pull")
    assert r.exit_code == 0, r.stderr
    assert "a-behind    up to date" in r.stdout
    assert "c-diverged  skipped     diverged: 1 ahead, 1 behind origin/main" in r.stdout
    assert r.stderr == "0 pulled, 4 skipped, 0 failed\n"


def test_prune_lists_merged_branches_and_deletes_them_only_with_yes(
    kit: Conduit, git: Git, origin: Path, ws: Path
) -> None:
    repo = clone(git, origin, ws / "app")
    for branch in ("done-1", "done-2", "current"):
        git(repo, "branch", branch)
    git(repo, "checkout", "-q", "-b", "open")
    commit(git, repo, "unmerged-work")
    git(repo, "checkout", "-q", "current")

    r = kit.run("repos", "prune")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "app: would delete done-1, done-2\n"
    assert r.stderr == "dry run: run 'conduit repos prune --yes' to delete 2\n"
    branches = git(repo, "branch", "--format=%(refname:short)").split()
    assert sorted(branches) == ["current", "done-1", "done-2", "main", "open"]

    r = kit.run("repos", "prune", "--yes")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "app: deleted done-1, done-2\n"
    branches = git(repo, "branch", "--format=%(refname:short)").split()
    assert sorted(branches) == ["current", "main", "open"]
    r = kit.run("repos", "prune")
    assert r.stdout == "app: nothing merged into main\n"


def test_prune_skips_a_repository_without_a_default_branch(
    kit: Conduit, git: Git, ws: Path
) -> None:
    repo = ws / "odd"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "trunk")
    commit(git, repo, "f")
    git(repo, "config", "init.defaultBranch", "nothing-here")
    r = kit.run("repos", "prune")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "odd: skipped: no default branch (origin/HEAD, main or master) found\n"


def test_text_output_shows_control_characters_in_names_inert(
    kit: Conduit, git: Git, git_env: Path, origin: Path, ws: Path
) -> None:
    """A directory name with an escape sequence and a branch name with a C1 control
    (both allowed by git) never reach the terminal raw, in status or in prune."""
    evil = clone(git, origin, ws / "evil\x1b]0;owned\x07\x1b[31m")
    git(evil, "branch", "merged\u009b31m")

    r = kit.run("repos", "status")
    assert r.exit_code == 0, r.stderr
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout
    assert "evil\\x1b]0;owned\\x07\\x1b[31m" in r.stdout
    git(evil, "checkout", "-q", "merged\u009b31m")
    r = kit.run("repos", "status")
    assert "\u009b" not in r.stdout and "merged\\x9b31m" in r.stdout
    git(evil, "checkout", "-q", "main")

    r = kit.run("repos", "prune")
    assert r.exit_code == 0, r.stderr
    assert "\x1b" not in r.stdout and "\u009b" not in r.stdout
    assert "would delete merged\\x9b31m" in r.stdout
