"""Unit tests of ``core.cron``: parsing, and ticks in time zones across DST and month ends.

The DST cases are robfig/cron's own test vectors (the library Kubernetes CronJob uses) for
America/New_York in 2012: a time skipped when clocks go forward does not run that day, a time
repeated when they go back runs twice. A property test compares both searches with a brute
force over every minute of a window around real DST transitions.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim
from hypothesis import given, settings
from hypothesis import strategies as st

from agenttask_operator.core.cron import MACROS, Cron, CronError, instants, parse, tick_suffix

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")  # DST moves clocks by 30 minutes


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def local(cron: Cron, t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(cron.tz).isoformat()


# --- robfig/cron's DST vectors (spec_test.go, TestNext with TZ=America/New_York) -------------

NEXT = [
    # 2 a.m. EST -> 3 a.m. EDT on 2012-03-11: 02:30 does not exist, the next is a year later.
    ("2012-03-11T00:00:00-05:00", "30 2 11 3 *", "2013-03-11T02:30:00-04:00"),
    # hourly: 02:00 is skipped
    ("2012-03-11T00:00:00-05:00", "0 * * * *", "2012-03-11T01:00:00-05:00"),
    ("2012-03-11T01:00:00-05:00", "0 * * * *", "2012-03-11T03:00:00-04:00"),
    ("2012-03-11T03:00:00-04:00", "0 * * * *", "2012-03-11T04:00:00-04:00"),
    ("2012-03-11T04:00:00-04:00", "0 * * * *", "2012-03-11T05:00:00-04:00"),
    # 1 a.m. nightly
    ("2012-03-11T00:00:00-05:00", "0 1 * * *", "2012-03-11T01:00:00-05:00"),
    ("2012-03-11T01:00:00-05:00", "0 1 * * *", "2012-03-12T01:00:00-04:00"),
    # 2 a.m. nightly: skipped that day
    ("2012-03-11T00:00:00-05:00", "0 2 * * *", "2012-03-12T02:00:00-04:00"),
    # 2 a.m. EDT -> 1 a.m. EST on 2012-11-04
    ("2012-11-04T00:00:00-04:00", "30 2 04 11 *", "2012-11-04T02:30:00-05:00"),
    ("2012-11-04T01:45:00-04:00", "30 1 04 11 *", "2012-11-04T01:30:00-05:00"),
    # hourly: 01:00 twice
    ("2012-11-04T00:00:00-04:00", "0 * * * *", "2012-11-04T01:00:00-04:00"),
    ("2012-11-04T01:00:00-04:00", "0 * * * *", "2012-11-04T01:00:00-05:00"),
    ("2012-11-04T01:00:00-05:00", "0 * * * *", "2012-11-04T02:00:00-05:00"),
    # 1 a.m. nightly: runs twice
    ("2012-11-04T00:00:00-04:00", "0 1 * * *", "2012-11-04T01:00:00-04:00"),
    ("2012-11-04T01:00:00-04:00", "0 1 * * *", "2012-11-04T01:00:00-05:00"),
    ("2012-11-04T01:00:00-05:00", "0 1 * * *", "2012-11-05T01:00:00-05:00"),
    # 2 a.m. nightly
    ("2012-11-04T01:59:00-04:00", "0 2 * * *", "2012-11-04T02:00:00-05:00"),
    ("2012-11-04T02:00:00-05:00", "0 2 * * *", "2012-11-05T02:00:00-05:00"),
]

PREVIOUS = [  # last_at_or_before: the same days, looking back (inclusive)
    ("2012-03-11T01:00:00-05:00", "0 * * * *", "2012-03-11T01:00:00-05:00"),
    ("2012-03-11T03:30:00-04:00", "0 * * * *", "2012-03-11T03:00:00-04:00"),
    ("2012-03-11T01:59:59-05:00", "0 * * * *", "2012-03-11T01:00:00-05:00"),
    ("2012-03-11T03:00:00-04:00", "0 * * * *", "2012-03-11T03:00:00-04:00"),  # 02:00 skipped
    ("2012-03-12T00:00:00-04:00", "0 2 * * *", "2012-03-10T02:00:00-05:00"),
    ("2012-11-04T02:00:00-05:00", "0 0 * * *", "2012-11-04T00:00:00-04:00"),
    ("2012-11-05T02:00:00-05:00", "0 2 * * *", "2012-11-05T02:00:00-05:00"),
    ("2012-11-04T01:10:00-05:00", "30 1 * * *", "2012-11-04T01:30:00-04:00"),
    ("2012-11-04T01:40:00-05:00", "30 1 * * *", "2012-11-04T01:30:00-05:00"),
    ("2012-11-04T01:00:00-05:00", "0 * * * *", "2012-11-04T01:00:00-05:00"),
    ("2012-11-04T01:59:00-05:00", "0 * * * *", "2012-11-04T01:00:00-05:00"),
]


@pytest.mark.parametrize(("start", "expr", "want"), NEXT)
def test_next_after_matches_robfig_in_new_york(start: str, expr: str, want: str) -> None:
    cron = parse(expr, NY)
    assert cron.next_after(at(start)) == at(want), local(cron, cron.next_after(at(start)))


@pytest.mark.parametrize(("start", "expr", "want"), PREVIOUS)
def test_last_at_or_before_in_new_york(start: str, expr: str, want: str) -> None:
    cron = parse(expr, NY)
    got = cron.last_at_or_before(at(start))
    assert got == at(want), local(cron, got)


def ticks(cron: Cron, start: datetime, n: int) -> list[str]:
    out, t = [], start
    for _ in range(n):
        nxt = cron.next_after(t)
        assert nxt is not None
        out.append(nxt.astimezone(cron.tz).isoformat())
        t = nxt
    return out


def test_berlin_half_past_two_skipped_in_spring_and_twice_in_autumn() -> None:
    cron = parse("30 2 * * *", BERLIN)
    assert ticks(cron, at("2026-03-27T12:00:00+01:00"), 3) == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-30T02:30:00+02:00",  # 2026-03-29 02:30 does not exist
        "2026-03-31T02:30:00+02:00",
    ]
    assert ticks(cron, at("2026-10-24T12:00:00+02:00"), 3) == [
        "2026-10-25T02:30:00+02:00",  # first time round
        "2026-10-25T02:30:00+01:00",  # and once more, an hour later
        "2026-10-26T02:30:00+01:00",
    ]


def test_every_15_minutes_across_both_berlin_changes() -> None:
    cron = parse("*/15 * * * *", BERLIN)
    spring = ticks(cron, at("2026-03-29T01:30:00+01:00"), 4)
    assert spring == [
        "2026-03-29T01:45:00+01:00",
        "2026-03-29T03:00:00+02:00",  # 02:00-02:59 does not exist
        "2026-03-29T03:15:00+02:00",
        "2026-03-29T03:30:00+02:00",
    ]
    autumn = ticks(cron, at("2026-10-25T02:30:00+02:00"), 6)
    assert autumn == [
        "2026-10-25T02:45:00+02:00",
        "2026-10-25T02:00:00+01:00",  # the hour again, in UTC always 15 minutes apart
        "2026-10-25T02:15:00+01:00",
        "2026-10-25T02:30:00+01:00",
        "2026-10-25T02:45:00+01:00",
        "2026-10-25T03:00:00+01:00",
    ]
    as_utc = [at(t).astimezone(UTC) for t in autumn]
    assert all(b - a == timedelta(minutes=15) for a, b in itertools.pairwise(as_utc))


def test_lord_howe_half_hour_changes() -> None:
    # DST starts 2026-10-04 02:00 -> 02:30; ends 2026-04-05 02:00 -> 01:30.
    skipped = parse("15 2 * * *", LORD_HOWE)
    assert ticks(skipped, at("2026-10-03T12:00:00+10:30"), 2) == [
        "2026-10-05T02:15:00+11:00",  # 02:15 on the 4th does not exist
        "2026-10-06T02:15:00+11:00",
    ]
    twice = parse("45 1 * * *", LORD_HOWE)
    assert ticks(twice, at("2026-04-04T12:00:00+11:00"), 3) == [
        "2026-04-05T01:45:00+11:00",
        "2026-04-05T01:45:00+10:30",
        "2026-04-06T01:45:00+10:30",
    ]


def test_instants_of_a_wall_clock_time() -> None:
    assert instants(datetime(2026, 3, 29, 2, 30), BERLIN) == []
    assert instants(datetime(2026, 10, 25, 2, 30), BERLIN) == [
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
        datetime(2026, 10, 25, 1, 30, tzinfo=UTC),
    ]
    assert instants(datetime(2026, 6, 1, 12, 0), BERLIN) == [
        datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    ]


# --- month ends, leap years, day-of-week -------------------------------------------------------


def utc_ticks(expr: str, start: str, n: int) -> list[str]:
    cron = parse(expr, UTC)
    return [t[:10] for t in ticks(cron, at(start), n)]


def test_the_31st_only_in_months_that_have_one() -> None:
    assert utc_ticks("0 0 31 * *", "2026-01-01T00:00:00+00:00", 4) == [
        "2026-01-31",
        "2026-03-31",
        "2026-05-31",
        "2026-07-31",
    ]


def test_last_day_of_month_and_february_29() -> None:
    assert utc_ticks("0 0 L * *", "2027-12-15T00:00:00+00:00", 4) == [
        "2027-12-31",
        "2028-01-31",
        "2028-02-29",  # a leap year
        "2028-03-31",
    ]
    assert utc_ticks("0 0 29 2 *", "2026-01-01T00:00:00+00:00", 2) == ["2028-02-29", "2032-02-29"]


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    # Vixie cron (and robfig): both restricted -> either one matches.
    assert utc_ticks("0 0 1 * MON", "2026-06-01T00:00:00+00:00", 3) == [
        "2026-06-08",  # a Monday
        "2026-06-15",
        "2026-06-22",
    ]
    assert utc_ticks("0 0 13 * FRI", "2026-11-01T00:00:00+00:00", 3) == [
        "2026-11-06",
        "2026-11-13",  # the 13th (a Friday, too)
        "2026-11-20",
    ]


def test_a_stepped_day_field_is_restricted_as_in_robfig() -> None:
    # robfig: "*/2" (a step over 1) is a restriction, so with a weekday either one matches;
    # Debian cron (cronsim on its own) would require both, since the field starts with "*".
    assert parse("0 0 */2 * MON", UTC).expression == "0 0 1-31/2 * MON"
    assert utc_ticks("0 0 */2 * MON", "2026-06-01T12:00:00+00:00", 4) == [
        "2026-06-03",
        "2026-06-05",
        "2026-06-07",
        "2026-06-08",  # an even day, but a Monday
    ]
    # "*" among the terms, or "*/1": unrestricted, so both must match, as in robfig.
    assert parse("0 0 5,* * MON", UTC).expression == "0 0 * * MON"
    assert parse("0 0 */1 * MON", UTC).expression == "0 0 * * MON"
    assert parse("0 0 1 * */2", UTC).expression == "0 0 1 * 0-6/2"


def test_question_mark_and_names() -> None:
    assert parse("0 9 ? * MON-FRI", UTC).expression == "0 9 * * MON-FRI"
    assert utc_ticks("0 9 ? JAN ?", "2026-12-31T12:00:00+00:00", 2) == ["2027-01-01", "2027-01-02"]


# --- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("macro", "expanded"), sorted(MACROS.items()))
def test_macros(macro: str, expanded: str) -> None:
    assert parse(macro, UTC).expression == expanded


def test_hourly_daily_weekly_monthly_yearly_ticks() -> None:
    start = "2026-11-25T10:20:00+00:00"
    assert ticks(parse("@hourly", UTC), at(start), 1) == ["2026-11-25T11:00:00+00:00"]
    assert ticks(parse("@daily", UTC), at(start), 1) == ["2026-11-26T00:00:00+00:00"]
    assert ticks(parse("@weekly", UTC), at(start), 1) == ["2026-11-29T00:00:00+00:00"]  # Sunday
    assert ticks(parse("@monthly", UTC), at(start), 1) == ["2026-12-01T00:00:00+00:00"]
    assert ticks(parse("@yearly", UTC), at(start), 1) == ["2027-01-01T00:00:00+00:00"]


@pytest.mark.parametrize(
    ("expr", "complaint"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("@every 5m", "unknown macro"),
        ("@Daily", "unknown macro"),
        ("0 * * *", "4 fields"),
        ("0 0 * * * * *", "7 fields"),
        ("*/5 * * * * *", "AGENTTASK_SCHEDULE_SECONDS=1"),
        ("TZ=Europe/Berlin 0 3 * * *", "spec.timeZone"),
        ("CRON_TZ=UTC 0 3 * * *", "spec.timeZone"),
        ("60 * * * *", "Bad minute"),
        ("0 24 * * *", "Bad hour"),
        ("0 0 32 * *", "Bad day-of-month"),
        ("0 0 * 13 *", "Bad month"),
        ("0 0 * * 8", "Bad day-of-week"),
        ("0 0 30 2 *", "Bad day-of-month"),  # never
        ("*/0 * * * *", "Bad minute"),
        ("5-1 * * * *", "Bad minute"),
        ("0 0 * * MON#6", "Bad day-of-week"),
        ("a b c d e", "Bad minute"),
    ],
)
def test_bad_expressions_say_why(expr: str, complaint: str) -> None:
    with pytest.raises(CronError) as e:
        parse(expr, UTC)
    assert complaint in str(e.value)


def test_seconds_field_only_when_allowed() -> None:
    cron = parse("*/5 * * * * *", UTC, seconds=True)
    assert cron.seconds
    start = at("2026-11-25T10:20:03+00:00")
    assert ticks(cron, start, 3) == [
        "2026-11-25T10:20:05+00:00",
        "2026-11-25T10:20:10+00:00",
        "2026-11-25T10:20:15+00:00",
    ]
    assert not parse("0 * * * *", UTC, seconds=True).seconds  # five fields: minutes, as ever


def test_tick_suffix_is_the_unix_minute_or_second() -> None:
    tick = at("2026-11-25T10:20:00+00:00")
    assert tick_suffix(tick) == str(int(tick.timestamp()) // 60) == "29926700"
    assert tick_suffix(tick, seconds=True) == str(int(tick.timestamp()))


def test_count_between_stops_past_the_limit() -> None:
    cron = parse("* * * * *", UTC)
    start = at("2026-01-01T00:00:00+00:00")
    assert cron.count_between(start, start + timedelta(minutes=10), 100) == 9
    assert cron.count_between(start, start + timedelta(days=3), 100) == 101  # "more than 100"
    assert cron.count_between(start, start + timedelta(minutes=1), 100) == 0


def test_microseconds_and_exact_ticks() -> None:
    cron = parse("0 * * * *", UTC)
    tick = at("2026-11-25T10:00:00+00:00")
    assert cron.next_after(tick) == tick + timedelta(hours=1)  # strictly after
    assert cron.next_after(tick - timedelta(microseconds=1)) == tick
    assert cron.last_at_or_before(tick) == tick  # at or before
    assert cron.last_at_or_before(tick - timedelta(microseconds=1)) == tick - timedelta(hours=1)
    assert cron.last_at_or_before(tick + timedelta(microseconds=999)) == tick


# --- property: both searches agree with a brute force over every minute -----------------------

ZONES = [NY, BERLIN, LORD_HOWE, ZoneInfo("America/Sao_Paulo"), ZoneInfo("Pacific/Apia")]
TRANSITIONS = [  # instants near real offset changes of those zones
    datetime(2012, 3, 11, 7, 0, tzinfo=UTC),
    datetime(2012, 11, 4, 6, 0, tzinfo=UTC),
    datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
    datetime(2026, 10, 25, 1, 0, tzinfo=UTC),
    datetime(2026, 4, 4, 15, 0, tzinfo=UTC),
    datetime(2026, 10, 3, 15, 30, tzinfo=UTC),
    datetime(2018, 11, 4, 3, 0, tzinfo=UTC),  # Sao Paulo: midnight did not exist
    datetime(2011, 12, 30, 10, 0, tzinfo=UTC),  # Apia skipped the 30th of December 2011
    datetime(2021, 4, 3, 14, 0, tzinfo=UTC),  # Apia's last DST end
]
MINUTES = ["*", "0", "30", "*/15", "0,30", "10-20", "*/7", "59"]
HOURS = ["*", "0", "1", "2", "3", "1-3", "*/2", "0,2,4", "23"]


def brute(expr: str, zone: ZoneInfo, lo: datetime, hi: datetime) -> list[datetime]:
    """Every whole-minute instant in [lo, hi] whose wall-clock minute and hour in ``zone`` are
    in the sets cronsim parsed from ``expr`` (day, month and weekday are ``*`` here).
    """
    fields = CronSim(expr, datetime(2000, 1, 1))
    out, t = [], lo.replace(second=0, microsecond=0)
    while t <= hi:
        wall = t.astimezone(zone)
        if wall.minute in fields.minutes and wall.hour in fields.hours:
            out.append(t)
        t += timedelta(minutes=1)
    return out


@settings(max_examples=60, deadline=None)
@given(
    minute=st.sampled_from(MINUTES),
    hour=st.sampled_from(HOURS),
    zone=st.sampled_from(ZONES),
    near=st.sampled_from(TRANSITIONS),
    offset=st.integers(min_value=-6 * 3600, max_value=6 * 3600),
)
def test_searches_agree_with_brute_force(
    minute: str, hour: str, zone: ZoneInfo, near: datetime, offset: int
) -> None:
    expr = f"{minute} {hour} * * *"
    cron = parse(expr, zone)
    t = near + timedelta(seconds=offset)
    window = timedelta(hours=28)  # Apia's skipped day, and then some
    found = brute(expr, zone, t - window, t + window)
    after = [i for i in found if i > t]
    before = [i for i in found if i <= t]
    if after:
        assert cron.next_after(t) == after[0], (expr, zone, t)
    if before:
        assert cron.last_at_or_before(t) == before[-1], (expr, zone, t)
