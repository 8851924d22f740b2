"""The plugin store: install, uninstall, update, lock and sync plugin distributions.

It wraps uv (preferred) or pip and never resolves anything itself. Layers:

- :mod:`conduit.store._env`: what is installed (distribution metadata only);
- :mod:`conduit.store._tools`: the installers;
- :mod:`conduit.store.lockfile`: ``conduit.lock``;
- :mod:`conduit.store.catalog`: the searchable plugin catalog;
- :mod:`conduit.store._ops`: the operations, each one journalled transaction.

Errors::

    ConduitError
    └── StoreError               exit 1   an operation failed; the state was restored
        └── HashMismatchError    exit 1   a download does not match the lock file
"""

from __future__ import annotations

from conduit.store._ops import Change, Result, Store, capability_notes
from conduit.store._tools import HashMismatchError, StoreError

__all__ = ["Change", "HashMismatchError", "Result", "Store", "StoreError", "capability_notes"]
