"""``conduit debug report``: one redacted text report to attach to a bug report.

A built-in plugin of its own rather than a ``plugins`` subcommand: the report is about
the whole installation (versions, platform, sandbox, config), not about managing
plugins, and as a built-in it stays available in safe mode (``--no-plugins``), when a
broken plugin is what is being reported. The work lives in ``_report``, imported only
when the command runs.
"""

from __future__ import annotations

import click

from conduit.sdk import Plugin, PluginContext

__all__ = ["DebugPlugin"]


@click.group("debug")
def debug_group() -> None:
    """Diagnose Conduit itself: a redacted report for a bug report."""


@debug_group.command("report")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    metavar="FILE",
    help="Write the report to FILE instead of standard output.",
)
@click.pass_obj
def report_cmd(ctx: PluginContext, output: str | None) -> None:
    """Write one redacted text report for a bug report: versions, sandbox, plugins, config."""
    from conduit.builtins.debug._report import build, write

    text = build(ctx.service("conduit.admin"))
    if output is None:
        click.echo(text, nl=False)
        return
    write(output, text)
    click.echo(
        f"Wrote the debug report to {output} ({text.count(chr(10))} lines): secrets are "
        "redacted, but read it before you share it.",
        err=True,
    )


class DebugPlugin(Plugin):
    """The built-in ``debug`` commands."""

    def boot(self, ctx: PluginContext) -> None:
        ctx.register_command(debug_group)
