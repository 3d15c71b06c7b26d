"""The loader never raises anything but ``PlanError`` on bad input, whatever the bytes."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.errors import PlanError
from app.plan.loader import LoadedPlan, load_plan_bytes

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = (ROOT / "plans" / "rotate-db-credentials.yaml").read_bytes()

#: pieces of YAML and of plans, so generated text reaches deep into the loader
TOKENS = [
    "apiVersion: plangate.dev/v1\n", "kind: Plan\n", "id: p\n", "title: t\n", "team: t\n",
    "environment: e\n", "steps:\n", "  - ", "id: a", "action: noop", "action: http",
    "action: shell", "action: probe", "needs: [a]", "needs: [b, a]", "with: {run: [x]}",
    "with: {url: 'https://x'}", "compensate: {none: because}", "compensate: {action: noop}",
    "retry: {max_attempts: 2}", "timeout: 5m", "timeout: -1", "canary: {steps: [a], analysis: [b]}",
    "budget: {money: {hard: '1.5'}}", "mutates: true", "${{ steps.a.outputs.x }}",
    "\n", "    ", "  ", ": ", "- ", "{", "}", "[", "]", ",", "'", '"', "#", "|", ">", "&a ", "*a",
    "!!str ", "!!python/object ", "!x ", "---\n", "...\n", "%YAML 1.1\n", "? ", "<<: ", "\t",
    "~", "null", "yes", "0x1F", "1e3", ".inf", "9999999999999999999", "2024-01-01", "\ufeff",
    "\x00", "é", "\\", "\\x", "%", "@", "`",
]  # fmt: skip


def _assert_only_plan_errors(raw: bytes) -> None:
    try:
        result = load_plan_bytes("fuzz.yaml", raw)
    except PlanError as exc:
        assert exc.issues
        for issue in exc.issues:
            assert issue.path == "fuzz.yaml"
            assert issue.message
            assert issue.code
    else:
        assert isinstance(result, LoadedPlan)
        assert result.digest.startswith("sha256:")


@SETTINGS
@given(st.binary(max_size=400))
def test_arbitrary_bytes(raw):
    _assert_only_plan_errors(raw)


@SETTINGS
@given(st.lists(st.sampled_from(TOKENS), max_size=40).map("".join))
def test_yaml_ish_text(text):
    _assert_only_plan_errors(text.encode("utf-8", "surrogatepass"))


@SETTINGS
@given(st.text(max_size=200))
def test_arbitrary_text(text):
    _assert_only_plan_errors(text.encode("utf-8", "surrogatepass"))


@SETTINGS
@given(
    st.integers(0, len(EXAMPLE)),
    st.integers(0, 40),
    st.lists(st.sampled_from(TOKENS), max_size=4).map("".join),
)
def test_damaged_real_plan(position, cut, insert):
    """A real plan with a slice removed and tokens inserted: deep, realistic breakage."""
    raw = EXAMPLE[:position] + insert.encode("utf-8", "surrogatepass") + EXAMPLE[position + cut :]
    _assert_only_plan_errors(raw)
