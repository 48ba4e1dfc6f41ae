"""What the runtime reports as it runs: structured logs, OpenTelemetry tracing, handler durations,
producers' sent counts, and the small HTTP server the endpoints and ``--processes`` share.

Below the supervision tree and the declarations, which call into it; the endpoints that read a
running worker are ``_endpoints``. ``opentelemetry`` (the ``otel`` extra) is imported only when
tracing is on.
"""
