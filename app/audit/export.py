"""Export audit events for other systems: JSON Lines (exact stored form) and CSV (flattened).

JSON Lines output is byte-for-byte the stored line of each event, so an export can be
re-verified elsewhere (``verify_records`` over the lines) and shipped to a SIEM as is.
CSV flattens the actor and keeps the payload as a JSON string in one column.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from typing import TextIO

from app.audit.events import AuditEvent

__all__ = ["CSV_COLUMNS", "write_csv", "write_jsonl"]

CSV_COLUMNS = (
    "seq",
    "timestamp",
    "type",
    "actor_kind",
    "actor_id",
    "correlation_id",
    "plan_id",
    "plan_digest",
    "inputs_digest",
    "step",
    "team",
    "environment",
    "payload",
    "prev_hash",
    "hash",
)


def write_jsonl(events: Iterable[AuditEvent], out: TextIO) -> int:
    count = 0
    for event in events:
        out.write(event.to_json_line())
        out.write("\n")
        count += 1
    return count


def write_csv(events: Iterable[AuditEvent], out: TextIO) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    count = 0
    for e in events:
        writer.writerow(
            [
                e.seq,
                e.timestamp.isoformat().replace("+00:00", "Z"),
                e.type,
                e.actor.kind,
                e.actor.id,
                e.correlation_id,
                e.plan_id or "",
                e.plan_digest or "",
                e.inputs_digest or "",
                e.step or "",
                e.team or "",
                e.environment or "",
                json.dumps(e.payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True),
                e.prev_hash,
                e.hash,
            ]
        )
        count += 1
    return count
