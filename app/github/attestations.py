"""Store signed approval attestations on the bot-only ``plangate-attestations`` branch.

Why a separate branch written through the git-data API (blobs, trees, commits, refs) and not
the contents API or the pull request's branch:

- never the PR branch: a commit there would change the head SHA the approvals are bound to
  (and the PR author controls that branch);
- the git-data API lets us create the branch as an orphan (a root commit with no parent, so it
  shares no history with the code) and move the ref **without force**: if another writer (a
  second server replica, a concurrent delivery) moved it first, GitHub answers 422 "not a fast
  forward", and we re-read the ref and build our commit on top of theirs (tenacity, bounded);
- storing is idempotent: if the same path already holds the same bytes, nothing is written, so a
  retried delivery does not grow the branch.

Protect the branch with a ruleset so only the App can push (docs/attestations.md). Errors are
``GitHubError`` (the worker retries the delivery); a ref that keeps moving past the retry
budget is ``GitHubUnavailable``. GitHub answers 422 for two different things on a ref write: a
real conflict ("Update is not a fast forward", "Reference already exists"), retried on the new
tip, and a refusal by a branch ruleset or protection ("Repository rule violations found"),
which no retry fixes: that is ``AttestationBranchRefused`` at once, naming the branch and what
to change (the writer's credentials, the ruleset's bypass list). Any other 422 is not retried
either.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random

from app.errors import GitHubError, GitHubUnavailable
from app.github.client import RepoClient

__all__ = [
    "ATTESTATION_BRANCH",
    "AttestationBranchRefused",
    "AttestationStore",
    "StoredAttestation",
    "upload_to_attestations_api",
]

ATTESTATION_BRANCH = "plangate-attestations"
_FILE_MODE = "100644"


@dataclass(frozen=True, slots=True)
class StoredAttestation:
    """Where a document lives: ``path`` at ``commit_sha`` of the attestation branch.

    ``created`` is False when the identical document was already stored (nothing written).
    """

    branch: str
    path: str
    commit_sha: str
    created: bool


class _RefMoved(Exception):
    """The branch moved (or appeared) under us: re-read the ref and build on the new tip."""


class AttestationBranchRefused(GitHubError):
    """GitHub refused to move the attestation branch for a reason a retry does not change: a
    ruleset or branch protection ("Repository rule violations found"), or another 422."""

    default_hint = (
        "the attestation branch accepts pushes only from the writers its ruleset allows: write "
        "it with the Plangate App's credentials (plangate execute: GITHUB_APP_ID and "
        "GITHUB_PRIVATE_KEY, from the secrets PLANGATE_APP_ID and PLANGATE_APP_PRIVATE_KEY) and "
        "make sure the App is on the ruleset's bypass list (docs/github-app.md)"
    )


#: GitHub's 422 messages for a lost race on a ref: the only ones worth a retry on the new tip
_CONFLICTS = ("not a fast forward", "reference already exists")
#: GitHub's 422 messages for a write a ruleset or branch protection refuses
_RULES = ("rule violation", "protected branch", "protected ref")


class AttestationStore:
    """Reads and writes documents on the attestation branch of one repository.

    ``sleep``/``rng`` are injected so tests take no time; ``max_attempts`` bounds the
    read-ref/commit/update-ref loop under concurrent writers.
    """

    def __init__(
        self,
        client: RepoClient,
        *,
        branch: str = ATTESTATION_BRANCH,
        max_attempts: int = 5,
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not branch or branch.startswith(("refs/", "/")) or ".." in branch:
            raise ValueError(f"attestation branch must be a plain branch name, got {branch!r}")
        self.client = client
        self.branch = branch
        self.max_attempts = max_attempts
        self._sleep = sleep or (lambda _s: None)
        self._rng = rng or random.Random()
        owner, _, name = client.full_name.partition("/")
        self._base = f"/repos/{quote(owner)}/{quote(name)}"

    # reads ------------------------------------------------------------------------------------

    def head(self) -> str | None:
        """The branch's commit SHA, or None when the branch does not exist yet."""
        try:
            data = self.client.transport.request(
                "GET", f"{self._base}/git/ref/heads/{quote(self.branch)}"
            ).data
        except GitHubError as exc:
            if exc.status == 404:
                return None
            raise
        return str(data["object"]["sha"])

    def read(self, path: str, *, at: str | None = None) -> bytes | None:
        """A stored document (None if absent). ``at`` is a commit SHA of the branch."""
        commit = at or self.head()
        if commit is None:
            return None
        return self.client.file_at(path, commit)

    # writes -----------------------------------------------------------------------------------

    def store(self, path: str, document: bytes, *, message: str) -> StoredAttestation:
        """Add (or replace) ``path`` with ``document`` in one new commit on the branch.

        Idempotent: the same bytes at the same path write nothing. Never forces the ref.
        """
        _check_path(path)
        blob_sha: list[str] = []  # created at most once, on the first attempt that needs it

        def attempt() -> StoredAttestation:
            parent = self.head()
            base_tree = None
            if parent is not None:
                if self.client.file_at(path, parent) == document:
                    return StoredAttestation(self.branch, path, parent, created=False)
                base_tree = self._tree_of(parent)
            if not blob_sha:
                blob_sha.append(self._create_blob(document))
            tree = self._create_tree(path, blob_sha[0], base_tree)
            commit = self._create_commit(message, tree, parent)
            if parent is None:
                self._create_ref(commit)
            else:
                self._update_ref(commit)
            return StoredAttestation(self.branch, path, commit, created=True)

        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=wait_random(0, 0.25),
            retry=retry_if_exception_type(_RefMoved),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except _RefMoved as exc:
            raise GitHubUnavailable(
                f"{self.client.full_name}: branch {self.branch} kept moving while storing {path} "
                f"({self.max_attempts} attempts)",
                hint="another writer is busy on the attestation branch; the delivery is retried",
            ) from exc

    def _tree_of(self, commit: str) -> str:
        data = self.client.transport.request("GET", f"{self._base}/git/commits/{commit}").data
        return str(data["tree"]["sha"])

    def _create_blob(self, document: bytes) -> str:
        body = {"content": base64.b64encode(document).decode("ascii"), "encoding": "base64"}
        data = self.client.transport.request("POST", f"{self._base}/git/blobs", body=body).data
        return str(data["sha"])

    def _create_tree(self, path: str, blob: str, base_tree: str | None) -> str:
        body: dict[str, object] = {
            "tree": [{"path": path, "mode": _FILE_MODE, "type": "blob", "sha": blob}]
        }
        if base_tree is not None:
            body["base_tree"] = base_tree
        data = self.client.transport.request("POST", f"{self._base}/git/trees", body=body).data
        return str(data["sha"])

    def _create_commit(self, message: str, tree: str, parent: str | None) -> str:
        # no parent: an orphan root commit (the branch shares no history with the code)
        body = {"message": message, "tree": tree, "parents": [parent] if parent else []}
        data = self.client.transport.request("POST", f"{self._base}/git/commits", body=body).data
        return str(data["sha"])

    def _create_ref(self, commit: str) -> None:
        body = {"ref": f"refs/heads/{self.branch}", "sha": commit}
        try:
            self.client.transport.request("POST", f"{self._base}/git/refs", body=body)
        except GitHubError as exc:
            self._raise_422(exc, "create")
            raise

    def _update_ref(self, commit: str) -> None:
        body = {"sha": commit, "force": False}
        try:
            self.client.transport.request(
                "PATCH", f"{self._base}/git/refs/heads/{quote(self.branch)}", body=body
            )
        except GitHubError as exc:
            self._raise_422(exc, "update")
            raise

    def _raise_422(self, exc: GitHubError, verb: str) -> None:
        """A 422 on a ref write: a conflict is retried (``_RefMoved``); anything else, a
        ruleset's refusal above all, is ``AttestationBranchRefused`` at once."""
        if exc.status != 422:
            return
        text = exc.message.lower()
        if any(c in text for c in _CONFLICTS) and not any(r in text for r in _RULES):
            raise _RefMoved(str(exc)) from exc
        said = " ".join(exc.message.split())
        if any(r in text for r in _RULES):
            raise AttestationBranchRefused(
                f"{self.client.full_name}: GitHub refused to {verb} branch {self.branch}: a "
                f"ruleset or branch protection does not let these credentials push to it "
                f"({said})",
                status=422,
            ) from exc
        raise AttestationBranchRefused(
            f"{self.client.full_name}: GitHub refused to {verb} branch {self.branch} ({said})",
            status=422,
            hint="not a conflict with another writer, so not retried; GitHub's message says "
            "what it refused",
        ) from exc


