"""pylock.conduit.toml: PEP 751, one deterministic text form, strict reading, found where
teams keep it; the older conduit.lock still read."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest

from conduit.errors import ConfigError
from conduit.store import lockfile
from conduit.store.lockfile import LockedFile, LockedPackage, LockFile

H1 = "sha256:" + "a" * 64
H2 = "sha256:" + "b" * 64


def sample() -> LockFile:
    wheel = "http://i.example/files/alpha-2.0-py3-none-any.whl"
    return LockFile(
        package=[
            LockedPackage(
                name="zeta",
                version="1.0",
                hashes=[H2, H1],
                files=[
                    LockedFile(url="http://i.example/files/zeta-1.0-py3-none-any.whl", hash=H2),
                    LockedFile(url="http://i.example/files/zeta-1.0-cp311-abi3-any.whl", hash=H1),
                ],
            ),
            LockedPackage(
                name="alpha",
                version="2.0",
                hashes=[H1],
                requested="alpha>=2",
                plugins=["a"],
                index="http://i.example/simple",
                files=[LockedFile(url=wheel, hash=H1)],
            ),
        ]
    )


def test_dumps_is_pep_751_sorted_and_round_trips(tmp_path: Path) -> None:
    text = lockfile.dumps(sample())
    assert text.startswith("# pylock.conduit.toml: ")
    data = tomllib.loads(text)
    assert (data["lock-version"], data["created-by"]) == ("1.0", "conduit")
    assert data["tool"]["conduit"] == {"lock-version": 3}
    alpha, zeta = data["packages"]
    assert alpha == {
        "name": "alpha",
        "version": "2.0",
        "index": "http://i.example/simple",
        "wheels": [
            {
                "url": "http://i.example/files/alpha-2.0-py3-none-any.whl",
                "hashes": {"sha256": "a" * 64},
            }
        ],
        "tool": {"conduit": {"requested": "alpha>=2", "plugins": ["a"]}},
    }
    assert [w["hashes"]["sha256"] for w in zeta["wheels"]] == ["a" * 64, "b" * 64]  # by URL
    reordered = LockFile(package=list(reversed(sample().package)))
    assert lockfile.dumps(reordered) == text  # same content, same bytes
    path = tmp_path / "pylock.conduit.toml"
    assert lockfile.write(str(path), sample()) is True
    assert lockfile.write(str(path), reordered) is False  # unchanged: not rewritten
    back = lockfile.read(str(path))
    assert back is not None
    assert back.by_name()["alpha"].requested == "alpha>=2"
    assert back.by_name()["zeta"].hashes == [H1, H2]
    assert lockfile.dumps(back) == text


HEAD = 'lock-version = "1.0"\ncreated-by = "x"\n'


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("lock-version = [", "invalid TOML"),
        ('lock-version = "2.0"\ncreated-by = "x"\n', "lock-version: '2.0' is not supported"),
        ('lock-version = "1.0"\n', "created-by: missing"),
        ('created-by = "x"\n', "lock-version: missing"),
        (
            HEAD + '[[packages]]\nversion = "1"\n',
            "packages[0]: Object missing required field `name`",
        ),
        (
            HEAD + '[[packages]]\nname = "x"\nversion = "1"\nwheels = [{ url = "http://h/x.whl", '
            'hashes = { sha256 = "1" } }]\n',
            "packages[0] (x).hashes",
        ),
        (
            HEAD
            + '[[packages]]\nname = "x"\nversion = "1"\n[packages.tool.conduit]\nsurprise = 1\n',
            "packages[0] (x).tool.conduit.: Object contains unknown field `surprise`",
        ),
        (HEAD + "[tool.conduit]\nlock-version = 9\n", "tool.conduit.lock-version: 9"),
        (
            HEAD + '[[packages]]\nname = "x"\nversion = "1"\ndirectory = { path = "d" }\n',
            "packages[0] (x).tool.conduit.content-hash: missing",
        ),
        (
            HEAD + '[[packages]]\nname = "x"\nversion = "1"\n[packages.tool.conduit]\n'
            'find-links = ["-f"]\n',
            "packages[0] (x).tool.conduit.find-links: '-f' is not",
        ),
        ("lock-version = 9\n", "lock-version 9 is not supported"),
        ('[[package]]\nname = "x"\nversion = "1"\nhashes = ["md5:1"]\n', "packages[0] (x).hashes"),
    ],
)
def test_a_bad_lock_file_is_reported_not_rewritten(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "pylock.conduit.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        lockfile.read(str(path))
    assert str(info.value).startswith(f"{path}: ")
    assert problem in str(info.value)
    assert "\n" not in str(info.value)
    assert path.read_text() == text


def test_a_pep_751_file_of_another_tool_is_read(tmp_path: Path) -> None:
    """Unknown keys PEP 751 defines (or other tools' tables) are left alone."""
    path = tmp_path / "pylock.toml"
    path.write_text(
        'lock-version = "1.0"\ncreated-by = "uv"\nrequires-python = ">=3.11"\n\n'
        '[[packages]]\nname = "x"\nversion = "1.0"\nmarker = "python_version >= \'3\'"\n'
        'sdist = { url = "http://h/x-1.0.tar.gz", hashes = { sha256 = "' + "b" * 64 + '" } }\n'
        'wheels = [{ url = "http://h/x-1.0-py3-none-any.whl", upload-time = 2024-01-01T00:00:00Z, '
        'size = 3, hashes = { sha256 = "' + "a" * 64 + '", md5 = "x" } }]\n'
        "[packages.tool.other]\nanything = 1\n"
    )
    lock = lockfile.read(str(path))
    assert lock is not None
    (pkg,) = lock.package
    assert pkg.hashes == [H1, H2]
    assert [(f.url, f.sdist) for f in pkg.files] == [
        ("http://h/x-1.0-py3-none-any.whl", False),
        ("http://h/x-1.0.tar.gz", True),
    ]


def test_a_corrupt_lock_stops_sync_with_exit_4(run, conduit_home: Path) -> None:
    (conduit_home / "pylock.conduit.toml").write_text("lock-version = [")
    r = run("plugins", "sync")
    assert r.code == 4
    assert r.err.startswith(f"error: {conduit_home / 'pylock.conduit.toml'}: invalid TOML")
    assert "hint: regenerate it with 'conduit plugins lock'" in r.err
    assert (conduit_home / "pylock.conduit.toml").read_text() == "lock-version = ["


def test_sync_refuses_a_lock_file_that_lists_conduits_own_requirements(
    run, conduit_home: Path
) -> None:
    wheel = LockedFile(url="http://h/click-1.0-py3-none-any.whl", hash=H1)
    lock = LockFile(package=[LockedPackage(name="click", version="1.0", files=[wheel])])
    text = lockfile.dumps(lock)
    (conduit_home / "pylock.conduit.toml").write_text(text)
    r = run("plugins", "sync")
    assert r.code == 4
    assert r.err.startswith(
        f"error: {conduit_home / 'pylock.conduit.toml'}: package click is one of Conduit's own "
        "requirements"
    )
    assert (conduit_home / "pylock.conduit.toml").read_text() == text
    assert not list((conduit_home / "state" / "store").glob("journal-*"))


def test_where_the_lock_file_is(tmp_path: Path) -> None:
    config = tmp_path / "config"
    repo = tmp_path / "repo"
    sub = repo / "src" / "deep"
    sub.mkdir(parents=True)
    (repo / ".git").mkdir()
    config.mkdir()
    assert lockfile.find(str(config), None, str(sub)) == str(config / "pylock.conduit.toml")
    (config / "conduit.lock").write_text("")  # an older one: used until it is migrated
    assert lockfile.find(str(config), None, str(sub)) == str(config / "conduit.lock")
    (repo / "conduit.lock").write_text("")
    assert lockfile.find(str(config), None, str(sub)) == str(repo / "conduit.lock")
    (repo / "pylock.conduit.toml").write_text("")  # the new name wins
    assert lockfile.find(str(config), None, str(sub)) == str(repo / "pylock.conduit.toml")
    assert lockfile.find(str(config), "x.lock", str(sub)) == str(Path("x.lock").resolve())
    assert lockfile.migrated_path(str(repo / "conduit.lock")) == str(repo / "pylock.conduit.toml")
    assert lockfile.migrated_path(str(tmp_path / "x.toml")) == str(tmp_path / "x.toml")


def test_the_content_hash_of_a_directory(tmp_path: Path) -> None:
    """Sorted relative paths and bytes; VCS, caches, egg-info and build outputs left out;
    the same wherever the directory is."""
    a = tmp_path / "a"
    (a / "pkg").mkdir(parents=True)
    (a / "pkg" / "__init__.py").write_text("x = 1\n")
    (a / "pyproject.toml").write_text("[project]\n")
    first = lockfile.content_hash(str(a))
    assert first.startswith("sha256:") and len(first) == 71
    for junk in (
        ".git/HEAD",
        "pkg/__pycache__/m.pyc",
        "x.egg-info/PKG-INFO",
        "build/lib/y.py",
        "dist/x.whl",
        "pkg/m.pyc",
    ):
        (a / junk).parent.mkdir(parents=True, exist_ok=True)
        (a / junk).write_text("junk")
    assert lockfile.content_hash(str(a)) == first
    b = tmp_path / "elsewhere" / "b"
    shutil.copytree(a, b)
    assert lockfile.content_hash(str(b)) == first
    (b / "pkg" / "__init__.py").write_text("x = 2\n")
    assert lockfile.content_hash(str(b)) != first
    (b / "pkg" / "__init__.py").write_text("x = 1\n")
    (b / "pkg" / "build").mkdir()  # "build" below the top is a source directory
    (b / "pkg" / "build" / "z.py").write_text("")
    assert lockfile.content_hash(str(b)) != first
    # a file moved to another name changes it too (paths are part of the hash)
    shutil.rmtree(b / "pkg" / "build")
    (b / "pkg" / "__init__.py").rename(b / "pkg" / "other.py")
    assert lockfile.content_hash(str(b)) != first


def test_plugin_commands_refuse_conduits_own_distributions(run) -> None:
    r = run("plugins", "uninstall", "msgspec")
    assert r.code == 2
    assert r.err.startswith("error: 'msgspec' is part of Conduit itself, not a plugin distribution")
    r = run("plugins", "uninstall", "no-such-thing")
    assert r.code == 2
    assert "no installed plugin or plugin distribution named 'no-such-thing'" in r.err


def test_search_without_a_configured_catalog_uses_conduits_own(run, conduit_home: Path) -> None:
    r = run("plugins", "search", "git")
    assert r.code == 0, r.err
    assert [line.split()[0] for line in r.out.splitlines()[1:]] == ["github", "repos"]


def test_an_unreachable_catalog_falls_back_to_a_stale_cached_copy(tmp_path: Path) -> None:
    from conduit.errors import StoreError
    from conduit.store import catalog

    source = tmp_path / "catalog.json"
    source.write_text('[{"name": "hi", "package": "conduit-hello==2.0.0"}]')
    url, cache = source.as_uri(), str(tmp_path / "cache")
    (tmp_path / "cache").mkdir()
    assert [e.name for e in catalog.load(url, cache, 3600)] == ["hi"]
    source.unlink()
    # too old to reuse, and the fetch fails: the stale copy beats none
    assert [e.name for e in catalog.load(url, cache, 0)] == ["hi"]
    with pytest.raises(StoreError, match="cannot fetch the plugin catalog"):
        catalog.load(url, str(tmp_path), 0)  # no cached copy there


def test_an_older_conduit_lock_is_read_and_written_back_as_pep_751(tmp_path):
    # Versions 1 and 2 of conduit.lock are read; the next write is a PEP 751 file.
    from conduit.store import lockfile

    path = tmp_path / "conduit.lock"
    path.write_text(
        f'lock-version = 2\n\n[[package]]\nname = "x"\nversion = "1.0"\nhashes = ["{H1}"]\n'
        'index = "https://i.example/simple"\nfind-links = ["/srv"]\nplugins = ["p"]\n'
    )
    lock = lockfile.read(str(path))
    assert lock is not None and [p.name for p in lock.package] == ["x"]
    assert lock.package[0].find_links == ["/srv"] and lock.package[0].hashes == [H1]
    text = lockfile.dumps(lock)
    assert 'lock-version = "1.0"\n' in text
    assert tomllib.loads(text)["packages"][0]["tool"]["conduit"] == {
        "plugins": ["p"],
        "find-links": ["/srv"],
    }
