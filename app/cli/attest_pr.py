"""``plangate attest --pr N --head-sha SHA``: the keyless approval workflow's one command.

Runs in ``.github/workflows/plangate-approve.yml`` on the **default branch** (started by the
App's ``repository_dispatch`` or by hand with ``workflow_dispatch``; never by a
``pull_request*`` event, whose workflow file the PR author controls). It judges the pull
request with exactly the App's code (``PullRequestPipeline.outcomes``: plans at the head,
policy from the base commit, reviews, commits and files through the narrow PR adapter, the
approval gate) and, when the gate is satisfied, ``ApprovalAttester`` builds the statement, signs
it keylessly with the job's Actions OIDC identity (``SigstoreSigner``) and stores the bundle on
the attestation branch. The inputs only say *which* pull request to look at: the approvals come
from GitHub's reviews, so dispatching the workflow by hand cannot approve anything.

Authentication: with ``GITHUB_APP_ID`` and ``GITHUB_PRIVATE_KEY`` the job acts as the Plangate
App (installation token): the App stores the bundle, as the attestation branch's ruleset
requires, and team memberships are readable. Without them it falls back to ``GITHUB_TOKEN``
(the job then needs ``contents: write`` and the ruleset must let GitHub Actions push).

Exit codes: 0 attested (stored, or an identical stored one reused), 1 not attested (gate not
satisfied, the pull request moved or closed, signing or storing refused: the reason is
printed), 2 bad input or environment.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from typing import Any, cast

from app.errors import InputError

__all__ = ["run_attest_pr"]

_SHA = re.compile(r"^[0-9a-f]{40}$")


def _require(environ: Mapping[str, str], name: str, hint: str) -> str:
    value = environ.get(name, "")
    if not value:
        raise InputError(f"{name} is not set", hint=hint)
    return value


def _client(repo: str, environ: Mapping[str, str]) -> Any:
    """A ``RepoClient`` acting as the App (preferred) or with ``GITHUB_TOKEN``."""
    from app.github.auth import (
        AppCredentials,
        InstallationTokens,
        repo_installation,
        token_transport,
    )
    from app.github.client import GitHubCache, RepoClient
    from app.settings import Settings

    settings = Settings.from_env(environ)
    if settings.github_app_id is not None and settings.github_private_key is not None:
        tokens = InstallationTokens(
            AppCredentials(
                app_id=settings.github_app_id,
                private_key=settings.github_private_key.get_secret_value(),
                base_url=settings.github_api_url,
            )
        )
        transport = tokens.transport(repo_installation(tokens, repo))
    elif settings.github_token is not None:
        transport = token_transport(
            settings.github_token.get_secret_value(), base_url=settings.github_api_url
        )
    else:
        raise InputError(
            "no GitHub credentials: set GITHUB_APP_ID and GITHUB_PRIVATE_KEY (the App's, "
            "recommended) or GITHUB_TOKEN",
            hint="see .github/workflows/plangate-approve.yml",
        )
    return RepoClient(transport, repo, cache=GitHubCache()), settings


def _repository(client: Any) -> tuple[str, int | None]:
    """Default branch and immutable id (``GET /repos/{owner}/{repo}``)."""
    from urllib.parse import quote

    owner, _, name = client.full_name.partition("/")
    data = client.transport.request("GET", f"/repos/{quote(owner)}/{quote(name)}").data or {}
    branch, repo_id = data.get("default_branch"), data.get("id")
    if not isinstance(branch, str) or not branch:
        raise InputError(f"{client.full_name}: GitHub did not say which branch is the default")
    return branch, repo_id if type(repo_id) is int and repo_id > 0 else None


def _signer(args: argparse.Namespace, environ: Mapping[str, str], repo: str, default: str) -> Any:
    """The keyless signer for the job's OIDC identity (refused outside a default-branch run)."""
    if args.backend == "local":
        from app.signing.local_key import LocalKeySigner, load_private_key

        return LocalKeySigner(load_private_key(args.key))
    from app.signing import github_workflow_identity
    from app.signing.sigstore_backend import (
        SigstoreSigner,
        check_signing_context,
        fetch_actions_id_token,
    )

    if environ.get("GITHUB_ACTIONS") != "true":
        raise InputError(
            "keyless approval signing runs only inside GitHub Actions",
            hint="use the approval workflow, or `--backend local --key PEM` on a self-hosted "
            "executor",
        )
    # before any token is requested: never sign from a pull_request* run or another branch
    check_signing_context(
        event_name=environ.get("GITHUB_EVENT_NAME", ""),
        ref=environ.get("GITHUB_REF", ""),
        default_branch=default,
    )
    url = _require(
        environ, "ACTIONS_ID_TOKEN_REQUEST_URL", "give the job `permissions: id-token: write`"
    )
    token = _require(
        environ, "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "give the job `permissions: id-token: write`"
    )
    server = (environ.get("GITHUB_SERVER_URL") or "https://github.com").rstrip("/")
    expected = github_workflow_identity(repo, args.workflow, default, server_url=server)
    return SigstoreSigner(
        identity_token=fetch_actions_id_token(request_url=url, request_token=token),
        expected=expected,
        instance=args.sigstore_instance or "production",
    )


