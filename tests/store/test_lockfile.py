"""conduit.lock: one deterministic text form, strict reading, found where teams keep it."""

from __future__ import annotations

from pathlib import Path

import pytest

from conduit.errors import ConfigError
from conduit.store import lockfile
from conduit.store.lockfile import LockedPackage, LockFile

H1 = "sha256:" + "a" * 64
H2 = "sha256:" + "b" * 64


def sample() -> LockFile:
    return LockFile(
        package=[
            LockedPackage(name="zeta", version="1.0", hashes=[H2, H1]),
            LockedPackage(
                name="alpha", version="2.0", hashes=[H1], requested="alpha>=2", plugins=["a"]
            ),
        ]
    )


def test_dumps_is_sorted_and_round_trips(tmp_path: Path) -> None:
    text = lockfile.dumps(sample())
    assert text.index('name = "alpha"') < text.index('name = "zeta"')
    assert f'    "{H1}",\n    "{H2}",\n' in text  # hashes sorted, one per line
    reordered = LockFile(package=list(reversed(sample().package)))
    assert lockfile.dumps(reordered) == text  # same content, same bytes
    path = tmp_path / "conduit.lock"
    assert lockfile.write(str(path), sample()) is True
    assert lockfile.write(str(path), reordered) is False  # unchanged: not rewritten
    back = lockfile.read(str(path))
    assert back is not None
    assert back.by_name()["alpha"].requested == "alpha>=2"
    assert lockfile.dumps(back) == text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("lock-version = [", "invalid TOML"),
        ("lock-version = 9\n", "lock-version 9 is not supported"),
        ('[[package]]\nname = "x"\nversion = "1"\nhashes = ["md5:1"]\n', "package[0] (x).hashes"),
        ('[[package]]\nname = "x"\nversion = "1"\nsurprise = 1\n', "unknown field"),
    ],
)
def test_a_bad_lock_file_is_reported_not_rewritten(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "conduit.lock"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        lockfile.read(str(path))
    assert str(info.value).startswith(f"{path}: ")
    assert problem in str(info.value)
    assert path.read_text() == text


def test_a_corrupt_lock_stops_sync_with_exit_4(run, conduit_home: Path) -> None:
    (conduit_home / "conduit.lock").write_text("lock-version = [")
    r = run("plugins", "sync")
    assert r.code == 4
    assert r.err.startswith(f"error: {conduit_home / 'conduit.lock'}: invalid TOML")
    assert "hint: regenerate it with 'conduit plugins lock'" in r.err
    assert (conduit_home / "conduit.lock").read_text() == "lock-version = ["


def test_sync_refuses_a_lock_file_that_lists_conduits_own_requirements(
    run, conduit_home: Path
) -> None:
    lock = LockFile(package=[LockedPackage(name="click", version="1.0", hashes=[H1])])
    text = lockfile.dumps(lock)
    (conduit_home / "conduit.lock").write_text(text)
    r = run("plugins", "sync")
    assert r.code == 4
    assert r.err.startswith(
        f"error: {conduit_home / 'conduit.lock'}: package click is one of Conduit's own "
        "requirements"
    )
    assert (conduit_home / "conduit.lock").read_text() == text
    assert not list((conduit_home / "state" / "store").glob("journal-*"))


def test_where_the_lock_file_is(tmp_path: Path) -> None:
    config = tmp_path / "config"
    repo = tmp_path / "repo"
    sub = repo / "src" / "deep"
    sub.mkdir(parents=True)
    (repo / ".git").mkdir()
    assert lockfile.find(str(config), None, str(sub)) == str(config / "conduit.lock")
    (repo / "conduit.lock").write_text("")
    assert lockfile.find(str(config), None, str(sub)) == str(repo / "conduit.lock")
    assert lockfile.find(str(config), "x.lock", str(sub)) == str(Path("x.lock").resolve())


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


def test_a_version_1_lock_is_read_and_written_back_as_version_2(tmp_path):
    # Version 2 records each package's sources; a Conduit that writes 1 refuses a 2 as
    # "not supported ... upgrade Conduit" rather than failing on an unknown field.
    from conduit.store import lockfile

    path = tmp_path / "conduit.lock"
    path.write_text('lock-version = 1\n\n[[package]]\nname = "x"\nversion = "1.0"\n')
    lock = lockfile.read(str(path))
    assert lock is not None and [p.name for p in lock.package] == ["x"]
    assert "lock-version = 2\n" in lockfile.dumps(lock)
