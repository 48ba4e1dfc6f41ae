"""OpenTelemetry tracing (the ``otel`` extra); a no-op without it.

Producers put the W3C trace context (``traceparent``, and ``tracestate`` when set) into the
entry as extra fields after the record's ``f``/``d`` pair; record decoding ignores fields it
does not know, so older workers still read these entries. The worker runs each handler call
in a CONSUMER span that continues that context, with the messaging semantic-convention
attributes. Dict streams (the entry's fields are the event) are not written to: a
``traceparent`` field there is yours, though the worker still continues it.

Active only when ``opentelemetry`` is importable and a real tracer provider is configured
(the API's default provider makes no spans): the check is one cached global read, and
``opentelemetry`` is imported on the first send or handler call, never at import time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

MESSAGING_SYSTEM: Final = "redis"
TRACE_FIELDS: Final = (b"traceparent", b"tracestate")
_SCOPE: Final = "actorstream"

_UNKNOWN: Any = object()
_otel: Any = _UNKNOWN  # the opentelemetry.trace module, None when not installed
_provider_override: Any = None
_cached: tuple[Any, Any] = (None, None)  # (provider, its tracer)


def _load() -> Any:
    global _otel
    if _otel is _UNKNOWN:
        try:
            from opentelemetry import trace
        except ImportError:
            _otel = None
        else:
            _otel = trace
    return _otel


def use_tracer_provider(provider: Any) -> None:
    """Trace with ``provider`` instead of the global one (tests, embedders); None resets."""
    global _provider_override
    _provider_override = provider


def tracer() -> Any:
    """The tracer to use, or None when tracing is off (no package, or no provider set)."""
    trace = _otel if _otel is not _UNKNOWN else _load()
    if trace is None:
        return None
    provider = _provider_override or trace.get_tracer_provider()
    global _cached
    if _cached[0] is provider:
        return _cached[1]
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    _cached = (provider, provider.get_tracer(_SCOPE))
    return _cached[1]


def active() -> bool:
    return tracer() is not None


@contextmanager
def send_span(app: str, stream: str, count: int) -> Iterator[list[bytes]]:
    """Around a send: yields the fields to append to each entry (``[]`` when tracing is off).

    With a recording span current (a request being served), its context is propagated and
    a PRODUCER span ``send <stream>`` is its child; without one, that span starts a trace.
    """
    t = tracer()
    if t is None:
        yield []
        return
    from opentelemetry import propagate

    trace = _otel
    attributes: dict[str, Any] = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.destination.name": stream,
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "actorstream.app": app,
    }
    if count != 1:
        attributes["messaging.batch.message_count"] = count
    with t.start_as_current_span(
        f"send {stream}", kind=trace.SpanKind.PRODUCER, attributes=attributes
    ):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        fields: list[bytes] = []
        for name in ("traceparent", "tracestate"):
            if name in carrier:
                fields += [name.encode(), carrier[name].encode()]
        yield fields


def carrier_of(fields: Sequence[bytes]) -> dict[str, str]:
    """The trace context fields of an entry's flat field list (any position)."""
    out: dict[str, str] = {}
    for i in range(0, len(fields) - 1, 2):
        name = fields[i]
        if name in TRACE_FIELDS:
            out[bytes(name).decode()] = bytes(fields[i + 1]).decode("latin-1")
    return out


@contextmanager
def consumer_span(
    t: Any,
    *,
    app: str,
    stream: str,
    actor: str,
    partition: int,
    entry_id: str,
    fields: Sequence[bytes],
) -> Iterator[Any]:
    """A CONSUMER span ``process <stream>`` around one handler call, continuing the producer's
    trace when the entry carries one; records the exception and ``error.type`` on failure."""
    from opentelemetry import propagate

    trace = _otel
    parent = propagate.extract(carrier_of(fields))
    attributes = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.destination.name": stream,
        "messaging.consumer.group.name": actor,
        "messaging.destination.partition.id": str(partition),
        "messaging.message.id": entry_id,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "actorstream.app": app,
    }
    with t.start_as_current_span(
        f"process {stream}",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except Exception as exc:
            span.set_attribute("error.type", type(exc).__qualname__)
            span.record_exception(exc)
            span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
