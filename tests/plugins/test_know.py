"""The first-party ``know`` plugin (src/conduit_plugins/know): notes with their git context
in an SQLite database, searched with FTS5. Run through the real CLI, in-process and as
separate ``python -m conduit`` processes, with ``conduit.testing``."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conduit.testing import Conduit, Result
from conduit_plugins.know._store import MIGRATIONS, SCHEMA_VERSION

GRANTS = [
    "process:execute:git",
    "env:read:VISUAL",
    "env:read:EDITOR",
    "filesystem:read:${workspace}",
]


def git(*args: str, cwd: Path) -> str:
    proc = subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, timeout=60
    )
    return proc.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repository with one commit on ``main``, as the current directory."""
    path = tmp_path / "webapp"
    path.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    for var, value in {
        "GIT_AUTHOR_NAME": "A",
        "GIT_AUTHOR_EMAIL": "a@example.com",
        "GIT_COMMITTER_NAME": "A",
        "GIT_COMMITTER_EMAIL": "a@example.com",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }.items():
        monkeypatch.setenv(var, value)
    git("init", "-q", "-b", "main", cwd=path)
    (path / "README").write_text("hi\n")
    git("add", "README", cwd=path)
    git("commit", "-q", "-m", "first", cwd=path)
    monkeypatch.chdir(path)
    return path


