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

from conduit.errors import ConduitError

# Not typing's TYPE_CHECKING: importing typing (and with it re, enum, collections,
# functools, contextlib) is a good part of a process plugin host's start-up, and every
# plugin imports this module.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any, Protocol, TypeVar, runtime_checkable

    import click

    T = TypeVar("T")
else:

    class _StructuralType(type):
        """At run time a protocol below is a plain class whose ``isinstance`` check is
        structural, as ``typing.runtime_checkable`` makes it: an object is an instance
        when it has every public member the protocol declares."""

        def __instancecheck__(cls, obj: object) -> bool:
            if type.__instancecheck__(cls, obj):
                return True
            members = [name for name in vars(cls) if not name.startswith("_")]
            return all(hasattr(obj, name) for name in members)

    class Protocol(metaclass=_StructuralType):
        _is_protocol = True  # what typing's protocols carry (docs/sdk-reference.md)

    def runtime_checkable(cls: type) -> type:
        return cls


__all__ = [
    "API_VERSION",
    "ConduitError",
    "Plugin",
    "PluginContext",
    "PluginDeprecationWarning",
    "call_many",
    "deprecated",
]

API_VERSION = "1.6.0"
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
        """A directory this plugin may keep files in (created on first use).

        ``$XDG_STATE_HOME/conduit/plugins/NAME/`` (``~/.local/state/...`` by default;
        ``$CONDUIT_HOME/state/plugins/NAME/`` when ``CONDUIT_HOME`` is set).
        """

    def register_command(self, command: click.Command, name: str | None = None) -> None:
        """Contribute a Click command or group.

        ``name`` defaults to the command's own name; a space-separated name such as
        ``"repos status"`` places the command under the group ``repos``. The names must
        match the ``commands`` of the plugin's manifest, which is what ``--help`` shows
        (``conduit plugins manifest --write`` derives them from the code). Registering
        the same name twice raises an error.
        """

    def register_service(self, name: str, factory: Callable[[], Any]) -> None:
        """Provide a named service; ``factory`` is called once, on first use.

        List the name in the manifest's ``provides.services`` so that Conduit finds the
        provider without importing it. A service has one provider at a time: registering
        a name another active plugin provides raises an error naming that plugin.
        """

    @property
    def config(self) -> dict[str, Any]:
        """This plugin's settings: a copy of the ``[plugin.NAME]`` table of the user's
        config, or ``{}``. Checking its keys and values is up to the plugin."""

    def register_hook(self, hook: str, implementation: Callable[..., Any]) -> None:
        """Implement the hook called ``hook`` (a kernel hook or one a plugin declared).

        The implementation may take any subset of the hook's arguments, by name; one
        that takes an argument the hook does not have is not called, and every call of
        the hook reports it. Implementing a hook does not activate the plugin: list
        ``event:HOOK`` in the manifest's ``activation`` for that.
        """

    def register_hookspec(self, spec: Callable[..., Any], *, firstresult: bool = False) -> None:
        """Declare a hook other plugins can implement; ``spec``'s name and signature
        define it, its docstring documents it. List it in the manifest's
        ``provides.hooks`` too.

        The kernel's hook names cannot be taken, and a name can be declared by one
        active plugin only. With ``firstresult=True``, calling the hook stops at the
        first implementation that returns something other than ``None``.
        """

    def hook(self, name: str, **kwargs: Any) -> list[Any]:
        """Call the hook ``name`` with keyword arguments; return the implementations'
        non-None results (at most one with ``firstresult``).

        Plugins with ``event:NAME`` in their manifest are activated first. If an
        implementation raises, or does not match the hookspec, the error (naming its
        plugin) is raised to the caller.
        """

    def service(self, name: str, kind: type[T] | None = None) -> T:
        """Return the service called ``name``, activating its provider if needed.

        With ``kind``, the result is checked to be an instance of it and typed as such.
        Services take and return plain data (str, int, float, bool, None, list, dict), so
        that a provider in another process can serve them.

        Errors: several providers and no ``[pins] "service:NAME"`` in the config; no
        provider; ``plugin 'P': service 'NAME' failed to start: ...`` when the factory
        raises.
        """

    def on_dispose(self, dispose: Callable[[], object]) -> None:
        """Have ``dispose()`` called when this plugin is deactivated: at the end of each
        command on the command line, and before each reload under ``conduit dev``.

        For what :meth:`boot` or a command starts beyond registrations: a thread to stop
        and join, a timer to cancel, a file or a server to close. Disposers run after
        :meth:`Plugin.shutdown`, newest first, together with the removal of the plugin's
        registrations (in the reverse order of all of them); one that raises is reported
        as a warning naming the plugin, and the others still run. In a process host they
        run in the plugin's process before it exits. Since plugin API 1.6.
        """


