"""Loading policies: strict, line-aware, fail closed; digest; signers; the effective-rule diff."""

from __future__ import annotations

from pathlib import Path

import pytest
from policy_helpers import BASE_POLICY, policy

from app.errors import PolicyLoadError
from app.policy.diff import diff_policy_sets
from app.policy.loader import load_policy_dir, load_policy_files
from app.policy.model import KeySigner, SigstoreSigner

ROOT = Path(__file__).resolve().parents[2]


def test_missing_policy_dir_fails_closed(tmp_path):
    with pytest.raises(PolicyLoadError, match="policy directory does not exist") as exc:
        load_policy_dir(tmp_path / "nope")
    assert exc.value.issues[0].code == "policy.missing_dir"


def test_empty_policy_dir_fails_closed(tmp_path):
    (tmp_path / "README.md").write_text("not a policy")
    with pytest.raises(PolicyLoadError, match="no policy files"):
        load_policy_dir(tmp_path)


def test_empty_policy_file_fails_closed():
    with pytest.raises(PolicyLoadError, match=r"policies/a.yaml: file is empty"):
        load_policy_files({"policies/a.yaml": b"# nothing\n"})


def test_policy_without_required_sections_fails_closed():
    with pytest.raises(PolicyLoadError) as exc:
        load_policy_files({"policies/a.yaml": b"kind: Policy\nteams: {a: {members: [x]}}\n"})
    missing = {i.message.split("'")[1] for i in exc.value.issues}
    assert missing == {"environments", "access", "risk", "prices"}


@pytest.mark.parametrize(
    ("text", "where", "needle"),
    [
        (
            "rules:\n  - id: x\n    when: {environment: a}\n    mesage: typo\n",
            "policies/extra.yaml:6",
            "mesage",
        ),
        (
            "rules:\n  - id: x\n    when: {envirnoment: a}\n    message: m\n",
            "policies/extra.yaml:5",
            "envirnoment",
        ),
        ("approvals:\n  - id: x\n    require: {count: 0}\n", "policies/extra.yaml:5", "count"),
        ("rules: [\n", "policies/extra.yaml:", "invalid YAML"),
        (
            "rules:\n  - id: x\n    when: {risk: {at_least: huge}}\n    message: m\n",
            "policies/extra.yaml:5",
            "at_least",
        ),
    ],
    ids=["unknown-field", "unknown-predicate", "bad-count", "broken-yaml", "bad-level"],
)
def test_broken_policy_file_names_file_and_line(text, where, needle):
    with pytest.raises(PolicyLoadError) as exc:
        policy(text)
    rendered = str(exc.value)
    assert where in rendered and needle in rendered, rendered


def test_unknown_team_reference_is_an_error_at_the_rule():
    extra = "approvals:\n  - id: x\n    require: {teams: [nobody]}\n"
    with pytest.raises(
        PolicyLoadError,
        match=r"policies/extra.yaml:4: approval rule 'x' names "
        r"unknown team 'nobody'",
    ):
        policy(extra)


def test_duplicate_rule_id_across_files_names_both_places():
    extra = "access:\n  - {id: platform-all, teams: [sre]}\n"
    with pytest.raises(
        PolicyLoadError,
        match=r"policies/extra.yaml:4:.*already defined at "
        r"policies/base.yaml:13",
    ):
        policy(extra)


def test_duplicate_team_across_files():
    with pytest.raises(PolicyLoadError, match="teams 'sre' is already defined"):
        policy("teams:\n  sre: {members: [x]}\n")


def test_digest_ignores_layout_and_comments_but_not_meaning():
    a = load_policy_files({"p/a.yaml": BASE_POLICY.encode()})
    reformatted = "# a comment\n" + BASE_POLICY.replace(
        "production: {risk: 40}", "production:\n    risk:   40  # prod"
    )
    b = load_policy_files({"p/b.yaml": reformatted.encode()})
    assert a.digest == b.digest and a.digest.startswith("sha256:")
    c = load_policy_files({"p/a.yaml": BASE_POLICY.replace("risk: 40", "risk: 41").encode()})
    assert c.digest != a.digest


