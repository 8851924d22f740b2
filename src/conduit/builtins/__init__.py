"""Conduit's own commands, shipped as ordinary plugins.

Each built-in is a package here with its own ``conduit-plugin.toml`` and goes through the
same manifest reading, index and host as a third-party plugin. Built-ins are looked up
before installed distributions, win command conflicts, and stay on in safe mode
(``--no-plugins``).
"""

from __future__ import annotations

__all__ = ["BUILTINS"]

#: plugin name -> entry object, as an entry point would name it
BUILTINS: dict[str, str] = {
    "plugins": "conduit.builtins.plugins:PluginsPlugin",
    "completion": "conduit.builtins.completion:CompletionPlugin",
    "devtools": "conduit.builtins.devtools:DevtoolsPlugin",
    "debug": "conduit.builtins.debug:DebugPlugin",
    "config": "conduit.builtins.config:ConfigPlugin",
    "server": "conduit.builtins.server:ServerPlugin",
    "mcp": "conduit.builtins.mcp:McpPlugin",
    "bundle": "conduit.builtins.bundle:BundlePlugin",
    "dev": "conduit.builtins.dev:DevPlugin",
}
