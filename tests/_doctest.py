"""Run the console examples of the documentation against the real ``conduit``.

A console example is a fenced block with lines that start with ``$ ``, each followed by
the output it prints. The syntax, for doc writers, is in
docs/architecture.md ("Console examples are tests"). In short:

- each ``$ `` line runs in bash, in a world made for the document: a temporary home
  (``HOME``, with Conduit's files in ``~/.config/conduit`` as for a user; no
  ``CONDUIT_HOME``), a working directory, this checkout's ``conduit`` first on ``PATH``;
  stdin is empty unless the line redirects it; stdout and stderr are compared together;
- the blocks of one document share that world and run in order;
- ``<!-- doctest: skip (REASON) -->`` just before a block skips it (the reason is
  required and counted);
- ``<!-- doctest-setup: SHELL -->`` just before a block runs SHELL (bash, may span lines)
  in the world first, unseen by readers; ``$FIXTURES`` holds the files the document's
  setup function in tests/docs/test_docs.py wrote for it (plugins to copy in); the
  command ``splice FILE NEW`` replaces FILE from NEW's first line to its end with NEW;
- in expected output, a line ``...`` matches any number of lines, ``<...>`` any text
  within a line; a measurement (a number followed by ``ms``, ``s``, ``MB`` or ``KB``, as in
  ``8.5 ms``) matches any number with the same unit, a time to the minute
  or second, with or without its date (``2026-12-07 11:57``, ``23:15:16``), any such time; the world's home directory is printed as the one the document uses
  (``/home/me`` or ``/home/ada``);
- a command whose expected output has a line starting with ``error:`` must exit
  non-zero, any other command zero, unless the next line is ``$ echo $?`` (which then
  shows and checks it: ``$?`` is the previous command's exit code);
- ``<!-- doctest: store -->`` just before a block runs it, with the document's other
  store blocks in order, in a world of its own that has a package index on 127.0.0.1
  (``[store] index-url`` in its config) and a venv with Conduit (``~/.venv``, first on
  ``PATH``) for the store to install into (tests/docs/test_docs_store.py, slow);
- ``<!-- doctest: terminal ANSWER -->`` just before a block runs its commands at a
  terminal (a pty: stdin, stdout and stderr), typing ANSWER at the first ``[y/N]``
  prompt; the status lines Conduit rewrites in place are left out of the output;
- ``<!-- doctest: numbers -->`` just before a block makes any decimal number (``0.033``,
  with the spaces that align it) match any decimal number: for tables of timings.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^(\s*)(```+|~~~+)")
COMMENT = re.compile(r"<!--\s*(doctest(?:-setup)?)\s*:(.*?)-->", re.S)
SKIP = re.compile(r"^skip\s*\((.+)\)$", re.S)


@dataclass
class Block:
    doc: str
    line: int  # 1-based line of the opening fence
    text: str  # the dedented body
    skip: str | None = None
    setup: str = ""
    numbers: bool = False  # `<!-- doctest: numbers -->`: any decimal number matches
    store: bool = False  # `<!-- doctest: store -->`: runs in the store's world (a package index)
    answer: str | None = None  # `<!-- doctest: terminal ANSWER -->`: run at a terminal

    def commands(self) -> list[tuple[str, list[str]]]:
        """The ``$`` lines with their expected output lines."""
        out: list[tuple[str, list[str]]] = []
        for raw in self.text.splitlines():
            if raw.startswith("$ "):
                out.append((raw[2:], []))
            elif out:
                out[-1][1].append(raw.rstrip())
        for _, expected in out:
            while expected and not expected[-1]:
                expected.pop()
        return out


def code_blocks(path: Path, language: str) -> list[str]:
    """The bodies of the fenced blocks of ``language`` in ``path``, in order (for a
    document's setup function to write the files its prose shows)."""
    text = path.read_text(encoding="utf-8")
    found = re.findall(rf"^```{re.escape(language)}\n(.*?)^```", text, re.S | re.M)
    return [str(body) for body in found]


def documents() -> list[Path]:
    docs = sorted((REPO / "docs").rglob("*.md"))
    return [REPO / "README.md", *docs]


def blocks(path: Path) -> list[Block]:
    """Every console block of ``path``, with its skip/setup comments."""
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    found: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, start = m.group(2), i
        i += 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1
        dedented = textwrap.dedent("\n".join(body))
        if not any(line.startswith("$ ") for line in dedented.splitlines()):
            continue
        block = Block(str(path.relative_to(REPO)), start + 1, dedented)
        # The comments just above the fence (blank lines allowed between).
        before = "\n".join(lines[:start]).rstrip()
        while before.endswith("-->"):
            open_at = before.rfind("<!--")
            cm = COMMENT.fullmatch(before[open_at:])
            if not cm:
                break
            kind, arg = cm.group(1), cm.group(2).strip()
            if kind == "doctest" and arg == "numbers":
                block.numbers = True
            elif kind == "doctest" and arg == "store":
                block.store = True
            elif kind == "doctest" and arg.startswith("terminal "):
                block.answer = arg.split(None, 1)[1]
            elif kind == "doctest":
                sm = SKIP.match(arg)
                if not sm:
                    raise ValueError(f"{block.doc}:{block.line}: bad doctest comment {arg!r}")
                block.skip = " ".join(sm.group(1).split())
            else:
                block.setup = arg + "\n" + block.setup
            before = before[:open_at].rstrip()
        found.append(block)
    return found


# A measurement: a number followed by a unit of time or size (``8.5 ms``, ``2.16s``,
# ``+0.1 MB``); in expected output it matches any number with that unit.
MEASURE = re.compile(r"\d+(?:\.\d+)?(?=\s?(?:ms|s|MB|KB|kB)\b)")
# A local time to the minute or second, with or without its date (``2026-12-07 11:57``,
# ``11:57:09``), matches any such time.
MINUTE = re.compile(r"\b(\d{4}-\d\d-\d\d )?\d\d:\d\d(?::\d\d)?\b")


def _measures(text: str) -> str:
    return r"\d+(?:\.\d+)?".join(re.escape(p) for p in MEASURE.split(text))


def _literal(text: str) -> str:
    out, at = [], 0
    for m in MINUTE.finditer(text):
        out.append(_measures(text[at : m.start()]))
        out.append((r"\d{4}-\d\d-\d\d " if m.group(1) else "") + r"\d\d:\d\d(?::\d\d)?")
        at = m.end()
    return "".join(out) + _measures(text[at:])


# With `<!-- doctest: numbers -->`: a decimal number (``0.033``, with the spaces that
# align it in a column, before and after) matches any decimal number, for tables of timings.
DECIMAL = re.compile(r" *\d+\.\d+ *")


def _numbers(text: str, numbers: bool) -> str:
    if not numbers:
        return _literal(text)
    return r" *\d+\.\d+ *".join(_literal(p) for p in DECIMAL.split(text))


def pattern(expected: list[str], numbers: bool = False) -> re.Pattern[str]:
    parts = []
    for line in expected:
        if line.strip() == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            esc = r"[^\n]*?".join(_numbers(p, numbers) for p in line.split("<...>"))
            parts.append(esc + r"[ \t]*\n")
    return re.compile("".join(parts))


# `splice FILE NEW`: replace FILE from the first line of NEW to its end with NEW (an
# edit such as "replace the command and register it"), for setup comments.
SPLICE = """
import sys
from pathlib import Path

path, new = Path(sys.argv[1]), Path(sys.argv[2]).read_text(encoding="utf-8")
text = path.read_text(encoding="utf-8")
at = text.index(new.splitlines()[0])
path.write_text(text[:at] + new, encoding="utf-8")
"""


@dataclass
class World:
    """A temporary machine for one document."""

    root: Path
    doc_home: str
    env: dict[str, str] = field(default_factory=dict)
    status: int = 0  # the exit code of the last command, as `$?` of the next one

    def __post_init__(self) -> None:
        self.home = self.root / "home"
        self.cwd = self.home
        self.config = self.home / ".config" / "conduit"
        self.plugins = self.config / "plugins"
        self.fixtures = self.root / "fixtures"
        self.home.mkdir(parents=True)
        self.fixtures.mkdir()
        bindir = Path(sys.executable).parent
        tools = self.root / "bin"
        tools.mkdir()
        splice = tools / "splice"
        splice.write_text(f"#!{sys.executable}\n{SPLICE}", encoding="utf-8")
        splice.chmod(0o755)
        # CONDUIT_WARM and XDG_RUNTIME_DIR: the examples run cold, as the test's conftest
        # says, and a warm kernel one of them starts is the test's, stopped after it
        keep = ("LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT", "CONDUIT_WARM", "XDG_RUNTIME_DIR")
        self.env = {k: v for k, v in os.environ.items() if k in keep}
        self.env.update(
            HOME=str(self.home),
            PATH=f"{bindir}{os.pathsep}{tools}{os.pathsep}/usr/local/bin{os.pathsep}/usr/bin{os.pathsep}/bin",
            PYTHONUNBUFFERED="1",
            PYTHONDONTWRITEBYTECODE="1",
            COLUMNS="80",
            TERM="dumb",
            GIT_CONFIG_NOSYSTEM="1",
            FIXTURES=str(self.fixtures),
        )
        (self.home / ".gitconfig").write_text(
            "[user]\n\tname = Ada\n\temail = ada@example.org\n"
            "[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n"
        )

    def shell(
        self, script: str, timeout: float = 120, answer: str | None = None
    ) -> tuple[int, str]:
        """Run ``script`` in bash in this world; return the exit code and the output.
        With ``answer``, stdin, stdout and stderr are a terminal, where ``answer`` is
        typed at the first ``[y/N]`` prompt; what the terminal shows is the output, with
        the status lines Conduit rewrites and erases left out."""
        state = self.root / ".cwd"
        wrapped = f"cd {shq(str(self.cwd))} || exit 99\n(exit {self.status})\n{script}\n__rc=$?\npwd > {shq(str(state))}\nexit $__rc\n"
        if answer is not None:
            from _factory import pty_run

            code, _, shown = pty_run(["bash", "-c", wrapped], answer, self.env, timeout=timeout)
            # A status line is rewritten after "\r" and erased with "\x1b[K".
            shown = re.sub(r"[^\n]*\r\x1b\[K", "", shown).replace("\r", "")
            proc = subprocess.CompletedProcess(["bash"], code, shown)
        else:
            proc = subprocess.run(
                ["bash", "-c", wrapped],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=self.env,
                timeout=timeout,
            )
        self.status = proc.returncode
        if state.exists():
            self.cwd = Path(state.read_text().strip())
            state.unlink()
        out = proc.stdout
        for real in {str(self.home), os.path.realpath(self.home)}:
            out = out.replace(real, self.doc_home)
        return proc.returncode, out

    def write_plugin(self, filename: str, source: str, *, installed: bool = True) -> Path:
        """Write a single-file plugin: into the plugin directory, or (``installed=False``)
        into ``$FIXTURES`` for a setup comment to copy in when the document does."""
        folder = self.plugins if installed else self.fixtures
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / filename
        path.write_text(textwrap.dedent(source).lstrip(), encoding="utf-8")
        return path


def shq(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def run_block(world: World, block: Block) -> list[str]:
    """Run one block; return the mismatches (empty when it matches)."""
    problems = []
    where = f"{block.doc}:{block.line}"
    if block.setup:
        code, out = world.shell(block.setup)
        if code != 0:
            return [f"{where}: setup failed ({code}):\n{out}"]
    commands = block.commands()
    for i, (command, expected) in enumerate(commands):
        code, out = world.shell(command, answer=block.answer)
        lines = [line.rstrip() for line in out.splitlines()]
        while lines and not lines[-1]:
            lines.pop()
        actual = "".join(line + "\n" for line in lines)
        if not pattern(expected, block.numbers).fullmatch(actual):
            problems.append(
                f"{where}: $ {command}\n--- expected\n"
                + "\n".join(expected)
                + f"\n--- actual (exit {code})\n"
                + actual
            )
            continue
        wants_error = any(line.startswith("error:") for line in expected)
        # A command followed by `$ echo $?` has its exit code checked by that line.
        checked_next = i + 1 < len(commands) and commands[i + 1][0].strip() == "echo $?"
        if "echo $?" not in command and not checked_next and (code != 0) != wants_error:
            problems.append(f"{where}: $ {command}\nexit code {code}, output:\n{actual}")
    return problems


def doc_home(path: Path) -> str:
    m = re.search(r"/home/(me|ada)\b", path.read_text(encoding="utf-8"))
    return m.group(0) if m else "/home/me"


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
