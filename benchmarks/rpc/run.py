#!/usr/bin/env python3
"""Benchmark: the out-of-process plugin host's RPC path, cold start and memory.

Runs the real kernel against a single-file process plugin that provides a service
``echo`` with ``ping(x) -> x`` (written into a temporary ``CONDUIT_HOME``), once per codec
(JSON, MessagePack), and measures, in the same run:

1. Round trips, sequential, for each placement of kernel and child (same CPU, different
   CPUs, not pinned): the full stack (``kernel.service("echo").ping(1)``: ServiceProxy ->
   ProcessHost.call -> Endpoint -> frames -> child -> plugin method and back) against
   baselines with the same placement: a raw round trip of the same frame bytes between two
   processes with no RPC layer, on Conduit's transport (a pipe to the child, a socket back)
   and over one socketpair for reference, the same plus the codec (a minimal Python RPC),
   and the same call in-process (a direct method call).
2. Where the CPU time of one round trip goes, layer by layer, each layer measured alone in
   one process over Conduit's transport (so without any wake-up or context switch).
3. Host cold start: spawn to the answer of ``initialize`` and to the first completed call,
   against ``python -c pass`` and ``python -c "import conduit.hosts._child"``.
4. Host RSS (VmRSS) after initialize, after the first call and after the long runs,
   against a bare ``python -c "import time; time.sleep(5)"``.

Standard library, Conduit and msgspec only. See README.md beside this file.

    .venv/bin/python benchmarks/rpc/run.py                 # everything, markdown to stdout
    .venv/bin/python benchmarks/rpc/run.py --calls 5000 --codec msgpack --placement same
"""

from __future__ import annotations

import argparse
import array
import datetime
import json
import os
import platform
import random
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

try:
    import conduit  # noqa: F401
except ImportError:  # run from a checkout without an installed Conduit
    sys.path.insert(0, os.path.join(REPO, "src"))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.path.join(REPO, "src"), os.environ.get("PYTHONPATH")) if p
    )

from conduit import rpc  # noqa: E402
from conduit.hosts.process import ProcessHost, ProcessSettings, ServiceProxy  # noqa: E402
from conduit.indexer.build import load  # noqa: E402
from conduit.kernel import Kernel  # noqa: E402
from conduit.paths import resolve  # noqa: E402
from conduit.sdk import call_many  # noqa: E402
from conduit.timing import Profile  # noqa: E402

CODECS = ("json", "msgpack")
PLACEMENTS = ("same", "different", "unpinned")
PATHS = ("conduit", "conduit-many", "raw+codec", "raw", "raw-socketpair", "in-process")
RT_KINDS = ("conduit", "conduit-many", "raw+codec", "raw", "raw-socketpair")
BATCH = 100  # calls per call_many() in the pipelined path
PATH_LABELS = {
    "conduit": "Conduit full stack (`service(...).ping(1)`)",
    "conduit-many": f"Conduit pipelined: `call_many(service, 'ping', ...)`, {BATCH} calls "
    "per batch; µs per call (batch time / {BATCH})".replace("{BATCH}", str(BATCH)),
    "raw+codec": "baseline: minimal Python RPC (same codec, framing and transport, no "
    "Conduit layers)",
    "raw": "baseline: raw round trip on Conduit's transport (a pipe to the child, a socket "
    "back), same frame bytes, no RPC layer",
    "raw-socketpair": "reference: raw round trip over one socketpair (Conduit's transport "
    "before 2026-11-28), same frame bytes",
    "in-process": "baseline: in-process plugin, direct method call",
}
TARGET_P50_US = 25.0
TARGET_CALLS_PER_S = 40_000
TARGET_START_MS = 40.0
TARGET_RSS_MB = 20.0

PLUGIN = """\
# /// conduit
# name = "echo"
# api = ">=1.0,<2"
# isolation = "{isolation}"
# [provides]
# services = ["echo"]
# ///
from conduit.sdk import Plugin


class Echo:
    def ping(self, x):
        return x


class EchoPlugin(Plugin):
    def boot(self, ctx):
        ctx.register_service("echo", Echo)
"""

# The request and answer ServiceProxy.ping(1) puts on the wire (id: a typical 5-digit one).
REQUEST = {
    "jsonrpc": "2.0",
    "id": 10000,
    "method": "service.call",
    "params": {"service": "echo", "method": "ping", "args": [1], "kwargs": {}},
}
RESPONSE = {"jsonrpc": "2.0", "id": 10000, "result": 1}

# Echo peers for the two-process baselines (argv: fd, codec or "-", request and reply size).
RAW_PEER = """
import os, sys
rfd, wfd = map(int, sys.argv[1].split(","))
n, reply = int(sys.argv[2]), bytes.fromhex(sys.argv[3])
read, write = os.read, os.write
while True:
    got = 0
    while got < n:
        chunk = read(rfd, 65536)
        if not chunk:
            raise SystemExit(0)
        got += len(chunk)
    write(wfd, reply)
"""

CODEC_PEER = """
import os, sys
from conduit.rpc import codec
(rfd, wfd), c = map(int, sys.argv[1].split(",")), codec(sys.argv[2])
encode, decode, read, write = c.encode, c.decode, os.read, os.write
buf = b""
while True:
    while len(buf) < 4 or len(buf) < 4 + int.from_bytes(buf[:4], "big"):
        chunk = read(rfd, 65536)
        if not chunk:
            raise SystemExit(0)
        buf += chunk
    size = int.from_bytes(buf[:4], "big")
    msg = decode(buf[4 : 4 + size])
    buf = buf[4 + size :]
    out = encode({"jsonrpc": "2.0", "id": msg["id"], "result": msg["params"]["args"][0]})
    write(wfd, len(out).to_bytes(4, "big") + out)
"""


