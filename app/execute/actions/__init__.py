"""Action implementations used by the executor (the registry in app.actions says what exists).

The port is ``app.execute.actions.base`` (no I/O imports, safe for the core). The adapters
(httpx, subprocesses) load lazily: ``from app.execute.actions import builtin_implementations``
imports them only when asked, so importing ``base`` never pulls httpx into the core.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Implementations", "builtin_implementations", "implementations", "settings_deps"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from app.execute.actions import wiring

        return getattr(wiring, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
