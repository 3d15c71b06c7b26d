"""``plangate keygen``, ``plangate attest`` and ``plangate verify``: local approval attestations.

Local mode is the embedded default (``environment: local`` plans, self-hosting, tests): a
person approves on the command line, the statement is signed with a local ECDSA P-256 key and
stored under ``.plangate/attestations/local/<plan-digest>.dsse.json``. ``plangate verify`` runs
exactly the checks the executor runs (``app.approvals.verify.verify_for_execution``).

Keyless signing happens in the approval workflow on the default branch
(``plangate attest --backend sigstore``, GitHub Actions only); this module reads the Actions
environment for it, since only the CLI and ``app.settings`` read the environment.

Exit codes: 0 verified / written, 1 verification failed (the failed check is named), 2 bad input.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from app.approvals.attest import (
    INTOTO_PAYLOAD_TYPE,
    Approver,
    CostEstimate,
    RepositoryRef,
    Risk,
    build_statement,
)
from app.approvals.verify import verify_for_execution
from app.errors import AttestationError, InputError
from app.plan.digest import canonical_json
from app.plan.loader import load_plan
from app.signing import Signer, Trust, TrustedIdentity, TrustedKey, github_workflow_identity
from app.signing.local_store import DEFAULT_ATTESTATION_DIR, read_local, write_local

__all__ = ["register"]

DEFAULT_KEY = Path(".plangate/keys/approval.pem")
DEFAULT_DIR = DEFAULT_ATTESTATION_DIR
LOCAL_REPO = "local"
_TTL_RE = re.compile(r"^(\d+)([mhd])$")
_TTL_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def register(subparsers: argparse._SubParsersAction) -> None:
    keygen = subparsers.add_parser(
        "keygen",
        help="make a local ECDSA P-256 signing key for approval attestations",
        description="Write a PEM private key (mode 0600) and PATH.pub; print the key id "
        "(sha256 of the DER public key). Put the .pub file in the trusted signers of the "
        "default branch's policy or the executor's configuration.",
    )
    keygen.add_argument("--out", type=Path, default=DEFAULT_KEY, metavar="PATH")
    keygen.add_argument("--force", action="store_true", help="replace an existing key")
    keygen.set_defaults(func=run_keygen)

    attest = subparsers.add_parser(
        "attest",
        help="sign an approval attestation for plans",
        description="Build an in-toto approval statement for PLAN files and sign it. Local "
        "mode records the approvers given with --approver. PR mode (--pr N --head-sha SHA, "
        "the approval workflow on the default branch) evaluates the pull request's approval "
        "gate from GitHub and, when satisfied, signs keylessly and stores the attestation.",
    )
    attest.add_argument("plans", nargs="*", metavar="PLAN")
    attest.add_argument(
        "--pr",
        type=int,
        default=None,
        metavar="N",
        help="PR mode: attest pull request N (reviews re-read from GitHub, never trusted input)",
    )
    attest.add_argument(
        "--head-sha", default=None, metavar="SHA", help="PR mode: the head the approvals are for"
    )
    attest.add_argument("--sigstore-instance", choices=("production", "staging"))
    attest.add_argument(
        "--github-attestations-api",
        action="store_true",
        help="PR mode, keyless: also upload the bundle to GitHub's attestations API (off by "
        "default; the job needs `attestations: write`)",
    )
    attest.add_argument(
        "--approver",
        action="append",
        default=[],
        metavar="LOGIN[:REQUIREMENT]",
        help="who approved (repeatable); REQUIREMENT defaults to 'local'",
    )
    attest.add_argument("--key", type=Path, default=DEFAULT_KEY, metavar="PATH")
    attest.add_argument("--dir", type=Path, default=DEFAULT_DIR, metavar="DIR")
    attest.add_argument("--repo", default=LOCAL_REPO, metavar="OWNER/NAME")
    attest.add_argument("--ttl", default="7d", help="validity, e.g. 30m, 12h, 7d (default 7d)")
    attest.add_argument("--policies", type=Path, default=Path("policies"), metavar="DIR")
    attest.add_argument("--policy-digest", default=None, metavar="sha256:HEX")
    attest.add_argument("--risk", type=int, default=None)
    attest.add_argument("--cost", default=None, metavar="AMOUNT", help="estimated cost, e.g. 1.50")
    attest.add_argument(
        "--author",
        default=None,
        metavar="LOGIN",
        help="who wrote the plan (never counts as an approver; default: $USER)",
    )
    attest.add_argument(
        "--backend",
        choices=("local", "sigstore"),
        default=None,
        help="local key (default for PLAN files) or sigstore keyless (default with --pr)",
    )
    attest.add_argument(
        "--workflow",
        default="plangate-approve.yml",
        help="(sigstore) approval workflow file the verifiers pin",
    )
    attest.add_argument("--default-branch", default="main", help="(sigstore) default branch")
    attest.set_defaults(func=run_attest)

    verify = subparsers.add_parser(
        "verify",
        help="verify a plan's approval attestation (the executor's checks)",
        description="Verify signature, trusted signer, plan digest, repository/PR binding, "
        "policy digest and expiry. Exit 0 verified, 1 failed (the check is named).",
    )
    verify.add_argument("plan", metavar="PLAN")
    verify.add_argument("--attestation", type=Path, default=None, metavar="FILE")
    verify.add_argument("--dir", type=Path, default=DEFAULT_DIR, metavar="DIR")
    verify.add_argument("--repo", default=LOCAL_REPO, metavar="OWNER/NAME")
    verify.add_argument("--pr", type=int, default=None, metavar="N")
    verify.add_argument(
        "--trusted-key",
        action="append",
        type=Path,
        default=[],
        metavar="PEM",
        help=f"trusted public key (repeatable; default {DEFAULT_KEY}.pub)",
    )
    verify.add_argument(
        "--trusted-identity",
        action="append",
        default=[],
        metavar="SAN",
        help="trusted sigstore certificate identity (repeatable; issuer: GitHub Actions)",
    )
    verify.add_argument(
        "--repo-id",
        type=int,
        default=None,
        metavar="ID",
        help="GitHub's immutable repository id: the statement and, for keyless bundles, the "
        "certificate's source repository id must match (a re-created repository has another)",
    )
    verify.add_argument("--sigstore-instance", choices=("production", "staging"))
    verify.add_argument("--policies", type=Path, default=Path("policies"), metavar="DIR")
    verify.add_argument("--policy-digest", default=None, metavar="sha256:HEX")
    verify.add_argument(
        "--run",
        default=None,
        metavar="RUN_ID",
        help="also verify the run attestation of this run (what ran), bound to the approval",
    )
    verify.add_argument("--run-attestation", type=Path, default=None, metavar="FILE")
    verify.set_defaults(func=run_verify)


# --- helpers --------------------------------------------------------------------------------


def policy_dir_digest(directory: Path) -> str:
    """The digest of the policy set in ``directory`` (``PolicySet.digest``, as decisions use).

    A broken policy directory is an input error (fail closed). An absent directory digests as
    an empty file set (local plans with no policies), which a later policy change invalidates.
    """
    if directory.is_dir():
        from app.policy.loader import load_policy_dir

        return load_policy_dir(directory).digest
    return "sha256:" + hashlib.sha256(canonical_json({})).hexdigest()


def _local_gate(args: argparse.Namespace, loaded: list, now: datetime) -> None:  # type: ignore[type-arg]
    """Local approvals obey the same policy as pull requests: refuse to sign otherwise.

    The policy (``--policies``) assigns approval requirements to each plan; the approvers given
    with ``--approver`` must satisfy them, the author (``--author``, default: you) never counts.
    """
    if not args.policies.is_dir():
        raise InputError(
            f"{args.policies}: policy directory not found; approvals need a policy",
            hint="run from the repository root or pass --policies DIR",
        )
    from app.approvals.gate import simulate_gate
    from app.approvals.render import render_text
    from app.policy.context import EvalContext
    from app.policy.engine import evaluate
    from app.policy.loader import load_policy_dir

    policy = load_policy_dir(args.policies)
    approvers = [a.partition(":")[0] for a in args.approver]
    for lp in loaded:
        decision = evaluate(
            lp.plan, policy, EvalContext(now=now, author=args.author, plan_path=lp.path)
        )
        if not decision.allowed:
            reasons = "; ".join(f"{m.rule} ({m.source}): {m.reason}" for m in decision.denials)
            raise InputError(
                f"{lp.path}: policy denies this plan, so it cannot be approved: {reasons}",
                hint=f"`plangate explain {lp.path}` shows the decision trace",
            )
        if decision.approvals is None:
            raise InputError(f"{lp.path}: policy produced no approval requirements")
        gate = simulate_gate(decision.approvals, args.author, approvers, now=now)
        if not gate.satisfied:
            raise InputError(
                f"{lp.path}: the approvers do not satisfy the policy's approval requirements\n"
                + render_text(gate).rstrip(),
                hint="add the approvers the table names (the author never counts)",
            )


def _ttl(text: str) -> timedelta:
    match = _TTL_RE.match(text)
    if not match or int(match.group(1)) == 0:
        raise InputError(f"--ttl {text!r}: write e.g. 30m, 12h or 7d")
    return timedelta(**{_TTL_UNITS[match.group(2)]: int(match.group(1))})


def _approvers(values: list[str], now: datetime) -> list[Approver]:
    result = []
    for value in values:
        login, _, requirement = value.partition(":")
        try:
            result.append(Approver(login=login, approvedAt=now, requirement=requirement or "local"))
        except ValueError as exc:
            raise InputError(f"--approver {value!r}: {exc}") from exc
    return result


def _repo_path(path: Path) -> str:
    """The subject name: the plan's path relative to the working directory, POSIX style."""
    try:
        rel = path.resolve().relative_to(Path.cwd().resolve())
    except ValueError as exc:
        raise InputError(
            f"{path}: plans must be inside the repository (the current directory)",
            hint="run plangate from the repository root",
        ) from exc
    return rel.as_posix()


