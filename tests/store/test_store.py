"""The plugin store against real installers: uv and pip install wheels this file builds,
from a PEP 503 simple index served on 127.0.0.1, into temporary venvs with Conduit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import filelock
import pytest

from conduit.sdk import API_VERSION

from _factory import (
    UV,
    PackageIndex,
    build_conduit_wheel,
    conduit_venv,
    make_wheel,
    pty_run,
    sha256,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("store-wheels")
    return {
        "hello-1": make_wheel(out, "cstore-hello", "1.0.0", plugin="hello"),
        "hello-2": make_wheel(
            out,
            "cstore-hello",
            "2.0.0",
            plugin="hello",
            requires=("cstore-dep>=1",),
            capabilities=("network:http",),
        ),
        "hello-3": make_wheel(out, "cstore-hello", "3.0.0", plugin="hello", api=">=2,<3"),
        "dep": make_wheel(out, "cstore-dep", "1.0.0"),
        "world-1": make_wheel(out, "cstore-world", "1.0.0", plugin="world"),
        "world-1.1": make_wheel(out, "cstore-world", "1.1.0", plugin="world"),
        "greeter": make_wheel(
            out, "cstore-greeter", "1.0.0", plugin="greeter", requires=("cstore-world",)
        ),
        "downgrader": make_wheel(
            out, "cstore-downgrader", "1.0.0", plugin="downgrader", requires=("click<8",)
        ),
    }


@pytest.fixture
def index(tmp_path: Path, wheels: dict[str, Path], conduit_home: Path) -> Iterator[PackageIndex]:
    idx = PackageIndex(tmp_path / "index")
    idx.add(*(w for k, w in wheels.items() if k != "world-1.1"))
    (conduit_home / "config.toml").write_text(f'[store]\nindex-url = "{idx.url}"\n')
    yield idx
    idx.close()


# -- venvs with Conduit installed -----------------------------------------------------------


@pytest.fixture(scope="session")
def conduit_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if UV is None:
        pytest.fail("uv is required for these tests (pip install -e '.[test]' installs it)")
    return build_conduit_wheel(tmp_path_factory.mktemp("conduit-wheel"))


@dataclass
class Venv:
    root: Path
    env: dict[str, str]

    @property
    def python(self) -> str:
        return str(self.root / "bin" / "python")

    @property
    def site(self) -> Path:
        return next((self.root / "lib").glob("python3*/site-packages"))

    def conduit(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.root / "bin" / "conduit"), *args],
            capture_output=True,
            text=True,
            timeout=300,
            env=self.env,
            cwd=cwd,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(self.root / "bin" / "conduit"), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )

    def dists(self) -> dict[str, str]:
        """``{name: version}`` of the cstore-* distributions installed."""
        out = {}
        for info in self.site.glob("cstore_*.dist-info"):
            name, version = info.name[: -len(".dist-info")].split("-")
            out[name.replace("_", "-")] = version
        return out

    def version_of(self, dist: str) -> str:
        code = f"import importlib.metadata as m; print(m.version({dist!r}))"
        return subprocess.check_output([self.python, "-c", code], text=True).strip()


@pytest.fixture
def make_venv(tmp_path: Path, conduit_wheel: Path):  # type: ignore[no-untyped-def]
    """A fresh venv with Conduit installed (``seed=True`` adds pip); uv on PATH only if
    ``with_uv``."""
    count = 0

    def make(*, seed: bool = False, with_uv: bool = True) -> Venv:
        nonlocal count
        count += 1
        root = conduit_venv(tmp_path / f"venv{count}", conduit_wheel, seed=seed)
        env = dict(os.environ)
        path = [
            p for p in env.get("PATH", "").split(os.pathsep) if p and not (Path(p) / "uv").exists()
        ]
        if with_uv:
            path.insert(0, os.path.dirname(UV))  # type: ignore[arg-type]
        env["PATH"] = os.pathsep.join(path)
        env["UV_CACHE_DIR"] = str(tmp_path / "uv-cache")  # the test's index only, never stale
        env["PIP_CACHE_DIR"] = str(tmp_path / "pip-cache")
        env.pop("VIRTUAL_ENV", None)
        return Venv(root, env)

    return make


def lock_of(home: Path) -> dict[str, dict[str, object]]:
    """The lock file's packages as Conduit reads them (hashes, url, index, find-links,
    requested, plugins), by name."""
    import msgspec

    from conduit.store import lockfile

    lock = lockfile.read(str(home / "pylock.conduit.toml"))
    assert lock is not None
    return {
        p.name: {k: v for k, v in msgspec.to_builtins(p).items() if v not in (None, [])}
        for p in lock.package
    }


# -- tests ----------------------------------------------------------------------------------


def test_install_upgrade_uninstall_with_uv(
    make_venv, index: PackageIndex, wheels: dict[str, Path], conduit_home: Path
) -> None:
    venv = make_venv()
    r = venv.conduit("plugins", "install", "cstore-hello==1.0.0")
    assert r.returncode == 0, r.stderr
    assert "+ cstore-hello 1.0.0" in r.stdout
    assert venv.conduit("hello-run").stdout == "hello 1.0.0\n"
    lock = lock_of(conduit_home)
    assert lock["cstore-hello"]["version"] == "1.0.0"
    assert lock["cstore-hello"]["hashes"] == [sha256(wheels["hello-1"])]
    assert lock["cstore-hello"]["requested"] == "cstore-hello==1.0.0"
    assert lock["cstore-hello"]["plugins"] == ["hello"]

    # upgrade: a new dependency comes along, the capabilities are listed for approval
    r = venv.conduit("plugins", "install", "cstore-hello>=2,<3", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {"name": "cstore-hello", "from": "1.0.0", "to": "2.0.0"} in out["changes"]
    assert {"name": "cstore-dep", "from": None, "to": "1.0.0"} in out["changes"]
    assert out["plugins"] == [
        {
            "name": "hello",
            "dist": "cstore-hello",
            "version": "2.0.0",
            "capabilities": ["network:http"],
        }
    ]
    assert "  grant with: conduit plugins grant hello network:http" in out["notes"]
    # the new version asks for more than 1.0.0 did: it is not activated until approved
    r = venv.conduit("hello-run")
    assert r.returncode == 3
    assert r.stderr.startswith(
        "error: plugin 'hello': capabilities not granted: network:http "
        "(run 'conduit plugins grant hello network:http' to allow it)"
    )
    assert venv.conduit("plugins", "grant", "hello", "network:http").returncode == 0
    assert venv.conduit("hello-run").stdout == "hello 2.0.0\n"
    lock = lock_of(conduit_home)
    assert set(lock) == {"cstore-hello", "cstore-dep"}
    assert lock["cstore-dep"]["hashes"] == [sha256(wheels["dep"])]
    assert "requested" not in lock["cstore-dep"]
    # Conduit's own requirements are never in the lock file
    assert not {"click", "msgspec", "conduit-devtool"} & set(lock)

    # uninstall by plugin name takes the dependency only it needed along
    r = venv.conduit("plugins", "uninstall", "hello")
    assert r.returncode == 0, r.stderr
    assert venv.dists() == {}
    assert "[[packages]]" not in (conduit_home / "pylock.conduit.toml").read_text()
    assert venv.conduit("hello-run").returncode == 2


def test_a_version_refused_for_its_api_range_restores_the_previous_one(
    make_venv, index: PackageIndex, conduit_home: Path
) -> None:
    venv = make_venv()
    assert venv.conduit("plugins", "install", "cstore-hello==2.0.0").returncode == 0
    assert venv.conduit("plugins", "grant", "hello", "network:http").returncode == 0
    lock_before = (conduit_home / "pylock.conduit.toml").read_bytes()

    r = venv.conduit("plugins", "install", "cstore-hello==3.0.0")
    assert r.returncode == 1
    first = r.stderr.splitlines()[0]
    assert first.startswith("error: refused cstore-hello 3.0.0: plugin 'hello': ")
    assert "supports plugin API >=2,<3, but this Conduit provides 1." in first
    assert "Traceback" not in r.stderr
    assert venv.dists() == {"cstore-hello": "2.0.0", "cstore-dep": "1.0.0"}
    assert venv.conduit("hello-run").stdout == "hello 2.0.0\n"
    assert (conduit_home / "pylock.conduit.toml").read_bytes() == lock_before
    assert not list((conduit_home / "state" / "store").glob("journal-*"))


def test_conduits_own_requirements_cannot_be_changed_or_removed(
    make_venv, index: PackageIndex, wheels: dict[str, Path]
) -> None:
    venv = make_venv()
    click_before = venv.version_of("click")
    r = venv.conduit("plugins", "install", "cstore-downgrader")
    assert r.returncode == 1
    assert r.stderr.startswith("error: install: uv failed: ")
    assert venv.version_of("click") == click_before
    assert venv.dists() == {}
    r = venv.conduit("plugins", "uninstall", "click")
    assert r.returncode == 2
    assert r.stderr.startswith(
        "error: 'click' is part of Conduit itself, not a plugin distribution"
    )
    r = venv.conduit("plugins", "install", "cstore-dep")
    assert r.returncode == 1
    assert "cstore-dep is not a Conduit plugin" in r.stderr
    assert venv.dists() == {}
    r = venv.conduit("plugins", "install", str(wheels["dep"]))  # a file: same refusal
    assert r.returncode == 1
    assert r.stderr.startswith(
        "error: none of the installed distributions provides a Conduit plugin (cstore-dep)"
    )
    assert venv.dists() == {}
    # a plugin distribution another plugin needs stays until that one goes too
    assert venv.conduit("plugins", "install", "cstore-greeter").returncode == 0
    r = venv.conduit("plugins", "uninstall", "world")
    assert r.returncode == 2
    assert r.stderr.startswith("error: 'cstore-world' is needed by cstore-greeter\n")
    r = venv.conduit("plugins", "uninstall", "world", "greeter")
    assert r.returncode == 0, r.stderr
    assert venv.dists() == {}


def test_pip_backend_install_lock_update(
    make_venv, index: PackageIndex, wheels: dict[str, Path], conduit_home: Path
) -> None:
    venv = make_venv(seed=True, with_uv=False)
    r = venv.conduit("plugins", "install", "cstore-world", "cstore-hello==1.0.0")
    assert r.returncode == 0, r.stderr
    assert venv.conduit("world-run").stdout == "world 1.0.0\n"
    lock = lock_of(conduit_home)
    assert lock["cstore-world"]["hashes"] == [sha256(wheels["world-1"])]
    assert lock["cstore-hello"]["hashes"] == [sha256(wheels["hello-1"])]
    index.add(wheels["world-1.1"])
    r = venv.conduit("plugins", "update")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("~ cstore-world 1.0.0 -> 1.1.0\n")
    assert venv.conduit("world-run").stdout == "world 1.1.0\n"
    assert lock_of(conduit_home)["cstore-world"]["version"] == "1.1.0"
    assert lock_of(conduit_home)["cstore-hello"]["version"] == "1.0.0"  # pinned at install


def test_outdated_and_update_keep_the_requested_range(
    make_venv, index: PackageIndex, wheels: dict[str, Path], conduit_home: Path
) -> None:
    venv = make_venv()
    r = venv.conduit("plugins", "install", "cstore-world", "cstore-hello==1.0.0")
    assert r.returncode == 0, r.stderr
    r = venv.conduit("plugins", "outdated", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []  # hello is pinned ==1.0.0 by its install request
    index.add(wheels["world-1.1"])
    r = venv.conduit("plugins", "outdated")
    assert r.stdout.splitlines() == [
        "DISTRIBUTION  PLUGINS  INSTALLED  AVAILABLE",
        "cstore-world  world    1.0.0      1.1.0",
    ]
    r = venv.conduit("plugins", "update", "--dry-run")
    assert r.stdout == "would ~ cstore-world 1.0.0 -> 1.1.0\n"
    assert venv.dists()["cstore-world"] == "1.0.0"
    r = venv.conduit("plugins", "update", "hello", "--json")
    assert json.loads(r.stdout)["notes"] == ["everything is up to date"]
    r = venv.conduit("plugins", "update", "world")
    assert r.returncode == 0, r.stderr
    assert venv.conduit("world-run").stdout == "world 1.1.0\n"


def test_sync_reproduces_a_lock_in_a_fresh_venv_and_refuses_a_bad_hash(
    make_venv, index: PackageIndex, tmp_path: Path, conduit_home: Path
) -> None:
    first = make_venv()
    r = first.conduit("plugins", "install", "cstore-hello==2.0.0", "cstore-world")
    assert r.returncode == 0, r.stderr
    project = tmp_path / "project"
    project.mkdir()
    (project / ".git").mkdir()
    shutil.copy(conduit_home / "pylock.conduit.toml", project / "pylock.conduit.toml")
    good = (project / "pylock.conduit.toml").read_text()

    fresh = make_venv()
    # a tampered hash: refused, nothing installed
    dep_hash = str(lock_of(conduit_home)["cstore-dep"]["hashes"][0]).partition(":")[2]  # type: ignore[index]
    assert dep_hash in good
    (project / "pylock.conduit.toml").write_text(good.replace(dep_hash, "0" * 64))
    r = fresh.conduit("plugins", "sync", cwd=project)
    assert r.returncode == 1
    assert "hash mismatch" in r.stderr.splitlines()[0]
    assert fresh.dists() == {}

    # the committed lock, found in the current project: the same environment
    (project / "pylock.conduit.toml").write_text(good)
    r = fresh.conduit("plugins", "sync", cwd=project)
    assert r.returncode == 0, r.stderr
    assert (
        fresh.dists()
        == first.dists()
        == {
            "cstore-hello": "2.0.0",
            "cstore-dep": "1.0.0",
            "cstore-world": "1.0.0",
        }
    )
    assert fresh.conduit("plugins", "grant", "hello", "network:http").returncode == 0
    assert fresh.conduit("hello-run").stdout == "hello 2.0.0\n"

    # sync removes what the lock does not have; the lock file itself is not touched
    (project / "pylock.conduit.toml").write_text(
        good.split('\n[[packages]]\nname = "cstore-world"')[0] + "\n"
    )
    trimmed = (project / "pylock.conduit.toml").read_bytes()
    r = fresh.conduit("plugins", "sync", cwd=project)
    assert r.returncode == 0, r.stderr
    assert "- cstore-world 1.0.0" in r.stdout
    assert fresh.dists() == {"cstore-hello": "2.0.0", "cstore-dep": "1.0.0"}
    assert (project / "pylock.conduit.toml").read_bytes() == trimmed


def test_two_concurrent_installs_are_serialised(
    make_venv, index: PackageIndex, conduit_home: Path
) -> None:
    venv = make_venv()
    a = venv.popen("plugins", "install", "cstore-hello==2.0.0")
    b = venv.popen("plugins", "install", "cstore-world")
    for p in (a, b):
        _out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert venv.dists() == {"cstore-hello": "2.0.0", "cstore-dep": "1.0.0", "cstore-world": "1.0.0"}
    assert set(lock_of(conduit_home)) == {"cstore-hello", "cstore-dep", "cstore-world"}
    assert venv.conduit("world-run").returncode == 0


def test_sigkill_mid_install_keeps_the_previous_state_and_lock(
    make_venv, index: PackageIndex, conduit_home: Path
) -> None:
    venv = make_venv()
    assert venv.conduit("plugins", "install", "cstore-hello==1.0.0").returncode == 0
    lock_before = (conduit_home / "pylock.conduit.toml").read_bytes()

    # Once the installer has changed the environment, Conduit rebuilds its plugin index
    # (under the index's file lock) before it writes the lock file: holding that file lock
    # here stops it in between, where the kill lands, whatever the machine's speed.
    assert venv.conduit("--help").returncode == 0  # the index is current: no rebuild at start
    (index_file,) = (conduit_home / "cache").glob("index-*.bin")
    marker = venv.site / "cstore_dep-1.0.0.dist-info"
    with filelock.FileLock(f"{index_file}.lock"):
        proc = venv.popen("plugins", "install", "cstore-hello==2.0.0")
        deadline = time.monotonic() + 120
        while not marker.exists():  # the installer has started changing the environment
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.001)
        time.sleep(0.5)  # it goes on to the index rebuild, and waits for the file lock
        assert proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    time.sleep(0.2)  # the installer child died with its parent; let the dust settle

    assert (conduit_home / "pylock.conduit.toml").read_bytes() == lock_before
    assert list((conduit_home / "state" / "store").glob("journal-*"))
    r = venv.conduit("--help")
    assert r.returncode == 0
    assert (
        "conduit: warning: 'conduit plugins install' was interrupted and may have left plugins "
        "half-changed; run 'conduit plugins lock' to restore the state from before it"
    ) in r.stderr
    # the next store command restores the state from before the interrupted install
    r = venv.conduit("plugins", "lock")
    assert r.returncode == 0, r.stderr
    assert "restored the plugins and lock file from before an interrupted 'install'" in r.stdout
    assert venv.dists() == {"cstore-hello": "1.0.0"}
    r = venv.conduit("hello-run")
    assert (r.stdout, r.stderr) == ("hello 1.0.0\n", "")  # the warning is gone too
    assert (conduit_home / "pylock.conduit.toml").read_bytes() == lock_before
    assert not list((conduit_home / "state" / "store").glob("journal-*"))


def test_catalog_search_and_short_names(
    make_venv, index: PackageIndex, tmp_path: Path, conduit_home: Path
) -> None:
    catalog = tmp_path / "catalog.json"
    catalog.write_text(
        json.dumps(
            [
                {
                    "name": "hi",
                    "summary": "Say hello",
                    "package": "cstore-hello==2.0.0",
                    "capabilities": ["network:http"],
                },
                {"name": "world", "summary": "Spin the world", "package": "cstore-world"},
            ]
        )
    )
    config = conduit_home / "config.toml"
    config.write_text(config.read_text() + f'catalog = "{catalog.as_uri()}"\n')
    venv = make_venv()
    r = venv.conduit("plugins", "search", "HELLO")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1].split() == [
        "hi",
        "cstore-hello==2.0.0",
        "network:http",
        "Say",
        "hello",
    ]
    catalog.unlink()  # cached under the cache dir
    r = venv.conduit("plugins", "search", "spin", "--json")
    assert [e["name"] for e in json.loads(r.stdout)] == ["world"]
    catalog.write_text(json.dumps([{"name": "hi", "package": "cstore-hello==2.0.0"}]))
    r = venv.conduit("plugins", "install", "hi")
    assert r.returncode == 0, r.stderr
    assert venv.dists()["cstore-hello"] == "2.0.0"
    assert lock_of(conduit_home)["cstore-hello"]["requested"] == "cstore-hello==2.0.0"


def test_a_wheel_file_is_locked_by_its_url_and_hash(
    make_venv, index: PackageIndex, wheels: dict[str, Path], conduit_home: Path
) -> None:
    venv = make_venv()
    r = venv.conduit("plugins", "install", str(wheels["world-1.1"]))
    assert r.returncode == 0, r.stderr
    locked = lock_of(conduit_home)["cstore-world"]
    assert locked["url"] == wheels["world-1.1"].as_uri()
    assert locked["hashes"] == [sha256(wheels["world-1.1"])]
    assert "requested" not in locked
    fresh = make_venv()
    r = fresh.conduit("plugins", "sync")
    assert r.returncode == 0, r.stderr
    assert fresh.dists() == {"cstore-world": "1.1.0"}
    assert fresh.conduit("world-run").stdout == "world 1.1.0\n"


def test_lock_fails_and_names_a_version_the_index_does_not_offer(
    make_venv, index: PackageIndex, tmp_path: Path, conduit_home: Path
) -> None:
    venv = make_venv()
    assert venv.conduit("plugins", "install", "cstore-world").returncode == 0
    lock_before = (conduit_home / "pylock.conduit.toml").read_bytes()
    # withdrawn from the index it came from (which the lock remembers)
    for f in (index.root / "files").glob("cstore_world-*"):
        f.unlink()
    shutil.rmtree(index.root / "simple")
    index.add()
    r = venv.conduit("plugins", "lock")
    assert r.returncode == 1
    assert r.stderr.startswith("error: ")
    assert "cstore-world" in r.stderr.splitlines()[0]
    assert (conduit_home / "pylock.conduit.toml").read_bytes() == lock_before


DEP_PLUGIN = """\
# /// conduit
# name = "{name}"
# api = ">=1.0,<2"
# isolation = "{isolation}"
# dependencies = ["cstore-dep==1.0.0"]
# [[commands]]
# name = "{name}-run"
# help = "Print the version of its dependency."
# ///
import click
from conduit.sdk import Plugin


