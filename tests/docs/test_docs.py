"""Docs as tests: every console example in README.md and docs/ runs against the real CLI.

The syntax is in tests/_doctest.py and docs/architecture.md. Each document
runs in a world of its own; SETUP below prepares the plugins and files a document's
examples assume (what the prose around them describes).
"""

from __future__ import annotations

import re
import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from _doctest import REPO, World, blocks, code_blocks, doc_home, documents, run_block

HELLO = """
    # /// conduit
    # name = "hello"
    # api = ">=1.0,<2"
    # description = "Say hello"
    #
    # [[commands]]
    # name = "hello"
    # help = "Greet someone."
    # usage = "[NAME]"
    # ///
    import click
    from conduit.sdk import Plugin


    @click.command()
    @click.argument("name", default="world")
    def hello(name):
        \"\"\"Greet someone.\"\"\"
        click.echo(f"Hello, {name}!")


    class Hello(Plugin):
        def boot(self, ctx):
            ctx.register_command(hello)
"""

GREETER = """
    # /// conduit
    # name = "greeter"
    # version = "0.3.0"
    # api = ">=1.0,<2"
    # description = "Greetings"
    #
    # [[commands]]
    # name = "hello"
    # help = "Say good day."
    # ///
    import click
    from conduit.sdk import Plugin


    @click.command()
    def hello():
        click.echo("Good day.")


    class Greeter(Plugin):
        def boot(self, ctx):
            ctx.register_command(hello)
"""


FETCHER = """
    # /// conduit
    # name = "fetcher"
    # api = ">=1.0,<2"
    # description = "Fetch things"
    # capabilities = ["network:http:api.github.com"]
    #
    # [[commands]]
    # name = "fetch"
    # help = "Fetch."
    # ///
    import click
    from conduit.sdk import Plugin


    @click.command()
    def fetch():
        click.echo("fetched")


    class Fetcher(Plugin):
        def boot(self, ctx):
            ctx.register_command(fetch)
"""


def tutorial_1(world: World) -> None:
    # Step 4's new command, as the document shows it, for `splice` to put in weather.py.
    command = code_blocks(REPO / "docs/tutorials/1-single-file.md", "python")[1]
    (world.fixtures / "weather-command.py").write_text(command, encoding="utf-8")


def tutorial_2(world: World) -> None:
    # The files the document shows, in its order: the two modules, the fixed manifest
    # and the tests.
    init, counting, test = code_blocks(REPO / "docs/tutorials/2-package.md", "python")
    (manifest,) = code_blocks(REPO / "docs/tutorials/2-package.md", "toml")
    for name, text in [
        ("__init__.py", init),
        ("counting.py", counting),
        ("conduit-plugin.toml", manifest),
        ("test_gitstat.py", test),
    ]:
        (world.fixtures / name).write_text(text, encoding="utf-8")


def tutorial_3(world: World) -> None:
    (script,) = code_blocks(REPO / "docs/tutorials/3-process.md", "sh")
    (world.fixtures / "conduit-uptime").write_text(script, encoding="utf-8")


CATALOG = """[
  {"name": "hi", "summary": "Say hello", "package": "conduit-hello==2.0.0",
   "capabilities": ["network:http"]}
]
"""


# The project of the user guide's `todo` and `loc` examples, and its dotenv files.
APP = """import sys


def main():
    \"\"\"Run.\"\"\"
    config = {}  # TODO (ada) read the config file
    # FIXME real exit codes
    return 0 if config is not None else 1


sys.exit(main())
"""

# The repositories of the user guide's `repos` examples, in ~/src, their remotes in
# ~/origins; fixed dates make the commit ids the document shows.
REPOS = """set -e
export GIT_AUTHOR_DATE=2026-12-01T12:00:00Z GIT_COMMITTER_DATE=2026-12-01T12:00:00Z
commit() { echo "$1" >> README.md && git add README.md && git commit -qm "$1"; }
origin() {  # origin NAME: a bare remote with one commit, cloned into ~/src/NAME
  git init -q ~/origins/$1.work && (cd ~/origins/$1.work && commit start)
  git clone -q --bare ~/origins/$1.work ~/origins/$1.git
  git -C ~/origins/$1.work remote add origin ~/origins/$1.git
  git clone -q ~/origins/$1.git ~/src/$1
}
mkdir -p ~/src ~/origins
git init -q ~/src/api && cd ~/src/api && commit start
git branch done-feature && git branch old-fix && git checkout -qb wip
origin docs && (cd ~/origins/docs.work && commit theirs && git push -q origin main)
cd ~/src/docs && commit ours && git fetch -q
origin lib && (cd ~/origins/lib.work && commit more && git push -q origin main)
git init -q ~/src/tools && cd ~/src/tools && commit start && git checkout -q --detach
origin web && cd ~/src/web && echo draft > notes.txt && git add notes.txt && git stash -q
echo change >> README.md && echo new > todo.txt
"""

