"""StatusMemory: what we last wrote, and the watch's echo of our own writes (no cluster)."""

from __future__ import annotations

from nightshift.controller.indexes import BgjSeen, canonical
from nightshift.controller.runtime import StatusMemory

KEY = ("team", "nightly")


def seen(status: dict[str, object], generation: int = 1) -> BgjSeen:
    return BgjSeen("u1", generation, None, {}, canonical({"schedule": "* * * * *"}), canonical(status))


def test_the_last_four_writes_are_echoes_once_the_inputs_were_read() -> None:
    memo = StatusMemory()
    memo.read(KEY, seen({}))
    for n in range(6):
        memo.remember(KEY, "u1", {"n": n}, sent=True)
    assert [memo.echo(KEY, seen({"n": n})) for n in range(6)] == [False, False, True, True, True, True]
    assert not memo.echo(KEY, seen({"n": 5}, generation=2))  # the spec changed: a pass is due
    assert memo.last(KEY, seen({"n": 0})) == {"n": 5}  # what we wrote, not the older watched one
    memo.remember(KEY, "u1", {"n": 9}, sent=False)
    assert not memo.echo(KEY, seen({"n": 9}))  # not sent: the watch cannot echo it
    memo.forget(KEY)
    assert memo.last(KEY, seen({"n": 0})) == {"n": 0}
