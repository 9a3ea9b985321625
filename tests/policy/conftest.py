from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from guard.settings import SHIPPED_POLICY_DIR


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """A writable copy of the shipped policies."""
    target = tmp_path / "policies"
    shutil.copytree(SHIPPED_POLICY_DIR, target)
    return target
