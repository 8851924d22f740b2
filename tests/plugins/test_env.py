"""The first-party ``env`` plugin: dotenv files checked, compared, read and changed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from conduit.testing import Conduit

EXAMPLE = """\
# Database
DB_URL=postgres://localhost/app
export API_KEY=
REDIS_URL=redis://localhost
"""

ENV = """\
# Database
DB_URL="postgres://prod/app"   # the real one
export API_KEY='s3cr3t #not a comment'
EMPTY=
MULTI="line one
line two"
ESCAPED="a\\"b\\nc"
PLAIN=value with spaces # trailing comment
"""


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    monkeypatch.chdir(path)
    return path


def test_check_names_what_is_missing_on_each_side(kit: Conduit, ws: Path) -> None:
    (ws / ".env.example").write_text(EXAMPLE)
    (ws / ".env").write_text(ENV)
    r = kit.run("env", "check")
    assert r.exit_code == 1
    assert r.stdout.splitlines() == [
        "missing from .env: REDIS_URL",
        "not in .env.example: EMPTY, MULTI, ESCAPED, PLAIN",
    ]
    (ws / ".env").write_text("DB_URL=x\nAPI_KEY=y\nREDIS_URL=\n")
    r = kit.run("env", "check")
    assert (r.exit_code, r.stdout) == (0, ".env has every key of .env.example (3), and no other\n")
    (ws / ".env").unlink()
    r = kit.run("env", "check")
    assert r.exit_code == 1
    assert r.stderr.splitlines() == [
        "error: .env: no such file",
        "hint: create it: cp .env.example .env",
    ]


def test_get_reads_the_syntax_people_write_and_masks_values(kit: Conduit, ws: Path) -> None:
    (ws / ".env").write_text(ENV)
    expected = {
        "DB_URL": "postgres://prod/app",
        "API_KEY": "s3cr3t #not a comment",
        "EMPTY": "",
        "MULTI": "line one\nline two",
        "ESCAPED": 'a"b\nc',
        "PLAIN": "value with spaces",
    }
    for key, value in expected.items():
        r = kit.run("env", "get", key, "--show")
        assert (r.exit_code, r.stdout) == (0, value + "\n"), key
    assert kit.run("env", "get", "API_KEY").stdout == "********\n"
    assert kit.run("env", "get", "EMPTY").stdout == "(empty)\n"
    r = kit.run("env", "get", "NOPE")
    assert r.exit_code == 1
    assert r.stderr.splitlines()[0] == "error: .env: no variable NOPE"


def test_set_changes_one_line_and_keeps_the_rest_byte_for_byte(kit: Conduit, ws: Path) -> None:
    env = ws / ".env"
    env.write_text(ENV)
    env.chmod(0o640)
    assert kit.run("env", "set", "API_KEY", "n3w").stdout == "updated API_KEY in .env\n"
    assert kit.run("env", "set", "DB_URL", 'with "quotes"').exit_code == 0
    assert kit.run("env", "set", "PLAIN", "v2").exit_code == 0
    assert kit.run("env", "set", "MULTI", "one").exit_code == 0
    assert kit.run("env", "set", "NEW_KEY", "has space").stdout == "added NEW_KEY in .env\n"
    assert env.read_text() == (
        "# Database\n"
        'DB_URL="with \\"quotes\\""   # the real one\n'
        "export API_KEY='n3w'\n"
        "EMPTY=\n"
        'MULTI="one"\n'
        'ESCAPED="a\\"b\\nc"\n'
        "PLAIN=v2 # trailing comment\n"
        'NEW_KEY="has space"\n'
    )
    assert stat.S_IMODE(env.stat().st_mode) == 0o640  # the file's mode is kept
    assert sorted(os.listdir(ws)) == [".env"]  # no temporary file left behind
    assert kit.run("env", "get", "DB_URL", "--show").stdout == 'with "quotes"\n'


def test_set_creates_a_private_file_and_refuses_a_bad_name(kit: Conduit, ws: Path) -> None:
    r = kit.run("env", "set", "TOKEN", "abc", "--file", "local.env")
    assert r.exit_code == 0, r.stderr
    assert (ws / "local.env").read_text() == "TOKEN=abc\n"
    assert stat.S_IMODE((ws / "local.env").stat().st_mode) == 0o600
    r = kit.run("env", "set", "1BAD", "x")
    assert r.exit_code == 1
    assert r.stderr.splitlines()[0] == "error: '1BAD' is not a valid variable name"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "A=1\nthis is not an assignment\n",
            ".env:2: expected KEY=value, found 'this is not an assignment'",
        ),
        ("A=1\n\n9X=2\n", ".env:3: '9X' is not a valid variable name"),
        ('A=1\nB="never closed\nC=3\n', '.env:2: the "-quoted value of B never ends'),
        ("A='x' trailing\n", ".env:1: unexpected text after the quoted value of A"),
    ],
)
def test_a_malformed_line_is_one_line_naming_file_and_line(
    kit: Conduit, ws: Path, text: str, error: str
) -> None:
    (ws / ".env").write_text(text)
    (ws / ".env.example").write_text("A=\n")
    for args in (("check",), ("get", "A"), ("set", "A", "2"), ("diff", ".env", ".env.example")):
        r = kit.run("env", *args)
        assert r.exit_code == 1, args
        assert r.stderr.splitlines() == [
            f"error: {error}",
            "hint: lines are KEY=value, export KEY=value, '# comment' or blank",
        ]
    assert (ws / ".env").read_text() == text  # set wrote nothing


def test_diff_masks_values_unless_show(kit: Conduit, ws: Path) -> None:
    (ws / "a.env").write_text("SAME=1\nONLY_A=x\nCHANGED=old\n")
    (ws / "b.env").write_text("SAME=1\nCHANGED=new\nONLY_B=y\n")
    r = kit.run("env", "diff", "a.env", "b.env")
    assert r.exit_code == 1
    assert r.stdout.splitlines() == ["- ONLY_A", "+ ONLY_B", "~ CHANGED: the values differ"]
    r = kit.run("env", "diff", "a.env", "b.env", "--show")
    assert r.stdout.splitlines()[-1] == "~ CHANGED: 'old' -> 'new'"
    r = kit.run("env", "diff", "a.env", "a.env")
    assert (r.exit_code, r.stdout) == (0, "a.env and a.env have the same keys and values\n")
    r = kit.run("env", "diff", "a.env", "missing.env")
    assert r.exit_code == 1
    assert r.stderr.splitlines()[0] == "error: missing.env: no such file"
