"""Errors of the audit trail (part of the ``app.errors.PlangateError`` tree).

A *broken chain* is not an error: ``verify()`` returns a ``VerifyResult`` naming the first break,
and ``plangate audit verify`` exits 1. ``AuditError`` is for storage that cannot be read or
written (not a git repository, a ref moved under us, a lock that cannot be taken).
"""

from __future__ import annotations

from app.errors import PlangateError

__all__ = ["AuditError"]


class AuditError(PlangateError):
    """The audit store cannot be read or written."""

    default_hint = (
        "check the repository path and permissions; acknowledged events stay in the "
        "write-ahead journal and are committed on the next successful commit"
    )
