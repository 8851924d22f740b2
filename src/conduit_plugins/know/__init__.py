"""``conduit know``: capture what you learn, with where you learnt it, and find it again.

Notes live in an SQLite database in the plugin's data directory (:mod:`._store`); each
records the repository, branch, commit and directory it was written in (:mod:`._context`).
``search`` ranks with SQLite's FTS5 (bm25) and shows highlighted snippets.

Importing this module imports only Click (which a host has already) and the SDK: the
database, git and JSON code load when a command runs.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import click

from conduit.sdk import ConduitError, Plugin, PluginContext

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from conduit_plugins.know._store import Store

__all__ = ["KnowPlugin"]

_FORMAT_VERSION = 1


def _note_id(value: str) -> int:
    text = value.removeprefix("#")
    if not text.isdigit():
        raise ConduitError(
            f"know: {value!r} is not a note id",
            hint="ids are the numbers 'conduit know list' shows, e.g. 12 or #12",
        )
    return int(text)


def _tags(values: Sequence[str]) -> list[str]:
    """Tags as stored: without a leading ``#``, lower case, each once, in order;
    ``--tag a,b`` is two tags."""
    tags: list[str] = []
    for value in values:
        for part in value.replace(",", " ").split():
            tag = part.removeprefix("#").lower()
            if tag and tag not in tags:
                tags.append(tag)
    return tags


def _safe(text: str) -> str:
    """``text`` for a terminal: control and invisible format characters (an escape
    sequence pasted into a note, a bidi override) shown as ``\\x1b``/``\\u202e``."""
    if text.isprintable():
        return text
    import unicodedata

    out = []
    for ch in text:
        if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp"):
            out.append(ch)
        else:
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
    return "".join(out)


def _when(stamp: str | None) -> str:
    """A stored UTC time in local time, to the minute."""
    if not stamp:
        return ""
    from datetime import datetime

    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")


def _where(note: dict[str, Any]) -> str:
    """``repo@branch`` (the repository's directory name), or the directory's name."""
    if note.get("repo"):
        name = str(os.path.basename(note["repo"]))
        if note.get("branch"):
            return f"{name}@{note['branch']}"
        if note.get("commit"):
            return f"{name}@{note['commit'][:8]}"
        return name
    return os.path.basename(note.get("directory") or "") or "-"


def _summary(note: dict[str, Any], body: bool = True) -> str:
    """One line: id, time, where, the first line of the text (``body``), tags."""
    first = (note["body"].strip().splitlines() or [""])[0] if body else ""
    tags = "".join(f" #{t}" for t in note["tags"])
    line = f"#{note['id']}  {_when(note['created'])}  {_where(note)}"
    return f"{line}  {first}{tags}" if first else f"{line}{tags}"


def _dump(data: Any) -> None:
    import json

    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _public(note: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "uid", "body", "tags", "created", "updated", "repo", "branch", "commit")
    return {k: note.get(k) for k in (*keys, "directory")}


def make_group(ctx: PluginContext) -> click.Group:
    """The ``know`` command group; its commands open the database in ``ctx.data_dir``."""

    def store() -> Store:
        from conduit_plugins.know._store import Store

        return Store(ctx.data_dir)

    @click.group("know")
    def know() -> None:
        """Capture notes with their context and find them again (SQLite full-text search)."""

    repo_option = click.option(
        "--repo", metavar="REPO", help="Only notes from this repository (its path or name)."
    )

    def tag_option(help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return click.option("--tag", "-t", "tags", multiple=True, metavar="TAG", help=help)

    json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")

    @know.command("add")
    @click.argument("text", nargs=-1, required=True)
    @tag_option("Tag the note (repeat, or separate with commas).")
    def add(text: tuple[str, ...], tags: tuple[str, ...]) -> None:
        """Record a note with its repository, branch, commit and directory.

        TEXT is the note (several words are joined), or - to read it from stdin."""
        from conduit_plugins.know._context import capture

        body = sys.stdin.read() if text == ("-",) else " ".join(text)
        if not body.strip():
            raise ConduitError(
                "know: the note is empty",
                hint="write what to remember: conduit know add 'deploys need VPN on'",
            )
        context = capture()
        with store() as db, db.transaction():
            note_id = db.add(body.strip("\n"), _tags(tags), context)
            note = db.get(note_id)
        click.echo(f"recorded note #{note_id} ({_safe(_where(note))})")

    @know.command("search")
    @click.argument("query", nargs=-1, required=True)
    @tag_option("Only notes with this tag (repeat for all of several).")
    @repo_option
    @click.option("--limit", "-n", type=click.IntRange(1), default=20, show_default=True)
    @json_option
    def search(
        query: tuple[str, ...], tags: tuple[str, ...], repo: str | None, limit: int, as_json: bool
    ) -> None:
        """Full-text search, best match first. QUERY is words (all must match), "a
        phrase", prefix*, or FTS5 syntax (deploy OR release, tags:ci)."""
        from conduit_plugins.know._store import MARK_END, MARK_START

        with store() as db:
            notes = db.search(" ".join(query), _tags(tags), repo, limit)
        if as_json:
            for note in notes:
                note["snippet"] = note["snippet"].replace(MARK_START, "[").replace(MARK_END, "]")
            _dump([_public(n) | {"snippet": n["snippet"], "rank": n["rank"]} for n in notes])
            return
        if not notes:
            click.echo("no notes match", err=True)
            return
        # Conduit's colour policy, as Click carries it (--color, NO_COLOR, FORCE_COLOR)
        color = click.get_current_context().color
        color = sys.stdout.isatty() and not os.environ.get("NO_COLOR") if color is None else color
        start, end = ("\x1b[1;33m", "\x1b[0m") if color else ("[", "]")
        for note in notes:
            # Escaped piece by piece: the marks around the matches are control characters.
            pieces = " ".join(note["snippet"].split()).replace(MARK_END, MARK_START)
            snippet = "".join(
                _safe(piece) if i % 2 == 0 else start + _safe(piece) + end
                for i, piece in enumerate(pieces.split(MARK_START))
            )
            click.echo(_safe(_summary(note, body=False)) + "\n    " + snippet)

    @know.command("list")
    @tag_option("Only notes with this tag (repeat for all of several).")
    @repo_option
    @click.option("--limit", "-n", type=click.IntRange(1), default=None, help="At most N notes.")
    @json_option
    def list_(tags: tuple[str, ...], repo: str | None, limit: int | None, as_json: bool) -> None:
        """List notes, newest first."""
        with store() as db:
            notes = db.notes(_tags(tags), repo, limit)
        if as_json:
            _dump([_public(n) for n in notes])
            return
        if not notes:
            click.echo("no notes", err=True)
        for note in notes:
            click.echo(_safe(_summary(note)))

    @know.command("show")
    @click.argument("note_id", metavar="ID")
    @json_option
    def show(note_id: str, as_json: bool) -> None:
        """Show a note with its context."""
        with store() as db:
            note = db.get(_note_id(note_id))
        if as_json:
            _dump(_public(note))
            return
        lines = [f"note #{note['id']}  {_when(note['created'])}"]
        if note.get("updated"):
            lines[0] += f"  (edited {_when(note['updated'])})"
        if note.get("repo"):
            lines.append(f"repository: {note['repo']}")
            head = note.get("branch") or "(detached HEAD)"
            commit = f" @ {note['commit'][:12]}" if note.get("commit") else " (no commits)"
            lines.append(f"branch:     {head}{commit}")
        lines.append(f"directory:  {note.get('directory') or '-'}")
        if note["tags"]:
            lines.append("tags:       " + ", ".join(note["tags"]))
        click.echo(_safe("\n".join(lines)) + "\n\n" + _safe(note["body"]))

    @know.command("edit")
    @click.argument("note_id", metavar="ID")
    def edit(note_id: str) -> None:
        """Edit a note's text in $VISUAL or $EDITOR."""
        number = _note_id(note_id)
        with store() as db:
            before = db.get(number)["body"]
            after = _run_editor(ctx.data_dir, number, before)
            if after.strip() == before.strip():
                click.echo(f"note #{number} unchanged")
                return
            if not after.strip():
                raise ConduitError(
                    f"know: note #{number} left empty; not saved",
                    hint=f"to delete it: conduit know rm {number}",
                )
            db.get(number)  # removed while the editor was open?
            db.set_body(number, after.strip("\n"))
        click.echo(f"saved note #{number}")

    @know.command("rm")
    @click.argument("note_ids", metavar="ID...", nargs=-1, required=True)
    def rm(note_ids: tuple[str, ...]) -> None:
        """Delete notes."""
        ids = [_note_id(n) for n in note_ids]
        with store() as db:
            db.remove(ids)
        click.echo("removed " + ", ".join(f"#{n}" for n in ids))

    @know.command("export")
    @click.option(
        "--format",
        "fmt",
        type=click.Choice(["markdown", "json"]),
        default="markdown",
        show_default=True,
    )
    @tag_option("Only notes with this tag.")
    @repo_option
    def export(fmt: str, tags: tuple[str, ...], repo: str | None) -> None:
        """Print every note as Markdown or JSON (JSON round-trips through import)."""
        with store() as db:
            notes = list(reversed(db.notes(_tags(tags), repo)))  # oldest first
        if fmt == "json":
            fields = [_public(n) for n in notes]
            for note in fields:
                del note["id"]  # ids are local to a database; uid is the identity
            _dump({"format": "conduit-know", "version": _FORMAT_VERSION, "notes": fields})
            return
        click.echo("# Notes\n")
        for note in notes:
            # Escaped like every other view (an imported note may hold an escape
            # sequence); JSON is the format that round-trips every character.
            click.echo(_safe(f"## #{note['id']} · {note['created']}\n"))
            if note["tags"]:
                click.echo(_safe("- tags: " + ", ".join(note["tags"])))
            if note.get("repo"):
                at = " @ ".join(x for x in (note.get("branch"), note.get("commit")) if x)
                click.echo(_safe(f"- repository: {note['repo']}" + (f" ({at})" if at else "")))
            click.echo(_safe(f"- directory: {note.get('directory') or '-'}\n"))
            click.echo(_safe(note["body"].rstrip("\n") + "\n"))

    @know.command("import")
    @click.argument("file", metavar="FILE")
    def import_(file: str) -> None:
        """Add the notes of a JSON export (FILE, or - for stdin); notes already present
        are skipped."""
        notes = _read_export(file)
        added = skipped = 0
        with store() as db, db.transaction():
            for note in notes:
                if db.has_uid(note["uid"]):
                    skipped += 1
                    continue
                db.add(
                    note["body"],
                    note["tags"],
                    note,
                    uid=note["uid"],
                    created=note["created"],
                    updated=note["updated"],
                )
                added += 1
        click.echo(f"imported {added} notes, skipped {skipped} already present")

    return know


def _run_editor(data_dir: str, number: int, text: str) -> str:
    """Open ``text`` in the user's editor; return what they saved."""
    import shlex
    import subprocess
    import tempfile

    command = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise ConduitError(f"know: cannot read the editor command {command!r}: {exc}") from None
    # In the data directory: the plugin may write there without another grant.
    fd, path = tempfile.mkstemp(prefix=f"note-{number}-", suffix=".md", dir=data_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text if text.endswith("\n") else text + "\n")
        try:
            code = subprocess.run([*argv, path], check=False).returncode
        except OSError as exc:
            raise ConduitError(
                f"know: cannot run the editor {argv[0]!r}: {exc.strerror}",
                hint="set VISUAL or EDITOR to an editor on your PATH, e.g. EDITOR=nano",
            ) from None
        if code != 0:
            raise ConduitError(f"know: the editor {argv[0]!r} exited with {code}; note unchanged")
        with open(path, encoding="utf-8") as f:
            return f.read()
    finally:
        os.remove(path)


def _read_export(file: str) -> list[dict[str, Any]]:
    """The notes of a ``know export --format json`` file, checked."""
    import hashlib
    import json

    name = "stdin" if file == "-" else file
    try:
        if file == "-":
            data = json.load(sys.stdin)
        else:
            with open(file, encoding="utf-8") as f:
                data = json.load(f)
    except OSError as exc:
        raise ConduitError(f"know: cannot read {name}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConduitError(
            f"know: {name} is not JSON ({exc})",
            hint="import reads what 'conduit know export --format json' writes",
        ) from None

    def bad(what: str) -> ConduitError:
        return ConduitError(
            f"know: {name}: {what}",
            hint="import reads what 'conduit know export --format json' writes",
        )

    if not isinstance(data, dict) or data.get("format") != "conduit-know":
        raise bad('not a know export (no "format": "conduit-know")')
    if not isinstance(data.get("version"), int) or data["version"] > _FORMAT_VERSION:
        raise bad(f"export version {data.get('version')!r} is newer than this plugin reads")
    if not isinstance(data.get("notes"), list):
        raise bad('"notes" is not a list')
    notes = []
    for i, raw in enumerate(data["notes"]):
        if not isinstance(raw, dict) or not isinstance(raw.get("body"), str):
            raise bad(f'notes[{i}] has no text ("body")')
        if not raw["body"].strip():
            raise bad(f"notes[{i}] is empty")
        strings = ("uid", "created", "updated", "repo", "branch", "commit", "directory")
        for key in strings:
            if raw.get(key) is not None and not isinstance(raw[key], str):
                raise bad(f"notes[{i}].{key} is not a string")
        tags = raw.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise bad(f"notes[{i}].tags is not a list of strings")
        note = {key: raw.get(key) for key in strings}
        note["body"] = raw["body"]
        note["tags"] = _tags(tags)
        note["created"] = note["created"] or "1970-01-01T00:00:00Z"
        # Without a uid (written by hand), the text and time are the note's identity.
        digest = hashlib.sha256(f"{note['created']}\0{note['body']}".encode()).hexdigest()
        note["uid"] = note["uid"] or digest[:32]
        notes.append(note)
    return notes


class KnowPlugin(Plugin):
    """Knowledge capture: ``conduit know add/search/list/show/edit/rm/export/import``."""

    def boot(self, ctx: PluginContext) -> None:
        ctx.register_command(make_group(ctx))
