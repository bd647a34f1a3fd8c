"""infra.ratelimit: the token bucket in front of the operator's API requests (fake clock, no cluster)."""

from __future__ import annotations

import asyncio

import pytest

from nightshift.infra.ratelimit import LimitedKube, TokenBucket, gate_lane
from nightshift.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_burst_passes_then_requests_wait_their_turn() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=10, burst=3, clock=clock)
    assert [bucket.reserve() for _ in range(3)] == [0, 0, 0]
    # the next ones are due one tenth of a second apart, in the order they asked
    assert [round(bucket.reserve(), 3) for _ in range(3)] == [0.1, 0.2, 0.3]


def test_tokens_come_back_at_the_rate_up_to_the_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=10, burst=3, clock=clock)
    for _ in range(3):
        bucket.reserve()
    clock.t += 0.2
    assert [bucket.reserve() for _ in range(2)] == [0, 0]
    assert bucket.reserve() > 0
    clock.t += 60  # a long pause refills the burst, not more
    assert [bucket.reserve() for _ in range(3)] == [0, 0, 0]
    assert bucket.reserve() > 0


def test_rate_zero_is_no_limit() -> None:
    bucket = TokenBucket(rate=0, burst=1, clock=Clock())
    assert all(bucket.reserve() == 0 for _ in range(1000))


def test_acquire_sleeps_on_the_event_loop() -> None:
    async def main() -> float:
        bucket = TokenBucket(rate=50, burst=1)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.gather(*(bucket.acquire() for _ in range(3)))
        return loop.time() - t0

    assert 0.03 <= asyncio.run(main()) < 1.0


def test_limited_kube_takes_a_token_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    async def fake_request(self: object, method: str, path: str, **kwargs: object) -> str:
        calls.append(path)
        return "ok"

    monkeypatch.setattr("nightshift.infra.kube.Kube.request", fake_request)
    client = LimitedKube.__new__(LimitedKube)
    clock = Clock()
    client.limiter = TokenBucket(rate=1, burst=2, clock=clock)
    assert asyncio.run(client.request("GET", "/a")) == "ok"
    assert calls == ["/a"] and client.limiter.tokens == 1


def test_the_gate_draws_from_its_own_bucket_and_so_do_the_tasks_it_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reconcile burst that emptied the shared bucket does not hold an admission back."""

    async def fake_request(self: object, method: str, path: str, **kwargs: object) -> str:
        return path

    monkeypatch.setattr("nightshift.infra.kube.Kube.request", fake_request)
    client = LimitedKube.__new__(LimitedKube)
    clock = Clock()
    client.limiter = TokenBucket(rate=1, burst=1, clock=clock)
    client.gate_limiter = TokenBucket(rate=1, burst=5, clock=clock)

    async def gate() -> None:
        gate_lane()
        await client.request("PATCH", "/admit")
        await asyncio.gather(client.request("PATCH", "/note"))  # a task the gate started: same lane

    async def main() -> None:
        await client.request("GET", "/reconcile")  # the shared bucket's only token
        await asyncio.create_task(gate())
        await client.request("GET", "/after")  # back outside the gate's task: the shared bucket again

    loop_sleeps: list[float] = []

    async def no_sleep(delay: float) -> None:
        loop_sleeps.append(delay)

    monkeypatch.setattr("nightshift.infra.ratelimit.asyncio.sleep", no_sleep)
    asyncio.run(main())
    assert client.gate_limiter.tokens == 3  # the admission and the note
    assert client.limiter.tokens == -1 and loop_sleeps == [1.0]  # only "/after" waited, on the shared one


def test_defaults_hold_at_ten_thousand_jobs() -> None:
    """Applying 10,000 BackgroundJobs is 20,000 writes: at the default rate under two minutes of the
    operator's own limit, while the plain apply of 10,000 CronJobs takes about 80 s on the API server."""
    s = Settings()
    assert 20_000 / s.kube_qps <= 120
    assert s.kube_burst >= s.kube_qps
    assert s.reconcile_workers >= 4
