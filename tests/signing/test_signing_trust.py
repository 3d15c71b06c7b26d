"""Trust comes from the default branch's policy: the policy's ``signers:`` become ``Trust``."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from app.approvals.attest import INTOTO_PAYLOAD_TYPE
from app.errors import PolicyLoadError
from app.policy.model import KeySigner, SigstoreSigner
from app.signing import GITHUB_ACTIONS_ISSUER, key_id, trust_from_policy, verify_signed_document
from app.signing.local_key import LocalKeySigner

SAN = "https://github.com/acme/ops/.github/workflows/plangate-approve.yml@refs/heads/main"


def _pem(key) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def test_policy_signers_become_trust():
    key = ec.generate_private_key(ec.SECP256R1())
    trust = trust_from_policy(
        [
            KeySigner(name="bot", type="key", public_key=_pem(key)),
            SigstoreSigner(name="gha", type="sigstore", identity=SAN, issuer=GITHUB_ACTIONS_ISSUER),
        ]
    )
    assert trust.keys[0].keyid == key_id(key.public_key())
    assert trust.keys[0].name == "bot"
    assert trust.identities[0].san == SAN
    signed = LocalKeySigner(key).sign(INTOTO_PAYLOAD_TYPE, b"{}")
    assert verify_signed_document(signed, trust).signer.name == "bot"


def test_unusable_policy_key_is_a_policy_error():
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(PolicyLoadError, match="signers: old-bot"):
        trust_from_policy([KeySigner(name="old-bot", type="key", public_key=_pem(p384))])


def test_no_policy_signers_means_nothing_verifies():
    assert trust_from_policy([]).empty


def test_policy_sigstore_signer_pins_source_repository_uri_and_id():
    trust = trust_from_policy(
        [
            SigstoreSigner(
                name="gha",
                type="sigstore",
                identity=SAN,
                issuer=GITHUB_ACTIONS_ISSUER,
                repository="https://github.com/acme/ops",
                repository_id=1296269,
            )
        ]
    )
    (identity,) = trust.identities
    assert identity.repository_uri == "https://github.com/acme/ops"
    assert identity.repository_id == "1296269"
    # both become sigstore policy checks on the certificate (AllOf with SAN/issuer)
    from sigstore.verify.policy import OIDCSourceRepositoryIdentifier, OIDCSourceRepositoryURI

    from app.signing.sigstore_backend import identity_policy

    (alternative,) = identity_policy(trust.identities)._children
    kinds = {type(child) for child in alternative._children}
    assert {OIDCSourceRepositoryURI, OIDCSourceRepositoryIdentifier} <= kinds


@pytest.mark.parametrize(
    ("field", "value"), [("repository", "http://github.com/acme/ops"), ("repository_id", 0)]
)
def test_policy_sigstore_signer_rejects_bad_repository_pins(field, value):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=field):
        SigstoreSigner(
            name="gha",
            type="sigstore",
            identity=SAN,
            issuer=GITHUB_ACTIONS_ISSUER,
            **{field: value},
        )


def test_approval_backend_setting():
    from app.errors import InputError
    from app.settings import Settings

    assert Settings.from_env({}).approval_backend == "key"
    settings = Settings.from_env({"PLANGATE_APPROVAL_BACKEND": "keyless"})
    assert settings.approval_backend == "keyless"
    assert settings.approval_workflow == "plangate-approve.yml"
    with pytest.raises(InputError, match="PLANGATE_APPROVAL_BACKEND"):
        Settings.from_env({"PLANGATE_APPROVAL_BACKEND": "sigstore"})
    with pytest.raises(InputError, match="PLANGATE_APPROVAL_WORKFLOW"):
        Settings.from_env({"PLANGATE_APPROVAL_WORKFLOW": "../evil.yml"})
