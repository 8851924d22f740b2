"""componentize-py builds for the tests, made once where the same source would be built
again (each costs 10-75 s).

The example plugin examples/wasm/pyhash is built once per session, for real, with
``conduit plugins build`` (the ``pyhash_built`` fixture of tests/conftest.py). A test
that needs pyhash built, but is not about the componentize-py run itself, seeds its own
CONDUIT_HOME's cache with that build (:func:`seed_cache`): its ``plugins build`` of the same
source then takes the module built before (``CACHE/wasm/build-KEY.wasm``, keyed by the
source's bytes, not its path), as a user's second build does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "wasm" / "pyhash"
#: what a build of ``plugins build`` prints when it takes the module built before
CACHE_HIT = "unchanged, the module built before"


def componentize_py() -> str:
    """componentize-py next to this interpreter; skips the test without it."""
    found = shutil.which("componentize-py", path=os.path.dirname(sys.executable))
    if found is None:
        pytest.skip("componentize-py is not installed (it is in the [test] extra)")
    return found


def copy_example(target: Path) -> Path:
    """A copy of examples/wasm/pyhash at ``target``, without bytecode caches."""
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def build_pyhash(tmp: Path) -> Path:
    """Build and install pyhash with the real ``conduit plugins build`` (componentize-py)
    into a new CONDUIT_HOME under ``tmp``; that home, with the plugin installed and
    precompiled and the module in its build cache."""
    componentize_py()
    home = tmp / "home"
    home.mkdir()
    source = copy_example(tmp / "pyhash")
    proc = plugins_build(home, str(source))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert CACHE_HIT not in proc.stdout  # componentize-py did build it
    assert f"installed {home / 'plugins' / 'pyhash.wasm'}" in proc.stdout
    assert "precompiled in" in proc.stdout  # and its commands checked against describe()
    # the build works on a copy: nothing is written into the source (no __pycache__)
    assert sorted(p.name for p in source.iterdir()) == ["app.py", "conduit-plugin.toml"]
    (cached,) = build_cache(home)
    assert cached.read_bytes() == (home / "plugins" / "pyhash.wasm").read_bytes()
    return home


def plugins_build(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``conduit plugins build ARGS`` in a new process, with the CONDUIT_HOME ``home``."""
    return subprocess.run(
        [sys.executable, "-m", "conduit", "plugins", "build", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "CONDUIT_HOME": str(home)},
        timeout=600,
        check=False,
    )


def build_cache(home: Path) -> list[Path]:
    """The modules in the build cache of the CONDUIT_HOME ``home``."""
    return sorted((home / "cache" / "wasm").glob("build-*.wasm"))


def seed_cache(home: Path, built: Path, *, compiled: bool) -> None:
    """Put the build cache of the CONDUIT_HOME ``built`` into ``home``'s; ``compiled``:
    also its compiled artifacts (``KEY.cwasm`` and ``KEY.meta``), for a test that is not
    about compiling."""
    cache = home / "cache" / "wasm"
    cache.mkdir(parents=True, exist_ok=True)
    wanted = ("build-*.wasm", "*.cwasm", "*.meta") if compiled else ("build-*.wasm",)
    for pattern in wanted:
        for path in (built / "cache" / "wasm").glob(pattern):
            shutil.copy2(path, cache / path.name)


def seed_from_tests(home: Path, basetemp: Path) -> None:
    """Put the module that a plugin project's own tests built (their pytest ran with
    ``--basetemp=BASETEMP``, each test in a Conduit home of its own) into the build cache
    of the CONDUIT_HOME ``home``; they all built one source, so under one build key."""
    found = basetemp.glob("*/conduit-home/cache/wasm/build-*.wasm")  # with *current links
    (built,) = {path.name: path for path in found}.values()
    cache = home / "cache" / "wasm"
    cache.mkdir(parents=True, exist_ok=True)
    shutil.copy2(built, cache / built.name)