# --- commands -------------------------------------------------------------------------------


def run_keygen(args: argparse.Namespace) -> int:
    from app.signing.local_key import load_private_key, write_keypair

    if args.out.exists() and not args.force:
        # Idempotent for scripts (the README's first command): keep, never replace silently.
        from app.signing.local_key import LocalKeySigner

        signer = LocalKeySigner(load_private_key(args.out))
        print(f"private key: {args.out} exists; kept (use --force to replace it)")
        print(f"key id:      {signer.keyid}")
        return 0
    pair = write_keypair(args.out, overwrite=args.force)
    print(f"private key: {pair.private} (mode 0600; keep it secret)")
    print(f"public key:  {pair.public}")
    print(f"key id:      {pair.keyid}")
    return 0


def _signer(args: argparse.Namespace) -> Signer:
    if args.backend == "local":
        from app.signing.local_key import LocalKeySigner, load_private_key

        return LocalKeySigner(load_private_key(args.key))
    from app.signing.sigstore_backend import (
        SigstoreSigner,
        check_signing_context,
        fetch_actions_id_token,
    )

    env = os.environ
    if args.repo == LOCAL_REPO:
        raise InputError(
            "--backend sigstore needs --repo OWNER/NAME (the identity verifiers pin)",
            hint="pass the repository the approval workflow runs in",
        )
    if env.get("GITHUB_ACTIONS") != "true":
        raise InputError(
            "--backend sigstore signs only inside GitHub Actions (keyless identity)",
            hint="use the local key backend elsewhere (`plangate keygen`)",
        )
    check_signing_context(
        event_name=env.get("GITHUB_EVENT_NAME", ""),
        ref=env.get("GITHUB_REF", ""),
        default_branch=args.default_branch,
    )
    url, token = env.get("ACTIONS_ID_TOKEN_REQUEST_URL"), env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
    if not url or not token:
        raise InputError(
            "no Actions OIDC token available",
            hint="give the job `permissions: id-token: write`",
        )
    return SigstoreSigner(
        identity_token=fetch_actions_id_token(request_url=url, request_token=token),
        expected=github_workflow_identity(args.repo, args.workflow, args.default_branch),
    )


