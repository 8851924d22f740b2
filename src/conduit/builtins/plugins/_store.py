"""``conduit plugins install/uninstall/update/outdated/lock/sync/search``.

Thin Click commands over :class:`conduit.store.Store`; imported only when one of them
runs (see ``LAZY_COMMANDS``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
import msgspec

from conduit.builtins.plugins._progress import Console, plan_lines
from conduit.store import Result, Store
from conduit.text import inert

__all__ = [
    "install_cmd",
    "lock_cmd",
    "outdated_cmd",
    "search_cmd",
    "sync_cmd",
    "uninstall_cmd",
    "update_cmd",
]

F = TypeVar("F", bound=Callable[..., Any])


def _store_options(func: F) -> F:
    """Options shared by the commands that talk to an installer."""
    options = [
        click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
        click.option("--lock", "lock_path", metavar="PATH", help="The lock file to use."),
        click.option("--index-url", metavar="URL", help="Package index (PEP 503 simple API)."),
        click.option(
            "--find-links", metavar="DIR|URL", multiple=True, help="Extra place to find wheels."
        ),
        click.option(
            "--installer",
            type=click.Choice(["auto", "uv", "pip"]),
            help="Installer to use (default: [store] installer, else uv when found).",
        ),
        click.option("--verbose", "-v", is_flag=True, help="Show the installer's output."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _no_verify(func: F) -> F:
    return click.option(
        "--no-verify",
        is_flag=True,
        help="Do not boot new or changed plugins in their hosts before committing.",
    )(func)


def _console(opts: dict[str, Any]) -> Console:
    """The plan and the steps on a terminal (stderr); nothing but the result when piped
    or with --json; the installer's output only with --verbose."""
    return Console(
        live=sys.stderr.isatty() and not opts.get("as_json"), verbose=bool(opts.get("verbose"))
    )


def _verify(names: list[str]) -> list[tuple[str, str | None, str]]:
    from conduit.kernel.verify import verify

    return [(f.message, f.hint, f.trace) for f in verify(names)]


def _store(opts: dict[str, Any], console: Console | None = None) -> Store:
    tty = sys.stderr.isatty()
    verbose = bool(opts.get("verbose"))
    echo = (lambda text: click.echo(text, err=True)) if tty or verbose else None
    return Store(
        lock_path=opts.get("lock_path"),
        index_url=opts.get("index_url"),
        find_links=opts.get("find_links") or (),
        installer=opts.get("installer"),
        verbose=verbose,
        echo=echo,
        ask=not opts.get("as_json"),  # the grant prompt comes only on a terminal
        verify=None if opts.get("no_verify") else _verify,
        progress=console,
    )


def _report(result: Result, as_json: bool, done: str, console: Console | None = None) -> None:
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    # the plan, unless the terminal this goes to has shown it already
    if not (console is not None and console.shown_plan and sys.stdout.isatty()):
        for line in plan_lines(result.changes):
            click.echo(line)
    if not result.changes:
        click.echo("Nothing to change.")
    for note in result.notes:  # they quote installers and package metadata
        click.echo(inert(note))
    if result.lock:
        state = "updated" if result.lock_changed else "unchanged"
        click.echo(f"{done}; lock file {state}: {result.lock}")


@click.command("install")
@click.argument("specs", nargs=-1, required=True, metavar="SPEC...")
@_store_options
@_no_verify
def install_cmd(specs: tuple[str, ...], **opts: Any) -> None:
    """Install plugin distributions (names, ranges, paths, wheels, URLs)."""
    with _console(opts) as console:
        result = _store(opts, console).install(list(specs))
    _report(result, opts["as_json"], "Installed", console)


@click.command("uninstall")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@_store_options
def uninstall_cmd(names: tuple[str, ...], **opts: Any) -> None:
    """Uninstall plugin distributions and the dependencies only they needed."""
    with _console(opts) as console:
        result = _store(opts, console).uninstall(list(names))
    _report(result, opts["as_json"], "Uninstalled", console)


