"""The audit trail: hash-chained lifecycle events stored in git, indexed in SQLite.

``events`` (model and chain) and ``query`` and ``store`` (port + in-memory store) are pure core;
``git_store`` (GitPython), ``index`` (SQLite) and ``export`` are adapters. See docs/audit.md.
"""
