"""Resolution against what is installed, and sources remembered in the lock: real uv and
pip, a real PEP 503 index on 127.0.0.1 that does not carry Conduit (the real situation for
a private index), wheels this file builds."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_store import Venv, conduit_wheel, lock_of, make_venv  # noqa: F401 (fixtures)

from _factory import PackageIndex, make_wheel, sha256

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("sources-wheels")
    # what 'plugins new --template package' makes: it depends on Conduit itself
    tmpl = ("conduit-devtool", "click>=8.1")
    return {
        "tmpl-1": make_wheel(out, "cstore-tmpl", "0.1.0", plugin="tmpl", requires=tmpl),
        "tmpl-2": make_wheel(out, "cstore-tmpl", "0.2.0", plugin="tmpl", requires=tmpl),
        "tmpl-big": make_wheel(
            out, "cstore-tmpl", "9.0.0", plugin="tmpl", requires=("conduit-devtool>=99",)
        ),
        "world-1": make_wheel(out, "cstore-world", "1.0.0", plugin="world"),
        "world-2": make_wheel(out, "cstore-world", "2.0.0", plugin="world"),
        "local": make_wheel(out, "cstore-local", "1.0.0", plugin="local"),
    }


@pytest.fixture
def index(tmp_path: Path, built: dict[str, Path], conduit_home: Path) -> Iterator[PackageIndex]:
    idx = PackageIndex(tmp_path / "index")
    idx.add(built["tmpl-1"], built["world-1"])
    (conduit_home / "config.toml").write_text(f'[store]\nindex-url = "{idx.url}"\n')
    yield idx
    idx.close()


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_a_plugin_that_depends_on_conduit_can_be_checked_and_updated(
    make_venv,  # noqa: F811
    index: PackageIndex,
    built: dict[str, Path],
    installer: str,
) -> None:
    venv: Venv = make_venv(seed=installer == "pip", with_uv=installer == "uv")
    r = venv.conduit("plugins", "install", "cstore-tmpl", "cstore-world")
    assert r.returncode == 0, r.stderr
    r = venv.conduit("plugins", "outdated", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []
    # a newer release, and one that needs another Conduit (never offered)
    index.add(built["tmpl-2"], built["tmpl-big"], built["world-2"])
    r = venv.conduit("plugins", "outdated", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["name"]: (row["installed"], row["available"]) for row in json.loads(r.stdout)}
    assert rows == {"cstore-tmpl": ("0.1.0", "0.2.0"), "cstore-world": ("1.0.0", "2.0.0")}
    r = venv.conduit("plugins", "update", "tmpl")
    assert r.returncode == 0, r.stderr
    assert "~ cstore-tmpl 0.1.0 -> 0.2.0" in r.stdout
    assert venv.dists() == {"cstore-tmpl": "0.2.0", "cstore-world": "1.0.0"}
    assert venv.conduit("tmpl-run").stdout == "tmpl 0.2.0\n"


def test_a_plugin_installed_from_a_path_is_left_out_of_update_and_outdated(
    make_venv,  # noqa: F811
    index: PackageIndex,
    built: dict[str, Path],
    tmp_path: Path,
) -> None:
    venv: Venv = make_venv()
    # cstore-local is on no index: only its wheel file
    local = tmp_path / "elsewhere"
    local.mkdir()
    shutil.copy(built["local"], local)
    wheel = next(local.glob("*.whl"))
    r = venv.conduit("plugins", "install", str(wheel), "cstore-world")
    assert r.returncode == 0, r.stderr
    index.add(built["world-2"])
    wheel.unlink()  # gone: an update that touched it again would fail
    r = venv.conduit("plugins", "outdated", "--json")
    assert r.returncode == 0, r.stderr
    assert [row["name"] for row in json.loads(r.stdout)] == ["cstore-world"]
    r = venv.conduit("plugins", "update")
    assert r.returncode == 0, r.stderr
    assert venv.dists() == {"cstore-local": "1.0.0", "cstore-world": "2.0.0"}


def _links(tmp_path: Path, *wheels: Path) -> Path:
    links = tmp_path / "links"
    links.mkdir(exist_ok=True)
    for w in wheels:
        shutil.copy(w, links)
    return links


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_find_links_given_once_are_remembered_by_the_lock(
    make_venv,  # noqa: F811
    index: PackageIndex,
    built: dict[str, Path],
    tmp_path: Path,
    conduit_home: Path,
    installer: str,
) -> None:
    links = _links(tmp_path, built["local"])  # cstore-local is on no index
    venv: Venv = make_venv(seed=installer == "pip", with_uv=installer == "uv")
    r = venv.conduit("plugins", "install", "--find-links", str(links), "cstore-local")
    assert r.returncode == 0, r.stderr
    locked = lock_of(conduit_home)["cstore-local"]
    assert locked["find-links"] == [str(links)]
    assert locked["index"] == index.url
    # another plugin, without --find-links: the lock is written again
    r = venv.conduit("plugins", "install", "cstore-world")
    assert r.returncode == 0, r.stderr
    assert lock_of(conduit_home)["cstore-local"]["find-links"] == [str(links)]
    # the lock reproduced in a fresh venv, without --find-links
    fresh: Venv = make_venv(seed=installer == "pip", with_uv=installer == "uv")
    r = fresh.conduit("plugins", "sync")
    assert r.returncode == 0, r.stderr
    assert fresh.dists() == {"cstore-local": "1.0.0", "cstore-world": "1.0.0"}
    # uninstall asks no index: it works with the index gone
    index.close()
    r = venv.conduit("plugins", "uninstall", "cstore-world")
    assert r.returncode == 0, r.stderr
    assert venv.dists() == {"cstore-local": "1.0.0"}
    assert set(lock_of(conduit_home)) == {"cstore-local"}


def test_find_links_in_the_config_are_hashed_with_uv(
    make_venv,  # noqa: F811
    index: PackageIndex,
    built: dict[str, Path],
    tmp_path: Path,
    conduit_home: Path,
) -> None:
    links = _links(tmp_path, built["local"])
    config = conduit_home / "config.toml"
    config.write_text(config.read_text() + f'find-links = ["{links}"]\n')
    venv: Venv = make_venv()
    r = venv.conduit("plugins", "install", "cstore-local")
    assert r.returncode == 0, r.stderr
    assert lock_of(conduit_home)["cstore-local"]["hashes"] == [sha256(built["local"])]
    r = venv.conduit("plugins", "install", "cstore-world")
    assert r.returncode == 0, r.stderr
    r = venv.conduit("plugins", "uninstall", "cstore-world")
    assert r.returncode == 0, r.stderr
    fresh: Venv = make_venv()
    r = fresh.conduit("plugins", "sync")
    assert r.returncode == 0, r.stderr
    assert fresh.dists() == {"cstore-local": "1.0.0"}


def test_a_plugin_the_index_no_longer_serves_does_not_wedge_the_others(
    make_venv,  # noqa: F811
    index: PackageIndex,
    built: dict[str, Path],
    conduit_home: Path,
) -> None:
    venv: Venv = make_venv()
    assert venv.conduit("plugins", "install", "cstore-world").returncode == 0
    # cstore-world is withdrawn from the index
    (index.root / "files" / built["world-1"].name).unlink()
    shutil.rmtree(index.root / "simple")
    index.add(built["tmpl-1"])
    r = venv.conduit("plugins", "install", "cstore-tmpl")
    assert r.returncode == 0, r.stderr
    assert set(lock_of(conduit_home)) == {"cstore-world", "cstore-tmpl"}
    index.add(built["tmpl-2"])
    r = venv.conduit("plugins", "outdated")
    assert r.returncode == 0, r.stderr
    assert "cstore-tmpl   tmpl     0.1.0      0.2.0" in r.stdout
    assert "warning: cannot check cstore-world for a newer version: " in r.stderr
    r = venv.conduit("plugins", "update")
    assert r.returncode == 0, r.stderr
    assert "~ cstore-tmpl 0.1.0 -> 0.2.0" in r.stdout
    assert "warning: cstore-world was not updated: " in r.stdout
    assert venv.dists() == {"cstore-tmpl": "0.2.0", "cstore-world": "1.0.0"}
    r = venv.conduit("plugins", "uninstall", "cstore-tmpl")
    assert r.returncode == 0, r.stderr


def test_a_recorded_source_that_could_be_an_installer_option_is_refused(tmp_path: Path) -> None:
    from conduit.errors import ConfigError
    from conduit.store import lockfile

    path = tmp_path / "conduit.lock"
    good = 'lock-version = 1\n[[package]]\nname = "x"\nversion = "1.0"\n'
    path.write_text(good + 'find-links = ["/srv/wheels"]\nindex = "https://i.example/simple"\n')
    pkg = lockfile.read(str(path)).package[0]  # type: ignore[union-attr]
    assert (pkg.find_links, pkg.index) == (["/srv/wheels"], "https://i.example/simple")
    assert lockfile.read(str(path)) is not None
    path.write_text(good + 'find-links = ["--index-url=http://evil.example"]\n')
    with pytest.raises(ConfigError, match=r"packages\[0\] \(x\)\.find-links: "):
        lockfile.read(str(path))