def test_signers_are_exposed_as_plain_data():
    extra = """\
signers:
  - name: ci
    type: sigstore
    identity: https://github.com/acme/ops/.github/workflows/a.yml@refs/heads/main
    issuer: https://token.actions.githubusercontent.com
  - name: laptop
    type: key
    public_key: |
      -----BEGIN PUBLIC KEY-----
      MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE5Er0piNveMdhpk7/Lqlm3K2R3uXv
      -----END PUBLIC KEY-----
"""
    signers = policy(extra).signers
    assert isinstance(signers[0], SigstoreSigner)
    assert signers[0].issuer == "https://token.actions.githubusercontent.com"
    assert isinstance(signers[1], KeySigner) and "BEGIN PUBLIC KEY" in signers[1].public_key


def test_signer_must_be_a_pem_key():
    with pytest.raises(PolicyLoadError, match="PEM public key"):
        policy("signers:\n  - {name: x, type: key, public_key: abc}\n")


def test_dual_authorization_rule_needs_enough_teams():
    with pytest.raises(PolicyLoadError, match="distinct_teams"):
        policy("approvals:\n  - id: d\n    require: {count: 2, teams: [sre], distinct_teams: 2}\n")


def test_effective_rule_diff():
    base = policy(
        "rules:\n  - {id: r1, when: {environment: production}, message: a}\n"
        "  - {id: r2, when: {environment: staging}, message: b}\n"
    )
    head = policy(
        "rules:\n  - {id: r1, when: {environment: production}, message: CHANGED}\n"
        "  - {id: r3, when: {environment: local}, message: c}\n"
    )
    changes = [(c.status, c.section, c.name) for c in diff_policy_sets(base, head)]
    assert changes == [
        ("changed", "rules", "r1"),
        ("removed", "rules", "r2"),
        ("added", "rules", "r3"),
    ]
    assert diff_policy_sets(base, base) == []


def test_example_policies_load():
    ps = load_policy_dir(ROOT / "policies")
    assert {"platform", "sre", "payments", "data", "security"} <= set(ps.document.teams)
    assert len(ps.signers) == 2


def test_team_budgets_may_be_split_over_files():
    base = BASE_POLICY + "budgets:\n  teams:\n    sre: {money: {hard: '1'}}\n"
    extra = "budgets:\n  plan_max: {hard: '9'}\n  teams:\n    data: {money: {hard: '2'}}\n"
    ps = policy(extra, base=base)
    assert set(ps.document.budgets.teams) == {"sre", "data"}
    assert ps.source("budgets", "plan_max") == "policies/extra.yaml:4"
    with pytest.raises(PolicyLoadError, match="budget of team 'sre' is already defined"):
        policy("budgets:\n  teams:\n    sre: {money: {hard: '3'}}\n", base=base)


def _split(text: str, cut: int) -> dict[str, bytes]:
    """Put the first ``cut`` top-level sections in one file and the rest in another."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line[:1].isalpha() and ":" in line]
    at = starts[min(cut, len(starts) - 1)]
    return {
        "policies/a.yaml": "".join(lines[:at]).encode(),
        "policies/b.yaml": "".join(lines[at:]).encode(),
    }


def test_digest_and_decisions_do_not_depend_on_how_files_are_split():
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from policy_helpers import ctx, plan

    from app.policy.engine import evaluate

    whole = load_policy_files({"policies/all.yaml": BASE_POLICY.encode()})
    p = plan("  - {id: a, action: shell, with: {run: [x]}, compensate: {none: nope}}\n")
    expected = evaluate(p, whole, ctx())

    @settings(max_examples=8, deadline=None)
    @given(st.integers(min_value=3, max_value=8))
    def check(cut):
        files = _split(BASE_POLICY, cut)
        ps = load_policy_files(files)
        assert ps.digest == whole.digest
        got = evaluate(p, ps, ctx())
        assert got.verdict == expected.verdict and got.risk == expected.risk
        assert got.approvals == expected.approvals

    check()
