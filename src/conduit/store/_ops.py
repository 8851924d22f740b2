"""Install, uninstall, update, lock and sync, each as one transaction.

Every operation that changes the environment runs under the store's file lock (one per
environment, so two ``conduit plugins install`` serialise) and inside a journal:

1. the set of installed distributions before the change, and the lock file's bytes, are
   written to ``<state>/store/journal-<env>.json`` (atomically);
2. the installer runs, the new plugins are validated (an index rebuild) and booted once
   in their own hosts (the verifier the command passes: conduit.kernel.verify), and the
   new lock file is written (atomically);
3. the journal is removed: that is the commit point.

A failure in step 2 restores the environment and the lock file from the journal. A
``conduit`` killed at any moment (SIGKILL: nothing of it runs any more) leaves the
journal behind, and the next store command restores the state it describes before doing
anything else. The installer child dies with Conduit, so nothing changes the
environment after the kill.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlparse

import msgspec
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from conduit.errors import ConfigError, StoreError, UsageError
from conduit.fs import atomic_write, locked
from conduit.journal import bind_lock, journal_file, read_journal, write_journal
from conduit.store import lockfile
from conduit.store._env import (
    Dist,
    Snapshot,
    closure,
    conduit_closure,
    constraints_text,
    plugin_closure,
    snapshot,
)
from conduit.store._tools import Pin, Sources, Tool, choose_tool
from conduit.store.lockfile import LockedPackage, LockFile

__all__ = ["Change", "Progress", "Store"]

#: a plugin's failure to load, from the install verification: (message, hint, traceback)
Failure = tuple[str, "str | None", str]


@dataclass(frozen=True)
class Change:
    name: str
    old: str | None  # None: newly installed
    new: str | None  # None: removed

    def to_json(self) -> dict[str, str | None]:
        return {"name": self.name, "from": self.old, "to": self.new}

    def text(self) -> str:
        if self.old is None:
            return f"+ {self.name} {self.new}"
        if self.new is None:
            return f"- {self.name} {self.old}"
        return f"~ {self.name} {self.old} -> {self.new}"


class Progress:
    """Where an operation reports what it is doing; this one shows nothing. The command
    line's terminal renderer (``builtins/plugins/_progress.py``) overrides these."""

    def step(self, text: str) -> None:
        """A step of Conduit's own starts ("installing ...", "verifying ...")."""

    def plan(self, changes: list[Change]) -> None:
        """The changes, as soon as they are known (before the grant prompt)."""

    def done(self) -> None:
        """The steps are over (the grant prompt or the result comes next)."""


@dataclass
class Result:
    """What an operation did, for the command to print (or dump as JSON)."""

    changes: list[Change] = field(default_factory=list)
    plugins: list[dict[str, Any]] = field(default_factory=list)
    lock: str | None = None
    lock_changed: bool = False
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "changes": [c.to_json() for c in self.changes],
            "plugins": self.plugins,
            "lock": self.lock,
            "lock_changed": self.lock_changed,
            "notes": self.notes,
        }


def _refuse_webassembly(spec: str) -> None:
    """A WebAssembly plugin (a ``.wasm`` file, or a source directory that ``plugins build``
    takes: ``conduit-plugin.toml`` and ``app.py`` or ``plugin.wasm``, no Python project) is
    not a distribution: say which command installs it instead of the installer's error."""
    from conduit.manifest import is_wasm_source

    if spec.endswith(".wasm") and os.path.isfile(spec):
        what = "a WebAssembly module"
    elif is_wasm_source(spec):
        what = "the source of a WebAssembly plugin"
    else:
        return
    raise UsageError(
        f"{spec} is {what}, not a Python distribution: 'plugins install' installs packages",
        hint=f"install it with 'conduit plugins build {spec}' (builds, installs and "
        "precompiles it; docs/wasm.md)",
    )


def _refuse_option(spec: str) -> None:
    if spec.startswith("-") or any(c in spec for c in "\r\n"):
        raise UsageError(
            f"{spec!r} is not a requirement or a path: the installer would read it as an option",
            hint="write a path that starts with '-' as './-name'",
        )


def _sdist_name(filename: str) -> str | None:
    """The project name of an sdist file name (``name-1.0.tar.gz``), if it is one."""
    from packaging.utils import InvalidSdistFilename, parse_sdist_filename

    base = os.path.basename(unquote(urlparse(filename).path) if "://" in filename else filename)
    if base.endswith(".whl"):
        return None
    try:
        return str(parse_sdist_filename(base)[0])
    except InvalidSdistFilename:
        return None


def _project_name(directory: str) -> str | None:
    """The ``[project] name`` of a source directory (or ``[metadata] name`` of its
    ``setup.cfg``): what the installer will call the distribution it builds."""
    import configparser
    import tomllib

    try:
        with open(os.path.join(directory, "pyproject.toml"), "rb") as f:
            name = tomllib.load(f).get("project", {}).get("name")
        if isinstance(name, str) and name:
            return name
    except (OSError, tomllib.TOMLDecodeError, AttributeError):
        pass
    cfg = configparser.ConfigParser()
    try:
        cfg.read(os.path.join(directory, "setup.cfg"), encoding="utf-8")
        return cfg.get("metadata", "name", fallback=None) or None
    except (configparser.Error, UnicodeDecodeError):
        return None


