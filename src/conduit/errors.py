"""Conduit's one error tree.

Every error the kernel expects carries the context a user needs (file, field, plugin) as
attributes, a one-line ``message``, an optional ``hint`` and the process ``exit_code``.
The CLI catches :class:`ConduitError` in one place and prints ``error: ...`` plus the
hint; any other exception escaping Conduit's own code is a bug and gets a traceback.

    ConduitError                 exit 1
    ├── UsageError               exit 2   bad command line, unknown command
    ├── ManifestError            exit 1   a plugin manifest is invalid (file, field)
    ├── ConfigError              exit 4   config, lock or state file unreadable/invalid
    ├── StoreError               exit 1   install/uninstall/update/sync undone (state restored)
    │   └── HashMismatchError    exit 1   a download does not match the lock file's sha256
    ├── RemotePluginError        exit *   a process plugin's own error, its exit code kept
    └── PluginError              exit 1   something went wrong inside a plugin
        ├── PluginLoadError      exit 3   import, entry object or boot failed
        │   └── NotGranted       exit 3   requested capabilities are not granted
        │       └── NotConsented exit 3   installing its dependencies needs the user's consent
        ├── HostError            exit 3   the plugin's host failed (crash, hang, protocol)
        ├── CapabilityDenied     exit 1   the in-process guard stopped an operation
        ├── SandboxDenied        exit 1   the process host's OS sandbox refused an operation
        └── CommandFailed        exit 1   a plugin's command raised

Foreign errors are mapped onto this tree once, at each boundary: a host's failures in
``ProcessHost._failure`` (process), ``hosts.wasm`` (WebAssembly traps and denials),
``InProcessHost.run_command`` (a plugin's own exception becomes :class:`CommandFailed`),
the store's installer runs in ``store._tools`` and manifest/config validation in the
indexer. Errors that never reach a user stay where they are raised and are caught by
the layer above: ``rpc.ProtocolError``/``Timeout``/``RemoteError``,
``capabilities.CapabilityError`` (becomes a ManifestError or ConfigError),
``landlock.LandlockError``/``seccomp.SeccompError`` (reported by the sandbox) and the
WebAssembly guest's ``GuestFault``/``Denied``.

This module is on the start-up path: standard library only, nothing imported.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_PLUGIN_LOAD = 3
EXIT_CONFIG = 4

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_PLUGIN_LOAD",
    "EXIT_USAGE",
    "CapabilityDenied",
    "CommandFailed",
    "ConduitError",
    "ConfigError",
    "HashMismatchError",
    "HostError",
    "ManifestError",
    "NotConsented",
    "NotGranted",
    "PluginError",
    "PluginLoadError",
    "RemotePluginError",
    "SandboxDenied",
    "StoreError",
    "UsageError",
]


class ConduitError(Exception):
    """Base of every error Conduit reports to users without a traceback.

    Raise it from a command for a problem the user can fix: Conduit prints
    ``error: MESSAGE`` and ``hint: HINT`` on stderr and exits with :attr:`exit_code`
    (1 here; subclasses have their own). ``message`` is one line, also ``str(error)``.
    """

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(ConduitError):
    """The command line is wrong: unknown command, bad global option, bad arguments of a
    command (then ``usage`` is the command's usage line)."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, hint: str | None = None, usage: str | None = None):
        super().__init__(message, hint=hint)
        self.usage = usage


class ConfigError(ConduitError):
    """A config, lock or state file cannot be read; it is reported, never overwritten."""

    exit_code = EXIT_CONFIG

    def __init__(self, path: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{path}: {message}", hint=hint)
        self.path = path


class ManifestError(ConduitError):
    """A plugin manifest is invalid.

    ``path`` is the file that holds the manifest, ``field`` the dotted location of the
    bad value (``commands[0].name``) or ``None`` when the whole file is wrong.
    """

    def __init__(
        self,
        path: str,
        problem: str,
        *,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        where = f"{path}: {field}" if field else path
        super().__init__(f"{where}: {problem}", hint=hint)
        self.path = path
        self.field = field
        self.problem = problem


class PluginError(ConduitError):
    """Something went wrong in a plugin; ``plugin`` names it."""

    def __init__(self, plugin: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"plugin '{plugin}': {message}", hint=hint)
        self.plugin = plugin
        self.detail = message


class PluginLoadError(PluginError):
    """A plugin could not be imported, found or booted."""

    exit_code = EXIT_PLUGIN_LOAD


class CommandFailed(PluginError):
    """A plugin's command raised an exception that is not a Conduit or Click error."""

    def __init__(self, plugin: str, command: str, exc: BaseException) -> None:
        super().__init__(
            plugin,
            f"command '{command}' failed: {type(exc).__name__}: {exc}",
            hint="run again with --debug for the traceback",
        )
        self.command = command
        self.__cause__ = exc


def grant_command(plugin: str, capabilities: list[str]) -> str:
    """The command that grants ``capabilities`` to ``plugin``, quoted for a shell."""
    import shlex  # only on this error path

    return " ".join(["conduit plugins grant", shlex.quote(plugin), *map(shlex.quote, capabilities)])


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """The choice closest to a mistyped ``word``, for a ``did you mean '...'?`` hint, or
    None when none is close (the one spelling rule for every such hint)."""
    import difflib  # only on error paths

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


class NotGranted(PluginLoadError):
    """A plugin asks for capabilities the user has not granted; it is not activated.

    ``missing`` lists them (as strings); the message names the grant command.
    """

    def __init__(self, plugin: str, missing: list[str], *, declined: bool = False) -> None:
        what = "declined" if declined else "not granted"
        super().__init__(
            plugin,
            f"capabilities {what}: {', '.join(missing)} "
            f"(run '{grant_command(plugin, missing)}' to allow "
            f"{'it' if len(missing) == 1 else 'them'})",
        )
        self.missing = missing


class NotConsented(NotGranted):
    """A plugin's inline dependencies (``dependencies``) are installed only with the
    user's consent, and this one has none for its current list (perhaps it also lacks
    capabilities: ``missing``). ``dependencies`` lists them; the message names the
    command that gives both."""

    def __init__(
        self,
        plugin: str,
        missing: list[str],
        dependencies: list[str],
        *,
        declined: bool = False,
    ) -> None:
        what = "declined" if declined else "not given"
        granted = "declined" if declined else "not granted"
        caps = f"capabilities {granted}: {', '.join(missing)}; " if missing else ""
        command = grant_command(plugin, ["--dependencies", *missing])
        PluginLoadError.__init__(
            self,
            plugin,
            f"{caps}consent to install its dependencies {what}: {', '.join(dependencies)} "
            f"(run '{command}' to allow {'them' if missing else 'it'})",
        )
        self.missing = missing
        self.dependencies = dependencies


class CapabilityDenied(PluginError):
    """The in-process guard stopped a plugin's operation that its grants do not cover.

    ``operation`` is what was tried ("reading", "connecting to", ...), ``target`` what
    on, ``capability`` the capability that would allow it.
    """

    def __init__(self, plugin: str, operation: str, target: str, capability: str) -> None:
        super().__init__(
            plugin,
            f"{operation} {target} is not granted "
            f"(run '{grant_command(plugin, [capability])}' to allow it)",
        )
        self.operation = operation
        self.target = target
        self.capability = capability


class HostError(PluginError):
    """The plugin's host process failed (crash, hang, protocol violation)."""

    exit_code = EXIT_PLUGIN_LOAD


class RemotePluginError(ConduitError):
    """An error raised by plugin code in the child, reported with its original message."""

    def __init__(self, message: str, *, hint: str | None, exit_code: int, trace: str) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code
        self.remote_traceback = trace


class SandboxDenied(PluginError):
    """The sandbox refused an operation the plugin's grants do not cover."""

    def __init__(self, plugin: str, what: str, capability: str) -> None:
        super().__init__(
            plugin,
            f"{what} needs '{capability}', which is not granted",
            hint=f"grant it with '{grant_command(plugin, [capability])}' if you trust the plugin",
        )
        self.capability = capability


class StoreError(ConduitError):
    """An install, uninstall, update or sync could not be done (the state was restored)."""


class HashMismatchError(StoreError):
    """A downloaded distribution does not match the sha256 recorded in the lock file."""