if not TYPE_CHECKING:
    # The run-time stand-ins above are not part of the API (``__all__`` is the surface).
    del Protocol, runtime_checkable


class Plugin:
    """Base class for plugins. Override :meth:`boot`; :meth:`shutdown` and
    :meth:`health` are optional.

    The entry point (or a single-file plugin's ``entry``) may name the subclass, which
    the kernel instantiates without arguments, or an instance.

    Optional since API 1.5: a method ``metrics(self) -> dict[str, int | float]``, the
    plugin's own numbers (cache hits, items synced). The kernel asks for them once per
    command, before :meth:`shutdown` (in-process and process plugins), and keeps them in
    the run journal, where ``conduit plugins stats`` shows the latest values. Names are
    identifiers (``[A-Za-z_][A-Za-z0-9_]*``, at most 64 characters), values finite
    numbers; anything else, and a ``metrics()`` that raises, is left out. The base class
    has none (``metrics = None``), so that nothing is asked of plugins without one.
    """

    metrics: Callable[[], dict[str, int | float]] | None = None

    def boot(self, ctx: PluginContext) -> None:
        """Register this plugin's commands, services and hooks with ``ctx``.

        Called once per activation, after the plugins this one requires. An exception
        makes the activation fail (``failed to boot: ...``, exit code 3 for the plugin
        that owns the command), and whatever was registered before it is removed.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement boot(ctx)")

    def shutdown(self) -> None:
        """Release what :meth:`boot` acquired beyond registrations (files, threads).

        Called when the plugin is deactivated, which the command line does after every
        command. Registrations are removed by the kernel. The default does nothing.
        """

    def health(self) -> str | tuple[str, str] | None:
        """Optional: say whether this plugin can do its work (``conduit plugins health``).

        Return ``"ok"``, ``"warning"`` or ``"failing"``, or a pair such as
        ``("warning", "token expires in 3 days")``. Keep it quick: it is called after
        :meth:`boot`, and one that raises or does not answer within the timeout is
        reported as failing with the error's first line. The default returns ``None``:
        no health check, reported as ok. Since plugin API 1.5.
        """
        return None


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


def call_many(service: Any, method: str, calls: Iterable[Sequence[Any]]) -> list[Any]:
    """``[service.method(*args) for args in calls]``, in fewer round trips.

    For a service provided by a process plugin the requests are written to its host
    without waiting for each answer (a few hundred per write) and the answers read after:
    many small calls cost a fraction of a round trip each. Any other service is called in
    a loop. If some calls fail, all are still made, and the first failure is raised::

        lengths = call_many(ctx.service("text"), "length", [(line,) for line in lines])
    """
    arguments = [tuple(args) for args in calls]
    # A process plugin's service is a proxy of the process host, whose class pipelines the
    # calls (looked up on the type: a proxy's __getattr__ answers any name).
    pipelined = getattr(type(service), "__conduit_call_many__", None)
    if pipelined is not None:
        return pipelined(service, method, arguments)  # type: ignore[no-any-return]
    function = getattr(service, method)
    results: list[Any] = []
    error: Exception | None = None
    for args in arguments:
        try:
            results.append(function(*args))
        except Exception as exc:
            error = error or exc
            results.append(None)
    if error is not None:
        raise error
    return results