DOTENV = """# Database
DATABASE_URL="postgres://prod.internal/app"  # the real one
export API_KEY='sk-live-123'
DEBUG=1
"""


def fetcher(capabilities: list[str], dependencies: list[str] | None = None) -> str:
    """The fetcher of the permission documents, version 1.2.0, with command ``fetch``."""
    deps = f"# dependencies = {dependencies!r}\n" if dependencies else ""
    return (
        '# /// conduit\n# name = "fetcher"\n# version = "1.2.0"\n# api = ">=1.0,<2"\n'
        f'# description = "Fetch things"\n# capabilities = {capabilities!r}\n{deps}#\n'
        '# [[commands]]\n# name = "fetch"\n# help = "Fetch."\n# ///\n'
        "import click\nfrom conduit.sdk import Plugin\n\n\n"
        "@click.command()\ndef fetch():\n    click.echo('fetched')\n\n\n"
        "class Fetcher(Plugin):\n    def boot(self, ctx):\n        ctx.register_command(fetch)\n"
    ).replace("'", '"')


PROBE = """
    # /// conduit
    # name = "probe"
    # api = ">=1.0,<2"
    # description = "Try things"
    #
    # [[commands]]
    # name = "probe"
    # help = "Try things."
    # ///
    import click
    from conduit.sdk import Plugin


    @click.group()
    def probe():
        \"\"\"Try things.\"\"\"


    @probe.command()
    @click.argument("path")
    def read(path):
        with open(path) as f:
            click.echo(f.read())


    class Probe(Plugin):
        def boot(self, ctx):
            ctx.register_command(probe)
"""


def permissions(world: World) -> None:
    world.plugins.mkdir(parents=True)
    for name, source in [
        ("fetcher-data.py", fetcher(["filesystem:read:/srv/data", "network:http"])),
        ("fetcher.py", fetcher(["env:read:HOME", "network:http"])),
        ("fetcher-deps.py", fetcher(["network:http:api.github.com"], ["httpx>=0.27", "rich>=13"])),
    ]:
        (world.fixtures / name).write_text(source, encoding="utf-8")
    world.write_plugin("probe.py", PROBE, installed=False)


def permissions_process(world: World) -> None:
    world.write_plugin(
        "fetcher.py",
        """
        # /// conduit
        # name = "fetcher"
        # api = ">=1.0,<2"
        # description = "Fetch things"
        # isolation = "process"
        # capabilities = ["network:http:api.github.com"]
        #
        # [[commands]]
        # name = "fetcher"
        # help = "Fetch things."
        # ///
        import urllib.request

        import click
        from conduit.sdk import Plugin


        @click.group()
        def fetcher():
            \"\"\"Fetch things.\"\"\"


        @fetcher.command()
        def sync():
            urllib.request.urlopen("http://example.com/", timeout=10)


        class Fetcher(Plugin):
            def boot(self, ctx):
                ctx.register_command(fetcher)
        """,
    )


def failing(name: str, command: str, module: str, description: str) -> str:
    """A plugin whose import fails on line 13 (``import MODULE``)."""
    return (
        f'# /// conduit\n# name = "{name}"\n# api = ">=1.0,<2"\n# description = "{description}"\n'
        f'#\n# [[commands]]\n# name = "{command}"\n# help = "Try."\n# ///\n'
        f"import click\nfrom conduit.sdk import Plugin\n\nimport {module}  # noqa: F401\n\n\n"
        "class Failing(Plugin):\n    def boot(self, ctx):\n        pass\n"
    )


def process_plugin(name: str, body: str, capabilities: str = "[]") -> str:
    """A process plugin with one command ``NAME`` running ``body`` (indented 4)."""
    return (
        f'# /// conduit\n# name = "{name}"\n# api = ">=1.0,<2"\n# description = "{name}"\n'
        f'# isolation = "process"\n# capabilities = {capabilities}\n'
        f'#\n# [[commands]]\n# name = "{name}"\n# help = "{name}."\n# ///\n'
        "import click\nfrom conduit.sdk import Plugin\n\n\n"
        f"@click.command()\n@click.argument('args', nargs=-1)\ndef {name}(args):\n{body}\n\n\n"
        f"class P(Plugin):\n    def boot(self, ctx):\n        ctx.register_command({name})\n"
    )


