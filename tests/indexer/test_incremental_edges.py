"""Review of the incremental index rebuild (issue 20): cases where a rebuild that reuses
what the last one read must still give the index a full rebuild gives."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest
from test_incremental import Builds, site, write_dist  # tests/indexer/test_incremental.py

__all__ = ["site"]  # the fixture, used by name


def test_a_manifest_added_to_an_installed_package_is_found(site: Path) -> None:
    """A plugin distribution installed without its manifest is broken; once the manifest
    is put in its package (package data fixed by hand, an editable checkout edited), the
    next rebuild finds it, as a full rebuild does: what discovery read of the unchanged
    ``.dist-info`` says where the manifest was looked for, not that there is none."""
    builds = Builds()
    info = write_dist(site, "late", "1.0", {"late": "late-cmd"})
    manifest = site / "late_pkg" / "conduit-plugin.toml"
    text = manifest.read_text()
    manifest.unlink()
    incremental, full = builds.both()
    assert incremental == full
    assert [b["name"] for b in full["broken"]] == ["late"]
    manifest.write_text(text)
    assert info.is_dir()
    incremental, full = builds.both()
    assert "late-cmd" in full["routes"]
    assert incremental == full


def test_an_editable_package_found_through_sys_path_follows_sys_path(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An editable install's package lives outside site-packages and is found on
    sys.path: when sys.path changes (another checkout first on PYTHONPATH), the manifest
    of the package Python would import is read, as a full rebuild does."""
    builds = Builds()

    def checkout(where: Path, command: str) -> None:
        pkg = where / "devplug"
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "conduit-plugin.toml").write_text(
            textwrap.dedent(f"""\
                name = "devplug"
                api = ">=1.0,<2"
                [[commands]]
                name = "{command}"
                """)
        )

    one, two = tmp_path / "one", tmp_path / "two"
    checkout(one, "from-one")
    checkout(two, "from-two")
    monkeypatch.setattr(sys, "path", [*sys.path, str(one)])
    write_dist(site, "devplug", "0.1", {}, entry_points="[conduit.plugins]\ndevplug = devplug:P\n")
    incremental, full = builds.both()
    assert "from-one" in full["routes"]
    assert incremental == full
    monkeypatch.setattr(sys, "path", [str(two), *sys.path])
    incremental, full = builds.both()
    assert "from-two" in full["routes"]
    assert incremental == full


def test_a_manifest_rewritten_with_its_size_and_mtime_is_read_again(site: Path) -> None:
    """A manifest rewritten in place with the same size within its mtime's granularity
    (or its mtime set back: ``tar -p``, ``cp -p``, ``touch -r``) keeps its inode, size
    and mtime; the rebuild after the next change of the fingerprint reads it again, as a
    full rebuild does (its change time moved: what git's racy check relies on too)."""
    builds = Builds()
    write_dist(site, "plug", "1.0", {"plug": "cmd"})
    incremental, full = builds.both()
    assert incremental == full
    manifest = site / "plug_pkg" / "conduit-plugin.toml"
    st = manifest.stat()
    manifest.write_text(manifest.read_text().replace('help = "plug 1.0"', 'help = "plug 1.X"'))
    os.utime(manifest, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert manifest.stat().st_size == st.st_size and manifest.stat().st_ino == st.st_ino
    incremental, full = builds.both()
    assert full["plugins"]["plug"]["commands"][0]["help"] == "plug 1.X"
    assert incremental == full


def test_a_config_rewritten_with_its_size_and_mtime_is_read_again(site: Path) -> None:
    """The settings kept in the rebuild cache are read again when the config file was
    rewritten in place with the same size and mtime (as for manifests above)."""
    builds = Builds()
    write_dist(site, "plug", "1.0", {"plug": "cmd"})
    config = Path(builds.paths.config_file)
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('[plugins]\ndisabled = ["plug"]\n')
    incremental, full = builds.both()
    assert incremental == full
    st = config.stat()
    config.write_text('[plugins]\ndisabled = ["gulp"]\n')
    os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns))
    incremental, full = builds.both()
    assert full["plugins"]["plug"]["enabled"] is True
    assert incremental == full
