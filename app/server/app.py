"""The FastAPI application: ``POST /webhook``, ``GET /healthz``, ``GET /metrics``.

Order on ``POST /webhook`` (each step before the next, nothing stored or sent on failure):
body size (413) -> ``X-Hub-Signature-256`` over the raw bytes (401) -> JSON and headers (400)
-> not ours (unknown event, no installation, uninstalled: 202 "ignored", not stored) ->
durably stored in the inbox -> 202 (200 for a delivery id we already have). Processing happens
in the background worker, never in the request.

``create_app(settings, deps)`` takes everything as arguments; ``Deps.from_settings`` is the
production wiring, tests build ``Deps`` with fakes.
"""

from __future__ import annotations

import gc
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from app.errors import InputError
from app.github.auth import AppCredentials, InstallationTokens
from app.github.client import GitHubCache, HttpRetry, RepoClient
from app.observability import metrics
from app.server.approval import ApprovalAttester, KeylessApprovalAttester, web_url_for
from app.server.deployment import DeploymentGate
from app.server.evaluate import Evaluator, NotConfiguredEvaluator, PullRequestPipeline
from app.server.evaluations import EvaluationLog
from app.server.handlers import RepoClients, build_router
from app.server.inbox import InboxStore, open_inbox
from app.server.ingest import GroupCommitter
from app.server.webhooks import Event, MalformedDelivery, Router, verify_signature
from app.server.worker import Worker, WorkerPolicy
from app.settings import Settings
from app.signing.base import Signer, Trust, TrustedKey
from app.signing.local_key import LocalKeySigner, load_private_key

__all__ = ["MAX_BODY_BYTES", "Deps", "create_app"]

log = logging.getLogger(__name__)

#: GitHub caps webhook payloads at 25 MB; anything bigger is not from GitHub
MAX_BODY_BYTES = 25 * 1024 * 1024

#: every answer of ``POST /webhook`` by outcome (bounded: the values passed to ``answer``)
WEBHOOK_REQUESTS = Counter(
    "plangate_webhook_requests",
    "POST /webhook answers by result (queued, duplicate, ignored, bad_signature, ...).",
    ["result"],
    registry=metrics.REGISTRY,
)

#: events about installations are accepted even from an installation we think is gone
_INSTALLATION_EVENTS = frozenset({"installation", "installation_repositories"})


class Service(Protocol):
    """A background job the server runs while it serves (``RecoverySchedule``)."""

    def start(self) -> None: ...
    def stop(self) -> None: ...


@dataclass
class Deps:
    """Everything the server needs, built once (``from_settings``) or by a test."""

    inbox: InboxStore
    router: Router
    worker: Worker
    registry: CollectorRegistry = field(default_factory=lambda: metrics.REGISTRY)
    clock: Callable[[], float] = time.time
    max_body_bytes: int = MAX_BODY_BYTES
    start_worker: bool = True
    #: more routes, mounted after the webhook endpoints (the dashboard at ``GET /``)
    routers: list[APIRouter] = field(default_factory=list)
    #: background services started after the worker, stopped at shutdown (scheduled recovery)
    services: list[Service] = field(default_factory=list)
    #: the latest plans and check verdicts per open pull request (the dashboard's pending plans)
    evaluations: EvaluationLog | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        evaluator: Evaluator | None = None,
        clients: RepoClients | None = None,
        registry: CollectorRegistry | None = None,
        worker_policy: WorkerPolicy | None = None,
        http_retry: HttpRetry | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        start_worker: bool = True,
        details_url: str | None = None,
        durable: bool = True,
        seconds_between_writes: float | None = None,
        signer: Signer | None = None,
    ) -> Deps:
        """Production wiring: the inbox (``PLANGATE_DATABASE_URL``, else SQLite under
        ``PLANGATE_DATA_DIR``), App auth, the evaluator.

        Without an ``evaluator`` the policy, cost and approval checks fail ("policy engine not
        configured"): fail closed. ``durable=False`` trades power-loss safety of acknowledged
        deliveries for latency (still safe against a killed process).

        ``signer`` (default: the local key at ``PLANGATE_SIGNING_KEY_PATH``) signs approval
        attestations; without one, ``plangate/approval`` never reaches ``success``.
        """
        _require_secret(settings)  # before anything touches the disk
        signer = _signer(settings, signer)  # an unreadable key stops start-up
        inbox = open_inbox(settings, durable=durable)
        if clients is None:
            clients = app_clients(
                settings,
                http_retry=http_retry,
                clock=clock,
                sleep=sleep,
                seconds_between_writes=seconds_between_writes,
            )
        pipeline = PullRequestPipeline(
            evaluator=evaluator or NotConfiguredEvaluator(),
            inbox=inbox,
            now=lambda: datetime.fromtimestamp(clock(), UTC),
            details_url=details_url,
            attester=_attester(settings, signer, claims=inbox, clock=clock),
            app_id=settings.github_app_id,
            evaluations=(evaluations := EvaluationLog.in_dir(settings.data_dir)),
        )
        router = build_router(
            pipeline=pipeline,
            inbox=inbox,
            clients=clients,
            clock=clock,
            signer=signer,  # signs the Retry/Cancel request records (queue_actions)
            # only with attestations configured: without, the event is not subscribed to (the
            # default manifest), and a pending protection rule simply never passes
            deployments=None
            if signer is None and settings.approval_backend != "keyless"
            else DeploymentGate(
                api_url=settings.github_api_url,
                now=lambda: datetime.fromtimestamp(clock(), UTC),
                own_trust=own_trust(settings, signer),
            ),
        )
        worker = Worker(
            inbox=inbox, dispatch=router.dispatch, policy=worker_policy, clock=clock, rng=rng
        )
        return cls(
            inbox=inbox,
            router=router,
            worker=worker,
            registry=registry or metrics.REGISTRY,
            clock=clock,
            start_worker=start_worker,
            evaluations=evaluations,
        )


