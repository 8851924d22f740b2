"""The capability grammar: what a plugin may ask for and what a user may grant.

::

    filesystem:read[:PATH]        read files under PATH (a file or a directory)
    filesystem:write[:PATH]       create, change and delete files under PATH
    network:http[:HOST[:PORT]]    HTTP(S) to HOST (``*.example.com`` matches subdomains)
    process:execute[:PROGRAM]     run PROGRAM (a bare name, looked up on PATH, or a path)
    env:read[:VAR]                read the environment variable VAR (``PREFIX_*`` allowed)

A capability without a scope means *all* of that kind and is shown with a warning.
Paths may start with ``~`` or use ``${workspace}`` (the directory Conduit was run in) and
``${plugin_data}`` (the plugin's own data directory); they are expanded when a host
applies the grant, not when the manifest is read.

The same grammar serves both sides: a plugin's manifest *requests* capabilities, the
user's config *grants* them, and :meth:`Capability.covers` decides whether a grant
covers a request. Everything here is pure data and string work (no I/O but
``os.path``), so that every host and the manifest validator share one definition.
Control, bidi and invisible format characters are refused in every capability
(:mod:`conduit.text`): a capability is shown to the user at the grant prompt.
"""

from __future__ import annotations

import fnmatch
import os

__all__ = [
    "KINDS",
    "Capability",
    "CapabilityError",
    "expand_path",
    "filesystem_paths",
    "missing",
    "parse",
]

#: every capability kind, in the order they are documented and displayed
KINDS = (
    "filesystem:read",
    "filesystem:write",
    "network:http",
    "process:execute",
    "env:read",
)

_PATH_VARIABLES = ("${workspace}", "${plugin_data}")


