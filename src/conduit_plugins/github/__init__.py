"""``conduit github``: your pull requests, CI checks and issues, from GitHub's REST API.

Runs in the process host, sandboxed: it reaches ``api.github.com`` through Conduit's
proxy, sees only the variables it asks for (``GITHUB_TOKEN``, ``GH_TOKEN``, and ``HOME``
for ``gh auth token``, its fallback), and reads the current repository's ``.git`` files
(not the ``git`` program: fewer grants, no fork) to learn its ``origin`` remote and
branch. HTTP is the standard library's ``urllib``: a few requests per command need
nothing more, and it honours the proxy variables the sandbox sets.

Settings (``[plugin.github]`` in the config): ``api-url`` (default
``https://api.github.com``, or ``GITHUB_API_URL`` when that variable is granted) and
``timeout`` (seconds, default 10).
"""

from __future__ import annotations

import json
import os
from typing import Any

import click

from conduit.sdk import ConduitError, Plugin, PluginContext

__all__ = ["GithubPlugin"]

DEFAULT_API = "https://api.github.com"
_TOKEN_VARS = ("GITHUB_TOKEN", "GH_TOKEN")
_FAILED = frozenset(
    {"failure", "timed_out", "cancelled", "action_required", "startup_failure", "error"}
)

_settings: dict[str, Any] = {}
_token_cache: list[tuple[str, str]] = []  # one lookup per command (gh is a process)


# -- text ----------------------------------------------------------------------------------
def _clean(value: object) -> str:
    """Text from the API, made safe for a terminal: control, bidi and invisible format
    characters become visible escapes (a title cannot move the cursor or reorder a line)."""
    text = "" if value is None else str(value)
    out = []
    for ch in text:
        code = ord(ch)
        if (
            code < 0x20
            or 0x7F <= code < 0xA0
            or 0x200B <= code <= 0x200F
            or 0x202A <= code <= 0x202E
            or 0x2066 <= code <= 0x2069
            or code in (0x00AD, 0x061C, 0xFEFF)
        ):
            out.append(f"\\u{code:04x}" if code > 0xFF else f"\\x{code:02x}")
        else:
            out.append(ch)
    return "".join(out)


def _emit_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=True))


# -- the API -------------------------------------------------------------------------------
def _api_url() -> str:
    url = _settings.get("api-url") or os.environ.get("GITHUB_API_URL") or DEFAULT_API
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise ConduitError(
            f"[plugin.github] api-url {url!r} is not an http(s) URL",
            hint="set it to the API's base URL, such as 'https://api.github.com'",
        )
    return url.rstrip("/")


def _timeout() -> float:
    value = _settings.get("timeout", 10)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConduitError(
            f"[plugin.github] timeout {value!r} is not a positive number of seconds",
            hint="set it to a number such as 10",
        )
    return float(value)


def _token() -> tuple[str, str]:
    """The token and where it came from."""
    if _token_cache:
        return _token_cache[0]
    found = next(
        ((os.environ[v].strip(), v) for v in _TOKEN_VARS if os.environ.get(v, "").strip()), None
    )
    if found is None:
        token = _gh_token()
        found = (token, "gh auth token") if token else None
    if found is not None:
        _token_cache.append(found)
        return found
    raise ConduitError(
        "no GitHub token: neither GITHUB_TOKEN nor GH_TOKEN is set",
        hint="set GITHUB_TOKEN to a token (such as: export GITHUB_TOKEN=$(gh auth token)), "
        "or log in with 'gh auth login'",
    )


def _gh_token() -> str | None:
    """``gh auth token``, if the user granted running ``gh``; else None."""
    import subprocess

    try:
        proc = subprocess.run(
            ["gh", "auth", "token"],
            capture_output=True,
            text=True,
            timeout=_timeout(),
            check=False,
        )
    except (OSError, subprocess.SubprocessError):  # not granted, not installed, hung
        return None
    token = proc.stdout.strip()
    return token if proc.returncode == 0 and token and token.isprintable() else None


