"""Fixtures for tests/server (helpers live in ``srvkit``)."""

from srvkit import fake, private_key, settings

__all__ = ["fake", "private_key", "settings"]
