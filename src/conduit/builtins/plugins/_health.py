"""``conduit plugins health``: ask plugins whether they can do their work.

Each plugin is activated in a fresh kernel, in its own host kind, and its optional
``health()`` (conduit.sdk, plugin API 1.5) is called there; see
:meth:`conduit.kernel.admin.Admin.health`. Exit status 1 when one is failing.
"""

from __future__ import annotations

import json

import click

from conduit.builtins.plugins._common import admin, find, table
from conduit.text import inert

__all__ = ["health_cmd"]


@click.command("health")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    metavar="SECONDS",
    default=10.0,
    show_default=True,
    help="Seconds each plugin's health() may take.",
)
def health_cmd(name: str | None, as_json: bool, timeout: float) -> None:
    """Ask plugins (all enabled ones, or NAME) whether they can do their work."""
    service = admin()
    index = service.index
    if name is not None:
        find(index, name)
        names = [name]
    else:
        names = [
            n
            for n, rec in index["plugins"].items()
            if rec["enabled"] and not rec["blocked"] and n not in service.disabled
        ]
    results = service.health(sorted(names), timeout)
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        rows = [["NAME", "HOST", "STATUS", "MESSAGE"]]
        rows += [[inert(r[k]) for k in ("name", "host", "status", "message")] for r in results]
        click.echo(table(rows))
        failing = sum(r["status"] == "failing" for r in results)
        warning = sum(r["status"] == "warning" for r in results)
        click.echo(f"{len(results)} checked: {failing} failing, {warning} warning.")
    if any(r["status"] == "failing" for r in results):
        raise click.exceptions.Exit(1)
