"""A small protocol executable (docs/protocol.md) written in Python, for tests that need
an executable host that does exactly one odd thing: answer Ctrl-C before ``$/cancel``
arrives, crash on demand, print to its stdout, report its environment.

``write_host(directory, name, ...)`` writes ``conduit-NAME`` (run by this interpreter)
with one command ``NAME``; what the command does depends on its first argument:

=============  ==============================================================================
``echo W...``  prints the words
``crash``      exits with status 9 (while the kernel waits for ``command.run``)
``print``      writes a line of text to its stdout, the channel, as a stray ``print`` would
``env``        prints how many environment variables it has and the value of ``$PROBE``
``aslimit``    prints its soft ``RLIMIT_AS`` (-1: none)
``ctrlc``      prints ``first line``, then waits for SIGINT and answers it at once, before
               ``$/cancel`` can arrive: the last output, then the command's ``-32800``
=============  ==============================================================================

``ctrlc`` writes its last output frame ahead, all but its last byte, which the C-level
signal handler writes (``signal.set_wakeup_fd`` writes the signal number, 2, and the frame
is MessagePack ending in the integer 2): the frame is complete the moment the signal
arrives, as fast as a compiled host could answer. Then the Python-level handler writes
the answer. It needs ``[process] codec = "msgpack"``; the pid of the host goes to
``$HOST_READY`` when it waits. (The kernel's own SIGINT, sent after ``$/cancel`` when
the answer was not read yet, may come before the Python-level handler has turned the
wakeup descriptor off: a stray byte then follows, and the kernel stops the host.)

The service ``NAME.svc`` has ``pid()``, ``env()`` (the number of variables and
``$PROBE``) and ``crash()``. With ``hook=True`` it implements ``after_command``, which
appends a line to ``$HOOK_LOG``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HOST = r"""
import json, os, signal, sys

NAME = SETTINGS["name"]
if sys.argv[1:] == ["--conduit-manifest"]:
    manifest = {
        "protocol": "jsonrpc",
        "name": NAME,
        "api": ">=1.0,<2",
        "isolation": "process",
        "commands": [{"name": NAME, "help": "A test host."}],
        "capabilities": SETTINGS["capabilities"],
        "provides": {"services": [NAME + ".svc"]},
    }
    print(json.dumps(manifest))
    sys.exit(0)
if sys.argv[1:] != ["--conduit-rpc"]:
    sys.exit(2)

encode = lambda message: json.dumps(message, separators=(",", ":")).encode()
decode = json.loads


def frame(message):
    data = encode(message)
    return len(data).to_bytes(4, "big") + data


def write(data):
    while data:
        try:
            data = data[os.write(1, data):]
        except BlockingIOError:  # stdout is non-blocking while set_wakeup_fd uses it
            import select

            select.select([], [1], [])


def send(message):
    write(frame(message))


def output(text, stream="stdout"):
    send({"jsonrpc": "2.0", "method": "$/output", "params": {"stream": stream, "data": text}})


buffered = b""


def receive():
    global buffered
    while True:
        if len(buffered) >= 4:
            size = int.from_bytes(buffered[:4], "big")
            if len(buffered) >= 4 + size:
                message = decode(buffered[4 : 4 + size])
                buffered = buffered[4 + size :]
                return message
        chunk = os.read(0, 65536)
        if not chunk:
            sys.exit(0)
        buffered += chunk


running = None  # the id of the command that waits for SIGINT


def on_sigint(signum, frame_):
    global running
    signal.set_wakeup_fd(-1)
    if running is not None:
        rid, running = running, None
        send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32800, "message": "cancelled"}})


signal.signal(signal.SIGINT, on_sigint)


def run(rid, args):
    global running
    word = args[0] if args else ""
    if word == "echo":
        output(" ".join(args[1:]) + "\n")
    elif word == "crash":
        os._exit(9)
    elif word == "print":
        sys.stdout.write("Hello from main: the answer is 42\n")
        sys.stdout.flush()
    elif word == "env":
        output(f"{len(os.environ)} {os.environ.get('PROBE')}\n")
    elif word == "aslimit":
        import resource

        output(f"{resource.getrlimit(resource.RLIMIT_AS)[0]}\n")
    elif word == "ctrlc":
        output("first line\n")
        last = frame({"jsonrpc": "2.0", "method": "$/output",
                      "params": {"stream": "stdout", "data": "last line\n"}, "n": 2})
        assert last[-1] == signal.SIGINT, "the frame must end in the byte the handler writes"
        write(last[:-1])
        running = rid
        os.set_blocking(1, False)
        signal.set_wakeup_fd(1)
        ready = os.environ["HOST_READY"]
        with open(ready + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(ready + ".tmp", ready)
        return  # answered by on_sigint
    send({"jsonrpc": "2.0", "id": rid, "result": {"exit_code": 0}})


def service(method):
    if method == "pid":
        return os.getpid()
    if method == "env":
        return [len(os.environ), os.environ.get("PROBE")]
    if method == "crash":
        os._exit(9)
    raise KeyError(method)


while True:
    message = receive()
    method, rid, params = message.get("method"), message.get("id"), message.get("params", {})
    if method == "initialize":
        codec = "msgpack" if "msgpack" in params["codecs"] else "json"
        hooks = [{"name": "after_command", "args": ["command", "argv", "exit_code"]}]
        plugin = {"name": NAME, "commands": [NAME], "services": [NAME + ".svc"],
                  "hooks": hooks if SETTINGS["hook"] else [], "hookspecs": []}
        send({"jsonrpc": "2.0", "id": rid, "result": {
            "protocol": 1, "codec": codec, "pid": os.getpid(),
            "interfaces": ["command.run", "hook.call", "service.call", "health", "shutdown"],
            "plugins": [plugin]}})
        if codec == "msgpack":
            import msgspec

            encode = msgspec.msgpack.Encoder().encode
            decode = msgspec.msgpack.Decoder().decode
    elif method == "command.run":
        run(rid, params["argv"][1:])
    elif method == "service.call":
        try:
            result = service(params["method"])
        except KeyError:
            send({"jsonrpc": "2.0", "id": rid,
                  "error": {"code": -32000, "message": "no such method", "data": {"kind": "exception"}}})
        else:
            send({"jsonrpc": "2.0", "id": rid, "result": result})
    elif method == "hook.call":
        with open(os.environ["HOOK_LOG"], "a") as log:
            log.write(json.dumps(params["kwargs"]) + "\n")
        send({"jsonrpc": "2.0", "id": rid, "result": []})
    elif method == "health":
        send({"jsonrpc": "2.0", "id": rid, "result": {"status": "ok", "pid": os.getpid()}})
    elif method == "shutdown":
        send({"jsonrpc": "2.0", "id": rid, "result": None})
        sys.exit(0)
    elif rid is not None:
        send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "unknown method"}})
"""


def write_host(
    directory: Path,
    name: str,
    *,
    capabilities: list[str] | None = None,
    hook: bool = False,
) -> Path:
    """Write the executable ``conduit-NAME`` into ``directory``."""
    settings = {"name": name, "capabilities": capabilities or [], "hook": hook}
    path = directory / f"conduit-{name}"
    path.write_text(f"#!{sys.executable}\nSETTINGS = {settings!r}\n" + HOST)
    path.chmod(0o755)
    return path
