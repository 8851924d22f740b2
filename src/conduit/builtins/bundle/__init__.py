"""``conduit bundle``: write one file with Conduit, plugins and a frozen index, or list
what is in one (``--check``). The work is in conduit/bundle/build.py."""

from __future__ import annotations

import json
from typing import Any

import click

from conduit.sdk import Plugin, PluginContext

__all__ = ["BundlePlugin"]


def _show(manifest: dict[str, Any], bad: list[str]) -> None:
    from conduit.text import inert  # the manifest is the bundle's text: anyone's

    t = {k: inert(v) for k, v in manifest["target"].items()}
    sealed = ", sealed" if manifest["sealed"] else ""
    click.echo(
        f"bundle {inert(manifest['name'])} {inert(manifest['id'])} (Conduit "
        f"{inert(manifest['conduit'])}, for {t['tag']} on {t['platform']} {t['machine']}"
        f"{sealed})"
    )
    click.echo("plugins:")
    for p in manifest["plugins"]:
        grants = ", ".join(inert(c) for c in p["capabilities"]) or "none"
        origin = "built-in" if p["source"] == "builtin" else p["dist"] or p["source"]
        click.echo(
            f"  {inert(p['name'])} {inert(p['version'] or '')} ({inert(origin)}, "
            f"{inert(p['isolation'])}) grants requested: {grants}"
        )
    click.echo("distributions:")
    for d in manifest["distributions"]:
        compiled = ", compiled" if d["compiled"] else ""
        click.echo(
            f"  {inert(d['name'])} {inert(d['version'])} ({inert(d['role'])}{compiled}) "
            f"{inert(d['sha256'])}"
        )
    click.echo(
        "files: match the manifest's hashes"
        if not bad
        else f"files: DO NOT MATCH the manifest for {', '.join(inert(b) for b in bad)}"
    )


@click.command("bundle")
@click.option("-o", "--output", metavar="TOOL.pyz", help="The bundle to write.")
@click.option("--plugin", "plugins", multiple=True, metavar="NAME", help="Only this plugin.")
@click.option("--lock", metavar="FILE", help="Exactly the plugins of this lock file.")
@click.option("--sealed", is_flag=True, help="Ignore the user's config and plugin directory.")
@click.option("--platform", metavar="TAG", help="Allow compiled plugin dependencies for TAG.")
@click.option("--name", metavar="NAME", help="The bundle's name (default: the file's).")
@click.option("--check", metavar="TOOL.pyz", help="List what is in a bundle; runs no code.")
@click.option("--json", "as_json", is_flag=True, help="With --check: the manifest as JSON.")
def bundle(
    output: str | None,
    plugins: tuple[str, ...],
    lock: str | None,
    sealed: bool,
    platform: str | None,
    name: str | None,
    check: str | None,
    as_json: bool,
) -> None:
    """Write a bundle (python TOOL.pyz) of Conduit and plugins, or --check one."""
    from conduit.bundle import build as bundles
    from conduit.errors import ConduitError, UsageError

    if check is not None:
        manifest = bundles.read_manifest(check)
        bad = bundles.verify(check, manifest)
        if as_json:
            shown = {k: v for k, v in manifest.items() if k != "files"}
            click.echo(json.dumps({**shown, "mismatched": bad}, indent=2, sort_keys=True))
        else:
            _show(manifest, bad)
        if bad:
            from conduit.text import inert

            raise ConduitError(
                f"{check}: files of {', '.join(inert(b) for b in bad)} differ from the "
                "bundle's manifest",
                hint="the bundle was changed after it was built: build it again",
            )
        return
    if output is None:
        raise UsageError("bundle needs -o TOOL.pyz (or --check TOOL.pyz)", hint="-o tool.pyz")
    if plugins and lock:
        raise UsageError("--plugin and --lock choose the plugins two ways", hint="use one")
    result = bundles.build(
        output, plugins=list(plugins), lock=lock, sealed=sealed, platform=platform, name=name
    )
    names = [p["name"] for p in result.manifest["plugins"] if p["source"] != "builtin"]
    click.echo(
        f"wrote {result.path} ({result.manifest['id']}): Conduit "
        f"{result.manifest['conduit']} with {', '.join(names) or 'no plugins'}"
    )


class BundlePlugin(Plugin):
    """The built-in ``bundle`` command."""

    def boot(self, ctx: PluginContext) -> None:
        ctx.register_command(bundle)
