"""The GitHub adapter: App auth, a narrow REST client over PyGithub, check-run rendering.

- ``auth.py``: App JWT -> installation tokens (cached per installation), ``GITHUB_API_URL``;
- ``client.py``: ``RestTransport`` (rate limits, retries) and ``RepoClient`` (plain dataclasses);
- ``pull.py``: the approval gate's ``PullContext`` over ``RepoClient``;
- ``checks.py``: pure rendering of check-run output (limits, annotation batches);
- ``propose.py``: branch, commit and pull request for ``plangate propose``.

Nothing outside this package (and the ``app.server``/``app.cli`` wiring) talks to GitHub; the
core sees only plain values.
"""
