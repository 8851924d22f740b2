"""The plugin author's API: the one module a Conduit plugin imports.

The smallest plugin::

    import click
    from conduit.sdk import Plugin


    @click.command()
    def hello() -> None:
        click.echo("hello")


    class Hello(Plugin):
        def boot(self, ctx):
            ctx.register_command(hello)

Compatibility: this module follows semantic versioning through :data:`API_VERSION`,
independently of Conduit's release number. A plugin states the range it supports in its
manifest (``api = ">=1.0,<2"``). Minor versions only add; anything removed or changed
incompatibly waits for the next major version, after at least one minor release in which
it warns. The policy is written out in docs/plugin-api.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from conduit.errors import ConduitError

if TYPE_CHECKING:
    import click

__all__ = [
    "API_VERSION",
    "ConduitError",
    "Plugin",
    "PluginContext",
    "PluginDeprecationWarning",
    "deprecated",
]

T = TypeVar("T")

API_VERSION = "1.2.0"
"""The version of the plugin API this Conduit provides (semver)."""


@runtime_checkable
class PluginContext(Protocol):
    """What the kernel hands a plugin's :meth:`Plugin.boot`.

    Everything a plugin registers goes through its context, which records it, so that
    deactivating the plugin removes all of it.
    """

    @property
    def name(self) -> str:
        """The plugin's name, as in its manifest."""

    @property
    def data_dir(self) -> str:
        """A directory this plugin may keep files in (created on first use)."""

    def register_command(self, command: click.Command, name: str | None = None) -> None:
        """Contribute a Click command or group.

        ``name`` defaults to the command's own name; a space-separated name such as
        ``"repos status"`` places the command under the group ``repos``. The names must
        match the ``commands`` of the plugin's manifest, which is what ``--help`` shows.
        """

    def register_service(self, name: str, factory: Callable[[], Any]) -> None:
        """Provide a named service; ``factory`` is called once, on first use."""

    @property
    def config(self) -> dict[str, Any]:
        """This plugin's settings: the ``[plugin.NAME]`` table of the user's config."""

    def register_hook(self, hook: str, implementation: Callable[..., Any]) -> None:
        """Implement the hook called ``hook`` (a kernel hook or one a plugin declared).

        The implementation may take any subset of the hook's arguments, by name.
        """

    def register_hookspec(self, spec: Callable[..., Any], *, firstresult: bool = False) -> None:
        """Declare a hook other plugins can implement; ``spec``'s name and signature
        define it. List it in the manifest's ``provides.hooks`` too."""

    def hook(self, name: str, **kwargs: Any) -> list[Any]:
        """Call the hook ``name`` with keyword arguments; return the implementations'
        non-None results. Plugins with ``event:NAME`` are activated first."""

    def service(self, name: str, kind: type[T] | None = None) -> T:
        """Return the service called ``name``, activating its provider if needed.

        With ``kind``, the result is checked to be an instance of it and typed as such.
        Services take and return plain data (str, int, float, bool, None, list, dict), so
        that a provider in another process can serve them.
        """


class Plugin:
    """Base class for plugins. Override :meth:`boot`; :meth:`shutdown` is optional.

    The entry point (or a single-file plugin's ``entry``) may name the subclass, which
    the kernel instantiates without arguments, or an instance.
    """

    def boot(self, ctx: PluginContext) -> None:
        """Register this plugin's commands, services and hooks with ``ctx``."""
        raise NotImplementedError(f"{type(self).__name__} must implement boot(ctx)")

    def shutdown(self) -> None:
        """Release what :meth:`boot` acquired beyond registrations (files, threads)."""


class PluginDeprecationWarning(DeprecationWarning):
    """Warns that a name is deprecated: it names the replacement and the version that
    removes the old name. Emitted by :func:`deprecated`."""


def deprecated(old: str, new: str, removed_in: str, *, stacklevel: int = 2) -> None:
    """Warn that ``old`` is deprecated in favour of ``new`` and goes away in ``removed_in``.

    Conduit calls it for SDK names on their way out (``removed_in="plugin API 2.0"``); a
    plugin may call it for the services and hooks it offers to other plugins::

        def old_name(self):
            deprecated("clock.old_name()", "clock.now()", removed_in="clock 2.0")
            return self.now()

    The warning is a :class:`PluginDeprecationWarning` (a ``DeprecationWarning``), so
    pytest shows it and ``-W error`` turns it into an error; ``stacklevel`` counts from
    the caller of the deprecated function, as for :func:`warnings.warn`.
    """
    import warnings

    warnings.warn(
        f"{old} is deprecated; use {new} instead (removed in {removed_in})",
        PluginDeprecationWarning,
        stacklevel=stacklevel + 1,
    )
