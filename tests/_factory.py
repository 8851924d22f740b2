"""Helpers that write real plugins to disk for tests."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path


def manifest_block(toml: str) -> str:
    """Turn TOML text into a ``# /// conduit`` comment block."""
    lines = textwrap.dedent(toml).strip().splitlines()
    body = "\n".join(f"# {line}" if line else "#" for line in lines)
    return f"# /// conduit\n{body}\n# ///\n"


def simple_plugin(
    name: str,
    commands: tuple[str, ...] = ("hello",),
    *,
    output: str | None = None,
    extra_toml: str = "",
    boot_prefix: str = "",
    module_prefix: str = "",
) -> str:
    """Source of a single-file plugin whose commands print ``output`` (default: name cmd)."""
    toml = f'name = "{name}"\napi = ">=1.0,<2"\ndescription = "The {name} plugin"\n'
    toml += extra_toml.strip() + "\n" if extra_toml.strip() else ""
    for cmd in commands:
        toml += f'\n[[commands]]\nname = "{cmd}"\nhelp = "Run {cmd} of {name}."\n'
    funcs = []
    regs = []
    for i, cmd in enumerate(commands):
        text = output if output is not None else f"{name} {cmd}"
        funcs.append(
            f"@click.command({cmd.split(' ')[-1]!r})\ndef cmd_{i}():\n    click.echo({text!r})\n"
        )
        regs.append(f"        ctx.register_command(cmd_{i}, {cmd!r})")
    return (
        manifest_block(toml)
        + "import click\nfrom conduit.sdk import Plugin\n"
        + module_prefix
        + "\n\n"
        + "\n\n".join(funcs)
        + "\n\nclass ThePlugin(Plugin):\n    def boot(self, ctx):\n"
        + (boot_prefix or "")
        + "\n".join(regs)
        + "\n"
    )


def write(plugin_dir: Path, filename: str, source: str) -> Path:
    path = plugin_dir / filename
    path.write_text(source, encoding="utf-8")
    return path


_PROBE = """
import json, sys
WATCH
before = set(sys.modules)
from conduit.cli import main
code = main(sys.argv[1:])
sys.stdout.flush()
print("\\n@@" + json.dumps({"code": code, "new": sorted((seen or set(sys.modules)) - before)}))
"""

# Plugins' modules are dropped from sys.modules on deactivation: look just before. This
# imports conduit.kernel up front, so it is only for commands (use watch_kernel=False to
# check what --help imports).
_WATCH_KERNEL = """
import conduit.kernel.core
seen = set()
original = conduit.kernel.core.Kernel.shutdown
def shutdown(self):
    seen.update(sys.modules)
    original(self)
conduit.kernel.core.Kernel.shutdown = shutdown
"""


