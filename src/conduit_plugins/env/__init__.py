"""``conduit env``: check, compare, read and change dotenv files without showing secrets.

The dotenv syntax people write: ``KEY=value``, ``export KEY=value``, comments (whole
lines, and `` # ...`` after an unquoted value), blank lines, empty values, single quotes
(literal), double quotes (``\\n``, ``\\"``, ``\\\\`` escapes; may span lines). A line that
is none of these is an error naming ``file:line``. Values are masked unless ``--show``;
``set`` rewrites only the line of its key and keeps every other byte of the file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import click

from conduit.sdk import ConduitError, Plugin, PluginContext

__all__ = ["Entry", "EnvPlugin", "parse", "set_value"]

_ASSIGNMENT = re.compile(r"[ \t]*(export[ \t]+)?([A-Za-z_][A-Za-z0-9_.]*)[ \t]*=[ \t]*")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\", "$": "$"}
MASK = "********"


@dataclass
class Entry:
    """One assignment: its key and value, and where it is (lines ``first``..``last``,
    1-based, inclusive) with the quote it used (``'``, ``"`` or ``""``) and its prefix
    (``export `` or ``""``)."""

    key: str
    value: str
    first: int
    last: int
    quote: str
    prefix: str


def _malformed(path: str, line: int, why: str) -> ConduitError:
    return ConduitError(
        f"{path}:{line}: {why}",
        hint="lines are KEY=value, export KEY=value, '# comment' or blank",
    )


def parse(text: str, path: str = ".env") -> list[Entry]:
    """The assignments of a dotenv file, in order (a key set twice appears twice)."""
    lines = text.split("\n")
    entries: list[Entry] = []
    n = 0
    while n < len(lines):
        line, first = lines[n].removesuffix("\r"), n + 1
        n += 1
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = _ASSIGNMENT.match(line)
        if m is None:
            key = stripped.partition("=")[0].strip()
            why = (
                f"'{key}' is not a valid variable name"
                if "=" in stripped
                else f"expected KEY=value, found '{stripped[:40]}'"
            )
            raise _malformed(path, first, why)
        prefix, key, rest = m.group(1) or "", m.group(2), line[m.end() :]
        quote = rest[:1] if rest[:1] in ("'", '"') else ""
        if not quote:
            # an unquoted value ends at a comment (a '#' after whitespace)
            value = re.split(r"[ \t]#", rest, maxsplit=1)[0].strip()
            if value.startswith("#"):
                value = ""
            entries.append(Entry(key, value, first, first, "", prefix))
            continue
        body, i = rest, 1
        chars: list[str] = []
        while True:
            if i >= len(body):
                if n >= len(lines):
                    raise _malformed(path, first, f"the {quote}-quoted value of {key} never ends")
                chars.append("\n")
                body, i = lines[n].removesuffix("\r"), 0
                n += 1
                continue
            c = body[i]
            if c == quote:
                break
            if c == "\\" and quote == '"' and i + 1 < len(body):
                nxt = body[i + 1]
                chars.append(_ESCAPES.get(nxt, "\\" + nxt))
                i += 2
                continue
            chars.append(c)
            i += 1
        after = body[i + 1 :].strip()
        if after and not after.startswith("#"):
            raise _malformed(path, n, f"unexpected text after the quoted value of {key}")
        entries.append(Entry(key, "".join(chars), first, n, quote, prefix))
    return entries


def _read(path: str, *, missing_ok: bool = False) -> tuple[str, list[Entry]]:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except FileNotFoundError:
        if missing_ok:
            return "", []
        raise ConduitError(f"{path}: no such file", hint="check the path") from None
    except UnicodeDecodeError:
        raise ConduitError(f"{path}: not UTF-8 text", hint="save it as UTF-8") from None
    except OSError as exc:
        raise ConduitError(f"{path}: cannot read it: {exc.strerror}") from None
    return text, parse(text, path)


def _values(entries: list[Entry]) -> dict[str, str]:
    return {e.key: e.value for e in entries}  # the last assignment wins, as in a shell


def _show(value: str, show: bool) -> str:
    if show:
        return value
    return MASK if value else "(empty)"


def _quote(value: str, quote: str) -> str:
    """``value`` written with the quote the line had (or the one it needs)."""
    if quote == "'" and "'" not in value and "\n" not in value:
        return f"'{value}'"
    if quote == "" and re.fullmatch(r"[^\s'\"#\\]*", value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def set_value(text: str, entries: list[Entry], key: str, value: str) -> str:
    """``text`` with ``key`` set to ``value``: its last assignment's lines replaced (its
    ``export`` and quoting kept), or a line appended; nothing else changes."""
    mine = [e for e in entries if e.key == key]
    if not mine:
        sep = "" if not text or text.endswith("\n") else "\n"
        return f"{text}{sep}{key}={_quote(value, '')}\n"
    e = mine[-1]
    lines = text.split("\n")
    old_first = lines[e.first - 1]
    old_last = lines[e.last - 1]
    indent = old_first[: len(old_first) - len(old_first.lstrip())]
    # keep a comment after the value, and a \r line ending
    tail = ""
    if e.quote:
        close = old_last.rfind(e.quote)
        tail = old_last[close + 1 :].rstrip("\r")
    else:
        m = re.search(r"[ \t]#.*", old_last.rstrip("\r"))
        tail = m.group(0) if m else ""
    cr = "\r" if old_last.endswith("\r") else ""
    new = f"{indent}{e.prefix}{key}={_quote(value, e.quote)}{tail}{cr}"
    return "\n".join([*lines[: e.first - 1], new, *lines[e.last :]])


def _atomic_write(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it, renamed over it:
    a reader sees the old file or the new one, never half of one. Keeps its mode."""
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o600  # a new .env holds secrets
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# -- commands -------------------------------------------------------------------------------
_FILE = click.option(
    "--file", "-f", "path", default=".env", show_default=True, help="The dotenv file."
)
_SHOW = click.option("--show", is_flag=True, help="Print values instead of masking them.")


