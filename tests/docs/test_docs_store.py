"""Docs as tests, the plugin store's examples (``<!-- doctest: store -->``): they run, in
order, in a world of their own with a package index on 127.0.0.1 holding the example's
releases and a venv with Conduit (``~/.venv``) for the store to install into.

``publish WHEEL...`` (for setup comments) puts a release on the index; the wheels are
in ``$FIXTURES/wheels``.
"""

from __future__ import annotations

import io
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from _doctest import REPO, World, blocks, doc_home, documents, run_block

from _factory import UV, PackageIndex, build_conduit_wheel, conduit_venv, make_wheel

pytestmark = pytest.mark.slow

PUBLISH = """
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, TESTS)
from _factory import PackageIndex

PackageIndex.add(SimpleNamespace(root=Path(ROOT)), *(Path(a) for a in sys.argv[1:]))
"""


def sdist(out: Path, name: str, version: str) -> Path:
    """A source distribution (never built here: the store refuses to)."""
    path = out / f"{name}-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        data = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
        info = tarfile.TarInfo(f"{name}-{version}/PKG-INFO")
        info.size, info.mtime = len(data), 1577836800
        tar.addfile(info, io.BytesIO(data))
    return path


GAMMA = """# /// conduit
# name = "gamma"
# api = ">=1.0,<2"
# description = "Gamma"
# dependencies = ["cstore-missing"]
#
# [[commands]]
# name = "gamma-run"
# help = "Run gamma."
# ///
import click
from conduit.sdk import Plugin


@click.command("gamma-run")
def run():
    click.echo("gamma")


class Gamma(Plugin):
    def boot(self, ctx):
        ctx.register_command(run)
"""


def user_guide(world: World, index: PackageIndex) -> None:
    wheels = world.fixtures / "wheels"
    hello = "conduit-hello"
    index.add(
        make_wheel(wheels, hello, "1.0.0", plugin="hello"),
        make_wheel(
            wheels,
            hello,
            "1.1.0",
            plugin="hello",
            code="import hello_backend  # noqa\n",
        ),
        make_wheel(
            wheels,
            hello,
            "2.0.0",
            plugin="hello",
            requires=("hello-lib>=1",),
            capabilities=("network:http",),
        ),
        make_wheel(wheels, hello, "3.0.0", plugin="hello", api=">=2,<3"),
        make_wheel(wheels, "hello-lib", "1.0.0"),
        make_wheel(wheels, "conduit-world", "1.0.0", plugin="world"),
        make_wheel(
            wheels, "conduit-downgrader", "1.0.0", plugin="downgrader", requires=("click<8",)
        ),
        sdist(wheels, "oldplugin", "1.0.0"),
    )
    make_wheel(wheels, "conduit-world", "1.1.0", plugin="world")  # published later
    (world.fixtures / "gamma.py").write_text(GAMMA, encoding="utf-8")


SETUP: dict[str, Callable[[World, PackageIndex], None]] = {
    "docs/user-guide.md": user_guide,
}

DOCS = [p for p in documents() if any(b.store and b.skip is None for b in blocks(p))]


@pytest.fixture(scope="session")
def conduit_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if UV is None:
        pytest.fail("uv is required for these tests (pip install -e '.[test]' installs it)")
    return build_conduit_wheel(tmp_path_factory.mktemp("conduit-wheel"))


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(REPO)) for p in DOCS])
def test_store_examples(path: Path, tmp_path: Path, conduit_wheel: Path) -> None:
    rel = str(path.relative_to(REPO))
    world = World(tmp_path, doc_home(path))
    venv = conduit_venv(world.home / ".venv", conduit_wheel)
    index = PackageIndex(tmp_path / "index")
    try:
        publish = tmp_path / "bin" / "publish"
        source = PUBLISH.replace("TESTS", repr(str(REPO / "tests")))
        publish.write_text(
            f"#!{sys.executable}\n" + source.replace("ROOT", repr(str(index.root))),
            encoding="utf-8",
        )
        publish.chmod(0o755)
        world.env["PATH"] = f"{venv / 'bin'}:{world.env['PATH']}"
        world.env["UV_CACHE_DIR"] = str(tmp_path / "uv-cache")  # the index's releases only
        world.env["PIP_CACHE_DIR"] = str(tmp_path / "pip-cache")
        world.config.mkdir(parents=True)
        (world.config / "config.toml").write_text(f'[store]\nindex-url = "{index.url}"\n')
        SETUP[rel](world, index)
        problems = []
        for block in blocks(path):
            if block.store and block.skip is None:
                problems += run_block(world, block)
        assert not problems, "\n\n".join(problems)
    finally:
        index.close()
