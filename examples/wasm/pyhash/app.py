"""pyhash: hash and base64 tools, a Python plugin run as a WebAssembly component.

Built with ``conduit plugins build examples/wasm/pyhash`` (componentize-py against the
``conduit:plugin`` world shipped in ``conduit/wit/``). It can read only the directories
the user granted (``filesystem:read:...`` grants become WASI preopens) and fetch only
from the hosts the user granted (``network:http:HOST``, checked by Conduit in the
``http-request`` import); it gets no environment variables and runs no programs.
"""

import base64
import hashlib
import sys

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.command import CommandInfo, Output
from wit_world.imports import host

ALGORITHMS = ("md5", "sha1", "sha256", "sha512")


def _fail(message: str) -> Output:
    return Output(stdout=b"", stderr=f"{message}\n".encode(), code=1)


def _hash(args: list[str]) -> Output:
    algorithm = "sha256"
    files: list[str] = []
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg in ("-a", "--algorithm") and rest:
            algorithm = rest.pop(0)
        elif arg in ("-h", "--help"):
            return Output(
                stdout=b"usage: conduit pyhash [-a md5|sha1|sha256|sha512] [FILE]...\n",
                stderr=b"",
                code=0,
            )
        else:
            files.append(arg)
    if algorithm not in ALGORITHMS:
        return _fail(f"pyhash: unknown algorithm {algorithm!r} (choose {', '.join(ALGORITHMS)})")
    lines = []
    if not files:
        stdin = sys.stdin.buffer.read()
        lines.append(f"{hashlib.new(algorithm, stdin).hexdigest()}  -")
    for name in files:
        if name.startswith(("http://", "https://")):
            try:
                response = host.http_request("GET", name, [], b"")
            except Err as exc:  # not granted, or the request failed
                return _fail(f"pyhash: {name}: {exc.value}")
            if response.status != 200:
                return _fail(f"pyhash: {name}: HTTP {response.status}")
            data = response.body
        else:
            try:
                with open(name, "rb") as f:
                    data = f.read()
            except OSError as exc:
                reason = exc.strerror or exc
                return _fail(f"pyhash: {name}: {reason} (is it under a granted directory?)")
        lines.append(f"{hashlib.new(algorithm, data).hexdigest()}  {name}")
    return Output(stdout=("\n".join(lines) + "\n").encode(), stderr=b"", code=0)


def _b64(args: list[str]) -> Output:
    stdin = sys.stdin.buffer.read()
    if args[:1] in (["-d"], ["--decode"]):
        try:
            return Output(stdout=base64.b64decode(stdin, validate=False), stderr=b"", code=0)
        except ValueError as exc:
            return _fail(f"pyb64: invalid input: {exc}")
    return Output(stdout=base64.b64encode(stdin) + b"\n", stderr=b"", code=0)


COMMANDS = [
    CommandInfo(
        name="pyhash",
        help="Print the SHA-256 (or -a ALGO) of files, URLs or stdin.",
        usage="[-a md5|sha1|sha256|sha512] [FILE|URL]...",
    ),
    CommandInfo(name="pyb64", help="Base64-encode stdin (-d decodes).", usage="[-d]"),
]


class Command(exports.Command):
    def describe(self) -> list[CommandInfo]:
        return COMMANDS

    def run(self, args: list[str]) -> Output:
        command, rest = args[0], args[1:]
        if command == "pyhash":
            return _hash(rest)
        if command == "pyb64":
            return _b64(rest)
        return _fail(f"pyhash: unknown command {command!r}")
