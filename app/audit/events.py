"""Audit events and their hash chain (pure core: no clock, no git, no I/O).

Why this exists: every plan, decision, approval and step leaves one ``AuditEvent``. Events form
a single hash chain: each event stores ``seq`` (1, 2, 3, ... with no gaps) and ``prev_hash``
(the ``hash`` of the event before it; ``GENESIS_HASH`` for the first), and ``hash`` is
``sha256:`` over the RFC 8785 canonical JSON of the event *without* its ``hash`` field. Editing,
deleting, inserting or reordering any event therefore breaks the chain at that event, and
``verify_records`` names the first break.

Callers build an ``AuditEventDraft`` (what happened, when, who, for which run) and hand a batch
to an ``AuditStore`` (``app.audit.store``); the store assigns ``seq``/``prev_hash``/``hash`` with
``chain()``. The timestamp is always passed in by the caller: this module never reads the clock.

Must not: import git or any adapter, read the environment, or reorder events.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

import rfc8785
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from app.plan.digest import canonical_json, sha256_hex

__all__ = [
    "EVENT_TYPES",
    "GENESIS_HASH",
    "Actor",
    "AuditEvent",
    "AuditEventDraft",
    "ChainBreak",
    "ChainHead",
    "EventType",
    "VerifyResult",
    "canonical_bytes",
    "chain",
    "chain_lines",
    "chain_records",
    "event_hash",
    "verify_records",
]

EventType = Literal[
    "plan.proposed",
    "plan.validated",
    "policy.decided",
    "cost.estimated",
    "approval.recorded",
    "approval.attested",
    "run.started",
    "step.started",
    "step.succeeded",
    "step.failed",
    "step.retried",
    "breaker.opened",
    "breaker.closed",
    "canary.passed",
    "canary.aborted",
    "compensation.started",
    "compensation.succeeded",
    "compensation.failed",
    "budget.exceeded",
    "run.finished",
    "incident.opened",
    # the signed run attestation (what ran) and where it is stored
    "run.attested",
    # a retry/cancel request (queue ownership), allowed or denied, with the policy rule
    "queue.requested",
]
#: every lifecycle event type, in lifecycle order (for CLI choices and docs)
EVENT_TYPES: tuple[str, ...] = get_args(EventType)

#: ``prev_hash`` of the first event in a chain
GENESIS_HASH = "sha256:" + "0" * 64

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+\[\]-]{0,199}$")


def _utc(value: datetime) -> datetime:
    # A naive timestamp is ambiguous in an audit trail: refuse it instead of guessing a zone.
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must be timezone-aware (UTC); pass e.g. datetime.now(UTC)")
    return value.astimezone(UTC)


def _digest(value: str) -> str:
    if not _DIGEST_RE.match(value):
        raise ValueError("must look like 'sha256:<64 lowercase hex>'")
    return value


def _token(value: str) -> str:
    if not _TOKEN_RE.match(value):
        raise ValueError(
            "must be 1-200 characters of letters, digits and ._:@/+[]- (no spaces or controls)"
        )
    return value


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]
Digest = Annotated[str, AfterValidator(_digest)]
Token = Annotated[str, AfterValidator(_token)]


class Actor(BaseModel):
    """Who caused the event: a GitHub user, the GitHub App, a workflow identity, or Plangate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["user", "app", "workflow", "system"]
    #: GitHub login, App slug, workflow identity (OIDC ``job_workflow_ref``) or component name
    id: Annotated[str, Field(min_length=1, max_length=300)]

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}"


class AuditEventDraft(BaseModel):
    """One thing that happened, before the store places it in the chain."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: EventType
    timestamp: UtcDatetime
    actor: Actor
    #: one per plan run; also on log lines, check runs and action HTTP headers
    correlation_id: Token
    plan_id: Token | None = None
    plan_digest: Digest | None = None
    #: digest of the inputs this event acted on (step inputs, policy, review set, ...)
    inputs_digest: Digest | None = None
    step: Token | None = None
    team: Token | None = None
    environment: Token | None = None
    payload: dict[str, JsonValue] = Field(default_factory=dict)

    @field_validator("payload")
    @classmethod
    def _canonicalisable(
        cls, value: dict[str, JsonValue], info: ValidationInfo
    ) -> dict[str, JsonValue]:
        # Fail at the producer, not at commit or verify time: NaN, Infinity and integers
        # beyond 2**53 have no RFC 8785 form. (``verify_records`` has just hashed the whole
        # event, payload included, and says so in the context: no need to do it twice.)
        if info.context and info.context.get("canonical_checked"):
            return value
        try:
            canonical_bytes(value)
        except (ValueError, TypeError, UnicodeError, rfc8785.CanonicalizationError) as exc:
            raise ValueError(f"payload has no canonical JSON form: {exc}") from exc
        return value


_DRAFT_FIELDS = tuple(AuditEventDraft.model_fields)


class AuditEvent(AuditEventDraft):
    """An event placed in the chain. Built only by ``chain()`` (or parsed from storage)."""

    seq: Annotated[int, Field(ge=1)]
    prev_hash: Digest
    hash: Digest

    def to_json_line(self) -> str:
        """The stored form: RFC 8785 canonical JSON of the event, no trailing newline."""
        return canonical_bytes(self.model_dump(mode="json", exclude_none=True)).decode("utf-8")


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last event of a chain (``seq`` 0 and ``GENESIS_HASH`` for an empty chain)."""

    seq: int = 0
    hash: str = GENESIS_HASH


