"""Catch a consumer skipping records: a fetch that resumes past the next expected offset.

A broker must never return a record while an earlier offset of the same partition is not yet
readable, but one that assigns offsets before the records are readable can: a fetch racing two
producers then returns offset N+1 while N is still being written, and the consumer moves past N
for good. For an ingester that is a valid command lost without a trace.

The guard remembers, per partition, the offset it expects next. A message past it opens a gap:
the ingester handles what came before the gap, then seeks back to the first missing offset and
reads again. The same gap seen `rechecks` times is a hole the broker really has (compaction,
transaction markers, aborted transactions under `read_committed`) and is accepted, so a real
hole costs a few extra fetches once. The first message after an assignment sets the baseline.

Pure bookkeeping on (topic, partition, offset): no Kafka client here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Partition = tuple[str, int]


@dataclass(frozen=True)
class Gap:
    """Offsets [missing_from, resumed_at) of a partition were not delivered."""

    topic: str
    partition: int
    missing_from: int
    resumed_at: int
    attempt: int  # how many times this gap was seen, this one included
    accepted: bool  # seen `rechecks` times: a real hole, read on

    @property
    def size(self) -> int:
        return self.resumed_at - self.missing_from


class OffsetGapGuard:
    """Per partition, the next expected offset; `admit` splits a batch at the first gap."""

    def __init__(self, rechecks: int = 3) -> None:
        self.rechecks = rechecks
        self._next: dict[Partition, int] = {}
        # Per partition, the gaps being rechecked: (missing_from, resumed_at) -> times seen.
        self._seen: dict[Partition, dict[tuple[int, int], int]] = {}

    def expect(self, topic: str, partition: int, offset: int) -> None:
        """The next offset `partition` must deliver (e.g. its committed offset)."""
        self._next[(topic, partition)] = offset

    def expected(self) -> dict[Partition, int]:
        """The next offset expected of each partition seen (for diagnostics)."""
        return dict(self._next)

    def forget(self, partitions: Iterable[Partition]) -> None:
        """Partitions revoked or newly assigned: their next message sets the baseline again."""
        for p in partitions:
            self._next.pop(p, None)
            self._seen.pop(p, None)

    def admit(self, positions: Sequence[tuple[str, int, int]]) -> tuple[list[int], list[Gap]]:
        """Indices of the messages to handle now, in order, and the gaps found.

        A partition with an unaccepted gap contributes nothing from the gap on (the caller
        seeks it back to `missing_from`); the next expected offset moves only over what is
        admitted, so the caller must handle every admitted message before its next batch.
        """
        keep: list[int] = []
        gaps: list[Gap] = []
        blocked: set[Partition] = set()
        for i, (topic, partition, offset) in enumerate(positions):
            key = (topic, partition)
            if key in blocked:
                continue
            expected = self._next.get(key)
            if expected is not None and offset > expected:
                gap = self._gap(key, expected, offset)
                gaps.append(gap)
                if not gap.accepted:
                    blocked.add(key)
                    continue
            keep.append(i)
            self._next[key] = offset + 1
            if key in self._seen:  # the missing records came: forget the gaps they filled
                self._settle(key, offset)
        return keep, gaps

    def _settle(self, key: Partition, offset: int) -> None:
        pending = {g: n for g, n in self._seen[key].items() if g[0] > offset}
        if pending:
            self._seen[key] = pending
        else:
            del self._seen[key]

    def _gap(self, key: Partition, expected: int, offset: int) -> Gap:
        seen = self._seen.setdefault(key, {})
        attempt = seen.get((expected, offset), 0) + 1
        accepted = attempt > self.rechecks
        seen[(expected, offset)] = attempt
        return Gap(key[0], key[1], expected, offset, attempt, accepted)
