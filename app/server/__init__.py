"""The GitHub App's webhook server: verify, persist, acknowledge, then process in the background.

- ``app.py``: ``create_app(settings, deps)`` and ``Deps.from_settings`` (the wiring);
- ``webhooks.py``: the sans-I/O part (HMAC check, ``Event`` value, ``(event, action)`` router);
- ``ingest.py``: group commit of concurrent deliveries (one transaction per loop iteration);
- ``inbox.py``: the durable delivery log (SQLite WAL, dedupe, per-PR order, coalescing);
- ``worker.py``: drains the inbox with retries, dead letters and resume after a crash;
- ``handlers.py``: thin per-``(event, action)`` handlers;
- ``evaluate.py``: the pipeline (plans at head, policy at base, four check runs) and the
  ``Evaluator`` port; ``engine.py``: the evaluator backed by the policy engine and approval gate;
- ``recovery.py``: redelivery of missed webhooks through the App's deliveries API.
"""
