"""OpenTelemetry: each command is one trace, sent to a real OTLP/HTTP receiver on
127.0.0.1 by a real ``conduit`` process; the receiver decodes the protobuf body."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from _factory import simple_plugin, write

pytest.importorskip("opentelemetry.sdk")
trace_service = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """An OTLP/HTTP endpoint on 127.0.0.1 that records every request (path, body)."""
    received: list[tuple[str, bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, body))
            answer = trace_service.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def conduit(endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
    env.pop("OTEL_SDK_DISABLED", None)
    return subprocess.run(
        [sys.executable, "-m", "conduit", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def spans_of(received: list[tuple[str, bytes]]) -> list[object]:
    spans = []
    for path, body in received:
        assert path == "/v1/traces"
        request = trace_service.ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            assert attrs["service.name"] == "conduit"
            for scope in resource_spans.scope_spans:
                spans.extend(scope.spans)
    return spans


def test_a_command_is_one_trace_with_kernel_phases_and_plugin_spans(
    plugin_dir: Path, receiver: tuple[str, list[tuple[str, bytes]]]
) -> None:
    endpoint, received = receiver
    write(plugin_dir, "greeter.py", simple_plugin("greeter", ("greet",)))
    assert conduit(endpoint, "--help").returncode == 0
    assert received == []  # --help is not a command run: nothing is exported
    result = conduit(endpoint, "greet", "--secret-argument")
    assert result.returncode == 2  # Click's usage error for the unknown option
    received.clear()
    result = conduit(endpoint, "greet")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "greeter greet\n"
    assert result.stderr == ""
    spans = spans_of(received)
    by_name = {s.name: s for s in spans}
    root = by_name["conduit greet"]
    assert root.parent_span_id == b""
    assert {s.trace_id for s in spans} == {root.trace_id}
    assert {
        "index:fingerprint",
        "index:read",
        "route",
        "import:greeter",
        "boot:greeter",
        "run:greeter",
    } <= set(by_name)
    ids = {s.span_id for s in spans}
    for span in spans:
        if span is not root:
            assert span.parent_span_id in ids, span.name
            assert root.start_time_unix_nano <= span.start_time_unix_nano
            assert span.end_time_unix_nano <= root.end_time_unix_nano
    attrs = {a.key: a.value for a in by_name["boot:greeter"].attributes}
    assert attrs["conduit.plugin"].string_value == "greeter"
    root_attrs = {a.key: a.value for a in root.attributes}
    assert root_attrs["conduit.command"].string_value == "greet"
    assert root_attrs["conduit.exit_code"].int_value == 0


def test_a_failed_command_marks_the_trace_and_never_records_arguments(
    plugin_dir: Path, receiver: tuple[str, list[tuple[str, bytes]]]
) -> None:
    endpoint, received = receiver
    write(
        plugin_dir,
        "crash.py",
        simple_plugin("crash", ("crash",), boot_prefix="        raise OSError('no disk')\n"),
    )
    result = conduit(endpoint, "crash", "token-value-in-args")
    assert result.returncode == 3
    spans = spans_of(received)
    root = next(s for s in spans if s.name == "conduit crash")
    assert root.status.code == 2  # STATUS_CODE_ERROR
    assert root.status.message == "exit code 3"
    assert b"token-value-in-args" not in b"".join(body for _, body in received)


def test_an_endpoint_that_is_down_does_not_fail_the_command(
    plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(plugin_dir, "greeter.py", simple_plugin("greeter", ("greet",)))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    result = conduit("http://127.0.0.1:9", "greet")
    assert result.returncode == 0
    assert result.stdout == "greeter greet\n"
    assert "Traceback" not in result.stderr