PROCESS_PROBE = (
    '# /// conduit\n# name = "probe"\n# api = ">=1.0,<2"\n# description = "Try things"\n'
    '# isolation = "process"\n#\n# [[commands]]\n# name = "probe"\n# help = "Try things."\n'
    "# ///\n" + textwrap.dedent(PROBE).split("# ///\n", 1)[1]
)


def simple(name: str, *, extra: str = "", manifest: str = "", echo: str = "") -> str:
    """A plugin with one command ``NAME`` printing ``echo`` (default: NAME), plus
    ``extra`` (indented methods of the Plugin class) and ``manifest`` lines."""
    return (
        f'# /// conduit\n# name = "{name}"\n# api = ">=1.0,<2"\n# description = "{name}"\n'
        f'{manifest}#\n# [[commands]]\n# name = "{name}"\n# help = "{name}."\n# ///\n'
        "import click\nfrom conduit.sdk import Plugin\n\n\n"
        f"@click.command()\ndef {name}():\n    click.echo({(echo or name)!r})\n\n\n"
        f"class P(Plugin):\n    def boot(self, ctx):\n        ctx.register_command({name})\n{extra}"
    )


# The eight plugins of the user guide's `plugins bisect` and `plugins health` examples:
# telemetry breaks `conduit notes` (it activates with it and fails to boot).
BISECT = {
    "backup": simple(
        "backup",
        extra="\n    def health(self):\n        return ('warning', 'last backup is 9 days old')\n",
    ),
    "deploy": simple("deploy"),
    "greeter": simple("greeter", echo="greeter greeter"),
    "lint": simple("lint"),
    "notes": simple("notes", echo="no notes"),
    "stamp": simple("stamp"),
    "sync": simple(
        "sync",
        manifest='# isolation = "process"\n',
        extra="\n    def health(self):\n        raise ConnectionError("
        "'https://sync.example.org: connection refused')\n",
    ),
    "telemetry": (
        '# /// conduit\n# name = "telemetry"\n# api = ">=1.0,<2"\n# description = "Telemetry"\n'
        '# activation = ["command:notes"]\n# ///\nfrom conduit.sdk import Plugin\n\n\n'
        "class Telemetry(Plugin):\n    def boot(self, ctx):\n"
        "        raise RuntimeError('collector unreachable')\n"
    ),
}


def user_guide(world: World) -> None:
    for name, source in BISECT.items():
        (world.fixtures / "bisect").mkdir(exist_ok=True)
        (world.fixtures / "bisect" / f"{name}.py").write_text(source, encoding="utf-8")
    world.write_plugin("hello.py", HELLO)
    world.write_plugin("greeter.py", GREETER, installed=False)
    world.write_plugin("fetcher.py", FETCHER, installed=False)
    for name, source in [
        ("flaky.py", failing("flaky", "flaky", "missing_module", "Sometimes works")),
        ("broken.py", failing("broken", "boom", "nosuchmodule_xyz", "Broken")),
        (
            "crashy.py",
            process_plugin(
                "crashy", "    import os, signal\n    os.kill(os.getpid(), signal.SIGSEGV)"
            ),
        ),
        ("slow.py", process_plugin("slow", "    import time\n    time.sleep(60)")),
        ("probe.py", PROCESS_PROBE),
        ("catalog.json", CATALOG),
        ("app/src/app.py", APP),
        ("app/README.md", "# App\n\nSays nothing.\n"),
        ("env/.env", DOTENV),
        ("repos.sh", REPOS),
        (
            "env/.env.example",
            "DATABASE_URL=postgres://localhost/app\nAPI_KEY=\nREDIS_URL=redis://localhost\n",
        ),
    ]:
        (world.fixtures / name).parent.mkdir(parents=True, exist_ok=True)
        (world.fixtures / name).write_text(source, encoding="utf-8")


