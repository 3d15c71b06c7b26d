"""The GitHub App's webhook server: verify, persist, acknowledge, then process in the background.

``app.py`` wires the FastAPI application; ``webhooks.py`` is the sans-I/O part (signature check,
``Event`` value, router); ``inbox.py`` is the durable delivery log; ``worker.py`` drains it with
retries; ``handlers.py`` turns events into check runs through the ``app.github`` adapter.
"""
