"""``conduit todo`` and ``conduit loc``: everyday questions about the workspace.

Both commands look at the same files, chosen by :func:`text_files`: what git considers
part of the work tree (tracked, plus untracked files that are not ignored), or, outside
a git work tree, a directory walk that skips hidden and tool directories. Binary and
very large files are left out, so neither command ever reports on generated blobs.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator, Sequence
from typing import TypedDict

import click

from conduit.sdk import Plugin, PluginContext

__all__ = [
    "DEFAULT_TAGS",
    "LANGUAGES",
    "DevtoolsPlugin",
    "LocRow",
    "TodoItem",
    "count_lines",
    "find_todos",
    "text_files",
]

MAX_BYTES = 2 * 1024 * 1024
_SNIFF_BYTES = 8192
_SKIP_DIRS = frozenset({".venv", "node_modules", "__pycache__"})
DEFAULT_TAGS = ("TODO", "FIXME", "XXX", "HACK")


# -- file selection ----------------------------------------------------------------------
def _git_files(root: str) -> list[str] | None:
    """Files git sees under ``root`` (relative to it), or None outside a git work tree."""
    import subprocess

    try:
        proc = subprocess.run(
            ["git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            check=False,
        )
    except OSError:  # git is not installed: fall back to walking the directory
        return None
    if proc.returncode != 0:
        return None
    # A file can be listed twice (e.g. tracked and deleted); sorting also merges the
    # tracked and untracked lists, which git prints one after the other.
    return sorted({os.fsdecode(p) for p in proc.stdout.split(b"\0") if p})


def _walked_files(root: str) -> Iterator[str]:
    for top, dirs, files in os.walk(root):
        # Pruning in place stops os.walk from descending into these at all.
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS)
        rel = os.path.relpath(top, root)
        for name in sorted(files):
            yield name if rel == "." else os.path.join(rel, name)


def _read_text(path: str) -> str | None:
    """The file's text, or None for non-regular, unreadable, binary or oversized files."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_BYTES:
            return None
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError:  # deleted since git listed it, a dangling link, no permission
        return None
    if len(data) > MAX_BYTES or b"\0" in data[:_SNIFF_BYTES]:
        return None
    # Replacing bad bytes keeps a Latin-1 file countable instead of silently dropping it.
    return data.decode("utf-8", errors="replace")


def text_files(paths: Sequence[str]) -> Iterator[tuple[str, str]]:
    """Yield ``(display path, text)`` for every text file under ``paths`` (default ".").

    A directory contributes what ``git ls-files -co --exclude-standard`` lists when it
    is inside a git work tree (so ``.gitignore`` is honoured), otherwise every file of a
    walk skipping hidden directories, ``.venv``, ``node_modules`` and ``__pycache__``.
    A file named explicitly is always read. Each file is yielded once.
    """
    seen: set[str] = set()
    for root in paths or ["."]:
        if os.path.isdir(root):
            listed = _git_files(root)
            rels = listed if listed is not None else _walked_files(root)
            candidates: Iterator[str] = (os.path.normpath(os.path.join(root, r)) for r in rels)
        else:
            candidates = iter([os.path.normpath(root)])
        for path in candidates:
            key = os.path.realpath(path)
            if key in seen:
                continue
            seen.add(key)
            text = _read_text(path)
            if text is not None:
                yield path, text


def _lines(text: str) -> list[str]:
    # Not str.splitlines(): it also splits on form feeds and Unicode separators, which
    # would make line numbers disagree with editors and git.
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


# -- todo --------------------------------------------------------------------------------
class TodoItem(TypedDict):
    """One to-do comment: where it is, its tag and the text after the tag."""

    path: str
    line: int
    tag: str
    text: str


def _tag_pattern(tags: Sequence[str]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(t) for t in sorted(set(tags), key=len, reverse=True))
    # Only comments count: the tag must follow a comment marker on the same line, so
    # prose and strings that merely mention a tag are not reported. It must be a whole
    # word followed by ':', '(' (an owner), whitespace or the end of the line, so
    # identifiers that merely start with a tag (a list named after one) do not count.
    marker = r"(?:#|//|/\*|<!--|^\s*\*|^\s*--|;)"
    return re.compile(rf"{marker}.*?(?<!\w)({alternatives})(?=[:(\s]|$)")


def _todo_text(rest: str) -> str:
    rest = rest.strip()
    for closer in ("*/", "-->"):  # the end of a block comment is not part of the note
        rest = rest.removesuffix(closer).rstrip()
    if rest.startswith("("):  # keep an owner such as '(bob):' as '(bob) ...'
        owner, sep, after = rest.partition(")")
        if sep:
            return f"{owner}) {after.lstrip(':').strip()}".strip()
    return rest.lstrip(":").strip()


def find_todos(paths: Sequence[str], tags: Sequence[str] = DEFAULT_TAGS) -> list[TodoItem]:
    """Every line under ``paths`` carrying one of ``tags``, in file and line order."""
    pattern = _tag_pattern(tags)
    items: list[TodoItem] = []
    for path, text in text_files(paths):
        for number, line in enumerate(_lines(text), start=1):
            if match := pattern.search(line):
                text = _todo_text(line[match.end() :])
                items.append(TodoItem(path=path, line=number, tag=match.group(1), text=text))
    return items


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@click.command("todo")
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.option(
    "--tag",
    "tags",
    multiple=True,
    metavar="TAG",
    help="Tag to look for; repeat for several (default: TODO, FIXME, XXX, HACK).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of lines.")
