from __future__ import annotations

import pytest

from app.errors import StepFailed
from app.execute.refs import resolve
from app.execute.result import manual_command

OUT = {"build": {"image": "acme/app:1.2", "count": 3, "tags": ["a", "b"]}}
CTX = {"plan.id": "p1", "run.id": "r9"}


def _r(value):
    return resolve(value, outputs=OUT, context=CTX, step="deploy")


def test_whole_reference_keeps_the_type():
    assert _r("${{ steps.build.outputs.count }}") == 3
    assert _r({"t": ["${{steps.build.outputs.tags}}"]}) == {"t": [["a", "b"]]}


def test_embedded_reference_becomes_text():
    assert _r("img=${{ steps.build.outputs.image }} n=${{ steps.build.outputs.count }}") == (
        "img=acme/app:1.2 n=3"
    )
    assert _r("${{ plan.id }}/${{ run.id }}") == "p1/r9"
    assert _r("no refs here") == "no refs here"


def test_missing_output_names_step_and_output():
    with pytest.raises(StepFailed, match="step 'build' has no output 'digest'") as info:
        _r("${{ steps.build.outputs.digest }}")
    assert info.value.kind == "ref.unresolved" and not info.value.retryable


def test_secrets_are_never_interpolated():
    with pytest.raises(StepFailed, match="unsupported reference"):
        _r("${{ secrets.TOKEN }}")


def test_manual_commands_are_exact():
    assert manual_command("shell", {"run": ["kubectl", "rollout", "undo", "deploy/a b"]}) == (
        "kubectl rollout undo 'deploy/a b'"
    )
    cmd = manual_command(
        "http",
        {"method": "DELETE", "url": "https://x.example/b/1", "secret_headers": {"Auth": "TOK"}},
    )
    assert cmd == "curl -X DELETE -H 'Auth: $TOK' https://x.example/b/1"
    assert manual_command("github.issue", {"repo": "a/b"}) == 'github.issue {"repo": "a/b"}'