def _named_builds(specs: Sequence[str], tool: str) -> list[str]:
    """The distributions named on the command line that may be built from source: a
    source directory, an sdist file, or a requirement with a URL that is not a wheel.
    uv needs their names (``--no-binary NAME`` lifts its wheels-only rule for that name
    only); pip builds local paths and direct URLs anyway, and needs none."""
    names: list[str] = []
    for spec in specs:
        if os.path.isdir(spec):
            name = _project_name(spec)
            if name is None and tool == "uv":
                raise UsageError(
                    f"cannot tell the project name of {spec}: uv builds a named source "
                    "only when Conduit can tell it by its name",
                    hint="add [project] name to its pyproject.toml, or install it with "
                    "--installer pip",
                )
        elif os.path.isfile(spec) or "://" in spec.split("@")[0]:
            name = _sdist_name(spec)
        else:
            try:
                req = Requirement(spec)
            except InvalidRequirement:
                continue
            if req.url is None or req.url.split("#")[0].endswith(".whl"):
                continue
            name = req.name
        if name is not None:
            names.append(name)
    return names


def _changes(before: Snapshot, after: Snapshot) -> list[Change]:
    out = []
    for name in sorted(set(before.dists) | set(after.dists)):
        b, a = before.dists.get(name), after.dists.get(name)
        if b is None and a is not None:
            out.append(Change(a.display, None, a.version))
        elif a is None and b is not None:
            out.append(Change(b.display, b.version, None))
        elif a is not None and b is not None and (a.version, a.url) != (b.version, b.url):
            out.append(Change(a.display, b.version, a.version))
    return out