@click.command("update")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@_store_options
@_no_verify
def update_cmd(names: tuple[str, ...], dry_run: bool, **opts: Any) -> None:
    """Update plugins (all, or the named ones) to the newest compatible versions."""
    with _console(opts) as console:
        result = _store(opts, None if dry_run else console).update(list(names), dry_run=dry_run)
    if dry_run and not opts["as_json"]:
        for line in plan_lines(result.changes):
            click.echo(f"would {line}")
        for note in result.notes:
            click.echo(inert(note))
        if not result.changes:
            click.echo("Everything is up to date.")
        return
    _report(result, opts["as_json"], "Updated", console)


@click.command("outdated")
@_store_options
def outdated_cmd(**opts: Any) -> None:
    """List plugin distributions with a newer compatible version."""
    rows = _store(opts).outdated()
    if opts["as_json"]:
        click.echo(json.dumps(rows, indent=2))
        return
    failed = [r for r in rows if r.get("error")]
    for r in failed:
        click.echo(
            inert(f"warning: cannot check {r['name']} for a newer version: {r['error']}"),
            err=True,
        )
    if not rows:
        click.echo("All plugins are up to date.")
        return
    from conduit.builtins.plugins._common import table

    cells = [["DISTRIBUTION", "PLUGINS", "INSTALLED", "AVAILABLE"]]
    for r in rows:
        cells.append([r["name"], ",".join(r["plugins"]), r["installed"], r["available"] or "?"])
    click.echo(inert(table(cells), keep_newlines=True))


@click.command("lock")
@_store_options
def lock_cmd(**opts: Any) -> None:
    """Write pylock.conduit.toml for the plugins installed now."""
    result = _store(opts).lock()
    if opts["as_json"]:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    for note in result.notes:
        click.echo(inert(note))
    state = "written" if result.lock_changed else "unchanged"
    click.echo(f"Lock file {state}: {result.lock}")


@click.command("sync")
@click.option("--reinstall", is_flag=True, help="Download and hash-check every locked file.")
@_store_options
@_no_verify
def sync_cmd(reinstall: bool, **opts: Any) -> None:
    """Make the installed plugins match the lock file exactly (hashes checked)."""
    with _console(opts) as console:
        result = _store(opts, console).sync(reinstall=reinstall)
    _report(result, opts["as_json"], "In sync", console)


@click.command("search")
@click.argument("term", required=False, default="")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--refresh", is_flag=True, help="Fetch the catalog even if the cache is fresh.")
def search_cmd(term: str, as_json: bool, refresh: bool) -> None:
    """Search the plugin catalogs (every entry without TERM)."""
    from conduit.builtins.plugins._common import current_index, table
    from conduit.config import read_settings
    from conduit.paths import resolve
    from conduit.store import catalog

    paths = resolve()
    settings = read_settings(paths.config_file).store
    # The shipped catalog's names come first and win: another catalog cannot make a
    # first-party name stand for its own package.
    entries = catalog.default()
    sources = dict.fromkeys((e.name for e in entries), "conduit")
    if settings.catalog:
        for e in catalog.load(
            settings.catalog, paths.cache_dir, settings.catalog_max_age, refresh=refresh
        ):
            if e.name not in sources:
                entries.append(e)
                sources[e.name] = settings.catalog
    installed = set(current_index()["plugins"])
    hits = catalog.search(entries, term)
    if as_json:
        found = [
            {**msgspec.to_builtins(e), "installed": e.name in installed, "catalog": sources[e.name]}
            for e in hits
        ]
        click.echo(json.dumps(found, indent=2))
        return
    if not hits:
        click.echo(inert(f"No plugin in the catalog matches '{term}'."))
        return
    cells = [["NAME", "PACKAGE", "CAPABILITIES", "SUMMARY"]]
    for e in hits:
        name = f"{e.name} (installed)" if e.name in installed else e.name
        cells.append([name, e.package, ",".join(e.capabilities) or "-", e.summary])
    # another catalog's text is not Conduit's: escaped like a plugin's
    click.echo(inert(table(cells), keep_newlines=True))
