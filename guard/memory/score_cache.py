"""Per-message harm scores by keyed content hash, so each message is scored once.

A request carries the whole history; only user turns the process has not scored
before go to the classifier.  Entries are compact (one float array per score) and the
cache is an LRU bounded by entry count.  It is per process: a replica that joins a
conversation midway scores that history once.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict

from guard.scoring import HAZARDS, HarmScore

_INDEX = {name: i for i, name in enumerate(HAZARDS)}


class ScoreCache:
    """LRU of text hash -> :class:`HarmScore`."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._items: OrderedDict[str, array[float]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, text_hash: str) -> bool:
        """Whether the text is cached; refreshes its LRU position (it is still in use)."""
        if text_hash in self._items:
            self._items.move_to_end(text_hash)
            return True
        return False

    def get(self, text_hash: str) -> HarmScore | None:
        packed = self._items.get(text_hash)
        if packed is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(text_hash)
        return HarmScore(
            risk=packed[0], categories={name: packed[i + 1] for i, name in enumerate(HAZARDS)}
        )

    def put(self, text_hash: str, score: HarmScore) -> None:
        packed = array("d", [score.risk])
        packed.extend(float(score.categories.get(name, 0.0)) for name in HAZARDS)
        self._items[text_hash] = packed
        self._items.move_to_end(text_hash)
        while len(self._items) > self._max:
            self._items.popitem(last=False)


def category_score(score: HarmScore, category: str) -> float:
    """The score's probability for ``category`` (0 for an unknown name)."""
    if category not in _INDEX:
        return 0.0
    return float(score.categories.get(category, 0.0))
