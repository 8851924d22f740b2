"""Nothing from a catalog or a lock file becomes an installer option, and a lock file's
hashes are checked: the red team's attempts, against real uv and pip in fresh venvs
(the store's fixtures from tests/store/test_store.py), with an "evil" index on 127.0.0.1 that
records whether anybody asked it anything."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_store import conduit_wheel, index, lock_of, make_venv, wheels  # noqa: F401

from conduit.errors import ConfigError, StoreError
from conduit.store import catalog, lockfile

from _factory import PackageIndex, hello_server, make_wheel, sha256

GOOD = "sha256:" + "a" * 64


@contextlib.contextmanager
def evil_index() -> Iterator[tuple[str, list[str]]]:
    """A package index that serves nothing and remembers every request."""
    seen: list[str] = []

    def answer(path: str) -> bytes:
        seen.append(path)
        return b"<html><body></body></html>\n"

    with hello_server(answer) as port:
        yield f"http://127.0.0.1:{port}/simple", seen


# -- the lock file: every value is checked when it is read ----------------------------------


def _entry(**fields: object) -> str:
    base: dict[str, object] = {"name": "cstore-world", "version": "1.0.0", "hashes": [GOOD]}
    base.update(fields)
    body = "".join(f"{k} = {json.dumps(v)}\n" for k, v in base.items())
    return f"lock-version = 1\n\n[[package]]\n{body}"


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"name": "--index-url=http://127.0.0.1:9/simple"}, "packages[0].name: "),
        ({"name": "-r/etc/passwd"}, "packages[0].name: "),
        ({"name": "cstore-world\n--find-links=/tmp"}, "packages[0].name: "),
        ({"version": "-r/etc/passwd"}, "packages[0] (cstore-world).version: "),
        (
            {"version": "1.0.0 --hash=" + GOOD + "\n--extra-index-url http://x/simple\n#"},
            "packages[0] (cstore-world).version: ",
        ),
        ({"version": " 1.0.0"}, "packages[0] (cstore-world).version: "),
        ({"url": "--index-url=http://127.0.0.1:9/simple"}, "packages[0] (cstore-world).url: "),
        ({"url": "-e/tmp/x"}, "packages[0] (cstore-world).url: "),
        (
            {"url": "file:///tmp/x.whl\n--find-links=/tmp"},
            "packages[0] (cstore-world).url: ",
        ),
        ({"url": "file:///tmp/x.whl --pre"}, "packages[0] (cstore-world).url: "),
        (
            {"requested": "--index-url=http://127.0.0.1:9/simple"},
            "packages[0] (cstore-world).requested: ",
        ),
        ({"requested": "cstore-world\n-i http://x"}, "packages[0] (cstore-world).requested: "),
        ({"requested": "other>=1"}, "packages[0] (cstore-world).requested: "),
        (
            {"requested": "cstore-world @ https://x/y.tar.gz"},
            "packages[0] (cstore-world).requested: ",
        ),
        ({"hashes": ["sha256:" + "g" * 64]}, "packages[0] (cstore-world).hashes: "),
        ({"hashes": ["sha256:" + "a" * 60 + " -e "]}, "packages[0] (cstore-world).hashes: "),
    ],
)
def test_a_lock_entry_that_could_become_an_option_is_refused(
    tmp_path: Path, fields: dict[str, object], where: str
) -> None:
    path = tmp_path / "conduit.lock"
    path.write_text(_entry(**fields))
    with pytest.raises(ConfigError) as info:
        lockfile.read(str(path))
    assert str(info.value).startswith(f"{path}: {where}")
    assert "\n" not in str(info.value)  # shown as an escape, not a new line
    assert info.value.exit_code == 4


def test_a_written_lock_entry_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "conduit.lock"
    path.write_text(
        _entry(
            version="1.0.0.post1",
            requested="cstore_world[x]>=1; python_version >= '3'",
            url="file:///tmp/cstore_world-1.0.0-py3-none-any.whl",
        )
    )
    lock = lockfile.read(str(path))
    assert lock is not None and lock.package[0].version == "1.0.0.post1"


# -- the catalog: a short name means a package from the index, nothing else -----------------


@pytest.mark.parametrize(
    "package",
    [
        "--index-url=http://127.0.0.1:9/simple",
        "--find-links=/tmp",
        "-r/etc/passwd",
        "cstore-world\n--pre",
        "cstore-world @ file:///tmp/evil-1.0.tar.gz",
        "/tmp/evil-1.0.tar.gz",
    ],
)
def test_a_catalog_entry_that_is_not_an_index_requirement_is_refused(package: str) -> None:
    entry = catalog.CatalogEntry(name="hi", package=package)
    with pytest.raises(StoreError) as info:
        catalog.requirement(entry)
    assert str(info.value) == (
        f"the catalog entry 'hi' names the package {package!r}, which is not a requirement "
        "from the package index; refusing it"
    )


def test_a_catalog_requirement_passes_as_it_is() -> None:
    entry = catalog.CatalogEntry(name="hi", package="cstore-hello[x]>=2; python_version>'3'")
    assert catalog.requirement(entry) == "cstore-hello[x]>=2; python_version>'3'"


# -- against real installers ---------------------------------------------------------------


def _venv(make_venv, installer: str):  # type: ignore[no-untyped-def]  # noqa: F811
    if installer == "pip":
        return make_venv(seed=True, with_uv=False)
    return make_venv()


@pytest.mark.slow
@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_a_catalog_entry_never_reaches_the_installer_as_an_option(
    make_venv,  # noqa: F811
    index: PackageIndex,  # noqa: F811
    tmp_path: Path,
    conduit_home: Path,
    installer: str,
) -> None:
    venv = _venv(make_venv, installer)
    config = conduit_home / "config.toml"
    listing = tmp_path / "catalog.json"
    config.write_text(config.read_text() + f'catalog = "{listing.as_uri()}"\n')
    with evil_index() as (url, seen):
        listing.write_text(json.dumps([{"name": "hi", "package": f"--extra-index-url={url}"}]))
        r = venv.conduit("plugins", "install", "hi", "cstore-world")
        assert r.returncode == 1, r.stdout
        assert r.stderr.splitlines()[0] == (
            f"error: the catalog entry 'hi' names the package '--extra-index-url={url}', "
            "which is not a requirement from the package index; refusing it"
        )
        # on the command line, too: a spec is a requirement or a path
        r = venv.conduit("plugins", "install", "--", f"--extra-index-url={url}", "cstore-world")
        assert r.returncode == 2
        assert r.stderr.startswith(
            f"error: '--extra-index-url={url}' is not a requirement or a path"
        )
        assert seen == []
    assert venv.dists() == {}


@pytest.mark.slow
@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_a_lock_entry_never_reaches_the_installer_as_an_option(
    make_venv,  # noqa: F811
    index: PackageIndex,  # noqa: F811
    wheels: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    conduit_home: Path,
    installer: str,
) -> None:
    venv = _venv(make_venv, installer)
    hashed = sha256(wheels["world-1"])
    with evil_index() as (url, seen):
        # a version that ends its line: the next one is an option line of the
        # requirements file 'sync' writes, the one after a comment
        version = f"1.0.0 --hash={hashed}\n--extra-index-url {url}\n#"
        (conduit_home / "conduit.lock").write_text(
            _entry(version=version, plugins=["world"], hashes=[hashed])
        )
        r = venv.conduit("plugins", "sync")
        assert r.returncode == 4, r.stderr
        assert r.stderr.startswith(
            f"error: {conduit_home / 'conduit.lock'}: packages[0] (cstore-world).version: "
        )
        assert seen == []
    assert venv.dists() == {}


@pytest.mark.slow
@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_a_tampered_lock_hash_is_refused(
    make_venv,  # noqa: F811
    index: PackageIndex,  # noqa: F811
    wheels: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    conduit_home: Path,
    installer: str,
) -> None:
    """From the index, and from a wheel file the lock names by URL: one changed digit of
    the sha256 and nothing is installed."""
    first = _venv(make_venv, installer)
    other = make_wheel(tmp_path / "local", "cstore-local", "1.0.0", plugin="local")
    r = first.conduit("plugins", "install", "cstore-world", str(other))
    assert r.returncode == 0, r.stderr
    good = (conduit_home / "pylock.conduit.toml").read_text()
    locked = lock_of(conduit_home)
    assert locked["cstore-local"]["url"] == other.as_uri()
    for dist in ("cstore-world", "cstore-local"):
        digest = str(locked[dist]["hashes"][0]).partition(":")[2]  # type: ignore[index]
        flipped = digest[:-1] + ("0" if digest[-1] != "0" else "1")
        assert digest in good
        (conduit_home / "pylock.conduit.toml").write_text(good.replace(digest, flipped))
        fresh = _venv(make_venv, installer)
        r = fresh.conduit("plugins", "sync")
        assert r.returncode == 1, (dist, r.stdout)
        assert "hash mismatch" in r.stderr.splitlines()[0], r.stderr
        assert fresh.dists() == {}


@pytest.mark.slow
@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_sync_builds_nothing(
    make_venv,  # noqa: F811
    index: PackageIndex,  # noqa: F811
    tmp_path: Path,
    conduit_home: Path,
    installer: str,
) -> None:
    """A lock file that names a source directory: 'sync' would run its build code, and
    nobody named it on the command line."""
    from test_dependency_consent import source_tree

    marker = tmp_path / "outside" / "pwned"
    marker.parent.mkdir()
    tree = source_tree(tmp_path / "src", "cstore-src", "1.0.0", marker=marker)
    (conduit_home / "conduit.lock").write_text(
        _entry(name="cstore-src", url=tree.as_uri(), hashes=[])
    )
    venv = _venv(make_venv, installer)
    r = venv.conduit("plugins", "sync")
    assert r.returncode == 1, r.stdout
    assert r.stderr.splitlines()[0] == (
        f"error: cstore-src 1.0.0 is locked from a source that would have to be built "
        f"({tree.as_uri()}); 'sync' builds nothing"
    )
    assert not marker.exists()
    assert venv.dists() == {}
