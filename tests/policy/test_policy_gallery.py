from __future__ import annotations

import re

from guard.policy.gallery import EXHIBITS, render_gallery
from guard.settings import REPO_ROOT, SHIPPED_POLICY_DIR

_SECTION = re.compile(r"<!-- gallery:start -->\n(.*)<!-- gallery:end -->", re.S)


async def test_readme_gallery_is_what_the_engine_produces() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    match = _SECTION.search(readme)
    assert match is not None, "README lost its gallery markers"
    assert match.group(1) == await render_gallery(SHIPPED_POLICY_DIR), (
        "README gallery is stale: regenerate it with `guard policy gallery`"
    )


async def test_gallery_covers_several_categories_with_distinct_words() -> None:
    gallery = await render_gallery(SHIPPED_POLICY_DIR)
    received = re.findall(r"\*\*Client receives:\*\* (.*)", gallery)
    assert len(received) == len(EXHIBITS) >= 5
    assert len(set(received)) == len(received)
    for exhibit, text in zip(EXHIBITS, received, strict=True):
        assert exhibit.upstream not in text