def run_attest(args: argparse.Namespace) -> int:
    if args.pr is not None or args.head_sha is not None:
        from app.cli.attest_pr import run_attest_pr

        if args.pr is None:
            raise InputError("--head-sha needs --pr N")
        args.backend = args.backend or "sigstore"
        return run_attest_pr(args)
    args.backend = args.backend or "local"
    if not args.plans:
        raise InputError(
            "nothing to attest: pass PLAN files, or --pr N --head-sha SHA in the approval workflow"
        )
    now = datetime.now(UTC)
    if not args.approver:
        raise InputError("no --approver given", hint="name who approved: --approver alice")
    loaded = [load_plan(p) for p in args.plans]
    if args.author is None:
        args.author = os.environ.get("USER") or os.environ.get("USERNAME") or "local-author"
    if args.backend == "local":
        _local_gate(args, loaded, now)
    plans = [(_repo_path(Path(lp.path)), lp.digest, None) for lp in loaded]
    try:
        statement = build_statement(
            plans=plans,
            repository=RepositoryRef(name=args.repo),
            approvers=_approvers(args.approver, now),
            policy_digest=args.policy_digest or policy_dir_digest(args.policies),
            evaluated_at=now,
            ttl=_ttl(args.ttl),
            risk=None if args.risk is None else Risk(score=args.risk),
            cost=None if args.cost is None else CostEstimate(total=args.cost),
        )
    except ValueError as exc:
        raise InputError(f"cannot build the attestation: {exc}") from exc
    signer = _signer(args)
    document = signer.sign(INTOTO_PAYLOAD_TYPE, statement.payload())
    for lp in loaded:
        out = write_local(args.dir, lp.digest, signer.kind, document)
        print(f"{lp.path}: attestation written to {out}")
    return 0


