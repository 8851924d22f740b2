"""Writing a bundle (``conduit bundle -o TOOL.pyz``) and reading its manifest (``--check``).

The format is the standard library's: a PEP 441 zip application (a prefix, then a zip)
whose ``__main__`` is ``boot.py``; the prefix is a ``#!/bin/sh`` script that runs
``./TOOL.pyz`` without Python's runpy once the bundle is extracted (:func:`_header`). What
it runs is extracted once, as shiv does, into a directory named after the bundle's content
hash. Unlike shiv's, that payload is one member of the zipapp, ``payload.zip`` (a zip of
``site-packages/`` and ``index/``, stored whole), beside the bootstrap and the manifest:
Python reads a zipapp's central directory on every run, and four entries cost nothing
where 450 cost ~3 ms. Why not import from the zip: msgspec, Conduit's compiled dependency,
cannot be imported from a zip, and the process host's child and the sandbox want files on
disk; the measurements are in docs/performance.md ("Bundles").

What goes in is copied from this environment's installed distributions, file by file as
their ``RECORD`` lists them: Conduit's own distribution and its dependencies, the chosen
plugins' distributions and their dependency closure (``Requires-Dist``, markers evaluated
for this interpreter). That is exactly what runs here, without a network or a resolver
that could pick something else; a lock file chooses the set and the versions, and each of
its packages must be installed at its locked version. The index is built at bundle time
by Conduit itself, run from the staging directory with the bundle's fingerprint, so that
the bundle never discovers its plugins when it starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

import msgspec

from conduit import __version__
from conduit.errors import ConduitError, UsageError

__all__ = ["MANIFEST", "BuildResult", "build", "read_manifest", "verify"]

#: the bundle's manifest, at the top of the zip (read by ``--check``)
MANIFEST = "conduit-bundle.json"
FORMAT = 2  # 1: site-packages/ and index/ members of the zipapp itself (issue 23's first)
CONDUIT_DIST = "conduit-devtool"
_COMPILED = (".so", ".pyd", ".dylib", ".dll")
_DATE = (2020, 1, 1, 0, 0, 0)  # a fixed time for every member: the same bundle bytes
#: the outer zip's member holding the zip of ``site-packages/`` and ``index/``
PAYLOAD = "payload.zip"
_CONSTANTS_END = "# -- constants --\n"
_DIRECT_CONSTANTS = ("NAME", "BUNDLE_ID", "SEALED", "TARGET")

# Run by the staging directory's own Conduit (python -S: only the standard library and
# the staging directory on sys.path): builds the frozen index, reports its plugins.
_INDEXER = """
import contextlib, io, json, sys
site, root, ident, sealed = sys.argv[1:5]
sys.path[0:1] = [root, site]  # as at run time: [the bundle, its site-packages, ...]
import conduit.paths
conduit.paths.BUNDLE = (root, ident, sealed == "1")
from conduit.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    code = main(["--help"])
from conduit.index import fingerprint, index_path, read
paths = conduit.paths.resolve()
index = read(index_path(paths), fingerprint(paths))
keys = ("name", "version", "dist", "source", "isolation", "capabilities", "first_party")
plugins = [] if index is None else [
    {k: r[k] for k in keys} for r in index["plugins"].values()
]
broken = [] if index is None else [(b["name"], b["error"]) for b in index["broken"]]
blocked = [] if index is None else [(n, e) for n, (e, _) in index["blocked"].items()]
print(json.dumps({"code": code, "plugins": plugins, "broken": broken, "blocked": blocked}))
"""


def _canon(name: str) -> str:
    return name.replace("_", "-").replace(".", "-").lower()


class _Dist:
    """One installed distribution to bundle: its files (source path, path in the zip)."""

    def __init__(self, dist: Any, role: str) -> None:
        self.dist = dist
        self.name: str = dist.metadata["Name"]
        self.version: str = dist.version
        self.role = role
        self.files: list[tuple[str, str]] = []

    def compiled(self) -> list[str]:
        return [arc for _, arc in self.files if arc.endswith(_COMPILED)]


def _installed(name: str, why: str) -> Any:
    from importlib import metadata

    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        raise ConduitError(
            f"{why}: distribution '{name}' is not installed in this environment ({sys.prefix})",
            hint="install it here first, then bundle again",
        ) from None


def installed_plugins() -> dict[str, str]:
    """Plugin name -> distribution name, for every installed plugin distribution."""
    from importlib import metadata

    from conduit.indexer.discover import ENTRY_POINT_GROUP

    found: dict[str, str] = {}
    for dist in metadata.distributions():
        for ep in dist.entry_points:
            if ep.group == ENTRY_POINT_GROUP:
                found.setdefault(ep.name, dist.metadata["Name"])
    return found


def _closure(roots: list[str], role: str, into: dict[str, _Dist]) -> None:
    """Add ``roots`` and their ``Requires-Dist`` closure (this interpreter's markers)."""
    from packaging.requirements import Requirement

    todo: list[tuple[str, frozenset[str], str]] = [(r, frozenset(), "") for r in roots]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras, parent = todo.pop()
        key = (_canon(name), extras)
        if key in seen:
            continue
        seen.add(key)
        why = f"'{parent}' requires it" if parent else "it was chosen"
        dist = _installed(name, why)
        canon = _canon(dist.metadata["Name"])
        if canon not in into:
            into[canon] = _Dist(dist, role)
        for line in dist.requires or []:
            req = Requirement(line)
            wanted = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker is not None and not any(req.marker.evaluate(w) for w in wanted):
                continue
            todo.append((req.name, frozenset(req.extras), dist.metadata["Name"]))


def _editable(dist: Any) -> bool:
    text = dist.read_text("direct_url.json") or ""
    try:
        return bool(json.loads(text).get("dir_info", {}).get("editable")) if text else False
    except ValueError:
        return False


def _package_files(top: str, arc_top: str) -> list[tuple[str, str]]:
    out = []
    for folder, dirs, names in os.walk(top):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for n in sorted(names):
            if n.endswith((".pyc", ".pyo")):
                continue
            src = os.path.join(folder, n)
            out.append((src, arc_top + "/" + os.path.relpath(src, top).replace(os.sep, "/")))
    return out


def _collect(d: _Dist) -> None:
    """The files of ``d``: what its RECORD lists inside its site directory (scripts and
    data outside it are left out), less bytecode; an editable install of Conduit itself
    (a development checkout) contributes its package directories."""
    files = d.dist.files or []
    for f in files:
        if f.parts and f.parts[0] == "..":
            continue
        if "__pycache__" in f.parts or str(f).endswith((".pyc", ".pyo")):
            continue
        arc = "/".join(f.parts)
        if arc.endswith(".pth") or arc.startswith("__editable__"):
            continue
        src = str(d.dist.locate_file(f))
        if os.path.isfile(src):
            d.files.append((src, arc))
    if _editable(d.dist):
        if _canon(d.name) != CONDUIT_DIST:
            raise ConduitError(
                f"'{d.name}' is an editable install: a bundle holds installed files",
                hint=f"install it from a wheel ('pip install {d.name}'), then bundle again",
            )
        import conduit
        import conduit_plugins

        for module in (conduit, conduit_plugins):
            top = os.path.dirname(str(module.__file__))
            d.files += _package_files(top, module.__name__)


def _sha_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _dist_hash(entries: list[tuple[str, str]]) -> str:
    """sha256 of a distribution's files in the bundle: ``path NUL sha256 LF`` sorted."""
    h = hashlib.sha256()
    for arc, sha in sorted(entries):
        h.update(f"{arc}\0{sha}\n".encode())
    return "sha256:" + h.hexdigest()


def _target() -> tuple[str, str, str]:
    machine = os.uname().machine if hasattr(os, "uname") else ""
    return (sys.implementation.cache_tag or "", sys.platform, machine)


def _check_platform(platform: str | None) -> None:
    if platform is None:
        return
    import sysconfig

    from packaging.tags import platform_tags

    here = [*platform_tags(), sysconfig.get_platform().replace("-", "_").replace(".", "_")]
    if platform.replace("-", "_").replace(".", "_") not in here:
        raise UsageError(
            f"--platform {platform} is not this interpreter's platform ({here[-1]}): a "
            "bundle is built from what is installed here, for this platform only",
            hint="run 'conduit bundle' on the target platform, or leave --platform out",
        )


class BuildResult:
    """What :func:`build` wrote: the bundle's path and manifest."""

    def __init__(self, path: str, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest


def _choose(plugins: list[str], lock: str | None) -> tuple[list[str], dict[str, str]]:
    """The distributions to bundle for plugins, and the versions a lock file pins."""
    available = installed_plugins()
    pinned: dict[str, str] = {}
    if lock is not None:
        from conduit.store import lockfile

        locked = lockfile.read(lock)
        if locked is None:
            raise UsageError(f"no lock file at {lock}", hint="conduit plugins lock")
        pinned = {_canon(p.name): p.version for p in locked.package}
        return [p.name for p in locked.package], pinned
    if not plugins:
        return sorted({d for d in available.values() if _canon(d) != CONDUIT_DIST}), pinned
    chosen = []
    for name in plugins:
        if name not in available:
            from conduit.errors import did_you_mean

            guess = did_you_mean(name, list(available))
            raise UsageError(
                f"no installed plugin named '{name}'",
                hint=f"did you mean '{guess}'?" if guess else "see 'conduit plugins list'",
            )
        if _canon(available[name]) != CONDUIT_DIST:
            chosen.append(available[name])
    return sorted(set(chosen)), pinned


def build(
    output: str,
    *,
    plugins: list[str] = [],  # noqa: B006 (never mutated)
    lock: str | None = None,
    sealed: bool = False,
    platform: str | None = None,
    name: str | None = None,
) -> BuildResult:
    """Write the bundle ``output``; a problem is a :class:`ConduitError` (one line)."""
    _check_platform(platform)
    _check_output(output)
    name = name or os.path.splitext(os.path.basename(output))[0] or "conduit"
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise UsageError(f"bundle name '{name}' is not a plain name", hint="--name my-tool")
    roots, pinned = _choose(plugins, lock)
    dists: dict[str, _Dist] = {}
    _closure([CONDUIT_DIST], "conduit", dists)
    _closure(roots, "plugin", dists)
    for canon, version in pinned.items():
        found = dists.get(canon)
        if found is not None and found.version != version:
            raise ConduitError(
                f"'{found.name}' is installed at {found.version}, the lock file pins {version}",
                hint="run 'conduit plugins sync' to install the locked set, then bundle again",
            )
    extra = sorted(d.name for c, d in dists.items() if pinned and c not in pinned)
    extra = [n for n in extra if dists[_canon(n)].role == "plugin"]
    if extra:
        raise ConduitError(
            f"the locked plugins require {', '.join(extra)}, which the lock file does not list",
            hint="regenerate the lock file with 'conduit plugins lock'",
        )
    for d in dists.values():
        _collect(d)
    compiled = sorted(d.name for d in dists.values() if d.role == "plugin" and d.compiled())
    if compiled and platform is None:
        raise ConduitError(
            f"compiled dependencies cannot go in a bundle built without a target platform: "
            f"{', '.join(compiled)}",
            hint="pass --platform with this platform to bundle them for it alone, or choose "
            "plugins without them (--plugin NAME)",
        )
    staging = tempfile.mkdtemp(prefix="conduit-bundle-")
    try:
        return _write(output, staging, name, dists, sealed)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_output(output: str) -> None:
    """Before any work: ``output``'s directory exists and can take a new file."""
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise UsageError(
            f"-o {output}: no directory {folder}", hint="create it first, or write elsewhere"
        )
    if os.path.isdir(output):
        raise UsageError(f"-o {output} is a directory", hint="-o DIR/TOOL.pyz")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(
            f"-o {output}: directory {folder} is not writable", hint="write it elsewhere"
        )


def _write(
    output: str, staging: str, name: str, dists: dict[str, _Dist], sealed: bool
) -> BuildResult:
    root = os.path.join(staging, "root")
    site = os.path.join(root, "site-packages")
    hashes: dict[str, list[tuple[str, str]]] = {}
    everything = hashlib.sha256(f"{FORMAT}\0{name}\0{sealed}\0{_target()}\n".encode())
    for canon in sorted(dists):
        d = dists[canon]
        entries = hashes.setdefault(canon, [])
        for src, arc in sorted(d.files, key=lambda f: f[1]):
            dest = os.path.join(site, *arc.split("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copyfile(src, dest)
            sha = _sha_file(dest)
            entries.append((arc, sha))
            everything.update(f"{arc}\0{sha}\n".encode())
    ident = everything.hexdigest()[:16]
    report = _build_index(staging, root, site, ident, sealed)
    target = _target()
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "name": name,
        "id": ident,
        "sealed": sealed,
        "conduit": __version__,
        "target": {"tag": target[0], "platform": target[1], "machine": target[2]},
        "plugins": sorted(report["plugins"], key=lambda p: p["name"]),
        "distributions": [
            {
                "name": d.name,
                "version": d.version,
                "role": d.role,
                "compiled": bool(d.compiled()),
                "files": len(hashes[c]),
                "sha256": _dist_hash(hashes[c]),
            }
            for c, d in sorted(dists.items())
        ],
        "files": {
            arc: c for c in sorted(hashes) for arc, _ in hashes[c]
        },  # which distribution each file belongs to (for --check's verification)
    }
    with open(os.path.join(os.path.dirname(__file__), "boot.py"), encoding="utf-8") as f:
        boot = f.read()
    head, _, body = boot.partition(_CONSTANTS_END)
    head = head[: head.index("NAME = ")]
    constants = (
        f"NAME = {name!r}\nBUNDLE_ID = {ident!r}\nSEALED = {sealed!r}\nPAYLOAD = {PAYLOAD!r}\n"
        f"TARGET = {target!r}\n"
    )
    main = head + constants + _CONSTANTS_END + body
    import py_compile

    # Its bytecode too (zipimport prefers it; unchecked: no mtime to compare), so that
    # a run does not compile the bootstrap (the bundle is for this interpreter only).
    with open(os.path.join(staging, "__main__.py"), "w", encoding="utf-8") as f:
        f.write(main)
    py_compile.compile(
        os.path.join(staging, "__main__.py"),
        os.path.join(staging, "__main__.pyc"),
        dfile="__main__.py",
        doraise=True,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    with open(os.path.join(staging, "__main__.pyc"), "rb") as compiled:
        main_pyc = compiled.read()
    # A new file of this run's own beside the output (never a name someone may have
    # planted, a symlink say), renamed over it once complete.
    fd, tmp = tempfile.mkstemp(
        prefix=f".{os.path.basename(output)}.",
        suffix=".tmp",
        dir=os.path.dirname(os.path.abspath(output)),
    )
    os.close(fd)
    try:
        _write_zipapp(tmp, root, manifest, main, main_pyc, _header(main, name, ident))
        os.replace(tmp, output)
    except OSError as exc:
        raise ConduitError(
            f"cannot write {output}: {exc.strerror or exc}", hint="write it elsewhere (-o)"
        ) from None
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return BuildResult(output, manifest)


def _member(name: str, data: bytes, compressed: bool) -> tuple[Any, bytes]:
    import zipfile

    info = zipfile.ZipInfo(name, _DATE)
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    return info, data


def _direct_source(main: str) -> str:
    """The bootstrap's run path for ``./TOOL.pyz`` once the bundle is extracted: its
    constants and the functions its ``DIRECT`` names, from ``main`` (the bootstrap as
    built), without docstrings or annotations. The payload holds it as ``direct.py``, which
    the extraction compiles to ``direct.pyc``; the sh header runs it as ``python -S -c``
    where that file is missing (a directory extracted by an older build of this id)."""
    import ast

    tree = ast.parse(main)
    wanted: tuple[str, ...] = ()
    for node in tree.body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "DIRECT":
            wanted = ast.literal_eval(node.value)
    body: list[ast.stmt] = [ast.parse("import os, sys").body[0]]
    for node in tree.body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) in _DIRECT_CONSTANTS:
            body.append(node)
        elif isinstance(node, ast.FunctionDef) and node.name in wanted:
            doc = node.body[0]
            if isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant):
                node.body = node.body[1:]
            node.returns = None
            for arg in node.args.args:
                arg.annotation = None
            body.append(node)
    body.append(ast.parse("_direct()").body[0])
    return ast.unparse(ast.Module(body=body, type_ignores=[]))


def _sh_word(source: str) -> str:
    """``source`` as one sh word (single quotes, readable, where it has no ``"``)."""
    import shlex

    if '"' in source:
        return shlex.quote(source)
    return "'" + source.replace("'", '"') + "'"


# What the sh header runs with ``python -S -c DIR TOOL.pyz ARGS`` when ``DIR/direct.pyc``
# exists: DIR checked as the bootstrap's ``_trust`` does (a directory, not a symlink, this
# user's, that nobody else may write, in a parent nobody else may rename it out of) BEFORE
# anything from it runs (sh has no portable test of modes without a process), then the
# code object of ``direct.pyc`` (this interpreter's magic number) run in ``__main__``;
# anything else runs the zip (``python -S TOOL.pyz``), which says why or extracts.
_DIRECT_STUB = """import os,sys
_r=sys.argv.pop(1)
_c=None
try:
 import marshal,_frozen_importlib_external as _e
 _s=os.lstat(_r);_u=os.stat(os.path.dirname(_r))
 if _s.st_mode&0o170022==0o40000 and _s.st_uid==os.geteuid() and _u.st_mode&0o1002!=2:
  with open(_r+'/direct.pyc','rb') as _f:_b=_f.read()
  if _b[:4]==_e.MAGIC_NUMBER:_c=marshal.loads(memoryview(_b)[16:])
except Exception:pass
if _c is None:os.execv(sys.executable,[sys.executable,'-S',*sys.argv[1:]])
exec(_c)"""


def _header(main: str, name: str, ident: str) -> bytes:
    """The zipapp's prefix on POSIX: a ``#!/bin/sh`` script (zip readers skip data before
    the archive) so that ``./TOOL.pyz`` runs without ``runpy``, which Python uses for any
    ``python TOOL.pyz``. When this id's extracted directory exists (the bootstrap's
    ``_root()``, approximated: Python checks it again), it runs the interpreter that
    built the bundle (else ``python3``) with ``-S -c`` and :data:`_DIRECT_STUB`, which
    checks that directory and runs its ``direct.pyc`` (nothing compiled but the stub), or
    where that file is missing :func:`_direct_source` itself; otherwise with ``-S`` on
    the file itself, which extracts. Elsewhere a shebang only."""
    if os.name != "posix":
        return b"#!/usr/bin/env python3\n"
    import shlex

    built = os.path.realpath(sys.executable)  # the venv's interpreter: its base
    wanted = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    script = f"""#!/bin/sh
# A Conduit bundle, '{name}': a zip application ('python3 THIS' runs it too). Run as
# a program, this starts its copy extracted for id {ident} without Python's runpy.
p={shlex.quote(built)}
if [ ! -x "$p" ]; then
  p=python3
  if ! command -v python3 >/dev/null 2>&1; then
    echo "{name}: error: no Python to run this bundle: it needs {wanted} (run '{wanted} $0')" >&2
    exit 127
  fi
fi
if [ -n "${{CONDUIT_BUNDLE_ROOT-}}" ]; then d=$CONDUIT_BUNDLE_ROOT
elif [ -n "${{CONDUIT_HOME-}}" ]; then d=$CONDUIT_HOME/cache/bundles
else
  case ${{XDG_CACHE_HOME-}} in /*) d=$XDG_CACHE_HOME ;; *) d=${{HOME-}}/.cache ;; esac
  d=$d/conduit/bundles
fi
r=$d/{name}-{ident}
if [ -f "$r/direct.pyc" ]; then
  exec "$p" -S -c {_sh_word(_DIRECT_STUB)} "$r" "$0" "$@"
fi
if [ -d "$r" ]; then
  exec "$p" -S -c {_sh_word(_direct_source(main))} "$0" "$@"
fi
exec "$p" -S "$0" "$@"
"""
    return script.encode()


def _write_zipapp(
    path: str, root: str, manifest: dict[str, Any], main: str, main_pyc: bytes, header: bytes
) -> None:
    """The bundle: a PEP 441 zip application (``header``, then a zip) of four
    members: ``__main__.pyc`` and ``__main__.py`` (the bootstrap, stored: reading them
    needs no zlib), the manifest, and :data:`PAYLOAD`, a zip of ``site-packages/`` and
    ``index/`` stored whole, read only when a run extracts it. zipimport reads the outer
    zip's central directory on every run, in Python: four entries instead of hundreds."""
    import io
    import zipfile

    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        for top in ("site-packages", "index"):
            base = os.path.join(root, top)
            for folder, dirs, files in os.walk(base):
                dirs.sort()
                for n in sorted(files):
                    src = os.path.join(folder, n)
                    arc = top + "/" + os.path.relpath(src, base).replace(os.sep, "/")
                    with open(src, "rb") as f:
                        z.writestr(*_member(arc, f.read(), compressed=True))
        z.writestr(*_member("direct.py", _direct_source(main).encode(), compressed=True))
    text = json.dumps(manifest, indent=1, sort_keys=True).encode()
    with open(path, "wb") as f:
        f.write(header)
        with zipfile.ZipFile(f, "w") as z:
            z.writestr(*_member("__main__.pyc", main_pyc, compressed=False))
            z.writestr(*_member("__main__.py", main.encode(), compressed=False))
            z.writestr(*_member(MANIFEST, text, compressed=True))
            z.writestr(*_member(PAYLOAD, inner.getvalue(), compressed=False))
    os.chmod(path, 0o755)


def _build_index(staging: str, root: str, site: str, ident: str, sealed: bool) -> dict[str, Any]:
    """Build the frozen index with the staged Conduit; keep only the index files."""
    home = os.path.join(staging, "home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "CONDUIT_"))}
    env.update(CONDUIT_HOME=home, CONDUIT_WARM="0")
    proc = subprocess.run(
        [sys.executable, "-S", "-B", "-c", _INDEXER, site, root, ident, "1" if sealed else "0"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConduitError(
            f"building the bundle's index failed: {last}",
            hint="run 'conduit plugins doctor' here first",
        )
    report: dict[str, Any] = json.loads(lines[-1])
    problems = [f"{n}: {e}" for n, e in report["broken"] + report["blocked"]]
    if problems:
        raise ConduitError(
            f"a bundled plugin cannot be loaded: {problems[0]}",
            hint="fix or leave out that plugin (--plugin NAME), then bundle again",
        )
    folder = os.path.join(root, "index")
    for n in os.listdir(folder):
        if n not in ("index.bin", "index.records"):
            os.unlink(os.path.join(folder, n))
    with open(os.path.join(folder, "root"), "w", encoding="utf-8") as f:
        f.write(root)
    return report


def read_manifest(path: str) -> dict[str, Any]:
    """The manifest of the bundle at ``path``, read from the zip (no code runs)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            data: dict[str, Any] = json.loads(z.read(MANIFEST))
    except FileNotFoundError:
        raise UsageError(f"no bundle at {path}", hint="conduit bundle -o TOOL.pyz") from None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ConduitError(
            f"{path} is not a Conduit bundle ({exc})", hint="build one with 'conduit bundle'"
        ) from None
    if not isinstance(data, dict):
        raise ConduitError(
            f"{path} is not a Conduit bundle (its manifest is not a table)",
            hint="build one with 'conduit bundle'",
        )
    if data.get("format") != FORMAT:
        raise ConduitError(
            f"{path} is a bundle of another format ({data.get('format')!r})",
            hint=f"check it with the Conduit that built it (this is {__version__})",
        )
    _check_shape(path, data)
    return data


# What --check reads of a manifest (_check_shape)
class _Plugin(msgspec.Struct):
    name: str
    version: str | None
    source: str
    dist: str | None
    isolation: str
    capabilities: list[str]


class _DistShape(msgspec.Struct):
    name: str
    version: str
    role: str
    compiled: bool
    sha256: str


class _Target(msgspec.Struct):
    tag: str
    platform: str
    machine: str


class _Manifest(msgspec.Struct):
    name: str
    id: str
    sealed: bool
    conduit: str
    target: _Target
    plugins: list[_Plugin]
    distributions: list[_DistShape]
    files: dict[str, str] = {}


def _check_shape(path: str, data: dict[str, Any]) -> None:
    """The manifest has the fields ``--check`` reads, of their types (the file may be
    anyone's: one error line, not a crash)."""
    try:
        msgspec.convert(data, _Manifest)
    except msgspec.ValidationError as exc:
        from conduit.text import inert

        raise ConduitError(
            f"{path} is not a Conduit bundle (its manifest: {inert(str(exc))})",
            hint="build one with 'conduit bundle'",
        ) from None


def verify(path: str, manifest: dict[str, Any]) -> list[str]:
    """The distributions whose files in the payload do not have the manifest's hash."""
    import io
    import zipfile

    found: dict[str, list[tuple[str, str]]] = {}
    owners: dict[str, str] = manifest.get("files", {})
    try:
        with zipfile.ZipFile(path) as outer:
            payload = io.BytesIO(outer.read(PAYLOAD))
        z = zipfile.ZipFile(payload)
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise ConduitError(
            f"{path} has no readable payload ({exc})", hint="build it again with 'conduit bundle'"
        ) from None
    import zlib

    with z:
        for info in z.infolist():
            arc = info.filename
            if not arc.startswith("site-packages/") or info.is_dir():
                continue
            rel = arc[len("site-packages/") :]
            owner = str(owners.get(rel, "?unlisted"))
            try:
                sha = hashlib.sha256(z.read(info)).hexdigest()
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError):
                sha = "unreadable"  # a damaged member: its distribution does not match
            found.setdefault(owner, []).append((rel, sha))
    bad = []
    for d in manifest["distributions"]:
        if _dist_hash(found.pop(_canon(d["name"]), [])) != d["sha256"]:
            bad.append(d["name"])
    bad += sorted(found)  # files no distribution lists
    return bad
