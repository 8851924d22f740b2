"""``conduit plugins list | info | enable | disable | doctor | graph``: see and switch
plugins, and diagnose the installation.

Imported only when one of these runs (see ``LAZY_COMMANDS`` in the package face).
Everything a plugin wrote (its description, command help, errors) is printed through
:func:`conduit.text.inert`, so control characters show escaped; ``--json`` escapes them
by itself.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import click

from conduit.builtins.plugins._common import (
    admin,
    current_index,
    failures,
    find,
    state,
    table,
)
from conduit.errors import UsageError
from conduit.text import inert

if TYPE_CHECKING:
    from conduit.indexer.records import Index, PluginRec

__all__ = ["disable_cmd", "doctor_cmd", "enable_cmd", "graph_cmd", "info_cmd", "list_cmd"]


def _activation_report(index: Index, rec: PluginRec) -> list[str]:
    """Each activation event of ``rec`` and whether it fires here and now."""
    from conduit.kernel.activation import fires_now
    from conduit.paths import workspace_dirs

    name = rec["name"]
    lines = []
    own = [c["name"] for c in rec["commands"] if " " not in c["name"]]
    if own:
        lines.append(f"its own commands: {', '.join(own)}")
    for svc in rec["provides"]["services"]:
        chosen = index["services"].get(svc)
        note = "" if chosen == name else f" (but '{chosen or 'nobody'}' is chosen to provide it)"
        lines.append(f"service:{svc} (it provides it){note}")
    for event in rec["activation"]:
        kind = event.partition(":")[0]
        fired = fires_now(event, environ=os.environ, cwd=os.getcwd())
        status = ""
        if fired is not None:
            status = "fires now" if fired else "does not fire now"
            if kind == "file":
                status += f" (workspace: {workspace_dirs(os.getcwd())[-1]})"
        elif kind == "command":
            status = "fires when that command runs"
        elif kind == "event":
            status = "fires when that hook is called"
        elif kind == "service":
            status = "fires when that service is asked for"
        lines.append(f"{event}: {status}")
    return lines


def _rows(index: Index) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for rec in index["plugins"].values():
        rows.append(
            {
                "name": rec["name"],
                "version": rec["version"],
                "source": rec["source"],
                "first_party": bool(rec.get("first_party")),
                "state": state(rec),
                "isolation": rec["isolation"],
                "capabilities": rec["capabilities"],
                "commands": [c["name"] for c in rec["commands"]],
                "description": rec["description"],
            }
        )
    for b in index["broken"]:
        rows.append(
            {
                "name": b["name"],
                "version": None,
                "source": b["source"],
                "state": "broken",
                "isolation": None,
                "capabilities": [],
                "commands": [],
                "description": "",
                "error": b["error"],
            }
        )
    return rows


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_cmd(as_json: bool) -> None:
    """List installed plugins with their state."""
    rows = _rows(current_index())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    cells = [["NAME", "VERSION", "SOURCE", "STATE", "ISOLATION", "CAPABILITIES"]]
    for r in rows:
        cells.append(
            [
                inert(r["name"]),
                inert(r["version"] or "-"),
                r["source"],
                r["state"],
                r["isolation"] or "-",
                inert(",".join(map(_mark_unscoped, r["capabilities"])) or "-"),
            ]
        )
    click.echo(table(cells, states=3))
    if any(_mark_unscoped(c) != c for r in rows for c in r["capabilities"]):
        click.echo("! unscoped: all of that kind (see 'conduit plugins permissions NAME')")


def _mark_unscoped(cap: str) -> str:
    """``network:http`` -> ``network:http!``: an unscoped capability means all of its kind."""
    return cap + "!" if cap.count(":") == 1 else cap


@click.command("info")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--no-load", is_flag=True, help="Do not load the plugin to time it.")
def info_cmd(name: str, as_json: bool, no_load: bool) -> None:
    """Show a plugin's manifest, origin and load time."""
    index = current_index()
    rec = find(index, name)
    info: dict[str, Any] = dict(rec)
    info["state"] = state(rec)
    already = name == "plugins"  # this very plugin is loaded: timing it again is meaningless
    if not no_load and not already and info["state"] in ("enabled", "failing"):
        info["load"] = admin().measure_load(name)
    info["activates_on"] = _activation_report(index, rec)
    info["failures"] = [
        {"time": _when(t), "error": error} for t, error in failures().get(name, [])[-5:]
    ]
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    marked = [_mark_unscoped(c) for c in rec["capabilities"]]
    lines = [
        f"{rec['name']} {rec['version'] or ''}".rstrip(),
        f"  description:  {rec['description'] or '-'}",
        f"  state:        {info['state']}",
        f"  source:       {rec['source']}"
        + (f" ({rec['dist']})" if rec["dist"] else "")
        + (", first-party: what it declares is granted by default" if _first(rec) else ""),
        f"  origin:       {rec['origin']}",
        f"  entry:        {_entry_text(rec)}",
        f"  api:          {rec['api']}",
        f"  isolation:    {rec['isolation']}",
        f"  capabilities: {', '.join(marked) or 'none'}"
        + ("  (! unscoped: all of that kind)" if any(m.endswith("!") for m in marked) else ""),
        *_dependency_lines(index, rec),
        f"  activation:   {', '.join(rec['activation']) or 'its own commands'}",
        f"  requires first: {', '.join(rec['after']) or 'nothing'}",
        f"  provides:     {', '.join(rec['provides']['services']) or 'nothing'}",
        f"  requires:     {', '.join(rec['requires']['plugins'] + rec['requires']['services']) or 'nothing'}",  # noqa: E501
        "  commands:",
    ]
    for c in rec["commands"]:
        usage = f" {c['usage']}" if c["usage"] else ""
        lines.append(f"    {c['name']}{usage}  {c['help']}".rstrip())
    if rec["blocked"]:
        lines.append(f"  why inactive: blocked: {rec['blocked']}")
        if rec["blocked_hint"]:
            lines.append(f"                hint: {rec['blocked_hint']}")
    elif info["state"] not in ("enabled", "failing"):
        lines.append(f"  why inactive: {info['state']}")
    if info["failures"]:
        last = info["failures"][-1]
        lines.append(f"  failing since: {info['failures'][0]['time']}")
        lines.append(f"  last error:   {last['error']}")
        lines.append("  recent failures:")
        lines += [f"    {f['time']}  {f['error']}" for f in info["failures"]]
    lines.append("  activated by:")
    lines += [f"    {line}" for line in info["activates_on"]]
    load = info.get("load")
    if isinstance(load, dict):
        lines.append(
            f"  load time:    {load['total_ms']:.1f} ms "
            f"(import {load['import_ms']:.1f} ms, boot {load['boot_ms']:.1f} ms)"
        )
    elif isinstance(load, str):
        lines.append(f"  load:         FAILED: {load}")
    click.echo("\n".join(map(inert, lines)))


