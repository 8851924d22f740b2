"""The incremental index rebuild: after installs, upgrades, uninstalls and changes in
place, a rebuild that reuses what the last one read gives exactly the index that a full
rebuild gives, and reads only the distributions that changed.

Distributions are real ``.dist-info`` directories and packages in a directory put on
``sys.path`` (what an installer leaves behind); tests/indexer/test_distributions.py
installs real wheels with uv."""

from __future__ import annotations

import marshal
import os
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conduit.cli import View, render_help
from conduit.index import index_path, read
from conduit.indexer import build, discover
from conduit.paths import resolve

from _factory import simple_plugin, write


def write_dist(
    site: Path,
    dist: str,
    version: str,
    plugins: dict[str, str],
    *,
    requires: str = "",
    api: str = ">=1.0,<2",
    entry_points: str | None = None,
) -> Path:
    """A distribution ``dist`` as an installer leaves it: a package per plugin with its
    manifest, and ``DIST-VERSION.dist-info`` with METADATA and entry_points.txt (written
    to temporary names and renamed, as installers do). ``plugins``: name -> command."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    tmp = site / f".tmp-{info.name}"
    tmp.mkdir()
    (tmp / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n\n")
    if entry_points is None:
        entry_points = "[console_scripts]\nx = y:z\n"
        if plugins:
            entry_points += "\n[conduit.plugins]\n" + "".join(
                f"{name} = {name.replace('-', '_')}_pkg:Plugin\n" for name in plugins
            )
    (tmp / "entry_points.txt").write_text(entry_points)
    for name, command in plugins.items():
        pkg = site / f"{name.replace('-', '_')}_pkg"
        pkg.mkdir(exist_ok=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "conduit-plugin.toml").write_text(
            textwrap.dedent(f"""\
                name = "{name}"
                api = "{api}"
                {requires}
                [[commands]]
                name = "{command}"
                help = "{name} {version}"
                """)
        )
    shutil.rmtree(info, ignore_errors=True)
    tmp.rename(info)
    return info


def remove_dist(site: Path, dist: str) -> None:
    for entry in site.glob(f"{dist.replace('-', '_')}-*.dist-info"):
        shutil.rmtree(entry)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "site-packages"
    path.mkdir()
    monkeypatch.setattr(sys, "path", [*sys.path, str(path)])
    return path


def render(index: Any) -> str:
    """The CLI's ``--help`` of an index, as the CLI has it rendered at rebuild time."""
    return render_help(View(index, frozenset()))


class Builds:
    """Rebuilds the index as the CLI does (incremental, ``--help`` rendered), and in full
    to compare; ``patched`` tells which rebuilds patched the previous index."""

    def __init__(self) -> None:
        self.paths = resolve()
        self.path = index_path(self.paths)
        self.step = 0
        self.patched: list[bool] = []

    def both(self) -> tuple[dict[str, Any], dict[str, Any]]:
        self.step += 1
        fp = ("test", self.step)  # a new fingerprint: the index on disk is stale
        patches: list[Any] = []
        real = build._patch

        def spy(*args: Any) -> Any:
            patches.append(real(*args))
            return patches[-1]

        build._patch = spy  # type: ignore[assignment]
        try:
            incremental = build.rebuild(self.paths, self.path, fp, render_help=render)
        finally:
            build._patch = real  # type: ignore[assignment]
        self.patched.append(any(p is not None for p in patches))
        full = build.build(self.paths, fp)
        full["help"] = render(full)
        # What was written is what was built (records may be copied from the last
        # records file rather than encoded again).
        written = read(self.path, fp)
        assert written is not None
        assert dict(written["plugins"].items()) == full["plugins"]
        return comparable(incremental), comparable(full)


def comparable(index: Any) -> dict[str, Any]:
    """``index`` with its "commands" blob decoded: the bytes of a marshal blob depend on
    which of its strings are shared objects when it is made (back-references), its value
    does not."""
    return {
        **index,
        "commands": marshal.loads(index["commands"]),
        "plugins": dict(index["plugins"].items()),
    }