def _signer(settings: Settings, signer: Signer | None) -> Signer | None:
    if signer is None and settings.signing_key_path is not None:
        signer = LocalKeySigner(load_private_key(settings.signing_key_path))
    return signer


def own_trust(settings: Settings, signer: Signer | None) -> Trust:
    """The server's own signing key as trust (for the deployment protection rule)."""
    signer = _signer(settings, signer)
    if not isinstance(signer, LocalKeySigner):
        return Trust()
    pem = signer._key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Trust(keys=(TrustedKey(public_key_pem=pem.decode(), name="plangate-app"),))


def _attester(
    settings: Settings,
    signer: Signer | None,
    *,
    claims: InboxStore | None = None,
    clock: Callable[[], float] = time.time,
) -> ApprovalAttester | None:
    """The approval attester, or None (fail closed: approvals are held, with the reason)."""
    if settings.approval_backend == "keyless":
        # the approval workflow signs (sigstore, default branch); the App dispatches it and
        # turns the check green once the bundle on the attestation branch verifies. The
        # re-dispatch limit is claimed in the inbox's store: shared by every replica
        return KeylessApprovalAttester(
            workflow_file=settings.approval_workflow,
            web_url=web_url_for(settings.github_api_url),
            claims=claims,
            clock=clock,
        )
    signer = _signer(settings, signer)
    if signer is None:
        log.warning(
            "PLANGATE_SIGNING_KEY_PATH is not set: approval attestations are not configured, "
            "so plangate/approval never passes"
        )
        return None
    return ApprovalAttester(
        signer, web_url=web_url_for(settings.github_api_url), trust=own_trust(settings, signer)
    )


def app_clients(
    settings: Settings,
    *,
    http_retry: HttpRetry | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    seconds_between_writes: float | None = None,
) -> RepoClients:
    """``RepoClient`` factory authenticated as the App's installations (tokens cached)."""
    if settings.github_app_id is None:
        raise InputError("GITHUB_APP_ID is not set", hint="set it to the App's numeric id")
    if settings.github_private_key is None:
        raise InputError(
            "GITHUB_PRIVATE_KEY / GITHUB_PRIVATE_KEY_PATH is not set",
            hint="point GITHUB_PRIVATE_KEY_PATH at the App's .pem file",
        )
    tokens = InstallationTokens(
        AppCredentials(
            app_id=settings.github_app_id,
            private_key=settings.github_private_key.get_secret_value(),
            base_url=settings.github_api_url,
            seconds_between_writes=seconds_between_writes,
        ),
        retry=http_retry,
        clock=clock,
        sleep=sleep,
    )
    cache = GitHubCache()

    def clients(installation_id: int, full_name: str) -> RepoClient:
        return RepoClient(tokens.transport(installation_id), full_name, cache=cache)

    return clients


