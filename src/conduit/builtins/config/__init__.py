"""``conduit config ...``: find, read, check and change the config file.

Every change goes through :func:`conduit.config.update_config`: tomlkit keeps the user's
comments and layout, the result is checked against the schema before it is written, and
it is written atomically under the config's lock. These commands work with a config that
does not validate (the CLI lets them run after one warning line), since they are how it
gets fixed.
"""

from __future__ import annotations

import os
import sys
import tomllib
from typing import Any

import click

from conduit.config import (
    FIX_HINT,
    check,
    read_data,
    read_settings,
    schema_at,
    unknown_key,
    update_config,
)
from conduit.errors import ConduitError, ConfigError, UsageError
from conduit.sdk import Plugin, PluginContext

__all__ = ["ConfigPlugin"]


def _config_file() -> str:
    from conduit.paths import resolve

    return resolve().config_file


def _keys(key: str) -> list[str]:
    """``store.index-url`` -> ``["store", "index-url"]``, checked against the schema
    (``unknown key 'disabeld' in [plugins] (did you mean 'disabled'?)``)."""
    keys = key.split(".")
    if not key or "" in keys:
        raise UsageError(f"'{key}' is not a key", hint="write it dotted: store.index-url")
    try:
        schema_at(keys)
    except KeyError as exc:
        raise UsageError(unknown_key(keys, exc.args[0]), hint="see 'conduit config show'") from None
    return keys


def _value(text: str) -> Any:
    """A TOML value when ``text`` is one (``true``, ``3``, ``["a", "b"]``), else the string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _format(value: Any) -> str:
    """A value as ``get`` prints it: a string as is (control characters escaped, as
    ``show`` does), anything else as TOML."""
    import tomlkit

    if isinstance(value, str):
        from conduit.text import inert

        return inert(value)
    if isinstance(value, dict):
        return str(tomlkit.dumps(value)).rstrip("\n")
    return str(tomlkit.item(value).as_string())


@click.group("config")
def config_cmd() -> None:
    """Find, show, check and change the config file."""


@config_cmd.command("path")
def path_cmd() -> None:
    """Print where the config file is (it may not exist yet)."""
    click.echo(_config_file())


@config_cmd.command("show")
def show_cmd() -> None:
    """Print the config file as it is, comments included."""
    from conduit.text import inert

    path = _config_file()
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        click.echo(f"# {path} does not exist: every setting has its default", err=True)
        return
    click.echo(inert(text, keep_newlines=True), nl=False)


@config_cmd.command("get")
@click.argument("key")
def get_cmd(key: str) -> None:
    """Print the value of KEY (dotted: store.index-url), or its default when unset."""
    keys = _keys(key)
    node: Any = read_data(_config_file())
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            break
        node = node[k]
    else:
        click.echo(_format(node))
        return
    import msgspec

    from conduit.config import Settings

    default: Any = msgspec.to_builtins(Settings())
    for k in keys:
        if not isinstance(default, dict) or k not in default:
            raise ConduitError(
                f"'{key}' is not set", hint=f"set it with 'conduit config set {key} VALUE'"
            )
        default = default[k]
    click.echo(_format(default))


@config_cmd.command("set")
@click.argument("key")
@click.argument("value")
def set_cmd(key: str, value: str) -> None:
    """Set KEY to VALUE: a TOML value when it parses as one (true, 3, ["a", "b"]), else a
    string. Refused, and nothing written, when the config would not be valid."""
    import tomlkit

    keys = _keys(key)
    parsed = _value(value)

    def change(doc: Any) -> None:
        node = doc
        for k in keys[:-1]:
            if k not in node:
                node[k] = tomlkit.table(is_super_table=True)
            node = node[k]
            if not isinstance(node, dict):
                raise UsageError(f"'{key}': '{k}' is a value, not a table")
        node[keys[-1]] = parsed

    update_config(_config_file(), change)
    click.echo(f"{key} = {tomlkit.item(parsed).as_string()}")


@config_cmd.command("unset")
@click.argument("key")
def unset_cmd(key: str) -> None:
    """Remove KEY from the config file (it takes its default again)."""
    keys = key.split(".")

    def change(doc: Any) -> None:
        nodes = [doc]
        for k in keys[:-1]:
            node = nodes[-1].get(k)
            if not isinstance(node, dict):
                break
            nodes.append(node)
        if len(nodes) < len(keys) or keys[-1] not in nodes[-1]:
            _keys(key)  # an unknown key says so, with a suggestion
            raise ConduitError(f"'{key}' is not set", hint="see 'conduit config show'")
        del nodes[-1][keys[-1]]
        # a table left empty goes too: no bare '[plugins]' header left behind
        for parent, k, node in reversed(list(zip(nodes, keys, nodes[1:], strict=False))):
            if node:
                break
            del parent[k]

    update_config(_config_file(), change)
    click.echo(f"Removed {key}.")


@config_cmd.command("validate")
def validate_cmd() -> None:
    """Check the config file against the schema; exit 4 with the problem when it is wrong."""
    path = _config_file()
    if not os.path.exists(path):
        click.echo(f"{path}: no config file; every setting has its default")
        return
    read_settings(path)
    click.echo(f"{path}: valid")


def _editor() -> list[str]:
    import shlex
    import shutil

    for name in ("VISUAL", "EDITOR"):
        value = os.environ.get(name, "").strip()
        if value:
            return shlex.split(value)
    for fallback in ("editor", "vi", "nano"):
        if shutil.which(fallback):
            return [fallback]
    raise UsageError("no editor found", hint="set $VISUAL or $EDITOR (export EDITOR=nano)")


@config_cmd.command("edit")
def edit_cmd() -> None:
    """Open the config file in $VISUAL or $EDITOR, then check it.

    The editor works on a copy; the result replaces the file atomically, under its lock.
    When it does not validate, a terminal is asked whether to edit again; otherwise the
    file is kept as written and the command exits 4.
    """
    import subprocess
    import tempfile

    from conduit.fs import atomic_write, locked

    path = _config_file()
    editor = _editor()
    try:
        with open(path, "rb") as f:
            before = f.read()
    except FileNotFoundError:
        before = b""
    with tempfile.TemporaryDirectory(prefix="conduit-config-") as tmp:
        copy = os.path.join(tmp, "config.toml")
        with open(copy, "wb") as f:
            f.write(before)
        while True:
            try:
                code = subprocess.call([*editor, copy])
            except OSError as exc:
                raise UsageError(
                    f"cannot run the editor '{editor[0]}': {exc.strerror}",
                    hint="set $VISUAL or $EDITOR to an editor on PATH",
                ) from None
            if code != 0:
                raise ConduitError(
                    f"the editor '{editor[0]}' exited with {code}; the config is unchanged"
                )
            with open(copy, "rb") as f:
                after = f.read()
            problem = None
            try:
                check(path, after)
            except ConfigError as exc:
                problem = exc
                click.echo(f"error: {exc.message}", err=True)
                if sys.stdin.isatty() and click.confirm(
                    "Edit it again?", default=False, prompt_suffix=" "
                ):
                    continue
            if after != before:
                with locked(path):
                    atomic_write(path, after, mode=0o600)
            if problem is not None:
                raise ConfigError(
                    problem.path, "kept as written, but it is not valid", hint=FIX_HINT
                )
            click.echo(f"{path}: valid" if after != before else f"{path}: unchanged")
            return


class ConfigPlugin(Plugin):
    """The ``config`` command group."""

    def boot(self, ctx: PluginContext) -> None:
        ctx.register_command(config_cmd)
