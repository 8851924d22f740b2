"""The architecture the code must keep, checked from its source (docs/architecture.md).

Everything except the public-surface test reads ``src/conduit`` with :mod:`ast` and imports
none of it. Each failure prints one line per violation, naming ``file:line``.

**The import graph.** Nodes are the modules under ``src/conduit``; a package's
``__init__.py`` is a module of its own (``conduit.store``). An import statement in module A
gives A an edge to:

* the module it names: ``import conduit.x.y`` and ``from conduit.x.y import name`` give
  ``A -> conduit.x.y``; ``from conduit.x import y`` gives ``A -> conduit.x.y`` when ``y`` is
  a submodule (a file or package under ``conduit/x``), else ``A -> conduit.x``;
* the packages Python runs on the way there: importing ``conduit.x.y`` first imports
  ``conduit.x``, which runs ``conduit/x/__init__.py``'s body and nothing more. That edge is
  drawn to a node of its own, ``conduit.x.__init__``, whose edges are only the imports the
  package's body runs at once (not those inside its functions): a package face with a lazy
  ``__getattr__`` (``conduit.store``, ``conduit.kernel``) is not imported by importing one
  of its submodules, so it forms no cycle that way. And it is not drawn at all **when
  ``conduit.x`` contains A**: a module's own packages are in ``sys.modules`` before its
  body runs (importing A imported them), so that import can never run a package's body nor
  find one half-initialised because of A; counting it would make every package whose face
  imports one of its submodules a false cycle. Importing ``conduit.x.y`` from outside
  ``conduit.x`` does run that body, and a body that imports something that imports A is a
  real cycle (which of the two is imported first decides which one sees the other
  half-initialised), so those edges count. A ``from conduit.x import name`` of a name
  defined in (or served by) ``conduit.x``'s ``__init__`` is an ordinary edge to the whole
  of ``conduit.x``, lazy imports included, even from inside the package;
* a literal ``importlib.import_module("conduit.x")``; and, in a module that calls
  ``importlib.import_module`` with a computed name (a lazy face such as ``conduit.store``'s
  ``_WHERE`` or the ``plugins`` built-in's ``LAZY_COMMANDS``), every Conduit module that its
  string constants name (``"conduit.x.y"`` or an entry string ``"conduit.x.y:attr"``). Entry
  strings in a module that does not import them itself (``conduit.builtins.BUILTINS``, read
  by the indexer and loaded by a host) are data, not edges.

Imports inside functions count: a lazy import runs too, just later. Imports under ``if
TYPE_CHECKING:`` do not count (both ``TYPE_CHECKING = False`` and ``typing.TYPE_CHECKING``;
the ``else:`` branch does count). Code in strings run by another interpreter (the process
host's ``_CHILD``) makes no edge: it is another process. Imports of modules outside Conduit
make no edge.

Rules checked:

1. no cycle in that graph (each cycle printed as a path);
2. the public/private line, over ``src/`` only (tests may poke internals; benchmarks are
   out of scope), for every import including type-only ones and imports inside code held in
   strings: never import a ``_name`` from another Conduit module (dunders such as
   ``__version__`` are fine), and never import a Conduit ``_module`` (a module whose last
   component starts with ``_``, or one beneath it) from outside its parent package
   (the package's own ``__init__`` and its subpackages are inside). Reading a ``_name`` off
   a Conduit module is the same breach and is reported too: ``m._name`` after ``import
   conduit.x as m``, ``conduit.x.y._name`` after ``import conduit.x.y``, ``x.y._name`` after
   ``from conduit import x``, and ``getattr(m, "_name")``. Private attributes of *objects*
   (``host._stop``) are not seen: that would need types, and mypy does not check it either.
   Private modules of the standard library (``_thread``, ``_signal``, ``_json``) are used on
   purpose, for start-up cost, and are not Conduit's line;
3. one direction of dependency (the review's rule 3): a runtime import never goes to a
   higher layer of :data:`LAYERS`; any exception is listed in :data:`ALLOWED_UPWARD` with
   its reason;
4. ``conduit.sdk.__all__`` and ``conduit.testing.__all__`` are exactly the sorted public
   names of their module (httpx's ``test_exported_members``).
"""

