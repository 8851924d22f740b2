"""A pytest plugin for testing Conduit plugins. Opt-in: enable it in your ``conftest.py``::

    pytest_plugins = ["conduit.testing"]

It is deliberately not registered as a ``pytest11`` entry point, which pytest would load
into every test run of every project installed next to Conduit.

Fixtures:

``conduit_home``
    a fresh, temporary Conduit home (``CONDUIT_HOME``): its own config, plugin
    directory, index and plugin data, so a test never sees the user's plugins.
``conduit``
    a :class:`Conduit` for that home: :meth:`Conduit.load` a plugin from its source
    path without installing it, then :meth:`Conduit.run` commands and look at the
    :class:`Result` (exit code, stdout, stderr).
``conduit_host``
    requesting it runs the test once per host kind, ``"in-process"`` and ``"process"``;
    plugins loaded by ``conduit`` in that test run in that host.

A test::

    def test_hello(conduit, conduit_host):
        conduit.load("hello.py")
        result = conduit.run("hello", "Ada")
        assert result.exit_code == 0, result.stderr
        assert result.stdout == "Hello, Ada!\\n"
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

__all__ = ["HOST_KINDS", "Conduit", "Result", "conduit", "conduit_home", "conduit_host"]

#: the host kinds ``conduit_host`` runs a test under
HOST_KINDS = ("in-process", "process")

_CLEARED_ENV = ("CONDUIT_DISABLE_PLUGINS", "CONDUIT_PROFILE", "CONDUIT_REBUILD_INDEX")


@dataclasses.dataclass(frozen=True)
class Result:
    """The outcome of one Conduit command."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """The same as :attr:`stdout`."""
        return self.stdout


class Conduit:
    """Conduit, set up in a temporary home for one test (the ``conduit`` fixture)."""

    def __init__(
        self,
        home: Path,
        work_dir: Path,
        monkeypatch: pytest.MonkeyPatch,
        host: str | None = None,
    ) -> None:
        self.home = home
        #: the host kind plugins loaded here run in, or None for the one they declare
        self.host = host
        self._work = work_dir
        self._monkeypatch = monkeypatch
        self._site = work_dir / "site"
        self._config_text = ""
        self._isolation: dict[str, str] = {}
        self._modules: set[str] = set()
        self._paths: list[str] = []
        #: modules loaded before this test loaded any plugin: close() leaves them alone
        self._preloaded = set(sys.modules)

    @property
    def plugin_dir(self) -> Path:
        """The plugin directory of this home (single-file plugins go here)."""
        path = self.home / "plugins"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def config_file(self) -> Path:
        """This home's ``config.toml``."""
        return self.home / "config.toml"

    def configure(self, toml: str) -> None:
        """Write ``toml`` to the config file (replacing what an earlier call wrote).

        The ``[isolation]`` table is managed by :meth:`load` under ``conduit_host``;
        do not write one here in such a test.
        """
        self._config_text = toml
        self._write_config()

    def _write_config(self) -> None:
        text = self._config_text
        if self._isolation:
            text += "\n[isolation]\n" + "".join(
                f'"{name}" = "{kind}"\n' for name, kind in sorted(self._isolation.items())
            )
        self.config_file.write_text(text, encoding="utf-8")

    def load(self, path: str | os.PathLike[str]) -> list[str]:
        """Make the plugins at ``path`` available without installing them; return their
        names.

        ``path`` is a single-file plugin (copied into the plugin directory), a directory
        of them, an executable ``conduit-NAME`` in any language (copied too), or a
        project whose ``pyproject.toml`` declares ``conduit.plugins`` entry points: its
        source directory is put on ``sys.path`` and the entry points are declared in a
        throwaway distribution, so Conduit discovers, indexes and loads the plugin as it
        would after ``pip install``. If the project's distribution is already installed
        (``pip install -e .``), that installation is used instead.
        """
        import importlib.metadata

        from conduit.authoring import find_plugins
        from conduit.indexer.discover import executable_plugin_name

        path = os.fspath(path)
        base = os.path.basename(path)
        executable = executable_plugin_name(base)
        if executable is not None and os.path.isfile(path) and os.access(path, os.X_OK):
            # An executable plugin (any language): found in the plugin directory.
            shutil.copy2(path, self.plugin_dir / base)
            return [executable]
        found = find_plugins(path)
        names = []
        for src in found:
            if src.error is not None:
                raise src.error
            assert src.manifest is not None
            names.append(src.name)
            declared = src.manifest.isolation
            if self.host == "in-process" and declared != "in-process":
                pytest.skip(f"plugin '{src.name}' asks for isolation '{declared}'")
            if self.host == "process" and declared == "in-process":
                self._isolation[src.name] = "process"
            if src.kind == "file":
                shutil.copy2(
                    src.manifest_path, self.plugin_dir / os.path.basename(src.manifest_path)
                )
                continue
            assert src.import_root is not None
            self._add_path(src.import_root)
            if src.top_module:
                self._modules.add(src.top_module)
            installed = False
            if src.dist:
                try:
                    importlib.metadata.distribution(src.dist)
                    installed = True
                except importlib.metadata.PackageNotFoundError:
                    pass
            if not installed:
                self._declare(src.dist or f"conduit-test-{src.name}", src.dist_version, src)
        if self._isolation:
            self._write_config()
        return names

    def _add_path(self, entry: str) -> None:
        if entry in self._paths:
            return
        self._paths.append(entry)
        # Not sys.path[0]: Conduit leaves the script's directory out of discovery.
        sys.path.insert(min(1, len(sys.path)), entry)
        # Process hosts are child interpreters: they find the code through PYTHONPATH.
        self._monkeypatch.setenv("PYTHONPATH", os.pathsep.join(self._paths))

    def _declare(self, dist: str, version: str | None, src: object) -> None:
        from conduit.authoring import PluginSource
        from conduit.indexer.discover import ENTRY_POINT_GROUP

        assert isinstance(src, PluginSource)
        key = dist.replace("-", "_").replace(".", "_")
        info = self._site / f"{key}-{version or '0.0.0'}.dist-info"
        info.mkdir(parents=True, exist_ok=True)
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version or '0.0.0'}\n",
            encoding="utf-8",
        )
        eps = info / "entry_points.txt"
        lines = eps.read_text(encoding="utf-8").splitlines() if eps.exists() else []
        if not lines:
            lines = [f"[{ENTRY_POINT_GROUP}]"]
        lines.append(f"{src.name} = {src.entry}")
        eps.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self._add_path(str(self._site))

    def run(self, *args: str, input: str | None = None) -> Result:
        """Run ``conduit ARGS...`` in this interpreter; return its exit code and output.

        Output written to ``sys.stdout``/``sys.stderr`` is captured, including what a
        process-hosted plugin prints. A pass-through executable writes to the real file
        descriptors instead, and a WebAssembly plugin reads the real stdin (``input``
        does not reach it): use :meth:`run_subprocess` for those.
        """
        from conduit.cli import main

        out, err = io.StringIO(), io.StringIO()
        saved = sys.stdin, sys.stdout, sys.stderr
        sys.stdin = io.StringIO(input or "")
        sys.stdout, sys.stderr = out, err
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # a plugin calling sys.exit() outside a command
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            sys.stdin, sys.stdout, sys.stderr = saved
        return Result(code, out.getvalue(), err.getvalue())

    def run_subprocess(self, *args: str, input: str | None = None, timeout: float = 60) -> Result:
        """Run ``python -m conduit ARGS...`` in a fresh interpreter with this home."""
        proc = subprocess.run(
            [sys.executable, "-m", "conduit", *[str(a) for a in args]],
            input=input or "",
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(os.environ),
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def close(self) -> None:
        """Undo :meth:`load`: remove the source paths and forget the plugins' modules."""
        for entry in self._paths:
            while entry in sys.path:
                sys.path.remove(entry)
        for top in self._modules:
            for mod in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
                if mod not in self._preloaded:
                    del sys.modules[mod]
        self._paths.clear()
        self._modules.clear()


@pytest.fixture
def conduit_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, temporary Conduit home, set as ``CONDUIT_HOME`` for the test."""
    home = tmp_path / "conduit-home"
    home.mkdir()
    monkeypatch.setenv("CONDUIT_HOME", str(home))
    for var in _CLEARED_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("COLUMNS", "80")
    return home


@pytest.fixture(params=HOST_KINDS)
def conduit_host(request: pytest.FixtureRequest) -> str:
    """The host kind this run of the test uses; the test runs once for each."""
    return str(request.param)


@pytest.fixture
def conduit(
    conduit_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Iterator[Conduit]:
    """A :class:`Conduit` in a temporary home; with ``conduit_host``, under that host."""
    host = (
        request.getfixturevalue("conduit_host") if "conduit_host" in request.fixturenames else None
    )
    kit = Conduit(conduit_home, tmp_path / "conduit-testing", monkeypatch, host)
    try:
        yield kit
    finally:
        kit.close()
