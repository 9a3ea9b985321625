from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from guard.decisions import Mode
from guard.errors import PolicyError
from guard.policy import cli as policy_cli
from guard.policy import inspect_policies, load_policies
from guard.policy.cli import SCHEMAS
from guard.policy.loader import PolicyIssue
from guard.scoring import HAZARDS
from guard.settings import SHIPPED_POLICY_DIR


def _policy_cli(argv: list[str]) -> int:
    """``guard policy ...`` without the other subcommands (their modules may be absent)."""
    parser = argparse.ArgumentParser(prog="guard policy")
    policy_cli.add_arguments(parser)
    return policy_cli.run(parser.parse_args(argv))


def _errors(directory: Path) -> list[PolicyIssue]:
    policies, issues = inspect_policies(directory)
    assert policies is None
    return [issue for issue in issues if issue.severity == "error"]


def _line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


def test_shipped_policies_cover_every_hazard_without_findings() -> None:
    policies, issues = inspect_policies(SHIPPED_POLICY_DIR)
    assert issues == []
    assert policies is not None
    assert set(policies.categories) == set(HAZARDS)
    assert policies.mode is Mode.OBSERVE
    for policy in policies.categories.values():
        assert len(policy.refusals) >= 2
        assert len(policy.reason) > 60, policy.category  # a real reason, not a label


def test_out_of_range_threshold_is_reported_at_its_line(policy_dir: Path) -> None:
    path = policy_dir / "cyber_attacks.yaml"
    path.write_text(path.read_text().replace("block: 0.85}", "block: 1.5}", 1))
    (issue,) = _errors(policy_dir)
    assert issue.file == path
    assert issue.line == _line_of(path, "block: 1.5")
    assert issue.field == "thresholds.block"
    assert str(issue).startswith(f"{path}:{issue.line}: error: thresholds.block:")


def test_thresholds_out_of_order_are_rejected(policy_dir: Path) -> None:
    path = policy_dir / "hate.yaml"
    path.write_text(
        path.read_text().replace(
            "{flag: 0.5, rewrite: 0.55, block: 0.88}", "{flag: 0.9, rewrite: 0.55, block: 0.88}"
        )
    )
    (issue,) = _errors(policy_dir)
    assert issue.field == "thresholds"
    assert "flag (0.9) must not exceed block (0.88)" in issue.message
    assert issue.line == _line_of(path, "thresholds:")


def test_unknown_key_names_the_key_and_line(policy_dir: Path) -> None:
    path = policy_dir / "privacy.yaml"
    path.write_text(path.read_text() + "severity: high\n")
    (issue,) = _errors(policy_dir)
    assert (issue.field, issue.line) == ("severity", _line_of(path, "severity: high"))
    assert "Extra inputs are not permitted" in issue.message


def test_unknown_placeholder_points_at_the_variant(policy_dir: Path) -> None:
    path = policy_dir / "elections.yaml"
    text = path.read_text().replace(
        '"I won\'t write that one. {reason} {offer}"', '"I won\'t write that one. {reasons}"'
    )
    path.write_text(text)
    (issue,) = _errors(policy_dir)
    assert issue.field == "refusals.2"
    assert issue.line == _line_of(path, "{reasons}")
    assert "unknown placeholder {reasons}" in issue.message


def test_duplicate_keys_are_caught(policy_dir: Path) -> None:
    path = policy_dir / "defamation.yaml"
    path.write_text(path.read_text() + "offer: something else entirely\n")
    (issue,) = _errors(policy_dir)
    assert issue.field == "offer"
    assert issue.line == len(path.read_text().splitlines())
    assert "twice" in issue.message


def test_yaml_syntax_error_has_a_line(policy_dir: Path) -> None:
    path = policy_dir / "sexual_content.yaml"
    path.write_text(path.read_text().replace("refusals:", "refusals: [", 1))
    issues = _errors(policy_dir)
    assert any(i.file == path and i.field == "<yaml>" and i.line > 1 for i in issues)


def test_missing_and_stray_files(policy_dir: Path) -> None:
    (policy_dir / "privacy.yaml").unlink()
    (policy_dir / "gambling.yaml").write_text("category: gambling\n")
    issues = {issue.file.name: issue for issue in _errors(policy_dir)}
    assert "missing" in issues["privacy.yaml"].message
    assert "not a hazard category" in issues["gambling.yaml"].message


