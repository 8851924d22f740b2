"""The notes database of ``conduit know``: an embedded SQLite file in the plugin's data
directory.

- The schema is versioned with ``PRAGMA user_version``; :data:`MIGRATIONS` are applied in
  order, each in the same transaction as the version it sets, so a run that dies halfway
  leaves the previous version, never half of the next.
- WAL journal and a busy timeout: concurrent runs (two terminals, a script adding notes
  in a loop) wait for each other instead of failing with "database is locked".
- Every change is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``): after a kill -9
  the database holds the note entirely or not at all.
- Full-text search is an FTS5 index over the notes' text and tags, kept in step by
  triggers and ranked with bm25.

Imported only when a ``know`` command runs (``sqlite3`` is not free to import).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from conduit.sdk import ConduitError

FILENAME = "know.db"
BUSY_TIMEOUT_S = 30.0

#: ordered schema steps: MIGRATIONS[n] takes the schema from version n to n + 1
MIGRATIONS: tuple[str, ...] = (
    # 1: notes with their context, and their tags
    """
    CREATE TABLE notes (
        id INTEGER PRIMARY KEY,
        body TEXT NOT NULL CHECK (length(trim(body)) > 0),
        tags TEXT NOT NULL DEFAULT '',
        created TEXT NOT NULL,
        repo TEXT,
        branch TEXT,
        commit_id TEXT,
        directory TEXT
    );
    CREATE TABLE note_tags (
        note_id INTEGER NOT NULL REFERENCES notes(id) ON DELETE CASCADE,
        tag TEXT NOT NULL,
        PRIMARY KEY (note_id, tag)
    );
    CREATE INDEX note_tags_tag ON note_tags(tag);
    CREATE INDEX notes_created ON notes(created);
    """,
    # 2: a stable identity for export/import, an edit time, and the full-text index
    """
    ALTER TABLE notes ADD COLUMN uid TEXT;
    ALTER TABLE notes ADD COLUMN updated TEXT;
    UPDATE notes SET uid = lower(hex(randomblob(16))) WHERE uid IS NULL;
    CREATE UNIQUE INDEX notes_uid ON notes(uid);
    CREATE VIRTUAL TABLE notes_fts USING fts5(
        body, tags, content='notes', content_rowid='id',
        tokenize='porter unicode61 remove_diacritics 2'
    );
    CREATE TRIGGER notes_fts_insert AFTER INSERT ON notes BEGIN
        INSERT INTO notes_fts(rowid, body, tags) VALUES (new.id, new.body, new.tags);
    END;
    CREATE TRIGGER notes_fts_delete AFTER DELETE ON notes BEGIN
        INSERT INTO notes_fts(notes_fts, rowid, body, tags)
        VALUES ('delete', old.id, old.body, old.tags);
    END;
    CREATE TRIGGER notes_fts_update AFTER UPDATE OF body, tags ON notes BEGIN
        INSERT INTO notes_fts(notes_fts, rowid, body, tags)
        VALUES ('delete', old.id, old.body, old.tags);
        INSERT INTO notes_fts(rowid, body, tags) VALUES (new.id, new.body, new.tags);
    END;
    INSERT INTO notes_fts(notes_fts) VALUES ('rebuild');
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

_COLUMNS = "id, uid, body, tags, created, updated, repo, branch, commit_id, directory"
#: what a search snippet's matches are wrapped in (replaced by the caller)
MARK_START, MARK_END = "\x02", "\x03"


