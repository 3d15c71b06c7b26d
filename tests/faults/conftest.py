"""Fixtures for the fault-injection suite: the fake GitHub from tests/github behind ``faultnet``."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parent.parent
for _sub in ("github", "server"):
    if str(_TESTS / _sub) not in sys.path:
        sys.path.insert(0, str(_TESTS / _sub))

from srvkit import private_key  # noqa: E402

__all__ = ["private_key"]
