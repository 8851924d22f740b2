"""``conduit repos``: status, fast-forward pulls and branch pruning across git repositories.

The repositories are those under the workspace (the enclosing repository, or the current
directory), or under the directories listed in ``[plugin.repos] roots`` of Conduit's
config. Every question goes to the ``git`` program (``process:execute:git``), one
repository per worker thread.
"""

from __future__ import annotations

import os

import click

from conduit.sdk import ConduitError, Plugin, PluginContext

# Not typing's: importing typing would be most of this plugin's import time.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

    #: one repository's state, as ``status()`` returns it
    RepoStatus = dict[str, Any]

__all__ = ["ReposPlugin", "find_repositories", "status"]

#: how deep below a root repositories are looked for
MAX_DEPTH = 4
_SKIP_DIRS = frozenset({"node_modules", "__pycache__", "venv", "site-packages"})
_CONFIG_HINT = "run it inside a git repository, or list directories in [plugin.repos] roots = [...] in Conduit's config.toml"  # noqa: E501


class GitError(ConduitError):
    """git failed in one repository (reported per repository, not raised to the user)."""


# -- running git ----------------------------------------------------------------------------
def _git(repo: str, *args: str, timeout: float = 60, detach: bool = False) -> str:
    """``git -C REPO ARGS``'s standard output; :class:`GitError` with git's last line when
    it fails. ``detach`` runs it in a new session: with no terminal to ask on, a fetch
    that needs a password fails instead of waiting for one."""
    import subprocess

    try:
        proc = subprocess.run(
            ["git", "-C", repo, "-c", "color.ui=never", *args],
            capture_output=True,
            input=b"",  # not DEVNULL: opening /dev/null is a write the guard checks
            timeout=timeout,
            check=False,
            start_new_session=detach,
        )
    except FileNotFoundError:
        raise ConduitError(
            "the git program was not found", hint="install git and make sure it is on PATH"
        ) from None
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]} took longer than {timeout:.0f} s") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.decode(errors="replace").splitlines()]
        last = next((ln for ln in reversed(lines) if ln), f"exit code {proc.returncode}")
        raise GitError(last.removeprefix("fatal: ").removeprefix("error: "))
    return proc.stdout.decode(errors="replace")


def _enclosing_repository(directory: str) -> str | None:
    """The top of the work tree containing ``directory``, or None."""
    path = os.path.abspath(directory)
    while True:
        if _is_repository(path):
            return path
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


def _is_repository(directory: str) -> bool:
    """A ``.git`` directory with a ``HEAD``, or a ``.git`` file pointing elsewhere
    (worktrees, submodules): a stray ``.git`` is not a repository."""
    dot_git = os.path.join(directory, ".git")
    if os.path.isdir(dot_git):
        return os.path.isfile(os.path.join(dot_git, "HEAD"))
    try:
        with open(dot_git, "rb") as f:
            return f.read(8) == b"gitdir: "
    except OSError:
        return False


def find_repositories(roots: Iterable[str], max_depth: int = MAX_DEPTH) -> list[str]:
    """Every git work tree at or under ``roots`` (not below one found: a repository's
    nested checkouts are its own business), sorted, each once."""
    found: set[str] = set()
    for root in roots:
        root = os.path.abspath(os.path.expanduser(root))
        base = root.count(os.sep)
        for top, dirs, _files in os.walk(root):
            if _is_repository(top):
                found.add(top)
                dirs[:] = []
                continue
            if top.count(os.sep) - base >= max_depth:
                dirs[:] = []
                continue
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS)
    return sorted(found)


def _workspace_repositories(config: dict[str, Any]) -> list[str]:
    roots = config.get("roots")
    if roots is not None:
        if not isinstance(roots, list) or not all(isinstance(r, str) for r in roots):
            raise ConduitError(
                "[plugin.repos] roots must be a list of directories",
                hint='for example: roots = ["~/src", "~/work"]',
            )
        missing = [r for r in roots if not os.path.isdir(os.path.expanduser(r))]
        if missing:
            raise ConduitError(
                f"[plugin.repos] roots: {missing[0]} is not a directory",
                hint="fix or remove it in Conduit's config.toml",
            )
        repos = find_repositories(roots)
        if not repos:
            raise ConduitError(
                f"no git repository under the configured roots ({', '.join(roots)})",
                hint="check [plugin.repos] roots in Conduit's config.toml",
            )
        return repos
    top = _enclosing_repository(os.getcwd())
    repos = find_repositories([top or os.getcwd()])
    if not repos:
        raise ConduitError(
            "not inside a git repository, and none below this directory", hint=_CONFIG_HINT
        )
    return repos


def _parallel(func: Callable[[str], dict[str, Any]], repos: list[str]) -> list[dict[str, Any]]:
    from concurrent.futures import ThreadPoolExecutor

    if len(repos) == 1:
        return [func(repos[0])]
    with ThreadPoolExecutor(max_workers=min(8, len(repos))) as pool:
        return list(pool.map(func, repos))


