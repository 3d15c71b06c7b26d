"""JSON logs: one object per line, correlation id on every line, secrets redacted.

Secrets are *planted* in every place a log line can carry them (message, %-args, extra fields,
nested extra values, exception text) and the test reads the raw output.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest

from app.observability.logs import (
    REDACTED,
    RedactingFilter,
    configure_logging,
    correlation_headers,
    correlation_scope,
    get_correlation_id,
)

GH_TOKEN = "ghs_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
PAT = "github_pat_11ABCDEFG0" + "x" * 40
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiIxMjM0NSJ9.c2lnbmF0dXJlLXZhbHVlLWhlcmU"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA1234\nabcd==\n-----END RSA PRIVATE KEY-----"
WEBHOOK_SECRET = "s3cr3t-webhook-value-42"
AWS = "AKIAIOSFODNN7EXAMPLE"


@pytest.fixture
def log_output():
    stream = io.StringIO()
    redactor = configure_logging(level="DEBUG", stream=stream, secrets=[WEBHOOK_SECRET])
    yield stream, redactor
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == "plangate-json":
            root.removeHandler(handler)


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_line_is_json_with_correlation_id(log_output):
    stream, _ = log_output
    log = logging.getLogger("app.test")
    log.info("outside")
    with correlation_scope("run-42"):
        log.info("step %s done", "migrate", extra={"step": "migrate", "attempt": 2})
    lines = _lines(stream)
    assert lines[0]["correlation_id"] is None
    assert lines[1]["correlation_id"] == "run-42"
    assert lines[1]["message"] == "step migrate done"
    assert lines[1]["step"] == "migrate" and lines[1]["attempt"] == 2
    assert lines[1]["level"] == "INFO" and lines[1]["logger"] == "app.test"
    assert lines[1]["ts"].endswith("Z")
    assert get_correlation_id() is None


def test_correlation_id_is_isolated_between_tasks(log_output):
    stream, _ = log_output
    log = logging.getLogger("app.test")

    async def run(name: str) -> None:
        with correlation_scope(name):
            await asyncio.sleep(0)
            log.info("working", extra={"who": name})

    async def both() -> None:
        await asyncio.gather(run("run-a"), run("run-b"))

    asyncio.run(both())
    assert {(x["who"], x["correlation_id"]) for x in _lines(stream) if "who" in x} == {
        ("run-a", "run-a"),
        ("run-b", "run-b"),
    }


def test_secrets_are_redacted_everywhere(log_output):
    """Planted secrets never reach the output, wherever they were put."""
    stream, redactor = log_output
    log = logging.getLogger("app.test")
    minted = "v1.0123456789abcdef0123456789abcdef01234567"
    redactor.add_secret(minted)
    log.info("token %s and pat %s", GH_TOKEN, PAT)
    log.info("jwt=%s", JWT)
    log.info("key:\n%s", PEM)
    log.info("header Authorization: Bearer %s", minted)
    log.info("configured", extra={"webhook_secret": WEBHOOK_SECRET, "nested": {"token": "abc123"}})
    log.info("posting to https://x-access-token:%s@github.com/o/r.git", GH_TOKEN)
    log.info("aws %s; secret value %s", AWS, WEBHOOK_SECRET)
    log.info('body {"client_secret": "hunter2hunter2", "password": "pw-123456"}')
    try:
        raise RuntimeError(f"failed with token={GH_TOKEN}")
    except RuntimeError:
        log.exception("boom")
    out = stream.getvalue()
    for planted in (GH_TOKEN, PAT, JWT, "MIIEowIBAAKCAQEA1234", WEBHOOK_SECRET, minted, AWS,
                    "hunter2hunter2", "pw-123456", "abc123"):  # fmt: skip
        assert planted not in out, planted
    assert out.count(REDACTED) >= 10
    lines = _lines(stream)
    assert lines[4]["webhook_secret"] == REDACTED
    assert lines[4]["nested"] == {"token": REDACTED}
    assert "Traceback" in lines[-1]["exception"]


def test_redaction_keeps_harmless_text():
    redactor = RedactingFilter()
    text = (
        "plan db-migrate digest sha256:" + "ab" * 32 + " tokens_input=1200 step=migrate "
        "url=https://github.com/o/r"
    )
    assert redactor.redact(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "access_token=abcdef123456",
        "GITHUB_TOKEN: ghp_" + "x" * 36,
        'api_key="k-123456789"',
        "Authorization: token " + "z" * 40,
        "private_key=MIIEvQIBADANBg",
    ],
)
def test_redaction_patterns(text):
    redacted = RedactingFilter().redact(text)
    assert REDACTED in redacted
    assert text.split("=")[-1].split(" ")[-1].strip('"') not in redacted


def test_short_registered_values_are_ignored():
    redactor = RedactingFilter(["abc"])
    assert redactor.redact("abc def") == "abc def"


def test_configure_logging_is_idempotent():
    first, second = io.StringIO(), io.StringIO()
    configure_logging(stream=first)
    configure_logging(stream=second)
    logging.getLogger("app.test").warning("once")
    root = logging.getLogger()
    assert [h.get_name() for h in root.handlers].count("plangate-json") == 1
    assert first.getvalue() == "" and "once" in second.getvalue()
    for handler in list(root.handlers):
        if handler.get_name() == "plangate-json":
            root.removeHandler(handler)


def test_correlation_headers_for_outgoing_requests():
    assert correlation_headers() == {}
    with correlation_scope("run-9"):
        assert correlation_headers() == {"X-Plangate-Correlation-Id": "run-9"}
    assert correlation_headers() == {}
