"""A fault layer in front of the fake GitHub (``ghfake.FakeGitHub``) served on 127.0.0.1.

The fake keeps its API; this module only decides, per request, whether to answer it normally or
to inject a fault first: an HTTP error (500/502, 403 secondary rate limit with ``retry-after``,
429), a slow answer, or a connection reset (TCP RST, nothing answered). A rule chooses calls by
method and a regex on the path, and fires for the first N matching calls or with a seeded
probability, so every scenario is reproducible.

An injected error or reset is decided *before* the fake sees the request: GitHub did not apply
it (the ordinary case of an outage or a load balancer dropping the connection). A rule with
``applied=True`` lets the fake carry the request out first and then fails the answer: the
ambiguous case, where a retry must not repeat a non-idempotent write.
"""

from __future__ import annotations

import json
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from ghfake import Call, FakeGitHub


@dataclass
class Rule:
    """One fault: ``kind`` is ``status``, ``reset`` or ``slow``; ``method`` ``*`` matches any."""

    method: str
    pattern: re.Pattern[str]
    kind: str
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    message: str = "injected fault"
    first: int | None = None
    probability: float | None = None
    delay: float = 0.0
    after: int = 0
    #: only while this says True (an outage window); None: always
    when: Callable[[], bool] | None = None
    #: the fake applies the request, then the error or reset replaces its answer
    applied: bool = False
    seen: int = 0
    fired: int = 0


@dataclass
class Injected:
    method: str
    path: str
    kind: str
    status: int | None


class FaultLayer:
    """Serve ``fake`` on 127.0.0.1 with faults. ``seed`` fixes the probabilistic rules."""

    def __init__(self, fake: FakeGitHub, *, seed: int = 0) -> None:
        self.fake = fake
        self.rules: list[Rule] = []
        self.injected: list[Injected] = []
        #: called with (method, path) before a request is handled; True drops the request
        #: unanswered and unapplied (scenarios kill the caller here)
        self.before: Callable[[str, str], bool] | None = None
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    # -- configuration -------------------------------------------------------------------------

    def add(
        self,
        method: str,
        pattern: str,
        kind: str = "status",
        *,
        status: int = 500,
        headers: dict[str, str] | None = None,
        message: str = "injected fault",
        first: int | None = None,
        probability: float | None = None,
        delay: float = 0.0,
        after: int = 0,
        when: Callable[[], bool] | None = None,
        applied: bool = False,
    ) -> Rule:
        """Fault matching calls: the ``first`` N after skipping ``after``, or by ``probability``;
        with ``when``, only while it returns True (calls outside the window are not counted)."""
        if kind not in ("status", "reset", "slow"):
            raise ValueError(f"unknown fault kind {kind!r}")
        if (first is None) == (probability is None):
            raise ValueError("give exactly one of first= or probability=")
        rule = Rule(
            method,
            re.compile(pattern),
            kind,
            status=status,
            headers=headers or {},
            message=message,
            first=first,
            probability=probability,
            delay=delay,
            after=after,
            when=when,
            applied=applied,
        )
        self.rules.append(rule)
        return rule

    def count(self, kind: str | None = None, status: int | None = None) -> int:
        return sum(
            1
            for i in self.injected
            if (kind is None or i.kind == kind) and (status is None or i.status == status)
        )

    # -- decision ------------------------------------------------------------------------------

    def decide(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.method not in ("*", method) or not rule.pattern.search(path):
                    continue
                if rule.when is not None and not rule.when():
                    continue
                rule.seen += 1
                if rule.first is not None:
                    fire = rule.after < rule.seen <= rule.after + rule.first
                else:
                    fire = self._rng.random() < (rule.probability or 0.0)
                if fire:
                    rule.fired += 1
                    status = rule.status if rule.kind == "status" else None
                    self.injected.append(Injected(method, path, rule.kind, status))
                    return rule
            return None

    # -- transport -----------------------------------------------------------------------------

    def serve(self) -> tuple[ThreadingHTTPServer, str]:
        """Run on 127.0.0.1 (random port) in a daemon thread; returns (server, API base URL)."""
        layer, fake = self, self.fake

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # answer at once: with Nagle on, each keep-alive answer waits ~40 ms for a delayed ACK
            disable_nagle_algorithm = True

            def _send(self, status: int, headers: dict[str, str], payload: str) -> None:
                data = payload.encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _reset(self) -> None:
                # SO_LINGER 0: close() sends RST instead of FIN -> "connection reset by peer"
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.close_connection = True
                self.connection.close()

            def _do(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length).decode() if length else None
                path = urlsplit(self.path).path
                if fake.prefix and path.startswith(fake.prefix):
                    path = path[len(fake.prefix) :]
                if layer.before is not None and layer.before(self.command, path):
                    self.close_connection = True
                    return
                rule = layer.decide(self.command, path)
                if rule is not None and rule.applied and rule.kind in ("reset", "status"):
                    fake.handle(self.command, self.path, dict(self.headers), raw)
                if rule is not None and rule.kind == "reset":
                    with fake._lock:
                        fake.calls.append(Call(self.command, path, 0, None))
                    self._reset()
                    return
                if rule is not None and rule.kind == "status":
                    with fake._lock:
                        fake.calls.append(Call(self.command, path, rule.status, None))
                    headers = {"Content-Type": "application/json", **rule.headers}
                    self._send(rule.status, headers, json.dumps({"message": rule.message}))
                    return
                if rule is not None and rule.kind == "slow":
                    time.sleep(rule.delay)
                status, headers, payload = fake.handle(
                    self.command, self.path, dict(self.headers), raw
                )
                self._send(status, headers, payload)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _do

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        host, port = server.server_address[:2]
        fake.base = f"http://{host}:{port}{fake.prefix}"
        return server, fake.base
