"""Observability at the edges: Prometheus metrics (``metrics``) and JSON logs (``logs``)."""