_MAX_SAFE_INT = 2**53 - 1


def _plain(value: Any) -> bool:
    """Whether sorted-key ``json.dumps`` of ``value`` is byte-identical to RFC 8785.

    True for JSON made of strings, booleans, null, integers within +-(2**53 - 1), lists, and
    objects whose keys have no character above U+FFFF (then code point order, which Python
    sorts by, equals the UTF-16 code unit order RFC 8785 sorts by). String escaping is the same
    in both: short escapes for backspace, tab, newline, form feed, carriage return, quote and
    backslash, other control characters as lowercase ``u00xx`` escapes, everything else raw
    UTF-8. Floats are not plain (ES6 number formatting differs from Python's ``repr``).
    """
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not (key.isascii() or max(key) <= "\uffff"):
                return False
            if not _plain(item):
                return False
        return True
    if kind is list:
        return all(_plain(item) for item in value)
    return False


def canonical_bytes(value: Any) -> bytes:
    """RFC 8785 bytes of a JSON value: ``app.plan.digest.canonical_json``, with a fast path.

    Verification re-hashes every event of the history, and the pure-Python RFC 8785 encoder
    is most of that cost; for plain values (see ``_plain``) the C ``json`` encoder produces
    the same bytes, which a property test checks against ``rfc8785`` itself.
    """
    if _plain(value):
        text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: let rfc8785 decide (it rejects them)
            pass
    return canonical_json(value)


def event_hash(body: dict[str, Any]) -> str:
    """``sha256:`` of the canonical JSON of an event's stored fields, ``hash`` excluded."""
    if "hash" in body:
        body = {k: v for k, v in body.items() if k != "hash"}
    return "sha256:" + sha256_hex(canonical_bytes(body))


def _line_hash(line: str, stored: Any) -> str | None:
    """``stored`` if the line proves it cheaply, else None (then the caller re-canonicalises).

    Stored lines are RFC 8785 canonical JSON of the whole event, so the line with its one
    ``,"hash":"…"`` member cut out is byte for byte the canonical JSON that was hashed. If
    hashing those bytes gives ``stored``, the content is exactly what was hashed (SHA-256
    collision resistance); nothing else needs recomputing. Only used when ``"hash":`` occurs
    once, so the member cut out is the top-level one the parser read ``stored`` from.
    """
    if not isinstance(stored, str) or line.count('"hash":') != 1:
        return None
    member = f',"hash":"{stored}"'
    if member not in line:
        return None
    body = line.replace(member, "", 1).encode("utf-8")
    digest = "sha256:" + sha256_hex(body)
    return stored if digest == stored else None


def chain(drafts: Sequence[AuditEventDraft], head: ChainHead) -> list[AuditEvent]:
    """Place ``drafts`` after ``head``, in order: assign ``seq``, ``prev_hash`` and ``hash``."""
    return [event for event, _, _ in chain_records(drafts, head)]


def chain_lines(drafts: Sequence[AuditEventDraft], head: ChainHead) -> list[tuple[AuditEvent, str]]:
    """Like ``chain`` but also returns each event's stored (canonical) line."""
    return [(event, line) for event, line, _ in chain_records(drafts, head)]


_PLACEHOLDER_MEMBER = ',"hash":"sha256:' + "f" * 64 + '"'


def _hash_and_line(body: dict[str, Any]) -> tuple[str, str]:
    """``(hash, canonical line)`` of an event body without ``hash``, serialising once.

    The body is encoded once with a placeholder hash; the canonical bytes that get hashed are
    that text without the placeholder member (``actor`` always sorts before ``hash``, so the
    member is preceded by a comma), and the line is the same text with the real hash.
    """
    if _plain(body):
        text = json.dumps(
            {**body, "hash": _PLACEHOLDER_MEMBER[9:-1]},
            ensure_ascii=False,
            sort_keys=True,
            separators=(",", ":"),
        )
        if text.count('"hash":') == 1 and _PLACEHOLDER_MEMBER in text:
            try:
                hashed = text.replace(_PLACEHOLDER_MEMBER, "", 1).encode("utf-8")
            except UnicodeEncodeError:
                pass
            else:
                digest = "sha256:" + sha256_hex(hashed)
                return digest, text.replace(_PLACEHOLDER_MEMBER, f',"hash":"{digest}"', 1)
    digest = event_hash(body)
    return digest, canonical_bytes({**body, "hash": digest}).decode("utf-8")


