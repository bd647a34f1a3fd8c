"""LazyAdmissions: a gate pass reads start times only for the queues it asks about."""

from __future__ import annotations

import datetime as dt
from typing import Any

from nightshift.controller.indexes import LazyAdmissions
from nightshift.core.gate import Snapshot

T = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


class CountingIndex(dict[tuple[str, str], list[dt.datetime]]):
    reads: list[tuple[str, str]]

    def __getitem__(self, key: Any) -> list[dt.datetime]:
        self.reads.append(key)
        return super().__getitem__(key)


class FakeState:
    def __init__(self, index: CountingIndex) -> None:
        self.admitted = index


def test_only_asked_queues_are_read_and_takes_add_to_them() -> None:
    index = CountingIndex({("ns", "a"): [T], ("ns", "b"): [T, T]})
    index.reads = []
    lazy = LazyAdmissions(FakeState(index))  # type: ignore[arg-type]
    snap = Snapshot(now=T, specs={}, runs={}, admitted_by_queue=lazy)
    assert index.reads == []
    assert lazy.get(("ns", "b"), []) == [T, T]
    snap.take("ns", "b")
    snap.take("ns", "c")
    assert lazy[("ns", "b")] == [T, T, T] and lazy[("ns", "c")] == [T]
    assert index.reads == [("ns", "b")]  # read once; "a" never; "c" has no entry
    assert index[("ns", "b")] == [T, T]  # the index itself is untouched
