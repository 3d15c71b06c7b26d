"""Settings from the environment: the only module that reads ``os.environ``.

Everything else receives a ``Settings`` value (or the pieces it needs) as an argument. A missing
or malformed variable is a start-up error that names the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from app.errors import InputError

__all__ = ["Settings"]

DEFAULT_API_URL = "https://api.github.com"
#: resource-lock lease and clock-skew allowance (``plangate execute``; docs/executor.md)
DEFAULT_LOCK_LEASE_SECONDS = 300.0
DEFAULT_LOCK_SKEW_SECONDS = 30.0
#: bounds: a lease renews every lease/3 with 2 API calls per resource, so below a minute it
#: spends the job token's 1,000 requests/hour; above a day a dead runner blocks for a day
_LOCK_LEASE_RANGE = (60.0, 86_400.0)
_LOCK_SKEW_RANGE = (0.0, 3_600.0)


class Settings(BaseModel):
    """Process configuration (see PRODUCT.md for the contract)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    github_app_id: int | None = Field(None, description="GITHUB_APP_ID")
    github_private_key: SecretStr | None = Field(
        None, description="GITHUB_PRIVATE_KEY (PEM) or the content of GITHUB_PRIVATE_KEY_PATH"
    )
    github_webhook_secret: SecretStr | None = Field(None, description="GITHUB_WEBHOOK_SECRET")
    github_api_url: str = Field(
        DEFAULT_API_URL, description="GITHUB_API_URL (GHES: https://HOST/api/v3)"
    )
    data_dir: Path = Field(Path(".plangate"), description="PLANGATE_DATA_DIR")
    agent_base_url: str | None = Field(
        None, description="PLANGATE_AGENT_BASE_URL: OpenAI-compatible API for the agent action"
    )
    github_token: SecretStr | None = Field(
        None, description="GITHUB_TOKEN (plangate propose without App credentials)"
    )
    signing_key_path: Path | None = Field(
        None,
        description="PLANGATE_SIGNING_KEY_PATH: the server's approval signing key "
        "(`plangate keygen`); without it plangate/approval never passes",
    )
    approval_backend: Literal["key", "keyless"] = Field(
        "key",
        description="PLANGATE_APPROVAL_BACKEND: `key` (the App signs with the signing key) or "
        "`keyless` (the App dispatches the approval workflow, which signs with sigstore)",
    )
    approval_workflow: str = Field(
        "plangate-approve.yml",
        pattern=r"^[A-Za-z0-9._-]+\.ya?ml$",
        description="PLANGATE_APPROVAL_WORKFLOW: the keyless approval workflow's file name",
    )

    database_url: SecretStr | None = Field(
        None,
        description="PLANGATE_DATABASE_URL (postgresql://...): inbox and run state in PostgreSQL, "
        "shared by several `plangate serve` replicas; unset: SQLite under PLANGATE_DATA_DIR",
    )

    lock_lease_seconds: float = Field(
        DEFAULT_LOCK_LEASE_SECONDS,
        description="PLANGATE_LOCK_LEASE_SECONDS: how long a resource lock of `plangate execute` "
        "lasts without renewal (renewed every third of it, 60..86400)",
    )
    lock_skew_seconds: float = Field(
        DEFAULT_LOCK_SKEW_SECONDS,
        description="PLANGATE_LOCK_SKEW_SECONDS: how long after its expiry another run may take "
        "an unrenewed lock over (clock differences between runners, 0..3600)",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        if env.get("GITHUB_APP_ID"):
            values["github_app_id"] = env["GITHUB_APP_ID"]
        key = env.get("GITHUB_PRIVATE_KEY")
        key_path = env.get("GITHUB_PRIVATE_KEY_PATH")
        if key and key_path:
            raise InputError(
                "both GITHUB_PRIVATE_KEY and GITHUB_PRIVATE_KEY_PATH are set",
                hint="set only one of them",
            )
        if key_path:
            try:
                key = Path(key_path).read_text()
            except OSError as exc:
                raise InputError(
                    f"GITHUB_PRIVATE_KEY_PATH={key_path}: cannot read the key ({exc.strerror})",
                    hint="point GITHUB_PRIVATE_KEY_PATH at the App's .pem file",
                ) from exc
        if key:
            if "PRIVATE KEY" not in key:
                raise InputError(
                    "GITHUB_PRIVATE_KEY does not look like a PEM private key",
                    hint="use the .pem file GitHub generated for the App",
                )
            values["github_private_key"] = key
        if env.get("GITHUB_WEBHOOK_SECRET"):
            values["github_webhook_secret"] = env["GITHUB_WEBHOOK_SECRET"]
        if env.get("GITHUB_API_URL"):
            url = env["GITHUB_API_URL"].rstrip("/")
            if not url.startswith(("https://", "http://")):
                raise InputError(
                    f"GITHUB_API_URL={url!r} is not an http(s) URL",
                    hint="use e.g. https://api.github.com or https://HOST/api/v3",
                )
            values["github_api_url"] = url
        if env.get("PLANGATE_DATA_DIR"):
            values["data_dir"] = env["PLANGATE_DATA_DIR"]
        if env.get("PLANGATE_AGENT_BASE_URL"):
            agent_url = env["PLANGATE_AGENT_BASE_URL"].rstrip("/")
            if not agent_url.startswith(("https://", "http://")):
                raise InputError(
                    f"PLANGATE_AGENT_BASE_URL={agent_url!r} is not an http(s) URL",
                    hint="use e.g. https://api.openai.com/v1 or http://127.0.0.1:11434/v1",
                )
            values["agent_base_url"] = agent_url
        if env.get("GITHUB_TOKEN"):
            values["github_token"] = env["GITHUB_TOKEN"]
        if env.get("PLANGATE_SIGNING_KEY_PATH"):
            values["signing_key_path"] = env["PLANGATE_SIGNING_KEY_PATH"]
        if env.get("PLANGATE_APPROVAL_BACKEND"):
            backend = env["PLANGATE_APPROVAL_BACKEND"]
            if backend not in ("key", "keyless"):
                raise InputError(
                    f"PLANGATE_APPROVAL_BACKEND={backend!r} is neither 'key' nor 'keyless'",
                    hint="use `key` (PLANGATE_SIGNING_KEY_PATH) or `keyless` (sigstore, signed "
                    "by the approval workflow)",
                )
            values["approval_backend"] = backend
        if env.get("PLANGATE_APPROVAL_WORKFLOW"):
            values["approval_workflow"] = env["PLANGATE_APPROVAL_WORKFLOW"]
        if env.get("PLANGATE_DATABASE_URL"):
            db_url = env["PLANGATE_DATABASE_URL"]
            if not db_url.startswith(("postgresql://", "postgres://")):
                raise InputError(
                    "PLANGATE_DATABASE_URL is not a postgresql:// URL",
                    hint="use postgresql://USER:PASSWORD@HOST:5432/DBNAME, or unset it for "
                    "SQLite under PLANGATE_DATA_DIR",
                )
            values["database_url"] = db_url
        for var, key, (low, high) in (
            ("PLANGATE_LOCK_LEASE_SECONDS", "lock_lease_seconds", _LOCK_LEASE_RANGE),
            ("PLANGATE_LOCK_SKEW_SECONDS", "lock_skew_seconds", _LOCK_SKEW_RANGE),
        ):
            if env.get(var):
                default = cls.model_fields[key].default
                values[key] = _seconds(var, env[var], low, high, default)
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            name = {
                "github_app_id": "GITHUB_APP_ID",
                "data_dir": "PLANGATE_DATA_DIR",
                "approval_workflow": "PLANGATE_APPROVAL_WORKFLOW",
            }.get(str(first["loc"][0]), str(first["loc"][0]).upper())
            raise InputError(f"{name}: {first['msg']}", hint=f"fix the {name} variable") from exc


def _seconds(var: str, raw: str, low: float, high: float, default: float) -> float:
    """A number of seconds within ``[low, high]``, or a start-up error naming ``var``."""
    try:
        value = float(raw.strip())
    except ValueError:
        value = float("nan")
    if not low <= value <= high:  # also refuses nan and inf
        raise InputError(
            f"{var}={raw!r} is not a number of seconds between {low:g} and {high:g}",
            hint=f"set {var} to a number of seconds, or unset it for the default ({default:g})",
        )
    return value
