"""``GitDataGitHub`` plus the Actions endpoints the Retry / Cancel buttons use.

``POST actions/workflows/{workflow_id}/dispatches`` (204, body validated against
``actions/create-workflow-dispatch``) and ``POST actions/runs/{run_id}/cancel`` (202, or 409
when the run already ended), from ``@octokit/openapi`` 23.0.2 like the rest of the fake
(``openapi-checks-subset.json``). Works in process (``responses``) and served on loopback
(``serve()``), like ``FakeGitHub``.
"""

from __future__ import annotations

import re
from typing import Any

from ghfake import FakeRepo
from gitdata_fake import GitDataGitHub


class QueueGitHub(GitDataGitHub):
    def __init__(self, base: str = "https://api.github.com") -> None:
        super().__init__(base)
        #: ``(workflow id, body)`` of every workflow dispatch
        self.dispatches: list[tuple[str, dict[str, Any]]] = []
        #: workflow run ids cancelled
        self.cancelled_runs: list[int] = []
        #: workflow runs that already ended (a cancel answers 409)
        self.finished_runs: set[int] = set()

    def _repo_route(
        self,
        repo: FakeRepo,
        method: str,
        sub: str,
        query: dict[str, str],
        headers: dict[str, str],
        data: Any,
    ) -> tuple[int, dict[str, str], Any]:
        m = re.fullmatch(r"/actions/workflows/([^/]+)/dispatches", sub)
        if m and method == "POST":
            self._validate("actions/create-workflow-dispatch", data)
            if data.get("ref") not in repo.branches:
                return 422, {}, {"message": f"No ref found for: {data.get('ref')}"}
            self.dispatches.append((m.group(1), data))
            return 204, {}, None
        m = re.fullmatch(r"/actions/runs/(\d+)/cancel", sub)
        if m and method == "POST":
            run_id = int(m.group(1))
            if run_id in self.finished_runs:
                return 409, {}, {"message": "Cannot cancel a workflow run that is completed."}
            self.cancelled_runs.append(run_id)
            return 202, {}, {}
        return super()._repo_route(repo, method, sub, query, headers, data)
