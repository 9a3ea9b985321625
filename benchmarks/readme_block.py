"""Rewriting one generated block of a README: the text between its two markers.

Result tables are written by the scripts from their result files, never by hand; each
lives between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def update_block(readme: Path, name: str, text: str) -> None:
    """Replace block ``name`` of ``readme`` with ``text``; exit if the markers are missing."""
    begin, end = markers(name)
    doc = readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(doc):
        raise SystemExit(f"{readme}: no {begin} … {end} markers")
    readme.write_text(pattern.sub(lambda _: f"{begin}\n{text}{end}", doc), encoding="utf-8")


def load_result(path: Path) -> dict[str, Any] | None:
    """A result file's JSON, or None when it has not been produced yet."""
    try:
        loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return loaded