def _reset_time(headers: Any) -> str:
    import time

    retry = headers.get("Retry-After", "")
    if retry.isdigit():  # a secondary rate limit says when to retry instead
        return f"; retry in {retry} s"
    try:
        reset = int(headers.get("X-RateLimit-Reset", ""))
    except ValueError:
        return ""
    minutes = max(0, round((reset - time.time()) / 60))
    when = time.strftime("%H:%M", time.localtime(reset))
    return f"; it resets at {when} local time (in {minutes} min)"


def _is_sandbox_denial(exc: BaseException) -> bool:
    """The sandbox's proxy refused the host: Conduit reports that itself, with the grant."""
    reason = getattr(exc, "reason", None)
    return "Conduit denied" in str(exc) or "Conduit denied" in str(reason)


def _get(path: str, *, repo: str | None = None) -> Any:
    """GET ``path`` from the API and decode its JSON; every failure is one clear line."""
    import urllib.error
    import urllib.request

    base = _api_url()
    token, source = _token()
    request = urllib.request.Request(
        base + path,
        headers={
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {token}",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "conduit-github",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=_timeout()) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        if _is_sandbox_denial(exc):
            raise
        if exc.code in (502, 503, 504):  # from a proxy (Conduit's) or GitHub's front end
            raise ConduitError(
                f"cannot reach GitHub at {base}: {exc.code} {_clean(exc.reason)}",
                hint="check your network connection (and [plugin.github] api-url), or try again",
            ) from None
        raise _http_error(exc, path, source, repo) from None
    except (urllib.error.URLError, OSError) as exc:
        if _is_sandbox_denial(exc):
            raise
        reason = getattr(exc, "reason", exc)
        if isinstance(exc, TimeoutError) or isinstance(reason, TimeoutError):
            raise ConduitError(
                f"GitHub at {base} did not answer within {_timeout():g} s",
                hint="try again, or raise 'timeout' in the config's [plugin.github] table",
            ) from None
        raise ConduitError(
            f"cannot reach GitHub at {base}: {_clean(reason)}",
            hint="check your network connection (and [plugin.github] api-url), or try again",
        ) from None
    try:
        return json.loads(body)
    except ValueError:
        raise ConduitError(
            f"GitHub at {base} answered GET {path} with something that is not JSON",
            hint="check [plugin.github] api-url: it must be the REST API's base URL",
        ) from None


def _http_error(exc: Any, path: str, source: str, repo: str | None) -> ConduitError:
    try:
        message = _clean(json.loads(exc.read()).get("message", ""))
    except (ValueError, AttributeError, OSError):
        message = ""
    code = exc.code
    headers = exc.headers
    if code == 401:
        return ConduitError(
            f"GitHub refused the token from {source} (401 {message or 'Bad credentials'})",
            hint="the token is wrong, expired or revoked: create a new one, or run 'gh auth login'",
        )
    limited = headers.get("X-RateLimit-Remaining") == "0" or "rate limit" in message.lower()
    if code == 429 or (code == 403 and limited):
        return ConduitError(
            f"GitHub's API rate limit is exhausted{_reset_time(headers)}",
            hint="wait until then; an authenticated token has a higher limit than none",
        )
    if code == 404 and repo:
        return ConduitError(
            f"repository '{_clean(repo)}' not found on GitHub (or the token from {source} "
            "cannot see it)",
            hint="check the name (OWNER/NAME), and that the token has access to the repository",
        )
    return ConduitError(
        f"GitHub answered GET {path} with {code}" + (f": {message}" if message else ""),
        hint="check the arguments; 'conduit --debug' shows more",
    )


def _search(query: str, limit: int) -> tuple[int, list[dict[str, Any]]]:
    import urllib.parse

    q = urllib.parse.quote(query, safe=":@")
    data = _get(f"/search/issues?q={q}&sort=updated&order=desc&per_page={limit}")
    return int(data.get("total_count", 0)), [_item(i) for i in data.get("items", [])]


def _item(raw: dict[str, Any]) -> dict[str, Any]:
    """The fields of an issue or pull request that the commands show."""
    repo_url = str(raw.get("repository_url", ""))
    return {
        "repo": "/".join(repo_url.rstrip("/").split("/")[-2:]),
        "number": raw.get("number"),
        "title": raw.get("title", ""),
        "url": raw.get("html_url", ""),
        "author": (raw.get("user") or {}).get("login", ""),
        "draft": bool(raw.get("draft", False)),
        "labels": [lbl.get("name", "") for lbl in raw.get("labels") or []],
        "updated_at": raw.get("updated_at", ""),
    }


# -- the current repository ----------------------------------------------------------------
def _find_git(start: str) -> tuple[str, str, str]:
    """(work tree, git dir, common dir) of the repository containing ``start``."""
    here = os.path.abspath(start)
    while True:
        dot = os.path.join(here, ".git")
        if os.path.isdir(dot):
            return here, dot, dot
        if os.path.isfile(dot):  # a worktree or submodule: "gitdir: PATH"
            line = _read_git(here, dot).strip()
            if line.startswith("gitdir:"):
                gitdir = os.path.join(here, line[len("gitdir:") :].strip())
                common = gitdir
                commondir = os.path.join(gitdir, "commondir")
                if os.path.isfile(commondir):
                    common = os.path.join(gitdir, _read_git(here, commondir).strip())
                return here, os.path.normpath(gitdir), os.path.normpath(common)
        parent = os.path.dirname(here)
        if parent == here:
            raise ConduitError(
                f"not in a git repository: no .git in {_clean(start)} or above",
                hint="run it inside a clone of a GitHub repository, or pass --repo OWNER/NAME",
            )
        here = parent


def _read_git(top: str, path: str) -> str:
    """A file of the repository's git data. The sandbox lets the plugin read the directory
    Conduit runs in (``${workspace}``), so a run from a subdirectory is refused."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except PermissionError:
        where = os.path.dirname(path)
        raise ConduitError(
            f"cannot read the repository's git data in {_clean(where)}: the plugin may read "
            "only the directory Conduit runs in",
            hint=f"run it in the repository's top directory ({_clean(top)}), or grant it: "
            f"'conduit plugins grant github filesystem:read:{_clean(where)}'",
        ) from None


def _remote_url(top: str, config_path: str, remote: str) -> str | None:
    """The ``url`` of ``[remote "REMOTE"]`` in a git config file (the first one)."""
    section = None
    for raw in _read_git(top, config_path).splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line.strip("[]").replace(" ", "").replace('"', "")
        elif section == f"remote{remote}" and line.partition("=")[0].strip() == "url":
            return line.partition("=")[2].strip().strip('"')
    return None


def parse_remote(url: str) -> tuple[str, str, str] | None:
    """(host, owner, name) of a git remote URL, or None if it has no OWNER/NAME path."""
    rest = url
    if "://" in url:
        rest = url.split("://", 1)[1]
        host, _, path = rest.partition("/")
    elif ":" in url:  # scp-like: git@github.com:owner/name.git
        host, _, path = rest.partition(":")
    else:
        return None
    host = host.rpartition("@")[2].partition(":")[0].lower()
    parts = [p for p in path.split("/") if p]
    if len(parts) != 2:
        return None
    owner, name = parts
    name = name.removesuffix(".git")
    return (host, owner, name) if owner and name else None


def _github_hosts() -> set[str]:
    import urllib.parse

    api_host = (urllib.parse.urlsplit(_api_url()).hostname or "").lower()
    return {"github.com", "www.github.com", api_host, api_host.removeprefix("api.")}


def _current_repo() -> tuple[str, str, str]:
    """(OWNER/NAME of origin, the PR's base repo, work tree) of the current repository.

    The base is the ``upstream`` remote when there is one on GitHub (a fork's pull
    requests live there), else ``origin``."""
    top, _, common = _find_git(os.getcwd())
    config = os.path.join(common, "config")
    url = _remote_url(top, config, "origin")
    if url is None:
        raise ConduitError(
            f"the repository at {_clean(top)} has no 'origin' remote",
            hint="add one with 'git remote add origin URL', or pass --repo OWNER/NAME",
        )
    parsed = parse_remote(url)
    if parsed is None or parsed[0] not in _github_hosts():
        raise ConduitError(
            f"the 'origin' remote {_clean(url)!r} is not a GitHub repository",
            hint="pass --repo OWNER/NAME (for GitHub Enterprise, set [plugin.github] api-url)",
        )
    origin = f"{parsed[1]}/{parsed[2]}"
    base = origin
    upstream_url = _remote_url(top, config, "upstream")
    upstream = parse_remote(upstream_url) if upstream_url else None
    if upstream is not None and upstream[0] in _github_hosts():
        base = f"{upstream[1]}/{upstream[2]}"
    return origin, base, top


def _current_branch() -> str:
    top, gitdir, _ = _find_git(os.getcwd())
    head = _read_git(top, os.path.join(gitdir, "HEAD")).strip()
    if not head.startswith("ref: refs/heads/"):
        raise ConduitError(
            f"HEAD is detached (at {_clean(head[:12])}): there is no branch to find a pull "
            "request for",
            hint="check out the pull request's branch, or pass --branch BRANCH or --pr NUMBER",
        )
    return head[len("ref: refs/heads/") :]


def _check_repo(repo: str) -> str:
    owner, _, name = repo.partition("/")
    allowed = all(c.isalnum() or c in "-_." for c in owner + name)
    if not owner or not name or "/" in name or not allowed:
        raise ConduitError(
            f"--repo {_clean(repo)!r} is not OWNER/NAME",
            hint="for example: --repo octocat/hello-world",
        )
    return repo


# -- commands --------------------------------------------------------------------------------
def _line(item: dict[str, Any], width: int) -> str:
    ref = f"{item['repo']}#{item['number']}"
    draft = " (draft)" if item.get("draft") else ""
    labels = "".join(f" [{_clean(x)}]" for x in item.get("labels", []))
    return f"  {_clean(ref):<{width}}  {_clean(item['title'])}{draft}{labels}"


def _section(title: str, total: int, items: list[dict[str, Any]], *, by: bool) -> None:
    more = f", showing {len(items)}" if total > len(items) else ""
    click.echo(f"{title} ({total}{more})")
    width = max((len(f"{i['repo']}#{i['number']}") for i in items), default=0)
    for item in items:
        suffix = f"  by {_clean(item['author'])}" if by else ""
        click.echo(_line(item, width) + suffix)
    if not items:
        click.echo("  none")


_limit = click.option(
    "--limit",
    type=click.IntRange(1, 100),
    metavar="N",
    default=30,
    show_default=True,
    help="At most this many of each list.",
)
_json = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.command("prs")
@_limit
@_json
def prs(limit: int, as_json: bool) -> None:
    """Your open pull requests, and those waiting for your review."""
    mine_total, mine = _search("is:pr is:open archived:false author:@me", limit)
    review_total, review = _search("is:pr is:open archived:false review-requested:@me", limit)
    if as_json:
        _emit_json(
            {
                "authored": {"total": mine_total, "items": mine},
                "review_requested": {"total": review_total, "items": review},
            }
        )
        return
    _section("Your open pull requests", mine_total, mine, by=False)
    _section("Waiting for your review", review_total, review, by=True)


def _pull_for_branch(repo: str, origin: str, branch: str) -> dict[str, Any]:
    import urllib.parse

    head = urllib.parse.quote(f"{origin.split('/')[0]}:{branch}", safe=":")
    pulls = _get(f"/repos/{repo}/pulls?state=open&head={head}&per_page=5", repo=repo)
    if not pulls:
        raise ConduitError(
            f"no open pull request for branch '{_clean(branch)}' in {repo}",
            hint="push the branch and open one ('gh pr create', or on GitHub), or pass --pr NUMBER",
        )
    return dict(pulls[0])


def _overall(runs: list[dict[str, Any]], statuses: list[dict[str, Any]]) -> str:
    states = [r["conclusion"] if r["status"] == "completed" else "pending" for r in runs]
    states += [s["state"] for s in statuses]
    if not states:
        return "none"
    if any(s in _FAILED for s in states):
        return "failure"
    if any(s in ("pending", None, "queued", "in_progress") for s in states):
        return "pending"
    return "success"


@click.command("checks")
@click.option("--repo", metavar="OWNER/NAME", help="Default: the current repository.")
@click.option("--branch", help="The pull request's branch (default: the current branch).")
@click.option(
    "--pr", "number", type=click.IntRange(1), metavar="NUMBER", help="The pull request's number."
)
@_json
def checks(repo: str | None, branch: str | None, number: int | None, as_json: bool) -> None:
    """CI status of the current branch's pull request: check runs and commit statuses."""
    if branch and number:
        raise click.UsageError("give --branch or --pr, not both")
    if repo:
        origin = base = _check_repo(repo)
    else:
        origin, base, _ = _current_repo()
    if number is not None:
        pull = _get(f"/repos/{base}/pulls/{number}", repo=base)
    else:
        pull = _pull_for_branch(base, origin, branch or _current_branch())
    sha = str(pull["head"]["sha"])
    runs_data = _get(f"/repos/{base}/commits/{sha}/check-runs?per_page=100", repo=base)
    status_data = _get(f"/repos/{base}/commits/{sha}/status", repo=base)
    runs = [
        {
            "name": r.get("name", ""),
            "status": r.get("status", ""),
            "conclusion": r.get("conclusion"),
            "url": r.get("html_url", ""),
        }
        for r in runs_data.get("check_runs", [])
    ]
    statuses = [
        {
            "context": s.get("context", ""),
            "state": s.get("state", ""),
            "description": s.get("description") or "",
            "url": s.get("target_url") or "",
        }
        for s in status_data.get("statuses", [])
    ]
    result = {
        "repo": base,
        "number": pull.get("number"),
        "title": pull.get("title", ""),
        "url": pull.get("html_url", ""),
        "branch": (pull.get("head") or {}).get("ref", ""),
        "sha": sha,
        "state": _overall(runs, statuses),
        "check_runs": runs,
        "statuses": statuses,
    }
    if as_json:
        _emit_json(result)
        return
    click.echo(
        f"{base}#{result['number']}  {_clean(result['title'])}  "
        f"({_clean(result['branch'])} @ {sha[:7]})"
    )
    rows = [
        (r["name"], r["conclusion"] if r["status"] == "completed" else r["status"], "")
        for r in runs
    ] + [(s["context"], s["state"], s["description"]) for s in statuses]
    width = max((len(_clean(name)) for name, _, _ in rows), default=0)
    for name, state, note in rows:
        extra = f"  {_clean(note)}" if note else ""
        click.echo(f"  {_clean(state or ''):<11} {_clean(name):<{width}}{extra}".rstrip())
    if not rows:
        click.echo("  no checks or statuses reported for this commit")
    counts = dict.fromkeys(("passed", "failed", "pending", "other"), 0)
    for _, state, _ in rows:
        key = "failed" if state in _FAILED else "passed" if state == "success" else "other"
        key = "pending" if state in ("pending", "queued", "in_progress", None) else key
        counts[key] += 1
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
    click.echo(f"overall: {result['state']}" + (f" ({summary})" if summary else ""))


@click.command("issues")
@click.option(
    "--repo", metavar="OWNER/NAME", help="Open issues of this repository instead of yours."
)
@click.option("--here", is_flag=True, help="Open issues of the current repository.")
@_limit
@_json
def issues(repo: str | None, here: bool, limit: int, as_json: bool) -> None:
    """Open issues assigned to you, or in a repository (--repo, --here)."""
    if repo and here:
        raise click.UsageError("give --repo or --here, not both")
    if here:
        _, repo, _ = _current_repo()
    if repo:
        _check_repo(repo)
        # The repository's own endpoint: a 404 names a repository that does not exist.
        raw = _get(f"/repos/{repo}/issues?state=open&per_page={limit}", repo=repo)
        items = [_item(i) for i in raw if "pull_request" not in i]
        for item in items:
            item["repo"] = repo
        total, title = len(items), f"Open issues in {repo}"
    else:
        total, items = _search("is:issue is:open archived:false assignee:@me", limit)
        title = "Open issues assigned to you"
    if as_json:
        _emit_json({"total": total, "items": items})
        return
    _section(title, total, items, by=bool(repo))


class GithubPlugin(Plugin):
    def boot(self, ctx: PluginContext) -> None:
        _settings.clear()
        _settings.update(ctx.config)
        _token_cache.clear()
        for command in (prs, checks, issues):
            ctx.register_command(command, f"github {command.name}")
