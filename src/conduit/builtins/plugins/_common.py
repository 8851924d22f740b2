"""What the ``conduit plugins ...`` commands share: the kernel's admin service, the
index, looking a plugin up, its state, and plain-text tables.

The subcommand modules (``_inspect``, ``_permissions``, ``_store``, ...) import these
from here, not from the package face.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import click

from conduit.errors import ConduitError, UsageError, did_you_mean

if TYPE_CHECKING:
    from conduit.indexer.records import Index, PluginRec
    from conduit.kernel.admin import Admin

__all__ = ["admin", "current_index", "failures", "find", "journal", "state", "table"]


def admin() -> Admin:
    """The kernel's ``conduit.admin`` service (:mod:`conduit.kernel.admin`).

    Asked for through this plugin's context, which the in-process host passes to Click
    as the root context's ``obj``; kept in the root context's ``meta`` for the rest of
    the command.
    """
    from conduit.kernel.admin import Admin
    from conduit.kernel.core import ADMIN_SERVICE

    root = click.get_current_context().find_root()
    found = root.meta.get(ADMIN_SERVICE)
    if found is None:
        ctx = root.obj
        found = ctx.service(ADMIN_SERVICE) if ctx is not None else None
        if not isinstance(found, Admin):
            found = _detached_admin()
        root.meta[ADMIN_SERVICE] = found
    assert isinstance(found, Admin)
    return found


def _detached_admin() -> Admin:
    """The admin of a kernel of this command's own, for a command that no kernel runs in
    this process: in the process host's child (the config's ``[isolation]`` table may
    force a built-in there), a remote proxy stands for the service instead."""
    from conduit.indexer.build import load
    from conduit.kernel.core import ADMIN_SERVICE, Kernel
    from conduit.paths import resolve
    from conduit.timing import Profile

    paths = resolve()
    names = os.environ.get("CONDUIT_DISABLE_PLUGINS", "").split(",")
    disabled = {n.strip() for n in names} - {""}
    kernel = Kernel(load(paths, Profile(False)), paths, disabled=disabled)
    found: Admin = kernel.service(ADMIN_SERVICE)
    return found


def current_index() -> Index:
    """The index the kernel running this command runs from."""
    return admin().index


def journal() -> list[dict[str, Any]]:
    """The run journal's records (:mod:`conduit.runlog`), read once per command."""
    root = click.get_current_context().find_root()
    records = root.meta.get("conduit.runlog")
    if records is None:
        from conduit.paths import resolve
        from conduit.runlog import read

        records = root.meta["conduit.runlog"] = read(resolve())
    assert isinstance(records, list)
    return records


def failures() -> dict[str, list[tuple[float, str]]]:
    """Plugins whose last activation failed, with their failures since the last success
    (``(time, error)``, oldest first), from the run journal."""
    from conduit.runlog import failing

    return failing(journal())


def state(rec: PluginRec) -> str:
    """``enabled``, ``disabled``, ``disabled (env)`` (for this run only), ``blocked``, or
    ``failing`` (its last activation failed, says the run journal)."""
    if not rec["enabled"]:
        return "disabled"
    if rec["name"] in admin().disabled:
        return "disabled (env)"
    if rec["blocked"]:
        return "blocked"
    if rec["name"] in failures():
        return "failing"
    return "enabled"


def find(index: Index, name: str) -> PluginRec:
    """The record of plugin ``name``, or an error saying it is broken or unknown."""
    if name in index["plugins"]:
        return index["plugins"][name]
    for b in index["broken"]:
        if b["name"] == name:
            raise ConduitError(f"plugin '{name}' is broken: {b['error']}", hint=b["hint"])
    close = did_you_mean(name, index["plugins"])
    raise UsageError(
        f"no plugin named '{name}'",
        hint=f"did you mean '{close}'?" if close else "see 'conduit plugins list'",
    )


def table(rows: list[list[str]], *, states: int | None = None) -> str:
    """``rows`` (the first one the header) as left-aligned columns two spaces apart; on a
    terminal (conduit.style) the header in bold and column ``states`` (plugin states) in
    their colours."""
    from conduit.style import enabled, paint

    on = enabled(sys.stdout)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = []
        for i, (cell, w) in enumerate(zip(row, widths, strict=True)):
            role = "header" if n == 0 else (cell.split(" ")[0] if i == states else "")
            pad = " " * (w - len(cell)) if i < len(row) - 1 else ""
            cells.append(paint(cell, role, on) + pad)
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