def _when(t: float) -> str:
    """A journal time as local ``YYYY-MM-DD HH:MM:SS``."""
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _first(rec: PluginRec) -> bool:
    from conduit.security.grants import first_party

    return first_party(rec)


def _dependency_lines(index: Index, rec: PluginRec) -> list[str]:
    """``dependencies:`` and what the user allowed for them
    (docs/permissions.md#dependencies)."""
    from conduit.security.grants import (
        builds_allowed,
        dependencies_to_consent,
        dependency_list,
        inert,
    )

    deps = dependency_list(rec)
    if not deps:
        return ["  dependencies: none"]
    if rec["source"] == "builtin":
        state = "built in"
    elif dependencies_to_consent(index, rec):
        state = "not consented yet: asked on first use"
    else:
        state = "consented"
    builds = (
        "may build from source" if builds_allowed(index["config"], rec["name"]) else "wheels only"
    )
    return [f"  dependencies: {', '.join(map(inert, deps))}  ({state}; {builds})"]


def _entry_text(rec: PluginRec) -> str:
    if rec["source"] == "executable":
        how = "JSON-RPC on stdin/stdout" if rec["protocol"] == "jsonrpc" else "pass-through"
        return f"{rec['origin']} ({how})"
    return rec["entry"] or "(the Plugin subclass in the file)"


