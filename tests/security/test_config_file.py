"""Conduit rewrites the user's config (grants, identities, enable/disable): a symlinked
config stays a link to the user's file, and a private one stays private."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from conduit.fs import atomic_write

from _factory import simple_plugin, write


def test_atomic_write_follows_a_link_and_keeps_the_mode(tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "config.toml"
    real.parent.mkdir()
    real.write_text("old\n")
    real.chmod(0o600)
    link = tmp_path / "config.toml"
    link.symlink_to(real)
    atomic_write(str(link), b"new\n")
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert real.read_text() == "new\n"
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    fresh = tmp_path / "fresh.toml"
    atomic_write(str(fresh), b"x", mode=0o640)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o640


def test_a_grant_keeps_a_symlinked_private_config(plugin_dir, conduit_home, run) -> None:  # type: ignore[no-untyped-def]
    write(plugin_dir, "hi.py", simple_plugin("hi", ("hi",)))
    real = conduit_home.parent / "dotfiles-config.toml"
    real.write_text('[store]\nindex-url = "https://user:secret@example.invalid/simple"\n')
    real.chmod(0o600)
    config = conduit_home / "config.toml"
    if config.exists():
        config.unlink()
    config.symlink_to(real)
    r = run("plugins", "grant", "hi", "env:read:HOME")
    assert r.code == 0, r.err
    assert config.is_symlink() and os.path.samefile(config, real)
    assert "env:read:HOME" in real.read_text()
    assert "user:secret" in real.read_text()
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
