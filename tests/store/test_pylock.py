"""The lock file is a PEP 751 ``pylock.conduit.toml``: another reader (uv) installs it,
a tampered hash is refused by both, an older ``conduit.lock`` is migrated, and a
directory install is locked relative to the lock file with a content hash. Real uv and
pip, a real PEP 503 index on 127.0.0.1 (it does not carry Conduit), fresh venvs."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from test_store import (  # noqa: F401 (fixtures)
    Venv,
    _plugin_files,
    conduit_wheel,
    index,
    make_venv,
    wheels,
)

from _factory import UV, PackageIndex, sha256

pytestmark = pytest.mark.slow


def _plain_venv(root: Path) -> str:
    """A venv without Conduit, for another PEP 751 reader to install into."""
    assert UV is not None
    subprocess.run([UV, "venv", "--quiet", str(root)], check=True, timeout=120)
    return str(root / "bin" / "python")


def _uv_install_lock(python: str, lock: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert UV is not None
    argv = [UV, "pip", "install", "--python", python, "--cache-dir", str(tmp_path / "uvc")]
    return subprocess.run(
        [*argv, "-r", str(lock)], capture_output=True, text=True, timeout=300, check=False
    )


def _installed(python: str) -> dict[str, str]:
    code = (
        "import importlib.metadata as m\n"
        "for d in m.distributions():\n"
        "    n = d.metadata['Name']\n"
        "    print(n, d.version) if n.startswith('cstore') else None\n"
    )
    out = subprocess.check_output([python, "-c", code], text=True)
    return dict(line.split() for line in out.splitlines())


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_the_lock_is_pep_751_and_uv_installs_exactly_it(
    make_venv,  # noqa: F811
    index: PackageIndex,  # noqa: F811
    wheels: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    conduit_home: Path,
    installer: str,
) -> None:
    venv = make_venv(seed=True, with_uv=False) if installer == "pip" else make_venv()
    r = venv.conduit("plugins", "install", "cstore-hello==2.0.0", "cstore-world")
    assert r.returncode == 0, r.stderr
    path = conduit_home / "pylock.conduit.toml"
    assert not (conduit_home / "conduit.lock").exists()
    data = tomllib.loads(path.read_text())
    assert (data["lock-version"], data["created-by"]) == ("1.0", "conduit")
    assert data["tool"] == {"conduit": {"lock-version": 3}}
    files = index.url.removesuffix("/simple") + "/files/"
    packages = {p["name"]: p for p in data["packages"]}
    assert sorted(packages) == ["cstore-dep", "cstore-hello", "cstore-world"]
    for name, key in (
        ("cstore-dep", "dep"),
        ("cstore-hello", "hello-2"),
        ("cstore-world", "world-1"),
    ):
        pkg = packages[name]
        assert pkg["index"] == index.url
        assert pkg["wheels"] == [
            {"url": files + wheels[key].name, "hashes": {"sha256": sha256(wheels[key])[7:]}}
        ]
    assert packages["cstore-hello"]["version"] == "2.0.0"  # the index has 3.0.0 too
    assert packages["cstore-hello"]["tool"]["conduit"] == {
        "requested": "cstore-hello==2.0.0",
        "plugins": ["hello"],
    }
    assert "tool" not in packages["cstore-dep"]  # a dependency: nothing of Conduit's

    # another PEP 751 reader installs exactly the locked versions from the index
    plain = _plain_venv(tmp_path / "plain")
    r2 = _uv_install_lock(plain, path, tmp_path)
    assert r2.returncode == 0, r2.stderr
    assert _installed(plain) == {
        "cstore-dep": "1.0.0",
        "cstore-hello": "2.0.0",
        "cstore-world": "1.0.0",
    }

    # one changed digit of a hash: uv refuses it, and so does Conduit's sync
    good = path.read_text()
    digest = sha256(wheels["dep"])[7:]
    project = tmp_path / "project"
    project.mkdir()
    tampered = project / "pylock.conduit.toml"
    tampered.write_text(good.replace(digest, digest[:-1] + ("0" if digest[-1] != "0" else "1")))
    other = _plain_venv(tmp_path / "other")
    r3 = _uv_install_lock(other, tampered, tmp_path)
    assert r3.returncode != 0
    assert "hash" in r3.stderr.lower(), r3.stderr
    assert _installed(other) == {}
    fresh = make_venv(seed=True, with_uv=False) if installer == "pip" else make_venv()
    r4 = fresh.conduit("plugins", "sync", "--lock", str(tampered))
    assert r4.returncode == 1, r4.stdout
    assert "hash mismatch" in r4.stderr.splitlines()[0], r4.stderr
    assert fresh.dists() == {}
    # the good one syncs
    tampered.write_text(good)
    r5 = fresh.conduit("plugins", "sync", "--lock", str(tampered))
    assert r5.returncode == 0, r5.stderr
    assert fresh.dists() == venv.dists()


def test_an_older_conduit_lock_is_migrated_by_the_next_write(
    make_venv,  # noqa: F811
    index: PackageIndex,  # noqa: F811
    wheels: dict[str, Path],  # noqa: F811
    conduit_home: Path,
) -> None:
    venv = make_venv()
    assert venv.conduit("plugins", "install", "cstore-world").returncode == 0
    new = conduit_home / "pylock.conduit.toml"
    old = conduit_home / "conduit.lock"
    new.unlink()
    old.write_text(
        "lock-version = 2\n\n[[package]]\n"
        f'name = "cstore-world"\nversion = "1.0.0"\nrequested = "cstore-world>=1"\n'
        f'plugins = ["world"]\nindex = "{index.url}"\nhashes = ["{sha256(wheels["world-1"])}"]\n'
    )
    # read as it is: no drift, 'outdated' keeps its requested range
    r = venv.conduit("plugins", "outdated", "--json")
    assert r.returncode == 0, r.stderr
    r = venv.conduit("plugins", "install", "cstore-hello==1.0.0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("migrated") == 1
    assert f"migrated {old} to {new} (PEP 751 format)" in r.stdout
    assert not old.exists()
    data = tomllib.loads(new.read_text())
    world = next(p for p in data["packages"] if p["name"] == "cstore-world")
    assert world["wheels"][0]["hashes"] == {"sha256": sha256(wheels["world-1"])[7:]}
    assert world["tool"]["conduit"]["requested"] == "cstore-world>=1"
    assert [p["name"] for p in data["packages"]] == ["cstore-hello", "cstore-world"]
    # later writes say nothing more
    r = venv.conduit("plugins", "uninstall", "cstore-hello")
    assert r.returncode == 0, r.stderr
    assert "migrated" not in r.stdout


def test_a_directory_install_is_locked_relatively_and_syncs_from_a_copy(
    make_venv,  # noqa: F811
    index: PackageIndex,  # noqa: F811
    tmp_path: Path,
) -> None:
    from test_dependency_consent import source_tree

    project = tmp_path / "team" / "project"
    (project / ".git").mkdir(parents=True)
    source = source_tree(
        project / "plugins" / "dirp",
        "cstore-dirp",
        "1.0.0",
        marker=None,
        **_plugin_files("cstore-dirp", "dirp"),  # type: ignore[arg-type]
    )
    lock = project / "pylock.conduit.toml"
    venv = make_venv()
    r = venv.conduit("plugins", "install", "--lock", str(lock), str(source))
    assert r.returncode == 0, r.stderr
    (pkg,) = tomllib.loads(lock.read_text())["packages"]
    assert pkg["directory"] == {"path": "plugins/dirp"}
    content = pkg["tool"]["conduit"]["content-hash"]
    assert content.startswith("sha256:")
    assert str(tmp_path) not in lock.read_text()  # no absolute path anywhere

    # a copy of the project elsewhere (build outputs and caches do not count)
    copy = tmp_path / "elsewhere" / "checkout"
    shutil.copytree(project, copy)
    (copy / "plugins" / "dirp" / "__pycache__").mkdir(exist_ok=True)
    (copy / "plugins" / "dirp" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    shutil.rmtree(project)
    fresh = make_venv()
    r = fresh.conduit("plugins", "sync", cwd=copy)
    assert r.returncode == 0, r.stderr
    assert fresh.dists() == {"cstore-dirp": "1.0.0"}
    assert fresh.conduit("dirp-run").stdout == "dirp built\n"

    # changed sources: refused in one line, nothing installed
    with open(copy / "plugins" / "dirp" / "backend.py", "a") as f:
        f.write("# changed\n")
    other = make_venv()
    r = other.conduit("plugins", "sync", cwd=copy)
    assert r.returncode == 1, r.stdout
    first, *rest = r.stderr.splitlines()
    assert first.startswith(
        f"error: {copy / 'pylock.conduit.toml'}: cstore-dirp 1.0.0: the sources in "
        f"{copy / 'plugins' / 'dirp'} differ from the locked ones (content hash sha256:"
    ), r.stderr
    assert rest and rest[0].startswith("hint: if the change is intended, install it again")
    assert "Traceback" not in r.stderr
    assert other.dists() == {}


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_resolved_set_names_versions_urls_and_hashes_without_installing(
    tmp_path: Path,
    wheels: dict[str, Path],  # noqa: F811
    installer: str,
) -> None:
    import sys

    from conduit.store._tools import Sources, Tool, resolved_set

    idx = PackageIndex(tmp_path / "index")
    try:
        idx.add(wheels["hello-2"], wheels["dep"], wheels["world-1"])
        sources = Sources(idx.url)
        tool = (
            Tool("uv", sys.executable, sources, uv=UV)
            if installer == "uv"
            else Tool("pip", sys.executable, sources)
        )
        pins = resolved_set(tool, ["cstore-hello"])
    finally:
        idx.close()
    files = idx.url.removesuffix("/simple") + "/files/"
    assert [(p.name, p.version, p.url) for p in pins] == [
        ("cstore-dep", "1.0.0", None),
        ("cstore-hello", "2.0.0", None),
    ]
    for pin, key in zip(pins, ("dep", "hello-2"), strict=True):
        assert pin.files == ((files + wheels[key].name, sha256(wheels[key]), False),)
        assert pin.hashes == (sha256(wheels[key]),)
