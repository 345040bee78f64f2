"""Rate-limit pacing (``RateLimit-Remaining: N;w=SECONDS``)."""

from __future__ import annotations

from regstore.client.ratelimit import RateLimitPacer, RateLimitState, parse_ratelimit


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_parse_docker_hub_headers() -> None:
    state = parse_ratelimit({"RateLimit-Limit": "100;w=21600", "RateLimit-Remaining": "76;w=21600"})
    assert state == RateLimitState(76, 100, 21600.0)
    assert parse_ratelimit({"RateLimit-Remaining": "5"}) == RateLimitState(5, None, None)
    assert parse_ratelimit({}) is None
    assert parse_ratelimit({"RateLimit-Remaining": "lots"}) is None


def test_no_pacing_while_quota_is_ample() -> None:
    clock = FakeClock()
    pacer = RateLimitPacer(sleep=clock.sleep, clock=clock)
    assert pacer.observe({"RateLimit-Limit": "100;w=60", "RateLimit-Remaining": "50;w=60"}) == 0
    assert pacer.wait() == 0 and clock.slept == []


def test_low_quota_spaces_requests_proportionally() -> None:
    clock = FakeClock()
    pacer = RateLimitPacer(sleep=clock.sleep, clock=clock)
    delay = pacer.observe({"RateLimit-Limit": "100;w=60", "RateLimit-Remaining": "5;w=60"})
    assert delay == 12.0  # 60 s window / 5 remaining
    pacer.wait()
    pacer.wait()
    assert clock.slept == [12.0, 12.0]  # consecutive requests are spaced, not released together


def test_pacing_is_capped_and_stops_when_quota_recovers() -> None:
    clock = FakeClock()
    pacer = RateLimitPacer(sleep=clock.sleep, clock=clock, max_delay=5.0)
    assert not pacer.pacing
    assert pacer.observe({"RateLimit-Remaining": "1;w=21600"}) == 5.0
    assert pacer.pacing
    pacer.wait()
    assert clock.slept == [5.0]
    pacer.observe({"RateLimit-Remaining": "90;w=21600", "RateLimit-Limit": "100;w=21600"})
    assert not pacer.pacing
    assert pacer.wait() == 0 and clock.slept == [5.0]
