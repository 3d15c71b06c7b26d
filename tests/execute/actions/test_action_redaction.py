"""Security invariant: a secret value of the run never survives redaction."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from app.execute.actions._support import Redactor

# "*" is the redaction mark itself; a secret made of it could not be told apart from the mark
_TEXT = st.text(alphabet=st.characters(blacklist_characters="*"), max_size=60)
_SECRET = st.text(alphabet=st.characters(blacklist_characters="*"), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(secrets=st.lists(_SECRET, min_size=1, max_size=4), parts=st.lists(_TEXT, max_size=6))
def test_secret_values_never_survive_redaction(secrets, parts):
    # interleave the secrets with arbitrary text, overlapping and repeated
    text = "".join(p + secrets[i % len(secrets)] for i, p in enumerate(parts)) + "".join(secrets)
    redacted = Redactor(secrets)(text)
    for value in secrets:
        assert value not in redacted


def test_redaction_reaches_into_parsed_json():
    redact = Redactor(["tok-1"])
    assert redact.deep({"a": ["x tok-1", {"tok-1": 2}], "n": 3}) == {
        "a": ["x ***", {"***": 2}],
        "n": 3,
    }
