"""Plugin hosts: where a plugin's code runs.

One small protocol, :class:`conduit.hosts.base.Host`, with several implementations: the
in-process host (``inprocess``), the process host (``process``, its child ``_child``),
pass-through executables (``executable``), the WebAssembly host (``wasm/``), and
:class:`~conduit.hosts.fake.FakeHost` for tests. The kernel picks a host per plugin from
its manifest's ``isolation`` and the user's policy, then only ever talks to the protocol.

This face imports nothing at run time: importing a host must not pay for the others (or
for the Protocol classes of ``base``, which only the type checker needs). It holds the
one naming rule every plugin context applies, :func:`command_key` (the kernel's context,
:class:`~conduit.hosts.recording.RecordingContext` and the host child's context): Python
imports this file anyway with any host, where a module of its own cost every command
about 0.8 M instructions (docs/performance.md).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import click

    from conduit.errors import PluginError

__all__ = ["clean_metrics", "command_key", "registered_twice"]

#: at most this many numbers of one plugin's ``metrics()`` are kept
MAX_METRICS = 64


def clean_metrics(values: object) -> dict[str, float] | None:
    """A plugin's ``metrics()`` result as the journal keeps it: names that are plain
    identifiers (at most 64 ASCII characters), finite int or float values (not bool);
    anything else is dropped. None when nothing is left."""
    if not isinstance(values, dict):
        return None
    out: dict[str, float] = {}
    for key, value in values.items():
        if len(out) >= MAX_METRICS:
            break
        ok_name = isinstance(key, str) and key.isascii() and key.isidentifier() and len(key) <= 64
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok_name and number and value == value and abs(value) != float("inf"):
            out[key] = value
    return out or None


def command_key(plugin: str, command: click.Command, name: str | None = None) -> str:
    """The full name ``command`` is registered under: ``name``, else the command's own
    name, its words joined by single spaces (``"repos  status"`` is ``"repos status"``).

    Raises :class:`PluginError` naming ``plugin`` when that leaves no name.
    """
    key = " ".join((name or command.name or "").split())
    if not key:
        from conduit.errors import PluginError

        raise PluginError(plugin, "register_command() needs a named Click command")
    return key


def registered_twice(plugin: str, key: str) -> PluginError:
    """The error for ``plugin`` registering the command ``key`` a second time."""
    from conduit.errors import PluginError

    return PluginError(plugin, f"command '{key}' is registered twice")
