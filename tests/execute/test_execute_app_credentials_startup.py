"""Broken App credentials fail ``plangate execute`` before anything changes.

The executor's App token for the attestation branch is minted at start-up (not at the first
write, after the plans ran): a malformed key or an App that is not installed is exit 2 naming
``GITHUB_APP_ID``/``GITHUB_PRIVATE_KEY``, with no check run created, no step run and no lock
taken.
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


class NotInstalled(appw.AppAndProtection):
    def _callback(self, request: Any) -> tuple[int, dict[str, str], str]:
        if unquote(urlsplit(request.url).path) == f"/repos/{REPO}/installation":
            self.calls.append((request.method, "installation", None, ""))
            return 404, appw.JSON, json.dumps({"message": "Not Found"})
        return super()._callback(request)


def _start(world, tmp_path, monkeypatch, key: str, hub_class=appw.AppAndProtection):
    world.build()
    world.attest()
    monkeypatch.setenv("GITHUB_APP_ID", "1")
    monkeypatch.setenv("GITHUB_PRIVATE_KEY", key)
    hub = hub_class(world.gh)
    code = execute(world, "--signing-key", str(appw._signing_key(world, tmp_path)))
    return code, hub


def _nothing_changed(world, hub) -> None:
    assert not world.marker().exists()  # no step ran
    assert world.gh.check_runs == {}  # no check run left "in progress"
    assert not [c for c in hub.calls if appw.moves_lock(c[0], c[1], c[2])]  # no lock taken
    assert world.gh.comments == []


def test_malformed_private_key_is_exit_two_before_anything_runs(
    world, tmp_path, monkeypatch, capsys
):
    code, hub = _start(world, tmp_path, monkeypatch, "-----BEGIN PRIVATE KEY-----\nnope\n")
    assert code == 2
    _nothing_changed(world, hub)
    err = capsys.readouterr().err
    assert "GITHUB_APP_ID=1, GITHUB_PRIVATE_KEY" in err
    assert "PLANGATE_APP_PRIVATE_KEY" in err and "Nothing ran" in err
    assert "nope" not in err  # the key itself is never echoed


def test_app_not_installed_is_exit_two_before_anything_runs(
    world, tmp_path, monkeypatch, app_key, capsys
):
    code, hub = _start(world, tmp_path, monkeypatch, app_key, NotInstalled)
    assert code == 2
    _nothing_changed(world, hub)
    err = capsys.readouterr().err
    assert "the Plangate App is not installed on acme/ops" in err
    assert "GITHUB_APP_ID=1, GITHUB_PRIVATE_KEY" in err


def test_working_credentials_mint_once_up_front_and_revoke_at_the_end(
    world, tmp_path, monkeypatch, app_key
):
    code, hub = _start(world, tmp_path, monkeypatch, app_key)
    assert code == 0 and world.gh.conclusion() == "success"
    token_calls = [i for i, c in enumerate(hub.calls) if c[1].endswith("/access_tokens")]
    created = [i for i, c in enumerate(hub.calls) if c[:2] == ("POST", f"/repos/{REPO}/check-runs")]
    assert len(token_calls) == 1 and token_calls[0] < created[0]  # minted before the check run
    assert hub.revoked == [f"token {appw.APP_TOKEN}"]


def test_queue_request_with_broken_credentials_is_exit_two_and_not_used(world, monkeypatch, capsys):
    from app.execute.queue import request_path
    from tests.execute import test_execute_queue as queue

    queue._failed_run(world)
    request_id = queue._record(world, queue._request(world))
    monkeypatch.setenv("GITHUB_APP_ID", "1")
    monkeypatch.setenv("GITHUB_PRIVATE_KEY", "-----BEGIN PRIVATE KEY-----\nnope\n")
    runs_before = len(world.gh.check_runs)
    status_before = queue._status(world)
    assert execute(world, "--queue-request", request_id) == 2
    assert request_path(request_id) + ".used" not in world.gh.git.files(base.BRANCH)
    assert len(world.gh.check_runs) == runs_before  # no new check run
    assert queue._status(world) == status_before  # the run was not started over
    assert "GITHUB_APP_ID=1, GITHUB_PRIVATE_KEY" in capsys.readouterr().err