def plugin_guide(world: World) -> None:
    world.write_plugin("hello.py", HELLO)
    # The guide's single-file plugins, by name, for setup comments to copy in.
    for source in code_blocks(REPO / "docs/plugin-guide.md", "python"):
        m = re.match(r'# /// conduit\n# name = "([a-z-]+)"', source)
        if m:
            (world.fixtures / f"{m.group(1)}.py").write_text(source, encoding="utf-8")
    # `plugins manifest --check`: a command changed since its manifest was written.
    world.write_plugin(
        "weather.py",
        """
        # /// conduit
        # name = "weather"
        # api = ">=1.0,<2"
        # description = "Today's weather"
        #
        # [[commands]]
        # name = "weather"
        # help = "Greet someone."
        # usage = "[NAME] [--shout]"
        # ///
        import click
        from conduit.sdk import Plugin


        @click.command()
        @click.argument("city")
        @click.option("--unit", type=click.Choice(["c", "f"]), default="c")
        def weather(city, unit):
            \"\"\"Show today's weather in CITY.\"\"\"


        class Weather(Plugin):
            def boot(self, ctx):
                ctx.register_command(weather)
        """,
        installed=False,
    )
    # `plugins check`: an import over the budget.
    world.write_plugin(
        "slow.py",
        """
        # /// conduit
        # name = "slow"
        # api = ">=1.0,<2"
        # description = "Slow to import"
        #
        # [[commands]]
        # name = "slow"
        # help = "Be slow."
        # ///
        import time

        import click
        from conduit.sdk import Plugin

        time.sleep(0.2)  # a heavy import


        @click.command()
        def slow():
            \"\"\"Be slow.\"\"\"


        class Slow(Plugin):
            def boot(self, ctx):
                ctx.register_command(slow)
        """,
        installed=False,
    )


def protocol(world: World) -> None:
    # The trace example runs the JavaScript example plugin.
    if shutil.which("node") is None:
        pytest.skip("the protocol page's example needs Node.js")
    shutil.copy2(REPO / "examples/js-plugin/conduit-hello-js", world.fixtures)


def wasm(world: World) -> None:
    import wasmtime

    # The page's WAT module (it prints "hello"), compiled, as the plugin `hello`.
    (wat,) = [w for w in code_blocks(REPO / "docs/wasm.md", "wat") if '"hello\\n"' in w]
    (world.fixtures / "hello.wasm").write_bytes(wasmtime.wat2wasm(wat))
    (world.fixtures / "hello.toml").write_text(
        'api = ">=1.0"\ndescription = "Say hello"\n\n[[commands]]\nname = "hello"\nhelp = "Say hello."\n',
        encoding="utf-8",
    )


def manifest(world: World) -> None:
    world.write_plugin(
        "broken.py",
        '# /// conduit\n# name = "broken"\n# api = ">=1.0,<2"\n# descripton = "x"\n# ///\n',
    )


SETUP: dict[str, Callable[[World], None]] = {
    "docs/tutorials/1-single-file.md": tutorial_1,
    "docs/permissions.md": permissions,
    "docs/permissions-process.md": permissions_process,
    "docs/tutorials/2-package.md": tutorial_2,
    "docs/tutorials/3-process.md": tutorial_3,
    "docs/user-guide.md": user_guide,
    "docs/plugin-guide.md": plugin_guide,
    "docs/manifest.md": manifest,
    "docs/protocol.md": protocol,
    "docs/wasm.md": wasm,
}

# Blocks that cannot run here, per document: each is marked in the document with
# `<!-- doctest: skip (REASON) -->`; a new skip must be counted here too.
SKIPS: dict[str, int] = {
    "docs/permissions-process.md": 1,
    "docs/plugin-guide.md": 2,
    "docs/protocol.md": 1,
    "docs/tutorials/2-package.md": 1,
    "docs/tutorials/4-webassembly.md": 3,
    "docs/user-guide.md": 4,  # + the bundle examples (tests/bundle runs them)
    "docs/wasm.md": 5,
}

DOCS = [p for p in documents() if any(b.skip is None and not b.store for b in blocks(p))]


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(REPO)) for p in DOCS])
def test_console_examples(path: Path, tmp_path: Path) -> None:
    rel = str(path.relative_to(REPO))
    world = World(tmp_path, doc_home(path))
    SETUP.get(rel, lambda w: None)(world)
    problems = []
    for block in blocks(path):
        if block.skip is None and not block.store:  # store blocks: test_docs_store.py
            problems += run_block(world, block)
    assert not problems, "\n\n".join(problems)


def test_every_skip_is_counted() -> None:
    counted = {}
    for path in documents():
        skipped = [b for b in blocks(path) if b.skip is not None]
        if skipped:
            counted[str(path.relative_to(REPO))] = len(skipped)
    assert counted == SKIPS


def test_no_example_waits_for_a_fixture() -> None:
    """A skip is for an example that cannot run here (a terminal prompt, a real package
    index or account, a minutes-long build), never for a fixture still to be written."""
    todo = [
        f"{path.relative_to(REPO)}:{b.line}"
        for path in documents()
        for b in blocks(path)
        if b.skip is not None and b.skip.startswith("todo")
    ]
    assert not todo