def _set_disabled(name: str, disabled: bool) -> None:
    from conduit.config import update_config
    from conduit.paths import resolve

    index = current_index()
    if not any(b["name"] == name for b in index["broken"]):
        find(index, name)  # a broken plugin may be disabled too, to silence it
    if disabled and name == "plugins":
        raise UsageError(
            "the 'plugins' plugin cannot be disabled",
            hint="it is how plugins are managed; use --no-plugins for safe mode",
        )

    def change(doc: Any) -> None:
        import tomlkit

        if "plugins" not in doc:
            doc["plugins"] = tomlkit.table()
        section = doc["plugins"]
        current = [str(x) for x in section.get("disabled", [])]
        if disabled and name not in current:
            current.append(name)
        if not disabled:
            current = [x for x in current if x != name]
        array = tomlkit.array()
        array.extend(sorted(current))
        section["disabled"] = array

    update_config(resolve().config_file, change)
    click.echo(f"{'Disabled' if disabled else 'Enabled'} plugin '{name}'.")


@click.command("enable")
@click.argument("name")
def enable_cmd(name: str) -> None:
    """Enable a plugin."""
    _set_disabled(name, False)


@click.command("disable")
@click.argument("name")
def disable_cmd(name: str) -> None:
    """Disable a plugin; its commands disappear until it is enabled again."""
    _set_disabled(name, True)


@click.command("doctor")
@click.option(
    "--deep",
    is_flag=True,
    help="Also load every enabled plugin, each in its own host kind in a child process.",
)
def doctor_cmd(deep: bool) -> None:
    """Re-read every manifest and report broken plugins and conflicts."""
    service = admin()
    index = service.rebuild()
    problems = 0
    plugins = index["plugins"]
    click.echo(f"Checked {len(plugins) + len(index['broken'])} plugins.")
    problems += _failing_report(index, service.disabled, deep)
    for b in index["broken"]:
        problems += 1
        click.echo(inert(f"error: plugin '{b['name']}' ({b['source']}): {b['error']}"))
        if b["hint"]:
            click.echo(inert(f"  hint: {b['hint']}"))
    for word, claimants in index["routes"].items():
        if len(claimants) > 1:
            click.echo(
                f"warning: command '{word}' is claimed by {', '.join(claimants)}; "
                f"'{claimants[0]}' wins, the others stay reachable as "
                + ", ".join(f"'{p}:{word}'" for p in claimants[1:])
            )
    for rec in plugins.values():
        if rec["blocked"] and rec["enabled"]:
            problems += 1
            click.echo(inert(f"error: plugin '{rec['name']}' is blocked: {rec['blocked']}"))
            if rec["blocked_hint"]:
                click.echo(inert(f"  hint: {rec['blocked_hint']}"))
    for svc, providers in index["ambiguous"].items():
        click.echo(
            f"warning: service '{svc}' is provided by {' and '.join(providers)}; "
            f'pin one with [pins] "service:{svc}" = "{providers[0]}"'
        )
    for name in index["events"]["startup"]:
        if name in service.disabled:
            continue
        cost = service.measure_load(name, index=index)
        detail = f"{cost['total_ms']:.1f} ms" if isinstance(cost, dict) else f"fails: {cost}"
        click.echo(
            inert(
                f"warning: plugin '{name}' activates at startup, on every command ({detail}); "
                "prefer command:, env:, file: or event: activation"
            )
        )
    from conduit.journal import DRIFT, interrupted_operation
    from conduit.paths import resolve

    interrupted = interrupted_operation(resolve())
    if interrupted:
        problems += 1
        click.echo(f"error: {inert(interrupted)}")
    for text in index["warnings"]:
        if text.startswith(DRIFT):  # plugins missing or changed behind the store's back
            problems += 1
            click.echo(f"error: {inert(text)}")
        else:
            click.echo(f"warning: {inert(text)}")
    for rec in plugins.values():
        if not rec["enabled"]:
            click.echo(f"note: plugin '{rec['name']}' is disabled")
    from conduit.security.report import sandbox_report as report  # process sandbox

    for available, text in report():
        click.echo(f"sandbox: {text}" if available else f"warning: sandbox: {text}")
    if problems:
        raise click.exceptions.Exit(1)
    click.echo("No broken plugins.")


