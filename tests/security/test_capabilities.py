"""The capability grammar: parsing, errors, and which grant covers which request."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conduit.security.capabilities import (
    KINDS,
    Capability,
    CapabilityError,
    expand_path,
    filesystem_paths,
    missing,
    parse,
)


@pytest.mark.parametrize(
    ("text", "kind", "scope"),
    [
        ("filesystem:read", "filesystem:read", None),
        ("filesystem:read:/etc/hosts", "filesystem:read", "/etc/hosts"),
        ("filesystem:write:~/notes", "filesystem:write", "~/notes"),
        ("filesystem:write:${workspace}/build", "filesystem:write", "${workspace}/build"),
        ("filesystem:read:${plugin_data}", "filesystem:read", "${plugin_data}"),
        ("network:http", "network:http", None),
        ("network:http:api.github.com", "network:http", "api.github.com"),
        ("network:http:*.github.com:443", "network:http", "*.github.com:443"),
        ("network:http:127.0.0.1:8080", "network:http", "127.0.0.1:8080"),
        ("process:execute:git", "process:execute", "git"),
        ("process:execute:/usr/bin/git", "process:execute", "/usr/bin/git"),
        ("env:read:HOME", "env:read", "HOME"),
        ("env:read:AWS_*", "env:read", "AWS_*"),
    ],
)
def test_parse_valid(text: str, kind: str, scope: str | None) -> None:
    cap = parse(text)
    assert (cap.kind, cap.scope) == (kind, scope)
    assert str(cap) == text
    assert cap.unscoped is (scope is None)


@pytest.mark.parametrize(
    ("text", "message", "hint"),
    [
        ("filesytem:read", "is not a valid capability", "did you mean 'filesystem:read'?"),
        ("network", "is not a valid capability", "capabilities are filesystem:read[:SCOPE]"),
        ("network:http:", "has an empty or padded scope", "'network:http:SCOPE'"),
        ("env:read: HOME", "has an empty or padded scope", "without spaces"),
        ("filesystem:read:src", "has a relative path", "absolute path"),
        ("filesystem:read:${home}/x", "unknown path variable", "${workspace}"),
        ("network:http:exa mple.com", "not a valid host scope", "*.DOMAIN"),
        ("network:http:example.com:99999", "not a valid host scope", "HOST:PORT"),
        ("network:http:*.", "not a valid host scope", "HOST"),
        ("env:read:A-B", "not a valid variable name", "AWS_*"),
        ("env:read:A*B", "not a valid variable name", "prefix"),
    ],
)
def test_parse_errors_say_what_and_how(text: str, message: str, hint: str) -> None:
    with pytest.raises(CapabilityError) as info:
        parse(text)
    assert f"'{text}'" in info.value.message and message in info.value.message
    assert hint in info.value.hint


def test_unscoped_covers_every_scope_of_its_kind_only() -> None:
    assert parse("filesystem:read").covers(parse("filesystem:read:/etc"))
    assert not parse("filesystem:read").covers(parse("filesystem:write:/tmp"))
    assert not parse("filesystem:write").covers(parse("filesystem:read"))
    assert not parse("env:read:HOME").covers(parse("env:read"))


def test_paths_cover_what_is_below_them() -> None:
    grant = parse("filesystem:read:/srv/data")
    assert grant.covers(parse("filesystem:read:/srv/data/x/y"))
    assert grant.covers(parse("filesystem:read:/srv/data"))
    assert not grant.covers(parse("filesystem:read:/srv/database"))  # a prefix is not a parent
    assert not grant.covers(parse("filesystem:read:/srv"))
    assert grant.allows_path("/srv/data/../data/f")
    assert not grant.allows_path("/srv/data/../secret")
    assert parse("filesystem:read:/").allows_path("/anything")


def test_path_variables_expand(tmp_path: os.PathLike[str]) -> None:
    cap = parse("filesystem:write:${workspace}/out")
    assert cap.allows_path(f"{tmp_path}/out/a.txt", workspace=str(tmp_path))
    assert not cap.allows_path(f"{tmp_path}/in/a.txt", workspace=str(tmp_path))
    assert expand_path("~/x") == os.path.join(os.path.expanduser("~"), "x")
    with pytest.raises(CapabilityError, match="plugin_data"):
        expand_path("${plugin_data}/cache")


def test_filesystem_paths_is_what_every_host_opens() -> None:
    caps = [
        parse(c)
        for c in (
            "env:read:HOME",
            "filesystem:write:${plugin_data}/out",
            "filesystem:read",
            "filesystem:read:~/../x/./y",
            "filesystem:read:${workspace}",
        )
    ]
    found = filesystem_paths(caps, workspace="/w", plugin_data="/d")
    assert found == [
        (caps[1], "/d/out"),
        (caps[2], "/"),  # unscoped: everything
        (caps[3], os.path.normpath(os.path.expanduser("~/../x/y"))),
        (caps[4], "/w"),
    ]
    # without a plugin (the guard of code no plugin owns): that grant opens nothing
    assert [c for c, _ in filesystem_paths(caps, workspace="/w")] == [caps[2], caps[3], caps[4]]


def test_hosts_ports_and_wildcards() -> None:
    star = parse("network:http:*.github.com")
    assert star.allows_host("api.github.com", 443)
    assert star.allows_host("API.GitHub.com.")
    assert not star.allows_host("github.com")  # the wildcard needs a subdomain
    assert not star.allows_host("evilgithub.com")
    port = parse("network:http:127.0.0.1:8080")
    assert port.allows_host("127.0.0.1", 8080)
    assert not port.allows_host("127.0.0.1", 8081)
    assert not port.allows_host("127.0.0.1")
    assert star.covers(parse("network:http:api.github.com:443"))
    assert not port.covers(parse("network:http:127.0.0.1"))  # any port is more than one


def test_programs_and_env_names() -> None:
    git = parse("process:execute:git")
    assert git.allows_program("git") and git.allows_program("/usr/bin/git")
    assert not git.allows_program("gitk")
    aws = parse("env:read:AWS_*")
    assert aws.allows_env("AWS_REGION") and not aws.allows_env("HOME")
    assert aws.covers(parse("env:read:AWS_PROFILE")) and aws.covers(parse("env:read:AWS_*"))


def test_missing_lists_uncovered_requests_in_order() -> None:
    requested = [parse(t) for t in ("env:read:HOME", "network:http:x.org", "env:read:PATH")]
    granted = [parse("env:read:HOME"), parse("network:http:*.org")]
    assert missing(requested, granted) == [Capability("env:read", "PATH")]
    assert missing(requested, [parse(k) for k in KINDS]) == []


@given(st.text(max_size=40))
def test_parse_never_raises_anything_but_capability_error(text: str) -> None:
    try:
        cap = parse(text)
    except CapabilityError as exc:
        assert exc.message and exc.hint
    else:
        assert parse(str(cap)) == cap
        assert cap.covers(cap)


def test_capabilities_are_immutable_values() -> None:
    cap = parse("env:read:HOME")
    assert cap == Capability("env:read", "HOME") and hash(cap) == hash(
        Capability("env:read", "HOME")
    )
    assert cap != Capability("env:read") and cap != "env:read:HOME"
    assert repr(cap) == "Capability(kind='env:read', scope='HOME')"
    with pytest.raises(AttributeError):
        cap.scope = None  # type: ignore[misc]
