"""The SDK reference is generated from docstrings and kept current; the deprecation
helper warns as the policy in docs/plugin-api.md says."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import pytest

import conduit.sdk
from conduit.sdk import PluginDeprecationWarning, deprecated

ROOT = Path(__file__).resolve().parents[2]


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "gen_sdk_reference", ROOT / "scripts" / "gen_sdk_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sdk_reference_is_current() -> None:
    expected = _generator().render()
    current = (ROOT / "docs" / "sdk-reference.md").read_text(encoding="utf-8")
    assert current == expected, (
        "docs/sdk-reference.md is stale: run python scripts/gen_sdk_reference.py"
    )


def test_every_public_sdk_name_is_documented_in_both_references() -> None:
    # the generated reference has a section per name whatever the docstrings say: what it
    # must not have is a name without one; and the hand-written page must list every name
    reference = (ROOT / "docs" / "sdk-reference.md").read_text(encoding="utf-8")
    assert "Undocumented." not in reference
    api = (ROOT / "docs" / "plugin-api.md").read_text(encoding="utf-8")
    table = api.split("| name | kind | since |", 1)[1].split("\n\n", 1)[0]
    for name in conduit.sdk.__all__:
        assert f"[`{name}" in table, name


def test_deprecated_names_the_replacement_and_the_removal() -> None:
    def old_api() -> None:
        deprecated("ctx.foo()", "ctx.bar()", removed_in="plugin API 2.0")

    with pytest.warns(PluginDeprecationWarning) as record:
        old_api()  # the line the warning points at
    (w,) = record
    assert (
        str(w.message)
        == "ctx.foo() is deprecated; use ctx.bar() instead (removed in plugin API 2.0)"
    )
    assert issubclass(w.category, DeprecationWarning)
    assert w.filename == __file__  # the caller of the deprecated function, not sdk.py


def test_deprecation_can_be_made_an_error() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginDeprecationWarning)
        with pytest.raises(PluginDeprecationWarning, match="use new instead"):
            deprecated("old", "new", removed_in="2.0")


def _blocks(doc: str, lang: str) -> list[str]:
    import re

    text = (ROOT / "docs" / "tutorials" / doc).read_text(encoding="utf-8")
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def test_tutorial_1_shows_the_template_as_generated(tmp_path: Path) -> None:
    from conduit.builtins.plugins._author import render_template

    render_template("single-file", "weather", str(tmp_path))
    assert _blocks("1-single-file.md", "python")[0] == (tmp_path / "weather.py").read_text()


def test_tutorial_2_project_passes_the_manifest_and_capability_checks(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from conduit.authoring import find_plugins
    from conduit.builtins.plugins._author import lint_capabilities

    assert (
        run("plugins", "new", "gitstat", "--template", "package", "--dir", str(tmp_path)).code == 0
    )
    pkg = tmp_path / "gitstat" / "src" / "conduit_gitstat"
    init, counting, _test = _blocks("2-package.md", "python")
    (pkg / "__init__.py").write_text(init)
    (pkg / "counting.py").write_text(counting)
    # before the fix: the template's manifest, and the subprocess import the lint flags
    (src,) = find_plugins(str(tmp_path / "gitstat"))
    assert len(lint_capabilities(src)) == 1
    (toml,) = _blocks("2-package.md", "toml")
    (pkg / "conduit-plugin.toml").write_text(toml)
    (src,) = find_plugins(str(tmp_path / "gitstat"))
    assert lint_capabilities(src) == []
    r = run("plugins", "manifest", "--check", str(tmp_path / "gitstat"))
    assert (r.code, r.err) == (0, "")


def test_tutorial_4_code_is_consistent(tmp_path: Path) -> None:
    """The guest, manifest and test of tutorial 4 (built and run by hand: they need a
    ~20 s component build, which the wasm template's end-to-end test already pays)."""
    from conduit.builtins.plugins._author import render_template
    from conduit.manifest import read_manifest_file

    render_template("wasm", "count", str(tmp_path))
    app, test = _blocks("4-webassembly.md", "python")
    compile(app, "app.py", "exec")
    compile(test, "test_count.py", "exec")
    (toml,) = _blocks("4-webassembly.md", "toml")
    (tmp_path / "conduit-plugin.toml").write_text(toml)
    manifest = read_manifest_file(str(tmp_path / "conduit-plugin.toml"))
    assert manifest.isolation == "wasm"
    for c in manifest.commands:  # the manifest lists what describe() returns
        assert f'CommandInfo(name="{c.name}", help="{c.help}", usage="{c.usage}")' in app
    assert manifest.capabilities == ["filesystem:read:${workspace}"]
    assert 'count = ["filesystem:read:${workspace}"]' in test
