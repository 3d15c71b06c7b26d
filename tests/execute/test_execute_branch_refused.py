"""``plangate execute`` when the attestation branch's ruleset refuses even the App's token.

The App is not on the ruleset's bypass list: GitHub answers every write that moves the branch
with its 422 "Repository rule violations found". That is said once per write (no five retries
ending in "branch kept moving"), names the branch and what to change, and the check run is
neutral (the plan ran; its record is missing).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote, urlsplit

from tests.execute import test_execute_app_token_writes as appw
from tests.execute import test_execute_github as base
from tests.execute.test_execute_github import BRANCH, execute

world = base.world
app_key = appw.app_key


class RulesetWithoutBypass(appw.AppAndProtection):
    """Like the App-only ruleset, but the App is not on its bypass list: nobody may push."""

    def _callback(self, request: Any) -> tuple[int, dict[str, str], str]:
        path = unquote(urlsplit(request.url).path)
        if request.method in ("PATCH", "POST") and "/git/refs" in path:
            body = json.loads(request.body) if request.body else None
            if appw.moves_branch(request.method, path, body):
                self.calls.append((request.method, path, body, request.headers["Authorization"]))
                self.refused.append(f"{request.method} {path}")
                return 422, appw.JSON, json.dumps(appw.PROTECTED)
        return super()._callback(request)


def test_ruleset_refusing_the_app_is_said_at_once_with_what_to_do(
    world, tmp_path, monkeypatch, app_key, capsys
):
    world.build()
    world.attest()
    monkeypatch.setenv("GITHUB_APP_ID", "1")
    monkeypatch.setenv("GITHUB_PRIVATE_KEY", app_key)
    hub = RulesetWithoutBypass(world.gh)
    code = execute(world, "--signing-key", str(appw._signing_key(world, tmp_path)))
    assert code == 0 and world.marker().read_text() == "hello"  # the plan itself ran
    writes = [m for m, p, b, _a in hub.calls if appw.moves_branch(m, p, b)]
    # one refused attempt per write (run attestation, carried state), not 5 each
    assert 1 <= len(writes) <= 2 and len(hub.refused) == len(writes)
    assert not [p for p in world.gh.git.files(BRANCH) if ".run-" in p]
    assert world.gh.conclusion() == "neutral"
    summary = world.gh.summary()
    assert "kept moving" not in summary
    assert f"refused to update branch {BRANCH}" in summary or (
        f"refused to create branch {BRANCH}" in summary
    )
    assert "Repository rule violations found" in summary
    err = capsys.readouterr().err
    assert "kept moving" not in err and "bypass list" in err
