"""``conduit plugins permissions | grant | revoke``: see and change what plugins may do."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from conduit.builtins.plugins._common import current_index, find
from conduit.errors import UsageError, grant_command
from conduit.security.capabilities import Capability, CapabilityError, missing, parse
from conduit.security.grants import (
    SANDBOX_PLATFORM,
    add_grants,
    advisory,
    consent_dependencies,
    dependency_list,
    describe,
    describe_identity,
    first_party,
    granted,
    missing_for,
    remove_grants,
    requested,
    withdraw_dependencies,
    withheld_note,
)
from conduit.security.report import enforcement
from conduit.text import inert

if TYPE_CHECKING:
    from conduit.indexer.records import Index, PluginRec

__all__ = ["grant_cmd", "permissions_cmd", "revoke_cmd"]


def _config_file() -> str:
    from conduit.paths import resolve

    return resolve().config_file


def _third_party(index: Index, name: str) -> PluginRec:
    rec = find(index, name)
    if rec["source"] == "builtin":
        raise UsageError(
            f"plugin '{name}' is built in; built-in plugins are trusted and need no grants",
            hint="grants are for third-party plugins (see docs/permissions.md)",
        )
    return rec


def _parse_args(texts: tuple[str, ...]) -> list[Capability]:
    caps = []
    for text in texts:
        try:
            caps.append(parse(text))
        except CapabilityError as exc:
            raise UsageError(exc.message, hint=exc.hint) from None
    return caps


def _report(index: Index, rec: PluginRec) -> dict[str, Any]:
    name = rec["name"]
    asked = requested(rec)
    have = granted(index, name)
    lacking = missing_for(index, rec)
    host, enforced, gaps = enforcement(rec, have)
    forced = index["config"].get("isolation", {})
    assert isinstance(forced, dict)
    bound = index["config"].get("granted-to", {})
    assert isinstance(bound, dict)
    held = rec.get("withheld")

    return {
        "name": name,
        "version": rec["version"],
        "source": rec["source"],
        "first_party": first_party(rec),
        "isolation": rec["isolation"],
        "isolation_forced_by_policy": name in forced,
        "host": host,
        "requested": [
            {
                "capability": str(c),
                "granted": c not in lacking,
                "unscoped": c.unscoped,
                "meaning": describe(c),
            }
            for c in asked
        ],
        "granted": [str(c) for c in have],
        "granted_not_requested": [str(g) for g in have if not any(g.covers(c) for c in asked)],
        "missing": [str(c) for c in lacking],
        "grant_command": grant_command(name, [str(c) for c in lacking]) if lacking else None,
        "enforced": enforced,
        "not_enforced": gaps,
        "advisory": advisory(rec),
        "identity": rec.get("identity"),
        "granted_to": held["granted_to"] if held else bound.get(name),
        "withheld": list(held["grants"]) if held else [],
        "withheld_note": withheld_note(rec),
    }


@click.command("permissions")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def permissions_cmd(name: str, as_json: bool) -> None:
    """Show what a plugin requests, what it was granted and what its host enforces."""
    index = current_index()
    report = _report(index, find(index, name))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    version = f" {report['version']}" if report["version"] else ""
    first = ", first-party" if report["first_party"] else ""
    lines = [f"{name}{version} ({report['source']}{first})"]
    policy = " (forced by the [isolation] policy)" if report["isolation_forced_by_policy"] else ""
    lines.append(f"  host: {report['host']}{policy}")
    lines += _advisory_lines(name, report)
    if not report["requested"]:
        lines.append("  requested: nothing")
    else:
        lines.append("  requested:")
        width = max(len(r["capability"]) for r in report["requested"])
        for r in report["requested"]:
            state = "granted" if r["granted"] else "MISSING"
            if report["first_party"] and r["granted"]:
                state = "default"  # a first-party plugin's declared capabilities
            mark = "!" if r["unscoped"] else " "
            lines.append(f"  {mark} {r['capability']:<{width}}  {state:<7}  {r['meaning']}")
    if report["granted_not_requested"]:
        lines.append("  granted but not requested: " + ", ".join(report["granted_not_requested"]))
    lines += _binding_lines(report)
    if report["missing"]:
        lines.append(f"  missing: {', '.join(report['missing'])}")
        lines.append(f"  grant them with: {report['grant_command']}")
    if report["enforced"]:
        lines.append("  enforced by this host:")
        lines += [f"    {text}" for text in report["enforced"]]
    if report["not_enforced"]:
        lines.append("  not enforced:")
        lines += [f"    {text}" for text in report["not_enforced"]]
    if any(r["unscoped"] for r in report["requested"]):
        lines.append("  ! unscoped: all of that kind")
    click.echo("\n".join(map(inert, lines)))  # a plugin's text shows escaped


def _advisory_lines(name: str, report: dict[str, Any]) -> list[str]:
    """For an in-process plugin: its limits are advisory, and how to enforce them."""
    if not report["advisory"]:
        return []
    lines = [
        "  ! advisory: it runs inside Conduit's own process, where code that means to gets",
        "    around the guard (ctypes, _posixsubprocess)",
    ]
    if SANDBOX_PLATFORM:
        lines[-1] += "; to enforce its grants, run it in the"
        lines.append(f'    process sandbox: [isolation] {name} = "process" in {_config_file()}')
    return lines


def _binding_lines(report: dict[str, Any]) -> list[str]:
    """Whom the grants under this name were given to."""
    if report["withheld"]:
        return [
            f"  ! grants not applied: {', '.join(report['withheld'])}",
            f"    {report['withheld_note']}",
        ]
    if not report["granted"] or report["source"] == "builtin" or report["first_party"]:
        return []
    to = report["granted_to"]
    if not to:
        return ["  grants bound to: nobody yet (bound to this plugin when it next runs)"]
    return [f"  grants bound to: {describe_identity(to)}"]


@click.command("grant")
@click.argument("name")
@click.argument("capabilities", nargs=-1, metavar="[CAPABILITY]...")
@click.option("--requested", "all_requested", is_flag=True, help="Grant everything it requests.")
@click.option(
    "--dependencies",
    "dependencies",
    is_flag=True,
    help="Consent to installing its inline dependencies (as they are listed now).",
)
@click.option(
    "--allow-build",
    is_flag=True,
    help="Also let its dependencies build from source and be URLs or paths "
    "(their build code runs with your rights).",
)
def grant_cmd(
    name: str,
    capabilities: tuple[str, ...],
    all_requested: bool,
    dependencies: bool,
    allow_build: bool,
) -> None:
    """Grant capabilities to a plugin, or consent to installing its dependencies.

    Both are saved in the config ([grants], [dependencies])."""
    index = current_index()
    rec = _third_party(index, name)
    asked = requested(rec)
    caps = _parse_args(capabilities)
    if all_requested:
        caps += [c for c in asked if c not in caps]
    if dependencies or allow_build:
        _consent(rec, allow_build)
        if not caps:
            return
    if not caps:
        raise UsageError(
            "name the capabilities to grant",
            hint=f"'conduit plugins permissions {name}' shows what it requests; "
            f"'--requested' grants all of it",
        )
    have = granted(index, name)
    new: list[str] = []
    for cap in caps:
        cover = next((g for g in have if g.covers(cap)), None)
        if cover is not None:
            click.echo(f"note: {cap} is already granted (by {cover})", err=True)
            continue
        if not any(cap.covers(c) or c.covers(cap) for c in asked):
            click.echo(
                f"warning: plugin '{name}' does not request {cap}; granting it anyway "
                "(it takes effect if a later version asks for it)",
                err=True,
            )
        if cap.unscoped:
            plain = describe(cap).removesuffix(" (unscoped!)")
            click.echo(f"warning: {cap} is unscoped: {plain}", err=True)
        new.append(str(cap))
    held = rec.get("withheld")
    if held:
        # the grants given to the other plugin are replaced, never inherited
        click.echo(f"note: {withheld_note(rec)}; replacing {', '.join(held['grants'])}", err=True)
    added = add_grants(_config_file(), name, new, identity=rec["identity"], replace=bool(held))
    if added:
        click.echo(f"Granted to '{name}': {', '.join(added)}.")
    else:
        click.echo(f"Nothing to grant: '{name}' already has all of it.")


def _consent(rec: PluginRec, allow_build: bool) -> None:
    """``grant NAME --dependencies [--allow-build]``: record the consent to install the
    plugin's inline dependencies, as the grant prompt does on a yes."""
    name = rec["name"]
    deps = dependency_list(rec)
    if not deps:
        raise UsageError(
            f"plugin '{name}' declares no dependencies",
            hint=f"'conduit plugins info {name}' shows what it declares",
        )
    consent_dependencies(_config_file(), name, deps, allow_build=allow_build)
    click.echo(f"Consented to install the dependencies of '{name}': {', '.join(map(inert, deps))}.")
    if allow_build:
        click.echo(
            f"warning: '{name}' may now build its dependencies from source and install URL "
            "or path requirements: their build code runs with your rights, outside any "
            "sandbox",
            err=True,
        )


