"""The ``checks: write`` App token behind the Retry/Cancel buttons (``--queue-buttons auto``).

GitHub sends ``check_run.requested_action`` only to the App that created the check run, so with
the App's credentials ``plangate execute`` creates and updates ``plangate/execute`` with an
installation token limited to ``checks: write``. Like the attestation-branch token it is
replaced when less than 5 minutes are left of the lifetime GitHub gave it (``expires_at``, not
an assumed 50 minutes) and revoked when execute ends.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote, urlsplit

from tests.execute import test_execute_app_token_writes as appw
from tests.execute import test_execute_github as base
from tests.execute.test_execute_github import REPO, execute

world = base.world
app_key = appw.app_key

CHECKS_TOKEN = appw.OTHER_APP_TOKEN  # what the fake mints for anything but contents: write


class WithChecksToken(appw.AppAndProtection):
    """Also accepts the ``checks: write`` token, on check-run calls only."""

    def _callback(self, request: Any) -> tuple[int, dict[str, str], str]:
        auth = request.headers.get("Authorization", "")
        path = unquote(urlsplit(request.url).path)
        if auth == f"token {CHECKS_TOKEN}" and path != "/installation/token":
            assert path.startswith(f"/repos/{REPO}/check-runs"), path
            body = json.loads(request.body) if request.body else None
            self.calls.append((request.method, path, body, auth))
            status, payload = self.gh._route(request.method, path, {}, body)
            return status, appw.JSON, json.dumps(payload)
        return super()._callback(request)


def _run(world, tmp_path, monkeypatch, app_key, *, lifetime: float):
    world.build()
    world.attest()
    monkeypatch.setenv("GITHUB_APP_ID", "1")
    monkeypatch.setenv("GITHUB_PRIVATE_KEY", app_key)
    hub = WithChecksToken(world.gh, lifetime=lifetime)
    code = execute(
        world,
        "--signing-key",
        str(appw._signing_key(world, tmp_path)),
        "--queue-buttons",
        "auto",
    )
    return code, hub


def _checks_mints(hub) -> list[Any]:
    return [b for b in hub.token_bodies if b["permissions"] == {"checks": "write"}]


def test_check_run_token_is_revoked_when_execute_ends(world, tmp_path, monkeypatch, app_key):
    code, hub = _run(world, tmp_path, monkeypatch, app_key, lifetime=3600)
    assert code == 0 and world.gh.conclusion() == "success"
    assert _checks_mints(hub) == [{"repositories": ["ops"], "permissions": {"checks": "write"}}]
    check_calls = [c for c in hub.calls if c[1].startswith(f"/repos/{REPO}/check-runs")]
    assert check_calls and {c[3] for c in check_calls} == {f"token {CHECKS_TOKEN}"}
    assert f"token {CHECKS_TOKEN}" in hub.revoked  # gone when execute ends
    # the revocation comes after the last check-run call (the final update was sent with it)
    last_check = max(i for i, c in enumerate(hub.calls) if c in check_calls)
    revoked_at = [
        i
        for i, c in enumerate(hub.calls)
        if c[:2] == ("DELETE", "/installation/token") and c[3] == f"token {CHECKS_TOKEN}"
    ]
    assert revoked_at and revoked_at[-1] > last_check


def test_check_run_token_follows_the_expiry_github_gave_it(world, tmp_path, monkeypatch, app_key):
    # a token GitHub says expires in 4 minutes has less than 5 left: each use takes a new one
    # (a fixed 3000 s assumption would keep using it past its expiry)
    code, hub = _run(world, tmp_path, monkeypatch, app_key, lifetime=240)
    assert code == 0 and world.gh.conclusion() == "success"
    check_calls = [c for c in hub.calls if c[1].startswith(f"/repos/{REPO}/check-runs")]
    assert len(check_calls) >= 2
    assert len(_checks_mints(hub)) == len(check_calls)
    # every one of them revoked: each replaced one, then the last when execute ends
    assert hub.revoked.count(f"token {CHECKS_TOKEN}") == len(check_calls)
