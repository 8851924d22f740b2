"""``conduit plugins bisect``: find the third-party plugin behind a problem by halving.

Like ``git bisect`` over plugins instead of commits, and VS Code's extension bisect: the
user (or a command's exit status, with ``run``) says whether the problem shows while a
subset of the suspects is switched off. Nothing in the config changes: the state lives
in one file in the state directory (``cli.BISECT_FILE``), written atomically under a
lock, and the command line reads its ``disabled:`` line on every run and switches those
plugins off for that run, with a warning that a bisect is active. Built-ins and the
first-party plugins Conduit ships (``src/conduit_plugins``) are never suspects.

The search assumes one culprit, and that the problem shows with every plugin enabled
(``start`` means "it shows now"; ``run`` checks it first, as ``git bisect run`` needs a
bad commit). Each step keeps the suspects' first half enabled and switches the second
half off (plugins already cleared stay enabled): ``good`` (the problem is gone) leaves
the second half, ``bad`` the first. With N suspects that is at most ceil(log2 N) steps.
Unless some step answered ``good`` (which shows the problem needs a plugin), the last
suspect is confirmed with one more step, which switches off that plugin alone: at most
ceil(log2 N) + 1 steps in all. ``skip`` (exit status 125 with ``run``) tries another
split of the same suspects.
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
from typing import Any

import click

from conduit.builtins.plugins._common import admin
from conduit.builtins.plugins._inspect import disable_cmd
from conduit.cli import BISECT_FILE
from conduit.errors import ConduitError, UsageError
from conduit.security.grants import first_party
from conduit.text import inert

__all__ = ["bisect_cmd"]

PROG = "conduit plugins bisect"
SKIP = 125  # as git bisect run: the step cannot be judged


def _path() -> str:
    from conduit.paths import resolve

    return os.path.join(resolve().state_dir, BISECT_FILE)


def _load(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConduitError(
            f"cannot read the bisect state {path}: {exc}",
            hint=f"end the bisect with '{PROG} reset'",
        ) from None
    state: dict[str, Any] = {}
    for line in lines:
        key, _, value = line.partition(":")
        state[key] = value.split()
    try:
        return {
            "phase": state["phase"][0],
            "candidates": state["candidates"],
            "suspects": state["suspects"],
            "split": int(state["split"][0]),
            "tried": [int(k) for k in state.get("tried", [])],
            "steps": int(state["steps"][0]),
            "skipped": int(state["skipped"][0]),
            "goods": int(state["goods"][0]),
        }
    except (KeyError, IndexError, ValueError):
        raise ConduitError(
            f"the bisect state {path} is damaged", hint=f"end the bisect with '{PROG} reset'"
        ) from None


def _disabled(state: dict[str, Any]) -> list[str]:
    suspects: list[str] = state["suspects"]
    if state["phase"] == "halve":
        return suspects[state["split"] :]
    if state["phase"] == "confirm":
        return suspects[:1]
    return []  # premise: everything enabled


def _bound(state: dict[str, Any]) -> int:
    return math.ceil(math.log2(len(state["candidates"]))) + 1


def _note(state: dict[str, Any]) -> str:
    off = len(_disabled(state))
    total = len(state["candidates"])
    if state["phase"] == "premise":
        return f"checking the problem with all {total} third-party plugins enabled"
    step = state["steps"] + 1
    return f"step {step} of at most {_bound(state)}: {off} of {total} plugins disabled"


def _save(path: str, state: dict[str, Any]) -> None:
    from conduit.fs import atomic_write

    text = [
        f"# Conduit plugin bisect; end it with '{PROG} reset'",
        f"note: {_note(state)}",
        f"disabled: {' '.join(_disabled(state))}",
        f"phase: {state['phase']}",
        f"candidates: {' '.join(state['candidates'])}",
        f"suspects: {' '.join(state['suspects'])}",
        f"split: {state['split']}",
        f"tried: {' '.join(map(str, state['tried']))}",
        f"steps: {state['steps']}",
        f"skipped: {state['skipped']}",
        f"goods: {state['goods']}",
    ]
    atomic_write(path, ("\n".join(text) + "\n").encode())


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def _narrow(state: dict[str, Any]) -> tuple[str, str] | None:
    """Set up the next step for the current suspects, or conclude."""
    suspects = state["suspects"]
    if len(suspects) == 1:
        if state["goods"]:
            return ("culprit", suspects[0])
        state["phase"] = "confirm"
    else:
        state["phase"] = "halve"
        state["split"] = len(suspects) // 2
    state["tried"] = []
    return None


def _answer(state: dict[str, Any], verdict: str) -> tuple[str, str] | None:
    """Record ``good``, ``bad`` or ``skip`` for the current step; a conclusion or None."""
    phase = state["phase"]
    suspects: list[str] = state["suspects"]
    if phase == "premise":
        if verdict == "good":
            return ("nothing", "")
        if verdict == "skip":
            return ("undecided", "")
        return _narrow(state)
    if verdict == "skip":
        state["skipped"] += 1
        if phase == "confirm":
            return ("undecided", suspects[0])
        state["tried"].append(state["split"])
        n = len(suspects)
        left = [k for k in range(1, n) if k not in state["tried"]]
        if not left:
            return ("undecided", " ".join(suspects))
        state["split"] = min(left, key=lambda k: (abs(2 * k - n), k))
        return None
    state["steps"] += 1
    if phase == "confirm":
        return ("culprit", suspects[0]) if verdict == "good" else ("none", suspects[0])
    k = state["split"]
    if verdict == "bad":
        state["suspects"] = suspects[:k]
    else:
        state["suspects"] = suspects[k:]
        state["goods"] += 1
    return _narrow(state)


def _describe(state: dict[str, Any]) -> None:
    """Print where the bisect stands and what to do next."""
    off = _disabled(state)
    click.echo(f"Bisecting: {_note(state)}.")
    click.echo(inert(f"  disabled: {', '.join(off) or '(none)'}"))
    click.echo(inert(f"  suspects: {', '.join(state['suspects'])}"))
    click.echo(
        f"Now check for the problem, then run '{PROG} good' (gone) or 'bad' (still "
        "there); 'skip' if you cannot tell, 'reset' to stop."
    )


def _conclude(state: dict[str, Any], result: tuple[str, str], apply: bool) -> None:
    """Say what the bisect found (its state file is gone already)."""
    kind, name = result
    steps = f"{state['steps']} step{'s' if state['steps'] != 1 else ''}"
    if state["skipped"]:
        steps += f", {state['skipped']} skipped"
    ended = "The bisect is over: every plugin is enabled again for your runs."
    if kind == "culprit":
        click.echo(inert(f"Found it: plugin '{name}' causes the problem ({steps})."))
        click.echo(ended)
        command = f"conduit plugins disable {name}"
        if not apply and sys.stdin.isatty() and sys.stdout.isatty():
            apply = click.confirm(f"Disable '{name}' now?", default=False)
        if apply:
            click.get_current_context().invoke(disable_cmd, name=name)
        else:
            click.echo(inert(f"To disable it: {command}"))
        return
    click.echo(ended)
    if kind == "nothing":
        message = "the problem does not show with every plugin enabled: nothing to bisect"
        hint = "start the bisect while the problem shows"
    elif kind == "none":
        message = (
            f"no single plugin causes the problem: it remains with '{name}', the last "
            f"suspect, disabled ({steps})"
        )
        hint = "it may need several plugins together, or come from Conduit or a built-in; try 'conduit --no-plugins ...'"  # noqa: E501
    else:
        message = (
            f"the bisect could not decide: the steps were skipped (suspects left: {name})"
            if name
            else "the first check was skipped: nothing to bisect"
        )
        hint = "run it again and judge the steps it skipped"
    raise ConduitError(message, hint=hint)


def _record(
    path: str, verdict: str, missing: ConduitError
) -> tuple[dict[str, Any], tuple[str, str] | None]:
    """Apply ``verdict`` to the bisect at ``path`` under its lock: the state and the
    result (None: the bisect goes on, its state saved; else it is over and removed)."""
    from conduit.fs import locked

    with locked(path):
        state = _load(path)
        if state is None:
            raise missing
        result = _answer(state, verdict)
        if result is None:
            _save(path, state)
        else:
            _remove(path)
    return state, result


def _step(verdict: str, apply: bool) -> None:
    missing = UsageError("no plugin bisect is active", hint=f"start one with '{PROG} start'")
    state, result = _record(_path(), verdict, missing)
    if result is not None:
        _conclude(state, result, apply)
    else:
        _describe(state)


def _start(assume_bad: bool) -> dict[str, Any]:
    from conduit.fs import locked

    index = admin().index
    path = _path()
    with locked(path):
        if os.path.exists(path):
            raise UsageError(
                "a plugin bisect is already active",
                hint=f"see '{PROG} status', or end it with '{PROG} reset'",
            )
        candidates = sorted(
            name
            for name, rec in index["plugins"].items()
            if rec["source"] != "builtin"
            and not first_party(rec)
            and rec["enabled"]
            and not rec["blocked"]
            and name not in admin().disabled
        )
        if not candidates:
            raise UsageError(
                "no third-party plugin is enabled: nothing to bisect",
                hint="built-in plugins are never bisected; see 'conduit plugins list'",
            )
        state: dict[str, Any] = {
            "phase": "premise",
            "candidates": candidates,
            "suspects": list(candidates),
            "split": 0,
            "tried": [],
            "steps": 0,
            "skipped": 0,
            "goods": 0,
        }
        if assume_bad:
            _narrow(state)
        _save(path, state)
    return state


@click.group("bisect")
def bisect_cmd() -> None:
    """Find the third-party plugin behind a problem by switching halves of them off."""


_APPLY = click.option(
    "--apply", is_flag=True, help="When a culprit is found, disable it in the config."
)


@bisect_cmd.command("start")
def start_cmd() -> None:
    """Start bisecting: the problem shows with every plugin enabled now."""
    state = _start(assume_bad=True)
    click.echo(
        f"Bisecting {len(state['candidates'])} third-party plugins "
        f"(at most {_bound(state)} steps; built-ins and first-party plugins stay enabled)."
    )
    _describe(state)


@bisect_cmd.command("good")
@_APPLY
def good_cmd(apply: bool) -> None:
    """The problem is gone in this step."""
    _step("good", apply)


@bisect_cmd.command("bad")
@_APPLY
def bad_cmd(apply: bool) -> None:
    """The problem is still there in this step."""
    _step("bad", apply)


@bisect_cmd.command("skip")
@_APPLY
def skip_cmd(apply: bool) -> None:
    """This step cannot be judged: try another split."""
    _step("skip", apply)


@bisect_cmd.command("reset")
def reset_cmd() -> None:
    """End the bisect: every plugin is enabled again for your runs."""
    from conduit.fs import locked

    path = _path()
    with locked(path):
        active = os.path.exists(path)
        _remove(path)
    click.echo("Bisect ended: " if active else "No bisect was active: ", nl=False)
    click.echo("nothing in your config changed.")


@bisect_cmd.command("status")
def status_cmd() -> None:
    """Show the step in progress."""
    state = _load(_path())
    if state is None:
        click.echo(f"No plugin bisect is active (start one with '{PROG} start').")
        return
    _describe(state)


@bisect_cmd.command("run", context_settings={"ignore_unknown_options": True})
@_APPLY
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run_cmd(apply: bool, command: tuple[str, ...]) -> None:
    """Bisect automatically: COMMAND's exit status judges each step (0 good, 125 skip,
    1-127 bad). Starts a bisect if none is active, checking first that COMMAND fails
    with every plugin enabled."""

    argv = list(command[1:] if command and command[0] == "--" else command)
    if not argv:
        raise UsageError("no command to run", hint=f"usage: {PROG} run -- COMMAND [ARGS]...")
    path = _path()
    if _load(path) is None:
        _start(assume_bad=False)
    while True:
        state = _load(path)
        if state is None:
            raise ConduitError("the bisect was ended by another process")
        click.echo(inert(f"bisect run: {_note(state)}: {' '.join(argv)}"))
        try:
            code = subprocess.run(argv, check=False).returncode
        except OSError as exc:
            raise UsageError(
                inert(f"cannot run '{argv[0]}': {exc.strerror}"),
                hint=f"the bisect stays at this step; '{PROG} reset' ends it",
            ) from None
        if code < 0 or code > 127:
            raise ConduitError(
                f"'{argv[0]}' ended with status {code} (a signal, or above 127): stopping here",
                hint=f"the bisect stays at this step; '{PROG} reset' ends it",
            )
        verdict = "good" if code == 0 else "skip" if code == SKIP else "bad"
        click.echo(f"bisect run: exit status {code}: {verdict}")
        ended = ConduitError("the bisect was ended by another process")
        current, result = _record(path, verdict, ended)
        if result is not None:
            _conclude(current, result, apply)
            return