def imported_by(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    python: str | None = None,
    watch_kernel: bool = True,
) -> tuple[int, set[str]]:
    """Run ``conduit ARGS`` in a fresh interpreter; return its exit code and the modules it
    imported."""
    import json
    import os
    import subprocess
    import sys

    source = _PROBE.replace("WATCH", _WATCH_KERNEL if watch_kernel else "seen = set()")
    proc = subprocess.run(
        [python or sys.executable, "-c", source, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    tail = proc.stdout.rpartition("\n@@")[2]
    assert tail, proc.stderr
    data = json.loads(tail)
    return data["code"], set(data["new"])


# -- real wheels and a real package index (the store's tests and benchmark) -----------------

EPOCH = (2020, 1, 1, 0, 0, 0)  # fixed zip times: the same wheel has the same sha256 every run


def make_wheel(
    out: Path,
    dist: str,
    version: str,
    *,
    plugin: str | None = None,
    api: str = ">=1.0,<2",
    requires: tuple[str, ...] = (),
    capabilities: tuple[str, ...] = (),
    code: str = "",
    manifest: str = "",
) -> Path:
    """Write a real wheel (PEP 427): a plugin package with one command, or a plain library.
    ``code`` goes at the end of the plugin's module, ``manifest`` at the end of its
    manifest's top-level table (``isolation = "process"``)."""
    pkg = dist.replace("-", "_")
    files: dict[str, str] = {}
    if plugin is None:
        files[f"{pkg}/__init__.py"] = f"VERSION = {version!r}\n"
    else:
        caps = ", ".join(json.dumps(c) for c in capabilities)
        files[f"{pkg}/__init__.py"] = ""
        files[f"{pkg}/conduit-plugin.toml"] = (
            f'api = "{api}"\ndescription = "{plugin} {version}"\ncapabilities = [{caps}]\n'
            f"{manifest}"
            f'[[commands]]\nname = "{plugin}-run"\nhelp = "Run {plugin}."\n'
        )
        files[f"{pkg}/plugin.py"] = (
            "import click\nfrom conduit.sdk import Plugin as Base\n"
            f"@click.command('{plugin}-run')\ndef run():\n    click.echo('{plugin} {version}')\n"
            "class Plugin(Base):\n    def boot(self, ctx):\n        ctx.register_command(run)\n"
        ) + code
    info = f"{pkg}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    files[f"{info}/METADATA"] = meta
    files[f"{info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: conduit-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    if plugin is not None:
        files[f"{info}/entry_points.txt"] = f"[conduit.plugins]\n{plugin} = {pkg}.plugin:Plugin\n"
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = "\n".join(record) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{pkg}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(zipfile.ZipInfo(name, EPOCH), text)
    return path


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


REPO = Path(__file__).resolve().parent.parent
UV = shutil.which("uv", path=os.path.dirname(sys.executable)) or shutil.which("uv")


def build_conduit_wheel(out: Path) -> Path:
    """Conduit's wheel, built with uv from this checkout into ``out``."""
    assert UV is not None
    subprocess.run(
        [UV, "build", "--wheel", "--quiet", "--out-dir", str(out), str(REPO)],
        check=True,
        timeout=300,
    )
    return next(out.glob("conduit_devtool-*.whl"))


def conduit_venv(root: Path, wheel: Path, *extra: str, seed: bool = False) -> Path:
    """A new venv at ``root`` with Conduit installed from ``wheel`` (and ``extra``
    requirements; ``seed`` adds pip), made with uv."""
    assert UV is not None
    argv = [UV, "venv", "--quiet", "--python", sys.executable, str(root)]
    subprocess.run([*argv, "--seed"] if seed else argv, check=True, timeout=120)
    python = str(root / "bin" / "python")
    subprocess.run(
        [UV, "pip", "install", "--quiet", "--python", python, str(wheel), *extra],
        check=True,
        timeout=300,
    )
    return root


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class PackageIndex:
    """A directory of wheels served as a simple index (``/simple/NAME/``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "files").mkdir(parents=True)
        handler = lambda *a, **k: _Quiet(*a, directory=str(root), **k)  # noqa: E731
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple"

    def add(self, *wheels: Path) -> None:
        for w in wheels:
            shutil.copy(w, self.root / "files" / w.name)
        projects: dict[str, list[Path]] = {}
        for w in sorted((self.root / "files").iterdir()):
            projects.setdefault(w.name.split("-")[0].replace("_", "-"), []).append(w)
        simple = self.root / "simple"
        simple.mkdir(exist_ok=True)
        links = []
        for project, files in projects.items():
            (simple / project).mkdir(exist_ok=True)
            body = "".join(
                f'<a href="../../files/{f.name}#sha256={sha256(f)[7:]}">{f.name}</a>\n'
                for f in files
            )
            (simple / project / "index.html").write_text(f"<html><body>\n{body}</body></html>\n")
            links.append(f'<a href="{project}/">{project}</a>\n')
        (simple / "index.html").write_text("<html><body>\n" + "".join(links) + "</body></html>\n")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def hello_server(answer: Callable[[str], bytes] | None = None) -> Iterator[int]:
    """A threaded HTTP server on 127.0.0.1 answering each GET with ``answer(path)``
    (default: ``hello from 127.0.0.1``); yields its port."""

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = answer(self.path) if answer else b"hello from 127.0.0.1"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def pty_run(
    argv: list[str],
    answer: str | None,
    env: dict[str, str],
    *,
    timeout: float = 60,
    pipe_stdout: bool = False,
) -> tuple[int, str, str]:
    """Run ``argv`` with a pseudo-terminal as stdin and stderr (and stdout, unless
    ``pipe_stdout``); type ``answer`` once a ``[y/N]`` prompt appears.

    Returns the exit code, what went to a piped stdout ("" otherwise) and everything the
    terminal showed.
    """
    import os
    import pty
    import select
    import subprocess
    import time

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        argv,
        stdin=slave,
        stdout=subprocess.PIPE if pipe_stdout else slave,
        stderr=slave,
        text=True,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    seen = b""
    typed = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        if answer is not None and not typed and b"[y/N] " in seen:
            os.write(master, answer.encode() + b"\n")
            typed = True
        if proc.poll() is not None and not ready:
            break
    out, _ = proc.communicate(timeout=60)
    os.close(master)
    return proc.returncode, out or "", seen.decode().replace("\r\n", "\n")
