"""Dialing policy: calling hours in the callee's zone, retry timing, permanent vs transient Twilio errors."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest
from haggle_dispatcher import policy

from haggle.config import ConfigError, parse_calling_hours

WINDOW = (time(8, 0), time(21, 0))


def test_window_uses_the_number_s_time_zone() -> None:
    # 15:00 UTC = 07:00 in Los Angeles (too early there) but 10:00 in New York.
    now = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
    la = policy.provider_timezone("+14155550101")
    ny = policy.provider_timezone("+12125550111")
    assert la == ZoneInfo("America/Los_Angeles") and ny == ZoneInfo("America/New_York")
    assert policy.next_window_start(now, WINDOW, ny) is None
    opens = policy.next_window_start(now, WINDOW, la)
    assert opens == datetime(2026, 11, 24, 16, 0, tzinfo=UTC)  # 08:00 Pacific


def test_late_night_waits_for_next_morning() -> None:
    now = datetime(2026, 11, 25, 6, 30, tzinfo=UTC)  # 22:30 Pacific on the 24th
    opens = policy.next_window_start(now, WINDOW, ZoneInfo("America/Los_Angeles"))
    assert opens == datetime(2026, 11, 25, 16, 0, tzinfo=UTC)


def test_explicit_timezone_wins_and_unknown_is_conservative() -> None:
    assert policy.provider_timezone("+14155550101", "Europe/Paris") == ZoneInfo("Europe/Paris")
    now = datetime(2026, 11, 24, 13, 30, tzinfo=UTC)  # 08:30 New York, 05:30 Los Angeles
    assert policy.next_window_start(now, WINDOW, None) == datetime(2026, 11, 24, 16, 0, tzinfo=UTC)


def test_no_window_means_any_time() -> None:
    assert policy.next_window_start(datetime(2026, 1, 1, 3, tzinfo=UTC), None, None) is None
    assert parse_calling_hours("any") is None
    assert parse_calling_hours("09:30-17:00") == (time(9, 30), time(17, 0))
    for bad in ("9-5", "21:00-08:00", "25:00-26:00"):
        with pytest.raises(ConfigError, match="CALLING_HOURS"):
            parse_calling_hours(bad)


def test_retry_delay_doubles() -> None:
    assert [policy.retry_delay(600, a) for a in (1, 2, 3)] == [600, 1200, 2400]


@pytest.mark.parametrize(
    ("code", "status", "permanent"),
    [(21211, 400, True), (21614, 400, True), (None, 500, False), (None, 429, False), (None, None, False),
     (20429, 429, False), (None, 400, True)],
)
def test_error_classes(code: int | None, status: int | None, permanent: bool) -> None:
    assert policy.is_permanent(code, status) is permanent


def test_transient_delay_backs_off_and_honours_retry_after() -> None:
    assert [policy.transient_delay(t, None, jitter=0) for t in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert policy.transient_delay(20, None, jitter=0) == policy.TRANSIENT_CAP_S
    assert policy.transient_delay(1, 30.0, jitter=0) == 30.0  # Retry-After asks for longer: it wins
    assert policy.transient_delay(5, 2.0, jitter=0) == 16.0  # never shorter than the backoff
    assert 1.0 <= policy.transient_delay(1, None) <= 1.2