@click.command("{name}-run")
def run():
    import cstore_dep

    click.echo(f"{name} uses cstore-dep {{cstore_dep.VERSION}} from {{cstore_dep.__file__}}")


class ThePlugin(Plugin):
    def boot(self, ctx):
        ctx.register_command(run)
"""


def test_single_file_dependencies_go_to_a_private_cached_environment(
    make_venv, index: PackageIndex, conduit_home: Path
) -> None:
    venv = make_venv()
    plugins = conduit_home / "plugins"
    plugins.mkdir()
    config = conduit_home / "config.toml"  # the user consented (docs/permissions.md)
    config.write_text(
        config.read_text() + "[dependencies.consented]\n"
        'alpha = ["cstore-dep==1.0.0"]\nbeta = ["cstore-dep==1.0.0"]\ngamma = ["cstore-missing"]\n'
    )
    (plugins / "alpha.py").write_text(DEP_PLUGIN.format(name="alpha", isolation="in-process"))
    (plugins / "beta.py").write_text(DEP_PLUGIN.format(name="beta", isolation="process"))
    r = venv.conduit("alpha-run")
    assert r.returncode == 0, r.stderr
    envs = [e for e in (conduit_home / "cache" / "envs").iterdir() if e.is_dir()]
    assert len(envs) == 1
    assert r.stdout.startswith("alpha uses cstore-dep 1.0.0 from " + str(envs[0]))
    assert venv.dists() == {}  # not in Conduit's environment
    (plugins / "gamma.py").write_text(
        DEP_PLUGIN.format(name="gamma", isolation="in-process").replace(
            "cstore-dep==1.0.0", "cstore-missing"
        )
    )
    r = venv.conduit("gamma-run")
    assert r.returncode == 3
    assert r.stderr.startswith(
        "error: plugin 'gamma': cannot install its dependencies (cstore-missing): "
    )
    assert r.stderr.endswith(
        "\nhint: check the plugin's dependencies, and [store] index-url in the config\n"
    )
    assert "Traceback" not in r.stderr
    index.close()  # from now on, nothing can be downloaded: the environment is cached
    r = venv.conduit("beta-run")  # same dependency set, in a plugin host process
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("beta uses cstore-dep 1.0.0 from " + str(envs[0]))
    assert len([e for e in (conduit_home / "cache" / "envs").iterdir() if e.is_dir()]) == 1
    assert not [e for e in (conduit_home / "cache" / "envs").iterdir() if ".tmp-" in e.name]


def test_progress_on_a_terminal_quiet_otherwise(make_venv, index: PackageIndex) -> None:
    venv = make_venv()
    r = venv.conduit("plugins", "install", "cstore-world")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # not a terminal: only the result, on stdout

    argv = [str(venv.root / "bin" / "conduit"), "plugins", "install", "cstore-hello==1.0.0"]
    code, out, terminal = pty_run(argv, None, venv.env, timeout=300, pipe_stdout=True)
    assert code == 0, terminal
    assert "conduit: installing cstore-hello==1.0.0 (with uv) ..." in terminal
    assert "conduit: checking the new plugins ..." in terminal
    assert "conduit: verifying hello ..." in terminal
    assert out.startswith("+ cstore-hello 1.0.0\n")


def _install_on_a_terminal(venv: Venv, spec: str, answer: str) -> tuple[int, str, str]:
    """``conduit plugins install SPEC`` with a pseudo-terminal as stdin and stderr (stdout
    piped); ``answer`` is typed at the grant prompt. Returns the exit code, stdout and
    what the terminal showed."""
    return pty_run(
        [str(venv.root / "bin" / "conduit"), "plugins", "install", spec],
        answer,
        {k: v for k, v in venv.env.items() if k != "CI"},
        timeout=300,
        pipe_stdout=True,
    )


def test_install_asks_for_the_capabilities_once_on_a_terminal(
    make_venv, index: PackageIndex, conduit_home: Path
) -> None:
    venv = make_venv()
    config = conduit_home / "config.toml"
    # "no": installed, not granted, and the grant command is listed
    code, out, terminal = _install_on_a_terminal(venv, "cstore-hello==2.0.0", "n")
    assert code == 0, terminal
    assert "┌ conduit: plugin 'hello' 2.0.0 requests:" in terminal
    assert "├   network:http  connect to ANY host (unscoped!)" in terminal
    assert "└ Grant? [y/N] n" in terminal
    assert "+ cstore-hello 2.0.0" in out
    assert "plugin 'hello' asks for: network:http\n" in out
    assert "  grant with: conduit plugins grant hello network:http\n" in out
    assert "[grants]" not in config.read_text()
    assert venv.conduit("hello-run").returncode == 3  # not activated

    # "yes" on the next install of it: written to the config; the command runs, unasked
    assert venv.conduit("plugins", "uninstall", "cstore-hello").returncode == 0
    code, out, terminal = _install_on_a_terminal(venv, "cstore-hello==2.0.0", "y")
    assert code == 0, terminal
    assert terminal.count("Grant? [y/N]") == 1
    assert f"plugin 'hello': granted network:http (saved in {config})\n" in out
    assert "grant with" not in out
    assert 'hello = ["network:http"]' in config.read_text()
    r = venv.conduit("hello-run")
    assert (r.returncode, r.stdout) == (0, "hello 2.0.0\n"), r.stderr

    # granted already (grants outlive an uninstall): no question, nothing to list
    assert venv.conduit("plugins", "uninstall", "cstore-hello").returncode == 0
    code, out, terminal = _install_on_a_terminal(venv, "cstore-hello==2.0.0", "y")
    assert code == 0, terminal
    assert "Grant?" not in terminal
    assert "asks for" not in out and "granted" not in out


def test_update_refuses_a_version_that_needs_another_conduit(
    make_venv, index: PackageIndex, wheels: dict[str, Path], conduit_home: Path
) -> None:
    # docs/user-guide.md: the index does not know plugin API ranges, so a newer version
    # for another Conduit shows in 'outdated'; 'update' refuses it and keeps the old one.
    (index.root / "files" / wheels["hello-3"].name).unlink()
    index.add()  # the index pages without it
    venv = make_venv()
    assert venv.conduit("plugins", "install", "cstore-hello").returncode == 0
    assert venv.dists()["cstore-hello"] == "2.0.0"
    lock_before = (conduit_home / "pylock.conduit.toml").read_bytes()
    index.add(wheels["hello-3"])
    r = venv.conduit("plugins", "outdated")
    assert "cstore-hello  hello    2.0.0      3.0.0" in r.stdout.splitlines(), r.stdout
    r = venv.conduit("plugins", "update")
    assert r.returncode == 1
    first = r.stderr.splitlines()[0]
    assert first.startswith("error: refused cstore-hello 3.0.0: plugin 'hello': "), first
    assert first.endswith(
        f"api: plugin 'hello' supports plugin API >=2,<3, but this Conduit provides {API_VERSION}"
    ), first
    assert "nothing was changed (the previous state is restored)" in r.stderr
    assert venv.dists()["cstore-hello"] == "2.0.0"
    assert (conduit_home / "pylock.conduit.toml").read_bytes() == lock_before


# -- builds: only for the sources named on the command line -----------------------------------


def _plugin_files(dist: str, plugin: str) -> dict[str, object]:
    """The files and entry point of a plugin distribution, for ``source_tree`` and
    ``make_sdist`` (tests/store/test_dependency_consent.py): a build backend that writes its
    ``marker`` when it runs."""
    pkg = dist.replace("-", "_")
    files = {
        f"{pkg}/__init__.py": "",
        f"{pkg}/conduit-plugin.toml": (
            f'api = ">=1.0,<2"\n[[commands]]\nname = "{plugin}-run"\nhelp = "Run."\n'
        ),
        f"{pkg}/plugin.py": (
            "import click\nfrom conduit.sdk import Plugin as Base\n"
            f"@click.command('{plugin}-run')\ndef run():\n    click.echo('{plugin} built')\n"
            "class Plugin(Base):\n    def boot(self, ctx):\n        ctx.register_command(run)\n"
        ),
    }
    return {"files": files, "entry_points": f"[conduit.plugins]\n{plugin} = {pkg}.plugin:Plugin\n"}


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_install_builds_only_the_sources_named_on_the_command_line(
    make_venv, index: PackageIndex, tmp_path: Path, installer: str
) -> None:
    from test_dependency_consent import make_sdist, source_tree

    venv = make_venv(seed=True, with_uv=False) if installer == "pip" else make_venv()
    evil = tmp_path / "outside" / "pwned"  # written by build code nobody named
    evil.parent.mkdir()
    named = tmp_path / "named-built"  # by the build code of what the user named
    index.add(make_sdist(tmp_path / "dists", "cstore-evil", "0.1", marker=evil))

    # the named directory builds; its dependency, an sdist on the index, does not
    needy = source_tree(
        tmp_path / "needy",
        "cstore-needy",
        "1.0.0",
        marker=named,
        requires=("cstore-evil",),
        **_plugin_files("cstore-needy", "needy"),  # type: ignore[arg-type]
    )
    r = venv.conduit("plugins", "install", str(needy))
    assert r.returncode == 1, r.stdout
    # (pip's warnings before its error lines come above the error: "pip's last lines:")
    assert f"\nerror: install: {installer} failed: " in "\n" + r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not evil.exists()
    assert venv.dists() == {}

    # nor by its name from the index
    r = venv.conduit("plugins", "install", "cstore-evil")
    assert r.returncode == 1
    assert not evil.exists()
    if installer == "uv":
        assert r.stderr.splitlines()[-1] == (
            "hint: Conduit installs wheels only: a source distribution is built only when "
            "you name it (a directory or an sdist file on the command line)"
        )

    # what the user names builds: a source directory, an sdist file
    project = source_tree(
        tmp_path / "named",
        "cstore-named",
        "1.0.0",
        marker=named,
        **_plugin_files("cstore-named", "named"),  # type: ignore[arg-type]
    )
    r = venv.conduit("plugins", "install", str(project))
    assert r.returncode == 0, r.stderr
    assert named.exists()
    assert venv.conduit("named-run").stdout == "named built\n"
    named.unlink()
    sdist = make_sdist(
        tmp_path / "sdists",
        "cstore-packed",
        "1.0.0",
        marker=named,
        **_plugin_files("cstore-packed", "packed"),
    )
    r = venv.conduit("plugins", "install", str(sdist))
    assert r.returncode == 0, r.stderr
    assert named.exists()
    assert venv.conduit("packed-run").stdout == "packed built\n"
    assert not evil.exists()