def _sha256_of_file_url(url: str) -> str | None:
    parsed = urlparse(url)
    if parsed.scheme != "file":
        return None
    h = hashlib.sha256()
    try:
        with open(unquote(parsed.path), "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return None
    return f"sha256:{h.hexdigest()}"


def _drop_half_installed(before: dict[str, dict[str, str | None]]) -> None:
    """Remove the ``.dist-info`` directories in this environment that have no ``RECORD``
    or no ``METADATA`` and are not a version the transaction started with (``before``).

    pip and uv write ``RECORD`` last: one without it is an install that was killed (with
    Conduit, or by Ctrl-C) while it wrote the distribution. Neither installer can remove
    or replace such a distribution ("no RECORD file was found"), so the restore that
    follows would fail. The files it had written stay, unlisted, until the restore or a
    later install of the same distribution overwrites them; without its ``.dist-info``
    it is no longer installed (nor a plugin). One without ``METADATA`` is no
    distribution at all: what uninstalling leaves of an install pip was killed in after
    it had written the wheel's files (the wheel's own ``RECORD`` among them) and
    ``INSTALLER``, ``REQUESTED`` and ``direct_url.json``, but before its own ``RECORD``,
    which lists those three (the restore runs this again after its uninstall)."""
    import shutil

    from conduit.index import site_dirs

    prefix = os.path.realpath(sys.prefix) + os.sep
    for site in site_dirs():
        if not os.path.realpath(site).startswith(prefix):
            continue  # only Conduit's environment, never the user's site-packages
        try:
            names = os.listdir(site)
        except OSError:
            continue
        for name in names:
            info = os.path.join(site, name)
            if not name.endswith(".dist-info") or all(
                os.path.exists(os.path.join(info, file)) for file in ("RECORD", "METADATA")
            ):
                continue
            dist, _, version = name[: -len(".dist-info")].partition("-")
            old = before.get(canonicalize_name(dist))
            if old is None or old["version"] != version:
                shutil.rmtree(info, ignore_errors=True)


def _local_dir(url: str | None) -> str | None:
    """The directory a ``file://`` URL names, if it is one (a directory install)."""
    if url is None or urlparse(url).scheme != "file":
        return None
    path = unquote(urlparse(url).path)
    return path if os.path.isdir(path) else None


def _locked_url(pkg: LockedPackage, base: str) -> str | None:
    """Where ``pkg`` is installed from here: a directory's path is relative to the lock
    file's directory ``base``."""
    if pkg.directory is None:
        return pkg.url
    return pathlib.Path(os.path.normpath(os.path.join(base, pkg.directory))).as_uri()


def _check_directory(pkg: LockedPackage, base: str, lock_path: str) -> None:
    """Refuse a locked directory that is missing or whose sources differ from the lock."""
    from conduit.errors import HashMismatchError

    assert pkg.directory is not None
    folder = os.path.normpath(os.path.join(base, pkg.directory))
    if not os.path.isdir(folder):
        raise StoreError(
            f"{lock_path}: {pkg.name} {pkg.version} is locked from the directory "
            f"{pkg.directory} (relative to the lock file), and {folder} is not a directory",
            hint="sync from a checkout that has it next to the lock file where it was locked",
        )
    found = lockfile.content_hash(folder)
    if found != pkg.content_hash:
        raise HashMismatchError(
            f"{lock_path}: {pkg.name} {pkg.version}: the sources in {folder} differ from the "
            f"locked ones (content hash {found}, locked {pkg.content_hash})",
            hint=f"if the change is intended, install it again ('conduit plugins install "
            f"{folder}') to re-lock it; else restore the directory",
        )


def _recorded(pkg: LockedPackage) -> Sources:
    return Sources(pkg.index, tuple(pkg.extra_indexes), tuple(pkg.find_links))


def _file_sha256(path: str) -> str | None:
    return _sha256_of_file_url(pathlib.Path(path).as_uri())


class Store:
    """The plugin store of the running interpreter's environment (``sys.prefix``)."""

    def __init__(
        self,
        *,
        lock_path: str | None = None,
        index_url: str | None = None,
        find_links: Sequence[str] = (),
        installer: str | None = None,
        verbose: bool = False,
        echo: Callable[[str], None] | None = None,
        ask: bool = False,
        verify: Callable[[list[str]], list[Failure]] | None = None,
        progress: Progress | None = None,
    ) -> None:
        from conduit.config import read_settings
        from conduit.paths import resolve

        self.paths = resolve()
        self.settings = read_settings(self.paths.config_file).store
        self.lock_path = lockfile.find(self.paths.config_dir, lock_path, os.getcwd())
        links = [
            link if "://" in link else os.path.abspath(link)
            for link in (*find_links, *self.settings.find_links)
        ]
        #: the sources given now (flags, config): recorded for what this run installs
        self.given = Sources(
            index_url or self.settings.index_url,
            tuple(self.settings.extra_index_url),
            tuple(dict.fromkeys(links)),
        )
        #: and those recorded in the lock: what the installer is told
        previous = self._previous_lock()
        self.sources = self.given.with_recorded(
            [_recorded(p) for p in previous.package] if previous else []
        )
        self._installer = installer or self.settings.installer
        self.verbose = verbose
        self.echo = echo or (lambda _text: None)
        self.ask = ask  # offer the capabilities of new plugins at the grant prompt
        #: boots new or changed plugins once in their hosts before the commit (None:
        #: --no-verify); the composition root passes conduit.kernel.verify's
        self.verify = verify
        self.progress = progress or Progress()
        self._tool: Tool | None = None
        #: what the installer reported installing in this run, with its files (pip)
        self._reported: dict[str, Pin] = {}
        self.guard = self.paths.store_file("env")  # journal.store_lock_file() probes it
        self.journal = journal_file(self.paths)

    @property
    def tool(self) -> Tool:
        if self._tool is None:
            self._tool = choose_tool(self._installer, self.sources, verbose=self.verbose)
        return self._tool

    # -- transactions -------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        import filelock

        try:
            with locked(self.guard, timeout=900):
                yield
        except filelock.Timeout:
            raise StoreError(
                "another plugin install has held the store lock for 15 minutes",
                hint=f"if no other conduit is running, remove {self.guard}.lock",
            ) from None

    def _lock_bytes(self, path: str | None = None) -> str | None:
        try:
            with open(path or self.lock_path, encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def _transaction(self, op: str) -> Iterator[Snapshot]:
        """Run one change under the journal (the caller holds the store lock)."""
        before = snapshot()
        entry = {
            "op": op,
            "pid": os.getpid(),
            "prefix": sys.prefix,
            "before": before.to_json(),
            "lock_path": self.lock_path,
            "lock_before": self._lock_bytes(),
        }
        target = lockfile.migrated_path(self.lock_path)
        if target != self.lock_path:  # an older conduit.lock: the write migrates it
            entry["lock_target"] = target
            entry["lock_target_before"] = self._lock_bytes(target)
        write_journal(self.journal, entry)
        try:
            yield before
        except BaseException as exc:
            try:
                self._restore(entry)
            except StoreError as failed:
                raise StoreError(
                    f"{exc}; then restoring the previous state failed too: {failed}",
                    hint="run 'conduit plugins sync' to retry the restore",
                ) from exc
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.journal)
            # the index rebuilt meanwhile skipped the drift check (the journal was live)
            self._invalidate_index()
            raise
        os.unlink(self.journal)  # the commit point
        # the lock file drift is measured against; the index rebuilt meanwhile compared
        # with none (the journal was live)
        if bind_lock(self.paths, self.lock_path):
            self._invalidate_index()

    def _invalidate_index(self) -> None:
        """Make the next run rebuild the index (and with it the drift check)."""
        from conduit.index import index_path

        with contextlib.suppress(OSError):
            os.unlink(index_path(self.paths))

    def recover(self) -> str | None:
        """Undo an operation that was interrupted (the caller holds the store lock)."""
        try:
            entry = read_journal(self.journal)
            if entry is None:
                return None
            entry["before"], entry["op"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                self.journal,
                f"unreadable store journal: {exc}",
                hint="check the plugins with 'conduit plugins sync', then delete this file",
            ) from None
        self._restore(entry, validate=False)
        os.unlink(self.journal)
        self._validate_index()  # an index built meanwhile warns about the journal
        return (
            f"restored the plugins and lock file from before an interrupted "
            f"'{entry['op']}' (pid {entry.get('pid', '?')})"
        )

    def _restore(self, entry: dict[str, Any], *, validate: bool = True) -> None:
        before: dict[str, dict[str, str | None]] = entry["before"]
        _drop_half_installed(before)
        now = snapshot()
        remove = [d.display for n, d in now.dists.items() if n not in before]
        reinstall = []
        builds = []  # installed from a directory or a URL the user named: built again
        for name, old in before.items():
            cur = now.dists.get(name)
            if cur is None or (cur.version, cur.url) != (old["version"], old["url"]):
                url = old["url"]
                reinstall.append(f"{name} @ {url}" if url else f"{name}=={old['version']}")
                if url:
                    builds.append(name)
        if remove or reinstall:
            self.progress.step("restoring the previous state")
        if remove:
            self.tool.uninstall(remove, what="restore (uninstall)")
            _drop_half_installed(before)  # what an uninstall by a wheel's RECORD leaves
        if reinstall:
            self.tool.install(reinstall, no_deps=True, build=builds, what="restore (reinstall)")
        again = snapshot()
        wrong = sorted(
            n
            for n in set(before) | set(again.dists)
            if n not in before
            or n not in again.dists
            or again.dists[n].version != before[n]["version"]
        )
        if wrong:
            raise StoreError(f"could not restore {', '.join(wrong)}")
        # a migration's new file (see _write_lock), then the lock file read
        for key, before_key in (
            ("lock_target", "lock_target_before"),
            ("lock_path", "lock_before"),
        ):
            lock_path, lock_before = entry.get(key), entry.get(before_key)
            if lock_path:
                if lock_before is None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(lock_path)
                else:
                    atomic_write(lock_path, lock_before.encode("utf-8"))
        if validate and (remove or reinstall):
            self._validate_index()  # leave a fresh index for the restored environment

    # -- validation ---------------------------------------------------------------------

    def _validate_index(self) -> dict[str, Any]:
        """Rebuild the index for the changed environment, as the next ``conduit`` run would.

        In this process (a fresh interpreter would cost 0.3-0.4 s more): the import caches
        are dropped and new ``.pth`` files (editable installs) are read first, so that it
        sees what a new process would see. The index it writes is the one the next run
        uses, so that run does not pay for the rebuild.
        """
        import importlib
        import site

        from conduit.indexer.build import load
        from conduit.timing import Profile

        importlib.invalidate_caches()
        for entry in list(sys.path):
            if entry.endswith("-packages") and os.path.isdir(entry):
                site.addsitedir(entry)
        index = load(self.paths, Profile(False), force_rebuild=True)
        keys = ("dist", "version", "blocked", "blocked_hint", "enabled", "capabilities")
        plugins = {}
        for name in list(index["plugins"]):
            rec = index["plugins"][name]
            plugins[name] = {k: rec[k] for k in keys}  # type: ignore[literal-required]
        return {"plugins": plugins, "broken": list(index["broken"])}

    def _check_plugins(self, dists: list[Dist], what: str) -> list[dict[str, Any]]:
        """Refuse (StoreError) unless every plugin of ``dists`` is valid and usable."""
        if not dists:
            return []
        index = self._validate_index()
        found = []
        for d in dists:
            for name in d.plugins:
                broken = [b for b in index["broken"] if b["name"] == name]
                rec = index["plugins"].get(name)
                problem = hint = None
                if broken:
                    problem, hint = broken[0]["error"], broken[0]["hint"]
                elif rec is None:
                    problem = "it was not found after installing"
                elif canonicalize_name(rec["dist"] or "") != d.name:
                    problem = f"the name '{name}' is already taken by {rec['dist']}"
                elif rec["blocked"]:
                    problem, hint = rec["blocked"], rec["blocked_hint"]
                if problem is not None:
                    raise StoreError(
                        f"refused {d.display} {d.version}: plugin '{name}': {problem}",
                        hint=f"{hint + '; ' if hint else ''}nothing was changed "
                        f"(the previous state is restored)",
                    )
                found.append(
                    {
                        "name": name,
                        "dist": d.display,
                        "version": d.version,
                        "capabilities": (rec or {}).get("capabilities", []),
                    }
                )
        return found

    def _verify(self, plugins: list[dict[str, Any]]) -> None:
        """Boot ``plugins`` (from :meth:`_check_plugins`) once in their hosts; the first
        failure is a StoreError with the plugin's own one-line error, which undoes the
        transaction."""
        names = [p["name"] for p in plugins]
        if self.verify is None or not names:
            return
        self.progress.step(f"verifying {', '.join(names)}")
        failures = self.verify(names)
        if not failures:
            return
        message, _hint, trace = failures[0]  # its hint is for a run, not an install
        others = f" ({len(failures) - 1} more failed too)" if len(failures) > 1 else ""
        error = StoreError(
            f"{message}{others}",
            hint="nothing was changed (the previous state is restored); --no-verify skips "
            "this check",
        )
        error.__dict__["remote_traceback"] = trace  # printed by 'conduit --debug'
        raise error

    # -- the lock file ------------------------------------------------------------------

    def _previous_lock(self) -> LockFile | None:
        try:
            return lockfile.read(self.lock_path)
        except ConfigError:
            return None  # regenerating it is exactly what 'lock' is for

    def _build_lock(
        self, snap: Snapshot, requested: dict[str, str], notes: list[str], *, fresh: bool = False
    ) -> LockFile:
        """The lock for ``snap``. A package the previous lock has at the same version
        (and URL) with its files keeps its entry: no index is asked again (``fresh``:
        every one is, as 'plugins lock' does). A new one gets its files (URL and sha256)
        from what the installer reported for this run (pip), else from one resolution
        (uv's PEP 751 output, pip's report), else from the files in a local find-links
        directory; one that has none is locked without hashes and named in ``notes``: it
        never blocks the operation. A directory install is locked by its path relative
        to the lock file and the hash of its sources (:func:`lockfile.content_hash`)."""
        own = conduit_closure(snap)
        names = sorted(plugin_closure(snap, own))
        previous = self._previous_lock()
        old = previous.by_name() if previous else {}
        base = os.path.dirname(os.path.abspath(lockfile.migrated_path(self.lock_path)))

        def kept(n: str) -> bool:
            o, d = old.get(n), snap.dists[n]
            return (
                not fresh
                and o is not None
                and o.directory is None
                and _local_dir(o.url) is None
                and (o.files or o.url is not None)  # an older lock's entry gets its files
                and (o.version, o.url) == (d.version, d.url)
            )

        reported = {
            n: p
            for n, p in self._reported.items()
            if not fresh and p.files and n in snap.dists and snap.dists[n].version == p.version
        }
        from_index = [
            snap.dists[n].pin()
            for n in names
            if snap.dists[n].url is None and not kept(n) and n not in reported
        ]
        pins = self.tool.resolve(from_index, deps=False, hashes=True, refresh=fresh, what="lock")
        pins.update(reported)
        packages = []
        missing = []
        for n in names:
            d = snap.dists[n]
            req = requested.get(n) or (old[n].requested if n in old else None)
            if kept(n):
                packages.append(
                    msgspec.structs.replace(
                        old[n], requested=req if d.plugins else None, plugins=list(d.plugins)
                    )
                )
                continue
            files: list[lockfile.LockedFile] = []
            directory = content = None
            hashes: list[str] = []
            folder = _local_dir(d.url)
            if folder is not None:
                directory = pathlib.Path(os.path.relpath(folder, base)).as_posix()
                content = lockfile.content_hash(folder)
            elif d.url is not None:
                hashes = [h for h in [d.url_hash or _sha256_of_file_url(d.url)] if h]
            else:
                pin = pins.get(n)
                if pin is None or pin.version != d.version:
                    if not fresh and n in old and old[n].version == d.version:
                        packages.append(old[n])  # no source offers it now: kept as it was
                        continue
                    missing.append(d)
                    continue
                files = [lockfile.LockedFile(url=u, hash=h, sdist=sd) for u, h, sd in pin.files]
                if not files:
                    files = [
                        lockfile.LockedFile(url=pathlib.Path(w).as_uri(), hash=h)
                        for w in self.sources.local_wheels(n, d.version)
                        if (h := _file_sha256(w))
                    ]
                hashes = sorted({f.hash for f in files} | set(pin.hashes))
                if not hashes:
                    notes.append(
                        f"warning: {d.display} {d.version} is locked without hashes: its "
                        "source offers none ('plugins sync' installs it unchecked)"
                    )
            src = self.given.with_recorded([_recorded(old[n])] if n in old else [])
            packages.append(
                LockedPackage(
                    name=n,
                    version=d.version,
                    hashes=sorted(hashes),
                    requested=req if d.plugins else None,
                    plugins=list(d.plugins),
                    url=d.url if directory is None else None,
                    index=src.index_url if d.url is None else None,
                    extra_indexes=list(src.extra_index_urls) if d.url is None else [],
                    find_links=list(src.find_links) if d.url is None else [],
                    files=files,
                    directory=directory,
                    content_hash=content,
                )
            )
        if missing:
            what = ", ".join(f"{d.display} {d.version}" for d in missing)
            raise StoreError(
                f"cannot lock {what}: no configured source offers "
                + ("it" if len(missing) == 1 else "them"),
                hint="install plugins from the configured index ([store] index-url), "
                "from a wheel file, or pass the --index-url/--find-links it came from",
            )
        return LockFile(package=packages)

    def _write_lock(
        self, snap: Snapshot, requested: dict[str, str], result: Result, *, fresh: bool = False
    ) -> None:
        """Write the lock for ``snap``. An older ``conduit.lock`` is migrated: the
        ``pylock.conduit.toml`` next to it is written (atomically), then it is removed
        (the journal restores both if the operation fails after this)."""
        lock = self._build_lock(snap, requested, result.notes, fresh=fresh)
        target = lockfile.migrated_path(self.lock_path)
        result.lock = target
        result.lock_changed = lockfile.write(target, lock)
        if target != self.lock_path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.lock_path)
            result.notes.append(
                f"migrated {self.lock_path} to {target} (PEP 751 format): commit the new "
                "file and remove the old one from version control"
            )
            result.lock_changed = True
            self.lock_path = target

    # -- operations ---------------------------------------------------------------------

    def _expand(self, spec: str) -> str:
        """A short name from the catalog becomes its package spec."""
        if not self.settings.catalog or os.path.exists(spec):
            return spec
        try:
            req = Requirement(spec)
        except InvalidRequirement:
            return spec
        if req.specifier or req.url or req.extras or req.marker:
            return spec
        from conduit.store import catalog

        try:
            entries = catalog.load(
                self.settings.catalog, self.paths.cache_dir, self.settings.catalog_max_age
            )
        except StoreError as exc:
            self.echo(f"warning: {exc}; installing '{spec}' as given")
            return spec
        entry = catalog.lookup(entries, spec)
        if entry is None:
            return spec
        package = catalog.requirement(entry)  # never an option, a URL or a path
        if canonicalize_name(package.split(";")[0]) == spec:
            return spec
        self.echo(f"'{spec}' is {package} (from the catalog)")
        return package

    def install(self, specs: Sequence[str], *, what: str = "install") -> Result:
        """Install ``specs`` (whatever the installer accepts) into Conduit's environment.

        Only the sources named here (a directory, an sdist, a URL) may run their build
        code; everything else, the dependencies of the named ones included, comes as
        wheels (:func:`_named_builds`)."""
        for spec in specs:
            _refuse_option(spec)
            _refuse_webassembly(spec)
        builds = _named_builds(specs, self.tool.name)
        specs = [self._expand(s) for s in specs]
        requested: dict[str, str] = {}
        for spec in specs:
            with contextlib.suppress(InvalidRequirement):
                if not os.path.exists(spec):
                    req = Requirement(spec)
                    if req.url is None:
                        requested[canonicalize_name(req.name)] = str(req)
        result = Result()
        with self._locked():
            self._note_recovery(result)
            with self._transaction(what) as before:
                own = conduit_closure(before)
                self.progress.step(f"installing {' '.join(specs)} (with {self.tool.name})")
                self._reported = self.tool.install(
                    specs,
                    constraints=constraints_text(before, own),
                    build=builds,
                    report=True,
                    what=what,
                )
                after = snapshot()
                self._apply_checks(before, after, own, requested, result, what)
        self.approve(result, result.plugins)
        return result

    def _apply_checks(
        self,
        before: Snapshot,
        after: Snapshot,
        own: set[str],
        requested: dict[str, str],
        result: Result,
        what: str,
    ) -> None:
        result.changes = _changes(before, after)
        touched = [c.name for c in result.changes if canonicalize_name(c.name) in own]
        if touched:  # the constraints should make this impossible; never trust, check
            raise StoreError(
                f"{what} would change Conduit's own requirements ({', '.join(touched)})",
                hint="a plugin needs other versions of them than this Conduit; "
                "ask its author, or upgrade Conduit",
            )
        for name in requested:
            d = after.dists.get(name)
            if d is not None and not d.plugins:
                raise StoreError(
                    f"{d.display} is not a Conduit plugin: it declares no entry point in "
                    "the 'conduit.plugins' group",
                    hint="check the name; 'conduit plugins search TERM' lists known plugins",
                )
        changed = [
            after.dists[canonicalize_name(c.name)]
            for c in result.changes
            if c.new is not None and after.dists[canonicalize_name(c.name)].plugins
        ]
        if what == "install" and result.changes and not changed:
            raise StoreError(
                "none of the installed distributions provides a Conduit plugin "
                f"({', '.join(c.name for c in result.changes)})",
                hint="a plugin distribution declares an entry point in the 'conduit.plugins' group",
            )
        self.progress.plan(result.changes)
        self.progress.step("checking the new plugins")
        result.plugins = self._check_plugins(changed, what)
        self._verify(result.plugins)
        self.progress.step("writing the lock file")
        self._write_lock(after, requested, result)

    def approve(self, result: Result, plugins: list[dict[str, Any]]) -> None:
        """The capabilities ``plugins`` (new or changed by ``result``) lack: offered at the
        kernel's grant prompt when :attr:`ask` is set and a person can answer (the grants
        are written on yes), else listed in ``result.notes`` with the command that grants
        them. Runs after the change is committed and the store's lock released: a "no"
        leaves the plugin installed but not activated, as on its first use."""
        self.progress.done()
        if not any(p.get("capabilities") for p in plugins):
            return
        from conduit.indexer.build import load
        from conduit.security.grants import offer
        from conduit.timing import Profile

        index = load(self.paths, Profile(False))
        names = [p["name"] for p in plugins if p.get("capabilities")]
        result.notes += offer(index, names, self.paths.config_file, ask=self.ask)

    def _note_recovery(self, result: Result) -> None:
        note = self.recover()
        if note:
            result.notes.append(note)

    def _dist_of(self, snap: Snapshot, own: set[str], name: str) -> Dist:
        key = canonicalize_name(name)
        d = snap.dists.get(key) or next((x for x in snap.dists.values() if name in x.plugins), None)
        if d is None:
            raise UsageError(
                f"no installed plugin or plugin distribution named '{name}'",
                hint="see 'conduit plugins list'",
            )
        if d.name in own:
            raise UsageError(
                f"'{d.display}' is part of Conduit itself, not a plugin distribution",
                hint="plugin operations never change Conduit's own requirements",
            )
        if not d.plugins:
            raise UsageError(
                f"'{d.display}' is not a plugin distribution, only a dependency",
                hint="it is removed together with the last plugin that needs it",
            )
        return d

    def uninstall(self, names: Sequence[str]) -> Result:
        """Remove plugin distributions (by plugin or distribution name) and orphans."""
        result = Result()
        with self._locked():
            self._note_recovery(result)
            with self._transaction("uninstall") as before:
                own = conduit_closure(before)
                targets = {self._dist_of(before, own, n).name for n in names}
                roots = [n for n, d in before.dists.items() if d.plugins and n not in own]
                keep = closure(before, [r for r in roots if r not in targets], own)
                if targets & keep:
                    target = min(targets & keep)
                    users = sorted(
                        before.dists[r].display
                        for r in roots
                        if r not in targets and target in closure(before, [r], own)
                    )
                    raise UsageError(
                        f"'{before.dists[target].display}' is needed by {', '.join(users)}",
                        hint="uninstall those too (in the same command), or keep it",
                    )
                remove = sorted(closure(before, sorted(targets), own) - keep)
                self.progress.plan(
                    [Change(before.dists[n].display, before.dists[n].version, None) for n in remove]
                )
                self.progress.step(f"uninstalling (with {self.tool.name})")
                self.tool.uninstall([before.dists[n].display for n in remove])
                after = snapshot()
                result.changes = _changes(before, after)
                self.progress.step("checking the remaining plugins")
                index = self._validate_index()
                for pname, rec in sorted(index["plugins"].items()):
                    if rec["blocked"] and rec["enabled"]:
                        result.notes.append(
                            f"warning: plugin '{pname}' is now unavailable: {rec['blocked']}"
                        )
                self.progress.step("writing the lock file")
                self._write_lock(after, {}, result)
        return result

    def _roots(self, snap: Snapshot, own: set[str]) -> list[Dist]:
        return sorted(
            (d for n, d in snap.dists.items() if d.plugins and n not in own),
            key=lambda d: d.name,
        )

    def _requested(self) -> dict[str, str]:
        previous = self._previous_lock()
        if previous is None:
            return {}
        return {p.name: p.requested for p in previous.package if p.requested}

    def _installed(self, snap: Snapshot, own: set[str], stay: set[str]) -> list[tuple[Dist, bool]]:
        """What a resolution takes as installed, never from an index: Conduit's own
        closure (its requirements are installed too), and the distributions in ``stay``
        (with their requirements, which stay checked)."""
        out = [(snap.dists[n], False) for n in sorted(own)]
        return out + [(snap.dists[n], True) for n in sorted(stay - own)]

    def _tolerant(
        self, names: list[str], attempt: Callable[[list[str]], dict[str, Pin]]
    ) -> tuple[dict[str, Pin], dict[str, str]]:
        """``attempt(names)``; when that fails, each name alone, then the ones that
        resolve together: one plugin the index cannot serve never blocks the others.
        Returns the pins and ``{name: why}`` for the ones that failed."""
        try:
            return attempt(names), {}
        except StoreError as exc:
            if len(names) == 1:
                return {}, {names[0]: exc.message}
            failed: dict[str, str] = {}
            for n in names:
                try:
                    attempt([n])
                except StoreError as one:
                    failed[n] = one.message
            good = [n for n in names if n not in failed]
            if not failed:
                raise  # they resolve alone but not together: that is the answer
            return (attempt(good) if good else {}), failed

    def plan_update(self, names: Sequence[str]) -> tuple[list[Change], list[str]]:
        """What ``update`` would change: ``(changes, notes)``; resolves, installs nothing.

        Only the selected plugins (the named ones, else every plugin installed from an
        index) and their dependencies are resolved; Conduit's own distributions and
        everything else installed stay as they are, taken as installed
        (:meth:`_installed`): the index is never asked for them. When no plugin is
        named, one that cannot be resolved is named in a note and the others update."""
        snap = snapshot()
        own = conduit_closure(snap)
        roots = {d.name: d for d in self._roots(snap, own)}
        chosen = sorted({self._dist_of(snap, own, n).name for n in names})
        requested = self._requested()
        notes = []
        for n in chosen:
            if roots[n].url is not None:
                notes.append(
                    f"{roots[n].display} was installed from {roots[n].url}; "
                    "install it again to change it"
                )
        candidates = [n for n in (chosen or sorted(roots)) if roots[n].url is None]

        def attempt(selected: list[str]) -> dict[str, Pin]:
            reqs = [requested.get(n) or roots[n].display for n in selected]
            stay = plugin_closure(snap, own) - closure(snap, selected, own)
            return self.tool.resolve(
                reqs,
                refresh=True,
                installed=self._installed(snap, own, stay),
                what="update",
            )

        if not candidates:
            return [], notes
        if chosen:
            pins, failed = attempt(candidates), dict[str, str]()
        else:
            pins, failed = self._tolerant(candidates, attempt)
        for n, why in sorted(failed.items()):
            notes.append(f"warning: {roots[n].display} was not updated: {why}")
        changes = []
        for n, pin in sorted(pins.items()):
            cur = snap.dists.get(n)
            if n in own or pin.url is not None:
                continue
            if cur is None or cur.version != pin.version:
                changes.append(
                    Change(cur.display if cur else n, cur.version if cur else None, pin.version)
                )
        return changes, notes

    def update(self, names: Sequence[str], *, dry_run: bool = False) -> Result:
        result = Result()
        if dry_run:
            result.changes, result.notes = self.plan_update(names)
            return result
        with self._locked():
            self._note_recovery(result)
            self.progress.step(f"resolving (with {self.tool.name})")
            changes, notes = self.plan_update(names)
            result.notes += notes
            if not changes:
                result.notes.append("everything is up to date")
                return result
            self.progress.plan(changes)
            pins = [f"{c.name}=={c.new}" for c in changes]
            with self._transaction("update") as before:
                own = conduit_closure(before)
                self.progress.step(f"installing {' '.join(pins)} (with {self.tool.name})")
                self._reported = self.tool.install(
                    pins, constraints=constraints_text(before, own), report=True, what="update"
                )
                after = snapshot()
                self._apply_checks(before, after, own, {}, result, "update")
        self.approve(result, result.plugins)
        return result

    def outdated(self) -> list[dict[str, Any]]:
        """Plugin distributions with a newer version that this environment can take
        (plugins installed from a path or a URL are left out). One that cannot be
        resolved gets a row with ``available`` None and the ``error``."""
        snap = snapshot()
        own = conduit_closure(snap)
        roots = {d.name: d for d in self._roots(snap, own) if d.url is None}
        requested = self._requested()
        stay = {d.name for d in self._roots(snap, own) if d.url is not None}

        def attempt(selected: list[str]) -> dict[str, Pin]:
            reqs = [requested.get(n) or roots[n].display for n in selected]
            installed = self._installed(snap, own, stay)
            return self.tool.resolve(reqs, refresh=True, installed=installed, what="outdated")

        pins, failed = self._tolerant(sorted(roots), attempt) if roots else ({}, {})
        rows = []
        for d in roots.values():
            pin = pins.get(d.name)
            row = {
                "name": d.display,
                "plugins": list(d.plugins),
                "installed": d.version,
                "available": None,
                "requested": requested.get(d.name),
            }
            if d.name in failed:
                rows.append({**row, "error": failed[d.name]})
                continue
            if pin is None:
                continue
            try:
                newer = Version(pin.version) > Version(d.version)
            except InvalidVersion:
                newer = pin.version != d.version
            if newer:
                rows.append({**row, "available": pin.version})
        return rows

    def lock(self) -> Result:
        """Write the lock file for what is installed now."""
        result = Result()
        with self._locked():
            self._note_recovery(result)
            self._write_lock(snapshot(), {}, result, fresh=True)
            bind_lock(self.paths, self.lock_path)
            self._invalidate_index()  # a drift warning in it is answered now
        return result

    def sync(self, *, reinstall: bool = False) -> Result:
        """Make the plugin distributions match the lock file exactly (hashes checked)."""
        result = Result(lock=self.lock_path)
        with self._locked():
            self._note_recovery(result)
            lock = lockfile.read(self.lock_path)
            if lock is None:
                raise StoreError(
                    f"no lock file at {self.lock_path}",
                    hint="create one with 'conduit plugins lock', or pass --lock PATH",
                )
            with self._transaction("sync") as before:
                own = conduit_closure(before)
                wanted = lock.by_name()
                for name in sorted(wanted):
                    if canonicalize_name(name) in own:
                        raise ConfigError(
                            self.lock_path,
                            f"package {name} is one of Conduit's own requirements; the lock "
                            "file holds only plugins and their other dependencies",
                            hint="regenerate it with 'conduit plugins lock'",
                        )
                base = os.path.dirname(os.path.abspath(self.lock_path))
                where = {n: _locked_url(p, base) for n, p in wanted.items()}
                todo = [
                    p
                    for n, p in sorted(wanted.items())
                    if reinstall
                    or n not in before.dists
                    or (before.dists[n].version, before.dists[n].url) != (p.version, where[n])
                ]
                folders = [p for p in todo if p.directory is not None]
                for p in folders:
                    _check_directory(p, base, self.lock_path)
                for p in todo:
                    if p.directory is not None:
                        continue  # its sources are the ones locked: built as when installed
                    if p.url is not None and not urlparse(p.url).path.endswith(".whl"):
                        # a directory, an sdist or a VCS URL: installing it runs its build
                        # code, and nobody named it on this command line
                        raise StoreError(
                            f"{p.name} {p.version} is locked from a source that would have "
                            f"to be built ({p.url}); 'sync' builds nothing",
                            hint=f"install it yourself if you trust it: conduit plugins "
                            f"install '{p.name} @ {p.url}'",
                        )
                hashed = [p for p in todo if p.hashes]
                lines = []
                for p in hashed:
                    head = f"{p.name} @ {p.url}" if p.url else f"{p.name}=={p.version}"
                    lines.append(" ".join([head, *(f"--hash={h}" for h in p.hashes)]))
                if lines:
                    self.progress.step(
                        f"installing {len(lines)} locked distributions (hashes checked, "
                        f"with {self.tool.name})"
                    )
                    self.tool.install(
                        [],
                        requirements="\n".join(lines) + "\n",
                        no_deps=True,
                        require_hashes=True,
                        reinstall=reinstall,
                        what=f"sync {self.lock_path}",
                    )
                if folders:
                    self.echo(f"sync: building {len(folders)} locked directories")
                    self.tool.install(
                        [f"{p.name} @ {where[p.name]}" for p in folders],
                        no_deps=True,
                        build=[p.name for p in folders],
                        what=f"sync {self.lock_path}",
                    )
                unchecked = [p for p in todo if not p.hashes and p.directory is None]
                for p in unchecked:
                    result.notes.append(
                        f"warning: {p.name} {p.version} is installed from "
                        f"{p.url or 'the package index'} without a hash check (the lock "
                        "has none for it)"
                    )
                if unchecked:
                    self.tool.install(
                        [
                            f"{p.name} @ {p.url}" if p.url else f"{p.name}=={p.version}"
                            for p in unchecked
                        ],
                        no_deps=True,
                        what="sync (unhashed)",
                    )
                plugin_dists = plugin_closure(before, own)
                extra = [
                    d.display
                    for n, d in sorted(before.dists.items())
                    if n not in wanted and n not in own and (d.plugins or n in plugin_dists)
                ]
                if extra:
                    self.progress.step(f"removing {' '.join(extra)} (with {self.tool.name})")
                    self.tool.uninstall(extra, what="sync")
                after = snapshot()
                result.changes = _changes(before, after)
                self.progress.plan(result.changes)
                wrong = [
                    n
                    for n, p in wanted.items()
                    if n not in after.dists or after.dists[n].version != p.version
                ]
                if wrong:
                    raise StoreError(f"sync did not install {', '.join(sorted(wrong))}")
                changed = [after.dists[n] for n in wanted if after.dists[n].plugins]
                self.progress.step("checking the plugins")
                result.plugins = self._check_plugins(changed, "sync")
                fresh = {canonicalize_name(c.name) for c in result.changes if c.new}
                self._verify([p for p in result.plugins if canonicalize_name(p["dist"]) in fresh])
        new = [
            p for p in result.plugins if any(c.name == p["dist"] and c.new for c in result.changes)
        ]
        self.approve(result, new)
        return result
