"""The offset gap guard: a batch that skips offsets is cut at the gap and read again; a hole the
broker really has is accepted after a few rechecks."""

from __future__ import annotations

from orchestrator.core.offset_gaps import Gap, OffsetGapGuard

T = "genesis.domain.events"


def positions(*offsets: int, topic: str = T, partition: int = 0) -> list[tuple[str, int, int]]:
    return [(topic, partition, o) for o in offsets]


def test_contiguous_batches_pass_whole() -> None:
    guard = OffsetGapGuard()
    assert guard.admit(positions(0, 1, 2)) == ([0, 1, 2], [])
    assert guard.admit(positions(3, 4)) == ([0, 1], [])


def test_the_first_message_sets_the_baseline() -> None:
    guard = OffsetGapGuard()
    assert guard.admit(positions(57, 58)) == ([0, 1], [])


def test_a_gap_inside_a_batch_cuts_it_and_asks_to_read_again() -> None:
    guard = OffsetGapGuard(rechecks=3)
    keep, gaps = guard.admit(positions(0, 1, 22, 23))
    assert keep == [0, 1]
    assert gaps == [Gap(T, 0, 2, 22, attempt=1, accepted=False)]
    assert gaps[0].size == 20
    # Read again from offset 2: the missing records are there now.
    assert guard.admit(positions(*range(2, 24))) == (list(range(22)), [])


def test_a_batch_starting_past_the_expected_offset_is_a_gap() -> None:
    guard = OffsetGapGuard()
    guard.admit(positions(0, 1))
    keep, gaps = guard.admit(positions(5, 6))
    assert keep == [] and [(g.missing_from, g.resumed_at) for g in gaps] == [(2, 5)]


def test_only_the_partition_with_the_gap_is_held_back() -> None:
    guard = OffsetGapGuard()
    guard.admit([(T, 0, 0), (T, 1, 0)])
    keep, gaps = guard.admit([(T, 0, 5), (T, 1, 1), (T, 0, 6), (T, 1, 2)])
    assert keep == [1, 3]
    assert [(g.partition, g.missing_from) for g in gaps] == [(0, 1)]


def test_a_real_hole_is_accepted_after_the_rechecks() -> None:
    guard = OffsetGapGuard(rechecks=2)
    guard.admit(positions(0))
    for attempt in (1, 2):
        keep, gaps = guard.admit(positions(2, 3))
        assert keep == [] and gaps[0].attempt == attempt and not gaps[0].accepted
    keep, gaps = guard.admit(positions(2, 3))
    assert keep == [0, 1] and gaps[0].accepted and gaps[0].attempt == 3
    # Past the hole, reading goes on as usual, and the hole is not counted again.
    assert guard.admit(positions(4)) == ([0], [])
    assert guard._seen == {}


def test_rechecks_zero_only_reports() -> None:
    guard = OffsetGapGuard(rechecks=0)
    guard.admit(positions(0))
    keep, gaps = guard.admit(positions(3))
    assert keep == [0] and gaps[0].accepted


def test_a_filled_gap_leaves_nothing_behind() -> None:
    guard = OffsetGapGuard()
    guard.admit(positions(0))
    guard.admit(positions(9))
    guard.admit(positions(*range(1, 10)))
    assert guard._seen == {}


def test_redelivered_offsets_are_admitted() -> None:
    """After a rebalance or a seek, a partition may deliver offsets again: not a gap."""
    guard = OffsetGapGuard()
    guard.admit(positions(0, 1, 2))
    assert guard.admit(positions(1, 2, 3)) == ([0, 1, 2], [])


def test_forget_resets_the_baseline() -> None:
    guard = OffsetGapGuard()
    guard.admit(positions(0, 1))
    guard.forget([(T, 0)])
    assert guard.admit(positions(40)) == ([0], [])


def test_expect_sets_the_baseline() -> None:
    guard = OffsetGapGuard()
    guard.expect(T, 0, 0)
    keep, gaps = guard.admit(positions(5))
    assert keep == [] and gaps[0].missing_from == 0


def test_expected_reports_the_next_offsets() -> None:
    guard = OffsetGapGuard()
    guard.admit([(T, 0, 7), (T, 1, 2)])
    assert guard.expected() == {(T, 0): 8, (T, 1): 3}
