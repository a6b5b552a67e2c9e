"""Issue 14, rate limits: why a HubSpot run stays inside the limit the portal announces, on any machine.

HubSpot (and the sandbox) count requests in a rolling window by when each one *arrives*; the client paces
by its own clock, spacing its sends at 95 % of the rate. Uneven latency (a loaded machine) can still squeeze
one call too many into a window: the spacing is only a margin. The window guard
(``RateLimiter(window=(limit, seconds))``) counts calls by their *answers*, which come after the vendor
stamped them, so it never under-counts the vendor's window: the guarantee holds whatever the latency. These
tests drive the client's limiter and the sandbox's rolling window on one simulated clock: no sleeping, no
timing assertion.
"""

from __future__ import annotations

import random

import pytest

from connectors.kit.ratelimit import RateLimiter
from sandbox.hubspot.ratelimit import RollingLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)


def run(limit: int, window: float, guarded: bool, latencies: list[tuple[float, float]]) -> int:
    """Sequential calls paced by the client's bucket; returns how many the vendor's window refused."""
    clock = Clock()
    client = RateLimiter(1, window / (limit * 0.95), clock=clock, sleep=clock.sleep,
                         window=(limit, window) if guarded else None)
    vendor = RollingLimiter(limit, window, clock=clock)
    refused = 0
    for to_vendor, back in latencies:
        client.acquire()
        clock.sleep(to_vendor)  # the request travels (or waits for a CPU) ...
        refused += not vendor.admit().allowed
        clock.sleep(back)  # ... and so does the answer
        client.settle()
    return refused


@pytest.mark.parametrize("seed", range(5))
def test_the_guarded_bucket_never_meets_the_rolling_window_whatever_the_latency(seed):
    rng = random.Random(seed)
    latencies = [(rng.choice([0.001, 0.002, 0.3, 0.8]), rng.choice([0.001, 0.4])) for _ in range(400)]
    assert run(8, 2.0, True, latencies) == 0
    assert run(190, 10.0, True, latencies) == 0


def test_spacing_alone_meets_it_when_latency_varies_and_the_guard_does_not():
    """What made the test flaky: one slow request then fast ones squeeze nine arrivals into one window."""
    latencies = ([(0.001, 0.001)] * 3 + [(0.2, 0.001)] + [(0.001, 0.001)] * 12) * 20
    assert run(8, 2.0, False, latencies) > 0
    assert run(8, 2.0, True, latencies) == 0


def test_a_retuned_bucket_keeps_its_count_and_gives_no_fresh_burst():
    """The portal announces a lower limit on the first answer: the next call still waits its spacing."""
    clock = Clock()
    bucket = RateLimiter(1, 0.05, clock=clock, sleep=clock.sleep, window=(190, 10.0))
    bucket.acquire()
    clock.sleep(0.01)
    bucket.retune(1, 0.25, (2, 1.0))
    bucket.settle()
    # What refilled before the retune counts (0.01 s at the old rate = 0.05 s at the new); a replaced bucket
    # would have sent at once.
    assert bucket.acquire() == pytest.approx(0.20)
    bucket.settle()  # answered at 1000.21; the first call was answered at 1000.01
    # The spacing (0.25 s) and then the guard: two calls answered within the last second, so wait until the
    # first of them leaves it (1001.01), 0.55 s more.
    assert bucket.acquire() == pytest.approx(0.25 + 0.55)


def test_the_plain_spacing_is_unchanged_without_a_guard():
    """A vendor without a rolling window (or a caller that never settles) gets the token bucket as before."""
    clock = Clock()
    bucket = RateLimiter(2, 1.0, clock=clock, sleep=clock.sleep)
    assert [bucket.acquire() for _ in range(4)] == pytest.approx([0.0, 0.0, 0.5, 0.5])


def test_a_guard_that_stops_a_call_leaves_no_open_call_in_the_window():
    """The lease's fencing check runs after the bucket's acquire; a call it stops was never sent, so it must not
    hold a place in the window guard (else, with the window full of such calls, every later call waits forever)."""
    from connectors.kit.http import CallPolicy

    clock = Clock()

    def no_wait(seconds: float) -> None:
        raise AssertionError(f"waited {seconds} s: a stopped call still holds the window")

    limiter = RateLimiter(100, 1.0, clock=clock, sleep=no_wait, window=(1, 10.0))
    policy = CallPolicy("example", {"default": limiter})

    def lost() -> None:
        raise RuntimeError("the lock was lost")

    policy.guard = lost
    with pytest.raises(RuntimeError, match="lock was lost"):
        policy.call(lambda: "sent")
    policy.guard = None
    assert limiter.acquire() == 0.0  # the window holds nothing: no wait
