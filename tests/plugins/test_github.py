"""``conduit github``: the first-party plugin, run through the real CLI in the real process
host and sandbox, against a fake of GitHub's REST API on 127.0.0.1 (tests/_github_fake.py).

The plugin runs in its own network namespace: the only way its requests reach the fake is
through Conduit's proxy, so every passing request here went through the proxy's check.
No test reaches the internet.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _github_fake import SHA, TOKEN, GithubFake, github_fake
from conduit.testing import Conduit, Result

GRANTS = [
    "network:http:api.github.com",
    "env:read:GITHUB_TOKEN",
    "env:read:GH_TOKEN",
    "process:execute:gh",
    "env:read:HOME",
    "filesystem:read:~/.config/gh",
    "filesystem:read:${workspace}",
]


class GH:
    """Conduit with the github plugin pointed at the fake, in a clone of hello-world."""

    def __init__(self, kit: Conduit, fake: GithubFake, repo: Path) -> None:
        self.kit, self.fake, self.repo = kit, fake, repo

    def configure(self, *extra_grants: str, api_url: str | None = None, extra: str = "") -> None:
        grants = [*GRANTS, f"network:http:127.0.0.1:{self.fake.port}", *extra_grants]
        self.kit.configure(
            f'[plugin.github]\napi-url = "{api_url or self.fake.url}"\n{extra}\n'
            f"[grants]\ngithub = {json.dumps(grants)}\n"
        )

    def run(self, *args: str) -> Result:
        return self.kit.run("github", *args)


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def gh(conduit_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GH]:
    repo = tmp_path / "hello-world"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "shout")
    _git(repo, "remote", "add", "origin", "git@github.com:octocat/hello-world.git")
    monkeypatch.chdir(repo)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.delenv("GH_TOKEN", raising=False)
    monkeypatch.delenv("GITHUB_API_URL", raising=False)
    kit = Conduit(conduit_home, tmp_path / "kit", monkeypatch)
    with github_fake() as fake:
        env = GH(kit, fake, repo)
        env.configure()
        yield env
    kit.close()


def _one_error(result: Result, message: str, hint: str | None = None) -> None:
    """A one-line error (and a hint), no traceback, exit 1."""
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert lines[0] == f"error: plugin 'github': {message}", result.stderr
    if hint is not None:
        assert lines[1:] == [f"hint: {hint}"], result.stderr
    assert "Traceback" not in result.stderr


# -- the commands --------------------------------------------------------------------------
def test_prs_lists_mine_and_review_requests(gh: GH) -> None:
    result = gh.run("prs")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        "Your open pull requests (2)\n"
        "  octocat/hello-world#42  Add a --shout option to hello\n"
        "  octo-org/api#7          Paginate /widgets (draft)\n"
        "Waiting for your review (1)\n"
        "  octo-org/api#9  Rate-limit the export endpoint  by hubot\n"
    )
    queries = [path for path, _ in gh.fake.requests]
    assert any("author%3A%40me" in q or "author:@me" in q for q in queries)
    assert any("review-requested:@me" in q for q in queries)
    _, headers = gh.fake.requests[0]
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Accept"] == "application/vnd.github+json"


def test_prs_json(gh: GH) -> None:
    result = gh.run("prs", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["authored"]["total"] == 2
    assert [i["number"] for i in data["authored"]["items"]] == [42, 7]
    assert data["authored"]["items"][1]["draft"] is True
    assert data["review_requested"]["items"][0] == {
        "repo": "octo-org/api",
        "number": 9,
        "title": "Rate-limit the export endpoint",
        "url": "https://github.com/octo-org/api/pull/9",
        "author": "hubot",
        "draft": False,
        "labels": [],
        "updated_at": "2026-12-06T17:40:00Z",
    }


def test_checks_of_the_current_branch(gh: GH) -> None:
    result = gh.run("checks")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        "octocat/hello-world#42  Add a --shout option to hello  (shout @ 6dcb09b)\n"
        "  success     build (ubuntu-latest)\n"
        "  failure     build (windows-latest)\n"
        "  success     lint\n"
        "  in_progress integration\n"
        "  success     ci/circleci: docs       Your tests passed on CircleCI!\n"
        "overall: failure (3 passed, 1 failed, 1 pending)\n"
    )
    paths = [path for path, _ in gh.fake.requests]
    assert "/repos/octocat/hello-world/pulls?state=open&head=octocat:shout&per_page=5" in paths
    assert f"/repos/octocat/hello-world/commits/{SHA}/status" in paths


def test_checks_json_and_pr_option(gh: GH) -> None:
    result = gh.run("checks", "--pr", "42", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["repo"], data["number"], data["branch"], data["sha"]) == (
        "octocat/hello-world",
        42,
        "shout",
        SHA,
    )
    assert data["state"] == "failure"
    assert [r["name"] for r in data["check_runs"]][-1] == "integration"
    assert data["check_runs"][-1]["conclusion"] is None
    assert data["statuses"][0]["context"] == "ci/circleci: docs"


def test_checks_in_a_linked_worktree(
    gh: GH, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worktree's .git is a file pointing at the main repository's git dir: the plugin
    # needs a grant for it, and then finds the origin remote in the common config.
    _git(
        gh.repo,
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "x",
    )
    _git(gh.repo, "worktree", "add", "-q", "-b", "other", str(tmp_path / "wt"))
    monkeypatch.chdir(tmp_path / "wt")
    gh.configure(f"filesystem:read:{gh.repo / '.git'}")
    result = gh.run("checks")
    _one_error(
        result,
        "no open pull request for branch 'other' in octocat/hello-world",
        "push the branch and open one ('gh pr create', or on GitHub), or pass --pr NUMBER",
    )


def test_issues_assigned_here_and_repo(gh: GH) -> None:
    result = gh.run("issues")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        "Open issues assigned to you (2)\n"
        "  octocat/hello-world#40  hello prints twice on Windows [bug]\n"
        "  octo-org/api#3          Document the retry policy [docs]\n"
    )
    here = gh.run("issues", "--here")
    assert here.exit_code == 0, here.stderr
    # The repository's issue list includes pull requests; they are left out.
    assert here.stdout == (
        "Open issues in octocat/hello-world (2)\n"
        "  octocat/hello-world#40  hello prints twice on Windows [bug]  by octocat\n"
        "  octocat/hello-world#38  Translate the greeting  by hubot\n"
    )
    other = gh.run("issues", "--repo", "octo-org/api", "--json")
    assert other.exit_code == 0, other.stderr
    assert json.loads(other.stdout) == {"total": 0, "items": []}


def test_api_text_cannot_drive_the_terminal(gh: GH, monkeypatch: pytest.MonkeyPatch) -> None:
    import _github_fake

    evil = dict(_github_fake.REVIEW[0], title="fine\x1b]0;owned\x07\u202eevil\rx")
    monkeypatch.setattr(_github_fake, "REVIEW", [evil])
    result = gh.run("prs")
    assert result.exit_code == 0, result.stderr
    assert "fine\\x1b]0;owned\\x07\\u202eevil\\x0dx  by hubot" in result.stdout
    assert "\x1b" not in result.stdout and "\r" not in result.stdout


# -- errors, one line each ------------------------------------------------------------------
def test_missing_token(gh: GH, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_TOKEN")
    # No gh on PATH (a CI machine may have one, logged in or not).
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    _one_error(
        gh.run("prs"),
        "no GitHub token: neither GITHUB_TOKEN nor GH_TOKEN is set",
        "set GITHUB_TOKEN to a token (such as: export GITHUB_TOKEN=$(gh auth token)), "
        "or log in with 'gh auth login'",
    )
    assert gh.fake.requests == []


def test_gh_token_is_the_fallback_when_granted(
    gh: GH, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "gh"
    script.write_text(f"#!/bin/sh\n[ \"$1 $2\" = 'auth token' ] && echo {TOKEN}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("GITHUB_TOKEN")
    monkeypatch.setenv("GH_TOKEN", "")
    # The shell reads the script: a gh outside the system directories needs that grant.
    gh.configure(f"filesystem:read:{bindir}")
    result = gh.run("prs")
    assert result.exit_code == 0, result.stderr
    assert gh.fake.requests[-1][1]["Authorization"] == f"Bearer {TOKEN}"


def test_gh_token_from_the_environment(gh: GH, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_TOKEN")
    monkeypatch.setenv("GH_TOKEN", TOKEN)
    assert gh.run("issues").exit_code == 0


def test_bad_token(gh: GH, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_revoked")
    _one_error(
        gh.run("issues"),
        "GitHub refused the token from GITHUB_TOKEN (401 Bad credentials)",
        "the token is wrong, expired or revoked: create a new one, or run 'gh auth login'",
    )


@pytest.mark.parametrize("mode", ["ratelimit", "ratelimit-429"])
def test_rate_limit_names_the_reset_time(gh: GH, mode: str) -> None:
    gh.fake.mode = mode
    result = gh.run("prs")
    when = time.strftime("%H:%M", time.localtime(gh.fake.reset))
    _one_error(
        result,
        f"GitHub's API rate limit is exhausted; it resets at {when} local time (in 25 min)",
        "wait until then; an authenticated token has a higher limit than none",
    )


def test_secondary_rate_limit_says_when_to_retry(gh: GH) -> None:
    gh.fake.mode = "secondary"
    _one_error(
        gh.run("issues"),
        "GitHub's API rate limit is exhausted; retry in 60 s",
        "wait until then; an authenticated token has a higher limit than none",
    )


def test_unknown_repository(gh: GH) -> None:
    _one_error(
        gh.run("issues", "--repo", "octocat/nope"),
        "repository 'octocat/nope' not found on GitHub (or the token from GITHUB_TOKEN cannot see it)",
    )
    _one_error(
        gh.run("checks", "--repo", "octocat/nope", "--pr", "1"),
        "repository 'octocat/nope' not found on GitHub (or the token from GITHUB_TOKEN cannot see it)",
    )


def test_bad_repo_argument(gh: GH) -> None:
    _one_error(gh.run("issues", "--repo", "just-a-name"), "--repo 'just-a-name' is not OWNER/NAME")


def test_network_failure(gh: GH) -> None:
    # A granted address where nothing listens: the proxy cannot connect.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gh.configure(f"network:http:127.0.0.1:{port}", api_url=f"http://127.0.0.1:{port}")
    result = gh.run("prs")
    assert result.exit_code == 1, result.stderr
    _one_error(
        result,
        f"cannot reach GitHub at http://127.0.0.1:{port}: 502 Bad Gateway (Connection refused)",
        "check your network connection (and [plugin.github] api-url), or try again",
    )


def test_timeout(gh: GH) -> None:
    gh.fake.mode = "slow"
    gh.configure(extra="timeout = 0.5\n")
    _one_error(
        gh.run("prs"),
        f"GitHub at {gh.fake.url} did not answer within 0.5 s",
        "try again, or raise 'timeout' in the config's [plugin.github] table",
    )


def test_not_a_github_remote(gh: GH) -> None:
    _git(gh.repo, "remote", "set-url", "origin", "https://gitlab.com/octocat/hello-world.git")
    _one_error(
        gh.run("checks"),
        "the 'origin' remote 'https://gitlab.com/octocat/hello-world.git' is not a GitHub repository",
        "pass --repo OWNER/NAME (for GitHub Enterprise, set [plugin.github] api-url)",
    )


def test_no_origin_and_not_a_repository(
    gh: GH, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _git(gh.repo, "remote", "remove", "origin")
    result = gh.run("issues", "--here")
    _one_error(result, f"the repository at {gh.repo} has no 'origin' remote")
    elsewhere = tmp_path / "plain"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    _one_error(
        gh.run("checks"),
        f"not in a git repository: no .git in {elsewhere} or above",
        "run it inside a clone of a GitHub repository, or pass --repo OWNER/NAME",
    )


def test_detached_head(gh: GH) -> None:
    _git(
        gh.repo,
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "x",
    )
    commit = _git(gh.repo, "rev-parse", "HEAD")
    _git(gh.repo, "checkout", "-q", "--detach")
    _one_error(
        gh.run("checks"),
        f"HEAD is detached (at {commit[:12]}): there is no branch to find a pull request for",
        "check out the pull request's branch, or pass --branch BRANCH or --pr NUMBER",
    )


def test_no_pull_request_for_the_branch(gh: GH) -> None:
    _one_error(
        gh.run("checks", "--branch", "nothing-here"),
        "no open pull request for branch 'nothing-here' in octocat/hello-world",
    )


def test_run_from_a_subdirectory_names_the_grant(gh: GH, monkeypatch: pytest.MonkeyPatch) -> None:
    (gh.repo / "src").mkdir()
    monkeypatch.chdir(gh.repo / "src")
    git_dir = gh.repo / ".git"
    _one_error(
        gh.run("checks"),
        f"cannot read the repository's git data in {git_dir}: the plugin may read only the "
        "directory Conduit runs in",
        f"run it in the repository's top directory ({gh.repo}), or grant it: "
        f"'conduit plugins grant github filesystem:read:{git_dir}'",
    )


# -- the sandbox ---------------------------------------------------------------------------
def test_a_host_not_granted_is_refused_by_the_sandbox_proxy(gh: GH) -> None:
    # The plugin requests api.github.com only; pointed at an address it was not granted,
    # the request is stopped by Conduit's proxy and reported as the missing capability.
    other = "127.0.0.2"
    gh.configure(api_url=f"http://{other}:{gh.fake.port}")
    result = gh.run("prs")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: plugin 'github': command 'github' needs 'network:http:{other}', which is not granted",
        f"hint: grant it with 'conduit plugins grant github network:http:{other}' if you trust the plugin",
    ]
    assert gh.fake.requests == []


def test_the_plugin_gets_only_what_it_declares(gh: GH) -> None:
    """First-party: what the manifest declares is granted by default (api.github.com);
    another API host needs the user's grant, and the sandbox refuses it until then."""
    gh.kit.configure(f'[plugin.github]\napi-url = "{gh.fake.url}"\n')
    result = gh.run("prs")
    assert result.exit_code != 0
    assert "needs 'network:http:127.0.0.1', which is not granted" in result.stderr
    assert "network:http:api.github.com" not in result.stderr
    assert gh.fake.requests == []


def test_github_api_url_variable_when_granted(gh: GH, monkeypatch: pytest.MonkeyPatch) -> None:
    gh.kit.configure(
        "[grants]\ngithub = "
        + json.dumps([*GRANTS, f"network:http:127.0.0.1:{gh.fake.port}", "env:read:GITHUB_API_URL"])
        + "\n"
    )
    monkeypatch.setenv("GITHUB_API_URL", gh.fake.url)
    assert gh.run("issues").exit_code == 0
    assert gh.fake.requests


def test_bad_settings(gh: GH) -> None:
    gh.configure(api_url="ftp://example.com")
    _one_error(
        gh.run("prs"),
        "[plugin.github] api-url 'ftp://example.com' is not an http(s) URL",
        "set it to the API's base URL, such as 'https://api.github.com'",
    )


def test_help_lists_the_commands(gh: GH) -> None:
    result = gh.kit.run("github", "--help")
    assert result.exit_code == 0
    for line in ("prs", "checks", "issues"):
        assert re.search(rf"^\s+{line}\s", result.stdout, re.M), result.stdout
