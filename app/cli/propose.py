"""``plangate propose PLAN --repo OWNER/NAME``: open a pull request with a plan."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.errors import InputError
from app.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    propose = subparsers.add_parser(
        "propose",
        help="open a pull request that adds a plan (how agents enqueue work)",
        description="Validate PLAN locally, then create a branch, commit it under plans/ and "
        "open a pull request through the GitHub API. Authenticates with GITHUB_TOKEN, or as "
        "the Plangate App (GITHUB_APP_ID + GITHUB_PRIVATE_KEY(_PATH)).",
    )
    propose.add_argument("plan", metavar="PLAN", help="plan file to propose")
    propose.add_argument("--repo", required=True, metavar="OWNER/NAME")
    propose.add_argument("--base", default=None, help="base branch (default: the default branch)")
    propose.add_argument("--branch", default=None, help="branch to create")
    propose.add_argument(
        "--path", default=None, help="path in the repository (default: plans/<file name>)"
    )
    propose.add_argument("--title", default=None, help="pull request title")
    propose.set_defaults(func=run_propose)


def run_propose(args: argparse.Namespace) -> int:
    from app.github.auth import (
        AppCredentials,
        InstallationTokens,
        repo_installation,
        token_transport,
    )
    from app.github.client import GitHubCache, RepoClient
    from app.github.propose import propose_plan
    from app.plan.loader import load_plan

    if args.repo.count("/") != 1 or not all(args.repo.split("/")):
        raise InputError(f"--repo {args.repo!r} must be OWNER/NAME")
    loaded = load_plan(args.plan)  # an invalid plan is never proposed (exit 2)
    raw = Path(args.plan).read_bytes()
    repo_path = args.path or f"plans/{Path(args.plan).name}"
    if not repo_path.startswith("plans/"):
        raise InputError(f"--path {repo_path!r} must be under plans/ (Plangate checks plans/ only)")
    settings = Settings.from_env()
    if settings.github_token is not None:
        transport = token_transport(
            settings.github_token.get_secret_value(), base_url=settings.github_api_url
        )
    elif settings.github_app_id is not None and settings.github_private_key is not None:
        tokens = InstallationTokens(
            AppCredentials(
                app_id=settings.github_app_id,
                private_key=settings.github_private_key.get_secret_value(),
                base_url=settings.github_api_url,
            )
        )
        transport = tokens.transport(repo_installation(tokens, args.repo))
    else:
        raise InputError(
            "no GitHub credentials: set GITHUB_TOKEN, or GITHUB_APP_ID and "
            "GITHUB_PRIVATE_KEY(_PATH)",
            hint="in GitHub Actions, pass GITHUB_TOKEN with contents and pull-requests: write",
        )
    client = RepoClient(transport, args.repo, cache=GitHubCache())
    proposal = propose_plan(
        client,
        loaded,
        raw,
        repo_path=repo_path,
        base=args.base,
        branch=args.branch,
        title=args.title,
    )
    print(f"opened pull request #{proposal.number}: {proposal.url} (branch {proposal.branch})")
    return 0
