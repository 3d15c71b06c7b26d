"""The GitHub adapter: App auth, a narrow REST client over PyGithub, and check-run rendering.

Nothing outside this package (and ``app.server``/``app.cli`` wiring) talks to GitHub; the core
sees only the plain dataclasses defined in ``client.py``.
"""
