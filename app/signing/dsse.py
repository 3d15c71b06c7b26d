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
import json
import re
from functools import cached_property

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from app.errors import AttestationError

__all__ = ["INTOTO_PAYLOAD_TYPE", "Envelope", "Signature", "envelope_json", "pae"]

#: the DSSE payload type of an in-toto statement (in-toto attestation spec v1, envelope.md)
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 Pre-Authentication Encoding of ``payload`` under ``payload_type``."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


#: standard base64 with padding, checked by pydantic-core (Rust) so that an envelope whose
#: payload or signature is not base64 cannot exist; decoding is then lazy and cannot fail
_BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


class Signature(BaseModel):
    """One DSSE signature. ``keyid`` is a hint only: it is never trusted by itself."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    keyid: str | None = None
    sig: str = Field(min_length=1, pattern=_BASE64, description="base64 of the signature bytes")

    @field_validator("keyid", mode="before")
    @classmethod
    def _empty_keyid_is_absent(cls, value: object) -> object:
        # protobuf JSON (sigstore bundles) may write an empty keyid
        return None if value == "" else value

    @cached_property
    def sig_bytes(self) -> bytes:
        return base64.b64decode(self.sig)


class Envelope(BaseModel):
    """A DSSE envelope (``payload`` is base64 of the exact signed bytes)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    payload_type: str = Field(alias="payloadType", min_length=1)
    payload: str = Field(pattern=_BASE64, description="base64 of the payload bytes")
    signatures: tuple[Signature, ...] = Field(min_length=1)

    @classmethod
    def wrap(cls, payload_type: str, payload: bytes, signatures: list[Signature]) -> Envelope:
        return cls(
            payloadType=payload_type,
            payload=base64.b64encode(payload).decode("ascii"),
            signatures=tuple(signatures),
        )

    @cached_property
    def payload_bytes(self) -> bytes:
        return base64.b64decode(self.payload)

    def pae(self) -> bytes:
        """The bytes every signature in this envelope signs."""
        return pae(self.payload_type, self.payload_bytes)

    def to_json(self) -> str:
        """Stable JSON (sorted keys, ``keyid`` omitted when absent, as in a sigstore bundle)."""
        return envelope_json(
            self.payload_type,
            self.payload,
            [(sig.keyid, sig.sig) for sig in self.signatures],
        )

    @classmethod
    def from_json(cls, raw: bytes | str, *, source: str = "attestation") -> Envelope:
        """Parse an envelope; anything malformed is an ``AttestationError(check="format")``."""
        try:
            return cls.model_validate_json(raw)
        except ValidationError as exc:
            if exc.errors()[0]["type"] == "json_invalid":
                raise AttestationError(
                    f"{source}: not JSON ({exc.errors()[0]['msg']})",
                    check="format",
                    hint="pass the .json file written by `plangate attest` (a DSSE envelope)",
                ) from exc
            raise _format_error(exc, source) from exc

    @classmethod
    def from_dict(cls, data: object, *, source: str = "attestation") -> Envelope:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise _format_error(exc, source) from exc


def _format_error(exc: ValidationError, source: str) -> AttestationError:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    return AttestationError(
        f"{source}: not a valid DSSE envelope: {where}: {first['msg']}",
        check="format",
        hint="the file is damaged or is not a Plangate attestation; "
        "re-create it with `plangate attest`",
    )


_PLAIN = re.compile(r"[A-Za-z0-9+/=._:-]*")


def _quote(value: str) -> str:
    # base64, hex key ids and media types need no escaping; anything else goes through json
    return f'"{value}"' if _PLAIN.fullmatch(value) else json.dumps(value)


def envelope_json(
    payload_type: str, payload_b64: str, signatures: list[tuple[str | None, str]]
) -> str:
    """The stored form of an envelope: sorted keys, two-space indent, trailing newline.

    Equal to ``json.dumps(..., sort_keys=True, indent=2)``, but written directly: signing
    speed is dominated by serialisation, not by ECDSA (see benchmarks/attest.py).
    """
    sigs = ",\n".join(
        "    {\n"
        + (f'      "keyid": {_quote(keyid)},\n' if keyid is not None else "")
        + f'      "sig": {_quote(sig)}\n    }}'
        for keyid, sig in signatures
    )
    return (
        f'{{\n  "payload": {_quote(payload_b64)},\n  "payloadType": {_quote(payload_type)},\n'
        f'  "signatures": [\n{sigs}\n  ]\n}}\n'
    )