@click.command("revoke")
@click.argument("name")
@click.argument("capabilities", nargs=-1, metavar="[CAPABILITY]...")
@click.option("--all", "revoke_all", is_flag=True, help="Revoke every grant of the plugin.")
@click.option(
    "--dependencies",
    "dependencies",
    is_flag=True,
    help="Withdraw the consent to install its dependencies (and to build them).",
)
def revoke_cmd(
    name: str, capabilities: tuple[str, ...], revoke_all: bool, dependencies: bool
) -> None:
    """Revoke capabilities granted to a plugin, or the consent to its dependencies."""
    index = current_index()
    if not any(b["name"] == name for b in index["broken"]):
        find(index, name)  # grants of a broken plugin may be revoked too
    if dependencies:
        if withdraw_dependencies(_config_file(), name):
            click.echo(f"Withdrew the consent to install the dependencies of '{name}'.")
        else:
            click.echo(f"Nothing to withdraw: '{name}' has no consent for its dependencies.")
        if not capabilities and not revoke_all:
            return
    if not capabilities and not revoke_all:
        raise UsageError(
            "name the capabilities to revoke, or use --all",
            hint=f"'conduit plugins permissions {name}' shows its grants",
        )
    texts = [str(c) for c in _parse_args(capabilities)]
    rec = index["plugins"].get(name)
    held = rec.get("withheld") if rec is not None else None
    current = list(held["grants"]) if held else [str(c) for c in granted(index, name)]
    unknown = [t for t in texts if t not in current]
    if unknown:
        raise UsageError(
            f"plugin '{name}' was not granted {', '.join(unknown)}",
            hint=f"its grants: {', '.join(current) or 'none'} (revoke them exactly as listed)",
        )
    removed = remove_grants(_config_file(), name, None if revoke_all else texts)
    if not removed:
        click.echo(f"Nothing to revoke: '{name}' has no grants.")
        return
    click.echo(f"Revoked from '{name}': {', '.join(removed)}.")
    if rec is not None and rec["capabilities"] and not held:
        still = [parse(t) for t in current if t not in removed]
        lacking = missing(requested(rec), still)
        if lacking:
            click.echo(
                f"note: '{name}' requests {', '.join(map(str, lacking))}; it will be asked "
                "for again (or refused without a terminal) when the plugin next runs",
                err=True,
            )
