"""Keyless verification, offline, against real recorded sigstore bundles.

Fixtures: tests/fixtures/sigstore (see its PROVENANCE.md), verified against the trusted roots
that ship in the sigstore wheel. No network: ``Verifier(trusted_root=...)`` with a local root
never contacts Rekor or TUF for these checks.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.approvals.verify import verify_for_execution
from app.errors import AttestationError
from app.signing import GITHUB_ACTIONS_ISSUER, Trust, TrustedIdentity, github_workflow_identity
from app.signing.sigstore_backend import (
    SigstoreVerifier,
    bundled_trusted_root_path,
    identity_policy,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sigstore"
DSSE_BUNDLE = FIXTURES / "a.dsse.staging-rekor-v2.txt.sigstore.json"
BEACON_REPO = "sigstore-conformance/extremely-dangerous-public-oidc-beacon"
BEACON = github_workflow_identity(
    BEACON_REPO, "extremely-dangerous-oidc-beacon.yml", "main", repository_id=632596897
)
STAGING = Trust(identities=(BEACON,), sigstore_instance="staging")
VERIFIER = SigstoreVerifier()


def _rejected(document: bytes, trust: Trust, check: str) -> AttestationError:
    with pytest.raises(AttestationError) as info:
        VERIFIER.verify(document, trust)
    assert info.value.check == check, info.value.diagnostics()
    return info.value


def test_bundled_trusted_roots_ship_in_the_wheel():
    for instance in ("production", "staging"):
        root = json.loads(bundled_trusted_root_path(instance).read_text())
        assert root["mediaType"].startswith("application/vnd.dev.sigstore.trustedroot")


def test_pinned_identity_is_the_default_branch_workflow():
    assert BEACON.san == (
        f"https://github.com/{BEACON_REPO}/.github/workflows/"
        "extremely-dangerous-oidc-beacon.yml@refs/heads/main"
    )
    assert BEACON.issuer == GITHUB_ACTIONS_ISSUER == "https://token.actions.githubusercontent.com"
    assert BEACON.repository_uri == f"https://github.com/{BEACON_REPO}"
    with pytest.raises(ValueError):
        github_workflow_identity(BEACON_REPO, ".github/workflows/x.yml", "main")


def test_recorded_dsse_bundle_verifies_with_pinned_identity():
    result = VERIFIER.verify(DSSE_BUNDLE.read_bytes(), STAGING)
    assert result.payload_type == "application/vnd.in-toto+json"
    assert json.loads(result.payload)["subject"][0]["name"] == "a.txt"
    assert result.signer.kind == "sigstore"
    assert result.signer.id == BEACON.san
    assert result.signer.issuer == GITHUB_ACTIONS_ISSUER


def test_untrusted_identity_rejected():
    other = github_workflow_identity("acme/ops", "plangate-approve.yml", "main")
    error = _rejected(
        DSSE_BUNDLE.read_bytes(), Trust(identities=(other,), sigstore_instance="staging"), "signer"
    )
    assert BEACON.san in error.message  # says who actually signed


def test_same_workflow_on_another_branch_rejected():
    feature = github_workflow_identity(
        BEACON_REPO, "extremely-dangerous-oidc-beacon.yml", "feature"
    )
    _rejected(
        DSSE_BUNDLE.read_bytes(),
        Trust(identities=(feature,), sigstore_instance="staging"),
        "signer",
    )


def test_wrong_issuer_rejected():
    ident = TrustedIdentity(san=BEACON.san, issuer="https://accounts.google.com")
    _rejected(
        DSSE_BUNDLE.read_bytes(), Trust(identities=(ident,), sigstore_instance="staging"), "signer"
    )


def test_recreated_repository_with_new_id_rejected():
    ident = BEACON.model_copy(update={"repository_id": "1"})
    _rejected(
        DSSE_BUNDLE.read_bytes(), Trust(identities=(ident,), sigstore_instance="staging"), "signer"
    )


def test_tampered_dsse_payload_rejected():
    bundle = json.loads(DSSE_BUNDLE.read_bytes())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["subject"][0]["digest"]["sha256"] = "00" * 32
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    _rejected(json.dumps(bundle).encode(), STAGING, "signature")


def test_tampered_signature_rejected():
    bundle = json.loads(DSSE_BUNDLE.read_bytes())
    sig = bytearray(base64.b64decode(bundle["dsseEnvelope"]["signatures"][0]["sig"]))
    sig[-1] ^= 1
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    _rejected(json.dumps(bundle).encode(), STAGING, "signature")


def test_staging_bundle_rejected_by_production_root():
    trust = STAGING.model_copy(update={"sigstore_instance": "production"})
    _rejected(DSSE_BUNDLE.read_bytes(), trust, "signature")


def test_artifact_bundle_is_not_an_attestation():
    ident = TrustedIdentity(
        san="https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2"
    )
    document = (FIXTURES / "bundle_v3_github.whl.sigstore").read_bytes()
    _rejected(document, Trust(identities=(ident,)), "format")


def test_garbage_bundle_is_a_format_error():
    document = json.dumps({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"})
    _rejected(document.encode(), STAGING, "format")


def test_identity_policy_pins_production_github_certificate():
    """Our policy construction against a real production GitHub Actions certificate."""
    from sigstore.errors import VerificationError
    from sigstore.models import Bundle, TrustedRoot
    from sigstore.verify import Verifier

    verifier = Verifier(
        trusted_root=TrustedRoot.from_file(str(bundled_trusted_root_path("production")))
    )
    artifact = (FIXTURES / "bundle_v3_github.whl").read_bytes()
    bundle = Bundle.from_json((FIXTURES / "bundle_v3_github.whl.sigstore").read_bytes())
    tag_identity = TrustedIdentity(
        san="https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2",
        repository_uri="https://github.com/trailofbits/rfc8785.py",
    )
    verifier.verify_artifact(artifact, bundle, identity_policy((tag_identity,)))
    default_branch = github_workflow_identity("trailofbits/rfc8785.py", "release.yml", "main")
    with pytest.raises(VerificationError):
        verifier.verify_artifact(artifact, bundle, identity_policy((default_branch,)))
    with pytest.raises(VerificationError):
        verifier.verify_artifact(artifact + b"x", bundle, identity_policy((tag_identity,)))


def test_email_identity_is_not_a_workflow_identity():
    """bundle_v3.txt chains to the *staging* root (PROVENANCE.md's original note said
    production; recorded here as found, see the correction in PROVENANCE.md)."""
    from sigstore.errors import VerificationError
    from sigstore.models import Bundle, TrustedRoot
    from sigstore.verify import Verifier

    verifier = Verifier(
        trusted_root=TrustedRoot.from_file(str(bundled_trusted_root_path("staging")))
    )
    bundle = Bundle.from_json((FIXTURES / "bundle_v3.txt.sigstore").read_bytes())
    artifact = (FIXTURES / "bundle_v3.txt").read_bytes()
    email = TrustedIdentity(san="william@yossarian.net", issuer="https://github.com/login/oauth")
    verifier.verify_artifact(artifact, bundle, identity_policy((email,)))
    with pytest.raises(VerificationError):
        verifier.verify_artifact(
            artifact, bundle, identity_policy((github_workflow_identity("a/b", "x.yml", "main"),))
        )


def test_empty_identity_list_fails_closed():
    with pytest.raises(AttestationError) as info:
        identity_policy(())
    assert info.value.check == "signer"


def test_keyless_bundle_takes_the_same_verification_path():
    """After the sigstore signature step, the common checks run: this recorded bundle is a
    genuine signature from a trusted identity but a SLSA statement, so it authorises nothing."""
    with pytest.raises(AttestationError) as info:
        verify_for_execution(
            "a.txt",
            "sha256:" + "a0" * 32,
            DSSE_BUNDLE.read_bytes(),
            STAGING,
            BEACON_REPO,
            None,
            datetime(2026, 1, 1, tzinfo=UTC),
            sigstore_verifier=VERIFIER,
        )
    assert info.value.check == "statement"
    assert "https://slsa.dev/provenance/v1" in info.value.message


def test_keyless_bundle_with_untrusted_identity_rejected_before_statement_checks():
    other = Trust(
        identities=(github_workflow_identity("acme/ops", "approve.yml", "main"),),
        sigstore_instance="staging",
    )
    with pytest.raises(AttestationError) as info:
        verify_for_execution(
            "a.txt",
            "sha256:" + "a0" * 32,
            DSSE_BUNDLE.read_bytes(),
            other,
            "acme/ops",
            1,
            datetime(2026, 1, 1, tzinfo=UTC),
        )
    assert info.value.check == "signer"