def _trust(args: argparse.Namespace) -> Trust:
    """Trusted signers from the command line.

    The implicit default (the key ``plangate keygen`` wrote) applies to local approvals only:
    for a repository, trust must be named explicitly (from the default branch's policy or the
    executor's configuration), never picked up from a checkout a pull request could change.
    """
    if not args.trusted_key and not args.trusted_identity and args.repo != LOCAL_REPO:
        raise InputError(
            f"verifying an approval for {args.repo} needs explicit trusted signers",
            hint="pass --trusted-key PEM and/or --trusted-identity SAN from the default "
            "branch's policy; a key file in the working tree is never trusted implicitly",
        )
    paths = args.trusted_key or ([Path(f"{DEFAULT_KEY}.pub")] if not args.trusted_identity else [])
    keys = []
    for path in paths:
        try:
            keys.append(TrustedKey(public_key_pem=path.read_text(), name=path.name))
        except OSError as exc:
            raise InputError(
                f"{path}: cannot read trusted key ({exc.strerror})",
                hint="pass --trusted-key PEM (the .pub file from `plangate keygen`)",
            ) from exc
        except ValueError as exc:
            raise InputError(f"{path}: not a usable public key: {exc}") from exc
    repo_id = getattr(args, "repo_id", None)
    if repo_id is not None and repo_id < 1:
        raise InputError(f"--repo-id {repo_id}: not a repository id")
    identities = tuple(
        TrustedIdentity(san=san, repository_id=None if repo_id is None else str(repo_id))
        for san in args.trusted_identity
    )
    return Trust(
        keys=tuple(keys),
        identities=identities,
        sigstore_instance=args.sigstore_instance or "production",
    )


def run_verify(args: argparse.Namespace) -> int:
    loaded = load_plan(args.plan)
    trust = _trust(args)  # bad trust arguments are input errors (exit 2), not a failed check
    try:
        if args.attestation is not None:
            path, document = args.attestation, _read_attestation(args.attestation)
        else:
            path, document = read_local(args.dir, loaded.digest, plan=loaded.path)
        verified = verify_for_execution(
            _repo_path(Path(loaded.path)),
            loaded.digest,
            document,
            trust,
            args.repo,
            args.pr,
            datetime.now(UTC),
            expected_repo_id=args.repo_id,
            expected_policy_digest=args.policy_digest or policy_dir_digest(args.policies),
            source=str(path),
        )
        run = None
        if args.run or args.run_attestation:  # what ran, bound to this exact approval document
            from app.cli.verify_run import verify_local_run

            run = verify_local_run(args, loaded, trust, document, _repo_path(Path(loaded.path)))
    except AttestationError as exc:
        print(f"plangate verify: FAILED check '{exc.check}': {exc.diagnostics()}", file=sys.stderr)
        return 1
    print(verified.summary())
    if run is not None:
        print(run.summary())
    return 0


def _read_attestation(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AttestationError(
            f"{path}: cannot read the attestation ({exc.strerror})",
            check="missing",
            hint="pass the attestation file written by `plangate attest`",
        ) from exc