def run_attest_pr(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> int:
    from app.server.approval import ApprovalAttester, web_url_for
    from app.server.engine import PolicyEngineEvaluator
    from app.server.evaluate import PullRequestPipeline

    env = os.environ if environ is None else environ
    if args.plans:
        raise InputError("pass either PLAN files (local approval) or --pr, not both")
    if args.pr < 1:
        raise InputError(f"--pr {args.pr}: not a pull request number")
    head = (args.head_sha or "").strip()
    if not _SHA.match(head):
        raise InputError(
            f"--head-sha {head!r}: not a full 40-hex commit SHA",
            hint="pass the pull request's head SHA the approvals are for",
        )
    repo = args.repo if args.repo != "local" else env.get("GITHUB_REPOSITORY", "")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", repo):
        raise InputError("no repository: pass --repo OWNER/NAME or set GITHUB_REPOSITORY")
    client, settings = _client(repo, env)
    default, _ = _repository(client)
    signer = _signer(args, env, repo, default)
    pull = client.pull(args.pr)
    if pull.head_sha != head:
        print(
            f"{repo}#{args.pr}: the pull request moved to {pull.head_sha[:12]} (asked to attest "
            f"{head[:12]}); nothing attested: the App dispatches again for the new head"
        )
        return 1
    if pull.state != "open":
        print(f"{repo}#{args.pr}: the pull request is {pull.state}; nothing attested")
        return 1
    web_url = (env.get("GITHUB_SERVER_URL") or web_url_for(settings.github_api_url)).rstrip("/")
    attester = ApprovalAttester(
        signer,
        web_url=web_url,
        workflow_file=args.workflow if signer.kind == "sigstore" else None,
    )
    # the inbox only remembers published check runs; outcomes() publishes nothing
    pipeline = PullRequestPipeline(
        evaluator=PolicyEngineEvaluator(), inbox=cast(Any, None), attester=attester
    )
    (approval,) = pipeline.outcomes(client, pull, scope="approval")
    print(f"{repo}#{args.pr} at {head[:12]}: {approval.title}")
    print(approval.summary)
    if approval.conclusion != "success":
        return 1
    if args.github_attestations_api:
        _upload(client, args.pr, head, signer.kind)
    return 0


def _upload(client: Any, number: int, head: str, kind: str) -> None:
    """Optional: the stored bundle also goes to GitHub's attestations API (public repos)."""
    from app.approvals.attest import storage_path
    from app.github.attestations import AttestationStore, upload_to_attestations_api

    if kind != "sigstore":
        raise InputError(
            "--github-attestations-api uploads keyless sigstore bundles only",
            hint="drop the flag with --backend local",
        )
    store = AttestationStore(client)
    path = storage_path(number, head, kind)
    document = store.read(path, at=store.head())
    if document is None:  # pragma: no cover - success means it was stored
        raise InputError(f"{path} is not on the attestation branch; nothing to upload")
    ident = upload_to_attestations_api(client, document)
    print(f"uploaded {path} to GitHub's attestations API (id {ident})")
