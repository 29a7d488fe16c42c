"""Which items a shard (or a Ray replica) owns.

An item goes to ``sha256(doc_id) mod N``. A hash of the id, rather than contiguous ranges over
the sorted ids, because an item's shard then depends on nothing but its id and N: changing
``--limit`` or the task's data adds or removes items without moving the others (their shard
folders and cache entries stay valid), and long or hard items that sit next to each other in a
benchmark (HumanEval's later problems, MMLU's subjects) spread over all shards instead of landing
on one. The price is balance in expectation only: with 164 items over 8 shards the spread is
about ±4.5 items (binomial), which a data-parallel run absorbs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from evalkit.errors import EvalkitError


@dataclass(frozen=True)
class Shard:
    index: int  # 0-based
    count: int

    def owns(self, doc_id: str) -> bool:
        return shard_of(doc_id, self.count) == self.index

    def label(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(doc_id: str, count: int) -> int:
    """The shard (0..count-1) that owns ``doc_id``: the same on every machine and Python."""
    return int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:8], "big") % count


def parse_shard(text: str) -> Shard:
    """``"i/N"`` (0 <= i < N) -> Shard; a SLURM array passes ``$SLURM_ARRAY_TASK_ID/N``."""
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise EvalkitError(f"--shard must look like i/N (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise EvalkitError(f"--shard {text}: need N >= 1 and 0 <= i < N")
    return Shard(i, n)
