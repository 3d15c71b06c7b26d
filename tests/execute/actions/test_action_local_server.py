"""The HTTP-based actions end to end over real sockets, against a fake on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
from action_helpers import make_ctx, run

from app.actions.builtin import AgentInputs, HttpInputs, ProbeInputs
from app.execute.actions.agent import AgentAction
from app.execute.actions.http import HttpAction
from app.execute.actions.probe import ProbeAction


class _Handler(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        self.seen.append({"path": url.path, "headers": dict(self.headers)})
        if url.path == "/api/v1/query":
            query = parse_qs(url.query)["query"][0]
            value = "0" if "errors" in query else "7"
            self._send(200, {"status": "success", "data": {"resultType": "vector",
                       "result": [{"metric": {}, "value": [1.0, value]}]}})  # fmt: skip
        else:
            self._send(404, {"message": "Not Found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"null")
        self.seen.append({"path": self.path, "headers": dict(self.headers), "body": body})
        if self.path == "/v1/chat/completions":
            self._send(200, {"model": body["model"], "usage": {"prompt_tokens": 4,
                       "completion_tokens": 2}, "choices": [{"finish_reason": "stop",
                       "message": {"role": "assistant", "content": "ok"}}]})  # fmt: skip
        else:
            self._send(201, {"id": "job-1"})


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


async def _no_sleep(_: float) -> None:
    return None


def test_probe_http_and_agent_over_real_sockets(server: str):
    ctx = make_ctx(secrets={"OPENAI_API_KEY": "sk-local-1"}, timeout=30)
    probe = ProbeInputs.model_validate(
        {
            "prometheus": {"url": server, "query": "sum(rate(errors[1m]))"},
            "samples": 2,
            "interval": 1,
            "thresholds": {"max_value": 0},
        }
    )
    verdict = run(ProbeAction(sleep=_no_sleep).run(probe, ctx)).outputs["verdict"]
    posted = run(HttpAction().run(HttpInputs(url=f"{server}/jobs", method="POST"), ctx))
    answer = run(AgentAction(base_url=f"{server}/v1").run(AgentInputs(model="m", prompt="hi"), ctx))
    assert verdict == "passed"
    assert posted.outputs["id"] == "job-1" and posted.outputs["status"] == 201
    assert answer.outputs["content"] == "ok" and answer.usage.tokens_input == 4
    jobs = next(s for s in _Handler.seen if s["path"] == "/jobs")
    assert jobs["headers"]["Idempotency-Key"] == ctx.idempotency_key
    chat = next(s for s in _Handler.seen if s["path"] == "/v1/chat/completions")
    assert chat["headers"]["Authorization"] == "Bearer sk-local-1"
