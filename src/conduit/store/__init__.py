"""The plugin store: install, uninstall, update, lock and sync plugin distributions.

It wraps uv (preferred) or pip and never resolves anything itself. Modules:

- :mod:`conduit.store._env`: what is installed (distribution metadata only);
- :mod:`conduit.store._tools`: the installers;
- :mod:`conduit.store.lockfile`: the lock file ``pylock.conduit.toml`` (PEP 751);
- :mod:`conduit.store.catalog`: the searchable plugin catalog;
- :mod:`conduit.store.envs`: private cached environments for single-file plugins'
  inline dependencies;
- :mod:`conduit.store._ops`: the operations, each one journalled transaction.

The names below are imported on first use, so that ``conduit.store.envs`` (imported
when a single-file plugin with dependencies is activated) stays cheap.

Errors::

    ConduitError
    └── StoreError               exit 1   an operation failed; the state was restored
        └── HashMismatchError    exit 1   a download does not match the lock file
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from conduit.errors import HashMismatchError, StoreError
    from conduit.store._ops import Change, Progress, Result, Store

__all__ = ["Change", "HashMismatchError", "Progress", "Result", "Store", "StoreError"]

_WHERE = {
    "Change": "conduit.store._ops",
    "Progress": "conduit.store._ops",
    "Result": "conduit.store._ops",
    "Store": "conduit.store._ops",
    "HashMismatchError": "conduit.errors",
    "StoreError": "conduit.errors",
}


def __getattr__(name: str) -> object:
    if name not in _WHERE:
        raise AttributeError(f"module 'conduit.store' has no attribute '{name}'")
    import importlib

    return getattr(importlib.import_module(_WHERE[name]), name)
