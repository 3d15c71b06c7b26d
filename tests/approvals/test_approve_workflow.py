"""Security invariants of ``.github/workflows/plangate-approve.yml`` (the keyless signer).

The signing identity is only as good as the workflow that holds it: it must run from the
default branch only (never a ``pull_request*`` event, whose workflow file the PR author
controls), with the least privileges, pinned actions, and no untrusted value expanded into a
shell script. CI also runs actionlint and zizmor over it; these tests pin what they cannot know.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from app.server.approval import DEFAULT_WORKFLOW, DISPATCH_EVENT
from app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "plangate-approve.yml"


def _workflow() -> dict[str, Any]:
    data = yaml.safe_load(WORKFLOW.read_text())
    # YAML 1.1 reads the key `on` as the boolean true
    data["on"] = data.pop(True, data.get("on"))
    return data


def test_workflow_file_is_the_one_the_app_dispatches_and_verifiers_pin():
    assert WORKFLOW.name == DEFAULT_WORKFLOW == Settings().approval_workflow
    assert f"--workflow {DEFAULT_WORKFLOW}" in WORKFLOW.read_text()


def test_never_signs_in_pull_request_runs():
    triggers = _workflow()["on"]
    assert set(triggers) == {"repository_dispatch", "workflow_dispatch"}
    assert not any(str(t).startswith("pull_request") for t in triggers)
    assert triggers["repository_dispatch"] == {"types": [DISPATCH_EVENT]}


def test_least_privilege_permissions():
    data = _workflow()
    assert data["permissions"] == {}
    (job,) = data["jobs"].values()
    # id-token for the OIDC token; contents: read to check out the default branch. The App's
    # credentials store the bundle, so the job's own token never writes.
    assert job["permissions"] == {"contents": "read", "id-token": "write"}
    assert "github.event.repository.default_branch" in job["if"]


def test_actions_pinned_by_full_sha_and_checkout_keeps_no_credentials():
    (job,) = _workflow()["jobs"].values()
    uses = [step["uses"] for step in job["steps"] if "uses" in step]
    assert uses
    for ref in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", ref), ref
    checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["persist-credentials"] is False
    assert "ref" not in checkout["with"]  # the dispatched (default-branch) commit, never the PR


def test_no_expression_inside_run_scripts():
    (job,) = _workflow()["jobs"].values()
    for step in job["steps"]:
        if "run" in step:
            assert "${{" not in step["run"], step["run"]
    attest = next(s for s in job["steps"] if "plangate attest" in s.get("run", ""))
    # the dispatch inputs reach the script only as environment variables, quoted
    assert '--pr "$PR" --head-sha "$HEAD_SHA"' in attest["run"]
    assert "client_payload.pr" in attest["env"]["PR"]
    assert attest["env"]["PLANGATE_GITHUB_ATTESTATIONS"] == "false"  # upload is opt-in