def chain_records(
    drafts: Sequence[AuditEventDraft], head: ChainHead
) -> list[tuple[AuditEvent, str, dict[str, Any]]]:
    """``(event, stored line, stored record)`` per draft; what stores use to append."""
    out: list[tuple[AuditEvent, str, dict[str, Any]]] = []
    seq, prev = head.seq, head.hash
    for draft in drafts:
        seq += 1
        body = draft.model_dump(mode="json", exclude_none=True)
        body["seq"] = seq
        body["prev_hash"] = prev
        digest, line = _hash_and_line(body)
        body["hash"] = digest
        # The draft was validated when it was built and seq/prev_hash/hash are ours, so the
        # event is assembled without validating it a second time.
        values = {name: getattr(draft, name) for name in _DRAFT_FIELDS}
        event = AuditEvent.model_construct(
            _fields_set=draft.model_fields_set | {"seq", "prev_hash", "hash"},
            **values,
            seq=seq,
            prev_hash=prev,
            hash=digest,
        )
        out.append((event, line, body))
        prev = digest
    return out


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first place a chain does not verify. ``where`` is e.g. ``events/2026-11/x.jsonl:3``."""

    seq: int | None
    where: str
    reason: str

    def render(self) -> str:
        at = f"event seq {self.seq}" if self.seq is not None else "an event"
        return f"{at} at {self.where}: {self.reason}"


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of a verification: how many events verified and the first break (if any)."""

    count: int
    head: ChainHead
    first_break: ChainBreak | None = None

    @property
    def ok(self) -> bool:
        return self.first_break is None


def verify_records(
    records: Iterable[tuple[str, dict[str, Any] | str]],
    *,
    start: ChainHead | None = None,
) -> VerifyResult:
    """Recompute the chain over stored records ``(where, raw)`` in storage order.

    ``raw`` is the parsed JSON object (or the raw line, which is parsed here). Each record must
    be a valid ``AuditEvent`` whose ``seq`` follows the previous one, whose ``prev_hash`` is the
    previous ``hash``, and whose ``hash`` recomputes from its own content. Stops at the first
    failure: everything after a break is untrusted anyway.
    """
    head = start or ChainHead()
    count = 0
    for where, raw in records:
        expected_seq = head.seq + 1
        line = raw if isinstance(raw, str) else None
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError as exc:
                return VerifyResult(
                    count, head, ChainBreak(expected_seq, where, f"not valid JSON ({exc.msg})")
                )
        if not isinstance(raw, dict):
            return VerifyResult(count, head, ChainBreak(expected_seq, where, "not a JSON object"))
        seq = raw.get("seq")
        seq_int = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
        if seq_int != expected_seq:
            reason = (
                f"expected seq {expected_seq} after {head.seq}, found {seq!r} "
                "(an event was deleted, inserted or reordered)"
            )
            return VerifyResult(count, head, ChainBreak(seq_int, where, reason))
        if raw.get("prev_hash") != head.hash:
            return VerifyResult(
                count,
                head,
                ChainBreak(
                    seq_int,
                    where,
                    f"prev_hash {raw.get('prev_hash')!r} does not match the hash of event "
                    f"{head.seq} ({head.hash})",
                ),
            )
        stored = raw.get("hash")
        try:
            actual = _line_hash(line, stored) if line is not None else None
            if actual is None:
                actual = event_hash(raw)
        except (ValueError, TypeError, UnicodeError, rfc8785.CanonicalizationError) as exc:
            return VerifyResult(
                count, head, ChainBreak(seq_int, where, f"cannot be canonicalised: {exc}")
            )
        if stored != actual:
            return VerifyResult(
                count,
                head,
                ChainBreak(
                    seq_int,
                    where,
                    f"content does not match its hash (stored {stored}, computed {actual}): "
                    "the event was edited",
                ),
            )
        try:
            AuditEvent.model_validate(raw, context={"canonical_checked": True})
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "(event)"
            return VerifyResult(
                count, head, ChainBreak(seq_int, where, f"invalid event: {field}: {first['msg']}")
            )
        head = ChainHead(seq_int, actual)
        count += 1
    return VerifyResult(count, head)