def _check_path(path: str) -> None:
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{path!r} is not a relative path on the attestation branch")


def upload_to_attestations_api(client: RepoClient, bundle: bytes) -> int:
    """Also publish a keyless sigstore bundle through GitHub's artifact attestations API.

    ``POST /repos/{owner}/{repo}/attestations`` (GitHub docs: "Create an attestation"; needs
    ``attestations: write``). Optional and off by default: the attestation branch stays the
    source the executor reads; this makes the bundle visible to ``gh attestation verify`` and
    the repository's attestations page. Only sigstore bundles are accepted (GitHub stores
    bundles, not bare DSSE envelopes). Returns GitHub's attestation id.
    """
    import json

    try:
        data = json.loads(bundle)
    except ValueError as exc:
        raise ValueError(f"not a sigstore bundle: {exc}") from exc
    if not isinstance(data, dict) or not str(data.get("mediaType", "")).startswith(
        "application/vnd.dev.sigstore.bundle"
    ):
        raise ValueError("only keyless sigstore bundles can be uploaded to GitHub's API")
    owner, _, name = client.full_name.partition("/")
    response = client.transport.request(
        "POST", f"/repos/{quote(owner)}/{quote(name)}/attestations", body={"bundle": data}
    )
    ident = (response.data or {}).get("id")
    if type(ident) is not int:
        raise GitHubError("GitHub's attestations API returned no attestation id", status=None)
    return ident
