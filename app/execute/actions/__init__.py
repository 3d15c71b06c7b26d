"""Action implementations used by the executor (the registry in app.actions says what exists)."""
