"""The shipped example plans pass `plangate check` (the README's first command)."""

from app.cli import main


def test_example_plans_pass_check(capsys):
    assert main(["check", "plans/"]) == 0
    assert "5 plans valid" in capsys.readouterr().out
