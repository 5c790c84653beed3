"""OpenTelemetry traces: a span per RPC (continuing the caller's trace from its
`traceparent` metadata), per turn, per model call and per tool call, exported over
OTLP/HTTP to CONVERGIO_TRACES_ENDPOINT, or written to stderr with `console`."""

from __future__ import annotations

import logging
import os
import socket
import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from convergio_server import __version__
from convergio_server.domain import tracing

log = logging.getLogger(__name__)

CONSOLE = "console"


def _exporter(endpoint: str, timeout: float) -> SpanExporter:
    if endpoint == CONSOLE:
        return ConsoleSpanExporter(out=sys.stderr)  # stdout is the banner's
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint, timeout=timeout)


def start_tracing(
    endpoint: str, sample_ratio: float, timeout: float = 10.0
) -> TracerProvider | None:
    """Export this process's spans to `endpoint` (an OTLP/HTTP traces URL, or `console`);
    None when it is empty. Root spans are sampled at `sample_ratio`; a call that comes with a
    sampled trace is traced."""
    if not endpoint:
        return None
    resource = Resource.create(
        {
            "service.name": "convergio",
            "service.version": __version__,
            "service.instance.id": f"{socket.gethostname()}:{os.getpid()}",
        }
    )
    provider = TracerProvider(
        resource=resource, sampler=ParentBased(TraceIdRatioBased(sample_ratio))
    )
    # Batched in a thread of its own: the event loop never waits for the collector.
    provider.add_span_processor(BatchSpanProcessor(_exporter(endpoint, timeout)))
    tracing.use_tracer(provider.get_tracer("convergio", __version__))
    log.info("tracing", extra={"endpoint": endpoint, "sample_ratio": sample_ratio})
    return provider


def stop_tracing(provider: TracerProvider | None) -> None:
    """Send the spans still waiting, then stop."""
    if provider is None:
        return
    tracing.use_tracer(None)
    provider.shutdown()