def todo_cmd(paths: tuple[str, ...], tags: tuple[str, ...], as_json: bool) -> None:
    """List to-do comments (TODO, FIXME, XXX, HACK) in the workspace.

    Prints 'path:line: TAG text' per comment and a summary on stderr. Without PATHS,
    looks at the current directory; inside a git work tree, .gitignore is honoured.
    """
    items = find_todos(paths, tags or DEFAULT_TAGS)
    if as_json:
        click.echo(json.dumps(items, indent=2))
    else:
        for item in items:
            click.echo(f"{item['path']}:{item['line']}: {item['tag']} {item['text']}".rstrip())
    files = len({item["path"] for item in items})
    click.echo(f"{_plural(len(items), 'item')} in {_plural(files, 'file')}", err=True)


# -- loc ---------------------------------------------------------------------------------
_EXTENSIONS = {
    "Python": ".py .pyi .pyw",
    "JavaScript": ".js .mjs .cjs .jsx",
    "TypeScript": ".ts .mts .cts .tsx",
    "Rust": ".rs",
    "Go": ".go",
    "C": ".c .h",
    "C++": ".cc .cpp .cxx .c++ .hh .hpp .hxx .h++",
    "Java": ".java",
    "Shell": ".sh .bash .zsh",
    "TOML": ".toml",
    "YAML": ".yaml .yml",
    "JSON": ".json",
    "Markdown": ".md .markdown",
    "HTML": ".html .htm",
    "CSS": ".css",
}
#: file extension (lower case, with the dot) -> language name
LANGUAGES = {ext: lang for lang, exts in _EXTENSIONS.items() for ext in exts.split()}
# Only languages whose comments are whole lines starting with a marker; for the rest,
# counting comments would need a real parser, so they report 0 rather than a wrong guess.
_COMMENT = {
    **dict.fromkeys(["Python", "Shell", "TOML", "YAML"], "#"),
    **dict.fromkeys(["JavaScript", "TypeScript", "Rust", "Go", "C", "C++", "Java"], "//"),
}


class LocRow(TypedDict):
    """Line counts for one language (or the total)."""

    language: str
    files: int
    blank: int
    comment: int
    code: int


def _language(path: str, first_line: str) -> str:
    lang = LANGUAGES.get(os.path.splitext(path)[1].lower())
    if lang:
        return lang
    if first_line.startswith("#!"):  # extensionless scripts such as bin/deploy
        if "python" in first_line:
            return "Python"
        if re.search(r"\b(ba|z|da|k)?sh\b", first_line):
            return "Shell"
    return "Other"


def count_lines(paths: Sequence[str]) -> tuple[list[LocRow], LocRow]:
    """Per-language counts under ``paths``, by code lines descending, and their total."""
    rows: dict[str, LocRow] = {}
    for path, text in text_files(paths):
        lines = _lines(text)
        lang = _language(path, lines[0] if lines else "")
        row = rows.setdefault(lang, LocRow(language=lang, files=0, blank=0, comment=0, code=0))
        row["files"] += 1
        marker = _COMMENT.get(lang)
        for line in lines:
            stripped = line.strip()
            if not stripped:
                row["blank"] += 1
            elif marker and stripped.startswith(marker):
                row["comment"] += 1
            else:
                row["code"] += 1
    ordered = sorted(rows.values(), key=lambda r: (-r["code"], r["language"]))
    total = LocRow(
        language="Total",
        files=sum(r["files"] for r in ordered),
        blank=sum(r["blank"] for r in ordered),
        comment=sum(r["comment"] for r in ordered),
        code=sum(r["code"] for r in ordered),
    )
    return ordered, total


@click.command("loc")
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def loc_cmd(paths: tuple[str, ...], as_json: bool) -> None:
    """Count lines of code per language: files, blank, comment and code lines.

    Without PATHS, looks at the current directory; inside a git work tree, .gitignore
    is honoured. Comments are counted for languages with line comments ('#' or '//').
    """
    rows, total = count_lines(paths)
    if as_json:
        click.echo(json.dumps({"languages": rows, "total": total}, indent=2))
        return
    header = ("LANGUAGE", "FILES", "BLANK", "COMMENT", "CODE")
    table = [header] + [
        (r["language"], str(r["files"]), str(r["blank"]), str(r["comment"]), str(r["code"]))
        for r in [*rows, total]
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    lines = []
    for row in table:
        cells = [c.rjust(w) for c, w in zip(row, widths, strict=True)]
        cells[0] = row[0].ljust(widths[0])  # names align left, numbers right
        lines.append("  ".join(cells))
    # Rules under the header and above the total row, as tables of counts usually have.
    click.echo("\n".join([lines[0], rule, *lines[1:-1], rule, lines[-1]]))


class DevtoolsPlugin(Plugin):
    """Developer commands: to-do comments and lines of code."""

    def boot(self, ctx: PluginContext) -> None:
        ctx.register_command(todo_cmd)
        ctx.register_command(loc_cmd)
