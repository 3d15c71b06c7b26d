"""Security tests reuse the server's helpers (``tests/server/srvkit.py``) and the fakes of
the approval gate: no new infrastructure, the same fake GitHub the server tests use."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
for sub in ("server", "github", "approvals"):
    if str(TESTS / sub) not in sys.path:
        sys.path.insert(0, str(TESTS / sub))

from srvkit import fake, private_key, settings  # noqa: E402

__all__ = ["fake", "private_key", "settings"]
