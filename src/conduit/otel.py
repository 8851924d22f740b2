"""A command's trace, exported to OpenTelemetry (the optional extra ``conduit-devtool[otel]``).

When ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set,
the CLI hands each command that reached the kernel to :func:`export` after it finished:
the spans the start-up trace (:mod:`conduit.timing`) recorded anyway become one trace,
the root ``conduit WORD`` with the kernel's phases (index, route, activation events,
hooks) and each plugin's ``import:``/``boot:``/``run:`` (and a process host's
``host:spawn:``) as children, nested by time. Sent over OTLP/HTTP by the OpenTelemetry
SDK, which reads the usual ``OTEL_*`` variables (endpoint, headers, timeout,
``OTEL_SERVICE_NAME``). Only the command word is recorded, never its arguments.

Imported only then: ``--help``, completion and a run without the variables never import
it, and it imports OpenTelemetry only inside :func:`export`.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from conduit.timing import Profile

__all__ = ["ENDPOINT_VARIABLES", "export", "wanted"]

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_PLUGIN_SPANS = ("import:", "boot:", "run:", "host:spawn:", "host:initialize:")


def wanted(environ: os._Environ[str] | dict[str, str]) -> bool:
    """Whether the user asked for traces (and did not switch the SDK off)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(environ.get(name) for name in ENDPOINT_VARIABLES)


def export(profile: Profile, command: str, exit_code: int) -> str | None:
    """Send this run's spans as one trace; a warning's text if that cannot be done."""
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import Status, StatusCode
    except ImportError:
        return (
            "OTEL_EXPORTER_OTLP_ENDPOINT is set, but OpenTelemetry is not installed: "
            "install the extra 'conduit-devtool[otel]' to export traces"
        )
    from conduit import __version__

    spans = sorted(profile.spans, key=lambda s: (s[1], -s[2]))
    if not spans:
        return None
    # perf_counter_ns() has no epoch: shift by the offset between the two clocks now.
    offset = time.time_ns() - time.perf_counter_ns()
    root_start = min(s[1] for s in spans)
    root_end = max(s[2] for s in spans)
    resource = Resource.create({"service.name": "conduit", "service.version": __version__})
    if os.environ.get("OTEL_SERVICE_NAME"):
        resource = Resource.create({"service.version": __version__})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    tracer = provider.get_tracer("conduit", __version__)
    root = tracer.start_span(
        f"conduit {command}",
        start_time=root_start + offset,
        attributes={
            "conduit.command": command,
            "conduit.exit_code": exit_code,
            "conduit.version": __version__,
        },
    )
    if exit_code:
        root.set_status(Status(StatusCode.ERROR, f"exit code {exit_code}"))
    stack: list[tuple[trace.Span, int, int]] = [(root, root_start, root_end)]
    for name, start, end, _depth in spans:
        if name == "kernel":  # the whole run: the root stands for it
            continue
        while len(stack) > 1 and not (stack[-1][1] <= start and end <= stack[-1][2]):
            stack.pop()
        attributes: dict[str, str] = {}
        for prefix in _PLUGIN_SPANS:
            if name.startswith(prefix):
                attributes["conduit.plugin"] = name[len(prefix) :]
        span = tracer.start_span(
            name,
            context=trace.set_span_in_context(stack[-1][0]),
            start_time=start + offset,
            attributes=attributes,
        )
        span.end(end_time=end + offset)
        stack.append((span, start, end))
    root.end(end_time=root_end + offset)
    provider.shutdown()  # sends the batch now (bounded by OTEL_EXPORTER_OTLP_TIMEOUT)
    return None
