"""Statutory deadlines of the Measures (Arts. 10, 11, 16) under Civil Code Arts. 200-204."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from engine.deadlines import Calendar, due, last_day, parse_period

SHANGHAI = ZoneInfo("Asia/Shanghai")


def end_of(day: str) -> datetime:
    return datetime.fromisoformat(f"{day}T23:59:59").replace(tzinfo=SHANGHAI)


def test_deadline_is_end_of_day_in_shanghai_as_aware_datetime():
    result = due(date(2025, 1, 31), "P1M")
    assert result.isoformat() == "2025-02-28T23:59:59+08:00"
    assert result.utcoffset() == timedelta(hours=8)
    assert result.tzinfo.key == "Asia/Shanghai"


def test_art10_one_month_disclosure_deadline_from_31_january_ends_28_february():
    assert due(date(2025, 1, 31), "P1M") == end_of("2025-02-28")


def test_art10_one_month_from_1_february_ends_saturday_1_march_so_moves_to_monday_3_march():
    assert due(date(2025, 2, 1), "P1M") == end_of("2025-03-03")


def test_art10_one_month_from_31_january_of_leap_year_ends_29_february():
    assert due(date(2024, 1, 31), "P1M") == end_of("2024-02-29")


def test_art11_one_year_audit_from_29_february_ends_28_february():
    assert due(date(2024, 2, 29), "P1Y") == end_of("2025-02-28")


def test_art10_one_month_from_30_october_ends_sunday_30_november_so_moves_to_1_december():
    assert due(date(2025, 10, 30), "P1M") == end_of("2025-12-01")


def test_art11_two_month_commissioning_from_31_december_ends_28_february():
    assert due(date(2024, 12, 31), "P2M") == end_of("2025-02-28")


def test_art11_five_years_between_audits_from_29_february_ends_28_february_2029():
    assert due(date(2024, 2, 29), "P5Y") == end_of("2029-02-28")


def test_art10_one_month_from_1_september_ends_in_national_day_holiday_so_moves_to_9_october():
    assert due(date(2025, 9, 1), "P1M") == end_of("2025-10-09")


# Art. 10 one-month disclosure from each month end of 2025, expected dates worked out by hand:
# the same-numbered day (or month end), then past weekends/holidays of the 2025/2026 arrangements.
MONTH_ENDS_2025 = [
    ("2025-01-31", "2025-02-28"),  # Feb has no 31st -> Fri 28 Feb
    ("2025-02-28", "2025-03-28"),  # same-numbered day, Fri (not the month end 31 Mar)
    ("2025-03-31", "2025-04-30"),  # Apr has no 31st -> Wed 30 Apr
    ("2025-04-30", "2025-05-30"),  # Fri 30 May (Dragon Boat starts Sat 31 May)
    ("2025-05-31", "2025-06-30"),  # Jun has no 31st -> Mon 30 Jun
    ("2025-06-30", "2025-07-30"),  # Wed 30 Jul
    ("2025-07-31", "2025-09-01"),  # Sun 31 Aug -> Mon 1 Sep
    ("2025-08-31", "2025-09-30"),  # Sep has no 31st -> Tue 30 Sep
    ("2025-09-30", "2025-10-30"),  # Thu 30 Oct
    ("2025-10-31", "2025-12-01"),  # Nov has no 31st -> Sun 30 Nov -> Mon 1 Dec
    ("2025-11-30", "2025-12-30"),  # Tue 30 Dec
    ("2025-12-31", "2026-02-02"),  # Sat 31 Jan 2026 -> (Sun 1 Feb) -> Mon 2 Feb
]


@pytest.mark.parametrize(("published", "expected"), MONTH_ENDS_2025, ids=[f"{p}->{e}" for p, e in MONTH_ENDS_2025])
def test_art10_one_month_disclosure_from_each_month_end_of_2025(published, expected):
    assert due(date.fromisoformat(published), "P1M") == end_of(expected)


def test_art10_deadline_on_adjusted_working_saturday_8_february_2025_stays():
    assert not Calendar.shipped().holidays.get(date(2025, 2, 8))
    assert Calendar.shipped().is_working_day(date(2025, 2, 8))
    assert due(date(2025, 1, 8), "P1M") == end_of("2025-02-08")


def test_art10_deadline_on_adjusted_working_sunday_26_january_2025_stays():
    assert due(date(2024, 12, 26), "P1M") == end_of("2025-01-26")


def test_art10_deadline_in_spring_festival_2025_moves_to_5_february():
    assert due(date(2024, 12, 28), "P1M") == end_of("2025-02-05")


def test_art11_one_year_deadline_in_spring_festival_2026_moves_to_24_february():
    assert due(date(2025, 2, 17), "P1Y") == end_of("2026-02-24")


def test_art10_deadline_in_dragon_boat_holiday_2025_moves_to_tuesday_3_june():
    # 1 Jun 2025 (Sun) lies in the Dragon Boat holiday (31 May - 2 Jun) -> Tue 3 Jun
    assert due(date(2025, 5, 1), "P1M") == end_of("2025-06-03")


def test_changed_calendar_adds_a_holiday_and_moves_the_art10_deadline():
    shipped = Calendar.shipped()
    assert due(date(2025, 2, 28), "P1M", shipped) == end_of("2025-03-28")
    changed = Calendar.from_rows(shipped.to_rows() + [(date(2025, 3, 28), "holiday", "local holiday")])
    assert changed.holidays[date(2025, 3, 28)] == "local holiday"
    assert due(date(2025, 2, 28), "P1M", changed) == end_of("2025-03-31")
    assert due(date(2025, 2, 28), "P1M") == end_of("2025-03-28")  # the shipped calendar is untouched


def test_changed_calendar_removing_an_adjusted_working_day_moves_the_deadline():
    rows = [r for r in Calendar.shipped().to_rows() if r[0] != date(2025, 2, 8)]
    assert due(date(2025, 1, 8), "P1M", Calendar.from_rows(rows)) == end_of("2025-02-10")


def test_year_without_calendar_data_counts_weekends_only():
    assert 2031 not in Calendar.shipped().years
    # 1 Oct 2031 (Wed) would be National Day, but there is no arrangement for 2031 yet
    assert due(date(2031, 9, 1), "P1M") == end_of("2031-10-01")
    # 1 Mar 2031 is a Saturday -> Mon 3 Mar
    assert due(date(2031, 2, 1), "P1M") == end_of("2031-03-03")
    assert due(date(2030, 12, 31), "P1D") == end_of("2031-01-01")


def test_empty_calendar_counts_weekends_only():
    assert due(date(2025, 9, 1), "P1M", Calendar()) == end_of("2025-10-01")


def test_period_in_days_starts_the_day_after_and_rolls_past_national_day():
    assert due(date(2025, 3, 3), "P10D") == end_of("2025-03-13")
    assert due(date(2025, 9, 25), "P10D") == end_of("2025-10-09")


def test_start_as_aware_datetime_uses_its_date_in_shanghai():
    # 31 Jan 2025 17:00 UTC is already 1 Feb 01:00 in Xinjiang's statutory time zone (UTC+8)
    assert due(datetime(2025, 1, 31, 17, 0, tzinfo=timezone.utc), "P1M") == end_of("2025-03-03")
    assert due(datetime(2025, 1, 31, 15, 59, tzinfo=timezone.utc), "P1M") == end_of("2025-02-28")
    assert due(datetime(2025, 1, 31, 23, 0, tzinfo=SHANGHAI), "P1M") == end_of("2025-02-28")


def test_start_as_iso_string():
    assert due("2025-01-31", "P1M") == end_of("2025-02-28")
    assert due("2025-01-31T17:00:00+00:00", "P1M") == end_of("2025-03-03")


def test_naive_datetime_start_refused():
    with pytest.raises(ValueError, match="naive"):
        due(datetime(2025, 1, 31, 12, 0), "P1M")


@pytest.mark.parametrize(
    ("period", "fragment"),
    [
        ("PT24H", "time parts"),
        ("P1DT12H", "time parts"),
        ("P2W", "weeks"),
        ("P1.5M", "'P1.5M'"),
        ("P1M10D", "not both"),
        ("P0M", "zero"),
        ("P", "'P'"),
        ("1M", "'1M'"),
        ("p1m", "'p1m'"),
        ("", "''"),
        ("-P1M", "'-P1M'"),
        (30, "30"),
    ],
    ids=["hours", "days-and-hours", "weeks", "fraction", "months-and-days", "zero", "empty-P", "no-P", "lowercase",
         "empty", "negative", "not-a-string"],
)
def test_bad_periods_refused_with_a_clear_message(period, fragment):
    with pytest.raises(ValueError) as err:
        due(date(2025, 1, 31), period)
    assert fragment in str(err.value)


def test_parse_period_and_last_day():
    assert parse_period("P1M") == (1, 0)
    assert parse_period("P5Y") == (60, 0)
    assert parse_period("P1Y6M") == (18, 0)
    assert parse_period("P10D") == (0, 10)
    assert last_day(date(2025, 1, 31), "P1M") == date(2025, 2, 28)
    assert last_day(date(2025, 8, 31), "P1M") == date(2025, 9, 30)


def test_shipped_calendar_has_the_state_council_arrangements():
    cal = Calendar.shipped()
    assert cal is Calendar.shipped()  # cached
    assert {2024, 2025, 2026} <= cal.years
    assert cal.holidays[date(2025, 1, 1)] == "元旦"
    for d in ("2025-01-28", "2025-02-04", "2025-04-04", "2025-05-05", "2025-06-02", "2025-10-08",
              "2024-02-10", "2024-06-10", "2024-09-17", "2026-02-23", "2026-06-19", "2026-09-27"):
        assert not cal.is_working_day(date.fromisoformat(d)), d
    for d in ("2025-01-26", "2025-02-08", "2025-04-27", "2025-09-28", "2025-10-11",
              "2024-02-04", "2024-02-18", "2024-04-07", "2024-04-28", "2024-05-11", "2024-09-14",
              "2024-09-29", "2024-10-12", "2026-01-04", "2026-02-14", "2026-02-28", "2026-05-09",
              "2026-09-20", "2026-10-10"):
        assert date.fromisoformat(d).weekday() >= 5, d
        assert cal.is_working_day(date.fromisoformat(d)), d
    assert len([d for d in cal.holidays if d.year == 2025]) == 1 + 8 + 3 + 5 + 3 + 8
    assert len([d for d in cal.workdays if d.year == 2024]) == 8


def test_next_working_day_is_strictly_after():
    cal = Calendar.shipped()
    assert cal.next_working_day(date(2025, 9, 30)) == date(2025, 10, 9)
    assert cal.next_working_day(date(2025, 2, 7)) == date(2025, 2, 8)
    assert cal.next_working_day(date(2025, 3, 3)) == date(2025, 3, 4)


def test_calendar_rows_round_trip_and_validation():
    cal = Calendar.shipped()
    rows = cal.to_rows()
    assert rows == sorted(rows)
    assert rows[0][1] in ("holiday", "workday")
    assert Calendar.from_rows(rows) == cal
    assert Calendar.from_rows([("2025-03-28", "holiday", "x")]).holidays == {date(2025, 3, 28): "x"}
    assert Calendar.from_rows([{"date": "2025-03-29", "kind": "workday", "name": "y"}]).is_working_day(date(2025, 3, 29))
    with pytest.raises(ValueError, match="kind"):
        Calendar.from_rows([(date(2025, 3, 28), "rest", "x")])
    with pytest.raises(ValueError, match="2025-03-28"):
        Calendar.from_rows([(date(2025, 3, 28), "holiday", "x"), (date(2025, 3, 28), "workday", "y")])


def test_calendar_that_never_works_is_refused_instead_of_looping():
    start = date(2025, 1, 1)
    rows = [(start + timedelta(days=i), "holiday", "x") for i in range(400)]
    with pytest.raises(ValueError, match="no working day"):
        due(date(2024, 12, 31), "P1D", Calendar.from_rows(rows))