def test_file_must_describe_its_own_category(policy_dir: Path) -> None:
    path = policy_dir / "hate.yaml"
    path.write_text(path.read_text().replace("category: hate", "category: elections"))
    issues = _errors(policy_dir)
    line = _line_of(path, "category: elections")
    assert any(i.file == path and i.field == "category" and i.line == line for i in issues)


def test_context_rules_must_name_defined_contexts(policy_dir: Path) -> None:
    path = policy_dir / "violent_crimes.yaml"
    path.write_text(path.read_text().replace("  fiction_writing:", "  fiction:"))
    (issue,) = _errors(policy_dir)
    assert (issue.field, issue.line) == ("contexts.fiction", _line_of(path, "  fiction:"))


def test_deployment_must_declare_defined_contexts(policy_dir: Path) -> None:
    path = policy_dir / "global.yaml"
    path.write_text(path.read_text().replace("deployment: []", "deployment: [red_team]"))
    (issue,) = _errors(policy_dir)
    assert issue.field == "deployment"
    assert issue.line == _line_of(path, "deployment: [red_team]")
    assert "red_team" in issue.message


def test_declared_context_relaxes_the_categories_that_react(policy_dir: Path) -> None:
    path = policy_dir / "global.yaml"
    path.write_text(path.read_text().replace("deployment: []", "deployment: [security_research]"))
    policies = load_policies(policy_dir)
    cyber = policies.categories["cyber_attacks"]
    assert (cyber.thresholds.flag, cyber.thresholds.block) == (0.8, 0.99)
    assert "authorised testing" in cyber.offer
    shipped = load_policies(SHIPPED_POLICY_DIR)
    assert policies.categories["hate"] == shipped.categories["hate"]  # no rule: unchanged


def test_declared_context_nobody_reacts_to_is_a_warning(policy_dir: Path) -> None:
    path = policy_dir / "global.yaml"
    text = path.read_text().replace("deployment: []", "deployment: [legal]")
    path.write_text(text.replace("contexts:\n", "contexts:\n  legal: Lawyers at work.\n", 1))
    policies, issues = inspect_policies(policy_dir)
    assert policies is not None
    (issue,) = issues
    assert issue.severity == "warning" and issue.field == "deployment.0"


def test_load_raises_policy_error_listing_every_problem(policy_dir: Path) -> None:
    (policy_dir / "privacy.yaml").unlink()
    hate = policy_dir / "hate.yaml"
    hate.write_text(hate.read_text() + "extra: 1\n")
    with pytest.raises(PolicyError) as caught:
        load_policies(policy_dir)
    message = str(caught.value)
    assert "privacy.yaml:1:" in message and f"{hate}:" in message


def test_mode_override_beats_category_and_global(policy_dir: Path) -> None:
    path = policy_dir / "hate.yaml"
    path.write_text(path.read_text() + "mode: enforce\n")
    policies = load_policies(policy_dir)
    assert policies.mode_for("hate") is Mode.ENFORCE
    assert policies.mode_for("privacy") is Mode.OBSERVE
    assert policies.with_mode(Mode.OBSERVE).mode_for("hate") is Mode.OBSERVE


def test_version_is_a_content_hash(policy_dir: Path) -> None:
    before = load_policies(policy_dir).version
    assert load_policies(policy_dir).version == before
    path = policy_dir / "hate.yaml"
    path.write_text(path.read_text() + "# a comment changes the version\n")
    assert load_policies(policy_dir).version != before


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_schema_export(kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _policy_cli(["schema", kind]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["additionalProperties"] is False
    expected = "refusals" if kind == "category" else "escalation"
    assert expected in schema["properties"]


def test_check_command_exit_codes(policy_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _policy_cli(["check", str(policy_dir)]) == 0
    assert "ok (15 categories" in capsys.readouterr().out
    path = policy_dir / "privacy.yaml"
    path.write_text(path.read_text() + "severity: high\n")
    assert _policy_cli(["check", str(policy_dir)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:{_line_of(path, 'severity')}: error: severity:" in err


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_shipped_schema_files_match_the_models(kind: str) -> None:
    """Editors validate policies/ against these files: regenerate with `guard policy schema`."""
    shipped = json.loads((SHIPPED_POLICY_DIR / "schema" / f"{kind}.schema.json").read_text())
    assert shipped == SCHEMAS[kind].model_json_schema()