from __future__ import annotations

import ast
import importlib
import re
import types
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
ROOT = SRC / "conduit"

# Top to bottom (the review's rule 3). A module may import from its own layer and from the
# layers below. Components are the first name under ``conduit``; "" is the root package.
# Peers in one layer may import each other (the cycle rule keeps that one-way per file), so
# the review's one documented exception, security/grants.py writing ``[grants]`` through
# ``config.update_config`` while ``config`` validates grants with security/capabilities.py,
# needs no entry below: config and security are peers.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__main__", "cli", "testing", "builtins", "warm", "bundle"),
    ("kernel", "authoring"),
    ("hosts",),
    ("store",),
    ("config", "security", "indexer"),
    ("index", "manifest", "sdk"),
    ("rpc", "errors", "paths", "timing", "fs", "journal", "runlog", "text", "otel", "style", ""),
)

# (importer, imported) -> why this upward runtime import is allowed. Keep it short and
# every entry justified; an entry no longer used fails the test so the list cannot rot.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {
    ("conduit.indexer.discover", "conduit.builtins"): (
        "conduit/builtins/__init__.py is only the BUILTINS table of entry strings and imports "
        "nothing; the indexer reads it as data, as it reads entry points, and the built-ins' "
        "code is loaded by a host, by name"
    ),
    ("conduit.manifest", "conduit.security.capabilities"): (
        "security/capabilities.py is the grammar of capability strings (stdlib only: os, "
        "fnmatch); the manifest checks a plugin's `permissions` with it. The module is a "
        "leaf; the rest of security stays above the manifest"
    ),
}

_DOTTED = re.compile(r"conduit(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
_ENTRY = re.compile(r"(conduit(?:\.[A-Za-z_][A-Za-z0-9_]*)+):([A-Za-z_][A-Za-z0-9_.]*)")


# --- reading the source ---------------------------------------------------------------


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}
PACKAGES = {name for name, path in MODULES.items() if path.name == "__init__.py"}


def _where(module: str, line: int) -> str:
    return f"{MODULES[module.removesuffix('.__init__')].relative_to(SRC.parent)}:{line}"


