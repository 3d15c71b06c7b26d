"""Shared plumbing of the PostgreSQL store backends (``PLANGATE_DATABASE_URL``).

The stores themselves live next to their SQLite twins (``app.server.inbox_pg``,
``app.execute.state_pg``); this package only pools connections, creates schemas once and retries
transactions PostgreSQL aborted to break a deadlock. Nothing in the pure core imports it.
"""
