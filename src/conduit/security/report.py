"""What each host enforces of a plugin's grants on this machine, in words.

For ``conduit plugins permissions`` (:func:`enforcement`) and ``conduit plugins doctor``
(:func:`sandbox_report`). Every line claims only a protection that is applied here: the
process host's sandbox mechanisms are probed (:func:`mechanisms`), and one that is
missing is named with what it leaves open (docs/permissions.md,
docs/permissions-process.md, docs/wasm.md).

Only the reporting lives here; the engines that enforce grants are
:mod:`conduit.security.guard` (in-process), :mod:`conduit.security.sandbox` (process)
and the WebAssembly host.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from conduit.security.capabilities import Capability, parse
from conduit.security.sandbox import ALWAYS_PASSED, can_unshare

if TYPE_CHECKING:
    from conduit.indexer.records import PluginRec

__all__ = [
    "GUARD_ENFORCES",
    "GUARD_GAPS",
    "WASM_ENFORCES",
    "describe_sandbox",
    "enforcement",
    "mechanisms",
    "sandbox_report",
]

#: what the in-process guard checks, and what it does not (docs/permissions.md)
GUARD_ENFORCES = [
    "filesystem: open(), os.open(), directory listings, mkdir/remove/rename/chmod/utime...",
    "network: host name lookups, connect() and sendto() of inet and unix sockets",
    "process: subprocess, os.exec*, os.posix_spawn*, os.spawn*, os.system",
    "env: os.environ and os.getenv() show only the granted variables",
]
GUARD_GAPS = [
    "it is a guard against mistakes, not a security boundary: ctypes, native extensions,",
    "threads that outlive a call and saved references to the real environment get around it",
]
#: what the WebAssembly host applies (docs/wasm.md, "grants")
WASM_ENFORCES = [
    "filesystem: only the granted directories are preopened (read-only for a read grant)",
    "network: no sockets; HTTP only through Conduit's http function, to granted hosts",
    "process: only granted programs, through Conduit's exec function",
    "env: only the granted variables are in the module's environment",
]


def enforcement(
    rec: PluginRec, grants: list[Capability] | None = None
) -> tuple[str, list[str], list[str]]:
    """Which host runs ``rec``, what that host enforces of ``grants``, and what it does not.

    Never claims a protection that is not applied. For the process host,
    :func:`describe_sandbox` (one line per area, "NOT restricted" where this machine
    lacks the mechanism) is split in two.
    """
    if rec["source"] == "builtin":
        return "in-process (built-in)", [], ["built-in plugins are trusted and not checked"]
    if rec["source"] == "executable":
        # The process host's sandbox restricts Conduit's own Python host child; an
        # executable (pass-through or JSON-RPC) is started as it is.
        how = "JSON-RPC" if rec["protocol"] == "jsonrpc" else "pass-through"
        return (
            f"executable ({how})",
            [],
            ["nothing: the program runs with your privileges; grants are only consent"],
        )
    if rec["isolation"] == "process":
        lines = describe_sandbox(list(grants or []))
        return (
            "process (sandboxed)",
            [line for line in lines if "NOT restricted" not in line],
            [line for line in lines if "NOT restricted" in line],
        )
    if rec["isolation"] == "in-process":
        return "in-process (guarded)", list(GUARD_ENFORCES), list(GUARD_GAPS)
    if rec["isolation"] == "wasm":
        return "wasm", list(WASM_ENFORCES), []
    return rec["isolation"], [], [f"the {rec['isolation']} host is not available in this release"]


_probed: dict[str, Any] = {}


def mechanisms() -> dict[str, Any]:
    """What this machine offers the process host's sandbox (probed once per process):
    ``landlock`` (the ABI version, 0 without), ``seccomp`` and ``netns`` (booleans)."""
    if _probed:
        return _probed
    from conduit.security import landlock, seccomp

    _probed["landlock"] = landlock.abi() if sys.platform == "linux" else 0
    _probed["seccomp"] = sys.platform == "linux" and seccomp.available()
    _probed["netns"] = sys.platform == "linux" and can_unshare()
    return _probed


def describe_sandbox(grants: list[str] | list[Capability]) -> list[str]:
    """What the process host enforces for ``grants`` on this machine, one line per area.

    Only what is actually applied is claimed; a mechanism the machine lacks is named as
    missing, with what that leaves open.
    """
    caps = [parse(g) if isinstance(g, str) else g for g in grants]
    have = mechanisms()
    lines = []
    env = sorted(str(g.scope) for g in caps if g.kind == "env:read" and g.scope)
    if any(g.kind == "env:read" and g.scope is None for g in caps):
        lines.append("environment: every variable is passed (env:read granted unscoped)")
    else:
        extra = " and PATH" if any(g.kind == "process:execute" for g in caps) else ""
        lines.append(
            "environment: only "
            + (", ".join(env) + " (granted), " if env else "")
            + ", ".join(ALWAYS_PASSED)
            + extra
            + " are passed"
        )
    version = have["landlock"]
    if version:
        reads = [g.scope or "/" for g in caps if g.kind == "filesystem:read"]
        writes = [g.scope or "/" for g in caps if g.kind == "filesystem:write"]
        lines.append(
            f"filesystem (Landlock ABI {version}): reads only under "
            + (", ".join(reads) + ", " if reads else "")
            + "the plugin's files, its data directory, Python and system libraries; writes "
            "only under " + (", ".join(writes) + " and " if writes else "") + "its data directory"
        )
    else:
        lines.append("filesystem: NOT restricted (Landlock is not available on this kernel)")
    programs = [g for g in caps if g.kind == "process:execute"]
    blockers = [n for n, ok in (("Landlock", version), ("seccomp", have["seccomp"])) if ok]
    if any(g.scope is None for g in programs):
        lines.append("programs: any program may run (process:execute granted unscoped)")
    elif programs:
        names = ", ".join(str(g.scope) for g in programs)
        lines.append(
            f"programs: only {names} may run (Landlock)"
            if version
            else f"programs: any program may run, not only {names} (Landlock is not available)"
        )
    elif blockers:
        lines.append(f"programs: none may run ({' and '.join(blockers)})")
    else:
        lines.append("programs: NOT restricted (neither Landlock nor seccomp is available)")
    hosts = [g for g in caps if g.kind == "network:http"]
    if any(g.scope is None for g in hosts):
        lines.append("network: direct and unrestricted (network:http granted unscoped)")
    elif hosts and have["netns"]:
        names = ", ".join(str(g.scope) for g in hosts)
        lines.append(
            f"network: HTTP(S) to {names} only, through Conduit's proxy; no direct network "
            "(network namespace)"
        )
    elif have["netns"] or have["seccomp"]:
        how = " and ".join(
            n
            for n, ok in (("network namespace", have["netns"]), ("seccomp", have["seccomp"]))
            if ok
        )
        lines.append(
            f"network: none ({how})"
            + (
                "; host filtering needs network namespaces, which are not available"
                if hosts
                else ""
            )
        )
    else:
        lines.append("network: NOT restricted (no network namespaces and no seccomp here)")
    lines.append("limits: no core dumps; no_new_privs (set-user-ID bits are ignored)")
    return lines


def sandbox_report() -> list[tuple[bool, str]]:
    """For ``conduit plugins doctor``: each sandbox mechanism and whether it is here."""
    have = mechanisms()
    version = have["landlock"]
    areas = "filesystem" + (", TCP ports" if version >= 4 else "")
    areas += ", scopes" if version >= 6 else ""
    return [
        (
            bool(version),
            f"Landlock ABI {version} ({areas})"
            if version
            else "Landlock is not available: process plugins can read and write any file "
            "the user can, and run any program if seccomp is missing too",
        ),
        (
            bool(have["seccomp"]),
            "seccomp filter (exec, inet and Unix sockets)"
            if have["seccomp"]
            else "seccomp is not available (only on x86_64 Linux): process plugins can "
            "connect to Unix sockets (Docker's, ssh-agent's), and without a network "
            "namespace they keep direct network access",
        ),
        (
            bool(have["netns"]),
            "network namespaces (network:http enforced by host name through a proxy)"
            if have["netns"]
            else "user/network namespaces are not available: network:http grants limited "
            "to hosts cannot be enforced, so such plugins get no network at all",
        ),
    ]
