"""Plugin hosts: where a plugin's code runs.

One small protocol, :class:`conduit.hosts.base.Host`, with several implementations: the
in-process host, the process and WebAssembly hosts to come, and
:class:`~conduit.hosts.fake.FakeHost` for tests. The kernel picks a host per plugin from
its manifest's ``isolation`` and the user's policy, then only ever talks to the protocol.

Kept empty on purpose: importing a host must not pay for the others (or for the
Protocol class, which only the type checker needs).
"""