def _ancestors(module: str) -> list[str]:
    """``a.b.c`` -> ``["a", "a.b"]``."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _is_private(name: str) -> bool:
    return name.startswith("_") and not _is_dunder(name)


@dataclass(frozen=True)
class Import:
    importer: str
    line: int
    module: str  # the module imported (resolved; may be outside Conduit)
    name: str | None  # a non-module name taken from ``module`` (``from m import name``)
    kind: str  # "import", "from", "implicit", "dynamic", or "string" (code run elsewhere)
    type_only: bool
    lazy: bool

    @property
    def where(self) -> str:
        return _where(self.importer, self.line)

    @property
    def runtime(self) -> bool:
        return not self.type_only and self.kind != "string"


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


class _Reader(ast.NodeVisitor):
    """Collects one module's imports, with whether each is type-only or lazy."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.package = module if module in PACKAGES else module.rpartition(".")[0]
        self.imports: list[Import] = []
        self.strings: list[tuple[int, str]] = []
        self.dynamic_calls: list[tuple[int, ast.expr | None, ast.expr | None, int, bool]] = []
        self.module_aliases: dict[str, str] = {}  # local name -> Conduit module
        # (line, dotted name read from, attribute): ``m._x``, ``a.b.c._x``, getattr(m, "_x")
        self.attributes: list[tuple[int, str, str]] = []
        self._type_only = False
        self._depth = 0

    # scopes

    def _function(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self.visit(node.test)
        before, self._type_only = self._type_only, True
        for stmt in node.body:
            self.visit(stmt)
        self._type_only = before
        for stmt in node.orelse:
            self.visit(stmt)

    # imports

    def _add(self, line: int, module: str, name: str | None, kind: str) -> None:
        self.imports.append(
            Import(self.module, line, module, name, kind, self._type_only, self._depth > 0)
        )

    def _add_module(self, line: int, module: str, kind: str) -> None:
        for ancestor in _ancestors(module):
            self._add(line, ancestor, None, "implicit")
        self._add(line, module, None, kind)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add_module(node.lineno, alias.name, "import")
            if alias.name in MODULES:
                local = alias.asname or alias.name.partition(".")[0]
                self.module_aliases[local] = alias.name if alias.asname else local

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            base = base[: len(base) - (node.level - 1)]
            source = ".".join([*base, node.module] if node.module else base)
        else:
            source = node.module or ""
        for ancestor in _ancestors(source):
            self._add(node.lineno, ancestor, None, "implicit")
        for alias in node.names:
            sub = f"{source}.{alias.name}"
            if sub in MODULES:
                self._add(node.lineno, source, None, "implicit")
                self._add(node.lineno, sub, None, "from")
                self.module_aliases[alias.asname or alias.name] = sub
            else:
                self._add(node.lineno, source, None if alias.name == "*" else alias.name, "from")

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if called in ("import_module", "__import__"):
            arg = node.args[0] if node.args else None
            package = node.args[1] if len(node.args) > 1 else None
            for keyword in node.keywords:
                if keyword.arg == "package":
                    package = keyword.value
            self.dynamic_calls.append((node.lineno, arg, package, self._depth, self._type_only))
        if called in ("getattr", "hasattr", "setattr", "delattr") and len(node.args) >= 2:
            target, attr = _dotted(node.args[0]), node.args[1]
            if target and isinstance(attr, ast.Constant) and isinstance(attr.value, str):
                self.attributes.append((node.lineno, target, attr.value))
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        target = _dotted(node.value)
        if target:
            self.attributes.append((node.lineno, target, node.attr))
        self.generic_visit(node)

    # strings

    def visit_Expr(self, node: ast.Expr) -> None:
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return  # a docstring (of a module, class, function or attribute)
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            self.strings.append((node.lineno, node.value))


def _dotted(node: ast.expr) -> str | None:
    """``a.b.c`` for a chain of attribute reads on a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


def _module_read(reader: _Reader, dotted: str) -> str | None:
    """The Conduit module a dotted read starts from, resolving the local name it begins
    with and then the longest chain of submodules (``conduit.security.sandbox`` for
    ``conduit.security.sandbox`` after ``import conduit.security.sandbox``)."""
    head, _, rest = dotted.partition(".")
    module = reader.module_aliases.get(head)
    if module is None:
        return None
    for part in rest.split(".") if rest else ():
        if f"{module}.{part}" not in MODULES:
            return None  # an attribute of the module, not a submodule: not a module read
        module = f"{module}.{part}"
    return module


def _named_module(text: str) -> tuple[str, str | None] | None:
    """``"conduit.x.y"`` or ``"conduit.x.y:attr"`` naming a Conduit module -> (module, attr)."""
    entry = _ENTRY.fullmatch(text)
    name = entry.group(1) if entry else text
    if _DOTTED.fullmatch(name) and name in MODULES:
        return name, entry.group(2).partition(".")[0] if entry else None
    return None


def _read(module: str, source: str | None = None) -> _Reader:
    reader = _Reader(module)
    text = MODULES[module].read_text(encoding="utf-8") if source is None else source
    reader.visit(ast.parse(text))
    for line, value in reader.strings:
        # Code in a string, run by another interpreter (the process host's _CHILD, the
        # plugins built-in's _MEASURE): read for the private line, no graph edge.
        if "import" in value:
            try:
                tree = ast.parse(value)
            except SyntaxError:
                tree = None
            if tree is not None:
                inner = _Reader(module)
                inner.visit(tree)
                reader.imports += [
                    Import(module, line, i.module, i.name, "string", i.type_only, i.lazy)
                    for i in inner.imports
                    if i.kind != "implicit"
                ]
        # A string naming a Conduit module (or an entry "module:attr"): the same line.
        named = _named_module(value)
        if named:
            reader.imports.append(Import(module, line, *named, "string", False, False))
    for line, arg, package, depth, type_only in reader.dynamic_calls:
        reader._depth, reader._type_only = depth, type_only
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            name = arg.value
            if name.startswith(".") and isinstance(package, ast.Constant):
                # import_module(".cli", "conduit"): relative to the package named
                level = len(name) - len(name.lstrip("."))
                base = str(package.value).split(".")
                base = base[: len(base) - (level - 1)]
                name = ".".join([*base, name[level:]] if name[level:] else base)
            reader._add_module(line, name, "dynamic")
            continue
        # A computed name: take the module to import any Conduit module its strings name.
        for sline, value in reader.strings:
            named = _named_module(value)
            if named:
                reader._add_module(sline, named[0], "dynamic")
    reader._depth, reader._type_only = 0, False
    return reader


READERS = {module: _read(module) for module in MODULES}
IMPORTS = [i for r in READERS.values() for i in r.imports]


def _conduit(module: str) -> bool:
    return module in MODULES


# --- the graph ------------------------------------------------------------------------


def _init_node(package: str) -> str:
    """The node of a package's ``__init__`` body alone (what an implicit import runs)."""
    return f"{package}.__init__"


def runtime_edges() -> dict[str, dict[str, Import]]:
    """node -> node -> the first import that makes the edge (see the module docstring).

    Nodes are the modules, plus ``P.__init__`` for each package ``P``: what importing one of
    ``P``'s submodules from outside ``P`` runs (``P``'s imports made at once, not lazily).
    """
    edges: dict[str, dict[str, Import]] = {m: {} for m in MODULES}
    edges.update({_init_node(p): {} for p in PACKAGES})
    for imp in IMPORTS:
        if not imp.runtime or not _conduit(imp.module) or imp.module == imp.importer:
            continue
        target = imp.module
        if imp.kind == "implicit":
            if _inside(imp.importer, imp.module):
                continue  # one of the importer's own packages: already imported
            target = _init_node(imp.module)
        edges[imp.importer].setdefault(target, imp)
        if imp.importer in PACKAGES and not imp.lazy:
            edges[_init_node(imp.importer)].setdefault(target, imp)
    return edges


def _shortest_path(
    edges: dict[str, dict[str, Import]], start: str, goal: str, within: set[str]
) -> list[str] | None:
    came: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path = [node]
            while (previous := came[path[-1]]) is not None:
                path.append(previous)
            return path[::-1]
        for nxt in sorted(edges[node]):
            if nxt in within and nxt not in came:
                came[nxt] = node
                queue.append(nxt)
    return None


def _components(edges: dict[str, dict[str, Import]]) -> list[set[str]]:
    """Strongly connected components (Tarjan), iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                found.append(component)
    return found


def import_cycles(edges: dict[str, dict[str, Import]]) -> list[str]:
    """One line per cycle: for every edge on a cycle, the shortest cycle through it."""
    lines = []
    for component in _components(edges):
        if len(component) < 2:
            continue
        cycles: set[tuple[str, ...]] = set()
        for a in sorted(component):
            for b in sorted(edges[a]):
                if b not in component:
                    continue
                back = _shortest_path(edges, b, a, component)
                assert back is not None
                cycle = [a, *back[:-1]]
                turn = cycle.index(min(cycle))  # one spelling per cycle
                cycles.add(tuple(cycle[turn:] + cycle[:turn]))
        for cycle in sorted(cycles, key=lambda c: (len(c), c)):
            hops = [
                f"{a} ({edges[a][b].where}, {'lazy ' if edges[a][b].lazy else ''}"
                f"{edges[a][b].kind})"
                for a, b in zip(cycle, (*cycle[1:], cycle[0]), strict=True)
            ]
            lines.append("cycle: " + " -> ".join(hops) + f" -> {cycle[0]}")
    return lines


# --- the private line -----------------------------------------------------------------


def private_line_violations(readers: dict[str, _Reader]) -> list[str]:
    found: dict[tuple[str, str], None] = {}
    for imp in (i for r in readers.values() for i in r.imports):
        if not _conduit(imp.module):
            continue
        if imp.kind != "implicit" and imp.name and _is_private(imp.name):
            found[(imp.where, f"imports private name {imp.name} from {imp.module}")] = None
        for module in (*_ancestors(imp.module), imp.module):
            last = module.rpartition(".")[2]
            package = module.rpartition(".")[0]
            if _is_private(last) and not _inside(imp.importer, package):
                found[(imp.where, f"imports private module {module} from outside {package}")] = None
    for module, reader in readers.items():
        for line, dotted, attr in reader.attributes:
            target = _module_read(reader, dotted)
            if (
                target
                and target != module
                and _is_private(attr)
                and f"{target}.{attr}" not in MODULES
            ):
                found[(_where(module, line), f"reads private name {attr} of {target}")] = None
    return [f"{where}: {what}" for where, what in found]


# --- layers ---------------------------------------------------------------------------


def _component(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


LAYER_OF = {component: n for n, layer in enumerate(LAYERS) for component in layer}


def layer_violations(edges: dict[str, dict[str, Import]]) -> tuple[list[str], set[tuple]]:
    lines, used = [], set()
    for importer, targets in edges.items():
        if importer not in MODULES:
            continue  # a package's __init__ node: its module is checked itself
        for target, imp in targets.items():
            if imp.kind == "implicit":
                continue  # the package of a module imported explicitly, checked itself
            if LAYER_OF[_component(target)] >= LAYER_OF[_component(importer)]:
                continue
            if (importer, target) in ALLOWED_UPWARD:
                used.add((importer, target))
                continue
            lines.append(
                f"{imp.where}: {importer} (layer {LAYER_OF[_component(importer)]}) imports "
                f"{target} (layer {LAYER_OF[_component(target)]}) at run time"
                f"{' (lazily)' if imp.lazy else ''}"
            )
    return sorted(lines), used


# --- tests ----------------------------------------------------------------------------


def _fail(lines: list[str], what: str) -> None:
    if lines:
        pytest.fail(f"{len(lines)} {what}:\n" + "\n".join(lines), pytrace=False)


def test_the_reader_sees_what_it_must():
    """Guards the checks themselves against reading nothing."""
    assert len(MODULES) > 40
    edges = runtime_edges()
    # a lazy import, an import resolved to its submodule, and a type-only import skipped
    assert "conduit.indexer.build" in edges["conduit.cli"]
    assert edges["conduit.cli"]["conduit.indexer.build"].lazy
    assert "conduit.indexer.records" not in edges["conduit.cli"]
    # the lazy faces that import by a computed name
    assert "conduit.store._ops" in edges["conduit.store"]
    # code in a string is no edge, but it is read
    assert "conduit.hosts._child" not in edges["conduit.hosts.process"]
    assert any(
        i.importer == "conduit.hosts.process" and i.module == "conduit.hosts._child"
        for i in IMPORTS
    )
    # a module's own packages are not edges; other packages on the way are
    assert "conduit.store" not in edges["conduit.store._ops"]
    assert "conduit.indexer.__init__" in edges["conduit.cli"]
    assert "conduit.indexer" not in edges["conduit.cli"]
    # a lazy face is no edge of its package's __init__ body
    assert "conduit.store._ops" not in edges["conduit.store.__init__"]


def test_the_checks_catch_what_they_must():
    """The private-line and cycle checks, on made-up code."""
    source = (
        "from conduit.manifest import _hidden\n"
        "import conduit.store._ops\n"
        "from conduit import index as reader\n"
        "reader._private\n"
        "CODE = 'from conduit.hosts._child import main'\n"
        "ENTRY = 'conduit.manifest:_entry'\n"
        "from conduit.errors import __doc__\n"
        "import conduit.security.sandbox\n"
        "conduit.security.sandbox._libc\n"
        "from conduit import security\n"
        "security.sandbox._apply\n"
        "getattr(reader, '_dynamic')\n"
    )
    lines = private_line_violations({"conduit.cli": _read("conduit.cli", source)})
    assert [line.split(": ", 1)[1] for line in lines] == [
        "imports private name _hidden from conduit.manifest",
        "imports private module conduit.store._ops from outside conduit.store",
        "imports private module conduit.hosts._child from outside conduit.hosts",
        "imports private name _entry from conduit.manifest",
        "reads private name _private of conduit.index",
        "reads private name _libc of conduit.security.sandbox",
        "reads private name _apply of conduit.security.sandbox",
        "reads private name _dynamic of conduit.index",
    ]
    relative = _read("conduit.fs", "import importlib\nimportlib.import_module('.cli', 'conduit')\n")
    assert any(i.module == "conduit.cli" and i.kind == "dynamic" for i in relative.imports)
    inside = _read("conduit.store.lockfile", "from conduit.store import _ops, _env\n")
    assert private_line_violations({"conduit.store.lockfile": inside}) == []

    def edge(a: str) -> Import:
        return Import(a, 1, "", None, "import", False, False)

    ring = {"conduit.cli": {"conduit.paths": edge("conduit.cli")}}
    ring["conduit.paths"] = {"conduit.fs": edge("conduit.paths")}
    ring["conduit.fs"] = {"conduit.cli": edge("conduit.fs"), "conduit.errors": edge("conduit.fs")}
    ring["conduit.errors"] = {}
    [cycle] = import_cycles(ring)
    assert cycle.startswith("cycle: conduit.cli (src/conduit/cli.py:1, import) -> conduit.paths")
    assert cycle.endswith("-> conduit.cli") and "errors" not in cycle


def test_every_module_has_a_layer():
    missing = sorted(
        f"{_where(m, 1)}: {m} is in no layer of LAYERS"
        for m in MODULES
        if _component(m) not in LAYER_OF
    )
    _fail(missing, "modules without a layer")


def test_no_import_cycles():
    _fail(import_cycles(runtime_edges()), "import cycles")


def test_no_private_import_across_modules():
    _fail(private_line_violations(READERS), "imports across the public/private line")


def test_dependencies_point_down_the_layers():
    lines, used = layer_violations(runtime_edges())
    stale = [
        f"ALLOWED_UPWARD[{key}]: no longer imported; remove the exception"
        for key in ALLOWED_UPWARD
        if key not in used
    ]
    _fail(lines + stale, "upward imports")


def _public_names(module: types.ModuleType) -> list[str]:
    return sorted(
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name not in ("annotations", "TYPE_CHECKING")
    )


def _bound_at(module: str, name: str) -> int:
    """The line where ``name`` is bound at module level at run time (1 if not found)."""

    def walk(body: list[ast.stmt]) -> int | None:
        for node in body:
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                found = walk(node.orelse)
            elif isinstance(node, ast.If | ast.Try):
                found = walk([*node.body, *node.orelse, *getattr(node, "finalbody", [])])
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                found = node.lineno if node.name == name else None
            elif isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.asname or a.name.partition(".")[0] for a in node.names]
                found = node.lineno if name in names else None
            else:
                targets = [n for n in ast.walk(node) if isinstance(n, ast.Name)]
                hit = [n for n in targets if n.id == name and isinstance(n.ctx, ast.Store)]
                found = node.lineno if hit else None
            if found:
                return found
        return None

    return walk(ast.parse(MODULES[module].read_text(encoding="utf-8")).body) or 1


@pytest.mark.parametrize("name", ["conduit.sdk", "conduit.testing"])
def test_public_surface_is_exactly_all(name):
    module = importlib.import_module(name)
    declared = list(module.__all__)
    public = _public_names(module)
    all_line = _bound_at(name, "__all__")
    lines = [
        f"{_where(name, _bound_at(name, n))}: {n} is public but not in __all__ "
        "(add it, or bind it privately)"
        for n in public
        if n not in declared
    ]
    lines += [
        f"{_where(name, all_line)}: __all__ names {n}, which is not a public name of {name}"
        for n in declared
        if n not in public
    ]
    # Sorted as ruff's RUF022 keeps it (isort style): CONSTANTS, then Classes, then the rest.
    ordered = sorted(public, key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n))
    if not lines and declared != ordered:
        lines.append(f"{_where(name, all_line)}: __all__ is not sorted: expected {ordered}")
    _fail(lines, f"differences between {name}.__all__ and its public names")
