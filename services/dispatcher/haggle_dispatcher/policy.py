"""Dialing policy as plain functions: calling hours in the callee's time zone, retry timing, error classes."""

from __future__ import annotations

import random
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from haggle_contracts.decisions import retry_delay
from phonenumbers import timezone as pn_timezone

__all__ = ["is_permanent", "next_window_start", "provider_timezone", "retry_delay", "transient_delay"]

# Twilio REST error codes that no retry can fix (bad or unreachable numbers, account/permission problems).
PERMANENT_TWILIO_CODES = frozenset({
    13223, 13224, 13225, 13226,  # invalid / blocked / unsupported destination
    21211, 21212, 21213, 21214, 21215, 21216, 21217, 21218, 21219,  # invalid To/From, geo permissions
    21401, 21407, 21408, 21601, 21602, 21603, 21604, 21610, 21612, 21614,
    20003, 20404,  # authentication; not found
})


def is_permanent(code: int | None, http_status: int | None) -> bool:
    if code in PERMANENT_TWILIO_CODES:
        return True
    if http_status is None:
        return False
    return 400 <= http_status < 500 and http_status != 429


def provider_timezone(phone: str, explicit: str | None = None) -> ZoneInfo | None:
    """The provider's time zone: an explicit IANA name wins, else the phone number's region (if unambiguous)."""
    if explicit:
        try:
            return ZoneInfo(explicit)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        number = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return None
    zones = [z for z in pn_timezone.time_zones_for_number(number) if z != "Etc/Unknown"]
    if not zones:
        return None
    # Several zones (e.g. a US area code spanning two): take the westernmost-late-opening one conservatively,
    # i.e. the zone where local time is earliest, so we never call before the window opens anywhere.
    now = datetime.now(ZoneInfo("UTC"))
    return min((ZoneInfo(z) for z in zones), key=lambda zi: now.astimezone(zi).utcoffset() or timedelta(0))


def next_window_start(now: datetime, window: tuple[time, time] | None, tz: ZoneInfo | None) -> datetime | None:
    """None if `now` is inside the calling window; else the UTC-aware moment the window next opens.

    With no known time zone, the moment must be inside the window in both US Eastern and Pacific time
    (the conservative reading for a North American number).
    """
    if window is None:
        return None
    zones = [tz] if tz else [ZoneInfo("America/New_York"), ZoneInfo("America/Los_Angeles")]
    waits = [_wait_in_zone(now, window, z) for z in zones]
    pending = [w for w in waits if w is not None]
    if not pending:
        return None
    return max(pending)


def _wait_in_zone(now: datetime, window: tuple[time, time], tz: ZoneInfo) -> datetime | None:
    local = now.astimezone(tz)
    start, end = window
    if start <= local.time() < end:
        return None
    day = local.date() if local.time() < start else local.date() + timedelta(days=1)
    return datetime.combine(day, start, tzinfo=tz).astimezone(now.tzinfo)


TRANSIENT_BASE_S = 1.0
TRANSIENT_CAP_S = 60.0


def transient_delay(tries: int, retry_after_s: float | None, *, jitter: float | None = None) -> float:
    """Wait before the next create after `tries` transient failures.

    Twilio's `Retry-After` wins when it asks for longer (docs/twilio-rest.md); otherwise exponential backoff
    from 1 s, capped at a minute, with up to 20% jitter so replicas that failed together do not retry together.
    """
    backoff = min(TRANSIENT_BASE_S * (2 ** max(0, tries - 1)), TRANSIENT_CAP_S)
    backoff *= 1.0 + (random.random() if jitter is None else jitter) * 0.2
    return max(backoff, retry_after_s or 0.0)