# -- helpers -----------------------------------------------------------------------------
def frame(codec_name: str, message: dict[str, Any]) -> bytes:
    data = rpc.codec(codec_name).encode(message)
    return len(data).to_bytes(4, "big") + data


def pct(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(q / 100.0 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def time_each(fn: Any, n: int) -> array.array[int]:
    """Nanoseconds of each of ``n`` calls of ``fn``."""
    clock = time.perf_counter_ns
    out = array.array("q", bytes(8 * n))
    for i in range(n):
        t = clock()
        fn()
        out[i] = clock() - t
    return out


def time_all(fn: Any, n: int) -> int:
    """Nanoseconds of ``n`` back-to-back calls of ``fn``."""
    clock = time.perf_counter_ns
    t = clock()
    for _ in range(n):
        fn()
    return clock() - t


def status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile of ``pid`` in kB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0])
    return out


def schedstat(pid: int) -> tuple[int, int, int]:
    """ns on a CPU, ns waiting on a run queue, and time slices of ``pid`` (its main thread)."""
    with open(f"/proc/{pid}/schedstat") as f:
        run, wait, slices = f.read().split()
    return int(run), int(wait), int(slices)


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    total = sum(fields[:8])
    return total - idle, total


def own_cpu_seconds() -> float:
    import resource

    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


class Placer:
    """Pins this process and a peer for a placement: same CPU, different CPUs, unpinned."""

    def __init__(self, cpus: tuple[int, int]) -> None:
        self.all = os.sched_getaffinity(0)
        self.a, self.b = cpus
        if self.a not in self.all or self.b not in self.all:
            raise SystemExit(f"--cpus {self.a},{self.b}: allowed CPUs are {sorted(self.all)}")

    def cpus(self, placement: str) -> tuple[set[int], set[int]]:
        if placement == "same":
            return {self.a}, {self.a}
        if placement == "different":
            return {self.a}, {self.b}
        return set(self.all), set(self.all)

    def place(self, placement: str, peer: int | None) -> None:
        mine, theirs = self.cpus(placement)
        os.sched_setaffinity(0, mine)
        if peer is not None:
            os.sched_setaffinity(peer, theirs)

    def describe(self, placement: str) -> str:
        mine, theirs = self.cpus(placement)
        if placement == "unpinned":
            return f"unpinned (CPUs {','.join(map(str, sorted(mine)))})"
        return f"kernel CPU {min(mine)}, child CPU {min(theirs)}"

    def reset(self) -> None:
        os.sched_setaffinity(0, self.all)


class _NullContext:
    """Stands in for the kernel's Context where only the host is measured."""

    def register_service(self, name: str, factory: Any) -> None:
        pass

    def register_hook(self, name: str, fn: Any) -> None:
        pass

    def register_hookspec(self, spec: Any, *, firstresult: bool = False) -> None:
        pass


# -- set-up ------------------------------------------------------------------------------
def make_home(root: str, name: str, isolation: str, codec_name: str | None) -> str:
    home = os.path.join(root, name)
    os.makedirs(os.path.join(home, "plugins"))
    with open(os.path.join(home, "plugins", "echo.py"), "w", encoding="utf-8") as f:
        f.write(PLUGIN.format(isolation=isolation))
    if codec_name is not None:
        with open(os.path.join(home, "config.toml"), "w", encoding="utf-8") as f:
            f.write(f'[process]\ncodec = "{codec_name}"\n')
    return home


def make_kernel(home: str) -> Kernel:
    paths = resolve({"CONDUIT_HOME": home})
    return Kernel(load(paths, Profile(False)), paths)


class Stack:
    """One codec's kernel with its process host, plus the peers of the baselines."""

    def __init__(self, root: str, codec_name: str) -> None:
        self.codec = codec_name
        os.makedirs(root, exist_ok=True)
        self.home = make_home(root, f"home-{codec_name}", "process", codec_name)
        self.kernel = make_kernel(self.home)
        self.svc = self.kernel.service("echo")
        assert isinstance(self.svc, ServiceProxy), type(self.svc)
        assert self.svc.ping(1) == 1
        self.host: ProcessHost = self.svc._host
        assert self.host.endpoint is not None and self.host.proc is not None
        got = self.host.endpoint.channel.codec.name
        assert got == codec_name, f"negotiated {got}, wanted {codec_name}"
        self.rss_start = status(self.host.proc.pid)
        self.request = frame(codec_name, REQUEST)
        self.response = frame(codec_name, RESPONSE)
        # kind -> (the fd this process reads, the fd it writes, what to close, the peer)
        self.peers: dict[str, tuple[int, int, list[Any], subprocess.Popen[bytes]]] = {}
        self.loopback: tuple[socket.socket, socket.socket] | None = None
        self.pipe: tuple[int, int] | None = None
        raw = ["-c", RAW_PEER, str(len(self.request)), self.response.hex()]
        for kind, argv in (
            ("raw", raw),
            ("raw-socketpair", list(raw)),
            ("raw+codec", ["-c", CODEC_PEER, codec_name]),
        ):
            mine, theirs = socket.socketpair()
            if kind == "raw-socketpair":
                rfd = wfd = mine.fileno()
                passed = [theirs.fileno()]
                argv.insert(2, f"{theirs.fileno()},{theirs.fileno()}")
                closing: list[Any] = [mine]
            else:  # as ProcessHost: a pipe to the peer, the socket back
                to_peer, wfd = os.pipe()
                rfd = mine.fileno()
                passed = [to_peer, theirs.fileno()]
                argv.insert(2, f"{to_peer},{theirs.fileno()}")
                closing = [mine, wfd]
            proc = subprocess.Popen([sys.executable, *argv], pass_fds=passed)
            theirs.close()
            if kind != "raw-socketpair":
                os.close(to_peer)
            self.peers[kind] = (rfd, wfd, closing, proc)

    def child_pid(self, kind: str) -> int:
        if kind in ("conduit", "conduit-many"):
            assert self.host.proc is not None
            return self.host.proc.pid
        return self.peers[kind][3].pid

    def call(self, kind: str) -> Any:
        if kind == "conduit":
            svc = self.svc
            return lambda: svc.ping(1)
        if kind == "conduit-many":
            svc, batch = self.svc, [(1,)] * BATCH
            return lambda: call_many(svc, "ping", batch)
        rfd, wfd = self.peers[kind][:2]
        read, write = os.read, os.write
        if kind in ("raw", "raw-socketpair"):
            req, n = self.request, len(self.response)

            def raw() -> None:
                write(wfd, req)
                got = 0
                while got < n:
                    got += len(read(rfd, 65536))

            return raw
        c = rpc.codec(self.codec)
        encode, decode = c.encode, c.decode
        state = {"id": 0}

        def minimal() -> Any:
            state["id"] += 1
            out = encode(
                {
                    "jsonrpc": "2.0",
                    "id": state["id"],
                    "method": "service.call",
                    "params": {"service": "echo", "method": "ping", "args": [1], "kwargs": {}},
                }
            )
            write(wfd, len(out).to_bytes(4, "big") + out)
            buf = read(rfd, 65536)
            while len(buf) < 4 or len(buf) < 4 + int.from_bytes(buf[:4], "big"):
                buf += read(rfd, 65536)
            return decode(buf[4:])["result"]

        assert minimal() == 1
        return minimal

    def close(self) -> dict[str, int]:
        assert self.host.proc is not None
        rss = status(self.host.proc.pid)
        for _, _, closing, proc in self.peers.values():
            for end in closing:
                end.close() if isinstance(end, socket.socket) else os.close(end)
            proc.wait()
        record = self.kernel.record("echo")
        self.host.deactivate(record, None)  # type: ignore[arg-type]
        return rss


