"""Filling text templates from slot lists, shared by the generators of the repo's own data."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator


def fill(template: str, slots: dict[str, list[str]], rng: random.Random, n: int) -> Iterator[str]:
    """Up to ``n`` distinct fillings of ``template``, chosen at random from all combinations."""
    names = [name for name in slots if "{" + name + "}" in template]
    combos = list(itertools.product(*(slots[name] for name in names)))
    rng.shuffle(combos)
    for combo in combos[:n]:
        yield template.format(**dict(zip(names, combo, strict=True)))
