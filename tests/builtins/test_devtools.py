"""The bundled devtools plugin: ``conduit todo`` and ``conduit loc``."""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from conduit.builtins.devtools import DevtoolsPlugin

# Fixture sources spell tags as {TODO}, {FIXME}, ... and `write` fills them in, so that
# `conduit todo` run on this repository does not report the test data as real to-dos.
TAGS = {tag: tag for tag in ("TODO", "FIXME", "XXX", "HACK", "NOTE")}


def write(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` (creating parents), filling in ``{TAG}`` placeholders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.format(**TAGS))
    return path


def line(path: str, number: int, tag: str, text: str) -> str:
    """One line of `conduit todo` output."""
    return f"{path}:{number}: {tag} {text}"


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty workspace directory (not a git work tree) that is also the cwd."""
    path = tmp_path / "ws"
    path.mkdir()
    # Keep git from finding a repository above tmp_path, so the directory walk is used.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    monkeypatch.chdir(path)
    return path


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def todos(run: Any, *args: str) -> list[tuple[str, int, str, str]]:
    result = run("todo", "--json", *args)
    assert result.code == 0, result.err
    return [(i["path"], i["line"], i["tag"], i["text"]) for i in json.loads(result.out)]


def loc(run: Any, *args: str) -> dict[str, Any]:
    result = run("loc", "--json", *args)
    assert result.code == 0, result.err
    data: dict[str, Any] = json.loads(result.out)
    return data


# -- todo ----------------------------------------------------------------------------------
def test_todo_lists_items_with_path_and_line(ws: Path, run: Any) -> None:
    write(ws / "app.py", "import os\n\n# {TODO}: handle errors\nx = 1  # {FIXME} off by one\n")
    write(ws / "lib" / "util.js", "// {XXX}: slow\nlet a = 1;\n/* {HACK}: until v2 */\n")

    result = run("todo")

    assert result.code == 0
    assert result.out.splitlines() == [
        line("app.py", 3, "TODO", "handle errors"),
        line("app.py", 4, "FIXME", "off by one"),
        line("lib/util.js", 1, "XXX", "slow"),
        line("lib/util.js", 3, "HACK", "until v2"),
    ]
    # The summary goes to stderr so that stdout stays one item per line.
    assert result.err.strip() == "4 items in 2 files"


def test_todo_matches_whole_words_only(ws: Path, run: Any) -> None:
    write(
        ws / "a.py",
        "{TODO}LIST = []\n"
        "{TODO}_ITEMS = 2\n"
        "my{TODO}: not a tag\n"
        'print("{TODO}")\n'
        "# {TODO}(bob): ask about caching\n"
        "# {FIXME} later\n"
        "# {XXX}\tafter a tab\n"
        "# {HACK}\n"  # bare at the end of a comment line still counts
        "# {TODO}:\n",
    )
    # prose is not a comment: a README that mentions the tags reports nothing
    write(ws / "README.md", "The {TODO} command lists {FIXME}: comments.\n")

    assert todos(run) == [
        ("a.py", 5, "TODO", "(bob) ask about caching"),
        ("a.py", 6, "FIXME", "later"),
        ("a.py", 7, "XXX", "after a tab"),
        ("a.py", 8, "HACK", ""),
        ("a.py", 9, "TODO", ""),
    ]


def test_todo_tag_option_replaces_the_default_tags(ws: Path, run: Any) -> None:
    write(ws / "a.py", "# {TODO}: one\n# {NOTE}: two\n# {FIXME}: three\n")

    assert todos(run, "--tag", "NOTE") == [("a.py", 2, "NOTE", "two")]
    assert todos(run, "--tag", "NOTE", "--tag", "FIXME") == [
        ("a.py", 2, "NOTE", "two"),
        ("a.py", 3, "FIXME", "three"),
    ]


def test_todo_json_is_the_whole_stdout(ws: Path, run: Any) -> None:
    write(ws / "a.py", "# {TODO}: one\n")

    result = run("todo", "--json")

    assert json.loads(result.out) == [{"path": "a.py", "line": 1, "tag": "TODO", "text": "one"}]
    assert result.err.strip() == "1 item in 1 file"


def test_todo_with_nothing_found(ws: Path, run: Any) -> None:
    write(ws / "a.py", "x = 1\n")

    result = run("todo")

    assert (result.code, result.out, result.err.strip()) == (0, "", "0 items in 0 files")


def test_todo_skips_binary_and_large_files(ws: Path, run: Any) -> None:
    (ws / "blob.bin").write_bytes(b"\x00\x01" + "# {TODO}: in a binary\n".format(**TAGS).encode())
    big = write(ws / "big.py", "# {TODO}: in a big file\n")
    with big.open("a") as f:
        f.write("x = 1\n" * (2 * 1024 * 1024 // 6 + 1))  # just over 2 MiB
    write(ws / "small.py", "# {TODO}: found\n")

    assert todos(run) == [("small.py", 1, "TODO", "found")]


def test_todo_paths_arguments(ws: Path, run: Any) -> None:
    write(ws / "a.py", "# {TODO}: a\n")
    write(ws / "sub" / "b.py", "# {TODO}: b\n")
    write(ws / "sub" / "c.py", "# {TODO}: c\n")

    assert todos(run, "sub") == [("sub/b.py", 1, "TODO", "b"), ("sub/c.py", 1, "TODO", "c")]
    # Overlapping arguments report each file once.
    assert todos(run, "a.py", "sub/c.py", ".") == [
        ("a.py", 1, "TODO", "a"),
        ("sub/c.py", 1, "TODO", "c"),
        ("sub/b.py", 1, "TODO", "b"),
    ]
    assert run("todo", "missing").code == 2


def test_walk_skips_hidden_and_tool_directories(ws: Path, run: Any) -> None:
    for skipped in (".git/hooks/x.py", ".venv/lib/x.py", "node_modules/m/x.js", "__pycache__/x.py"):
        write(ws / skipped, "# {TODO}: must not be listed\n")
    write(ws / "src" / "kept.py", "# {TODO}: listed\n")
    write(ws / ".hidden.py", "# {TODO}: hidden files are kept; only directories are skipped\n")

    assert [item[0] for item in todos(run)] == [".hidden.py", "src/kept.py"]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_work_tree_honours_gitignore(ws: Path, run: Any) -> None:
    git("init", "-q", ".", cwd=ws)
    write(ws / ".gitignore", "ignored.py\nbuild/\n")
    write(ws / "tracked.py", "# {TODO}: tracked\n")
    git("add", "tracked.py", cwd=ws)
    write(ws / "untracked.py", "# {TODO}: untracked but not ignored\n")
    write(ws / "ignored.py", "# {TODO}: ignored\n")
    write(ws / "build" / "out.py", "# {TODO}: ignored directory\n")
    # Not ignored, so listed: inside git, the walk's directory rules do not apply.
    write(ws / ".venv" / "x.py", "# {TODO}: in a venv git was not told to ignore\n")

    assert [item[0] for item in todos(run)] == [".venv/x.py", "tracked.py", "untracked.py"]
    # The same rules apply to a subdirectory of the work tree and to loc.
    assert todos(run, "build") == []
    assert loc(run)["total"]["files"] == 4  # the three .py files and .gitignore


# -- loc -----------------------------------------------------------------------------------
PY_SOURCE = '''\
#!/usr/bin/env python3
"""A module."""

import os  # a trailing comment does not make a comment line

    # an indented comment


def f() -> str:
    return os.sep
'''


def test_loc_counts_python_lines(ws: Path, run: Any) -> None:
    (ws / "m.py").write_text(PY_SOURCE)

    data = loc(run)

    python = {"language": "Python", "files": 1, "blank": 4, "comment": 2, "code": 4}
    assert data["languages"] == [python]
    assert data["total"] == {**python, "language": "Total"}


def test_loc_languages_sorted_by_code_with_total(ws: Path, run: Any) -> None:
    (ws / "a.py").write_text("x = 1\n")
    (ws / "b.py").write_text("# comment\n\ny = 2\nz = 3\n")
    (ws / "web" / "app.ts").parent.mkdir()
    (ws / "web" / "app.ts").write_text("// c\nlet a = 1;\nlet b = 2;\nlet c = 3;\nlet d = 4;\n")
    # Markdown has no line comments: a heading is content, counted as code.
    (ws / "README.md").write_text("# Title\n\nText.\n")
    (ws / "notes.txt").write_text("plain\n")
    (ws / "deploy").write_text("#!/bin/sh\necho hi\n")

    data = loc(run)

    assert [
        (r["language"], r["files"], r["blank"], r["comment"], r["code"]) for r in data["languages"]
    ] == [
        ("TypeScript", 1, 0, 1, 4),
        ("Python", 2, 1, 1, 3),
        ("Markdown", 1, 1, 0, 2),
        ("Other", 1, 0, 0, 1),
        ("Shell", 1, 0, 1, 1),
    ]
    assert data["total"] == {"language": "Total", "files": 6, "blank": 2, "comment": 3, "code": 11}


def test_loc_table(ws: Path, run: Any) -> None:
    (ws / "a.py").write_text("# c\n\nx = 1\ny = 2\n")
    (ws / "b.go").write_text("package main\n")

    result = run("loc")

    assert result.code == 0
    rows = [row.split() for row in result.out.splitlines() if not row.startswith("-")]
    assert rows == [
        ["LANGUAGE", "FILES", "BLANK", "COMMENT", "CODE"],
        ["Python", "1", "1", "1", "2"],
        ["Go", "1", "0", "0", "1"],
        ["Total", "2", "1", "1", "3"],
    ]


def test_loc_empty_workspace(ws: Path, run: Any) -> None:
    assert loc(run) == {
        "languages": [],
        "total": {"language": "Total", "files": 0, "blank": 0, "comment": 0, "code": 0},
    }


# -- the plugin as a whole -----------------------------------------------------------------
def _manifest() -> dict[str, Any]:
    text = resources.files("conduit.builtins.devtools").joinpath("conduit-plugin.toml")
    return tomllib.loads(text.read_text(encoding="utf-8"))


def test_help_lists_both_commands_from_the_manifest(run: Any) -> None:
    result = run("--help")

    assert result.code == 0
    helps = {c["name"]: c["help"] for c in _manifest()["commands"]}
    assert set(helps) == {"todo", "loc"}
    shown = [row.split(None, 1) for row in result.out.splitlines() if row.startswith("  ")]
    for name, text in helps.items():
        assert [name, text] in shown


def test_manifest_declares_exactly_the_registered_commands() -> None:
    class Recorder:
        name = "devtools"
        data_dir = ""

        def __init__(self) -> None:
            self.commands: list[str] = []

        def register_command(self, command: Any, name: str | None = None) -> None:
            self.commands.append(name or command.name)

    ctx = Recorder()
    DevtoolsPlugin().boot(ctx)  # type: ignore[arg-type]

    assert sorted(ctx.commands) == sorted(c["name"] for c in _manifest()["commands"])
