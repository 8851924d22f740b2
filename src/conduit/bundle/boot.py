"""The ``__main__.py`` of a bundle (``conduit bundle``): standard library only.

Never imported from the package: the builder copies this file into the bundle, with the
constants below replaced by the bundle's own (the line ``# -- constants --`` ends them).
``python TOOL.pyz ARGS`` runs it from the zip (zipimport, PEP 441). It

1. refuses to run on an interpreter or platform other than the bundle's target (its
   compiled dependencies, msgspec at least, are built for one): one line, exit 2;
2. extracts the bundle's payload (``payload.zip``, one stored member of the outer zip: a
   zip of ``site-packages/`` and the frozen index, so that zipimport reads a directory of
   four entries on every run, not hundreds) into a directory of its own the first time
   (``CACHE/bundles/NAME-ID``, shiv's rule: a directory named after the bundle's content
   hash, reused while it exists; a changed bundle has another id, so another directory),
   rewriting the paths of the index built at bundle time to that directory (marshal
   only: nothing is rediscovered), compiling its bytecode, and removing the directories of
   the bundle's older ids that no run uses (each run holds a lock on ``NAME-ID/in-use``);
3. puts that directory on ``sys.path`` instead of the interpreter's site-packages (what
   is installed there is not the bundle's), tells ``conduit.paths`` it runs as a bundle,
   and runs ``conduit.cli.main()``.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

NAME = "conduit"
BUNDLE_ID = "0" * 16
SEALED = False
PAYLOAD = "payload.zip"
#: (sys.implementation.cache_tag, sys.platform, machine)
TARGET = ("cpython-311", "linux", "x86_64")
# -- constants --


def _fail(text: str) -> None:
    sys.stderr.write(f"{NAME}: error: {text}\n")
    raise SystemExit(2)


def _machine() -> str:
    return os.uname().machine if hasattr(os, "uname") else ""


def _root() -> str:
    """Where this bundle is extracted: ``CONDUIT_BUNDLE_ROOT``, else Conduit's cache
    directory (``$CONDUIT_HOME/cache``, ``$XDG_CACHE_HOME/conduit``, ``~/.cache/conduit``)."""
    base = os.environ.get("CONDUIT_BUNDLE_ROOT", "")
    if not base:
        home = os.environ.get("CONDUIT_HOME", "")
        if home:
            cache = os.path.join(os.path.abspath(os.path.expanduser(home)), "cache")
        else:
            xdg = os.environ.get("XDG_CACHE_HOME", "")
            if not xdg or not os.path.isabs(xdg):
                xdg = os.path.join(os.path.expanduser("~"), ".cache")
            cache = os.path.join(xdg, "conduit")
        base = os.path.join(cache, "bundles")
    return os.path.join(os.path.abspath(base), f"{NAME}-{BUNDLE_ID}")


def _relocate(value: Any, old: str, new: str) -> Any:
    if type(value) is str:
        return new + value[len(old) :] if value.startswith(old) else value
    if type(value) is list:
        return [_relocate(v, old, new) for v in value]
    if type(value) is tuple:
        return tuple(_relocate(v, old, new) for v in value)
    if type(value) is dict:
        return {k: _relocate(v, old, new) for k, v in value.items()}
    return value


def _freeze_index(tmp: str, root: str) -> None:
    """Point the index built at bundle time at ``root``: its paths began with the
    builder's staging directory, written in ``index/root``."""
    import marshal

    magic = b"CONDUIT-INDEX\n"
    folder = os.path.join(tmp, "index")
    with open(os.path.join(folder, "root"), encoding="utf-8") as f:
        old = f.read()
    with open(os.path.join(folder, "index.records"), "rb") as f:
        table = marshal.loads(f.read()[len(magic) :])
    table = {
        name: marshal.dumps(_relocate(marshal.loads(blob), old, root))
        for name, blob in table.items()
    }
    records = magic + marshal.dumps(table)
    with open(os.path.join(folder, "index.bin"), "rb") as f:
        header = marshal.loads(f.read()[len(magic) :])
    header = _relocate(header, old, root)
    header["plugins"] = len(records)  # the size conduit.index.read() checks
    with open(os.path.join(folder, "index.records"), "wb") as f:
        f.write(records)
    with open(os.path.join(folder, "index.bin"), "wb") as f:
        f.write(magic + marshal.dumps(header))