def now() -> str:
    """The current time, UTC, as stored: ``2025-01-31T09:15:02Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _row(row: sqlite3.Row) -> dict[str, Any]:
    note = {key: row[key] for key in row.keys()}  # noqa: SIM118 (Row is not a dict)
    note["commit"] = note.pop("commit_id", None)
    note["tags"] = note["tags"].split() if note.get("tags") else []
    return note


class Store:
    """One open connection to the notes database."""

    def __init__(self, data_dir: str) -> None:
        self.path = os.path.join(data_dir, FILENAME)
        try:
            self.db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise ConduitError(
                f"know: cannot open the notes database {self.path}: {exc}",
                hint="check that the directory exists and is writable",
            ) from None
        self.db.row_factory = sqlite3.Row
        try:
            self._prepare()
        except BaseException:
            self.db.close()
            raise

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- opening ---------------------------------------------------------------------------
    def _damaged(self, exc: sqlite3.Error) -> ConduitError:
        aside = self.path + ".damaged"
        return ConduitError(
            f"know: the notes database {self.path} is damaged ({exc}); move it aside "
            f"(mv {self.path} {aside}) and a new, empty one is created on the next run"
        )

    def _prepare(self) -> None:
        try:
            self.db.execute("PRAGMA foreign_keys = ON")
            if self.db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                # Persistent: only the first run of a new database switches it.
                self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA synchronous = NORMAL")  # WAL: durable at checkpoints
            self._migrate()
        except sqlite3.OperationalError as exc:
            if _is_locked(exc):
                raise self._locked() from None
            raise self._damaged(exc) from None
        except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed"
            raise self._damaged(exc) from None

    def _locked(self) -> ConduitError:
        return ConduitError(
            f"know: the notes database {self.path} stayed locked by another process for "
            f"{BUSY_TIMEOUT_S:g} s",
            hint="wait for the other 'conduit know' command to finish, then retry",
        )

    def _version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise ConduitError(
                f"know: the notes database {self.path} has schema version {version}, newer "
                f"than this plugin reads ({SCHEMA_VERSION}); upgrade Conduit "
                "(pip install -U conduit-devtool) to use it"
            )

    def _migrate(self) -> None:
        version = self._version()
        self._check_version(version)
        if version == SCHEMA_VERSION:
            return
        with self.transaction():
            version = self._version()  # another run may have migrated while we waited
            self._check_version(version)
            for step in range(version, SCHEMA_VERSION):
                for statement in _statements(MIGRATIONS[step]):
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {step + 1}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` if anything raised: the
        write lock is taken up front, so two writers never deadlock on an upgrade."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _is_locked(exc):
                raise self._locked() from None
            raise
        try:
            yield self.db
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    # -- notes -----------------------------------------------------------------------------
    def add(
        self,
        body: str,
        tags: Sequence[str],
        context: dict[str, str | None],
        *,
        uid: str | None = None,
        created: str | None = None,
        updated: str | None = None,
    ) -> int:
        """Insert one note (in the caller's transaction if one is open); return its id."""
        cur = self.db.execute(
            "INSERT INTO notes (uid, body, tags, created, updated, repo, branch, commit_id,"
            " directory) VALUES (coalesce(?, lower(hex(randomblob(16)))), ?, ?, ?, ?, ?, ?,"
            " ?, ?)",
            (
                uid,
                body,
                " ".join(tags),
                created or now(),
                updated,
                context.get("repo"),
                context.get("branch"),
                context.get("commit"),
                context.get("directory"),
            ),
        )
        note_id = int(cur.lastrowid or 0)
        self.db.executemany(
            "INSERT OR IGNORE INTO note_tags (note_id, tag) VALUES (?, ?)",
            [(note_id, tag) for tag in tags],
        )
        return note_id

    def get(self, note_id: int) -> dict[str, Any]:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM notes WHERE id = ?", (note_id,)).fetchone()
        if row is None:
            raise ConduitError(
                f"know: no note #{note_id}", hint="'conduit know list' shows the notes' ids"
            )
        return _row(row)

    def set_body(self, note_id: int, body: str) -> None:
        with self.transaction():
            self.db.execute(
                "UPDATE notes SET body = ?, updated = ? WHERE id = ?", (body, now(), note_id)
            )

    def remove(self, ids: Sequence[int]) -> None:
        with self.transaction():
            for note_id in ids:
                self.get(note_id)  # the whole command fails, and removes nothing, on a bad id
                self.db.execute("DELETE FROM notes WHERE id = ?", (note_id,))

    def has_uid(self, uid: str) -> bool:
        return self.db.execute("SELECT 1 FROM notes WHERE uid = ?", (uid,)).fetchone() is not None

    def _filters(self, tags: Sequence[str], repo: str | None) -> tuple[str, list[Any]]:
        where, args = [], []
        for tag in tags:
            where.append("notes.id IN (SELECT note_id FROM note_tags WHERE tag = ?)")
            args.append(tag)
        if repo:
            where.append("(notes.repo = ? OR notes.repo LIKE ? ESCAPE '\\')")
            escaped = repo.rstrip("/").replace("\\", "\\\\").replace("%", "\\%")
            args += [repo.rstrip("/"), "%/" + escaped.replace("_", "\\_")]
        return "".join(f" AND {w}" for w in where), args

    def notes(
        self, tags: Sequence[str] = (), repo: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Notes, newest first."""
        cond, args = self._filters(tags, repo)
        sql = f"SELECT {_COLUMNS} FROM notes WHERE 1{cond} ORDER BY created DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [_row(r) for r in self.db.execute(sql, args)]

    def search(
        self, query: str, tags: Sequence[str] = (), repo: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        """Notes matching ``query``, best first (bm25; a tag match weighs double), each with
        a ``snippet`` whose matches are wrapped in :data:`MARK_START`/:data:`MARK_END`."""
        cond, args = self._filters(tags, repo)
        columns = ", ".join(f"notes.{c.strip()}" for c in _COLUMNS.split(","))
        sql = (
            f"SELECT {columns}, snippet(notes_fts, 0, '{MARK_START}', '{MARK_END}', '…', 12)"
            " AS snippet, bm25(notes_fts, 1.0, 2.0) AS rank"
            " FROM notes_fts JOIN notes ON notes.id = notes_fts.rowid"
            f" WHERE notes_fts MATCH ?{cond} ORDER BY rank, notes.id DESC LIMIT ?"
        )
        literal = literal_query(query)
        if not literal:
            raise ConduitError(
                f"know: nothing to search for in {query!r}",
                hint="give a word or phrase: conduit know search 'deploy rollback'",
            )
        for attempt in (query, literal):
            try:
                rows = self.db.execute(sql, [attempt, *args, limit]).fetchall()
            except sqlite3.OperationalError as exc:
                error = str(exc)
                if attempt is query:
                    continue  # FTS5 syntax the user did not mean: search for the words
                raise ConduitError(
                    f"know: cannot search for {query!r}: {error}",
                    hint='put words in double quotes to search for them as written: "foo-bar"',
                ) from None
            return [_row(r) | {"snippet": r["snippet"], "rank": r["rank"]} for r in rows]
        raise AssertionError("unreachable: the literal query raised or returned")


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def literal_query(query: str) -> str:
    """``query`` as FTS5 phrases, one per word, so that ``foo-bar``, ``it's``, ``a.b`` or an
    unbalanced quote search for the text instead of being FTS5 syntax errors; a trailing
    ``*`` stays a prefix search."""
    phrases = []
    for word in query.replace('"', " ").split():
        star = word.endswith("*")
        word = word.rstrip("*")
        if word:
            phrases.append(f'"{word}"' + ("*" if star else ""))
    return " ".join(phrases)


def _statements(script: str) -> list[str]:
    """Split a migration into statements (``executescript`` would commit our transaction).
    ``sqlite3.complete_statement`` keeps a trigger's ``BEGIN ... END;`` together."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements
