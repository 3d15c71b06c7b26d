"""Every bad input a user can write gets exit code 2 and a message naming file, line, step, field.

Each test goes through the real command line (``app.cli.main``), the way a user meets it, and
asserts exact substrings of the output. No traceback may ever reach the user.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from app.check import check_paths
from app.cli import main

HEADER = """\
apiVersion: plangate.dev/v1
kind: Plan
id: demo
title: Demo plan
team: platform
environment: staging
"""  # 6 lines: the first line after it is line 7


def run_check(tmp_path: Path, capsys, content: str | bytes, name: str = "plan.yaml"):
    """Write ``content`` to a plan file, run ``plangate check`` on it; returns (rc, path, out)."""
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    rc = main(["check", str(path)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert "internal error" not in captured.out + captured.err
    return rc, str(path), captured.out


def json_errors(tmp_path: Path, capsys, content: str) -> list[dict]:
    path = tmp_path / "plan.yaml"
    path.write_text(content)
    rc = main(["check", "--format", "json", str(path)])
    assert rc == 2
    return json.loads(capsys.readouterr().out)["errors"]


# -- the YAML layer ----------------------------------------------------------------------------


def test_duplicate_key_names_both_lines(tmp_path, capsys):
    rc, path, out = run_check(tmp_path, capsys, HEADER + "title: again\nsteps: []\n")
    assert rc == 2
    assert f"{path}:7:1: duplicate key 'title' (first defined on line 4)" in out


def test_duplicate_key_inside_a_step(tmp_path, capsys):
    text = HEADER + "steps:\n  - id: a\n    action: noop\n    action: shell\n"
    rc, path, out = run_check(tmp_path, capsys, text)
    assert rc == 2
    assert f"{path}:10:5: duplicate key 'action' (first defined on line 9)" in out


def test_anchor_rejected(tmp_path, capsys):
    text = HEADER + "steps:\n  - &x {id: a, action: noop}\n  - *x\n"
    rc, path, out = run_check(tmp_path, capsys, text)
    assert rc == 2
    assert f"{path}:8:5: YAML anchor '&x' is not allowed" in out


def test_alias_rejected(tmp_path, capsys):
    # an alias with no anchor is still an alias; the reader never resolves it
    text = HEADER + "steps:\n  - *missing\n"
    rc, path, out = run_check(tmp_path, capsys, text)
    assert rc == 2
    assert f"{path}:8:" in out
    assert "alias" in out.lower()


def test_alias_bomb_fails_fast_at_the_first_anchor(tmp_path, capsys):
    # "billion laughs": 9 levels of 9 aliases would expand to 9**9 strings if resolved
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    rc, path, out = run_check(tmp_path, capsys, "\n".join(lines) + "\n")
    assert rc == 2
    assert f"{path}:1:5: YAML anchor '&a0' is not allowed" in out
    assert out.count("error ") == 1


def test_non_utf8_names_file_and_line(tmp_path, capsys):
    rc, path, out = run_check(tmp_path, capsys, HEADER.encode() + b"description: caf\xe9\n")
    assert rc == 2
    assert f"{path}:7: file is not valid UTF-8" in out


def test_nul_bytes_are_binary(tmp_path, capsys):
    rc, path, out = run_check(tmp_path, capsys, HEADER.encode() + b"description: a\x00b\n")
    assert rc == 2
    assert f"{path}:7: file contains NUL bytes" in out


def test_png_is_not_a_plan(tmp_path, capsys):
    rc, path, out = run_check(tmp_path, capsys, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "x.yaml")
    assert rc == 2
    assert f"{path}:3: file contains NUL bytes: it looks binary, not YAML" in out


def test_latin1_is_not_utf8(tmp_path, capsys):
    rc, path, out = run_check(
        tmp_path, capsys, "id: ab\ntitle: Gr\u00fc\u00dfe\n".encode("latin-1")
    )
    assert rc == 2
    assert f"{path}:2: file is not valid UTF-8 (byte 16)" in out


def test_file_over_one_mib_rejected_before_parsing(tmp_path, capsys):
    text = HEADER + "description: " + "x" * (1024 * 1024) + "\n"
    rc, path, out = run_check(tmp_path, capsys, text)
    assert rc == 2
    assert f"{path}: file is 1,048,691 bytes" in out
    assert "the limit is 1,048,576 bytes" in out


def test_multiple_documents(tmp_path, capsys):
    text = HEADER + "steps:\n  - {id: a, action: noop}\n---\nid: other\n"
    rc, path, out = run_check(tmp_path, capsys, text)
    assert rc == 2
    assert f"{path}:9:1: more than one YAML document" in out


@pytest.mark.parametrize(
    ("content", "found"),
    [("- a\n- b\n", "list"), ("just text\n", "str"), ("42\n", "int"), ("---\n", "null")],
)
def test_non_mapping_top_level(tmp_path, capsys, content, found):
    rc, path, out = run_check(tmp_path, capsys, content)
    assert rc == 2
    assert f"{path}:1:1: top level must be a mapping (key: value), found {found}" in out


@pytest.mark.parametrize("content", ["", "\n\n", "# only a comment\n", "   \n# x\n"])
def test_empty_file(tmp_path, capsys, content):
    rc, path, out = run_check(tmp_path, capsys, content)
    assert rc == 2
    assert f"{path}: file is empty: expected a YAML mapping" in out


@pytest.mark.parametrize(
    ("snippet", "tag"),
    [
        ("!!python/object:os.system {id: a, action: noop}", "!!python/object:os.system"),
        ("{id: !!python/name:os.system a, action: noop}", "!!python/name:os.system"),
        ("{id: a, action: noop, with: {message: !!binary aGVsbG8=}}", "!!binary"),
        ("{id: a, action: noop, with: {message: !!set {a}}}", "!!set"),
        ("{id: a, action: noop, with: {message: !custom x}}", "!custom"),
        ("!!python/object/apply:os.system [echo pwned]", "!!python/object/apply:os.system"),
    ],
)
def test_yaml_tags_rejected(tmp_path, capsys, snippet, tag):
    rc, path, out = run_check(tmp_path, capsys, HEADER + f"steps:\n  - {snippet}\n")
    assert rc == 2
    assert f"{path}:8:" in out
    assert f"YAML tag '{tag}' is not allowed" in out


def test_syntax_error_is_located(tmp_path, capsys):
    rc, path, out = run_check(tmp_path, capsys, HEADER + "steps: [a, b\n")
    assert rc == 2
    assert f"{path}:8:1: invalid YAML:" in out


def test_merge_key_rejected(tmp_path, capsys):
    text = HEADER + "steps:\n  - {id: a, action: noop, <<: {x: 1}}\n"
    rc, path, out = run_check(tmp_path, capsys, text)
    assert rc == 2
    assert f"{path}:8:27: YAML merge keys ('<<') are not allowed" in out


def test_integer_beyond_json_range_rejected(tmp_path, capsys):
    text = HEADER + (
        "steps:\n  - id: a\n    action: http\n"
        "    with: {url: 'https://x', json: {n: 99999999999999999999}}\n"
        "    compensate: {none: read only in practice}\n"
    )
    rc, path, out = run_check(tmp_path, capsys, text)
    assert rc == 2
    assert f"{path}:10:40: integer '99999999999999999999' is too large" in out


# -- the plan layer ----------------------------------------------------------------------------


def test_unknown_fields_named_with_closest_suggestion(tmp_path, capsys):
    text = HEADER + (
        "stpes: []\n"
        "steps:\n"
        "  - id: a\n"
        "    action: noop\n"
        "    neds: [b]\n"
        "    retry: {max_atempts: 2}\n"
    )
    rc, path, out = run_check(tmp_path, capsys, text)
    assert rc == 2
    assert f"{path}:7:1: unknown field 'stpes' (did you mean 'steps'?)" in out
    assert f"{path}:11:5: step 'a': unknown field 'neds' (did you mean 'needs'?)" in out
    assert (
        f"{path}:12:13: step 'a': unknown field 'max_atempts' in 'retry' "
        "(did you mean 'max_attempts'?)"
    ) in out
    # a step that failed validation does not also make 'steps' look empty
    assert "at least 1 item" not in out


def test_unknown_field_without_close_match_points_at_schema(tmp_path, capsys):
    text = HEADER + "frobnicate: 1\nsteps:\n  - {id: a, action: noop}\n"
    rc, path, out = run_check(tmp_path, capsys, text)
    assert rc == 2
    assert (
        f"{path}:7:1: unknown field 'frobnicate' (allowed here: apiVersion, budget, canary, "
        "description, environment, github, id, kind, max_parallel, resources, steps, team, title)"
    ) in out


@pytest.mark.parametrize(
    ("step", "message"),
    [
        # suggestions come from the fields allowed *where the key was written*
        ("{id: a, action: noop, retry: {nmae: x}}", "unknown field 'nmae' in 'retry' (allowed"),
        (
            "{id: a, action: probe, with: {http: {url: 'https://x', jsonpath: a}, "
            "thresholds: {max_value: 1}}}",
            "unknown field 'jsonpath' in 'with.http' (did you mean 'json_path'?)",
        ),
        (
            "{id: a, action: shell, with: {run: [x]}, compensate: {action: noop, retyr: {}}}",
            "unknown field 'retyr' in 'compensate' (did you mean 'retry'?)",
        ),
        (
            "{id: a, action: noop, estimate: {tokens: {model: m, inptu: 1}}}",
            "unknown field 'inptu' in 'estimate.tokens' (did you mean 'input'?)",
        ),
    ],
)
def test_unknown_field_suggestions_are_local(tmp_path, capsys, step, message):
    rc, path, out = run_check(tmp_path, capsys, HEADER + f"steps:\n  - {step}\n")
    assert rc == 2
    assert f"{path}:8:" in out
    assert f"step 'a': {message}" in out
    assert "did you mean 'name'" not in out


def test_missing_required_fields(tmp_path, capsys):
    text = "apiVersion: plangate.dev/v1\nkind: Plan\nid: x\nsteps:\n  - {id: a}\n"
    errors = json_errors(tmp_path, capsys, text)
    messages = {e["message"] for e in errors}
    assert "missing required field 'title'" in messages
    assert "missing required field 'team'" in messages
    assert "step 'a': missing required field 'action'" in messages
    step_error = next(e for e in errors if e["step"] == "a")
    assert step_error["line"] == 5
    assert step_error["code"] == "field.missing"


def test_unknown_action_with_suggestion(tmp_path, capsys):
    rc, path, out = run_check(tmp_path, capsys, HEADER + "steps:\n  - {id: a, action: nop}\n")
    assert rc == 2
    assert f"{path}:8:21: step 'a': unknown action 'nop' (did you mean 'noop'?)" in out
    # an unknown action is one error, not also a "missing compensation" for a guessed mutation
    assert "compensate" not in out


def test_bad_action_inputs_name_step_and_field(tmp_path, capsys):
    text = HEADER + (
        "steps:\n"
        "  - id: call\n"
        "    action: http\n"
        "    with:\n"
        "      url: ftp://example.com\n"
        "      method: FETCH\n"
        "      retries: 3\n"
        "    compensate: {none: the endpoint is read-only}\n"
    )
    errors = json_errors(tmp_path, capsys, text)
    by_field = {e["field"]: e for e in errors}
    assert by_field["with.url"]["line"] == 11
    assert by_field["with.url"]["step"] == "call"
    assert by_field["with.url"]["code"] == "action.input"
    assert by_field["with.method"]["line"] == 12
    assert "'GET'" in by_field["with.method"]["message"]
    assert by_field["with.retries"]["code"] == "field.unknown"
    assert by_field["with.retries"]["line"] == 13


def test_bad_compensation_inputs(tmp_path, capsys):
    text = HEADER + (
        "steps:\n"
        "  - id: a\n"
        "    action: shell\n"
        "    with: {run: [deploy]}\n"
        "    compensate:\n"
        "      action: shell\n"
        "      with: {run: []}\n"
    )
    rc, path, out = run_check(tmp_path, capsys, text)
    assert rc == 2
    assert f"{path}:13:19: step 'a': field 'compensate.with.run'" in out


def test_cycle_reported_with_its_path(tmp_path, capsys):
    text = HEADER + (
        "steps:\n"
        "  - {id: a, action: noop, needs: [c]}\n"
        "  - {id: b, action: noop, needs: [a]}\n"
        "  - {id: c, action: noop, needs: [b]}\n"
    )
    rc, path, out = run_check(tmp_path, capsys, text)
    assert rc == 2
    assert f"{path}:8:5: steps form a cycle: a -> c -> b -> a" in out


def test_step_needing_itself(tmp_path, capsys):
    rc, path, out = run_check(
        tmp_path, capsys, HEADER + "steps:\n  - {id: a, action: noop, needs: [a]}\n"
    )
    assert rc == 2
    assert f"{path}:8:35: step 'a' needs itself" in out


def test_unknown_need_with_suggestion(tmp_path, capsys):
    text = HEADER + (
        "steps:\n  - {id: backup, action: noop}\n  - {id: migrate, action: noop, needs: [bakup]}\n"
    )
    rc, path, out = run_check(tmp_path, capsys, text)
    assert rc == 2
    assert f"{path}:9:41: step 'migrate' needs unknown step 'bakup' (did you mean 'backup'?)" in out


def test_duplicate_step_ids(tmp_path, capsys):
    text = HEADER + "steps:\n  - {id: a, action: noop}\n  - {id: a, action: noop}\n"
    rc, path, out = run_check(tmp_path, capsys, text)
    assert rc == 2
    assert f"{path}:9:10: step id 'a' is used twice (first by step #1)" in out


def test_duplicate_plan_ids_across_files(tmp_path, capsys):
    plan = HEADER + "steps:\n  - {id: a, action: noop}\n"
    (tmp_path / "one.yaml").write_text(plan)
    (tmp_path / "two.yml").write_text(plan)
    rc = main(["check", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 2
    assert f"{tmp_path / 'two.yml'}:3:5: plan id 'demo' is already used by" in out
    assert str(tmp_path / "one.yaml") in out


def test_mutating_step_without_compensation(tmp_path, capsys):
    text = HEADER + "steps:\n  - id: deploy\n    action: shell\n    with: {run: [deploy]}\n"
    rc, path, out = run_check(tmp_path, capsys, text)
    assert rc == 2
    assert (
        f"{path}:8:5: step 'deploy' changes the outside world (mutates: true) but declares "
        "no 'compensate'"
    ) in out


def test_explicit_mutates_needs_compensation_even_for_a_read_only_action(tmp_path, capsys):
    text = (
        HEADER
        + "steps:\n  - {id: ask, action: agent, mutates: true, with: {model: m, prompt: p}}\n"
    )
    rc, _path, out = run_check(tmp_path, capsys, text)
    assert rc == 2
    assert "step 'ask' changes the outside world" in out


def test_compensate_none_needs_a_reason(tmp_path, capsys):
    text = HEADER + (
        "steps:\n  - id: a\n    action: shell\n    with: {run: [x]}\n    compensate: {none: ''}\n"
    )
    rc, path, out = run_check(tmp_path, capsys, text)
    assert rc == 2
    assert f"{path}:11:24: step 'a': field 'compensate.none': String should have at least 3" in out


def test_compensate_none_stands_alone(tmp_path, capsys):
    text = HEADER + (
        "steps:\n  - id: a\n    action: shell\n    with: {run: [x]}\n"
        "    compensate: {none: no undo, action: noop}\n"
    )
    rc, path, out = run_check(tmp_path, capsys, text)
    assert rc == 2
    assert f"{path}:11:33: step 'a': unknown field 'action' in 'compensate'" in out
    assert "stands alone" in out


def test_compensate_must_be_a_mapping(tmp_path, capsys):
    text = HEADER + (
        "steps:\n  - id: a\n    action: shell\n    with: {run: [x]}\n    compensate: none\n"
    )
    rc, path, out = run_check(tmp_path, capsys, text)
    assert rc == 2
    assert (
        f"{path}:11:17: step 'a': field 'compensate': expected a mapping (key: value), found text"
    ) in out
    assert "Compensation" not in out  # no pydantic class names reach the user


def test_mutates_cannot_be_overridden_for_fixed_actions(tmp_path, capsys):
    text = HEADER + "steps:\n  - {id: a, action: noop, mutates: true}\n"
    rc, path, out = run_check(tmp_path, capsys, text)
    assert rc == 2
    assert f"{path}:8:36: step 'a': action 'noop' always has mutates: false" in out
    assert "compensate" not in out.replace("remove the 'mutates' field", "")


CANARY_STEPS = """\
steps:
  - id: canary
    action: noop
  - id: check
    action: probe
    needs: [canary]
    with:
      http: {url: "https://metrics.example/x", json_path: error_rate}
      thresholds: {max_error_rate: 0.01}
  - id: fleet
    action: noop
    needs: [check]