class CapabilityError(ValueError):
    """A capability string is malformed; ``message`` says what, ``hint`` how to fix it."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class Capability:
    """One parsed capability: a kind and an optional scope (``None`` means all).

    Immutable and hashable. Written out rather than a frozen dataclass: this module is
    imported when an in-process plugin is activated, and ``dataclasses`` (with ``copy``
    and ``inspect``) would add about 1.5 ms to that.
    """

    __slots__ = ("kind", "scope")
    kind: str
    scope: str | None

    def __init__(self, kind: str, scope: str | None = None) -> None:
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "scope", scope)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Capability is immutable (cannot set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Capability is immutable (cannot delete {name!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Capability):
            return NotImplemented
        return self.kind == other.kind and self.scope == other.scope

    def __hash__(self) -> int:
        return hash((self.kind, self.scope))

    def __repr__(self) -> str:
        return f"Capability(kind={self.kind!r}, scope={self.scope!r})"

    def __str__(self) -> str:
        return self.kind if self.scope is None else f"{self.kind}:{self.scope}"

    @property
    def unscoped(self) -> bool:
        return self.scope is None

    # -- scope parts ---------------------------------------------------------------------

    @property
    def port(self) -> int | None:
        """For ``network:http``: the port, or ``None`` for any port."""
        if self.scope is None:
            return None
        return _split_host_port(self.scope)[1]

    # -- matching ------------------------------------------------------------------------

    def covers(self, other: Capability) -> bool:
        """Whether granting ``self`` also grants everything ``other`` asks for."""
        if self.kind != other.kind:
            # writing somewhere implies nothing about reading there, and vice versa:
            # each kind is granted on its own, as the user sees it in the prompt
            return False
        if self.scope is None:
            return True
        if other.scope is None:
            return False
        if other.scope == self.scope:
            return True
        if self.kind.startswith("filesystem:"):
            return _path_within(other.scope, self.scope)
        if self.kind == "network:http":
            host, port = _split_host_port(other.scope)
            return self.allows_host(host, port) and (self.port is None or port is not None)
        if self.kind == "env:read":
            return _name_matches(other.scope, self.scope)
        return other.scope == self.scope  # process:execute: the same program

    def allows_path(self, path: str, **variables: str) -> bool:
        """For ``filesystem:*``: whether the absolute ``path`` is under this grant."""
        if self.scope is None:
            return True
        return _path_within(path, expand_path(self.scope, **variables))

    def allows_host(self, host: str, port: int | None = None) -> bool:
        """For ``network:http``: whether a connection to ``host:port`` is granted."""
        if self.scope is None:
            return True
        pattern, want_port = _split_host_port(self.scope)
        if want_port is not None and port != want_port:
            return False
        host = host.lower().rstrip(".")
        if pattern.startswith("*."):
            return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
        return host == pattern

    def allows_program(self, program: str) -> bool:
        """For ``process:execute``: whether running ``program`` (a name or a path) is granted."""
        if self.scope is None:
            return True
        if os.sep in self.scope:
            return os.path.realpath(program) == os.path.realpath(self.scope)
        return os.path.basename(program) == self.scope

    def allows_env(self, name: str) -> bool:
        """For ``env:read``: whether reading the variable ``name`` is granted."""
        return self.scope is None or _name_matches(name, self.scope)


def parse(text: str) -> Capability:
    """Parse one capability string; raise :class:`CapabilityError` if it is malformed."""
    if not isinstance(text, str):
        raise CapabilityError(
            f"{text!r} is not a capability", hint="capabilities are strings such as 'env:read:HOME'"
        )
    if not (text.isprintable() and text.isascii()):  # (the check is imported only then)
        from conduit.text import inert, unsafe_char

        bad = unsafe_char(text)
        if bad is not None:
            # A control character in a capability would reach the grant prompt, where it
            # can move the cursor and erase the lines above (a prompt that hides a request).
            raise CapabilityError(
                f"'{inert(text)}' contains the control character {bad}",
                hint="remove it: capabilities are plain text, without control, bidi or "
                "invisible format characters",
            )
    kind, sep, scope = text.partition(":")
    action, sep2, scope = scope.partition(":")
    base = f"{kind}:{action}" if sep else kind
    if base not in KINDS:
        from conduit.errors import did_you_mean

        guess = did_you_mean(base, KINDS)
        raise CapabilityError(
            f"'{text}' is not a valid capability",
            hint=(f"did you mean '{guess}'? " if guess else "")
            + "capabilities are "
            + ", ".join(f"{k}[:SCOPE]" for k in KINDS),
        )
    if not sep2:
        return Capability(base)
    if not scope or scope != scope.strip():
        raise CapabilityError(
            f"'{text}' has an empty or padded scope",
            hint=f"write '{base}' for all, or '{base}:SCOPE' without spaces",
        )
    _check_scope(text, base, scope)
    return Capability(base, scope)


def missing(requested: list[Capability], granted: list[Capability]) -> list[Capability]:
    """The requested capabilities no grant covers, in the requested order."""
    return [r for r in requested if not any(g.covers(r) for g in granted)]


def expand_path(scope: str, *, workspace: str | None = None, plugin_data: str | None = None) -> str:
    """Expand ``~``, ``${workspace}`` and ``${plugin_data}`` and make ``scope`` absolute."""
    values = {"${workspace}": workspace or os.getcwd(), "${plugin_data}": plugin_data}
    for name, value in values.items():
        if name in scope:
            if value is None:
                raise CapabilityError(
                    f"'{scope}' uses {name}, which is not known here",
                    hint="this grant can only be applied by a host that knows the plugin",
                )
            scope = scope.replace(name, value)
    return os.path.normpath(os.path.abspath(os.path.expanduser(scope)))


def filesystem_paths(
    grants: list[Capability], *, workspace: str | None = None, plugin_data: str | None = None
) -> list[tuple[Capability, str]]:
    """Each ``filesystem:*`` grant of ``grants`` with the absolute path it opens, in order.

    An unscoped grant opens ``/``; the others are expanded with :func:`expand_path`. A
    grant whose scope uses a variable not known here (``${plugin_data}`` without a plugin)
    opens nothing and is left out. The one reading of path grants that every host's
    engine applies: the in-process guard, the process sandbox and the WebAssembly host.
    """
    found = []
    for cap in grants:
        if not cap.kind.startswith("filesystem:"):
            continue
        if cap.scope is None:
            found.append((cap, os.sep))
            continue
        try:
            found.append(
                (cap, expand_path(cap.scope, workspace=workspace, plugin_data=plugin_data))
            )
        except CapabilityError:
            continue
    return found


# -- helpers ---------------------------------------------------------------------------------


def _check_scope(text: str, base: str, scope: str) -> None:
    if base.startswith("filesystem:"):
        rest = scope
        for var in _PATH_VARIABLES:
            rest = rest.replace(var, "")
        if "${" in rest:
            raise CapabilityError(
                f"'{text}' uses an unknown path variable",
                hint="path variables are ~, ${workspace} and ${plugin_data}",
            )
        if not (scope.startswith(("/", "~", "${")) or os.path.isabs(scope)):
            raise CapabilityError(
                f"'{text}' has a relative path",
                hint="use an absolute path, ~/..., ${workspace}/... or ${plugin_data}/...",
            )
    elif base == "network:http":
        host, port = _split_host_port(scope)
        label = host[2:] if host.startswith("*.") else host
        ok = bool(label) and all(
            part and part.replace("-", "").isalnum() and part.isascii() for part in label.split(".")
        )
        if not ok or port == -1:
            raise CapabilityError(
                f"'{text}' is not a valid host scope",
                hint="write HOST, HOST:PORT or *.DOMAIN (for example '*.github.com:443')",
            )
    elif base == "env:read":
        name = scope[:-1] if scope.endswith("*") else scope
        if not name.replace("_", "a").isalnum() or "*" in name:
            raise CapabilityError(
                f"'{text}' is not a valid variable name",
                hint="write a variable name such as HOME, or a prefix such as AWS_*",
            )


def _split_host_port(scope: str) -> tuple[str, int | None]:
    """``"host:443"`` -> ``("host", 443)``; a bad port is ``-1``."""
    host, sep, port = scope.rpartition(":")
    if not sep:
        return scope.lower(), None
    if not port.isdigit() or not 0 < int(port) < 65536:
        return host.lower(), -1
    return host.lower(), int(port)


def _path_within(path: str, root: str) -> bool:
    if "${" in path or "${" in root:  # unexpanded: compare literally
        return path == root or path.startswith(root.rstrip("/") + "/")
    path = os.path.normpath(os.path.expanduser(path))
    root = os.path.normpath(os.path.expanduser(root))
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep) or root == os.sep


def _name_matches(name: str, pattern: str) -> bool:
    if pattern.endswith("*"):
        return fnmatch.fnmatchcase(name, pattern) and "*" not in name
    return name == pattern
