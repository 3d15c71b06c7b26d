"""DSSE envelopes: the one signed-document shape both signing backends produce.

Why our own model: the local key backend must emit exactly the JSON a sigstore bundle carries in
its ``dsseEnvelope`` (``payloadType``, base64 ``payload``, ``signatures[{keyid?, sig}]``), so one
verification path handles both after the signature step. securesystemslib's envelope is not
interoperable and sigstore-python cannot sign with our own key, so this is a few lines here.

PAE follows the DSSE v1 spec exactly
(https://github.com/secure-systems-lab/dsse/blob/v1.0.0/protocol.md)::

    PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

where ``LEN`` is the ASCII decimal byte length and ``type`` is UTF-8. Signatures are computed
over PAE, never over the bare payload, so a payload cannot be reinterpreted under another type.

This module does no I/O and knows nothing about keys; it only (de)serialises envelopes.
"""

from __future__ import annotations

import base64
import binascii
import json

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.errors import AttestationError

__all__ = ["INTOTO_PAYLOAD_TYPE", "Envelope", "Signature", "pae"]

#: the DSSE payload type of an in-toto statement (in-toto attestation spec v1, envelope.md)
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 Pre-Authentication Encoding of ``payload`` under ``payload_type``."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


def _is_base64(value: str) -> str:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("is not standard base64") from exc
    return value


class Signature(BaseModel):
    """One DSSE signature. ``keyid`` is a hint only: it is never trusted by itself."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    keyid: str | None = None
    sig: str = Field(min_length=1, description="base64 of the raw signature bytes")

    @field_validator("sig")
    @classmethod
    def _check_sig(cls, value: str) -> str:
        return _is_base64(value)

    @property
    def sig_bytes(self) -> bytes:
        return base64.b64decode(self.sig)


class Envelope(BaseModel):
    """A DSSE envelope (``payload`` is base64 of the exact signed bytes)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    payload_type: str = Field(alias="payloadType", min_length=1)
    payload: str = Field(description="base64 of the payload bytes")
    signatures: tuple[Signature, ...] = Field(min_length=1)

    @field_validator("payload")
    @classmethod
    def _check_payload(cls, value: str) -> str:
        return _is_base64(value)

    @classmethod
    def wrap(cls, payload_type: str, payload: bytes, signatures: list[Signature]) -> Envelope:
        return cls(
            payloadType=payload_type,
            payload=base64.b64encode(payload).decode("ascii"),
            signatures=tuple(signatures),
        )

    @property
    def payload_bytes(self) -> bytes:
        return base64.b64decode(self.payload)

    def pae(self) -> bytes:
        """The bytes every signature in this envelope signs."""
        return pae(self.payload_type, self.payload_bytes)

    def to_json(self) -> str:
        """Stable JSON (sorted keys, ``keyid`` omitted when absent, as in a sigstore bundle)."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return json.dumps(data, sort_keys=True, indent=2) + "\n"

    @classmethod
    def from_json(cls, raw: bytes | str, *, source: str = "attestation") -> Envelope:
        """Parse an envelope; anything malformed is an ``AttestationError(check="format")``."""
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AttestationError(
                f"{source}: not JSON ({exc})",
                check="format",
                hint="pass the .json file written by `plangate attest` (a DSSE envelope)",
            ) from exc
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: object, *, source: str = "attestation") -> Envelope:
        if isinstance(data, dict):
            # protobuf JSON (sigstore bundles) may write an empty keyid; treat it as absent
            sigs = data.get("signatures")
            if isinstance(sigs, list):
                data = {
                    **data,
                    "signatures": [
                        {k: v for k, v in s.items() if not (k == "keyid" and v in ("", None))}
                        if isinstance(s, dict)
                        else s
                        for s in sigs
                    ],
                }
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top level)"
            raise AttestationError(
                f"{source}: not a valid DSSE envelope: {where}: {first['msg']}",
                check="format",
                hint="the file is damaged or is not a Plangate attestation; "
                "re-create it with `plangate attest`",
            ) from exc
