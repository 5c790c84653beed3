"""The tracer of the process's spans (a turn, its model calls), through the OpenTelemetry
API only: a no-op tracer until the server sets one up (see `convergio_server.tracing`), so
that spans cost next to nothing when tracing is off."""

from __future__ import annotations

import contextvars

from opentelemetry import context as otel_context
from opentelemetry import trace

_tracer: trace.Tracer = trace.NoOpTracer()
_enabled = False


def tracer() -> trace.Tracer:
    return _tracer


def enabled() -> bool:
    """Whether spans go anywhere (the hot paths skip making them when not)."""
    return _enabled


def use_tracer(new: trace.Tracer | None) -> None:
    """Spans from now on go to `new` (None: nowhere)."""
    global _tracer, _enabled
    _tracer = new if new is not None else trace.NoOpTracer()
    _enabled = new is not None


def context_with(span: trace.Span) -> contextvars.Context:
    """A copy of the current context in which `span` is the current span: a task started in
    it (and the tasks it starts) makes its spans children of `span`."""
    ctx = contextvars.copy_context()
    ctx.run(otel_context.attach, trace.set_span_in_context(span))
    return ctx
