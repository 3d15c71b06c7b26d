"""Structured logs: JSON lines, a correlation id on every line, secrets redacted.

One setup for every entry point (``configure_logging``): the CLI, ``plangate serve`` and the
executor in Actions. Every line is one JSON object::

    {"ts": "2026-11-25T02:00:00.123Z", "level": "INFO", "logger": "app.execute",
     "message": "step migrate succeeded", "correlation_id": "run-1a2b", "step": "migrate"}

Correlation. ``correlation_scope(run_id)`` sets the id for the current context (a
``contextvars.ContextVar``, so it follows asyncio tasks and is isolated between them); every
line logged inside carries it, audit events use the same id, and actions send it to other
systems in the ``X-Plangate-Correlation-Id`` header (``CORRELATION_HEADER``).

Redaction. ``RedactingFilter`` removes secrets before anything is written: values registered
with ``add_secret`` (the webhook secret, installation tokens as they are minted, step secrets),
and whatever *looks* like one (GitHub tokens, JWTs, PEM private keys, ``Authorization``
headers, credentials in URLs, AWS access keys, ``…token=…``/``…secret: …``/``password=…``
pairs), in the message, in ``extra=`` fields (by key name too) and in tracebacks. The final
JSON line is scanned again, so a secret cannot slip through an unusual field.

Must not: read the environment (callers pass the level and secrets) or log anything itself.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = [
    "CORRELATION_HEADER",
    "REDACTED",
    "JsonFormatter",
    "RedactingFilter",
    "configure_logging",
    "correlation_headers",
    "correlation_scope",
    "get_correlation_id",
]

CORRELATION_HEADER = "X-Plangate-Correlation-Id"
REDACTED = "[REDACTED]"

_correlation_id: ContextVar[str | None] = ContextVar("plangate_correlation_id", default=None)

#: attributes every LogRecord has; anything else came from ``extra=``
_STANDARD = frozenset(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "correlation_id",
}

_SENSITIVE_NAME = (
    r"(?:[A-Za-z0-9_.-]*?(?:token|secret|password|passwd|pwd|api[_-]?key|apikey|"
    r"private[_-]?key|client[_-]?secret|credentials?|cookie|session[_-]?id))"
)
_SENSITIVE_KEY = re.compile(rf"^{_SENSITIVE_NAME}$", re.IGNORECASE)
#: (pattern, replacement); order matters: whole blocks first, then pairs, then bare tokens
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?-----END [A-Z0-9 ]*PRIVATE KEY-----",
            re.DOTALL,
        ),
        REDACTED,
    ),
    (
        re.compile(
            r"(?i)\b(authorization|proxy-authorization)(\"?\s*[:=]\s*\"?)"
            r"(bearer|token|basic)\s+[^\s\"',;]+"
        ),
        rf"\1\2\3 {REDACTED}",
    ),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {REDACTED}"),
    (
        re.compile(rf"(?i)\b({_SENSITIVE_NAME})(\\?\"?\s*[:=]\s*\\?\"?)([^\s\"',;&}}\\]+)"),
        rf"\1\2{REDACTED}",
    ),
    (re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{20,255})\b"), REDACTED),
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,255}\b"), REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}"), REDACTED),
    (re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"), REDACTED),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@"), rf"\1{REDACTED}@"),
)
#: registered literal secrets shorter than this are not redacted (too many false hits)
_MIN_SECRET = 6


def get_correlation_id() -> str | None:
    """The correlation id of the current context (None outside a run)."""
    return _correlation_id.get()


def correlation_headers() -> dict[str, str]:
    """``{"X-Plangate-Correlation-Id": id}`` for outgoing requests (empty outside a run)."""
    cid = get_correlation_id()
    return {CORRELATION_HEADER: cid} if cid else {}


@contextmanager
def correlation_scope(correlation_id: str) -> Iterator[str]:
    """Set the correlation id for everything logged inside (restored on exit)."""
    token = _correlation_id.set(correlation_id)
    try:
        yield correlation_id
    finally:
        _correlation_id.reset(token)


class RedactingFilter(logging.Filter):
    """Redacts secrets in the message, ``extra=`` fields and exception text of a record."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        for secret in secrets:
            self.add_secret(secret)

    def add_secret(self, value: str | None) -> None:
        """Never log this exact value (e.g. a token just minted). Short values are ignored."""
        if value and len(value) >= _MIN_SECRET:
            self._secrets.add(value)

    def redact(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, REDACTED)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def redact_value(self, key: str, value: Any) -> Any:
        if _SENSITIVE_KEY.match(key) and value not in (None, "", 0):
            return REDACTED
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {k: self.redact_value(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact_value(key, v) for v in value]
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD:
                setattr(record, key, self.redact_value(key, value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        record.exc_info = None  # the redacted text replaces the live traceback
        return True


class _CorrelationFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "correlation_id", None) is None:
            record.correlation_id = get_correlation_id()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``extra=`` fields become top-level keys."""

    def __init__(self, redactor: RedactingFilter | None = None) -> None:
        super().__init__()
        self._redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, UTC)
        data: dict[str, Any] = {
            "ts": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "correlation_id": getattr(record, "correlation_id", None) or get_correlation_id(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in data:
                data[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            data["exception"] = record.exc_text
        line = json.dumps(data, ensure_ascii=False, default=str, separators=(",", ":"))
        return self._redactor.redact(line) if self._redactor else line


_HANDLER_NAME = "plangate-json"


def configure_logging(
    *,
    level: int | str = "INFO",
    stream: TextIO | None = None,
    secrets: Iterable[str] = (),
) -> RedactingFilter:
    """Install the JSON handler on the root logger (idempotent); returns the redactor.

    Call once per process at the edge (CLI, server, executor). Keep the returned filter to
    ``add_secret`` values that appear later (installation tokens, step secrets).
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    redactor = RedactingFilter(secrets)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(_CorrelationFilter())
    handler.addFilter(redactor)
    handler.setFormatter(JsonFormatter(redactor))
    root.addHandler(handler)
    root.setLevel(level)
    return redactor
