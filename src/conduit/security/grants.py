"""Grants: what the user allowed each plugin, and the check before activation.

The contract every host shares: the grants of plugin ``NAME`` are
``index["config"]["grants"].get(NAME, [])`` (the config's ``[grants]`` table, baked into
the index), parsed with :func:`conduit.security.capabilities.parse`; what it requests is
``rec["capabilities"]`` of its index record. A plugin is activated only when every
requested capability is covered by a grant (:func:`ensure_granted`, called by the kernel).

Built-in plugins are trusted: they declare no capabilities and are never checked.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from conduit.errors import NotGranted, grant_command
from conduit.security.capabilities import Capability, missing, parse

if TYPE_CHECKING:
    from conduit.indexer.records import Index, PluginRec

__all__ = [
    "Approver",
    "add_grants",
    "describe",
    "ensure_granted",
    "granted",
    "interactive",
    "missing_for",
    "offer",
    "remove_grants",
    "requested",
    "terminal_approver",
]

#: asked when a plugin lacks grants: ``(record, missing) -> True`` to grant them now
Approver = Callable[["PluginRec", list[Capability]], bool]

_MEANING = {
    "filesystem:read": ("read files under {}", "read ANY file"),
    "filesystem:write": ("create, change and delete files under {}", "write ANY file"),
    "network:http": ("connect to {}", "connect to ANY host"),
    "process:execute": ("run the program {}", "run ANY program"),
    "env:read": ("read the environment variable {}", "read ANY environment variable"),
}


def granted(index: Index, name: str) -> list[Capability]:
    """The capabilities the user granted plugin ``name`` (validated when the index was built)."""
    table = index["config"].get("grants") or {}
    assert isinstance(table, dict)
    return [parse(text) for text in table.get(name, [])]


def requested(rec: PluginRec) -> list[Capability]:
    """The capabilities plugin ``rec`` asks for in its manifest."""
    return [parse(text) for text in rec["capabilities"]]


def missing_for(index: Index, rec: PluginRec) -> list[Capability]:
    """What ``rec`` requests that no grant covers (empty for built-ins)."""
    if rec["source"] == "builtin" or not rec["capabilities"]:
        return []
    return missing(requested(rec), granted(index, rec["name"]))


def describe(cap: Capability) -> str:
    """One line saying what ``cap`` allows, with a warning when it is unscoped."""
    scoped, unscoped = _MEANING[cap.kind]
    if cap.scope is None:
        return f"{unscoped} (unscoped!)"
    return scoped.format(cap.scope)


def interactive() -> bool:
    """Whether a person can answer a prompt: stdin and stderr are terminals and ``CI``
    is not set."""
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        return False
    try:
        return bool(sys.stdin and sys.stdin.isatty() and sys.stderr.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def terminal_approver(config_file: str) -> Approver:
    """The default approver: a prompt on the terminal, or ``False`` when nobody can answer."""

    def approve(rec: PluginRec, caps: list[Capability]) -> bool:
        if not interactive():
            return False
        return _prompt(rec, caps, config_file)

    return approve


def _prompt(rec: PluginRec, caps: list[Capability], config_file: str) -> bool:
    # Everything from the plugin is escaped (conduit.text.inert): validation refuses
    # control characters in names, versions and capabilities, and this is the second
    # line of defence of what the user consents to (an index written before that check).
    from conduit.text import inert

    name = inert(rec["name"])
    version = f" {inert(rec['version'])}" if rec["version"] else ""
    shown = [(inert(str(c)), inert(describe(c))) for c in caps]
    width = max(len(text) for text, _ in shown)
    lines = [f"┌ conduit: plugin '{name}'{version} requests:"]
    lines += [f"├   {text:<{width}}  {meaning}" for text, meaning in shown]
    lines.append(
        f"├ Granting saves this in {inert(config_file)}; "
        f"'conduit plugins revoke {name} CAPABILITY...' takes it back."
    )
    lines.append("└ Grant? [y/N] ")
    sys.stderr.write("\n".join(lines))
    sys.stderr.flush()
    answer = sys.stdin.readline()
    if not answer.endswith("\n"):  # end of input: nobody answered
        sys.stderr.write("\n")
    return answer.strip().lower() in ("y", "yes")


def ensure_granted(
    index: Index, rec: PluginRec, config_file: str, approve: Approver | None = None
) -> None:
    """Raise :class:`~conduit.errors.NotGranted` unless every capability ``rec`` requests
    is granted. Missing ones are offered to ``approve`` (default: the terminal prompt); an
    approval is written to the config and to the in-memory index."""
    lacking = missing_for(index, rec)
    if not lacking:
        return
    ask = approve if approve is not None else terminal_approver(config_file)
    if not ask(rec, lacking):
        declined = approve is None and interactive()  # somebody saw the prompt and said no
        raise NotGranted(rec["name"], [str(c) for c in lacking], declined=declined)
    texts = [str(c) for c in lacking]
    add_grants(config_file, rec["name"], texts)
    # This run goes on with the new grants; the next run reads them from the config.
    config: dict[str, Any] = index["config"]
    table = config.setdefault("grants", {})
    table[rec["name"]] = [*table.get(rec["name"], []), *texts]


def _never(_rec: PluginRec, _caps: list[Capability]) -> bool:
    return False


def offer(index: Index, names: list[str], config_file: str, *, ask: bool) -> list[str]:
    """After installing plugins ``names``: the capabilities they lack are offered at the
    prompt of :func:`ensure_granted` when ``ask`` is set and a person can answer (written
    to the config on yes), else listed with the command that grants them. Returns the
    lines to print; nothing for plugins whose requests are granted already."""
    notes: list[str] = []
    for name in names:
        rec = index["plugins"].get(name)
        if rec is None:
            continue
        lacking = [str(c) for c in missing_for(index, rec)]
        if not lacking:
            continue
        try:
            ensure_granted(index, rec, config_file, None if ask else _never)
        except NotGranted:
            notes.append(f"plugin '{name}' asks for: {', '.join(lacking)}")
            notes.append(f"  grant with: {grant_command(name, lacking)}")
            continue
        notes.append(f"plugin '{name}': granted {', '.join(lacking)} (saved in {config_file})")
    return notes


def add_grants(config_file: str, name: str, caps: list[str]) -> list[str]:
    """Append ``caps`` to ``[grants] NAME`` (atomically, under the config's lock).

    Returns the ones that were added (those already listed verbatim are skipped).
    """
    from conduit.config import update_config

    added: list[str] = []

    def change(doc: Any) -> None:
        import tomlkit

        if "grants" not in doc:
            doc["grants"] = tomlkit.table()
        current = [str(x) for x in doc["grants"].get(name, [])]
        for cap in caps:
            if cap not in current:
                current.append(cap)
                added.append(cap)
        array = tomlkit.array()
        array.extend(current)
        doc["grants"][name] = array

    update_config(config_file, change)
    return added


def remove_grants(config_file: str, name: str, caps: list[str] | None) -> list[str]:
    """Remove ``caps`` (all of them when ``None``) from ``[grants] NAME``; returns the ones
    removed. An empty list of grants removes the plugin's key."""
    from conduit.config import update_config

    removed: list[str] = []

    def change(doc: Any) -> None:
        import tomlkit

        table = doc.get("grants")
        if table is None or name not in table:
            return
        current = [str(x) for x in table[name]]
        keep = [] if caps is None else [c for c in current if c not in caps]
        removed.extend(c for c in current if c not in keep)
        if keep:
            array = tomlkit.array()
            array.extend(keep)
            table[name] = array
        else:
            del table[name]

    update_config(config_file, change)
    return removed
