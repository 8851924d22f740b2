"""``conduit plugins manifest``: the manifest's commands derived from the Click code."""

from __future__ import annotations

import importlib
import os
import textwrap
from pathlib import Path

import pytest

import conduit.builtins
from conduit.authoring import derive_commands, find_plugins
from conduit.builtins import BUILTINS
from conduit.builtins.plugins._author import compare
from conduit.hosts.recording import RecordingContext
from conduit.manifest import read_manifest_file

from _factory import manifest_block


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_builtin_manifests_match_their_click_commands(name: str, tmp_path: Path) -> None:
    """Keeps Conduit's own manifests honest: what --help shows is what Click defines."""
    module, _, attr = BUILTINS[name].partition(":")
    plugin = getattr(importlib.import_module(module), attr)()
    ctx = RecordingContext(name, str(tmp_path))
    plugin.boot(ctx)
    try:
        path = os.path.join(os.path.dirname(conduit.builtins.__file__), name, "conduit-plugin.toml")
        manifest = read_manifest_file(path)
        derived = derive_commands(ctx.commands(), {c.name: c for c in manifest.commands})
        assert compare(list(manifest.commands), derived) == []
    finally:
        plugin.shutdown()


GREETER = manifest_block("""
    name = "greeter"
    api = ">=1.0,<2"
    description = "Greets"   # a comment that --write keeps

    [provides]
    services = ["greeting"]

    [[commands]]
    name = "greet"
    help = "Old help."
""") + textwrap.dedent('''\
    import click
    from conduit.sdk import Plugin


    @click.command()
    @click.argument("who", nargs=-1)
    @click.option("--loud", is_flag=True, help="Shout.")
    @click.option("--times", "-n", type=int, default=1, help="How often.")
    def greet(who, loud, times):
        """Greet WHO. Several of them, even.

        More text that the one-line help leaves out.
        """


    @click.group()
    def repo():
        """Work with repositories."""


    @repo.command("sync")
    @click.option("--mode", type=click.Choice(["fast", "full"]), required=True)
    def sync(mode):
        """Fetch everything."""


    @click.command(hidden=True)
    def internal():
        """For scripts only."""


    @click.command()
    def status():
        """Show the status."""


    class Greeter(Plugin):
        def boot(self, ctx):
            ctx.register_command(greet)
            ctx.register_command(repo)
            ctx.register_command(internal)
            ctx.register_command(status, "tools status")
''')

EXPECTED = """\
[[commands]]
name = "greet"
help = "Greet WHO."
usage = "[WHO]... [--loud] [--times TIMES]"

[[commands]]
name = "repo"
help = "Work with repositories."

[[commands]]
name = "repo sync"
help = "Fetch everything."
usage = "--mode fast|full"

[[commands]]
name = "internal"
help = "For scripts only."
hidden = true

[[commands]]
name = "tools"
help = ""

[[commands]]
name = "tools status"
help = "Show the status."
"""


def test_prints_the_derived_commands(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "greeter.py"
    path.write_text(GREETER)
    r = run("plugins", "manifest", str(path))
    assert r.code == 0, r.err
    assert r.out == f"# greeter: {path}\n{EXPECTED}"


def test_check_lists_each_difference(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "greeter.py"
    path.write_text(
        GREETER.replace('# name = "greet"', '# name = "greet"\n# usage = "WHO"').replace(
            '# [[commands]]\n# name = "greet"',
            '# [[commands]]\n# name = "gone"\n#\n# [[commands]]\n# name = "greet"',
        )
    )
    r = run("plugins", "manifest", "--check", str(path))
    assert r.code == 1
    assert r.out == ""
    assert r.err.splitlines() == [
        f'{path}: command \'greet\': help is "Old help." in the manifest, "Greet WHO." in the code',
        f'{path}: command \'greet\': usage is "WHO" in the manifest, "[WHO]... [--loud] [--times TIMES]" in the code',
        f"{path}: command 'repo' is registered by the code but missing from the manifest",
        f"{path}: command 'repo sync' is registered by the code but missing from the manifest",
        f"{path}: command 'internal' is registered by the code but missing from the manifest",
        f"{path}: command 'tools' is registered by the code but missing from the manifest",
        f"{path}: command 'tools status' is registered by the code but missing from the manifest",
        f"{path}: command 'gone' is in the manifest but the code does not register it",
        "error: the manifest does not match the code",
        f"hint: run 'conduit plugins manifest --write {path}'",
    ]


def test_write_replaces_only_the_commands_of_an_inline_manifest(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "greeter.py"
    path.write_text(GREETER)
    r = run("plugins", "manifest", "--write", str(path))
    assert (r.code, r.out) == (0, f"{path}: wrote 6 commands\n"), r.err
    text = path.read_text()
    assert text.startswith(
        '# /// conduit\n# name = "greeter"\n# api = ">=1.0,<2"\n'
        '# description = "Greets"   # a comment that --write keeps\n#\n# [provides]\n'
        '# services = ["greeting"]\n#\n# [[commands]]\n# name = "greet"\n# help = "Greet WHO."\n'
    )
    assert text.endswith(GREETER.partition("# ///\n")[2])  # the code is untouched
    # The tools-group entry keeps the help written in the manifest.
    text = text.replace('# name = "tools"\n# help = ""', '# name = "tools"\n# help = "Tools."')
    path.write_text(text)
    assert run("plugins", "manifest", "--check", str(path)).code == 0
    assert run("plugins", "manifest", "--write", str(path)).out == f"{path}: up to date\n"
    assert find_plugins(str(path))[0].manifest.provides.services == ["greeting"]  # type: ignore[union-attr]


def test_write_a_package_manifest(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proj = tmp_path / "proj"
    pkg = proj / "src" / "conduit_hi"
    pkg.mkdir(parents=True)
    (proj / "pyproject.toml").write_text(
        '[project]\nname = "conduit-hi"\nversion = "1.0"\n'
        '[project.entry-points."conduit.plugins"]\nhi = "conduit_hi:Hi"\n'
    )
    (pkg / "conduit-plugin.toml").write_text('api = ">=1.0,<2"\n')
    (pkg / "__init__.py").write_text(
        "import click\nfrom conduit.sdk import Plugin\n\n"
        "@click.command()\ndef hi():\n    '''Say hi.'''\n\n"
        "class Hi(Plugin):\n    def boot(self, ctx):\n        ctx.register_command(hi)\n"
    )
    assert run("plugins", "manifest", "--check", str(proj)).code == 1
    assert run("plugins", "manifest", "--write", str(proj)).code == 0
    assert (pkg / "conduit-plugin.toml").read_text() == (
        'api = ">=1.0,<2"\n\n[[commands]]\nname = "hi"\nhelp = "Say hi."\n'
    )
    r = run("plugins", "manifest", "--check", str(proj))
    assert (r.code, r.err) == (0, "")


def test_a_plugin_that_needs_a_service_in_boot(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "svc.py"
    path.write_text(
        manifest_block('name = "svc"\napi = ">=1.0,<2"')
        + "from conduit.sdk import Plugin\n\nclass Svc(Plugin):\n"
        + "    def boot(self, ctx):\n        ctx.service('clock')\n"
    )
    r = run("plugins", "manifest", "--check", str(path))
    assert r.code == 3
    assert r.err == (
        "error: plugin 'svc': asked for service 'clock' in boot(); only commands are collected here\n"
        "hint: ask for services when a command runs, not in boot()\n"
    )