def test_incremental_rebuild_equals_full_rebuild(site: Path) -> None:
    builds = Builds()
    for i in range(5):
        write_dist(site, f"plug-{i}", "1.0", {f"plug-{i}": f"cmd-{i}"})
    write_dist(site, "not-a-plugin", "2.0", {})
    steps: list[tuple[str, Any]] = [
        ("first build", lambda: None),
        ("install", lambda: write_dist(site, "plug-new", "1.0", {"plug-new": "cmd-new"})),
        (
            "upgrade",
            lambda: (
                remove_dist(site, "plug-1"),
                write_dist(site, "plug-1", "2.0", {"plug-1": "cmd-1", "plug-1b": "cmd-1b"}),
            ),
        ),
        ("uninstall", lambda: remove_dist(site, "plug-2")),
        (
            "dist-info changed in place (same name, new entry points)",
            lambda: write_dist(site, "plug-3", "1.0", {"plug-3x": "cmd-3x"}),
        ),
        (
            "broken plugin (no manifest found)",
            lambda: write_dist(
                site, "broken", "1.0", {}, entry_points="[conduit.plugins]\nbroken = nowhere:P\n"
            ),
        ),
        (
            "unsupported API",
            lambda: write_dist(site, "old-api", "1.0", {"old-api": "cmd-old"}, api=">=9"),
        ),
        (
            "conflict: a second plugin claims a command word",
            lambda: write_dist(site, "rival", "1.0", {"rival": "cmd-0"}),
        ),
        (
            "blocked: requires a plugin that is not installed",
            lambda: write_dist(
                site,
                "needy",
                "1.0",
                {"needy": "cmd-needy"},
                requires='[requires]\nplugins = ["absent>=1"]\n',
            ),
        ),
        (
            "unreadable entry points",
            lambda: write_dist(site, "garbled", "1.0", {}, entry_points="[conduit.plugins]\nx\n"),
        ),
        ("a non-plugin installed", lambda: write_dist(site, "lib", "3.0", {})),
    ]
    for what, change in steps:
        change()
        incremental, full = builds.both()
        assert incremental == full, what
    # Patched: an install, an upgrade, an uninstall, a new non-plugin; recomputed: a
    # broken plugin, a claimed word, a requirement.
    assert dict(zip([w for w, _ in steps], builds.patched, strict=True)) == {
        "first build": False,
        "install": True,
        "upgrade": True,
        "uninstall": True,
        "dist-info changed in place (same name, new entry points)": True,
        "broken plugin (no manifest found)": False,
        "unsupported API": False,
        "conflict: a second plugin claims a command word": False,
        "blocked: requires a plugin that is not installed": False,
        "unreadable entry points": True,
        "a non-plugin installed": True,
    }
    assert {b["name"] for b in full["broken"]} >= {"broken", "old-api"}
    assert full["plugins"]["needy"]["blocked"]
    assert full["routes"]["cmd-0"] == ["plug-0", "rival"]
    assert "plug-2" not in full["plugins"] and full["plugins"]["plug-1"]["version"] == "2.0"
    assert "plug-3" not in full["plugins"] and "plug-3x" in full["plugins"]
    assert any("garbled" in w for w in full["warnings"])


