"""Dependency resolution between plugins, run when the index is rebuilt.

A plugin may require other plugins (a name and a version range) and services (by name,
whoever provides them: depend on an interface, not an implementation). Resolution turns
those requirements into edges ``consumer -> provider`` and then:

* a requirement that cannot be met (not installed, disabled, wrong version, no provider,
  two providers of one service) blocks the plugin that has it;
* every plugin on a cycle is blocked, with the chain spelled out (``a -> b -> c -> a``);
* a plugin that requires a blocked plugin is blocked too, naming the chain to the cause;
* everything else stays usable, and the boot order puts providers before consumers.

The result is cached in the index; the kernel only follows it. Pure data in, pure data
out: no plugin code is imported.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from packaging.requirements import Requirement

__all__ = ["Blocked", "Node", "Resolution", "resolve"]

# Plain classes, not dataclasses: importing dataclasses (and inspect with it) costs more
# than the rest of a rebuild that reads one new plugin.


class _Value:
    """Equality and repr by the fields in ``__slots__``."""

    __slots__: tuple[str, ...] = ()

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, f) for f in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _Value)
            and type(other) is type(self)
            and (self._fields() == other._fields())
        )

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        args = ", ".join(f"{f}={getattr(self, f)!r}" for f in self.__slots__)
        return f"{type(self).__name__}({args})"


class Node(_Value):
    """What resolution needs to know of one usable plugin."""

    __slots__ = ("name", "provides_services", "requires_plugins", "requires_services", "version")

    def __init__(
        self,
        name: str,
        version: str | None,
        requires_plugins: tuple[str, ...] = (),
        requires_services: tuple[str, ...] = (),
        provides_services: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.version = version
        self.requires_plugins = requires_plugins
        self.requires_services = requires_services
        self.provides_services = provides_services


class Blocked(_Value):
    """Why a plugin cannot be activated: one line, a hint, and the plugins involved."""

    __slots__ = ("chain", "error", "hint")

    def __init__(self, error: str, hint: str, chain: tuple[str, ...] = ()) -> None:
        self.error = error
        self.hint = hint
        self.chain = chain


class Resolution(_Value):
    """Edges to activate first, blocked plugins, and a boot order over the rest."""

    __slots__ = ("blocked", "boot_order", "providers", "requires")
    __hash__ = None  # type: ignore[assignment]  # mutable

    def __init__(
        self,
        requires: dict[str, list[str]] | None = None,
        blocked: dict[str, Blocked] | None = None,
        boot_order: list[str] | None = None,
        providers: dict[str, str] | None = None,
    ) -> None:
        self.requires: dict[str, list[str]] = {} if requires is None else requires
        self.blocked: dict[str, Blocked] = {} if blocked is None else blocked
        self.boot_order: list[str] = [] if boot_order is None else boot_order
        self.providers: dict[str, str] = {} if providers is None else providers


def _service_providers(
    nodes: dict[str, Node], pins: dict[str, str]
) -> tuple[dict[str, str], dict[str, list[str]]]:
    offered: dict[str, list[str]] = {}
    for node in nodes.values():
        for svc in node.provides_services:
            offered.setdefault(svc, []).append(node.name)
    chosen: dict[str, str] = {}
    ambiguous: dict[str, list[str]] = {}
    for svc, names in offered.items():
        pinned = pins.get(f"service:{svc}")
        if pinned in names:
            chosen[svc] = pinned
        elif len(names) == 1:
            chosen[svc] = names[0]
        else:
            ambiguous[svc] = sorted(names)
    return chosen, ambiguous


def _direct_problem(
    node: Node,
    nodes: dict[str, Node],
    unavailable: dict[str, str],
    chosen: dict[str, str],
    ambiguous: dict[str, list[str]],
) -> tuple[list[str], Blocked | None]:
    """The plugins ``node`` depends on, and the first requirement that cannot be met.

    Every edge to an installed plugin is kept even when the requirement fails (a wrong
    version, say), so that cycle detection sees the whole graph.
    """
    edges: list[str] = []
    problems: list[Blocked] = []
    if node.requires_plugins:  # packaging is imported only when some plugin needs it
        from packaging.requirements import InvalidRequirement, Requirement
    for text in node.requires_plugins:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            problems.append(Blocked(f"invalid requirement '{text}'", "fix requires.plugins"))
            continue
        target = req.name
        if target not in nodes:
            why = unavailable.get(target, "is not installed")
            problems.append(
                Blocked(
                    f"requires plugin '{text}', which {why}",
                    f"install or enable '{target}', or remove '{node.name}'",
                    (node.name, target),
                )
            )
            continue
        edges.append(target)
        have = nodes[target].version
        if req.specifier and not _satisfies(have, req):
            problems.append(
                Blocked(
                    f"requires plugin '{text}', but {target} {have or '(no version)'} is installed",
                    f"install a version of '{target}' that matches '{req.specifier}'",
                    (node.name, target),
                )
            )
    for svc in node.requires_services:
        if svc in ambiguous:
            names = ambiguous[svc]
            edges.extend(n for n in names if n != node.name)
            problems.append(
                Blocked(
                    f"requires service '{svc}', which is provided by {' and '.join(names)}",
                    f'choose one in the config: [pins] "service:{svc}" = "{names[0]}"',
                    (node.name, *names),
                )
            )
            continue
        provider = chosen.get(svc)
        if provider is None:
            problems.append(
                Blocked(
                    f"requires service '{svc}', which no installed plugin provides",
                    f"install a plugin that provides '{svc}'",
                    (node.name,),
                )
            )
        elif provider != node.name:
            edges.append(provider)
    return sorted(set(edges)), (problems[0] if problems else None)


def _satisfies(version: str | None, req: Requirement) -> bool:
    from packaging.version import InvalidVersion, Version

    if version is None:
        return False
    try:
        return req.specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def _cycles(requires: dict[str, list[str]]) -> dict[str, tuple[str, ...]]:
    """Map every plugin on a cycle to one cycle through it (first == last)."""
    # Tarjan's strongly connected components, iteratively (no recursion limit).
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    sccs: list[list[str]] = []
    counter = 0
    for root in sorted(requires):
        if root in index:
            continue
        work = [(root, iter(requires.get(root, ())))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in requires:
                    continue
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(requires.get(w, ()))))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                sccs.append(comp)
    result: dict[str, tuple[str, ...]] = {}
    for comp in sccs:
        members = set(comp)
        if len(comp) == 1 and comp[0] not in requires.get(comp[0], ()):
            continue
        for start in sorted(members):
            result[start] = _cycle_from(start, members, requires)
    return result


def _cycle_from(start: str, members: set[str], requires: dict[str, list[str]]) -> tuple[str, ...]:
    """A shortest cycle ``start -> ... -> start`` inside one strongly connected component."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(requires.get(v, ())):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return (*reversed(path), start)
                if w in members and w not in parents:
                    parents[w] = v
                    following.append(w)
        frontier = following
    return (start, start)  # pragma: no cover - a member of a cycle always has one


