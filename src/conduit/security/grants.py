"""Grants: what the user allowed each plugin, and the check before activation.

The contract every host shares: the grants of plugin ``NAME`` are
``index["config"]["grants"].get(NAME, [])`` (the config's ``[grants]`` table, baked into
the index), parsed with :func:`conduit.security.capabilities.parse`; what it requests is
``rec["capabilities"]`` of its index record. A plugin is activated only when every
requested capability is covered by a grant (:func:`ensure_granted`, called by the kernel).

Grants are bound to a plugin's identity, not to its bare name (docs/permissions.md#identity):
the index builder gives each record an ``identity`` (``entry-point:DIST``, ``file:PATH``,
``wasm:sha256:HEX``, ``executable:PATH``), the config's ``[granted-to]`` table records
the identity each plugin's grants were given to (written with them: at the prompt, by
``plugins grant``, after ``plugins install``), and the builder leaves out of
``index["config"]["grants"]`` the grants given to another identity (the record's
``withheld``), so that no host applies them to a newcomer claiming the name. Unbound
grants (an older config, a hand-written entry) apply while a single plugin claims the
name and are bound to it on first use (:func:`ensure_granted`).

Built-in plugins are trusted: they declare no capabilities and are never checked.

A plugin's inline ``dependencies`` are asked for the same way: installing them runs an
installer outside any sandbox, so it needs the user's consent to that very list, kept in
the config's ``[dependencies.consented]`` table and asked again when the list changes;
URL and path requirements are refused unless ``[dependencies] allow-build`` names the
plugin (docs/permissions.md#dependencies).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from conduit.errors import NotConsented, NotGranted, PluginLoadError, grant_command
from conduit.security.capabilities import Capability, missing, parse
from conduit.text import inert

if TYPE_CHECKING:
    from conduit.indexer.records import Index, PluginRec

__all__ = [
    "SANDBOX_PLATFORM",
    "Approver",
    "add_grants",
    "advisory",
    "builds_allowed",
    "consent_dependencies",
    "dependencies_to_consent",
    "dependency_list",
    "describe",
    "describe_identity",
    "ensure_granted",
    "first_party",
    "granted",
    "has_consent",
    "inert",
    "interactive",
    "isolate",
    "missing_for",
    "offer",
    "refuse_direct_references",
    "remove_grants",
    "requested",
    "terminal_approver",
    "withdraw_dependencies",
    "withheld_note",
]

#: where the process host has an operating-system sandbox (docs/permissions-process.md)
SANDBOX_PLATFORM = sys.platform == "linux"

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
    """The capabilities plugin ``name`` holds: what the user granted it (validated when the
    index was built) and, for a first-party plugin, what it declares (granted by default,
    as for built-ins, and enforced by its host like any grant)."""
    table = index["config"].get("grants") or {}
    assert isinstance(table, dict)
    caps = [parse(text) for text in table.get(name, [])]
    rec = index["plugins"].get(name)
    if rec is not None and first_party(rec):
        caps += [c for c in requested(rec) if c not in caps]
    return caps


def first_party(rec: PluginRec) -> bool:
    """Whether ``rec`` is one of Conduit's first-party plugins (``conduit_plugins``,
    shipped in Conduit's own distribution): discovered like a third-party entry point,
    but its declared capabilities are granted by default."""
    return bool(rec.get("first_party"))


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


_IDENTITY_WORDS = {
    "entry-point": "distribution",
    "file": "file",
    "wasm": "WebAssembly module",
    "executable": "executable",
}


def describe_identity(identity: str | None) -> str:
    """A plugin identity in words: ``file /path/x.py``, ``distribution git-tools``..."""
    if identity is None:
        return "no plugin in particular (never bound)"
    kind, _, origin = identity.partition(":")
    if kind == "builtin":
        return "built-in"
    if kind == "wasm":  # sha256:HEX: the start is enough to tell two modules apart
        origin = origin[: len("sha256:") + 16] + "..."
    return f"{_IDENTITY_WORDS.get(kind, kind)} {origin}"


def withheld_note(rec: PluginRec) -> str | None:
    """Why grants under ``rec``'s name do not apply to it, or None when they do."""
    held = rec.get("withheld")
    if not held:
        return None
    name, this = rec["name"], describe_identity(rec["identity"])
    if held["granted_to"] is None:
        return (
            f"several plugins claim the name '{name}' and its grants were never bound to one "
            f"of them: they apply to none until you grant them to this one ({this})"
        )
    return (
        f"the grants of '{name}' were given to another plugin, "
        f"{describe_identity(held['granted_to'])}; this one is {this}, and granting gives "
        "them to it instead"
    )