# -- 1. round trips ----------------------------------------------------------------------
def round_trips(
    stacks: dict[str, Stack],
    inproc: Any,
    placer: Placer,
    placements: list[str],
    calls: int,
    warmup: int,
    rounds: int,
) -> dict[tuple[str, str, str], dict[str, Any]]:
    configs: list[tuple[str, str, str]] = []
    for placement in placements:
        configs.append(("-", placement, "in-process"))
        for codec_name in stacks:
            for kind in RT_KINDS:
                configs.append((codec_name, placement, kind))
    fns = {(c, k): stacks[c].call(k) for c in stacks for k in RT_KINDS}
    fns[("-", "in-process")] = lambda: inproc.ping(1)
    lat: dict[tuple[str, str, str], list[int]] = {cfg: [] for cfg in configs}
    thr: dict[tuple[str, str, str], list[tuple[int, int]]] = {cfg: [] for cfg in configs}
    # CPU (run) and run-queue wait of both processes during the throughput loops, in ns
    cpu: dict[tuple[str, str, str], list[int]] = {cfg: [0, 0, 0, 0] for cfg in configs}
    medians: dict[tuple[str, str, str], list[float]] = {cfg: [] for cfg in configs}
    per_round = [calls // rounds + (1 if i < calls % rounds else 0) for i in range(rounds)]

    def batch(kind: str) -> int:  # calls per invocation of the path's function
        return BATCH if kind == "conduit-many" else 1

    for cfg in configs:  # first warm-up: imports, caches, the allocator
        codec_name, placement, kind = cfg
        placer.place(
            placement, None if kind == "in-process" else stacks[codec_name].child_pid(kind)
        )
        time_all(fns[(codec_name, kind)], max(2, warmup // batch(kind)))
    for r, n in enumerate(per_round):
        order = list(configs)
        random.shuffle(order)
        for cfg in order:
            codec_name, placement, kind = cfg
            fn = fns[(codec_name, kind)]
            peer = None if kind == "in-process" else stacks[codec_name].child_pid(kind)
            placer.place(placement, peer)
            k = batch(kind)
            time_all(fn, max(2, max(200, warmup // 10) // k))  # settle after moving
            ns = [t // k for t in time_each(fn, max(5, n // k))]
            lat[cfg].extend(ns)
            medians[cfg].append(statistics.median(ns) / 1000)
            me0 = schedstat(os.getpid())
            peer0 = schedstat(peer) if peer is not None else (0, 0, 0)
            m = max(5, n // k)
            thr[cfg].append((m * k, time_all(fn, m)))
            me1 = schedstat(os.getpid())
            peer1 = schedstat(peer) if peer is not None else (0, 0, 0)
            for i, delta in enumerate(
                (me1[0] - me0[0], peer1[0] - peer0[0], me1[1] - me0[1], peer1[1] - peer0[1])
            ):
                cpu[cfg][i] += delta
        log(f"  round {r + 1}/{rounds} done")
    placer.reset()
    results = {}
    for cfg in configs:
        us = sorted(v / 1000 for v in lat[cfg])
        n_total = sum(n for n, _ in thr[cfg])
        ns_total = sum(t for _, t in thr[cfg])
        results[cfg] = {
            "n": len(us),
            "p50": pct(us, 50),
            "p90": pct(us, 90),
            "p99": pct(us, 99),
            "mean": statistics.fmean(us),
            "round_p50": medians[cfg],
            "calls_per_s": n_total / (ns_total / 1e9),
            "wall_per_call": ns_total / n_total / 1000,
            "kernel_cpu": cpu[cfg][0] / n_total / 1000,
            "child_cpu": cpu[cfg][1] / n_total / 1000,
            "kernel_wait": cpu[cfg][2] / n_total / 1000,
            "child_wait": cpu[cfg][3] / n_total / 1000,
        }
    return results


# -- 2. where the time goes --------------------------------------------------------------
class _StubEndpoint:
    """Answers at once: what is left is ServiceProxy and ProcessHost.call."""

    def request(self, method: str, params: dict[str, Any], timeout: float | None = None) -> Any:
        return params["args"][0]


class Layer:
    """One timed step, with untimed set-up and tear-down around each call."""

    def __init__(self, label: str, fn: Any, setup: Any = None, teardown: Any = None) -> None:
        self.label = label
        self.fn = fn
        self.setup = setup
        self.teardown = teardown
        self.ns: list[int] = []

    def run(self, n: int) -> None:
        clock = time.perf_counter_ns
        fn, setup, teardown, out = self.fn, self.setup, self.teardown, self.ns
        for _ in range(n):
            if setup is not None:
                setup()
            t = clock()
            fn()
            out.append(clock() - t)
            if teardown is not None:
                teardown()

    def median_us(self) -> float:
        return statistics.median(self.ns) / 1000


def layers(stack: Stack, inproc: Any) -> list[Layer]:
    """Each layer of one round trip as a step that runs alone in this process."""
    from conduit.hosts._child import Child

    codec_name = stack.codec
    c = rpc.codec(codec_name)

    # kernel side, above the endpoint: ServiceProxy.__getattr__, its closure, ProcessHost.call
    host, svc = stack.host, stack.svc
    assert host.proc is not None
    stub = _StubEndpoint()
    saved: list[Any] = []

    def stub_in() -> None:
        saved.append(host.endpoint)
        host.endpoint = stub  # type: ignore[assignment]

    def stub_out() -> None:
        host.endpoint = saved.pop()

    # kernel side: Endpoint.request whose answer is already waiting; as ProcessHost sets
    # it up: the kernel writes to a pipe and reads the child's socket
    k_sock, c_sock = socket.socketpair()
    to_child, k_out = os.pipe()
    stack.loopback = (k_sock, c_sock)
    stack.pipe = (to_child, k_out)
    k_fd, c_fd = k_sock.fileno(), c_sock.fileno()
    channel = rpc.Channel(k_fd, k_out, sock=k_sock)
    channel.codec = rpc.codec(codec_name)
    endpoint = rpc.Endpoint(channel)
    params = {"service": "echo", "method": "ping", "args": [1], "kwargs": {}}
    req_len = len(frame(codec_name, {**REQUEST, "id": 1}))

    def answer() -> None:
        os.write(c_fd, frame(codec_name, {**RESPONSE, "id": endpoint.last_id + 1}))

    def drain_child_end() -> None:
        got = 0
        while got < req_len:
            got += len(os.read(to_child, 65536))

    # child side: the body of Endpoint.serve with the real Child dispatching to the plugin
    child_channel = rpc.Channel(to_child, c_fd)
    child_endpoint = rpc.Endpoint(child_channel)
    child = Child(child_endpoint)
    child_endpoint.handlers["service.call"] = child.service_call
    child.activate(stack.host._activation_params(stack.kernel.record("echo")))
    child_channel.codec = rpc.codec(codec_name)
    request_frame = frame(codec_name, REQUEST)
    response_frame = frame(codec_name, RESPONSE)
    resp_len = len(response_frame)

    def drain_kernel_end() -> None:
        got = 0
        while got < resp_len:
            got += len(os.read(k_fd, 65536))

    # the codec alone: both messages encoded once and decoded once
    enc, dec = c.encode, c.decode
    req_bytes, resp_bytes = enc(REQUEST), enc(RESPONSE)

    def io() -> None:
        os.write(k_out, request_frame)
        os.read(to_child, 65536)
        os.write(c_fd, response_frame)
        os.read(k_fd, 65536)

    return [
        Layer(
            "kernel: ServiceProxy attribute + closure + ProcessHost.call (endpoint stubbed)",
            lambda: svc.ping(1),
            stub_in,
            stub_out,
        ),
        Layer(
            "  not on the path since 2026-11-28, for scale: Popen.poll() (a wait4 syscall)",
            host.proc.poll,
        ),
        Layer(
            "kernel: Endpoint.request (encode, write, read, decode), answer waiting",
            lambda: endpoint.request("service.call", params, 30.0),
            answer,
            drain_child_end,
        ),
        Layer(
            "  not on the path since 2026-11-28, for scale: select() on a readable socket",
            lambda: select.select([c_fd], [], [], 30.0),
            lambda: os.write(k_fd, b"x"),
            lambda: os.read(c_fd, 1),
        ),
        Layer(
            "child: Channel.recv + Endpoint.handle + Child.service_call + send",
            lambda: child_endpoint.handle(child_channel.recv()),
            lambda: os.write(k_out, request_frame),
            drain_kernel_end,
        ),
        Layer(
            "  of which Child.service_call (lookup, getattr, plugin method)",
            lambda: child.service_call(params),
        ),
        Layer(
            "codec alone: request and answer each encoded and decoded once",
            lambda: (enc(REQUEST), dec(req_bytes), enc(RESPONSE), dec(resp_bytes)),
        ),
        Layer("syscalls alone: 2 x write + 2 x read of both frames, no wake-up", io),
        Layer("in-process direct call, for scale", lambda: inproc.ping(1)),
    ]


SUM_OF = (0, 2, 4)
CPU_ROW = 6  # the layers that add up to the CPU of one round trip


def profile_layers(
    stacks: dict[str, Stack], inproc: Any, calls: int, rounds: int
) -> dict[str, list[tuple[str, float]]]:
    """Median µs of every layer, all layers and codecs interleaved in shuffled rounds."""
    steps = {c: layers(s, inproc) for c, s in stacks.items()}
    everything = [layer for c in steps for layer in steps[c]]
    for layer in everything:
        layer.run(200)
        layer.ns.clear()
    per_round = max(1, calls // rounds)
    for _ in range(rounds):
        random.shuffle(everything)
        for layer in everything:
            layer.run(per_round)
    out = {}
    for c, steps_c in steps.items():
        rows = [(layer.label, layer.median_us()) for layer in steps_c]
        total = sum(rows[i][1] for i in SUM_OF)
        rows.insert(
            CPU_ROW,
            ("CPU of one round trip, both processes (sum of the three layers above)", total),
        )
        out[c] = rows
        loopback = stacks[c].loopback
        if loopback is not None:
            loopback[0].close()
            loopback[1].close()
        pipe = stacks[c].pipe
        if pipe is not None:
            os.close(pipe[0])
            os.close(pipe[1])
    return out


# -- 3 and 4. cold start and memory ------------------------------------------------------
def spawn_to_exit(argv: list[str]) -> float:
    t = time.perf_counter_ns()
    subprocess.Popen(argv).wait()
    return (time.perf_counter_ns() - t) / 1e6


# A CLI invocation's view: a fresh kernel process whose first use of the service starts the
# host. Unlike the starts measured inside this benchmark, its kernel has not imported the
# codec yet (msgspec for MessagePack), as in a real `conduit` run.
FRESH_KERNEL = """
import json, sys, time
t0 = time.perf_counter_ns()
from conduit.timing import Profile
from conduit.indexer.build import load
from conduit.kernel import Kernel
from conduit.paths import resolve
paths = resolve()
kernel = Kernel(load(paths, Profile(False)), paths)
before = "msgspec" in sys.modules
t1 = time.perf_counter_ns()
svc = kernel.service("echo")
t2 = time.perf_counter_ns()
assert svc.ping(1) == 1
t3 = time.perf_counter_ns()
out = {"activate": (t2 - t1) / 1e6, "first_call": (t3 - t1) / 1e6, "msgspec_before": before}
sys.stdout.write(json.dumps(out))
"""


def fresh_kernel(home: str) -> dict[str, float]:
    env = dict(os.environ, CONDUIT_HOME=home)
    proc = subprocess.run(
        [sys.executable, "-c", FRESH_KERNEL], env=env, capture_output=True, text=True, check=True
    )
    result = json.loads(proc.stdout)
    assert not result.pop("msgspec_before"), "the kernel imported msgspec before the host"
    return result


def one_start(kernel: Kernel) -> dict[str, float]:
    record = kernel.record("echo")
    table = kernel.index["config"].get("process")
    host = ProcessHost(kernel, ProcessSettings(table if isinstance(table, dict) else None))
    profile = Profile(True)
    t0 = time.perf_counter_ns()
    host.activate(record, _NullContext(), profile)  # type: ignore[arg-type]
    t1 = time.perf_counter_ns()
    assert host.proc is not None
    rss_init = status(host.proc.pid)
    assert ServiceProxy(host, "echo", "echo").ping(1) == 1
    t2 = time.perf_counter_ns()
    rss_call = status(host.proc.pid)
    spans = {name.split(":")[1]: (end - start) / 1e6 for name, start, end, _ in profile.spans}
    host.deactivate(record, None)  # type: ignore[arg-type]
    return {
        "initialize": (t1 - t0) / 1e6,
        "first_call": (t2 - t0) / 1e6,
        "spawn": spans.get("spawn", float("nan")),
        "init_rpc": spans.get("initialize", float("nan")),
        "rss_init_kb": rss_init["VmRSS"],
        "rss_anon_init_kb": rss_init["RssAnon"],
        "rss_call_kb": rss_call["VmRSS"],
    }


BYTECODE = {
    "pyc": "with .pyc (a private PYTHONPYCACHEPREFIX, written by a warm-up start)",
    "env": "environment as given",
}


def set_bytecode(mode: str, prefix: str, original: dict[str, str]) -> None:
    """Make the children started from now on find .pyc files (``pyc``) or not (``env``).

    ``env`` restores the environment the benchmark was started with; in a dev venv run with
    PYTHONDONTWRITEBYTECODE=1 there are no .pyc files for Conduit and its dependencies, so
    every start compiles them. ``pyc`` is what an installed Conduit sees (pip and uv
    compile bytecode), without writing into the venv or the source tree.
    """
    for key in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX"):
        os.environ.pop(key, None)
        if mode == "env" and key in original:
            os.environ[key] = original[key]
    if mode == "pyc":
        os.environ["PYTHONPYCACHEPREFIX"] = prefix


def cold_starts(
    kernels: dict[str, Kernel],
    placer: Placer,
    placements: list[str],
    modes: list[str],
    starts: int,
    prefix: str,
    original: dict[str, str],
) -> dict[tuple[str, str], list[float]]:
    """Interleaved rounds: every measured thing, in every placement and bytecode set-up,
    once per round, in a shuffled order."""
    py = sys.executable
    floors = {
        "python -c pass": [py, "-c", "pass"],
        'python -c "import conduit.hosts._child"': [py, "-c", "import conduit.hosts._child"],
    }
    wheres = [(p, m) for p in placements for m in modes]
    out: dict[tuple[str, str], list[float]] = {}

    def setup(placement: str, mode: str) -> None:
        # "same": this process on one CPU before the spawn, so the child inherits it.
        placer.place("same" if placement == "same" else "unpinned", None)
        set_bytecode(mode, prefix, original)

    try:
        for placement, mode in wheres:
            setup(placement, mode)
            for kernel in kernels.values():
                one_start(kernel)  # warm the page cache (and write the .pyc)
                fresh_kernel(kernel.paths.config_dir)
            for argv in floors.values():
                spawn_to_exit(argv)
        for _ in range(starts):
            jobs: list[tuple[str, str, str, Any]] = []
            for placement, mode in wheres:
                jobs += [(placement, mode, k, v) for k, v in floors.items()]
                jobs += [(placement, mode, f"host:{c}", k) for c, k in kernels.items()]
                jobs += [
                    (placement, mode, f"fresh:{c}", k.paths.config_dir) for c, k in kernels.items()
                ]
            random.shuffle(jobs)
            for placement, mode, key, job in jobs:
                setup(placement, mode)
                where = f"{placement}, {mode}"
                if isinstance(job, list):
                    out.setdefault((key, where), []).append(spawn_to_exit(job))
                    continue
                fn = fresh_kernel if isinstance(job, str) else one_start
                for field, value in fn(job).items():
                    out.setdefault((f"{key}:{field}", where), []).append(value)
    finally:
        os.environ.clear()
        os.environ.update(original)
        placer.reset()
    return out


def bare_rss(samples: int) -> list[dict[str, int]]:
    out = []
    for _ in range(samples):
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
        time.sleep(1.0)
        out.append(status(proc.pid))
        proc.kill()
        proc.wait()
    return out


# -- report ------------------------------------------------------------------------------
def machine() -> dict[str, str]:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = "?"
    try:
        dirty = subprocess.run(
            ["git", "-C", REPO, "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split("\n")
        changed = ", ".join(line[3:] for line in dirty if line.strip()) or "none"
    except OSError:
        changed = "?"
    import msgspec

    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "uname": " ".join(part for part in platform.uname() if part),
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": sys.version.split()[0] + f" ({sys.executable})",
        "msgspec": msgspec.__version__,
        "conduit": f"{conduit_version()} (commit {commit or '?'}; uncommitted in src/: {changed})",
    }


def conduit_version() -> str:
    from conduit import __version__

    return __version__


def pooled(starts: dict[tuple[str, str], list[float]], key: str, mode: str) -> list[float]:
    """One cold-start figure of one bytecode mode over every start placement."""
    return [
        v
        for (k, where), values in starts.items()
        if k == key and where.endswith(", " + mode)
        for v in values
    ]


def fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "**FAIL**"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000, help="timed calls per config")
    parser.add_argument("--warmup", type=int, default=2_000, help="warm-up calls per config")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    parser.add_argument("--codec", default="json,msgpack", help="json, msgpack or both")
    parser.add_argument(
        "--placement", default="same,different,unpinned", help="same, different, unpinned"
    )
    parser.add_argument("--cpus", default="0,1", help="CPU A (kernel) and B (child), e.g. 0,1")
    parser.add_argument("--starts", type=int, default=30, help="cold starts per codec")
    parser.add_argument(
        "--start-placement",
        default="unpinned,same",
        help="cold start: unpinned, or same (everything on CPU A)",
    )
    parser.add_argument(
        "--bytecode",
        default="pyc,env",
        help="cold start and RSS: pyc (private .pyc cache), env (environment as given)",
    )
    parser.add_argument("--layer-calls", type=int, default=20_000, help="calls per layer")
    parser.add_argument("--layer-rounds", type=int, default=20, help="interleaved rounds")
    parser.add_argument("--skip", default="", help="skip parts: rt,layers,start,rss")
    parser.add_argument("--json", metavar="FILE", help="also write all figures as JSON")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    codecs = [c for c in args.codec.split(",") if c]
    placements = [p for p in args.placement.split(",") if p]
    start_placements = [p for p in args.start_placement.split(",") if p]
    modes = [m for m in args.bytecode.split(",") if m]
    skip = set(args.skip.split(","))
    for m in modes:
        if m not in BYTECODE:
            parser.error(f"unknown bytecode mode {m!r}")
    for c in codecs:
        if c not in CODECS:
            parser.error(f"unknown codec {c!r}")
    for p in placements + start_placements:
        if p not in PLACEMENTS:
            parser.error(f"unknown placement {p!r}")
    a, b = (int(x) for x in args.cpus.split(","))
    placer = Placer((a, b))
    random.seed(args.seed)

    facts = machine()
    load_start = os.getloadavg()
    busy0, total0 = cpu_times()
    own0 = own_cpu_seconds()
    wall0 = time.monotonic()
    log(f"load average at start: {load_start}")
    root = tempfile.mkdtemp(prefix="conduit-rpc-bench-")
    prefix = os.path.join(root, "pycache")
    original = dict(os.environ)
    facts["bytecode"] = (
        f"PYTHONDONTWRITEBYTECODE={original.get('PYTHONDONTWRITEBYTECODE', '(unset)')}, "
        f"PYTHONPYCACHEPREFIX={original.get('PYTHONPYCACHEPREFIX', '(unset)')} in the "
        "environment; long-running hosts started with a private .pyc cache"
    )
    data: dict[str, Any] = {"machine": facts, "args": vars(args)}
    try:
        set_bytecode("pyc", prefix, original)  # the long-running hosts and peers
        for c in codecs:  # a first start compiles and writes the .pyc (and costs memory)
            Stack(os.path.join(root, "warm-up"), c).close()
        inproc_kernel = make_kernel(make_home(root, "home-inprocess", "in-process", None))
        inproc = inproc_kernel.service("echo")
        assert not isinstance(inproc, ServiceProxy) and inproc.ping(1) == 1
        stacks = {c: Stack(root, c) for c in codecs}
        rt: dict[tuple[str, str, str], dict[str, Any]] = {}
        if "rt" not in skip:
            log("round trips ...")
            rt = round_trips(
                stacks, inproc, placer, placements, args.calls, args.warmup, args.rounds
            )
        lay: dict[str, list[tuple[str, float]]] = {}
        if "layers" not in skip:
            log("layers ...")
            placer.place("same", None)
            lay = profile_layers(stacks, inproc, args.layer_calls, args.layer_rounds)
            placer.reset()
        long_rss = {c: s.close() for c, s in stacks.items()}
        starts: dict[tuple[str, str], list[float]] = {}
        if "start" not in skip:
            log("cold starts ...")
            kernels = {c: make_kernel(stacks[c].home) for c in codecs}
            starts = cold_starts(
                kernels, placer, start_placements, modes, args.starts, prefix, original
            )
        bare: dict[str, list[dict[str, int]]] = {}
        if "rss" not in skip:
            log("bare interpreter RSS ...")
            for mode in modes:
                set_bytecode(mode, prefix, original)
                bare[mode] = bare_rss(3)
    finally:
        os.environ.clear()
        os.environ.update(original)
        placer.reset()
        shutil.rmtree(root, ignore_errors=True)
    busy1, total1 = cpu_times()
    wall = time.monotonic() - wall0
    own = own_cpu_seconds() - own0
    load_end = os.getloadavg()
    hz = os.sysconf("SC_CLK_TCK")
    busy_all = (busy1 - busy0) / max(1, total1 - total0)
    ncpu = len(placer.all)
    others = max(0.0, (busy1 - busy0) / hz - own) / (wall * ncpu)
    facts["load"] = (
        f"load average {load_start[0]:.2f}/{load_start[1]:.2f}/{load_start[2]:.2f} at start, "
        f"{load_end[0]:.2f}/{load_end[1]:.2f}/{load_end[2]:.2f} at end (1/5/15 min); "
        f"CPUs {busy_all:.0%} busy during the run, about {others:.0%} of it other processes"
    )

    lines: list[str] = []
    emit = lines.append
    emit(f"### RPC benchmark, {facts['date']}")
    emit("")
    for key in ("uname", "nproc", "cpu", "python", "msgspec", "conduit", "bytecode", "load"):
        emit(f"* {key}: {facts[key]}")
    cmd = " ".join(argv if argv is not None else sys.argv[1:])
    emit(f"* command: `python benchmarks/rpc/run.py {cmd}`")
    emit("")
    targets: list[tuple[str, str, str, bool]] = []
    if rt:
        emit(
            f"#### Round trip of a trivial call ({args.calls:,} timed calls per row after "
            f"{args.warmup:,} warm-up, {args.rounds} interleaved rounds; µs)"
        )
        emit("")
        emit(
            "| codec | placement | path | p50 | p90 | p99 | calls/s | kernel CPU/call "
            "| child CPU/call | run-queue wait/call | p50 range over rounds |"
        )
        emit("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for placement in placements:
            order = [("-", "in-process")] + [(c, k) for c in codecs for k in RT_KINDS]
            for codec_name, kind in order:
                r = rt[(codec_name, placement, kind)]
                where = placer.describe(placement)
                if kind == "in-process":
                    where = "kernel only, " + (
                        "unpinned" if placement == "unpinned" else f"CPU {placer.a}"
                    )
                emit(
                    f"| {codec_name} | {where} | {PATH_LABELS[kind]} | {fmt(r['p50'])} | "
                    f"{fmt(r['p90'])} | {fmt(r['p99'])} | {fmt(r['calls_per_s'], 0)} | "
                    f"{fmt(r['kernel_cpu'])} | "
                    f"{fmt(r['child_cpu']) if kind != 'in-process' else '-'} | "
                    f"{fmt(r['kernel_wait'] + r['child_wait'])} | "
                    f"{fmt(min(r['round_p50']))}-{fmt(max(r['round_p50']))} |"
                )
                if kind == "conduit":
                    targets.append(
                        (
                            f"round trip p50 <= {TARGET_P50_US:g} µs",
                            f"{codec_name}, {placer.describe(placement)}",
                            f"{fmt(r['p50'])} µs",
                            r["p50"] <= TARGET_P50_US,
                        )
                    )
                    targets.append(
                        (
                            f"calls/s >= {TARGET_CALLS_PER_S:,}",
                            f"{codec_name}, {placer.describe(placement)}",
                            f"{fmt(r['calls_per_s'], 0)}",
                            r["calls_per_s"] >= TARGET_CALLS_PER_S,
                        )
                    )
                if kind == "conduit-many":
                    targets.append(
                        (
                            f"calls/s >= {TARGET_CALLS_PER_S:,}, pipelined (`call_many`)",
                            f"{codec_name}, {placer.describe(placement)}",
                            f"{fmt(r['calls_per_s'], 0)}",
                            r["calls_per_s"] >= TARGET_CALLS_PER_S,
                        )
                    )
        emit("")
        data["round_trips"] = [
            {"codec": c, "placement": p, "path": k, **v} for (c, p, k), v in rt.items()
        ]
    if lay:
        emit(
            f"#### Where the CPU time of one round trip goes (each layer alone in one process "
            f"on CPU {placer.a}, no wake-ups; median of {args.layer_calls:,}; µs)"
        )
        emit("")
        emit("| layer | " + " | ".join(codecs) + " |")
        emit("|---|" + "---:|" * len(codecs))
        for i, (label, _) in enumerate(lay[codecs[0]]):
            cells = " | ".join(fmt(lay[c][i][1], 2) for c in codecs)
            emit(f"| {label} | {cells} |")
        emit("")
        if rt:
            emit(
                "#### One round trip taken apart (untimed loops, /proc/PID/schedstat; µs per "
                "call; hot CPU: the sum of the layers above)"
            )
            emit("")
            emit(
                "| codec | placement | path | wall | kernel CPU | child CPU | neither on a CPU "
                "| run-queue wait | hot CPU | CPU / hot CPU |"
            )
            emit("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
            for placement in placements:
                for c in codecs:
                    for kind in ("conduit", "raw+codec", "raw"):
                        r = rt[(c, placement, kind)]
                        cpu = r["kernel_cpu"] + r["child_cpu"]
                        hot = lay[c][CPU_ROW][1] if kind == "conduit" else float("nan")
                        emit(
                            f"| {c} | {placer.describe(placement)} | {kind} | "
                            f"{fmt(r['wall_per_call'])} | {fmt(r['kernel_cpu'])} | "
                            f"{fmt(r['child_cpu'])} | {fmt(max(0.0, r['wall_per_call'] - cpu))} | "
                            f"{fmt(r['kernel_wait'] + r['child_wait'])} | "
                            + (f"{fmt(hot)} | {cpu / hot:.1f}x |" if hot == hot else "- | - |")
                        )
            emit("")
        data["layers"] = {c: [{"layer": k, "us": v} for k, v in rows] for c, rows in lay.items()}
    if starts:
        emit(
            f"#### Host cold start ({args.starts} starts per row, interleaved; ms from the "
            f"spawn, measured in the kernel)"
        )
        emit("")
        emit("| placement, bytecode | what | median | p10 | p90 |")
        emit("|---|---|---:|---:|---:|")
        fields = (
            ("spawn", "Popen() returns (fork + exec)"),
            ("init_rpc", "`initialize` request to answer"),
            ("initialize", "spawn to the answer of `initialize` (activate)"),
            ("first_call", "spawn to the first completed `ping`"),
        )
        fresh_fields = (
            ("activate", "fresh kernel process: `service('echo')` (spawn + initialize)"),
            ("first_call", "fresh kernel process: `service('echo')` + first `ping`"),
        )
        for placement, mode in ((p, m) for p in start_placements for m in modes):
            key = f"{placement}, {mode}"
            where = "unpinned" if placement == "unpinned" else f"all on CPU {placer.a}"
            where += ", " + ("with .pyc" if mode == "pyc" else "env as given")
            for floor in ("python -c pass", 'python -c "import conduit.hosts._child"'):
                v = sorted(starts[(floor, key)])
                emit(
                    f"| {where} | `{floor}`, spawn to exit | {fmt(statistics.median(v))} | "
                    f"{fmt(pct(v, 10))} | {fmt(pct(v, 90))} |"
                )
            for c in codecs:
                for field, label in fields:
                    v = sorted(starts[(f"host:{c}:{field}", key)])
                    med = statistics.median(v)
                    emit(
                        f"| {where} | {c} host: {label} | {fmt(med)} | {fmt(pct(v, 10))} | "
                        f"{fmt(pct(v, 90))} |"
                    )
                    if field in ("initialize", "first_call"):
                        upto = "initialize" if field == "initialize" else "first call"
                        targets.append(
                            (
                                f"cold start to {upto} <= {TARGET_START_MS:g} ms",
                                f"{c}, {where}",
                                f"{fmt(med)} ms",
                                med <= TARGET_START_MS,
                            )
                        )
                for field, label in fresh_fields:
                    v = sorted(starts[(f"fresh:{c}:{field}", key)])
                    emit(
                        f"| {where} | {c}, {label} | {fmt(statistics.median(v))} | "
                        f"{fmt(pct(v, 10))} | {fmt(pct(v, 90))} |"
                    )
        emit("")
        data["cold_starts"] = [
            {"what": k, "placement": p, "ms_or_kb": v} for (k, p), v in starts.items()
        ]
    if starts or bare or rt:
        emit("#### Memory (VmRSS from /proc/PID/status; MB = 2^20 bytes)")
        emit("")
        emit("| process | VmRSS median | RssAnon median | samples |")
        emit("|---|---:|---:|---:|")
        for mode in modes:
            label = "with .pyc" if mode == "pyc" else "env as given"
            if mode in bare:
                emit(
                    f'| bare `python -c "import time; time.sleep(5)"`, {label} | '
                    f"{fmt(statistics.median(s['VmRSS'] for s in bare[mode]) / 1024)} | "
                    f"{fmt(statistics.median(s['RssAnon'] for s in bare[mode]) / 1024)} | "
                    f"{len(bare[mode])} |"
                )
            for c in codecs:
                if not starts:
                    continue
                init = pooled(starts, f"host:{c}:rss_init_kb", mode)
                anon = pooled(starts, f"host:{c}:rss_anon_init_kb", mode)
                call = pooled(starts, f"host:{c}:rss_call_kb", mode)
                rss_mb = statistics.median(init) / 1024
                emit(
                    f"| {c} host after `initialize`, {label} | {fmt(rss_mb)} | "
                    f"{fmt(statistics.median(anon) / 1024)} | {len(init)} |"
                )
                emit(
                    f"| {c} host after the first call, {label} | "
                    f"{fmt(statistics.median(call) / 1024)} | | {len(call)} |"
                )
                targets.append(
                    (
                        f"host RSS after initialize <= {TARGET_RSS_MB:g} MB",
                        f"{c}, {label}",
                        f"{fmt(rss_mb)} MB",
                        rss_mb <= TARGET_RSS_MB,
                    )
                )
        if rt:
            for c in codecs:
                first = stacks[c].rss_start
                emit(
                    f"| {c} long-running host after its first call, with .pyc | "
                    f"{fmt(first['VmRSS'] / 1024)} | {fmt(first['RssAnon'] / 1024)} | 1 |"
                )
                emit(
                    f"| {c} same host after all round-trip runs | "
                    f"{fmt(long_rss[c]['VmRSS'] / 1024)} | {fmt(long_rss[c]['RssAnon'] / 1024)} "
                    f"| 1 |"
                )
        emit("")
        data["bare_rss_kb"] = bare
        data["long_run_rss_kb"] = long_rss
    if targets:
        emit("#### Targets")
        emit("")
        emit("| target | codec, placement | measured | verdict |")
        emit("|---|---|---:|---|")
        for name, where, value, ok in targets:
            emit(f"| {name} | {where} | {value} | {verdict(ok)} |")
        emit("")
        data["targets"] = [
            {"target": t, "where": w, "value": v, "pass": ok} for t, w, v, ok in targets
        ]
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
