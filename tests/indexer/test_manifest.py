"""Manifest parsing and validation: precise errors for every kind of bad input."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conduit.errors import ManifestError
from conduit.manifest import Manifest, parse_inline_manifest, parse_manifest, read_manifest_file

OK = {"name": "demo", "api": ">=1.0,<2"}


def err(data: dict[str, object], **kw: object) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        parse_manifest(data, "m.toml", **kw)  # type: ignore[arg-type]
    return info.value


def test_minimal_manifest_defaults():
    m = parse_manifest(dict(OK), "m.toml")
    assert m == Manifest(name="demo", api=">=1.0,<2")
    assert m.isolation == "in-process" and m.commands == [] and m.capabilities == []


def test_full_manifest():
    m = parse_manifest(
        {
            **OK,
            "version": "1.2.3",
            "description": "Demo",
            "commands": [{"name": "repos status", "help": "Show status.", "usage": "[PATH]"}],
            "activation": [
                "command:build",
                "env:CONDUIT_ENV=production",
                "file:pyproject.toml",
                "event:before_command",
                "service:vcs",
                "startup",
            ],
            "provides": {"services": ["vcs.status"], "hooks": ["on_sync"]},
            "requires": {"plugins": ["git-tools>=1.2,<2"], "services": ["vcs"]},
            "capabilities": [
                "filesystem:read:${workspace}",
                "network:http:*.github.com",
                "process:execute:git",
                "env:read:HOME",
                "filesystem:write",
            ],
            "isolation": "process",
            "dependencies": ["rich>=13"],
        },
        "m.toml",
    )
    assert m.commands[0].name == "repos status"
    assert m.requires.plugins == ["git-tools>=1.2,<2"]


@pytest.mark.parametrize(
    ("data", "field", "problem", "hint"),
    [
        ({**OK, "nmae": "x"}, "nmae", "unknown field", "did you mean 'name'?"),
        (
            {**OK, "commands": [{"name": "a", "hlep": "x"}]},
            "commands[0].hlep",
            "unknown field",
            "did you mean 'help'?",
        ),
        ({**OK, "description": 3}, "description", "expected `str`, got `int`", None),
        ({"name": "demo"}, "api", "required field is missing", 'e.g. api = ">=1.0,<2"'),
        ({**OK, "commands": [{}]}, "commands[0].name", "required field is missing", None),
        ({**OK, "isolation": "vm"}, "isolation", "invalid enum value 'vm'", None),
        ({**OK, "api": "one"}, "api", "'one' is not a valid version range", None),
        ({**OK, "version": "x.y"}, "version", "'x.y' is not a valid version", None),
        ({**OK, "name": "Demo!"}, "name", "'Demo!' is not a valid plugin name", None),
        (
            {**OK, "commands": [{"name": "Bad"}]},
            "commands[0].name",
            "not a valid command name",
            None,
        ),
        (
            {**OK, "commands": [{"name": "a:b"}]},
            "commands[0].name",
            "not a valid command name",
            None,
        ),
        (
            {**OK, "commands": [{"name": "a"}, {"name": "a"}]},
            "commands[1].name",
            "declared twice",
            None,
        ),
        (
            {**OK, "activation": ["onCommand:x"]},
            "activation[0]",
            "not a valid activation event",
            None,
        ),
        (
            {**OK, "activation": ["startup:now"]},
            "activation[0]",
            "not a valid activation event",
            None,
        ),
        (
            {**OK, "capabilities": ["filesystem:raed"]},
            "capabilities[0]",
            "not a valid capability",
            "did you mean 'filesystem:read'?",
        ),
        (
            {**OK, "requires": {"plugins": ["x @ https://e.org/x.whl"]}},
            "requires.plugins[0]",
            "only a name and a version range",
            None,
        ),
        (
            {**OK, "requires": {"plugins": ["!!"]}},
            "requires.plugins[0]",
            "not a valid requirement",
            None,
        ),
        ({**OK, "dependencies": ["rich>>1"]}, "dependencies[0]", "not a valid requirement", None),
        (
            {**OK, "provides": {"hooks": ["on.sync"]}},
            "provides.hooks[0]",
            "not a valid hook name",
            None,
        ),
    ],
)
def test_precise_errors(data, field, problem, hint):
    e = err(data)
    assert e.path == "m.toml"
    assert e.field == field
    assert problem in e.problem
    assert e.message.startswith(f"m.toml: {field}: ")
    if hint:
        assert hint in (e.hint or "")
    else:
        assert e.hint


def test_entry_point_name_must_match():
    e = err({**OK, "name": "other"}, expected_name="demo")
    assert e.field == "name"
    assert "does not match the entry point name 'demo'" in e.problem
    assert parse_manifest({"api": ">=1"}, "m.toml", expected_name="demo").name == "demo"


def test_single_file_needs_a_name():
    assert err({"api": ">=1"}).field == "name"


def test_read_manifest_file_errors(tmp_path):
    path = tmp_path / "conduit-plugin.toml"
    path.write_text('name = "x"\napi = ">=1"\ndescription = "open\n')
    with pytest.raises(ManifestError, match=r"invalid TOML: .*line 3") as info:
        read_manifest_file(str(path))
    assert info.value.path == str(path)
    path.write_bytes(b'name = "\xff"\n')
    with pytest.raises(ManifestError, match="not UTF-8"):
        read_manifest_file(str(path))
    with pytest.raises(ManifestError, match="cannot read manifest"):
        read_manifest_file(str(tmp_path / "missing.toml"))


INLINE = '''#!/usr/bin/env python
"""A plugin."""
# /// script
# dependencies = ["rich"]
# ///

# /// conduit
# name = "inline"
# api = ">=1.0,<2"
#
# [[commands]]
# name = "go"
# ///
import click
'''


def test_inline_manifest():
    m = parse_inline_manifest(INLINE, "p.py")
    assert m is not None and m.name == "inline" and m.commands[0].name == "go"
    assert m.dependencies == ["rich"]
    assert parse_inline_manifest("import click\n", "p.py") is None


def test_inline_manifest_error_reports_file_line():
    broken = INLINE.replace('# name = "go"', '# name = "go')
    with pytest.raises(ManifestError, match=r"p\.py: invalid TOML: .*line 12"):
        parse_inline_manifest(broken, "p.py")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
keys = st.sampled_from([*Manifest.__struct_fields__, "bogus"])


# Generation is occasionally slow on a loaded 2-core CI machine; the property is what counts.
@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None, max_examples=300)
@given(st.dictionaries(keys, json_values, max_size=6))
def test_any_data_gives_a_manifest_or_a_manifest_error(data):
    try:
        m = parse_manifest(data, "m.toml", expected_name="fuzz")
    except ManifestError as e:
        assert e.message.startswith("m.toml")
    else:
        assert isinstance(m, Manifest)
