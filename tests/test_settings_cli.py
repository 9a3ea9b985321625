"""guard settings: the reference in docs/ is the generated one; files are checked."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from guard.cli import main
from guard.settings import REPO_ROOT, Settings
from guard.settings_cli import reference


def test_docs_settings_is_the_generated_reference() -> None:
    shipped = (REPO_ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    assert shipped == reference(), "regenerate: guard settings --reference > docs/settings.md"


def test_every_setting_is_in_the_reference_with_a_description() -> None:
    text = reference()
    for section, info in Settings.model_fields.items():
        model = info.annotation
        assert model is not None
        for name, field in model.model_fields.items():  # type: ignore[union-attr]
            assert f"`GUARD_{section.upper()}__{name.upper()}`" in text
            assert field.description, f"{section}.{name} has no description"


def test_a_file_is_checked_and_the_effective_settings_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "guard.yaml"
    config.write_text(
        "upstream: {url: 'http://llm:9000'}\nmemory: {secret: 'a-very-long-secret-key'}\n"
    )
    assert main(["settings", "--config", str(config)]) == 0
    printed = capsys.readouterr().out
    effective = yaml.safe_load(printed)
    assert effective["upstream"]["url"] == "http://llm:9000"
    assert effective["server"]["unguarded_generation"] == "refuse"
    assert "a-very-long-secret-key" not in printed  # secrets are masked


def test_a_bad_file_names_the_field_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "guard.yaml"
    config.write_text("server: {port: 99999}\n")
    assert main(["settings", "--config", str(config)]) == 2
    assert "server.port" in capsys.readouterr().err