@click.group("env")
def env_group() -> None:
    """Check, compare, read and change dotenv files (.env); values masked."""


@env_group.command("check")
@_FILE
@click.option(
    "--example", default=".env.example", show_default=True, help="The file listing the keys."
)
def check_cmd(path: str, example: str) -> None:
    """Compare .env with .env.example; exit 1 when a key is missing from either."""
    _, wanted = _read(example)
    if not os.path.exists(path):
        raise ConduitError(f"{path}: no such file", hint=f"create it: cp {example} {path}")
    _, have = _read(path)
    need, got = _values(wanted), _values(have)
    missing = [k for k in need if k not in got]
    extra = [k for k in got if k not in need]
    if missing:
        click.echo(f"missing from {path}: {', '.join(missing)}")
    if extra:
        click.echo(f"not in {example}: {', '.join(extra)}")
    if missing or extra:
        raise SystemExit(1)
    click.echo(f"{path} has every key of {example} ({len(need)}), and no other")


@env_group.command("diff")
@click.argument("a")
@click.argument("b")
@_SHOW
def diff_cmd(a: str, b: str, show: bool) -> None:
    """Keys only in A (-), only in B (+), and with different values (~); exit 1 if any."""
    va, vb = _values(_read(a)[1]), _values(_read(b)[1])
    lines = [f"- {k}" for k in va if k not in vb]
    lines += [f"+ {k}" for k in vb if k not in va]
    for k in va:
        if k in vb and va[k] != vb[k]:
            if show:
                lines.append(f"~ {k}: {va[k]!r} -> {vb[k]!r}")
            else:
                lines.append(f"~ {k}: the values differ")
    for line in lines:
        click.echo(line)
    if lines:
        raise SystemExit(1)
    click.echo(f"{a} and {b} have the same keys and values")


@env_group.command("get")
@click.argument("key")
@_FILE
@_SHOW
def get_cmd(key: str, path: str, show: bool) -> None:
    """Print KEY's value (masked unless --show)."""
    values = _values(_read(path)[1])
    if key not in values:
        raise ConduitError(f"{path}: no variable {key}", hint=f"conduit env set {key} VALUE")
    click.echo(_show(values[key], show))


@env_group.command("set")
@click.argument("key")
@click.argument("value")
@_FILE
def set_cmd(key: str, value: str, path: str) -> None:
    """Set KEY to VALUE, keeping every other line, comment and quote as it was."""
    if not _KEY.fullmatch(key):
        raise ConduitError(
            f"'{key}' is not a valid variable name",
            hint="letters, digits, _ and ., not first a digit",
        )
    text, entries = _read(path, missing_ok=True)
    existed = any(e.key == key for e in entries)
    _atomic_write(path, set_value(text, entries, key, value))
    click.echo(f"{'updated' if existed else 'added'} {key} in {path}")


class EnvPlugin(Plugin):
    """``conduit env check|diff|get|set``."""

    def boot(self, ctx: PluginContext) -> None:
        ctx.register_command(env_group)
