"""Sample audit events for the dashboard: used by its tests and to take the docs screenshots.

    .venv/bin/python -m app.dashboard.demo --port 8099   # serve the sample on 127.0.0.1

Clearly sample data: plans ``db-migrate`` (succeeded), ``cache-flush`` (failed, compensated),
``canary-rollout`` (canary aborted, breaker open), ``dns-cutover`` (waiting for approval).
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from app.audit.events import Actor, AuditEventDraft
from app.audit.store import InMemoryAuditStore
from app.dashboard.data import DeadLetter

__all__ = ["DEMO_NOW", "StaticDeadLetters", "demo_store"]

DEMO_NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


class StaticDeadLetters:
    """A fixed list of dead letters (the real source is the server's inbox)."""

    def __init__(self, letters: Sequence[DeadLetter]) -> None:
        self._letters = list(letters)

    def dead_lettered(self, limit: int) -> Sequence[DeadLetter]:
        return self._letters[:limit]


def _d(
    type_: str,
    at: datetime,
    run: str,
    plan: str,
    *,
    team: str,
    env: str,
    step: str | None = None,
    actor: Actor | None = None,
    **payload: object,
) -> AuditEventDraft:
    return AuditEventDraft(
        type=type_,  # type: ignore[arg-type]
        timestamp=at,
        actor=actor or Actor(kind="workflow", id="octo/ops/.github/workflows/plangate.yml"),
        correlation_id=run,
        plan_id=plan,
        plan_digest="sha256:" + hashlib.sha256(plan.encode()).hexdigest(),
        step=step,
        team=team,
        environment=env,
        payload=payload,  # type: ignore[arg-type]
    )


def demo_store(now: datetime = DEMO_NOW) -> InMemoryAuditStore:
    store = InMemoryAuditStore()
    drafts: list[AuditEventDraft] = []
    # cost history: a few days of successful runs
    for day in range(10, 0, -1):
        t = now - timedelta(days=day, hours=3)
        for plan, team, env, usd in (
            ("db-migrate", "payments", "prod", "1.20"),
            ("search-reindex", "search", "staging", "0.45"),
            ("cache-flush", "infra", "prod", "0.30"),
        ):
            run = f"hist-{plan}-{day}"
            drafts += [
                _d("run.started", t, run, plan, team=team, env=env),
                _d(
                    "step.succeeded",
                    t + timedelta(seconds=40),
                    run,
                    plan,
                    team=team,
                    env=env,
                    step="main",
                    cost_usd=str(float(usd) * (1 + day % 3) / 2),
                ),
                _d(
                    "run.finished",
                    t + timedelta(seconds=45),
                    run,
                    plan,
                    team=team,
                    env=env,
                    status="succeeded",
                ),
            ]
    t = now - timedelta(hours=2)
    drafts += [
        _d("run.started", t, "run-7f3a", "db-migrate", team="payments", env="prod"),
        _d(
            "step.succeeded",
            t + timedelta(seconds=30),
            "run-7f3a",
            "db-migrate",
            team="payments",
            env="prod",
            step="backup",
            cost_usd="0.40",
        ),
        _d(
            "step.succeeded",
            t + timedelta(seconds=95),
            "run-7f3a",
            "db-migrate",
            team="payments",
            env="prod",
            step="migrate",
            cost_usd="1.10",
        ),
        _d(
            "run.finished",
            t + timedelta(seconds=100),
            "run-7f3a",
            "db-migrate",
            team="payments",
            env="prod",
            status="succeeded",
        ),
    ]
    t = now - timedelta(minutes=50)
    drafts += [
        _d("run.started", t, "run-80c1", "cache-flush", team="infra", env="prod"),
        _d(
            "step.started",
            t + timedelta(seconds=2),
            "run-80c1",
            "cache-flush",
            team="infra",
            env="prod",
            step="flush-eu",
        ),
        _d(
            "step.retried",
            t + timedelta(seconds=20),
            "run-80c1",
            "cache-flush",
            team="infra",
            env="prod",
            step="flush-eu",
            attempt=2,
        ),
        _d(
            "step.failed",
            t + timedelta(seconds=60),
            "run-80c1",
            "cache-flush",
            team="infra",
            env="prod",
            step="flush-eu",
            cost_usd="0.05",
            error="HTTP 503 from cdn.example.net <after 3 attempts>",
        ),
        _d(
            "compensation.started",
            t + timedelta(seconds=61),
            "run-80c1",
            "cache-flush",
            team="infra",
            env="prod",
            step="warm-eu",
        ),
        _d(
            "compensation.succeeded",
            t + timedelta(seconds=70),
            "run-80c1",
            "cache-flush",
            team="infra",
            env="prod",
            step="warm-eu",
        ),
        _d(
            "run.finished",
            t + timedelta(seconds=71),
            "run-80c1",
            "cache-flush",
            team="infra",
            env="prod",
            status="failed",
        ),
    ]
    t = now - timedelta(minutes=20)
    drafts += [
        _d("run.started", t, "run-91d2", "canary-rollout", team="search", env="prod"),
        _d(
            "breaker.opened",
            t + timedelta(seconds=50),
            "run-91d2",
            "canary-rollout",
            team="search",
            env="prod",
            service="search-api",
        ),
        _d(
            "canary.aborted",
            t + timedelta(seconds=90),
            "run-91d2",
            "canary-rollout",
            team="search",
            env="prod",
            metric="error_rate",
            value=0.071,
            threshold=0.02,
        ),
        _d(
            "incident.opened",
            t + timedelta(seconds=91),
            "run-91d2",
            "canary-rollout",
            team="search",
            env="prod",
            issue="octo/ops#311",
        ),
        _d(
            "run.finished",
            t + timedelta(seconds=120),
            "run-91d2",
            "canary-rollout",
            team="search",
            env="prod",
            status="aborted",
        ),
    ]
    t = now - timedelta(minutes=8)
    drafts += [
        _d(
            "plan.proposed",
            t,
            "pr-57",
            "dns-cutover",
            team="infra",
            env="prod",
            actor=Actor(kind="user", id="ana"),
            pull_request="octo/ops#57",
        ),
        _d(
            "approval.recorded",
            t + timedelta(minutes=3),
            "pr-57",
            "dns-cutover",
            team="infra",
            env="prod",
            actor=Actor(kind="user", id="ben"),
            status="pending",
            have=1,
            need=2,
        ),
    ]
    store.append(drafts)
    store.commit()
    return store


def demo_dead_letters(now: datetime = DEMO_NOW) -> StaticDeadLetters:
    return StaticDeadLetters(
        [
            DeadLetter(
                delivery_id="9b1c2d30-5e6f-11ef-8a5b-0a1b2c3d4e5f",
                event="pull_request_review.submitted",
                attempts=8,
                last_error="GitHub 502 Bad Gateway",
                at=now - timedelta(minutes=35),
            )
        ]
    )


def main() -> None:  # pragma: no cover - manual tool
    import uvicorn
    from fastapi import FastAPI

    from app.dashboard.router import create_dashboard_router

    parser = argparse.ArgumentParser(description="serve the sample dashboard on 127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    args = parser.parse_args()
    app = FastAPI()
    app.include_router(
        create_dashboard_router(
            store=demo_store(), now=lambda: DEMO_NOW, dead_letters=demo_dead_letters()
        )
    )
    uvicorn.run(app, host="127.0.0.1", port=args.port)


if __name__ == "__main__":  # pragma: no cover
    main()