def _failing_report(index: Index, disabled: frozenset[str], deep: bool) -> int:
    """Report the plugins whose last activation failed (the run journal), or with
    ``deep`` those that fail to load now; the number of problems."""
    usable = [n for n in index["usable"] if n not in disabled]
    failing = failures()
    if not deep:
        for name in usable:
            if name in failing:
                when, error = failing[name][-1]
                _failing_lines(
                    name, f"failed to load on its last activation ({_when(when)})", error
                )
        return sum(1 for n in usable if n in failing)
    import time

    from conduit.kernel.verify import check
    from conduit.paths import resolve
    from conduit.runlog import record

    problems, activations, start = 0, [], time.perf_counter_ns()
    click.echo(f"Loading {len(usable)} enabled plugins, each in a child process...")
    results = check(usable)
    for name in usable:
        result = results[name]
        if not result["ok"]:
            problems += 1
            _failing_lines(name, "fails to load", result["error"])
        elif result["needs_grants"]:
            click.echo(inert(f"note: plugin '{name}' lacks a grant: {result['needs_grants']}"))
        # what loaded, or not, is the plugins' latest state
        activations += [
            a for a in result["activations"] if isinstance(a, dict) and a.get("name") == name
        ]
    settings = index["config"].get("journal")
    if not isinstance(settings, dict) or settings.get("enabled", True):
        record(
            resolve(),
            settings,
            command="plugins doctor --deep",
            plugin="plugins",
            code=1 if problems else 0,
            error="",
            started_ns=start,
            activations=activations,
        )
    if not problems:
        click.echo(f"All {len(usable)} enabled plugins load.")
    return problems


def _failing_lines(name: str, what: str, error: str) -> None:
    error = error.removeprefix(f"plugin '{name}': ")
    click.echo(inert(f"error: plugin '{name}' {what}: {error}"))
    click.echo(
        inert(
            f"  hint: 'conduit plugins info {name}' shows its recent failures; fix or update "
            f"it, or turn it off with 'conduit plugins disable {name}'"
        )
    )


@click.command("graph")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "dot"]),
    default="text",
    show_default=True,
    help="Plain text, or Graphviz DOT.",
)
def graph_cmd(fmt: str) -> None:
    """Print the dependency graph between plugins."""
    from packaging.requirements import Requirement

    index = current_index()
    plugins = index["plugins"]
    edges: list[tuple[str, str, str]] = []
    for rec in plugins.values():
        if not rec["enabled"]:
            continue
        for req in rec["requires"]["plugins"]:
            edges.append((rec["name"], Requirement(req).name, req))
        for svc in rec["requires"]["services"]:
            providers = (
                [index["services"][svc]]
                if svc in index["services"]
                else (index["ambiguous"].get(svc) or ["?"])
            )
            edges += [(rec["name"], p, f"service {svc}") for p in providers]
    if fmt == "dot":
        out = ["digraph conduit {", "  rankdir=LR;", "  node [shape=box];"]
        for rec in plugins.values():
            label = f"{rec['name']}\\n{rec['version'] or ''}".rstrip("\\n")
            style = (
                ", color=red, fontcolor=red"
                if rec["blocked"]
                else (", style=dashed" if not rec["enabled"] else "")
            )
            out.append(f'  "{rec["name"]}" [label="{label}"{style}];')
        for src, dst, label in edges:
            out.append(f'  "{src}" -> "{dst}" [label="{label}"];')
        out.append("}")
        click.echo("\n".join(map(inert, out)))
        return
    for rec in plugins.values():
        shown_state = state(rec)
        head = f"{rec['name']} {rec['version'] or ''}".rstrip()
        click.echo(inert(head + ("" if shown_state == "enabled" else f"  [{shown_state}]")))
        for src, dst, label in edges:
            if src == rec["name"]:
                have = plugins.get(dst)
                shown = f"{dst} {have['version'] or ''}".rstrip() if have else f"{dst} (missing)"
                click.echo(inert(f"  requires {label} -> {shown}"))
        if rec["blocked"]:
            click.echo(inert(f"  blocked: {rec['blocked']}"))