def _in_use(root: str, wait: bool) -> int:
    """Hold a record lock on the byte of this process's id in ``root/in-use``: the mark
    that this run uses ``root`` (many runs at once, each its own byte: a shared lock with
    ``os`` alone, no ``fcntl`` import on every run). ``wait=False`` is the remover's try
    at the whole file instead: -1 when some run holds a byte of it. The descriptor stays
    open for the process's life; -1 too when the file cannot be opened (read-only)."""
    try:
        fd = os.open(os.path.join(root, "in-use"), os.O_WRONLY | os.O_CREAT, 0o644)
    except OSError:
        return -1
    try:
        if wait:
            os.lseek(fd, os.getpid(), os.SEEK_SET)
            os.lockf(fd, os.F_LOCK, 1)
        else:
            os.lockf(fd, os.F_TLOCK, 0)  # from byte 0 to the end of any file
    except OSError:
        os.close(fd)
        return -1
    return fd


def _remove_older(root: str) -> None:
    """Remove the extracted directories of this bundle's other ids that no run uses."""
    import shutil

    parent, mine = os.path.split(root)
    prefix = f"{NAME}-"
    try:
        entries = os.listdir(parent)
    except OSError:
        return
    for entry in entries:
        ident = entry[len(prefix) :]
        if entry == mine or not entry.startswith(prefix) or len(ident) != len(BUNDLE_ID):
            continue
        if ident.strip("0123456789abcdef"):
            continue  # another bundle's (NAME-other-ID) or a directory being extracted
        other = os.path.join(parent, entry)
        fd = _in_use(other, wait=False)
        if fd < 0:
            continue  # in use (or not ours to remove)
        try:
            gone = f"{other}.removing-{os.getpid()}"
            os.rename(other, gone)  # a run that waited on the lock then extracts anew
        except OSError:
            continue
        finally:
            os.close(fd)
        shutil.rmtree(gone, ignore_errors=True)