def test_only_changed_distributions_are_read(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Entry points, metadata and manifests are read only for what is new or changed;
    a distribution without plugins has its metadata never read."""
    builds = Builds()
    for i in range(3):
        write_dist(site, f"plug-{i}", "1.0", {f"plug-{i}": f"cmd-{i}"})
    write_dist(site, "lib", "1.0", {})
    builds.both()
    opened: list[str] = []
    real_open = open

    def spy(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(os.fspath(file))
        return real_open(file, *args, **kwargs)

    write_dist(site, "plug-new", "1.0", {"plug-new": "cmd-new"})
    monkeypatch.setattr("builtins.open", spy)
    builds.step += 1
    index = build.rebuild(builds.paths, builds.path, ("test", builds.step))
    monkeypatch.undo()
    assert "plug-new" in index["plugins"]
    read = [p for p in opened if str(site) in p]
    assert sorted(os.path.basename(p) for p in read) == [
        "METADATA",
        "conduit-plugin.toml",
        "entry_points.txt",
    ]
    assert all("plug_new" in p for p in read)


def test_metadata_only_for_plugin_distributions(site: Path) -> None:
    write_dist(site, "lib", "1.0", {})
    (site / "lib-1.0.dist-info" / "METADATA").write_text("garbage without a name")
    write_dist(site, "plug", "1.5", {"plug": "cmd"})
    cache: dict[str, Any] = {}
    found = discover.discover(str(site / "none"), [], cache)
    mine = [(f.name, f.dist, f.dist_version) for f in found if f.origin.startswith(str(site))]
    assert mine == [("plug", "plug", "1.5")]
    lib = cache[str(site / "lib-1.0.dist-info")][1]
    assert lib == ("", None, [])  # never read: not a plugin distribution


def test_forced_rebuild_reads_everything(site: Path) -> None:
    """A forced rebuild (plugins doctor, CONDUIT_REBUILD_INDEX) ignores the cache: a
    manifest edited in place without its stat changing is read again."""
    builds = Builds()
    write_dist(site, "plug", "1.0", {"plug": "cmd"})
    builds.both()
    manifest = site / "plug_pkg" / "conduit-plugin.toml"
    st = manifest.stat()
    manifest.write_text(manifest.read_text().replace('help = "plug 1.0"', 'help = "plug 1.X"'))
    os.utime(manifest, ns=(st.st_atime_ns, st.st_mtime_ns))
    fp = ("test", "forced")
    index = build.rebuild(builds.paths, builds.path, fp, force=True)
    assert index["plugins"]["plug"]["commands"][0]["help"] == "plug 1.X"


def test_config_changes_are_read_again(site: Path) -> None:
    """The settings come from the rebuild cache while the config file is unchanged, and
    are read again when it changes (also when it becomes invalid, or goes away)."""
    builds = Builds()
    write_dist(site, "plug", "1.0", {"plug": "cmd"})
    write_dist(site, "other", "1.0", {"other": "cmd"})
    config = Path(builds.paths.config_file)
    config.parent.mkdir(parents=True, exist_ok=True)
    texts = [
        None,
        '[plugins]\ndisabled = ["plug"]\n',
        '[plugins]\ndisabled = ["plug"]\n[pins]\ncmd = "other"\n',
        "[security]\nsandbox-third-party = true\ntrusted = ['plug']\n",
        "[plugins\n",  # invalid: built with the defaults, the error kept
        "[isolation]\nplug = 'process'\n",
        None,
    ]
    for text in texts:
        if text is None:
            config.unlink(missing_ok=True)
        else:
            config.write_text(text)
        incremental, full = builds.both()
        assert incremental == full, text
        if text == "[plugins\n":
            assert full["config_error"] is not None
    assert full["config_error"] is None


def test_executables_on_path_are_found_with_cached_listings(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PATH directory's listing is kept while its stat is unchanged (not when it was
    just modified); a new ``conduit-NAME`` in it changes the stat and is found."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for i in range(3):
        (bin_dir / f"tool-{i}").write_text("")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    old = 1_000_000_000_000_000_000  # 2001: not modified recently
    os.utime(bin_dir, ns=(old, old))
    builds = Builds()
    builds.both()
    listed: list[str] = []
    real_listdir = os.listdir

    def spy(path: Any = ".") -> list[str]:
        listed.append(os.fspath(path))
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", spy)
    builds.step += 1
    build.rebuild(builds.paths, builds.path, ("test", builds.step))
    assert str(bin_dir) not in listed  # reused
    exe = bin_dir / "conduit-hello"
    exe.write_text("#!/bin/sh\nexit 1\n")
    exe.chmod(0o755)
    monkeypatch.setattr(os, "listdir", real_listdir)
    incremental, full = builds.both()
    assert incremental == full
    assert "hello" in full["plugins"]


def test_lock_check_looks_at_the_journal_binding_file() -> None:
    """build.py checks that a lock is bound before importing conduit.journal."""
    from conduit import journal

    paths = resolve()
    assert paths.store_file("lock", ".path") == journal._binding_file(paths)


def test_a_concurrent_rebuild_is_used(site: Path) -> None:
    """When the index on disk is not the one the last rebuild wrote, it is read: another
    process may have rebuilt it for the same fingerprint while this one waited."""
    builds = Builds()
    write_dist(site, "plug", "1.0", {"plug": "cmd"})
    builds.both()
    fp = ("test", "other process")
    theirs = build.build(builds.paths, fp)
    theirs["warnings"].append("written by the other process")
    header, records = build.encode(theirs)
    Path(build.records_path(builds.path)).write_bytes(records)
    tmp = Path(builds.path + ".other")
    tmp.write_bytes(header)
    tmp.replace(builds.path)
    index = build.rebuild(builds.paths, builds.path, fp)
    assert "written by the other process" in index["warnings"]


def test_records_of_unchanged_plugins_are_reused(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the new plugin's record is made from its manifest; the others come from the
    rebuild cache (and are still configured by the current config: see
    test_config_changes_are_read_again)."""
    builds = Builds()
    for i in range(3):
        write_dist(site, f"plug-{i}", "1.0", {f"plug-{i}": f"cmd-{i}"})
    builds.both()
    made: list[str] = []
    real_base = build._base

    def spy(item: discover.Found) -> Any:
        made.append(item.name)
        return real_base(item)

    write_dist(site, "plug-new", "1.0", {"plug-new": "cmd-new"})
    monkeypatch.setattr(build, "_base", spy)
    builds.step += 1
    index = build.rebuild(builds.paths, builds.path, ("test", builds.step))
    assert made == ["plug-new"]
    assert comparable(index) == comparable(build.build(builds.paths, ("test", builds.step)))


# A randomized sequence of installs, upgrades and uninstalls at small N: plugin names
# shared between distributions (two plugins claiming one name), command words shared
# between plugins (conflicts), requirements, services, activation events, a broken API
# range, a config that disables, pins and grants. After every step the rebuild (patched
# or recomputed) must equal a full rebuild.

_NAMES = ["alpha", "beta", "gamma", "delta", "eps"]
_WORDS = ["run", "go", "fmt", "lint", "ship", "zap"]
_EVENTS = ["command:run", "event:saved", "service:db", "startup", "env:CI=1", "file:*.toml"]

_plugin = st.fixed_dictionaries(
    {
        "words": st.lists(st.sampled_from(_WORDS), min_size=1, max_size=2, unique=True),
        "requires": st.lists(st.sampled_from(_NAMES), max_size=1),
        "provides": st.lists(st.sampled_from(["db", "cache"]), max_size=1),
        "activation": st.lists(st.sampled_from(_EVENTS), max_size=2, unique=True),
        "bad_api": st.booleans(),
        "hidden": st.booleans(),
    }
)
_step = st.one_of(
    st.tuples(
        st.just("install"),
        st.sampled_from(["d1", "d2", "d3", "d4"]),
        st.dictionaries(st.sampled_from(_NAMES), _plugin, min_size=1, max_size=2),
    ),
    st.tuples(st.just("uninstall"), st.sampled_from(["d1", "d2", "d3", "d4"]), st.none()),
)
_CONFIGS = [
    None,
    '[plugins]\ndisabled = ["beta"]\n',
    '[pins]\nrun = "gamma"\n',
    '[grants]\ndelta = ["env:HOME"]\n',
    "[security]\nsandbox-third-party = true\ntrusted = ['eps']\n",
]


def _install(site: Path, dist: str, plugins: dict[str, Any], step: int) -> None:
    _uninstall(site, dist)
    info = site / f"{dist}-{step}.0.dist-info"
    tmp = site / f".tmp-{info.name}"
    tmp.mkdir()
    (tmp / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {step}.0\n\n")
    lines = [f"{name} = {dist}_{name}_{step}:Plugin\n" for name in plugins]
    (tmp / "entry_points.txt").write_text("[conduit.plugins]\n" + "".join(lines))
    (tmp / "top_level.txt").write_text("".join(f"{dist}_{name}_{step}\n" for name in plugins))
    for name, spec in plugins.items():
        pkg = site / f"{dist}_{name}_{step}"
        pkg.mkdir()
        (pkg / "__init__.py").write_text("")
        requires = [r for r in spec["requires"] if r != name]
        commands = "".join(
            f'[[commands]]\nname = "{w}"\nhelp = "{name} {w} {step}"\n'
            f"hidden = {'true' if spec['hidden'] and i else 'false'}\n"
            for i, w in enumerate(spec["words"])
        )
        (pkg / "conduit-plugin.toml").write_text(
            f'name = "{name}"\n'
            f'api = "{">=9" if spec["bad_api"] else ">=1.0,<2"}"\n'
            f"activation = {spec['activation']!r}\n"
            f"[provides]\nservices = {spec['provides']!r}\n"
            f"[requires]\nplugins = {requires!r}\n" + commands
        )
    tmp.rename(info)


def _uninstall(site: Path, dist: str) -> None:
    for info in site.glob(f"{dist}-*.dist-info"):
        for pkg in (info / "top_level.txt").read_text().split():
            shutil.rmtree(site / pkg)
        shutil.rmtree(info)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    config=st.sampled_from(_CONFIGS),
    first=st.lists(_step, max_size=3),
    steps=st.lists(_step, min_size=1, max_size=8),
)
def test_random_installs_equal_full_rebuilds(
    tmp_path_factory: pytest.TempPathFactory,
    config: str | None,
    first: list[Any],
    steps: list[Any],
) -> None:
    root = tmp_path_factory.mktemp("random")
    site = root / "site-packages"
    site.mkdir()
    saved_path, saved_home = sys.path[:], os.environ.get("CONDUIT_HOME")
    sys.path.append(str(site))
    os.environ["CONDUIT_HOME"] = str(root / "home")
    try:
        builds = Builds()
        if config is not None:
            path = Path(builds.paths.config_file)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(config)
        for n, (op, dist, plugins) in enumerate([*first, *steps]):
            if op == "install":
                _install(site, dist, plugins, n + 1)
            else:
                _uninstall(site, dist)
            if n < len(first):
                continue  # installed before the first build
            incremental, full = builds.both()
            assert incremental == full, (n, op, dist, plugins)
        event(f"patched {sum(builds.patched)} of {len(builds.patched)}")
    finally:
        sys.path[:] = saved_path
        if saved_home is None:
            os.environ.pop("CONDUIT_HOME", None)
        else:
            os.environ["CONDUIT_HOME"] = saved_home


@pytest.mark.parametrize("activation", ["event:saved", "command:x", "service:db"])
def test_a_shared_event_is_not_patched(site: Path, activation: str) -> None:
    """A plugin installed beside one that has its activation event (an entry the patch
    would have to order) is recomputed; the index is a full rebuild's."""
    builds = Builds()
    spec = {"words": ["run"], "requires": [], "provides": [], "activation": [activation]}
    spec |= {"bad_api": False, "hidden": False}
    _install(site, "d1", {"alpha": spec}, 1)
    builds.both()
    _install(site, "d2", {"beta": {**spec, "words": ["go"]}}, 2)
    incremental, full = builds.both()
    assert incremental == full
    assert full["events"][activation.partition(":")[0]][activation.partition(":")[2]] == [
        "alpha",
        "beta",
    ]
    _install(site, "d3", {"gamma": {**spec, "words": ["fmt"], "activation": []}}, 3)
    incremental, full = builds.both()
    assert incremental == full
    assert builds.patched == [False, False, True]


def test_a_patched_index_has_the_help_of_many_plugins(site: Path) -> None:
    """Past HELP_COMMANDS_MAX commands `--help` is one line per plugin: patched after an
    install and an uninstall, it is the help of a full rebuild."""
    builds = Builds()
    for i in range(45):
        write_dist(site, f"many-{i:02d}", "1.0", {f"many-{i:02d}": f"cmd-{i:02d}"})
    builds.both()
    write_dist(site, "many-new", "1.0", {"many-new": "cmd-new"})
    incremental, full = builds.both()
    assert incremental == full
    assert "Commands by plugin" in full["help"] and "cmd-new" in full["help"]
    remove_dist(site, "many-07")
    incremental, full = builds.both()
    assert incremental == full
    assert builds.patched == [False, True, True]


def test_the_first_import_of_a_file_plugin_does_not_make_the_index_stale(
    run, plugin_dir, conduit_home, monkeypatch
):
    # Python makes the plugin directory's __pycache__ on the first import of a file
    # plugin (when the source is old enough to get a .pyc): that changed the directory's
    # mtime, a part of the fingerprint, and the next command built the index again.
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    monkeypatch.setattr(sys, "pycache_prefix", None)
    path = write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    os.utime(path, (1_600_000_000, 1_600_000_000))
    assert run("hello").out == "alpha hello\n"
    assert (plugin_dir / "__pycache__" / f"alpha.{sys.implementation.cache_tag}.pyc").is_file()
    (index,) = (conduit_home / "cache").glob("index-*.bin")
    before = index.stat()
    assert run("hello").out == "alpha hello\n"
    after = index.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
