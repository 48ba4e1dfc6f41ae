"""Operations: structured logs, Prometheus metrics, health endpoints, OpenTelemetry tracing.

Nothing here is imported on the default path of a worker: ``prometheus_client`` and
``opentelemetry`` (the ``metrics`` and ``otel`` extras) are imported only when asked for.
"""