def advisory(rec: PluginRec) -> bool:
    """Whether ``rec``'s limits are advisory: a third-party plugin in Conduit's own
    process, where only the in-process guard watches it."""
    return rec["isolation"] == "in-process" and rec["source"] in ("entry-point", "file")


def isolate(config_file: str, rec: PluginRec) -> None:
    """Run ``rec`` in the process sandbox from now on: ``[isolation] NAME = "process"``
    in the config, and in its record for this run."""
    from conduit.config import update_config

    name = rec["name"]

    def change(doc: Any) -> None:
        import tomlkit

        if "isolation" not in doc:
            doc["isolation"] = tomlkit.table()
        doc["isolation"][name] = "process"

    update_config(config_file, change)
    rec["isolation"] = "process"


def interactive() -> bool:
    """Whether a person can answer a prompt: stdin and stderr are terminals and ``CI``
    is not set."""
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        return False
    try:
        return bool(sys.stdin and sys.stdin.isatty() and sys.stderr.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def terminal_approver(config_file: str, *, notes: list[str] | None = None) -> Approver:
    """The default approver: a prompt on the terminal, or ``False`` when nobody can answer.
    ``notes`` are more lines of the prompt, under the capabilities (the dependencies)."""

    def approve(rec: PluginRec, caps: list[Capability]) -> bool:
        if not interactive():
            return False
        return _prompt(rec, caps, config_file, notes or [])

    return approve


def _prompt(rec: PluginRec, caps: list[Capability], config_file: str, notes: list[str]) -> bool:
    # Everything from the plugin is escaped (conduit.text.inert): validation refuses
    # control characters in names, versions and capabilities, and this is the second
    # line of defence of what the user consents to (an index written before that check).
    name = inert(rec["name"])
    version = f" {inert(rec['version'])}" if rec["version"] else ""
    shown = [(inert(str(c)), inert(describe(c))) for c in caps]
    width = max((len(text) for text, _ in shown), default=0)
    lines = [f"┌ conduit: plugin '{name}'{version} requests:"]
    lines += [f"├   {text:<{width}}  {meaning}" for text, meaning in shown]
    lines += [inert(line) for line in _trust_lines(rec)]
    lines += notes
    lines.append(
        f"├ Granting saves this in {inert(config_file)}; "
        f"'conduit plugins revoke {name} CAPABILITY...' takes it back."
    )
    # Right above the question, where no list however long scrolls it out of sight.
    unscoped = [inert(str(c)) for c in caps if c.scope is None]
    if unscoped or len(caps) > 8:
        count = f"{len(caps)} capabilities" if len(caps) != 1 else "1 capability"
        wide = f"; unscoped (all of that kind): {', '.join(unscoped)}" if unscoped else ""
        lines.append(f"├ ! In all {count}{wide}.")
    lines.append("└ Grant? [y/N] ")
    sys.stderr.write("\n".join(lines))
    sys.stderr.flush()
    answer = sys.stdin.readline()
    if not answer.endswith("\n"):  # end of input: nobody answered
        sys.stderr.write("\n")
    return _accept(answer, rec, config_file)


def _trust_lines(rec: PluginRec) -> list[str]:
    """The prompt's lines on whom the grants go to and how far they are enforced."""
    lines = []
    note = withheld_note(rec)
    if note is not None:
        lines.append(f"├ ! Not the plugin you granted before: {note}.")
    if advisory(rec):
        lines.append(
            "├ It runs inside Conduit's own process, where these limits are advisory: code "
            "that means to can get around them (ctypes, _posixsubprocess)."
        )
        if SANDBOX_PLATFORM:
            lines.append(
                f"├ Answer p to grant and run it in the process sandbox instead, where the "
                f'operating system enforces them ([isolation] {rec["name"]} = "process").'
            )
    return lines


def _accept(answer: str, rec: PluginRec, config_file: str) -> bool:
    """Whether ``answer`` grants; ``p`` also moves the plugin into the process sandbox."""
    word = answer.strip().lower()
    if word == "p" and SANDBOX_PLATFORM and advisory(rec):
        isolate(config_file, rec)
        return True
    return word in ("y", "yes")


def ensure_granted(
    index: Index, rec: PluginRec, config_file: str, approve: Approver | None = None
) -> None:
    """Raise :class:`~conduit.errors.NotGranted` unless every capability ``rec`` requests
    is granted. Missing ones are offered to ``approve`` (default: the terminal prompt); an
    approval is written to the config and to the in-memory index."""
    lacking = missing_for(index, rec)
    deps = dependencies_to_consent(index, rec)
    if not lacking:
        _bind_on_first_use(index, rec, config_file)
        if not deps:
            return
    if deps:  # a URL or a path would be refused after a "yes": refuse it before asking
        refuse_direct_references(rec["name"], deps, builds_allowed(index["config"], rec["name"]))
    notes = _dependency_notes(index, rec, deps) if deps else None
    ask = approve if approve is not None else terminal_approver(config_file, notes=notes)
    if not ask(rec, lacking):
        declined = approve is None and interactive()  # somebody saw the prompt and said no
        if deps:
            missed = [str(c) for c in lacking]
            raise NotConsented(rec["name"], missed, [inert(d) for d in deps], declined=declined)
        refusal = NotGranted(rec["name"], [str(c) for c in lacking], declined=declined)
        refusal.hint = withheld_note(rec)
        raise refusal
    texts = [str(c) for c in lacking]
    config: dict[str, Any] = index["config"]
    if texts:
        # Grants given to another plugin of this name are replaced, never inherited.
        replace = bool(rec.get("withheld"))
        add_grants(config_file, rec["name"], texts, identity=rec["identity"], replace=replace)
        # This run goes on with the new grants; the next run reads them from the config.
        table = config.setdefault("grants", {})
        table[rec["name"]] = texts if replace else [*table.get(rec["name"], []), *texts]
        config.setdefault("granted-to", {})[rec["name"]] = rec["identity"]
        rec["withheld"] = None
    if deps:
        _record_consent(config, config_file, rec["name"], deps)


def _bind_on_first_use(index: Index, rec: PluginRec, config_file: str) -> None:
    """Bind unbound grants (an older config, a hand-written entry) to ``rec``, the one
    plugin that claims the name (the index builder withholds them when several do)."""
    from conduit.errors import ConfigError

    name = rec["name"]
    config: dict[str, Any] = index["config"]
    bound = config.setdefault("granted-to", {})
    if rec["source"] == "builtin" or name in bound or name not in config.get("grants", {}):
        return
    from conduit.config import update_config

    def change(doc: Any) -> None:
        import tomlkit

        if name not in doc.get("grants", {}) or name in doc.get("granted-to", {}):
            return  # changed on disk since this index was built: leave it to the next run
        if "granted-to" not in doc:
            doc["granted-to"] = tomlkit.table()
        doc["granted-to"][name] = rec["identity"]

    try:
        update_config(config_file, change)
    except (OSError, ConfigError):  # a read-only config: they stay unbound for now
        return
    bound[name] = rec["identity"]


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
        except NotGranted as exc:
            notes.append(f"plugin '{name}' asks for: {', '.join(lacking)}")
            if exc.hint:
                notes.append(f"  note: {exc.hint}")
            also = ["--dependencies"] if isinstance(exc, NotConsented) else []
            notes.append(f"  grant with: {grant_command(name, [*also, *lacking])}")
            continue
        except PluginLoadError as exc:  # a dependency that is refused in any case
            notes.append(f"warning: {exc.message}")
            continue
        notes.append(f"plugin '{name}': granted {', '.join(lacking)} (saved in {config_file})")
    return notes


def add_grants(
    config_file: str,
    name: str,
    caps: list[str],
    *,
    identity: str | None = None,
    replace: bool = False,
) -> list[str]:
    """Append ``caps`` to ``[grants] NAME`` (atomically, under the config's lock); with
    ``identity``, record in ``[granted-to] NAME`` whom they are given to, and with
    ``replace``, drop the grants listed before (given to another plugin of that name).

    Returns the ones that were added (those already listed verbatim are skipped).
    """
    from conduit.config import update_config

    added: list[str] = []

    def change(doc: Any) -> None:
        import tomlkit

        if "grants" not in doc:
            doc["grants"] = tomlkit.table()
        before = doc["grants"].get(name)
        current = [] if replace or before is None else [str(x) for x in before]
        for cap in caps:
            if cap not in current:
                current.append(cap)
                added.append(cap)
        if current or before is not None:
            array = tomlkit.array()
            array.extend(current)
            doc["grants"][name] = array
        if identity is not None:
            if "granted-to" not in doc:
                doc["granted-to"] = tomlkit.table()
            doc["granted-to"][name] = identity

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
            bound = doc.get("granted-to")
            if bound is not None and name in bound:
                del bound[name]

    update_config(config_file, change)
    return removed


# -- inline dependencies (docs/permissions.md#dependencies) -------------------------------


def dependency_list(rec: PluginRec) -> list[str]:
    """``rec``'s inline dependencies as consent records them: stripped, unique, sorted."""
    return sorted({d.strip() for d in rec.get("dependencies") or [] if d.strip()})


def has_consent(consented: dict[str, Any], rec: PluginRec) -> bool:
    """Whether ``consented`` (``[dependencies.consented]``) holds ``rec``'s very list."""
    return [str(d) for d in consented.get(rec["name"]) or []] == dependency_list(rec)


def _table(config: dict[str, Any]) -> dict[str, Any]:
    table = config.get("dependencies") or {}
    assert isinstance(table, dict)
    return table


def builds_allowed(config: dict[str, Any], name: str) -> bool:
    """Whether the user lets plugin ``name``'s dependencies run build code (sdists, URL
    and path requirements): ``[dependencies] allow-build`` of the index's config."""
    return name in (_table(config).get("allow-build") or [])


def dependencies_to_consent(index: Index, rec: PluginRec) -> list[str]:
    """The dependency list that ``rec`` needs the user's consent for before it is
    installed: empty when it has none, is built in, or the user agreed to this list."""
    deps = dependency_list(rec)
    if not deps or rec["source"] == "builtin":
        return []
    if has_consent(_table(index["config"]).get("consented") or {}, rec):
        return []
    return deps


def refuse_direct_references(name: str, deps: list[str], allowed: bool) -> None:
    """Refuse a URL or path requirement (``pkg @ file:///...``, ``pkg @ https://...``),
    or anything that is not a requirement, among plugin ``name``'s dependencies unless
    ``allowed``: the installer builds what it fetches that way."""
    from packaging.requirements import InvalidRequirement, Requirement

    for dep in deps:
        try:
            direct = Requirement(dep).url is not None
        except InvalidRequirement:  # the manifest's validation stops these first
            raise PluginLoadError(
                name,
                f"its dependency '{inert(dep)}' is not a requirement",
                hint="fix 'dependencies' in the plugin's manifest",
            ) from None
        if direct and not allowed:
            command = f"conduit plugins grant {name} --dependencies --allow-build"
            raise PluginLoadError(
                name,
                f"its dependency '{inert(dep)}' is a URL or path requirement, which Conduit "
                f"refuses: it could run build code on your machine (run '{command}' to "
                "allow it, if you trust it)",
                hint="a plugin's dependencies come from the package index, as wheels",
            )


def _dependency_notes(index: Index, rec: PluginRec, deps: list[str]) -> list[str]:
    if builds_allowed(index["config"], rec["name"]):
        how = "may be built from source: build code runs with your rights, outside any sandbox"
    else:
        # pip honours --only-binary for index and find-links files only: it still builds
        # a direct URL that a dependency's own metadata names (uv refuses one); say so.
        how = (
            "wheels only, into a private directory; with pip, not uv, a URL requirement "
            "that a dependency itself declares can still run build code"
        )
    return [
        f"├   dependencies: installs these Python packages ({how}):",
        *(f"├     {inert(d)}" for d in deps),
        f"├   ('conduit plugins revoke {rec['name']} --dependencies' withdraws this consent)",
    ]


def _record_consent(config: dict[str, Any], config_file: str, name: str, deps: list[str]) -> None:
    consent_dependencies(config_file, name, deps)
    table = config.setdefault("dependencies", {})
    table.setdefault("consented", {})[name] = list(deps)  # this run goes on with it


def consent_dependencies(
    config_file: str, name: str, deps: list[str], *, allow_build: bool = False
) -> None:
    """Record the user's consent to install ``deps`` for plugin ``name`` (atomically,
    under the config's lock); ``allow_build`` adds it to ``[dependencies] allow-build``."""
    from conduit.config import update_config

    def change(doc: Any) -> None:
        import tomlkit

        if "dependencies" not in doc:
            doc["dependencies"] = tomlkit.table()
        table = doc["dependencies"]
        if allow_build:
            current = [str(x) for x in table.get("allow-build", [])]
            if name not in current:
                array = tomlkit.array()
                array.extend([*current, name])
                table["allow-build"] = array
        if "consented" not in table:
            table["consented"] = tomlkit.table()
        array = tomlkit.array()
        array.extend(sorted(set(deps)))
        table["consented"][name] = array

    update_config(config_file, change)


def withdraw_dependencies(config_file: str, name: str) -> bool:
    """Remove plugin ``name`` from ``[dependencies.consented]`` and ``allow-build``;
    whether there was anything to remove."""
    from conduit.config import update_config

    removed = False

    def change(doc: Any) -> None:
        nonlocal removed
        table = doc.get("dependencies")
        if table is None:
            return
        consented = table.get("consented")
        if consented is not None and name in consented:
            del consented[name]
            removed = True
        builds = [str(x) for x in table.get("allow-build", [])]
        if name in builds:
            import tomlkit

            array = tomlkit.array()
            array.extend([b for b in builds if b != name])
            table["allow-build"] = array
            removed = True

    update_config(config_file, change)
    return removed
