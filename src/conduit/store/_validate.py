"""Run in a fresh interpreter after an install: rebuild the index, print what it found.

A fresh process sees the environment exactly as the next ``conduit`` run will (new
``.pth`` files, no stale import caches), and the index it writes is the one that run
uses.
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    from conduit._profile import Profile
    from conduit.index import load
    from conduit.paths import resolve

    index = load(resolve(), Profile(False), force_rebuild=True)
    plugins = {}
    for name in list(index["plugins"]):
        rec = index["plugins"][name]
        plugins[name] = {
            "dist": rec["dist"],
            "version": rec["version"],
            "blocked": rec["blocked"],
            "blocked_hint": rec["blocked_hint"],
            "enabled": rec["enabled"],
            "capabilities": rec["capabilities"],
        }
    json.dump({"plugins": plugins, "broken": list(index["broken"])}, sys.stdout)


if __name__ == "__main__":  # pragma: no cover
    main()