@pytest.fixture
def kit(conduit_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Conduit:
    """Conduit with ``know`` granted what it requests (explicitly, in the config)."""
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.delenv("EDITOR", raising=False)
    conduit = Conduit(conduit_home, tmp_path / "kit", monkeypatch)
    conduit.configure(grants())
    return conduit


def grants(*extra: str) -> str:
    return "[grants]\nknow = " + json.dumps([*GRANTS, *extra]) + "\n"


def db_path(kit: Conduit) -> Path:
    return kit.home / "state" / "plugins" / "know" / "know.db"


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.stderr
    return result.stdout


def one_line_error(result: Result, *fragments: str) -> str:
    """The command failed with exit 1 and an ``error: know: ...`` line (and at most a
    hint), no traceback."""
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert lines and lines[0].startswith("error: "), result.stderr
    assert len(lines) <= 2 and all(ln.startswith(("error: ", "hint: ")) for ln in lines), lines
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def notes(kit: Conduit, *args: str) -> list[dict]:
    return json.loads(ok(kit.run("know", "list", "--json", *args)))  # type: ignore[no-any-return]


def editor(tmp_path: Path, script: str) -> Path:
    """An executable "editor": a Python script run with the note's file as argv[1]."""
    path = tmp_path / "fake-editor"
    path.write_text(f"#!{sys.executable}\nimport sys\npath = sys.argv[-1]\n{script}\n")
    path.chmod(0o755)
    return path


# -- the round trip ------------------------------------------------------------------------


def test_round_trip(kit: Conduit, repo: Path, tmp_path: Path, monkeypatch) -> None:
    head = git("rev-parse", "HEAD", cwd=repo)
    assert "recorded note #1 (webapp@main)" in ok(
        kit.run("know", "add", "the", "foo-bar", "deploy", "needs", "the", "VPN", "--tag", "Ops")
    )
    (repo / "sub").mkdir()
    monkeypatch.chdir(repo / "sub")
    ok(kit.run("know", "add", "rotate the staging certificates", "-t", "ops,certs"))
    monkeypatch.chdir(tmp_path)  # outside any repository: just the directory
    ok(kit.run("know", "add", "buy milk"))

    listed = notes(kit)
    assert [n["body"] for n in listed] == [
        "buy milk",
        "rotate the staging certificates",
        "the foo-bar deploy needs the VPN",
    ]
    first = listed[2]
    assert (first["repo"], first["branch"], first["commit"]) == (str(repo), "main", head)
    assert first["directory"] == str(repo) and first["tags"] == ["ops"]
    assert listed[1]["directory"] == str(repo / "sub") and listed[1]["tags"] == ["ops", "certs"]
    assert listed[0]["repo"] is None and listed[0]["directory"] == str(tmp_path)

    # search: ranked, snippets with the match marked, filters, FTS5 syntax and plain text
    out = ok(kit.run("know", "search", "deploy"))
    assert out.splitlines()[1].strip() == "the foo-bar [deploy] needs the VPN"
    assert "[foo-bar]" in ok(kit.run("know", "search", "foo-bar"))  # not "no such column"
    assert [n["id"] for n in json.loads(ok(kit.run("know", "search", "ops", "--json")))] == [2, 1]
    found = json.loads(ok(kit.run("know", "search", "the", "--tag", "certs", "--json")))
    assert [n["id"] for n in found] == [2]
    found = json.loads(ok(kit.run("know", "search", "the OR milk", "--repo", "webapp", "--json")))
    assert sorted(n["id"] for n in found) == [1, 2]
    assert json.loads(ok(kit.run("know", "search", "milk", "--repo", str(repo), "--json"))) == []
    found = json.loads(ok(kit.run("know", "search", "cert*", "--json")))
    assert [n["id"] for n in found] == [2]
    assert "[certificates]" in found[0]["snippet"]
    assert ok(kit.run("know", "search", "it's \"unbalanced", "--json")) == "[]\n"
    assert [n["id"] for n in notes(kit, "--tag", "ops", "--limit", "1")] == [2]

    shown = ok(kit.run("know", "show", "#1"))
    assert f"repository: {repo}\nbranch:     main @ {head[:12]}\n" in shown
    assert shown.endswith("\n\nthe foo-bar deploy needs the VPN\n")

    # edit: $EDITOR gets the text in a file; a change is saved and re-indexed
    fake = editor(
        tmp_path, "text = open(path).read()\nopen(path, 'w').write(text.replace('VPN', 'bastion'))"
    )
    kit.configure(grants(f"process:execute:{fake}"))
    monkeypatch.setenv("EDITOR", str(fake))
    assert ok(kit.run("know", "edit", "1")) == "saved note #1\n"
    assert "[bastion]" in ok(kit.run("know", "search", "bastion"))
    assert ok(kit.run("know", "search", "VPN", "--json")) == "[]\n"
    assert json.loads(ok(kit.run("know", "show", "1", "--json")))["updated"]
    assert ok(kit.run("know", "edit", "1")) == "note #1 unchanged\n"  # nothing to replace
    assert not list(db_path(kit).parent.glob("note-*"))  # the temporary file is gone

    # export/import: JSON round-trips, duplicates are not doubled
    exported = ok(kit.run("know", "export", "--format", "json"))
    markdown = ok(kit.run("know", "export"))
    assert "## #1 · " in markdown and "the foo-bar deploy needs the bastion" in markdown
    assert ok(kit.run("know", "rm", "1", "3")) == "removed #1, #3\n"
    assert [n["id"] for n in notes(kit)] == [2]
    assert ok(kit.run("know", "search", "milk", "--json")) == "[]\n"
    dump = tmp_path / "notes.json"
    dump.write_text(exported)
    monkeypatch.chdir(tmp_path)  # filesystem:read:${workspace} covers it
    assert (
        ok(kit.run("know", "import", "notes.json"))
        == "imported 2 notes, skipped 1 already present\n"
    )
    assert ok(kit.run("know", "import", "-", input=exported)).startswith(
        "imported 0 notes, skipped 3"
    )
    after, before = (
        json.loads(text) for text in (ok(kit.run("know", "export", "--format", "json")), exported)
    )
    for data in (after, before):  # notes written in the same second: the order may differ
        data["notes"].sort(key=lambda note: note["uid"])
    assert after == before
    assert "[milk]" in ok(kit.run("know", "search", "milk"))


def test_detached_head_and_no_commit(kit: Conduit, repo: Path, tmp_path: Path, monkeypatch) -> None:
    git("checkout", "-q", "--detach", cwd=repo)
    ok(kit.run("know", "add", "detached"))
    empty = tmp_path / "empty"
    empty.mkdir()
    git("init", "-q", "-b", "trunk", cwd=empty)
    monkeypatch.chdir(empty)
    ok(kit.run("know", "add", "no commits yet"))
    fresh, detached = notes(kit)
    assert (detached["branch"], detached["commit"]) == (None, git("rev-parse", "HEAD", cwd=repo))
    assert "branch:     (detached HEAD) @ " in ok(kit.run("know", "show", "1"))
    assert (fresh["repo"], fresh["branch"], fresh["commit"]) == (str(empty), "trunk", None)


# -- bad input -----------------------------------------------------------------------------


def test_bad_input_is_one_line(kit: Conduit, repo: Path, tmp_path: Path, monkeypatch) -> None:
    ok(kit.run("know", "add", "something"))
    one_line_error(kit.run("know", "add", "  "), "know: the note is empty")
    one_line_error(kit.run("know", "show", "42"), "know: no note #42")
    one_line_error(kit.run("know", "rm", "1", "42"), "know: no note #42")
    assert len(notes(kit)) == 1  # rm removed nothing
    one_line_error(kit.run("know", "show", "abc"), "know: 'abc' is not a note id")
    one_line_error(kit.run("know", "search", '"'), "know: nothing to search for")
    (repo / "bad.json").write_text("{not json")
    one_line_error(kit.run("know", "import", "bad.json"), "know: bad.json is not JSON")
    (repo / "other.json").write_text('{"notes": []}')
    one_line_error(kit.run("know", "import", "other.json"), "not a know export")
    (repo / "empty.json").write_text(
        '{"format": "conduit-know", "version": 1, "notes": [{"body": " "}]}'
    )
    one_line_error(kit.run("know", "import", "empty.json"), "notes[0] is empty")
    one_line_error(kit.run("know", "import", "missing.json"), "cannot read missing.json")

    # the editor: not granted (the guard names the grant), failing, emptying the note
    fake = editor(tmp_path, "open(path, 'w').write('')")
    monkeypatch.setenv("EDITOR", str(fake))
    one_line_error(kit.run("know", "edit", "1"), f"process:execute:{fake}")
    kit.configure(grants(f"process:execute:{fake}"))
    one_line_error(kit.run("know", "edit", "1"), "know: note #1 left empty; not saved")
    failing = editor(tmp_path, "sys.exit(3)")
    monkeypatch.setenv("EDITOR", str(failing))
    kit.configure(grants(f"process:execute:{failing}"))
    one_line_error(kit.run("know", "edit", "1"), "exited with 3; note unchanged")
    monkeypatch.setenv("EDITOR", "'unclosed")
    one_line_error(kit.run("know", "edit", "1"), "cannot read the editor command")
    assert notes(kit)[0]["body"] == "something"


def test_corrupt_database(kit: Conduit, repo: Path) -> None:
    ok(kit.run("know", "list"))
    path = db_path(kit)
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    path.write_bytes(b"this is not an SQLite database, just some bytes" * 100)
    line = one_line_error(kit.run("know", "list"), f"the notes database {path} is damaged")
    assert f"move it aside (mv {path} {path}.damaged)" in line
    path.rename(str(path) + ".damaged")
    ok(kit.run("know", "add", "fresh start"))
    assert [n["body"] for n in notes(kit)] == ["fresh start"]


def test_database_newer_than_the_plugin(kit: Conduit, repo: Path) -> None:
    ok(kit.run("know", "list"))
    with sqlite3.connect(db_path(kit)) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    one_line_error(
        kit.run("know", "add", "x"),
        f"has schema version {SCHEMA_VERSION + 5}, newer than this plugin reads ({SCHEMA_VERSION})",
    )


# -- the schema ----------------------------------------------------------------------------


def test_migrates_a_version_1_database(kit: Conduit, repo: Path) -> None:
    path = db_path(kit)
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as db:
        db.executescript(MIGRATIONS[0])
        db.execute(
            "INSERT INTO notes (body, tags, created, repo, branch, commit_id, directory)"
            " VALUES ('old cache invalidation trick', 'perf', '2024-01-02T03:04:05Z',"
            " '/src/api', 'main', 'abc123', '/src/api')"
        )
        db.execute(
            "INSERT INTO notes (body, created) VALUES ('second old note', '2024-01-03T00:00:00Z')"
        )
        db.execute("INSERT INTO note_tags VALUES (1, 'perf')")
        db.execute("PRAGMA user_version = 1")
    found = json.loads(
        ok(kit.run("know", "search", "cache", "--tag", "perf", "--repo", "api", "--json"))
    )
    assert [(n["id"], n["branch"], n["commit"]) for n in found] == [(1, "main", "abc123")]
    assert "[cache]" in found[0]["snippet"]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        uids = [r[0] for r in db.execute("SELECT uid FROM notes")]
    assert len(set(uids)) == 2 and all(len(u) == 32 for u in uids)
    ok(kit.run("know", "add", "new note"))
    assert [n["body"] for n in notes(kit)] == [
        "new note",
        "second old note",
        "old cache invalidation trick",
    ]


# -- concurrent runs and kill -9 -----------------------------------------------------------


def conduit_process(*args: str, **kwargs) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "conduit", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_concurrent_adds_are_all_recorded(kit: Conduit, repo: Path) -> None:
    ok(kit.run("--help"))  # build the index once, so that the eight runs only add notes
    procs = [conduit_process("know", "add", f"parallel note {i}") for i in range(8)]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.startswith("recorded note #")
    assert sorted(n["body"] for n in notes(kit)) == [f"parallel note {i}" for i in range(8)]
    assert len(json.loads(ok(kit.run("know", "search", "parallel", "--json")))) == 8


def test_kill_9_during_a_write_leaves_a_consistent_database(
    kit: Conduit, repo: Path, tmp_path: Path
) -> None:
    ok(kit.run("know", "add", "before the crash"))
    big = [
        {
            "uid": f"{i:032x}",
            "body": f"bulk note {i} " + "lorem ipsum dolor " * 120,
            "tags": ["bulk"],
        }
        for i in range(6000)
    ]
    (repo / "bulk.json").write_text(
        json.dumps({"format": "conduit-know", "version": 1, "notes": big})
    )
    wal = Path(str(db_path(kit)) + "-wal")
    proc = conduit_process("know", "import", "bulk.json")
    killed = False
    while proc.poll() is None:
        # The import's transaction spills pages into the WAL long before it commits.
        if wal.exists() and wal.stat().st_size > 4 * 2**20:
            os.kill(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.005)
    proc.communicate(timeout=120)
    if killed:
        assert proc.returncode == -signal.SIGKILL
    with sqlite3.connect(db_path(kit)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db.execute("INSERT INTO notes_fts(notes_fts) VALUES ('integrity-check')")
        count = db.execute("SELECT count(*) FROM notes WHERE tags = 'bulk'").fetchone()[0]
        tagged = db.execute("SELECT count(*) FROM note_tags WHERE tag = 'bulk'").fetchone()[0]
    assert count in (0, len(big)) and tagged == count  # all of the import or none of it
    ok(kit.run("know", "add", "after the crash"))
    assert [n["body"] for n in notes(kit, "--limit", "1")] == ["after the crash"]
    assert "[crash]" in ok(kit.run("know", "search", "crash"))


# -- cost ----------------------------------------------------------------------------------


def test_importing_the_plugin_loads_no_database_code() -> None:
    code = (
        "import sys, click, conduit.sdk\n"
        "before = set(sys.modules)\n"
        "import conduit_plugins.know\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "['conduit_plugins', 'conduit_plugins.know']"


def test_markdown_export_shows_control_characters_inert(
    kit: Conduit, repo: Path, tmp_path: Path, monkeypatch
) -> None:
    """A note imported from someone else's export cannot send escape sequences to the
    terminal through the Markdown export (the other views escape them too)."""
    ok(kit.run("know", "add", "first"))
    data = json.loads(ok(kit.run("know", "export", "--format", "json")))
    note = data["notes"][0]
    note |= {
        "uid": "0" * 32 if len(note["uid"]) == 32 else note["uid"] + "x",
        "body": "title\x1b]0;owned\x07\n\x1b[2Jgone \u202eevil",
        "tags": ["t\x1b[31m"],
        "directory": "/d\x9b1m",
    }
    (tmp_path / "evil.json").write_text(json.dumps(data))
    monkeypatch.chdir(tmp_path)
    ok(kit.run("know", "import", "evil.json"))
    out = ok(kit.run("know", "export"))
    assert not any(c in out for c in "\x1b\x07\x9b\u202e"), repr(out)
    assert "title\\x1b]0;owned\\x07\n\\x1b[2Jgone \\u202eevil" in out
    assert "- tags: t\\x1b[31m" in out
