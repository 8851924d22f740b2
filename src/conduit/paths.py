"""Where Conduit keeps its files.

``CONDUIT_HOME`` overrides everything (tests use it)::

    $CONDUIT_HOME/config.toml     settings, grants, pins
    $CONDUIT_HOME/plugins/        single-file plugins
    $CONDUIT_HOME/cache/          the plugin index, compiled artifacts
    $CONDUIT_HOME/state/          logs and other state

Without it, the XDG base directories on Linux and BSD (``$XDG_CONFIG_HOME/conduit`` and
so on) and platformdirs' answer elsewhere. This module is on the start-up path:
platformdirs imports pathlib, which imports re (about 11 ms on our CI machines), so the
XDG rules are spelled out here and platformdirs is only imported on macOS and Windows.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "BUNDLE",
    "Paths",
    "conduit_argv",
    "python_argv",
    "resolve",
    "stable_hash",
    "too_new_for_bytecode",
    "workspace_dirs",
]

APP = "conduit"

#: set by a bundle's bootstrap (``conduit bundle``, conduit/bundle/boot.py) before
#: Conduit runs: ``(root, bundle id, sealed)``; the index is then the bundle's frozen one
#: (conduit.index), and a sealed bundle reads no user config or plugin directory
BUNDLE: tuple[str, str, bool] | None = None


class Paths:
    """The resolved locations of Conduit's files (plain strings, no pathlib)."""

    __slots__ = ("bundle", "cache_dir", "config_dir", "config_file", "plugin_dir", "state_dir")

    def __init__(self, config_dir: str, cache_dir: str, state_dir: str) -> None:
        #: :data:`BUNDLE` when these are the paths of a bundle's run
        self.bundle = BUNDLE
        self.config_dir = config_dir
        self.config_file = os.path.join(config_dir, "config.toml")
        self.plugin_dir = os.path.join(config_dir, "plugins")
        self.cache_dir = cache_dir
        self.state_dir = state_dir

    def __repr__(self) -> str:
        return f"Paths(config_dir={self.config_dir!r}, cache_dir={self.cache_dir!r})"

    def plugin_data(self, name: str) -> str:
        """The data directory of plugin ``name`` (``ctx.data_dir``; the one path rule)."""
        return os.path.join(self.state_dir, "plugins", name)

    def store_file(self, kind: str, suffix: str = "") -> str:
        """A file of the plugin store's for this environment (``sys.prefix``): its
        ``journal`` (conduit.store writes it, the indexer reads it) or its ``env`` lock."""
        return os.path.join(self.state_dir, "store", f"{kind}-{stable_hash(sys.prefix)}{suffix}")


def stable_hash(text: str) -> str:
    """A short hash of ``text`` that is the same in every process and version (FNV-1a, 64
    bits, hex): names files after a ``sys.prefix`` or a URL. Not ``hash()``, which is
    salted per process, and not hashlib, which the start-up path does not import."""
    h = 0xCBF29CE484222325
    for byte in text.encode("utf-8", "surrogateescape"):
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def _xdg(var: str, default: str) -> str:
    value = os.environ.get(var, "")
    # The XDG spec says relative paths are invalid and must be ignored.
    if not value or not os.path.isabs(value):
        value = os.path.join(os.path.expanduser("~"), default)
    return os.path.join(value, APP)


def resolve(environ: dict[str, str] | None = None) -> Paths:
    """Return Conduit's paths for the current environment."""
    env = os.environ if environ is None else environ
    if BUNDLE is not None and BUNDLE[2]:
        # A sealed bundle: its own (empty) config directory, the user's cache and state
        found = _unsealed(env)
        return Paths(os.path.join(BUNDLE[0], "home"), found.cache_dir, found.state_dir)
    return _unsealed(env)


def _unsealed(env: Mapping[str, str]) -> Paths:
    home = env.get("CONDUIT_HOME")
    if home:
        home = os.path.abspath(os.path.expanduser(home))
        return Paths(home, os.path.join(home, "cache"), os.path.join(home, "state"))
    if sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        return Paths(
            _xdg("XDG_CONFIG_HOME", ".config"),
            _xdg("XDG_CACHE_HOME", ".cache"),
            _xdg("XDG_STATE_HOME", os.path.join(".local", "state")),
        )
    import platformdirs  # macOS and Windows: not worth re-deriving their conventions

    return Paths(
        platformdirs.user_config_dir(APP, appauthor=False),
        platformdirs.user_cache_dir(APP, appauthor=False),
        platformdirs.user_state_dir(APP, appauthor=False),
    )


def python_argv(code: str) -> list[str]:
    """The command line of a fresh interpreter running ``code`` (Conduit's own, for a
    child it needs: install verification) with this Conduit importable: ``python -c
    code``; from a bundle, without ``site`` (the interpreter's site-packages are not the
    bundle's), with this ``sys.path`` and :data:`BUNDLE` set first."""
    if BUNDLE is None:
        return [sys.executable, "-c", code]
    prelude = (
        f"import sys; sys.path[:] = {sys.path!r}; import conduit.paths; "
        f"conduit.paths.BUNDLE = {BUNDLE!r}; "
    )
    return [sys.executable, "-S", "-c", prelude + code]


def conduit_argv(*args: str) -> list[str]:
    """The command line of ``conduit ARGS`` in a new process of this Conduit: ``python
    -m conduit ARGS``; from a bundle, the bundle run by this interpreter without ``site``
    (``python -S TOOL.pyz ARGS``: the interpreter has no Conduit of its own, or another
    one). A bundle's first ``sys.path`` entry is its archive (conduit.bundle.boot)."""
    if BUNDLE is None:
        return [sys.executable, "-m", "conduit", *args]
    return [sys.executable, "-S", sys.path[0], *args]


def too_new_for_bytecode(mtime: float) -> bool:
    """Whether a source of this ``st_mtime`` was saved within the last two seconds, too
    recently for a ``.pyc``: one records its source's mtime in whole seconds (and its
    size), so a ``.pyc`` written in the second the source was saved hides an edit of the
    same size within that second, for good. Such a source is compiled from source and no
    bytecode of it is read or written: by a single-file plugin's loader
    (hosts.inprocess) and by the kernel for a sandboxed host (security.sandbox)."""
    import time

    return time.time() - mtime < 2.0


def workspace_dirs(cwd: str) -> list[str]:
    """``cwd`` and its parents up to the repository root (the directory holding ``.git``).

    Outside a repository the workspace is ``cwd`` alone.
    """
    dirs = []
    current = os.path.abspath(cwd)
    while True:
        dirs.append(current)
        if os.path.exists(os.path.join(current, ".git")):
            return dirs
        parent = os.path.dirname(current)
        if parent == current:
            return dirs[:1]
        current = parent