def resolve(
    nodes: dict[str, Node],
    *,
    pins: dict[str, str] | None = None,
    unavailable: dict[str, str] | None = None,
) -> Resolution:
    """Resolve requirements among ``nodes`` (the enabled, valid plugins).

    ``unavailable`` maps names of installed-but-unusable plugins to why (``"is disabled"``)
    so that a requirement on them says so.
    """
    pins = pins or {}
    unavailable = unavailable or {}
    chosen, ambiguous = _service_providers(nodes, pins)
    res = Resolution(providers=chosen)
    for name in sorted(nodes):
        node = nodes[name]
        if not (node.requires_plugins or node.requires_services):
            res.requires[name] = []  # most plugins: nothing to check
            continue
        edges, problem = _direct_problem(node, nodes, unavailable, chosen, ambiguous)
        res.requires[name] = edges
        if problem is not None:
            res.blocked[name] = problem
    # A cycle is reported on every plugin on it, even one that has another problem too.
    # (A plugin that requires nothing is on no cycle: left out of the search.)
    for name, cycle in _cycles({n: e for n, e in res.requires.items() if e}).items():
        other = res.blocked.get(name)
        res.blocked[name] = Blocked(
            f"dependency cycle {' -> '.join(cycle)}" + (f"; also {other.error}" if other else ""),
            "break the cycle: one of these plugins must stop requiring the next",
            cycle,
        )
    # Anything that requires a blocked plugin is blocked too, naming the path to the cause.
    changed = bool(res.blocked)  # nothing blocked: nothing to propagate
    while changed:
        changed = False
        for name in sorted(nodes):
            if name in res.blocked:
                continue
            for dep in res.requires[name]:
                if dep in res.blocked:
                    cause = res.blocked[dep]
                    res.blocked[name] = Blocked(
                        f"requires '{dep}', which is unavailable: {cause.error}",
                        cause.hint,
                        (name, *cause.chain) if cause.chain[:1] == (dep,) else (name, dep),
                    )
                    changed = True
                    break
    # Boot order: providers before consumers, ties alphabetical (Kahn's algorithm).
    usable = {n for n in nodes if n not in res.blocked}
    if not any(res.requires[n] for n in usable):  # no edges: one round, every plugin
        res.boot_order.extend(sorted(usable))
        return res
    pending = {n: {d for d in res.requires[n] if d in usable} for n in usable}
    while pending:
        ready = sorted(n for n, deps in pending.items() if not deps)
        if not ready:  # pragma: no cover - cycles were blocked above
            break
        for n in ready:
            res.boot_order.append(n)
            del pending[n]
        for deps in pending.values():
            deps.difference_update(ready)
    return res