def _display(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


#: this run's ``[plugin.repos]`` settings (set by boot)
_settings: dict[str, Any] = {}


@click.group("repos")
def repos_group() -> None:
    """Status, fast-forward pulls and branch pruning across git repositories."""


# -- status ---------------------------------------------------------------------------------


def status(repo: str) -> RepoStatus:
    """One repository's state: ``branch`` (None when detached, then ``commit``),
    ``upstream`` (None when there is none), ``upstream_gone``, ``ahead``/``behind``,
    ``changed`` (tracked files with changes), ``untracked``, ``stashes``; or ``error``."""
    result: RepoStatus = {"path": repo, "name": _display(repo)}
    try:
        # Porcelain v2 is stable and locale-free; optional locks off: a status running
        # beside an editor's never takes the index lock.
        out = _git(repo, "--no-optional-locks", "status", "--porcelain=v2", "--branch", "-z")
        stashes = _git(repo, "stash", "list", "--format=%gd").splitlines()
    except GitError as exc:
        return {**result, "error": exc.message}
    head = commit = upstream = None
    ahead = behind = changed = untracked = 0
    ab = False
    fields = iter(out.split("\0"))
    for entry in fields:
        if entry.startswith("# branch.oid "):
            commit = entry.split(" ", 2)[2]
        elif entry.startswith("# branch.head "):
            head = entry.split(" ", 2)[2]
        elif entry.startswith("# branch.upstream "):
            upstream = entry.split(" ", 2)[2]
        elif entry.startswith("# branch.ab "):
            _, _, plus, minus = entry.split(" ")
            ahead, behind, ab = int(plus), -int(minus), True
        elif entry.startswith(("1 ", "u ")):
            changed += 1
        elif entry.startswith("2 "):  # a rename: its original path is the next field
            changed += 1
            next(fields, None)
        elif entry.startswith("? "):
            untracked += 1
    detached = head == "(detached)"
    return {
        **result,
        "branch": None if detached else head,
        "detached": detached,
        "commit": None if commit == "(initial)" else (commit or "")[:12],
        "upstream": upstream,
        # git names an upstream whose remote branch no longer exists without counts
        "upstream_gone": upstream is not None and not ab,
        "ahead": ahead,
        "behind": behind,
        "changed": changed,
        "untracked": untracked,
        "dirty": changed + untracked,
        "stashes": len(stashes),
    }


def _sync_text(s: RepoStatus) -> str:
    if s["detached"]:
        return "detached HEAD"
    if s["upstream"] is None:
        return "no upstream"
    if s["upstream_gone"]:
        return f"upstream {s['upstream']} gone"
    parts = [f"ahead {s['ahead']}"] * bool(s["ahead"]) + [f"behind {s['behind']}"] * bool(
        s["behind"]
    )
    return ", ".join(parts) or "up to date"


def _safe(text: str) -> str:
    """``text`` for a terminal: control and invisible format characters (an escape
    sequence in a directory name, a C1 control in a branch name) shown as ``\\x1b``."""
    if text.isprintable():
        return text
    import unicodedata

    return "".join(
        ch
        if unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp")
        else (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        for ch in text
    )


def _table(rows: list[list[str]]) -> str:
    rows = [[_safe(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _echo_json(data: object) -> None:
    import json

    click.echo(json.dumps(data, indent=2))


@repos_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status_cmd(as_json: bool) -> None:
    """Branch, ahead/behind, dirty files and stashes of every repository."""
    results = _parallel(status, _workspace_repositories(_settings))
    if as_json:
        _echo_json(results)
        return
    rows = [["REPO", "BRANCH", "UPSTREAM", "SYNC", "DIRTY", "STASHES"]]
    for s in results:
        if "error" in s:
            rows.append([s["name"], "?", "-", f"error: {s['error']}", "-", "-"])
            continue
        branch = f"(detached at {s['commit'][:7]})" if s["detached"] else s["branch"]
        rows.append(
            [
                s["name"],
                branch,
                s["upstream"] or "-",
                _sync_text(s),
                str(s["dirty"]),
                str(s["stashes"]),
            ]
        )
    click.echo(_table(rows))
    if any("error" in s for s in results):
        raise SystemExit(1)


# -- pull -----------------------------------------------------------------------------------
def pull(repo: str) -> dict[str, Any]:
    """Fetch the upstream and fast-forward to it, or say why not: ``action`` is
    ``pulled``, ``up to date``, ``skipped`` or ``failed``, with a ``reason``."""
    s = status(repo)
    out: dict[str, Any] = {"path": repo, "name": s["name"]}
    if "error" in s:
        return {**out, "action": "failed", "reason": s["error"]}
    why = (
        "detached HEAD"
        if s["detached"]
        else "no upstream"
        if s["upstream"] is None
        else f"upstream {s['upstream']} gone"
        if s["upstream_gone"]
        else f"dirty: {s['changed']} changed file(s)"
        if s["changed"]
        else None
    )
    if why:
        return {**out, "action": "skipped", "reason": why}
    try:
        _git(repo, "fetch", "--quiet", timeout=300, detach=True)
        s = status(repo)
        if "error" in s:
            return {**out, "action": "failed", "reason": s["error"]}
        if s["upstream_gone"]:
            return {**out, "action": "skipped", "reason": f"upstream {s['upstream']} gone"}
        if s["behind"] and s["ahead"]:
            reason = f"diverged: {s['ahead']} ahead, {s['behind']} behind {s['upstream']}"
            return {**out, "action": "skipped", "reason": reason}
        if not s["behind"]:
            note = f"{s['ahead']} commit(s) not pushed" if s["ahead"] else ""
            return {**out, "action": "up to date", "reason": note}
        before = _git(repo, "rev-parse", "--short", "HEAD").strip()
        _git(repo, "merge", "--ff-only", "--quiet", "@{upstream}")
        after = _git(repo, "rev-parse", "--short", "HEAD").strip()
    except GitError as exc:
        return {**out, "action": "failed", "reason": exc.message}
    return {**out, "action": "pulled", "reason": f"{before}..{after} ({s['behind']} commit(s))"}


@repos_group.command("pull")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def pull_cmd(as_json: bool) -> None:
    """Fast-forward every repository to its upstream; skip dirty, diverged, detached."""
    results = _parallel(pull, _workspace_repositories(_settings))
    if as_json:
        _echo_json(results)
    else:
        rows = [["REPO", "RESULT", "WHY"]]
        rows += [[r["name"], r["action"], r["reason"]] for r in results]
        click.echo(_table(rows))
        counts = {a: sum(r["action"] == a for r in results) for a in ("pulled", "skipped")}
        failed = sum(r["action"] == "failed" for r in results)
        click.echo(
            f"{counts['pulled']} pulled, {counts['skipped']} skipped, {failed} failed", err=True
        )
    if any(r["action"] == "failed" for r in results):
        raise SystemExit(1)


# -- prune ----------------------------------------------------------------------------------
def default_branch(repo: str) -> str | None:
    """The branch others are merged into: the remote's HEAD (``origin/HEAD``), else a
    local ``main`` or ``master``, else ``init.defaultBranch``; None when none exists."""
    try:
        ref = _git(repo, "symbolic-ref", "--quiet", "--short", "refs/remotes/origin/HEAD")
        name = ref.strip().removeprefix("origin/")
        candidates = [name]
    except GitError:
        candidates = []
    try:
        configured = _git(repo, "config", "--get", "init.defaultBranch").strip()
    except GitError:
        configured = ""
    candidates += ["main", "master", *([configured] if configured else [])]
    local = set(_git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads").split())
    return next((c for c in candidates if c in local), None)


def prune(repo: str, delete: bool) -> dict[str, Any]:
    """Local branches merged into the default branch, never the current or default one;
    deleted when ``delete``."""
    out: dict[str, Any] = {"path": repo, "name": _display(repo), "branches": []}
    try:
        default = default_branch(repo)
        if default is None:
            return {**out, "skipped": "no default branch (origin/HEAD, main or master) found"}
        current = _git(repo, "branch", "--show-current").strip()
        merged = _git(
            repo,
            "for-each-ref",
            f"--merged=refs/heads/{default}",
            "--format=%(refname:short)",
            "refs/heads",
        ).split()
        branches = [b for b in merged if b not in (default, current)]
        out.update(default=default, branches=branches)
        if delete:
            for b in branches:
                # -D: merged into the default branch was checked just above; -d would
                # also ask for it to be merged into HEAD, which may be another branch.
                _git(repo, "branch", "-D", "--quiet", b)
    except GitError as exc:
        return {**out, "error": exc.message}
    return out


@repos_group.command("prune")
@click.option("--yes", is_flag=True, help="Delete the branches (default: only list them).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def prune_cmd(yes: bool, as_json: bool) -> None:
    """Delete local branches merged into the default branch (a dry run unless --yes)."""
    repos = _workspace_repositories(_settings)
    results = _parallel(lambda r: prune(r, yes), repos)
    if as_json:
        _echo_json(results)
    else:
        verb = "deleted" if yes else "would delete"
        total = 0
        for r in results:
            if "error" in r:
                click.echo(_safe(f"{r['name']}: error: {r['error']}"))
            elif "skipped" in r:
                click.echo(_safe(f"{r['name']}: skipped: {r['skipped']}"))
            elif r["branches"]:
                total += len(r["branches"])
                click.echo(_safe(f"{r['name']}: {verb} {', '.join(r['branches'])}"))
            else:
                click.echo(_safe(f"{r['name']}: nothing merged into {r['default']}"))
        if total and not yes:
            click.echo(f"dry run: run 'conduit repos prune --yes' to delete {total}", err=True)
    if any("error" in r for r in results):
        raise SystemExit(1)


class ReposPlugin(Plugin):
    """``conduit repos status|pull|prune``."""

    def boot(self, ctx: PluginContext) -> None:
        _settings.clear()
        _settings.update(ctx.config)
        ctx.register_command(repos_group)
