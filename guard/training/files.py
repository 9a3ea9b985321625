"""Small file helpers shared by training commands that must not need torch."""

from __future__ import annotations

import hashlib
from pathlib import Path

HOLDOUT_FILE = "holdout.json"  # a cross-fitting fold model's held-out kinds
CHECKPOINT_FILE = "guard.pt"  # a training run's weights (torch state dict), in its --work


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (models are tens of MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
