"""The sandbox of one command: what a plugin's grants allow, and the checks of the host
functions that reach outside (environment, HTTP, programs).

``filesystem:*`` grants become preopened directories (read-only for read grants),
``env:read`` grants the only environment variables; ``network:http`` and
``process:execute`` are reachable only through Conduit's host functions, which check the
grants here. A refused call is a :class:`Denied`; the first one is the command's error.

Paths. wasi-libc (C, Rust, CPython) resolves every path, absolute or relative, by the
longest match of its absolute form over the names of the preopened directories, and
starts every program in ``/``: to the host, ``notes.txt`` and ``/notes.txt`` are the same
request. So each granted directory is preopened under its own absolute path (and its
real path, if a symbolic link leads there), nothing under ``.``, and the guest is told
the workspace in ``PWD``: a guest that changes to it first (Python plugins built by
``conduit plugins build`` do; C: ``chdir(getenv("PWD"))``) resolves relative paths
against the workspace, and an absolute path names the file it names or nothing. When
only directories inside the workspace are granted, the workspace itself is preopened
as an empty read-only directory, so that the guest can change to it and reach them by
relative paths while the rest of the workspace stays out of reach.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from conduit.errors import PluginLoadError

if TYPE_CHECKING:
    from conduit.security.capabilities import Capability

__all__ = ["Denied", "GuestFault", "Sandbox"]


class GuestFault(Exception):
    """A module called a host function wrongly (no memory, a buffer out of bounds)."""


class Denied(Exception):
    """A host function refused a call: the capability it needs is not granted."""

    def __init__(self, capability: str, what: str) -> None:
        super().__init__(f"{what}: {capability} is not granted")
        self.capability = capability
        self.what = what


class Sandbox:
    """What one plugin may do, computed from its grants for one command."""

    def __init__(self, plugin: str, grants: list[Capability], workspace: str) -> None:
        self.plugin = plugin
        self.grants = grants
        self.workspace = workspace
        self.env: dict[str, str] = {}
        #: (host directory, the guest's name for it, writable), in the guest's fd order
        self.preopens: list[tuple[str, str, bool]] = []
        #: the last result of a core-module host call, fetched with conduit.result
        self.result = b""
        #: the first refused call, reported as the command's error
        self.denied: Denied | None = None

    @classmethod
    def build(
        cls,
        plugin: str,
        grants: list[str],
        workspace: str,
        plugin_data: str,
        empty_dir: str | None = None,
    ) -> Sandbox:
        """The sandbox of ``grants``; ``empty_dir`` (created if missing) stands in for
        the workspace when only directories inside it are granted (see the module's
        docstring)."""
        box = cls(plugin, [], workspace)
        if not grants:  # nothing granted: no need to import the grammar of grants
            return box
        from conduit.security.capabilities import CapabilityError, filesystem_paths, parse

        try:
            caps = [parse(g) for g in grants]
        except CapabilityError as exc:  # the config validator should have caught it
            raise PluginLoadError(plugin, f"invalid grant: {exc.message}", hint=exc.hint) from None
        box.grants = caps
        for cap in caps:
            if cap.kind == "env:read":
                box.env.update({k: v for k, v in os.environ.items() if cap.allows_env(k)})
        dirs: dict[str, bool] = {}
        for cap, path in filesystem_paths(caps, workspace=workspace, plugin_data=plugin_data):
            if os.path.isfile(path):
                raise PluginLoadError(
                    plugin,
                    f"grant '{cap}' names a file; WebAssembly plugins are given directories",
                    hint="grant the directory that holds it",
                )
            if not os.path.isdir(path):
                continue  # nothing to see there yet; a missing directory grants nothing
            dirs[path] = dirs.get(path, False) or cap.kind == "filesystem:write"
        box._preopen(dirs, empty_dir)
        return box

    def _preopen(self, dirs: dict[str, bool], empty_dir: str | None) -> None:
        """Preopen ``dirs`` (path -> writable) under their absolute paths; tell the guest
        the workspace (``PWD``) if it can change to it."""
        names: dict[str, tuple[str, bool]] = {}  # the guest's name -> (host path, writable)
        for path, writable in dirs.items():
            for name in (path, os.path.realpath(path)):
                names[name] = (path, writable or names.get(name, ("", False))[1])
        workspace = os.path.realpath(self.workspace)
        if not any(_within(workspace, name) for name in names):
            inside = any(_within(name, workspace) for name in names)
            if not (inside and empty_dir is not None and _empty(empty_dir)):
                self.preopens = [(p, n, w) for n, (p, w) in sorted(names.items())]
                return  # relative paths reach nothing
            names[workspace] = (empty_dir, False)
        self.env["PWD"] = workspace
        self.preopens = [(p, n, w) for n, (p, w) in sorted(names.items())]

    def _granted(self, kind: str) -> list[Capability]:
        return [c for c in self.grants if c.kind == kind]

    def _refuse(self, capability: str, what: str) -> Denied:
        """The error for a refused call; the first one is kept as the command's error,
        whatever the guest does with the error it gets."""
        exc = Denied(capability, what)
        if self.denied is None:
            self.denied = exc
        return exc

    def check_env(self, name: str) -> None:
        if name == "PWD" and name in self.env:  # Conduit's own: the workspace
            return
        if not any(c.allows_env(name) for c in self._granted("env:read")):
            raise self._refuse(f"env:read:{name}", f"reading the environment variable {name}")

    def check_http(self, url: str) -> tuple[str, str, int, str]:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = parts.hostname
        if not any(c.allows_host(host, port) for c in self._granted("network:http")):
            raise self._refuse(f"network:http:{host}:{port}", f"an HTTP request to {host}:{port}")
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        return parts.scheme, host, port, target

    def check_program(self, program: str) -> str:
        """The path to run for ``program``, if a ``process:execute`` grant allows it."""
        import shutil

        for cap in self._granted("process:execute"):
            scope = cap.scope
            # A grant for a bare name allows that name looked up on PATH, not any file
            # of that name the plugin points at.
            same_form = scope is None or (os.sep in scope) == (os.sep in program)
            if same_form and cap.allows_program(program):
                found = program if os.sep in program else shutil.which(program)
                if found is None:
                    raise FileNotFoundError(f"{program}: not found on PATH")
                return found
        raise self._refuse(f"process:execute:{program}", f"running {program}")

    # -- the services, shared by core modules and components ----------------------------

    def http(
        self, method: str, url: str, headers: list[tuple[str, str]], body: bytes, timeout: float
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        import http.client

        scheme, host, port, target = self.check_http(url)
        conn_type = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        conn = conn_type(host, port, timeout=timeout)
        try:
            conn.request(method, target, body=body or None, headers=dict(headers))
            resp = conn.getresponse()
            return resp.status, list(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def exec(
        self, program: str, args: list[str], stdin: bytes, timeout: float | None
    ) -> tuple[int, bytes, bytes]:
        import subprocess

        path = self.check_program(program)
        proc = subprocess.run(
            [path, *args],
            input=stdin,
            capture_output=True,
            env=dict(self.env),
            cwd=self.workspace,
            timeout=timeout,
            check=False,
        )
        return proc.returncode, proc.stdout, proc.stderr

    def log(self, level: str, message: str) -> None:
        """A line the plugin logs, printed by Conduit: control characters show escaped
        (:func:`conduit.text.inert`), as in every text Conduit prints for a plugin."""
        from conduit.text import inert

        sys.stderr.write(inert(f"{self.plugin}: {level}: {message}") + "\n")
        sys.stderr.flush()


def _within(path: str, directory: str) -> bool:
    """Whether ``path`` is ``directory`` or under it (both absolute and normalized)."""
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def _empty(directory: str) -> bool:
    """Whether ``directory`` is an empty directory, creating it if it is missing."""
    try:
        os.makedirs(directory, exist_ok=True)
        return not os.listdir(directory)
    except OSError:
        return False
