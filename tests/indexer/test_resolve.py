"""Dependency resolution: examples, then properties over random dependency graphs."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from packaging.requirements import Requirement
from packaging.version import Version

from conduit.errors import EXIT_PLUGIN_LOAD
from conduit.indexer.resolve import Node, resolve

from _factory import manifest_block, simple_plugin, write


def test_chain_and_boot_order():
    res = resolve(
        {
            "app": Node("app", "1.0", ("lib>=1",), ("vcs",)),
            "lib": Node("lib", "1.2", ("core",)),
            "core": Node("core", "0.1"),
            "git": Node("git", "3.0", provides_services=("vcs",)),
        }
    )
    assert res.blocked == {}
    assert res.requires["app"] == ["git", "lib"]
    assert res.boot_order == ["core", "git", "lib", "app"]


@pytest.mark.parametrize(
    ("nodes", "blocked", "error"),
    [
        ({"a": Node("a", "1", ("b",))}, "a", "requires plugin 'b', which is not installed"),
        (
            {"a": Node("a", "1", ("b>=2",)), "b": Node("b", "1.5")},
            "a",
            "requires plugin 'b>=2', but b 1.5 is installed",
        ),
        (
            {"a": Node("a", "1", ("b>=1",)), "b": Node("b", None)},
            "a",
            "requires plugin 'b>=1', but b (no version) is installed",
        ),
        (
            {"a": Node("a", "1", requires_services=("vcs",))},
            "a",
            "requires service 'vcs', which no installed plugin provides",
        ),
        (
            {
                "a": Node("a", "1", requires_services=("vcs",)),
                "g": Node("g", "1", provides_services=("vcs",)),
                "h": Node("h", "1", provides_services=("vcs",)),
            },
            "a",
            "requires service 'vcs', which is provided by g and h",
        ),
        (
            {"a": Node("a", "1", ("b",)), "b": Node("b", "1", ("c",)), "c": Node("c", "1", ("a",))},
            "a",
            "dependency cycle a -> b -> c -> a",
        ),
        ({"a": Node("a", "1", ("a",))}, "a", "dependency cycle a -> a"),
        (
            {"x": Node("x", "1", ("a",)), "a": Node("a", "1", ("b",)), "b": Node("b", "1", ("a",))},
            "x",
            "requires 'a', which is unavailable: dependency cycle a -> b -> a",
        ),
    ],
    ids=[
        "missing",
        "version",
        "no-version",
        "no-provider",
        "two-providers",
        "cycle",
        "self-cycle",
        "downstream-of-cycle",
    ],
)
def test_problems_block_only_the_affected(nodes, blocked, error):
    nodes = {**nodes, "bystander": Node("bystander", "1")}
    res = resolve(nodes)
    assert res.blocked[blocked].error == error
    assert "bystander" not in res.blocked
    assert "bystander" in res.boot_order


def test_pin_chooses_between_providers():
    nodes = {
        "a": Node("a", "1", requires_services=("vcs",)),
        "g": Node("g", "1", provides_services=("vcs",)),
        "h": Node("h", "1", provides_services=("vcs",)),
    }
    res = resolve(nodes, pins={"service:vcs": "h"})
    assert res.blocked == {} and res.requires["a"] == ["h"]


def test_disabled_requirement_says_so():
    res = resolve({"a": Node("a", "1", ("b",))}, unavailable={"b": "is disabled"})
    assert res.blocked["a"].error == "requires plugin 'b', which is disabled"


# -- properties ----------------------------------------------------------------------------

NAMES = [f"p{i}" for i in range(7)]
SERVICES = ["s0", "s1", "s2"]


@st.composite
def graphs(draw: st.DrawFn) -> dict[str, Node]:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=7, unique=True))
    nodes = {}
    for name in names:
        reqs = []
        for target in draw(st.lists(st.sampled_from(NAMES), max_size=3, unique=True)):
            op = draw(st.sampled_from(["", ">=", "<", "==", "!=", "~="]))
            spec = f"{op}{draw(st.integers(0, 3))}.{draw(st.integers(0, 3))}" if op else ""
            reqs.append(f"{target}{spec}")
        version = draw(st.sampled_from([None, "0.1", "1.0", "1.2", "2.0", "3.3"]))
        nodes[name] = Node(
            name,
            version,
            tuple(reqs),
            tuple(draw(st.lists(st.sampled_from(SERVICES), max_size=2, unique=True))),
            tuple(draw(st.lists(st.sampled_from(SERVICES), max_size=2, unique=True))),
        )
    return nodes


def _edges(nodes: dict[str, Node]) -> dict[str, set[str]]:
    """The requirement edges, computed independently of the resolver."""
    providers: dict[str, list[str]] = {}
    for n in nodes.values():
        for s in n.provides_services:
            providers.setdefault(s, []).append(n.name)
    edges: dict[str, set[str]] = {}
    for n in nodes.values():
        out = {Requirement(r).name for r in n.requires_plugins}
        for s in n.requires_services:
            out.update(p for p in providers.get(s, []) if p != n.name)
        edges[n.name] = out
    return edges


def _directly_broken(n: Node, nodes: dict[str, Node]) -> bool:
    providers = [m for m in nodes.values() if set(n.requires_services) & set(m.provides_services)]
    for s in n.requires_services:
        if len([m for m in nodes.values() if s in m.provides_services]) != 1:
            return True
    del providers
    for r in map(Requirement, n.requires_plugins):
        target = nodes.get(r.name)
        if target is None:
            return True
        if r.specifier and (
            target.version is None
            or not r.specifier.contains(Version(target.version), prereleases=True)
        ):
            return True
    return False


def _on_cycle(name: str, edges: dict[str, set[str]]) -> bool:
    seen, stack = set(), list(edges.get(name, ()))
    while stack:
        v = stack.pop()
        if v == name:
            return True
        if v in seen or v not in edges:
            continue
        seen.add(v)
        stack.extend(edges[v])
    return False


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_resolution_properties(nodes):
    res = resolve(nodes)  # never raises
    edges = _edges(nodes)
    # every plugin on a cycle is blocked, and its error spells out a cycle through it
    for name in nodes:
        on_cycle = _on_cycle(name, edges)
        if on_cycle:
            assert res.blocked[name].error.startswith("dependency cycle "), res.blocked[name]
        elif name in res.blocked:
            assert not res.blocked[name].error.startswith("dependency cycle ")
    for name, blocked in res.blocked.items():
        if blocked.error.startswith("dependency cycle "):
            cycle = blocked.error.removeprefix("dependency cycle ").split(";")[0]
            chain = cycle.split(" -> ")
            assert chain[0] == chain[-1] == name
            for a, b in itertools.pairwise(chain):
                assert b in edges[a]
    # the boot order holds every usable plugin once and respects requirements
    usable = [n for n in nodes if n not in res.blocked]
    assert sorted(res.boot_order) == sorted(usable)
    position = {n: i for i, n in enumerate(res.boot_order)}
    for name in usable:
        for dep in res.requires[name]:
            assert dep not in res.blocked
            assert position[dep] < position[name]
    # unaffected plugins stay usable: nothing wrong anywhere in what they reach
    for name in nodes:
        reach, stack = set(), [name]
        while stack:
            v = stack.pop()
            if v in reach:
                continue
            reach.add(v)
            stack.extend(t for t in edges.get(v, ()) if t in nodes)
        clean = all(not _directly_broken(nodes[v], nodes) for v in reach) and not any(
            _on_cycle(v, edges) for v in reach
        )
        if clean:
            assert name not in res.blocked, res.blocked[name]


# -- through the CLI -----------------------------------------------------------------------


def test_blocked_plugin_command_and_doctor_and_graph(plugin_dir, run):
    write(
        plugin_dir, "a.py", simple_plugin("a", ("a-cmd",), extra_toml='[requires]\nplugins = ["b"]')
    )
    write(
        plugin_dir, "b.py", simple_plugin("b", ("b-cmd",), extra_toml='[requires]\nplugins = ["a"]')
    )
    write(plugin_dir, "ok.py", simple_plugin("ok", ("fine",)))
    r = run("a-cmd")
    assert r.code == EXIT_PLUGIN_LOAD
    assert "error: plugin 'a': dependency cycle a -> b -> a" in r.err
    assert run("fine").code == 0
    qualified = run("a:a-cmd")
    assert qualified.code == EXIT_PLUGIN_LOAD
    assert "dependency cycle a -> b -> a" in qualified.err
    doctor = run("plugins", "doctor")
    assert doctor.code == 1
    assert "error: plugin 'b' is blocked: dependency cycle b -> a -> b" in doctor.out
    graph = run("plugins", "graph").out
    assert "a  [blocked]\n  requires b -> b\n  blocked: dependency cycle a -> b -> a" in graph
    dot = run("plugins", "graph", "--format", "dot").out
    assert dot.startswith("digraph conduit {")
    assert '"a" -> "b" [label="b"];' in dot and '"b" -> "a" [label="a"];' in dot


def test_requirement_is_activated_first(plugin_dir, run):
    write(
        plugin_dir,
        "base.py",
        manifest_block('name = "base"\nversion = "1.0"\napi = ">=1.0,<2"')
        + (
            "import click\nfrom conduit.sdk import Plugin\n"
            "class P(Plugin):\n    def boot(self, ctx):\n        click.echo('base booted')\n"
        ),
    )
    src = simple_plugin("top", ("go",), extra_toml='[requires]\nplugins = ["base>=1"]')
    write(
        plugin_dir,
        "top.py",
        src.replace(
            "    def boot(self, ctx):\n",
            "    def boot(self, ctx):\n        click.echo('top booted')\n",
        ),
    )
    r = run("go")
    assert r.out == "base booted\ntop booted\ntop go\n"
    info = run("plugins", "info", "top", "--no-load").out
    assert "requires first: base" in info


def test_doctor_flags_startup_plugins_with_their_cost(plugin_dir, run):
    write(
        plugin_dir,
        "eager.py",
        simple_plugin("eager", ("e",), extra_toml='activation = ["startup"]'),
    )
    r = run("plugins", "doctor")
    assert r.code == 0
    line = next(x for x in r.out.splitlines() if "eager" in x)
    assert line.startswith("warning: plugin 'eager' activates at startup, on every command (")
    assert " ms); prefer command:, env:, file: or event: activation" in line


def test_info_says_why_a_plugin_is_or_is_not_active(plugin_dir, run, monkeypatch):
    write(
        plugin_dir,
        "ci.py",
        simple_plugin(
            "ci", ("ci-report",), extra_toml='activation = ["env:CI", "file:pyproject.toml"]'
        ),
    )
    monkeypatch.delenv("CI", raising=False)
    text = run("plugins", "info", "ci", "--no-load").out
    assert "    its own commands: ci-report" in text
    assert "    env:CI: does not fire now" in text
    monkeypatch.setenv("CI", "true")
    assert "    env:CI: fires now" in run("plugins", "info", "ci", "--no-load").out
    write(
        plugin_dir,
        "needy.py",
        simple_plugin("needy", ("n",), extra_toml='[requires]\nservices = ["vcs"]'),
    )
    blocked = run("plugins", "info", "needy", "--no-load").out
    assert (
        "why inactive: blocked: requires service 'vcs', which no installed plugin provides"
        in blocked
    )