"""


def test_canary_unknown_step(tmp_path, capsys):
    text = HEADER + "canary: {steps: [canery], analysis: [check]}\n" + CANARY_STEPS
    rc, path, out = run_check(tmp_path, capsys, text)
    assert rc == 2
    assert f"{path}:7:18: canary.steps names unknown step 'canery'" in out


def test_canary_analysis_must_be_a_probe(tmp_path, capsys):
    text = HEADER + "canary: {steps: [canary], analysis: [fleet]}\n" + CANARY_STEPS
    rc, path, out = run_check(tmp_path, capsys, text)
    assert rc == 2
    assert f"{path}:7:38: canary analysis step 'fleet' uses action 'noop'" in out


def test_canary_step_cannot_need_its_analysis(tmp_path, capsys):
    text = HEADER + "canary: {steps: [fleet], analysis: [check]}\n" + CANARY_STEPS
    rc, path, out = run_check(tmp_path, capsys, text)
    assert rc == 2
    assert f"{path}:19:12: canary step 'fleet' needs analysis step 'check'" in out


def test_canary_step_and_probe_overlap(tmp_path, capsys):
    text = HEADER + "canary: {steps: [check], analysis: [check]}\n" + CANARY_STEPS
    rc, _path, out = run_check(tmp_path, capsys, text)
    assert rc == 2
    assert "step 'check' is both a canary step and an analysis probe" in out


def test_canary_probe_must_follow_a_canary_step(tmp_path, capsys):
    steps = CANARY_STEPS.replace("    needs: [canary]\n", "")
    text = HEADER + "canary: {steps: [canary], analysis: [check]}\n" + steps
    rc, path, out = run_check(tmp_path, capsys, text)
    assert rc == 2
    assert (
        f"{path}:7:38: analysis step 'check' does not need any canary step, so it would judge "
        "the canary before the canary ran (add a canary step to the needs of 'check')"
    ) in out


def test_valid_canary_passes(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text(HEADER + "canary: {steps: [canary], analysis: [check]}\n" + CANARY_STEPS)
    assert check_paths([path]).exit_code == 0  # validation only; policy is not this test's


@pytest.mark.parametrize(
    ("retry", "field", "message"),
    [
        ("{max_attempts: 0}", "retry.max_attempts", "greater than or equal to 1"),
        ("{max_attempts: 101}", "retry.max_attempts", "less than or equal to 100"),
        ("{backoff_coefficient: 0.5}", "retry.backoff_coefficient", "greater than or equal to 1"),
        ("{initial_interval: 5m, max_interval: 1s}", "retry", "max_interval must be at least"),
        ("{initial_interval: soon}", "retry.initial_interval", "'soon' is not a duration"),
        ("{max_interval: 8d}", "retry.max_interval", "'8d' is not a duration"),
        ("{jitter: half}", "retry.jitter", "'full' or 'none'"),
    ],
)
def test_retry_bounds(tmp_path, capsys, retry, field, message):
    text = HEADER + f"steps:\n  - id: a\n    action: noop\n    retry: {retry}\n"
    rc, path, out = run_check(tmp_path, capsys, text)
    assert rc == 2
    assert f"{path}:10:" in out
    assert f"step 'a': field '{field}': " in out
    assert message in out


@pytest.mark.parametrize(
    ("timeout", "message"),
    [
        ("-1", "greater than or equal to 0"),
        ("700000", "less than or equal to 604800"),
        ("169h", "less than or equal to 604800"),
        ("true", "Input should be a valid number"),
        ("five minutes", "'five minutes' is not a duration"),
    ],
)
def test_timeout_bounds(tmp_path, capsys, timeout, message):
    text = HEADER + f"steps:\n  - id: a\n    action: noop\n    timeout: {timeout}\n"
    rc, path, out = run_check(tmp_path, capsys, text)
    assert rc == 2
    assert f"{path}:10:14: step 'a': field 'timeout': " in out
    assert message in out


def test_invalid_ids(tmp_path, capsys):
    text = HEADER.replace("id: demo", "id: Demo Plan") + "steps:\n  - {id: Step_1, action: noop}\n"
    rc, path, out = run_check(tmp_path, capsys, text)
    assert rc == 2
    assert f"{path}:3:5: field 'id': 'Demo Plan' is not a valid id" in out
    assert f"{path}:8:10: step 'Step_1': field 'id': 'Step_1' is not a valid id" in out


def test_steps_must_be_mappings(tmp_path, capsys):
    rc, path, out = run_check(tmp_path, capsys, HEADER + "steps: [1, deploy]\n")
    assert rc == 2
    assert f"{path}:7:9: step #1: expected a mapping (key: value), found an integer" in out
    assert f"{path}:7:12: step #2: expected a mapping (key: value), found text" in out


def test_reference_to_step_not_in_needs(tmp_path, capsys):
    text = HEADER + (
        "steps:\n"
        "  - {id: a, action: noop}\n"
        "  - {id: b, action: noop, with: {message: '${{ steps.a.outputs.x }}'}}\n"
        "  - {id: c, action: noop, with: {message: '${{ steps.zz.outputs.x }}'}}\n"
        "  - {id: d, action: noop, with: {message: '${{ secrets.TOKEN }}'}}\n"
    )
    rc, path, out = run_check(tmp_path, capsys, text)
    assert rc == 2
    assert f"{path}:9:43: step 'b': uses outputs of 'a', which is not among its" in out
    assert f"{path}:10:43: step 'c': reference to unknown step 'zz'" in out
    assert f"{path}:11:43: step 'd': unsupported reference '${{{{ secrets.TOKEN }}}}'" in out
    assert "pass secrets by name" in out


def test_all_errors_in_a_file_are_reported_at_once(tmp_path, capsys):
    text = HEADER + (
        "budget: {money: {soft: 10, hard: 5}}\n"  # 7
        "steps:\n"  # 8
        "  - {id: a, action: nop}\n"  # 9  unknown action
        "  - {id: b, action: noop, needs: [zz]}\n"  # 10 unknown need
        "  - {id: c, action: shell, with: {run: [x]}}\n"  # 11 no compensation
        "  - {id: d, action: noop, timeout: forever}\n"  # 12 bad duration
        "  - {id: e, action: http, with: {url: nope}, compensate: {none: read only}}\n"  # 13
        "  - {id: f, action: noop, colour: blue}\n"  # 14 unknown field
    )
    errors = json_errors(tmp_path, capsys, text)
    found = {(e["line"], e["code"]) for e in errors}
    assert {
        (7, "field.invalid"),
        (9, "action.unknown"),
        (10, "step.unknown_need"),
        (11, "step.compensation_missing"),
        (12, "field.invalid"),
        (13, "action.input"),
        (14, "field.unknown"),
    } <= found
    assert all(e["path"].endswith("plan.yaml") for e in errors)


def test_errors_in_several_files_are_all_reported(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text(HEADER + "steps:\n  - {id: a, action: nop}\n")
    (tmp_path / "b.yaml").write_text("- not a plan\n")
    (tmp_path / "c.yaml").write_text(
        HEADER.replace("demo", "ok") + "steps: [{id: a, action: noop}]\n"
    )
    rc = main(["check", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 2
    assert f"{tmp_path / 'a.yaml'}:8:" in out
    assert f"{tmp_path / 'b.yaml'}:1:1:" in out
    assert f" {tmp_path / 'c.yaml'}  ok  (1 steps" in out


# -- paths ---------------------------------------------------------------------------------------


def test_missing_path(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    rc = main(["check", str(missing)])
    captured = capsys.readouterr()
    assert rc == 2
    assert f"{missing}: no such file or directory" in captured.out


def test_directory_with_no_plans(tmp_path, capsys):
    (tmp_path / "README.md").write_text("not a plan")
    rc = main(["check", str(tmp_path)])
    assert rc == 2
    assert (
        f"{tmp_path}: directory contains no plan files (*.yaml, *.yml)" in capsys.readouterr().out
    )


def test_directory_is_searched_recursively(tmp_path, capsys):
    nested = tmp_path / "team" / "prod"
    nested.mkdir(parents=True)
    (nested / "p.yml").write_text(HEADER + "steps: [{id: a, action: noop}]\n")
    (tmp_path / "notes.txt").write_text("not a plan")
    report = check_paths([tmp_path])
    assert report.exit_code == 0
    assert [f.path for f in report.files] == [str(nested / "p.yml")]


def test_unreadable_garbage_never_shows_a_traceback(tmp_path, capsys):
    for i, blob in enumerate([b"{{{{", b"]", b"key: [", b"\t- a", b"a: b: c", b"\xef\xbb\xbf"]):
        rc, _, _ = run_check(tmp_path, capsys, blob, f"g{i}.yaml")
        assert rc == 2


def test_yaml_booleans_and_numbers_where_text_is_expected(tmp_path, capsys):
    text = HEADER.replace("id: demo", "id: 2024") + "steps:\n  - {id: yes, action: noop}\n"
    rc, path, out = run_check(tmp_path, capsys, text)
    assert rc == 2
    assert (
        f"{path}:3:5: field 'id': expected text, found an integer "
        "(quote the value to keep it text, e.g. '2024')"
    ) in out
    assert f"{path}:8:10: step #1: field 'id': expected text, found a boolean (YAML reads" in out


def test_load_plan_refuses_directories_devices_and_missing_files(tmp_path):
    from app.errors import PlanError
    from app.plan.loader import load_plan

    with pytest.raises(PlanError, match=r"is a directory, not a plan file") as exc:
        load_plan(tmp_path)
    assert exc.value.issues[0].code == "path.directory"
    with pytest.raises(PlanError, match=r"nope.yaml: file does not exist"):
        load_plan(tmp_path / "nope.yaml")
    if Path("/dev/zero").exists():  # endless input: refused, never read
        with pytest.raises(PlanError, match=r"/dev/zero: is not a regular file") as exc:
            load_plan("/dev/zero")
        assert exc.value.issues[0].code == "path.not_file"
    fifo = tmp_path / "pipe.yaml"
    if hasattr(os, "mkfifo"):  # a FIFO with no writer would block a naive open() forever
        os.mkfifo(fifo)
        with pytest.raises(PlanError, match=r"pipe.yaml: is not a regular file"):
            load_plan(fifo)


def test_big_file_is_refused_before_it_is_read(tmp_path, capsys):
    path = tmp_path / "huge.yaml"
    with path.open("wb") as handle:
        handle.truncate(50 * 1024 * 1024)  # sparse: 50 MiB on paper, nothing on disk
    rc = main(["check", str(path)])
    assert rc == 2
    assert (
        f"{path}: file is 52,428,800 bytes; the limit is 1,048,576 bytes" in capsys.readouterr().out
    )


# -- security invariants -------------------------------------------------------------------------


def test_python_tags_never_execute(tmp_path, capsys):
    marker = tmp_path / "pwned"
    payloads = [
        f'!!python/object/apply:os.system ["touch {marker}"]',
        f'!!python/object/apply:subprocess.check_call [["touch", "{marker}"]]',
        f"!!python/object/new:os.system [touch {marker}]",
    ]
    for i, payload in enumerate(payloads):
        rc, path, out = run_check(
            tmp_path, capsys, HEADER + f"description: {payload}\n", f"{i}.yaml"
        )
        assert rc == 2
        assert f"{path}:7:14: YAML tag '!!python/object/" in out
    assert not marker.exists()


def test_alias_bomb_is_refused_without_expanding(tmp_path):
    # 10 levels of 10 aliases: 10**10 nodes if anything expanded it
    from app.errors import PlanError
    from app.plan.loader import load_plan_bytes

    lines = ["a0: &a0 [x]"] + [
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 11)
    ]
    with pytest.raises(PlanError, match=r"bomb.yaml:1:5: YAML anchor '&a0' is not allowed"):
        load_plan_bytes("bomb.yaml", "\n".join(lines).encode())


def test_a_broken_field_does_not_hide_the_rest_of_its_step(tmp_path, capsys):
    text = HEADER + (
        "steps:\n"  # 7
        "  - id: canary\n"  # 8
        "    action: shell\n"  # 9
        "    with: {run: [deploy]}\n"  # 10
        "    retry: {max_atempts: 3}\n"  # 11 unknown field ...
        "  - id: fleet\n"  # 12 ... and no compensation (line 8)
        "    action: http\n"  # 13
        "    needs: [canery]\n"  # 14 unknown need
        "    with: {url: 'https://deploy.example', method: PUT}\n"  # 15
        "    timeout: 2 hours\n"  # 16 bad duration; no compensation either (line 12)
    )
    errors = json_errors(tmp_path, capsys, text)
    assert [(e["line"], e["step"], e["code"]) for e in errors] == [
        (8, "canary", "step.compensation_missing"),
        (11, "canary", "field.unknown"),
        (12, "fleet", "step.compensation_missing"),
        (14, "fleet", "step.unknown_need"),
        (16, "fleet", "field.invalid"),
    ]
    assert errors[3]["hint"] == "did you mean 'canary'?"


def test_a_dropped_compensate_is_not_also_reported_missing(tmp_path, capsys):
    text = HEADER + (
        "steps:\n  - id: a\n    action: shell\n    with: {run: [x]}\n"
        "    timeout: soon\n    compensate: {action: shell, retry: {max_attempts: 0}}\n"
    )
    errors = json_errors(tmp_path, capsys, text)
    assert {e["code"] for e in errors} == {"field.invalid"}
    assert {e["field"] for e in errors} == {"timeout", "compensate.retry.max_attempts"}


def test_plan_level_checks_run_even_when_a_plan_field_is_invalid(tmp_path, capsys):
    text = HEADER.replace("title: Demo plan\n", "") + (
        "resources: [db/a, db/a]\n"  # 6
        "canary: {steps: [canery], analysis: [check]}\n"  # 7
        "steps:\n"  # 8
        "  - {id: check, action: probe, timeout: soon, with: {http: {url: 'https://m', "
        "json_path: x}, thresholds: {max_value: 1}}}\n"  # 9
        "  - {id: b, action: noop, with: {message: '${{ steps.check.outputs.v }}'}}\n"  # 10
    )
    errors = json_errors(tmp_path, capsys, text)
    assert [(e["line"], e["code"]) for e in errors] == [
        (1, "field.missing"),
        (6, "plan.duplicate_resource"),
        (7, "canary.unknown_step"),
        (9, "field.invalid"),
        (10, "ref.not_upstream"),
    ]
