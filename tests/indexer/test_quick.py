"""The quick manifest check (conduit.indexer.quick) agrees with conduit.manifest: for
every manifest it accepts, it returns exactly what the full validation returns, and it
accepts nothing that the full validation refuses (it returns None: "ask msgspec")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
import test_manifest  # tests/indexer/test_manifest.py: its cases are checked here too
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conduit.errors import ManifestError
from conduit.indexer.quick import check
from conduit.manifest import read_manifest_file


def full(path: Path, raw: bytes, expected_name: str | None) -> dict[str, Any] | None:
    path.write_bytes(raw)
    try:
        return msgspec.to_builtins(read_manifest_file(str(path), expected_name=expected_name))
    except ManifestError:
        return None


def agree(
    tmp_path: Path, text: str | bytes, expected_name: str | None = "demo"
) -> dict[str, Any] | None:
    raw = text.encode() if isinstance(text, str) else text
    quick = check(raw, expected_name)
    if quick is not None:
        assert quick == full(tmp_path / "conduit-plugin.toml", raw, expected_name), text
    return quick


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON escapes are TOML escapes
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def to_toml(data: dict[str, Any]) -> str:
    """``data`` as a manifest file would write it: tables for provides/requires, an array
    of tables for commands; a value TOML cannot hold (None) is left out."""
    lines, tables = [], []
    for key, value in data.items():
        if value is None:
            continue
        if key in ("provides", "requires") and isinstance(value, dict):
            tables.append(f"\n[{key}]")
            tables += [f"{k} = {toml_value(v)}" for k, v in value.items() if v is not None]
        elif key == "commands" and value and all(isinstance(c, dict) for c in value):
            for command in value:
                tables.append("\n[[commands]]")
                tables += [f"{k} = {toml_value(v)}" for k, v in command.items() if v is not None]
        else:
            lines.append(f"{key} = {toml_value(value)}")
    return "\n".join(lines + tables) + "\n"


SYNTHETIC = (  # what benchmarks/startup/run.py installs
    'name = "demo"\ndescription = "Synthetic plugin 7"\napi = ">=1.0,<2"\n\n'
    '[[commands]]\nname = "demo"\nhelp = "Print ok."\n'
)


def test_common_manifests_are_checked_quickly(tmp_path: Path) -> None:
    assert agree(tmp_path, SYNTHETIC) is not None
    full_manifest = {
        **test_manifest.OK,
        "version": "1.2.3",
        "description": "Démo, with # and = and 'quotes'",
        "commands": [
            {"name": "repos status", "help": "Show status.", "usage": "[PATH]"},
            {"name": "repos", "hidden": True},
        ],
        "activation": ["command:build", "env:CONDUIT_ENV=production", "startup"],
        "provides": {"services": ["vcs.status"], "hooks": ["on_sync"]},
        "requires": {"services": ["vcs"]},
        "capabilities": ["filesystem:read:${workspace}", "network:http:*.github.com"],
        "isolation": "process",
    }
    assert agree(tmp_path, "# a comment\n\t" + to_toml(full_manifest)) is not None
    assert agree(tmp_path, 'api = "~=1.2, !=1.5"', expected_name="x") == {
        "name": "x",
        "version": None,
        "description": "",
        "api": "~=1.2, !=1.5",
        "entry": None,
        "commands": [],
        "activation": [],
        "provides": {"services": [], "hooks": []},
        "requires": {"plugins": [], "services": []},
        "capabilities": [],
        "isolation": "in-process",
        "dependencies": [],
    }


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(values[0], id=f"{values[1]}-{i}")
        for i, values in enumerate(test_manifest.test_precise_errors.pytestmark[0].args[1])
    ],
)
def test_invalid_manifests_of_test_manifest_are_left_to_msgspec(
    tmp_path: Path, case: dict[str, Any]
) -> None:
    assert full(tmp_path / "m.toml", to_toml(case).encode(), "demo") is None
    assert agree(tmp_path, to_toml(case)) is None


@pytest.mark.parametrize(
    "text",
    [
        'name = "demo"\napi = ">=1"\nname = "demo"\n',  # a key twice
        'api = ">=1"\ncommands = []\n[[commands]]\nname = "a"\n',  # a static array appended to
        'api = ">=1"\n[provides]\n[provides]\n',  # a table twice
        'api = ">=1"\n[provides]\nservices = ["a"]\nname = "demo"\n',  # a key in the table
        'api = ">=1" # trailing comment\n',
        "api = '>=1'\n",  # a literal string
        'api = """>=1"""\n',
        'api = ">=1"\r\n',
        '\ufeffapi = ">=1"\n',
        'api = ">=1"\ndescription = "tab\there"\n',
        'api = ">=1"\ndescription = "a\\u0041"\n',
        'api = ">=1"\nactivation = [\n  "startup",\n]\n',
        'api = ">=1"\na.b = "x"\n',
        'api = ">=1"\n"name" = "demo"\n',
        'api = ">=1"\n# a comment with a \x01 in it\n',
        'api = ">=1"\nhidden = true\n',
        'api = ">=1"\n[[commands]]\nname = "a"\nhidden = "yes"\n',
        'api = ">=1"\n[[commands]]\nhelp = "no name"\n',
        'api = ">=1"\n[[commands]]\nname = "a"\n[[commands]]\nname = "a"\n',
        'api = ">=1"\nversion = "1.0a1"\n',  # valid, but not a plain release: msgspec decides
        'api = ">=1"\nversion = "1..0"\n',
        'api = ">=1,"\n',
        'api = ">= 1"\n',
        'api = "~=1"\n',
        'api = "===1"\n',
        'api = ""\n',
        'api = ">=1"\nname = "other"\n',
        'api = ">=1"\nisolation = "vm"\n',
        'api = ">=1"\nentry = "a\u202eb"\n',
        'api = ">=1"\n[requires]\nplugins = ["x>=1"]\n',
        'api = ">=1"\ndependencies = ["rich"]\n',
        'api = ">=1"\n[provides]\nhooks = ["on.sync"]\n',
        'api = ">=1"\n[provides]\nservices = ["Vcs"]\n',
        'api = ">=1"\nactivation = ["startup:now"]\n',
        'api = ">=1"\ncapabilities = ["filesystem:raed"]\n',
        'api = ">=1"\nbogus = "x"\n',
        'api = ">=1"\ndescription = 3\n',
        'api = ">=1"\ndescription = "open\n',
        b'api = ">=1"\ndescription = "\xff"\n',
        'description = "no api"\n',
    ],
)
def test_anything_unusual_is_left_to_msgspec(tmp_path: Path, text: str | bytes) -> None:
    assert agree(tmp_path, text) is None


def pool(valid: list[Any], invalid: list[Any]) -> st.SearchStrategy[Any]:
    """Mostly valid values, so that both answers of the quick check are exercised."""
    return st.sampled_from(valid * 4 + invalid)


text = st.text(max_size=6) | pool(["x", "a b", "# = [", "é"], ['q"', "\\", "\t", "\x00"])
commands = st.fixed_dictionaries(
    {"name": pool(["go", "repos status", "x-y_z"], ["a  b", "Bad", "a:b", "", "x-", 3])},
    optional={"help": text, "usage": text, "hidden": pool([True, False], ["yes"])},
)
manifests = st.fixed_dictionaries(
    {"api": pool([">=1.0,<2", "~=1.2", "<3", "==1.0, !=1.1"], ["~=1", "==1.*", ">= 1", ">=1,"])},
    optional={
        "name": pool(["demo"], ["other", "Demo!", "-a", "a" * 65, "dé", "a\x7f", ""]),
        "version": pool(["1.0", "01.2.3", "7"], ["1..0", "x.y", "1.0a1", "1.", "\u0661"]),
        "description": text,
        "entry": pool(["demo_pkg:Plugin"], ["a\u202eb"]),
        "commands": st.lists(commands, max_size=3),
        "activation": st.lists(
            pool(["startup", "command:go", "env:A=b", "file:*.py"], ["startup:x", "env", "x:y"]),
            max_size=2,
        ),
        "provides": st.fixed_dictionaries(
            {},
            optional={
                "services": st.lists(pool(["vcs", "vcs.status"], ["V", ".x", "a b"]), max_size=2),
                "hooks": st.lists(pool(["on_sync"], ["on.sync", "On", "_x", "1a"]), max_size=2),
            },
        ),
        "requires": st.fixed_dictionaries(
            {},
            optional={
                "plugins": st.lists(st.sampled_from(["x>=1", "!!"]), max_size=1),
                "services": st.lists(pool(["vcs"], ["-v"]), max_size=2),
            },
        ),
        "capabilities": st.lists(
            pool(["filesystem:read", "env:read:HOME"], ["filesystem:raed", "x"]), max_size=2
        ),
        "isolation": pool(["in-process", "process", "wasm"], ["vm", 1]),
        "dependencies": st.lists(st.just("rich"), max_size=1),
    },
) | st.fixed_dictionaries({"api": st.just(">=1"), "bogus": text})


@settings(
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    deadline=None,
    max_examples=400,
)
@given(manifests, st.sampled_from(["demo", None]))
def test_quick_agrees_with_msgspec(tmp_path: Path, data: dict[str, Any], expected: Any) -> None:
    agree(tmp_path, to_toml(data), expected)


def test_no_msgspec_tomllib_or_packaging_imported() -> None:
    code = (
        "import sys\n"
        "from conduit.indexer.quick import check\n"
        f"assert check({SYNTHETIC.encode()!r}, 'demo') is not None\n"
        "bad = {'msgspec', 'tomllib', 'packaging', 'typing', 're', 'dataclasses'}\n"
        "print(sorted(bad & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