def _require_secret(settings: Settings) -> bytes:
    if (
        settings.github_webhook_secret is None
        or not settings.github_webhook_secret.get_secret_value()
    ):
        raise InputError(
            "GITHUB_WEBHOOK_SECRET is not set",
            hint="set it to the App's webhook secret; Plangate never accepts unsigned webhooks",
        )
    return settings.github_webhook_secret.get_secret_value().encode()


def create_app(settings: Settings, deps: Deps) -> FastAPI:
    secret = _require_secret(settings)
    metrics.INBOX_DEPTH.set_function(deps.inbox.depth)

    committer = GroupCommitter(deps.inbox)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Everything imported and built at start-up lives for the whole process: move it out of
        # the cyclic GC's view, so full collections stop pausing the loop (measured: webhook ack
        # p99 from ~60 ms to ~25 ms under 50 concurrent senders, benchmarks/webhook.py).
        gc.freeze()
        if deps.start_worker:
            deps.worker.start()
        for service in deps.services:
            service.start()
        try:
            yield
        finally:
            for service in deps.services:
                service.stop()
            committer.stop()
            if deps.start_worker:
                deps.worker.stop()

    app = FastAPI(title="Plangate", lifespan=lifespan, docs_url=None, redoc_url=None)

    # per-request work kept off the hot path: counter children resolved once per label value
    # (``labels()`` takes a lock and hashes every time), constant bodies rendered once
    results: dict[str, Any] = {}
    received: dict[str, Any] = {}
    rendered: dict[tuple[int, str], bytes] = {}

    def answer(status: int, result: str, event: str = "", **extra: object) -> Response:
        child = results.get(result)
        if child is None:
            child = results[result] = WEBHOOK_REQUESTS.labels(result=result)
        child.inc()
        if event:
            counter = received.get(event)
            if counter is None:
                # bounded: only events the router accepts or GitHub's names get here
                counter = metrics.DELIVERIES_RECEIVED.labels(event=event)
                if len(received) < 256:
                    received[event] = counter
            counter.inc()
        if extra:
            return JSONResponse({"status": result, **extra}, status_code=status)
        body = rendered.get((status, result))
        if body is None:
            body = rendered[(status, result)] = JSONResponse({"status": result}).body
        return Response(body, status_code=status, media_type="application/json")

    # a plain Starlette route: the hot path needs no dependency injection or response model
    async def webhook(request: Request) -> Response:
        length = request.headers.get("content-length")
        if length and (not length.isdigit() or int(length) > deps.max_body_bytes):
            return answer(413, "too_large")
        chunks = bytearray()
        async for chunk in request.stream():
            chunks += chunk
            if len(chunks) > deps.max_body_bytes:
                return answer(413, "too_large")
        body = bytes(chunks)
        if not verify_signature(secret, body, request.headers.get("x-hub-signature-256")):
            return answer(401, "bad_signature")
        try:
            event = Event.from_body(
                request.headers.get("x-github-event"),
                request.headers.get("x-github-delivery"),
                body,
            )
        except MalformedDelivery as exc:
            return answer(400, "malformed", detail=str(exc))
        if event.name == "ping":
            return answer(200, "pong", event.name)
        if not deps.router.wants(event):
            return answer(202, "ignored", event.name, reason="event not handled")
        installation = event.installation_id
        if installation is None:
            return answer(202, "ignored", event.name, reason="no App installation in payload")
        if event.name not in _INSTALLATION_EVENTS and deps.inbox.installation_status(
            installation
        ) in ("deleted", "suspended"):
            return answer(202, "ignored", event.name, reason="App installation removed")
        stored = await committer.add(event, body, now=deps.clock())
        if not stored:
            return answer(200, "duplicate", event.name)
        deps.worker.notify()
        return answer(202, "queued", event.name)

    app.add_route("/webhook", webhook, methods=["POST"])

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        counts = deps.inbox.counts()
        alive = deps.worker.alive
        ok = alive or not deps.start_worker
        body = {
            "status": "ok" if ok else "worker_down",
            "inbox_depth": counts.get("queued", 0) + counts.get("processing", 0),
            "dead_letters": counts.get("dead", 0),
            "worker_alive": alive,
            "worker_last_beat": deps.worker.last_beat,
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    def metrics_text() -> Response:
        return Response(generate_latest(deps.registry), media_type=CONTENT_TYPE_LATEST)

    for router in deps.routers:
        app.include_router(router)
    return app
