"""Conduit's first-party plugins (src/conduit_plugins): written only against conduit.sdk,
discovered like any installed plugin, their declared capabilities granted by default and
still enforced by their host; a third-party plugin asking the same is still asked."""

from __future__ import annotations

import ast
import json
import sys
import textwrap
from pathlib import Path

import pytest

from conduit.testing import Conduit

PLUGINS = Path(__file__).resolve().parents[2] / "src" / "conduit_plugins"
ALLOWED = {"conduit.sdk"}


def conduit_imports(source: str) -> list[tuple[int, str]]:
    """``(line, module)`` of every import of a Conduit module, lazy ones included."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "conduit":  # from conduit import kernel
                names = [f"conduit.{a.name}" for a in node.names]
        else:
            continue
        found += [(node.lineno, n) for n in names if n == "conduit" or n.startswith("conduit.")]
    return found


def violations(source: str) -> list[str]:
    return [f"{line}: {name}" for line, name in conduit_imports(source) if name not in ALLOWED]


def test_the_checker_catches_every_spelling_of_an_internal_import() -> None:
    source = textwrap.dedent(
        """
        import conduit.kernel
        from conduit import paths
        from conduit.sdk import Plugin
        from conduit.security.grants import granted
        def f():
            import conduit
            from conduit.errors import ConduitError
        """
    )
    assert violations(source) == [
        "2: conduit.kernel",
        "3: conduit.paths",
        "5: conduit.security.grants",
        "7: conduit",
        "8: conduit.errors",
    ]


def test_first_party_plugins_import_nothing_of_conduit_but_the_sdk() -> None:
    files = sorted(PLUGINS.rglob("*.py"))
    assert len(files) >= 3  # the package and at least repos and env
    bad = [
        f"{path.relative_to(PLUGINS.parent)}:{v}"
        for path in files
        for v in violations(path.read_text(encoding="utf-8"))
    ]
    assert bad == []


def test_the_package_docstring_is_the_one_line() -> None:
    assert (PLUGINS / "__init__.py").read_text() == (
        '"""Conduit\'s first-party plugins: each written only against conduit.sdk, '
        'like a third-party plugin."""\n'
    )


def test_first_party_plugins_are_entry_points_granted_by_default(kit: Conduit) -> None:
    r = kit.run("plugins", "info", "repos", "--no-load")
    assert r.exit_code == 0, r.stderr
    assert (
        "  source:       entry-point (conduit-devtool), first-party: what it declares is "
        "granted by default" in r.stdout.splitlines()
    )
    r = kit.run("plugins", "permissions", "repos", "--json")
    report = json.loads(r.stdout)
    assert report["first_party"] is True
    assert report["missing"] == []
    assert report["granted"] == ["filesystem:read", "process:execute:git"]
    assert "first_party" not in kit.config_file.read_text() if kit.config_file.exists() else True
    # like a third-party plugin: it can be disabled and is off in safe mode
    assert kit.run("--no-plugins", "env", "get", "X").exit_code == 2
    assert kit.run("plugins", "disable", "env").exit_code == 0
    assert kit.run("env", "get", "X").exit_code == 2


def test_a_process_isolated_first_party_plugin_is_held_to_what_it_declares(
    kit: Conduit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / ".env").write_text("KEY=inside\n")
    outside = tmp_path / "outside.env"
    outside.write_text("KEY=outside\n")
    monkeypatch.chdir(ws)
    kit.configure('[isolation]\nenv = "process"\n')
    r = kit.run("env", "get", "KEY", "--show")
    assert (r.exit_code, r.stdout) == (0, "inside\n"), r.stderr
    # env declares filesystem:read:${workspace} only: the sandbox refuses the rest
    r = kit.run("env", "get", "KEY", "--show", "--file", str(outside))
    assert (r.exit_code, r.stdout) == (1, "")
    assert (
        r.stderr.splitlines()[0]
        == f"error: plugin 'env': {outside}: cannot read it: Permission denied"
    )


IMPOSTOR = """\
import click
from conduit.sdk import Plugin


@click.command("imp")
def imp():
    click.echo("ran")


class Imp(Plugin):
    def boot(self, ctx):
        ctx.register_command(imp)
"""


def test_third_party_plugins_declaring_the_same_are_still_asked(
    kit: Conduit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a single file asking what repos asks
    (kit.plugin_dir / "lookalike.py").write_text(
        "# /// conduit\n"
        '# name = "lookalike"\n# api = ">=1.0,<2"\n'
        '# capabilities = ["filesystem:read", "process:execute:git"]\n'
        '# [[commands]]\n# name = "lookalike"\n# ///\n' + IMPOSTOR.replace('"imp"', '"lookalike"')
    )
    r = kit.run("lookalike")
    assert r.exit_code == 3
    assert "not granted" in r.stderr and "ran" not in r.stdout
    # an entry point of a distribution that calls itself conduit-devtool, outside
    # Conduit's own conduit_plugins package: not first-party either
    site = tmp_path / "site"
    pkg = site / "impostor_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(IMPOSTOR)
    (pkg / "conduit-plugin.toml").write_text(
        'name = "imp"\napi = ">=1.0,<2"\ncapabilities = ["filesystem:read", "process:execute:git"]\n'
        '[[commands]]\nname = "imp"\n'
    )
    info = site / "conduit_devtool-99.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: conduit-devtool\nVersion: 99.0\n")
    (info / "entry_points.txt").write_text("[conduit.plugins]\nimp = impostor_pkg:Imp\n")
    # not sys.path[0]: Conduit leaves the script's directory out of discovery; before
    # the real conduit-devtool, which it shadows
    monkeypatch.setattr(sys, "path", [sys.path[0], str(site), *sys.path[1:]])
    monkeypatch.delitem(sys.modules, "impostor_pkg", raising=False)
    r = kit.run("plugins", "permissions", "imp", "--json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["first_party"] is False
    assert report["missing"] == ["filesystem:read", "process:execute:git"]
    r = kit.run("imp")
    assert r.exit_code == 3
    assert "not granted" in r.stderr and "ran" not in r.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", ["repos", "env"])
def test_first_party_plugins_pass_plugins_check(kit: Conduit, name: str) -> None:
    r = kit.run("plugins", "check", str(PLUGINS.parent.parent), "--runs", "3")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert f"plugin '{name}'" in r.stdout
