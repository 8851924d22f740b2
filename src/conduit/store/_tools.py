"""The installers Conduit drives: uv (preferred, much faster) or pip.

Conduit never resolves dependencies itself. Everything that needs a resolver or a
download (installing, finding the newest compatible versions, the hashes of a locked
version) goes through one of these two tools, run as a child process:

======================  =====================================  ===========================
operation               uv                                     pip
======================  =====================================  ===========================
install                 ``uv pip install --python PY``         ``PY -m pip install``
uninstall               ``uv pip uninstall --python PY``       ``PY -m pip uninstall -y``
resolve (+ hashes)      ``uv pip compile [--generate-hashes]`` ``pip install --dry-run
                                                               --ignore-installed --report``
======================  =====================================  ===========================

Wheels only, by default: installing a source distribution runs its build code (a
``setup.py``, a build backend) with the user's rights, outside any sandbox. So every
install and resolve passes ``--only-binary :all:`` (both tools accept it; uv refuses
every build with it, direct URL and path requirements included), and the distributions
allowed to build are named one by one (``build=``): uv gets ``--no-binary NAME`` for
each, which lifts the rule for that name only. pip applies ``--only-binary`` to what
it finds on an index or a ``--find-links`` page only: it still builds a local path or a
direct URL requirement, named or found in a dependency's metadata (which PyPI does not
accept). The callers refuse the ones they can see (conduit.store.envs, the catalog, the
lock file); uv is the safer tool, and the default when it is installed.

The installer and everything it starts (pip's and uv's build backends) die with Conduit
on Linux, so a killed ``conduit`` never leaves one changing the environment behind its
back (:func:`_spawn`): the child is a small ``sh`` supervisor that leads a process group
of its own and gets SIGTERM from the kernel when Conduit dies (``PR_SET_PDEATHSIG``); it
starts the installer in that group, and on SIGTERM kills the whole group with SIGKILL.
A parent-death signal alone would reach only the installer, not its build children.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from conduit.errors import HashMismatchError, StoreError
from conduit.store._env import Dist, archive_sha256, stub_wheel

__all__ = ["BUILD_REFUSED", "Pin", "Sources", "Tool", "choose_tool"]

#: what uv says when ``--only-binary :all:`` stopped a build (lowercase)
BUILD_REFUSED = (
    "building source distributions is disabled",
    "wheels are required for",
    "building from source is disabled",
)


@dataclass(frozen=True)
class Sources:
    """Where distributions come from (the installer's defaults when empty)."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()

    def args(self) -> list[str]:
        out: list[str] = []
        if self.index_url:
            out += ["--index-url", self.index_url]
        for url in self.extra_index_urls:
            out += ["--extra-index-url", url]
        for link in self.find_links:
            out += ["--find-links", link]
        return out

    def with_recorded(self, recorded: Sequence[Sources]) -> Sources:
        """These sources, and those ``recorded`` in the lock for installed packages after
        them: a recorded index becomes an extra index (the one given now, or the
        installer's default, stays the first), so that a package installed from it can
        still be found without passing it again."""
        extra = list(self.extra_index_urls)
        links = list(self.find_links)
        for src in recorded:
            for url in ([src.index_url] if src.index_url else []) + list(src.extra_index_urls):
                if url != self.index_url and url not in extra:
                    extra.append(url)
            # a local directory recorded on another machine may not exist here (uv
            # fails on a missing one): only the ones that exist are passed on
            links += [
                link
                for link in src.find_links
                if link not in links and ("://" in link or os.path.isdir(link))
            ]
        return Sources(self.index_url, tuple(extra), tuple(links))

    def local_wheels(self, name: str, version: str) -> list[str]:
        """The wheels of ``name`` ``version`` in the local find-links directories (uv
        gives no hashes for those: Conduit computes them)."""
        from packaging.utils import InvalidWheelFilename, parse_wheel_filename
        from packaging.version import InvalidVersion, Version

        try:
            wanted = Version(version)
        except InvalidVersion:
            return []
        found = []
        for link in self.find_links:
            directory = link[len("file://") :] if link.startswith("file://") else link
            if "://" in directory or not os.path.isdir(directory):
                continue
            for entry in sorted(os.listdir(directory)):
                if not entry.endswith(".whl"):
                    continue
                try:
                    dist, ver, _, _ = parse_wheel_filename(entry)
                except InvalidWheelFilename:
                    continue
                if dist == canonicalize_name(name) and ver == wanted:
                    found.append(os.path.join(directory, entry))
        return found


@dataclass(frozen=True)
class Pin:
    """One resolved distribution: exact version, and the hashes of its files if asked."""

    name: str  # canonical
    version: str
    hashes: tuple[str, ...] = ()  # "sha256:..."
    url: str | None = None


#: the supervisor: the installer in the background, in this shell's process group (a
#: non-interactive shell has no job control); on SIGTERM (Conduit died) the whole group
#: is killed, the shell included. Started before the trap is set, it would not run at all.
_SUPERVISOR = 'trap "kill -KILL 0" TERM; "$@" & wait "$!"'


def _parent_death_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks the kernel for SIGTERM when Conduit dies, or None where
    there is no ``prctl``. libc is looked up here, not in the forked child.

    The signal is sent when the *thread* that forked the child exits: :func:`_spawn`
    waits for the child in the thread that started it, so that thread outlives it."""
    if sys.platform != "linux" or not os.path.exists("/bin/sh"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:  # pragma: no cover - runs in the child between fork and exec
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # Conduit died before the signal was armed
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def _spawn(
    argv: list[str], *, stdout: Any, stderr: Any, env: dict[str, str]
) -> tuple[int, str, str]:
    """Run ``argv`` to the end: ``(returncode, stdout, stderr)`` (the captured ones).

    On Linux under the supervisor (see the module docstring), in a new session, so that
    its process group holds the installer and its build children and nothing else: when
    this call is interrupted (Ctrl-C, any exception) the group is killed before the error
    goes on, and when Conduit is killed the supervisor kills it."""
    hook = _parent_death_hook()
    if hook is not None:
        argv = ["/bin/sh", "-c", _SUPERVISOR, "conduit-installer", *argv]
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        env=env,
        text=True,
        start_new_session=hook is not None,
        preexec_fn=hook,
    )
    try:
        out, err = proc.communicate()
    except BaseException:
        if hook is not None:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)  # not reaped yet: still its group
        proc.kill()
        proc.wait()
        raise
    return proc.returncode, out or "", err or ""


@contextlib.contextmanager
def _tempfile(text: str, suffix: str) -> Iterator[str]:
    fd, path = tempfile.mkstemp(prefix="conduit-", suffix=suffix)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _find_uv() -> str | None:
    found = shutil.which("uv", path=os.path.dirname(sys.executable)) or shutil.which("uv")
    if found:
        return found
    with contextlib.suppress(Exception):
        import uv  # type: ignore[import-not-found, unused-ignore]

        return str(uv.find_uv_bin())
    return None


def _has_pip() -> bool:
    import importlib.util

    return importlib.util.find_spec("pip") is not None


def choose_tool(preference: str, sources: Sources, *, verbose: bool) -> Tool:
    """The installer to use: ``preference`` is "uv", "pip" or "auto" (uv when found)."""
    uv = _find_uv() if preference in ("auto", "uv") else None
    if preference == "uv" and uv is None:
        raise StoreError(
            'the config asks for uv ([store] installer = "uv"), but uv is not installed',
            hint="install it ('pip install uv') or set [store] installer = \"auto\"",
        )
    if uv is not None:
        return Tool("uv", sys.executable, sources, verbose=verbose, uv=uv)
    if not _has_pip():
        raise StoreError(
            f"neither uv nor pip is available to {sys.executable}",
            hint="install one of them into Conduit's environment ('python -m ensurepip')",
        )
    return Tool("pip", sys.executable, sources, verbose=verbose)


@dataclass
class Tool:
    """One installer, bound to the interpreter whose environment it changes."""

    name: str  # "uv" or "pip"
    python: str
    sources: Sources = field(default_factory=Sources)
    verbose: bool = False  # show the installer's own progress (on a TTY)
    uv: str | None = None

    # -- running ------------------------------------------------------------------------

    def _base(self, verb: str) -> list[str]:
        if self.name == "uv":
            assert self.uv is not None
            return [self.uv, "pip", verb, "--python", self.python]
        return [self.python, "-m", "pip", verb, "--disable-pip-version-check", "--no-input"]

    def _run(self, argv: list[str], what: str, *, capture_stdout: bool = False) -> str:
        env = dict(os.environ)
        env.setdefault("PYTHONIOENCODING", "utf-8")
        if not self.verbose:
            argv = [*argv[:3], "--quiet", *argv[3:]] if self.name == "uv" else [*argv, "-q"]
        try:
            code, out, err = _spawn(
                argv,
                stdout=subprocess.PIPE if capture_stdout or not self.verbose else sys.stderr,
                stderr=None if self.verbose else subprocess.PIPE,
                env=env,
            )
        except OSError as exc:
            raise StoreError(f"cannot run {self.name}: {exc}") from None
        if code == 127 and not os.path.exists(argv[0]):  # the supervisor did not find it
            raise StoreError(f"cannot run {self.name}: {argv[0]} not found")
        if code != 0:
            self._fail(what, code, err + out)
        return out

    def _binary_args(self, build: Sequence[str] | None) -> list[str]:
        """Wheels only, except for the distributions named in ``build`` (``None``: any
        distribution may be built)."""
        if build is None:
            return []
        args = ["--only-binary", ":all:"]
        if self.name == "uv":  # pip builds local paths and direct URLs in any case
            for name in build:
                args += ["--no-binary", name]
        return args

    def _fail(self, what: str, code: int, output: str) -> None:
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        hashy = [ln for ln in lines if "hash" in ln.lower() and "--hash" not in ln]
        if hashy:
            raise HashMismatchError(
                f"{what}: hash mismatch: {hashy[-1] if len(hashy) > 1 else hashy[0]}",
                hint="a downloaded file differs from the sha256 in the lock file; "
                "if the lock file is right, the package index serves other files than it did",
            )
        # the first error line and what the installer says under it (uv: "cause:", "Because")
        first = next((i for i, ln in enumerate(lines) if ln.lower().startswith("error")), None)
        picked = lines[first:] if first is not None else lines[-3:]
        detail = " ".join(ln.lstrip("\u00d7\u2570\u2500\u25b6 ") for ln in picked)
        detail = (detail[:400] + " ...") if len(detail) > 400 else detail
        detail = detail or f"exit status {code}"
        refused = any(m in detail.lower() for m in BUILD_REFUSED)
        raise StoreError(
            f"{what}: {self.name} failed: {detail}",
            hint="Conduit installs wheels only: a source distribution is built only when "
            "you name it (a directory or an sdist file on the command line)"
            if refused
            else None
            if self.verbose  # its output is on the screen already
            else "run again with --verbose to see the installer's output",
        )

    # -- operations ---------------------------------------------------------------------

    def install(
        self,
        specs: Sequence[str],
        *,
        constraints: str | None = None,
        requirements: str | None = None,
        no_deps: bool = False,
        require_hashes: bool = False,
        reinstall: bool = False,
        target: str | None = None,
        build: Sequence[str] | None = (),
        what: str = "install",
    ) -> None:
        """Install ``specs`` (and/or a requirements file's text) into the environment,
        or into the directory ``target`` (``--target``) instead.

        Wheels only, but for the distributions named in ``build`` (``None``: no rule).
        Every spec must be a requirement or a path, never an option."""
        _refuse_options(specs, what)
        if requirements is not None:
            _refuse_options(requirements.splitlines(), what)
        with contextlib.ExitStack() as stack:
            argv = self._base("install") + self.sources.args() + self._binary_args(build)
            if constraints is not None:
                argv += ["-c", stack.enter_context(_tempfile(constraints, ".txt"))]
            if requirements is not None:
                argv += ["-r", stack.enter_context(_tempfile(requirements, ".txt"))]
            if no_deps:
                argv.append("--no-deps")
            if require_hashes:
                argv.append("--require-hashes")
            if reinstall:
                argv.append("--reinstall" if self.name == "uv" else "--force-reinstall")
            if target is not None:
                argv += ["--target", target]
            self._run([*argv, *specs], what)

    def uninstall(self, names: Sequence[str], *, what: str = "uninstall") -> None:
        if not names:
            return
        _refuse_options(names, what)
        argv = self._base("uninstall")
        if self.name == "pip":
            argv.append("-y")
        self._run([*argv, *names], what)

    def resolve(
        self,
        requirements: Sequence[str],
        *,
        constraints: str | None = None,
        deps: bool = True,
        hashes: bool = False,
        refresh: bool = False,
        build: Sequence[str] | None = (),
        installed: Sequence[tuple[Dist, bool]] = (),
        what: str = "resolve",
    ) -> dict[str, Pin]:
        """Resolve ``requirements`` with the installer (nothing is installed).

        ``installed``: distributions that are satisfied by what is installed, never looked
        up on an index (Conduit and its requirements, plugins installed from a path):
        each is offered to the resolver as its only candidate, a code-less wheel of its
        installed name and version (with its requirements when the flag is set), so
        that a requirement on it is checked against the installed version. They are
        not in the answer.

        ``refresh`` asks the index again instead of trusting cached pages (uv keeps them
        as long as HTTP caching allows): for questions like "is there a newer version".
        ``build`` as for :meth:`install` (finding a source distribution's dependencies
        means building its metadata, which runs its build code).
        """
        if not requirements:
            return {}
        _refuse_options(requirements, what)
        with contextlib.ExitStack() as stack:
            lines = list(requirements)
            if installed:
                stubs = stack.enter_context(tempfile.TemporaryDirectory(prefix="conduit-"))
                for dist, with_requires in installed:
                    path = stub_wheel(stubs, dist, requires=with_requires)
                    lines.append(f"{dist.display} @ {pathlib.Path(path).as_uri()}")
            req_file = stack.enter_context(_tempfile("\n".join(lines) + "\n", ".in"))
            extra: list[str] = []
            if constraints is not None:
                extra += ["-c", stack.enter_context(_tempfile(constraints, ".txt"))]
            if not deps:
                extra.append("--no-deps")
            extra += self._binary_args(build)
            if self.name == "uv":
                assert self.uv is not None
                argv = [self.uv, "pip", "compile", "--python", self.python]
                argv += ["--no-header", "--no-annotate", *self.sources.args(), *extra]
                if hashes:
                    argv.append("--generate-hashes")
                if refresh:
                    argv.append("--refresh")
                out = self._run([*argv, req_file], what, capture_stdout=True)
                pins = _parse_compiled(out)
            else:
                report = stack.enter_context(_tempfile("", ".json"))
                argv = [*self._base("install"), "--dry-run", "--ignore-installed"]
                argv += ["--report", report, *self.sources.args(), *extra, "-r", req_file]
                self._run(argv, what)
                with open(report, encoding="utf-8") as f:
                    pins = _parse_report(json.load(f))
        for dist, _ in installed:
            pins.pop(dist.name, None)
        return pins


def _refuse_options(specs: Sequence[str], what: str) -> None:
    """A spec is a requirement or a path: one that starts with ``-`` (or spans lines, in
    a requirements file) would be read as an installer option."""
    for spec in specs:
        if spec.lstrip().startswith("-") or "\n" in spec or "\r" in spec:
            raise StoreError(
                f"{what}: refusing {spec!r}: it would be read as an installer option",
                hint="name a requirement ('name>=1.0'), or a path ('./-dir' for a name "
                "that starts with '-')",
            )


def _parse_compiled(text: str) -> dict[str, Pin]:
    """Read ``uv pip compile`` output: ``name==1.0 \\`` + ``--hash=sha256:...`` lines."""
    logical: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        if buf.strip():
            logical.append(buf.strip())
        buf = ""
    pins: dict[str, Pin] = {}
    for line in logical:
        if line.startswith("-"):
            continue  # --index-url and friends
        req_text = line.split(" --hash=", 1)[0].strip()
        hashes = tuple(sorted(re.findall(r"--hash=(\S+)", line)))
        try:
            req = Requirement(req_text)
        except InvalidRequirement:
            continue
        version = next((s.version for s in req.specifier if s.operator == "=="), "")
        name = canonicalize_name(req.name)
        pins[name] = Pin(name, version, hashes, req.url)
    return pins


def _parse_report(report: dict[str, object]) -> dict[str, Pin]:
    """Read pip's installation report (``--report``, format 1)."""
    pins: dict[str, Pin] = {}
    for item in report.get("install", []):  # type: ignore[attr-defined]
        meta = item["metadata"]
        name = canonicalize_name(meta["name"])
        info = item.get("download_info", {})
        sha = archive_sha256(info.get("archive_info", {}))
        url = info.get("url") if item.get("is_direct") else None
        pins[name] = Pin(name, meta["version"], (f"sha256:{sha}",) if sha else (), url)
    return pins
