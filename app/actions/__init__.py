"""Actions: what a plan step can do. The registry is pure data; execution is the executor's."""

from app.actions.registry import ActionRegistry, ActionSpec, default_registry

__all__ = ["ActionRegistry", "ActionSpec", "default_registry"]
