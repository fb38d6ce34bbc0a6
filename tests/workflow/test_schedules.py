"""When schedules tick (docs/schedules.md): cron expressions in time zones, intervals on the epoch's grid,
daylight-saving days, which due ticks each catch-up policy runs, the keys of the ticks' flows, and the
arguments a schedule refuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dwarf import KEEP_FOREVER, BadRequestError, FlowOptions
from dwarf.workflow import schedules
from dwarf.workflow.schedules import (
    CATCH_UP_LIMIT,
    NEVER,
    Schedule,
    ScheduleTiming,
    check_catch_up,
    check_schedule_name,
    options_document,
    options_from_document,
    plan_ticks,
    tick_key,
    tick_text,
)

NEW_YORK = "America/New_York"


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    """Milliseconds since the epoch of a UTC time."""
    return round(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp() * 1000)


def texts(ticks: list[int]) -> list[str]:
    return [tick_text(tick) for tick in ticks]


# --- every ---


def test_every_ticks_on_whole_multiples_of_the_interval_since_the_epoch() -> None:
    timing = ScheduleTiming.of("", timedelta(minutes=5), "UTC")
    assert timing.every_ms == 300_000 and timing.every == timedelta(minutes=5)
    assert tick_text(timing.next_after(ms(2026, 5, 1, 12, 3, 10))) == "2026-05-01T12:05:00.000Z"
    # Strictly after: a tick itself is followed by the next one.
    assert tick_text(timing.next_after(ms(2026, 5, 1, 12, 5))) == "2026-05-01T12:10:00.000Z"
    assert tick_text(timing.latest_at_or_before(ms(2026, 5, 1, 12, 5)) or 0) == "2026-05-01T12:05:00.000Z"
    assert timing.describe() == "every 5m"


def test_every_takes_seconds_and_keeps_milliseconds() -> None:
    timing = ScheduleTiming.of("", 0.25, "UTC")
    assert timing.every_ms == 250
    assert timing.next_after(1_000) == 1_250
    assert timing.ticks_between(1_000, 1_600, 10) == ([1_000, 1_250, 1_500], False)
    assert timing.describe() == "every 0.25s"


def test_ticks_between_keeps_the_most_recent_when_there_are_too_many() -> None:
    timing = ScheduleTiming.of("", 1, "UTC")
    assert timing.ticks_between(0, 10_000, 3) == ([8_000, 9_000, 10_000], True)
    assert timing.ticks_between(500, 900, 3) == ([], False)


# --- cron ---


def test_cron_ticks_in_its_time_zone() -> None:
    timing = ScheduleTiming.of("0 9 * * MON-FRI", None, "Europe/Paris")
    # Friday 2026-05-01, 08:00 UTC is 10:00 in Paris: the next 09:00 on a weekday is Monday's, 07:00 UTC.
    assert tick_text(timing.next_after(ms(2026, 5, 1, 8))) == "2026-05-04T07:00:00.000Z"
    assert timing.describe() == "cron 0 9 * * MON-FRI (Europe/Paris)"


def test_cron_takes_a_seconds_field_and_the_at_shortcuts() -> None:
    seconds = ScheduleTiming.of("*/15 * * * * *", None, "UTC")
    assert tick_text(seconds.next_after(ms(2026, 1, 1, 0, 0, 10))) == "2026-01-01T00:00:15.000Z"
    daily = ScheduleTiming.of("@daily", None, "UTC")
    assert tick_text(daily.next_after(ms(2026, 1, 1, 13))) == "2026-01-02T00:00:00.000Z"
    hourly = ScheduleTiming.of("@HOURLY", None, "UTC")
    assert tick_text(hourly.next_after(ms(2026, 1, 1, 13, 1))) == "2026-01-01T14:00:00.000Z"


def test_a_tick_skipped_by_spring_forward_runs_when_the_clock_jumps() -> None:
    """02:30 does not exist in New York on 2026-03-08 (02:00 EST jumps to 03:00 EDT): that day's 02:30
    tick comes at 03:00 EDT (07:00 UTC), as Debian's cron does it, and the next days' at 02:30 again."""
    timing = ScheduleTiming.of("30 2 * * *", None, NEW_YORK)
    first = timing.next_after(ms(2026, 3, 7, 12))
    second = timing.next_after(first)
    third = timing.next_after(second)
    assert texts([first, second, third]) == [
        "2026-03-08T07:00:00.000Z",  # 03:00 EDT
        "2026-03-09T06:30:00.000Z",  # 02:30 EDT
        "2026-03-10T06:30:00.000Z",
    ]
    # Looking back from after the jump finds the same tick.
    assert timing.latest_at_or_before(ms(2026, 3, 8, 7, 10)) == first


def test_a_daily_tick_in_the_hour_fall_back_repeats_runs_once() -> None:
    """01:30 happens twice in New York on 2026-11-01: the daily tick runs at the first (05:30 UTC) only,
    even when asked from inside the repeated hour."""
    timing = ScheduleTiming.of("30 1 * * *", None, NEW_YORK)
    first = timing.next_after(ms(2026, 10, 31, 12))
    assert tick_text(first) == "2026-11-01T05:30:00.000Z"
    assert tick_text(timing.next_after(first)) == "2026-11-02T06:30:00.000Z"
    # 06:00 UTC is 01:00 EST, the repeated hour: the 01:30 of this day already ran.
    assert tick_text(timing.next_after(ms(2026, 11, 1, 6))) == "2026-11-02T06:30:00.000Z"


def test_an_hourly_tick_runs_in_both_copies_of_the_repeated_hour() -> None:
    timing = ScheduleTiming.of("30 * * * *", None, NEW_YORK)
    ticks, capped = timing.ticks_between(ms(2026, 11, 1, 4), ms(2026, 11, 1, 8), 10)
    assert not capped
    assert texts(ticks) == [
        "2026-11-01T04:30:00.000Z",
        "2026-11-01T05:30:00.000Z",  # 01:30 EDT
        "2026-11-01T06:30:00.000Z",  # 01:30 EST
        "2026-11-01T07:30:00.000Z",
    ]


def test_cron_ticks_between_keep_the_most_recent() -> None:
    timing = ScheduleTiming.of("0 * * * *", None, "UTC")
    ticks, capped = timing.ticks_between(ms(2026, 1, 1, 0), ms(2026, 1, 1, 5), 3)
    assert texts(ticks) == [
        "2026-01-01T03:00:00.000Z",
        "2026-01-01T04:00:00.000Z",
        "2026-01-01T05:00:00.000Z",
    ]
    assert capped
    assert timing.ticks_between(ms(2026, 1, 1, 0), ms(2026, 1, 1, 2), 3)[1] is False


def test_a_cron_expression_that_stops_firing_has_no_next_tick() -> None:
    timing = ScheduleTiming(cron="0 0 1 1 *", timezone="UTC")
    assert timing.next_after(ms(2026, 6, 1)) == ms(2027, 1, 1)
    # Leap days come every four years; cronsim looks 50 years ahead, no further.
    leap = ScheduleTiming.of("0 0 29 2 *", None, "UTC")
    assert tick_text(leap.next_after(ms(2026, 6, 1))) == "2028-02-29T00:00:00.000Z"
    # The 1st or 21st of a month that is also its last Monday: never (a "*/20" day makes cron AND the two).
    never = ScheduleTiming(cron="0 0 */20 * 1L", timezone="UTC")
    assert never.next_after(ms(2026, 6, 1)) == NEVER
    assert never.latest_at_or_before(ms(2026, 6, 1)) is None
    with pytest.raises(BadRequestError, match="never fires"):
        ScheduleTiming.of("0 0 */20 * 1L", None, "UTC")


# --- catching up ---

EVERY_SECOND = ScheduleTiming.of("", 1, "UTC")


def test_all_runs_every_due_tick_oldest_first() -> None:
    plan = plan_ticks(EVERY_SECOND, 10_000, 13_500, "all")
    assert plan.fire == [10_000, 11_000, 12_000, 13_000] and plan.next_ms == 14_000
    assert not plan.passed_over


def test_all_runs_at_most_the_limit_of_most_recent_ticks() -> None:
    due = 0
    now = (CATCH_UP_LIMIT + 10) * 1000
    plan = plan_ticks(EVERY_SECOND, due, now, "all")
    assert len(plan.fire) == CATCH_UP_LIMIT and plan.fire[-1] == now and plan.passed_over


def test_one_runs_only_the_most_recent_due_tick() -> None:
    plan = plan_ticks(EVERY_SECOND, 10_000, 13_500, "one")
    assert plan.fire == [13_000] and plan.next_ms == 14_000 and plan.passed_over
    on_time = plan_ticks(EVERY_SECOND, 10_000, 10_200, "one")
    assert on_time.fire == [10_000] and not on_time.passed_over


def test_skip_runs_the_ticks_of_the_last_minute_only() -> None:
    # Reached 20 s late: nothing missed, everything runs.
    assert plan_ticks(EVERY_SECOND, 100_000, 120_000, "skip").fire == list(range(100_000, 121_000, 1000))
    # An hour late: only the ticks at most a minute late run.
    plan = plan_ticks(EVERY_SECOND, 0, 3_600_000, "skip")
    assert plan.fire == list(range(3_540_000, 3_601_000, 1000)) and plan.passed_over
    # A daily schedule after two days down runs nothing now and waits for tomorrow.
    daily = ScheduleTiming.of("0 3 * * *", None, "UTC")
    late = plan_ticks(daily, ms(2026, 1, 1, 3), ms(2026, 1, 3, 12), "skip")
    assert late.fire == [] and tick_text(late.next_ms) == "2026-01-04T03:00:00.000Z" and late.passed_over


def test_skip_grace_is_a_module_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schedules, "LATE_GRACE", 1.5)
    assert plan_ticks(EVERY_SECOND, 10_000, 13_500, "skip").fire == [12_000, 13_000]


# --- keys and records ---


def test_tick_keys_name_the_schedule_and_the_tick() -> None:
    assert tick_text(ms(2026, 3, 8, 7)) == "2026-03-08T07:00:00.000Z"
    assert tick_text(ms(2026, 3, 8, 7) + 250) == "2026-03-08T07:00:00.250Z"
    # One width: the texts sort as the times do.
    assert tick_text(ms(2026, 3, 8, 7) + 250) < tick_text(ms(2026, 3, 8, 7, 0, 1))
    assert tick_key("nightly report", ms(2026, 3, 8, 7)) == "schedule:nightly report@2026-03-08T07:00:00.000Z"
    longest = tick_key("n" * schedules.MAX_SCHEDULE_NAME, ms(2026, 3, 8, 7) + 1)
    assert len(longest) <= 255  # FlowOptions' limit on idempotency keys


def test_options_round_trip_through_their_document() -> None:
    options = FlowOptions(
        priority=7, fairness_key="tenant-1", time_budget=timedelta(seconds=30), baggage={"a": 1}
    )
    document = options_document(options)
    assert document == {"priority": 7, "fairness_key": "tenant-1", "time_budget": 30.0, "baggage": {"a": 1}}
    assert options_from_document(document) == FlowOptions(
        priority=7, fairness_key="tenant-1", time_budget=30.0, baggage={"a": 1}
    )
    assert options_document(None) == {} and options_document(FlowOptions()) == {}
    # Retention and deletion travel too; "for ever" as a word, since JSON has no infinite number.
    kept = FlowOptions(retain_for=KEEP_FOREVER, delete_on_completion=True)
    assert options_document(kept) == {"retain_for": "forever", "delete_on_completion": True}
    assert options_from_document(options_document(kept)) == kept
    short = FlowOptions(retain_for=timedelta(days=7))
    assert options_from_document(options_document(short)) == FlowOptions(retain_for=604800.0)
    # A field written by a newer version is ignored.
    assert options_from_document({"priority": 3, "unknown_field": 1}) == FlowOptions(priority=3)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (FlowOptions(thread_key="1-2-abcdefghijklmnop"), "thread_key"),
        (FlowOptions(idempotency_key="mine"), "idempotency_key"),
        (FlowOptions(idempotency_policy="fail"), "idempotency_policy"),
        (FlowOptions(priority=-1), "priority"),
        (FlowOptions(baggage={1, 2}), "baggage"),
    ],
)
def test_options_a_scheduled_flow_cannot_have_are_refused(options: FlowOptions, message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        options_document(options)


def test_a_schedule_record_describes_its_timing() -> None:
    assert Schedule("a", "url", every=timedelta(hours=2)).timing == "every 2h"
    assert (
        Schedule("a", "url", cron="0 3 * * *", timezone="Europe/Paris").timing
        == "cron 0 3 * * * (Europe/Paris)"
    )


# --- refused arguments ---


@pytest.mark.parametrize(
    ("cron", "every", "timezone", "message"),
    [
        ("", None, "UTC", "either cron .* or every"),
        ("   ", None, "UTC", "either cron .* or every"),
        ("*/5 * * * *", 60, "UTC", "not both"),
        ("61 * * * *", None, "UTC", "bad cron expression"),
        ("* * * *", None, "UTC", "bad cron expression"),
        ("0 0 30 2 *", None, "UTC", "bad cron expression"),
        ("0 0 * * * * *", None, "UTC", "bad cron expression"),
        ("0 3 * * *", None, "Mars/Olympus_Mons", "unknown time zone"),
        ("0 3 * * *", None, "", "time zone"),
        ("0 3 * * *", None, "../../etc/passwd", "unknown time zone"),
        ("", 0.01, "UTC", "every must be from"),
        ("", -5, "UTC", "every must be from"),
        ("", timedelta(days=5000), "UTC", "every must be from"),
        ("", "5m", "UTC", "every must be a timedelta or a number"),
        ("", float("nan"), "UTC", "finite"),
        ("", 60, "Europe/Paris", "timezone applies to cron schedules only"),
        ("0 3 * * *\x00", None, "UTC", "cron expression"),
        ("*" * 300, None, "UTC", "at most"),
    ],
)
def test_bad_timing_is_refused(cron: str, every: object, timezone: str, message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        ScheduleTiming.of(cron, every, timezone)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", " padded", "line\nbreak", "tab\tname", "n" * 201, "nul\x00", 42, None])
def test_bad_names_are_refused(name: object) -> None:
    with pytest.raises(BadRequestError, match="schedule name"):
        check_schedule_name(name)


def test_names_may_hold_any_printable_text() -> None:
    for name in ("nightly-report", "tenant:42/cleanup", "Rapport über Nacht", "n" * 200):
        assert check_schedule_name(name) == name


@pytest.mark.parametrize("catch_up", ["", "some", "ALL", None, 1])
def test_bad_catch_up_is_refused(catch_up: object) -> None:
    with pytest.raises(BadRequestError, match="catch_up"):
        check_catch_up(catch_up)