def _extract(archive: str, root: str) -> None:
    """Extract the bundle's payload into ``root``, atomically (a directory beside it,
    renamed), byte-compile it there, and remove the directories of older ids."""
    import compileall
    import io
    import py_compile
    import shutil
    import tempfile
    import zipfile

    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(root) + ".", dir=parent)
    try:
        with zipfile.ZipFile(archive) as z:
            payload = io.BytesIO(z.read(PAYLOAD))
        with zipfile.ZipFile(payload) as inner:
            inner.extractall(tmp)
        _freeze_index(tmp, root)
        # The bytecode, once, for this interpreter (the bundle runs on no other): a run
        # never compiles, whatever PYTHONDONTWRITEBYTECODE says or the directory allows;
        # unchecked, so that no run compares it with the sources.
        site = os.path.join(tmp, "site-packages")
        compileall.compile_dir(
            site,
            ddir=os.path.join(root, "site-packages"),
            quiet=2,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
        # The run path of ./TOOL.pyz (the builder's DIRECT functions), compiled once:
        # the sh header's stub checks this directory, then runs it without compiling.
        py_compile.compile(
            os.path.join(tmp, "direct.py"),
            os.path.join(tmp, "direct.pyc"),
            dfile=os.path.join(root, "direct.py"),
            doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
        try:
            os.rename(tmp, root)
        except OSError:
            if not os.path.isdir(root):  # not another run of this bundle that came first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _remove_older(root)


def main() -> None:
    here = (sys.implementation.cache_tag, sys.platform, _machine())
    if here != TARGET:
        _fail(
            f"this bundle is built for {TARGET[0]} on {TARGET[1]} {TARGET[2]}, and this "
            f"interpreter ({sys.executable}) is {here[0]} on {here[1]} {here[2]}: run it "
            "with a matching Python, or build a bundle with this one"
        )
    archive = os.path.abspath(sys.path[0])
    root = _root()
    _in_use(root, wait=True)  # (waits while an extraction of a newer id removes root)
    if not os.path.isdir(root):
        try:
            _extract(archive, root)
        except (OSError, ValueError, EOFError, KeyError) as exc:
            _fail(f"cannot extract the bundle into {root}: {exc} (set CONDUIT_BUNDLE_ROOT)")
        _in_use(root, wait=True)
    _start(archive, root)


def _trust(root: str) -> None:
    """Refuse to run code from ``root`` unless this user made it: a directory (not a
    symlink) of this user's that nobody else may write, in a directory that nobody else
    may rename it out of (else someone who could plant or swap it, in a shared
    ``CONDUIT_BUNDLE_ROOT`` say, would run their code as this user). One line, exit 2."""
    import stat

    why = ""
    try:
        st = os.lstat(root)
        up = os.stat(os.path.dirname(root))
    except OSError as exc:
        why = exc.strerror or str(exc)
    else:
        if not stat.S_ISDIR(st.st_mode):
            why = "it is not a directory (a symlink?)"
        elif st.st_uid != os.geteuid():
            why = f"it belongs to user id {st.st_uid}"
        elif st.st_mode & 0o022:
            why = "others may write to it"
        elif up.st_mode & 0o002 and not up.st_mode & stat.S_ISVTX:
            why = "others may replace it"
    if why:
        sys.stderr.write(
            f"{NAME}: error: will not run the extracted bundle {root}: {why} (remove it, or "
            "set CONDUIT_BUNDLE_ROOT to a directory of your own)\n"
        )
        raise SystemExit(2)


def _start(archive: str, root: str) -> None:
    """Run Conduit from the extracted ``root`` (``sys.argv[1:]`` its arguments)."""
    _trust(root)
    site = os.path.join(root, "site-packages")
    # Only the standard library besides the bundle: the interpreter's site-packages (and
    # what .pth files or PYTHONPATH add) hold what is installed there, not the bundle's.
    prefixes = (sys.base_prefix, sys.base_exec_prefix)
    keep = [
        p
        for p in sys.path[1:]
        if p.startswith(prefixes) and not p.endswith(("site-packages", "dist-packages"))
    ]
    sys.path[:] = [archive, site, *keep]
    import conduit.paths

    conduit.paths.BUNDLE = (root, BUNDLE_ID, SEALED)
    from conduit.cli import main as run

    sys.exit(run(sys.argv[1:]))


def _direct() -> None:
    """``./TOOL.pyz ARGS``: the bundle's sh header found this id's extracted directory and
    ran ``python -S -c SOURCE TOOL.pyz ARGS``, SOURCE being the constants and the
    functions :data:`DIRECT` names (not runpy, nor this zip: no module to import), or
    its stub that checks the directory and runs them from ``direct.pyc``. The
    directory is checked as :func:`main` does, after the in-use lock; anything else (another
    interpreter, the directory gone) runs the zip itself, which says why or extracts."""
    del sys.argv[0]  # "-c": now [TOOL.pyz as invoked, ARGS...], as with python TOOL.pyz
    archive = os.path.abspath(sys.argv[0])
    sys.path[: 0 if sys.flags.safe_path else 1] = [archive]  # "-c" put "" first, unless -P
    if (sys.implementation.cache_tag, sys.platform, _machine()) == TARGET:
        root = _root()
        _in_use(root, wait=True)
        if os.path.isdir(root):
            _start(archive, root)
    os.execv(sys.executable, [sys.executable, "-S", *sys.argv])


#: what the sh header's ``python -c`` runs (the builder takes their source from here)
DIRECT = ("_machine", "_root", "_in_use", "_trust", "_start", "_direct")

if __name__ == "__main__":
    main()
