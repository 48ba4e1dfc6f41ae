"""A worker's ops endpoints: ``/metrics`` (Prometheus), ``/healthz`` and ``/readyz``.

Above the supervision tree: they read a running ``Worker``. ``prometheus_client`` (the
``metrics`` extra) is imported only when ``/metrics`` is served.
"""
