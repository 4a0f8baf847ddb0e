"""Statutory deadline arithmetic (Civil Code Arts. 200-204) and the mainland China holiday calendar."""
from __future__ import annotations

import calendar as _calendar
import functools
import json
import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time, timedelta
from pathlib import Path
from types import MappingProxyType
from zoneinfo import ZoneInfo

# Why not hand SpiffWorkflow a `P1M` duration timer: SpiffWorkflow adds the *number of days* of the
# months it crosses to the start instant, so 2025-01-31 + P1M lands on 2025-03-03 instead of
# 2025-02-28 (it overshoots month ends), and it knows nothing of rest days or the day-after rule.
# Deadlines are computed here and given to timers as an absolute `timeDate`.

SHANGHAI = ZoneInfo("Asia/Shanghai")
END_OF_DAY = time(23, 59, 59)
CALENDAR_DIR = Path(__file__).resolve().parent / "data" / "calendar"
KINDS = ("holiday", "workday")

_PERIOD = re.compile(r"P(?:(?P<y>\d+)Y)?(?:(?P<m>\d+)M)?(?:(?P<d>\d+)D)?")
_MAX_ROLL = 366  # a calendar that blocks a whole year is broken data, not a deadline


class Calendar:
    """Statutory holidays and adjusted working days (调休); other days follow Mon-Fri/Sat-Sun."""

    __slots__ = ("_holidays", "_workdays")

    def __init__(self, holidays: Mapping[date, str] | None = None, workdays: Mapping[date, str] | None = None):
        holidays, workdays = dict(holidays or {}), dict(workdays or {})
        for d in (*holidays, *workdays):
            if not isinstance(d, date) or isinstance(d, datetime):
                raise ValueError(f"calendar dates must be dates, got {d!r}")
        both = sorted(set(holidays) & set(workdays))
        if both:
            raise ValueError(f"dates both holiday and working day: {', '.join(d.isoformat() for d in both)}")
        self._holidays = MappingProxyType(holidays)
        self._workdays = MappingProxyType(workdays)

    @property
    def holidays(self) -> Mapping[date, str]:
        """Statutory holiday dates -> name (read-only)."""
        return self._holidays

    @property
    def workdays(self) -> Mapping[date, str]:
        """Adjusted working days (Saturdays/Sundays worked, 调休上班) -> name (read-only)."""
        return self._workdays

    @property
    def years(self) -> frozenset[int]:
        """Years for which the calendar has any data (other years count weekends only)."""
        return frozenset(d.year for d in (*self._holidays, *self._workdays))

    def is_working_day(self, d: date) -> bool:
        """True unless d is a statutory holiday or a Saturday/Sunday not marked as a working day."""
        d = _as_date(d)
        if d in self._holidays:
            return False
        return d in self._workdays or d.weekday() < 5

    def next_working_day(self, d: date) -> date:
        """The first working day strictly after d."""
        d = _as_date(d)
        for _ in range(_MAX_ROLL):
            d += timedelta(days=1)
            if self.is_working_day(d):
                return d
        raise ValueError(f"no working day within {_MAX_ROLL} days after {d.isoformat()}: calendar data is wrong")

    def working_day_on_or_after(self, d: date) -> date:
        """d itself if it is a working day, else the next working day (Civil Code Art. 203)."""
        d = _as_date(d)
        return d if self.is_working_day(d) else self.next_working_day(d)

    @classmethod
    def shipped(cls) -> Calendar:
        """The State Council arrangements shipped in engine/data/calendar (loaded once, cached)."""
        return _shipped()

    @classmethod
    def from_rows(cls, rows: Iterable) -> Calendar:
        """Build from (date, kind, name) rows, kind "holiday" or "workday"; dates may be ISO strings."""
        holidays: dict[date, str] = {}
        workdays: dict[date, str] = {}
        for row in rows:
            if isinstance(row, Mapping):
                day, kind, name = row["date"], row["kind"], row.get("name", "")
            else:
                day, kind, name = row
            day = date.fromisoformat(day) if isinstance(day, str) else _as_date(day)
            if kind not in KINDS:
                raise ValueError(f"calendar row {day.isoformat()}: kind must be 'holiday' or 'workday', got {kind!r}")
            target = holidays if kind == "holiday" else workdays
            if day in holidays or day in workdays:
                raise ValueError(f"calendar date {day.isoformat()} appears in more than one row")
            target[day] = str(name or "")
        return cls(holidays, workdays)

    def to_rows(self) -> list[tuple[date, str, str]]:
        """(date, kind, name) rows sorted by date, the inverse of from_rows."""
        rows = [(d, "holiday", n) for d, n in self._holidays.items()]
        rows += [(d, "workday", n) for d, n in self._workdays.items()]
        return sorted(rows)

    @classmethod
    def from_files(cls, paths: Iterable[Path]) -> Calendar:
        """Build from cn-<year>.json files ({"year", "source", "holidays": [...], "workdays": [...]})."""
        rows = []
        for path in paths:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
            for kind, key in (("holiday", "holidays"), ("workday", "workdays")):
                for item in doc.get(key, []):
                    day = date.fromisoformat(item["date"])
                    if day.year != doc["year"]:
                        raise ValueError(f"{path}: {day.isoformat()} is not in year {doc['year']}")
                    rows.append((day, kind, item.get("name", "")))
        return cls.from_rows(rows)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Calendar):
            return NotImplemented
        return dict(self._holidays) == dict(other._holidays) and dict(self._workdays) == dict(other._workdays)

    def __hash__(self) -> int:
        return hash((frozenset(self._holidays.items()), frozenset(self._workdays.items())))

    def __repr__(self) -> str:
        years = ",".join(str(y) for y in sorted(self.years)) or "none"
        return f"<Calendar years={years} holidays={len(self._holidays)} workdays={len(self._workdays)}>"


@functools.cache
def _shipped() -> Calendar:
    """Load engine/data/calendar/cn-*.json once."""
    return Calendar.from_files(sorted(CALENDAR_DIR.glob("cn-*.json")))


def parse_period(period: str) -> tuple[int, int]:
    """Parse an ISO 8601 period of whole years/months or days into (months, days); ValueError otherwise."""
    if not isinstance(period, str):
        raise ValueError(f"period must be an ISO 8601 duration string such as 'P1M', got {period!r}")
    m = _PERIOD.fullmatch(period)
    if not m or period == "P":
        hint = ""
        if "T" in period.upper():
            hint = " (time parts such as hours are not allowed: statutory periods are whole days)"
        elif "W" in period.upper():
            hint = " (weeks are not allowed: write days, e.g. P14D)"
        raise ValueError(f"unsupported period {period!r}: expected whole years/months/days like P1M, P2M, P1Y, P5Y, P10D{hint}")
    years, months, days = (int(m.group(k) or 0) for k in "ymd")
    if (years or months) and days:
        raise ValueError(f"unsupported period {period!r}: a period counts either months/years or days, not both")
    if not (years or months or days):
        raise ValueError(f"unsupported period {period!r}: the period must not be zero")
    return years * 12 + months, days


def add_months(start: date, months: int) -> date:
    """The same-numbered day `months` later, or that month's last day if it has no such day (Art. 202)."""
    index = start.month - 1 + months
    year, month = start.year + index // 12, index % 12 + 1
    return date(year, month, min(start.day, _calendar.monthrange(year, month)[1]))


def last_day(start: date | datetime | str, period: str) -> date:
    """The period's last day before any rest-day adjustment (start day not counted, Art. 201)."""
    start_day = _start_date(start)
    months, days = parse_period(period)
    return add_months(start_day, months) if months else start_day + timedelta(days=days)


def due(start: date | datetime | str, period: str, calendar: Calendar | None = None) -> datetime:
    """The statutory deadline: end (23:59:59 Asia/Shanghai) of the period's last working day."""
    cal = Calendar.shipped() if calendar is None else calendar
    end = cal.working_day_on_or_after(last_day(start, period))
    return datetime.combine(end, END_OF_DAY, tzinfo=SHANGHAI)


def _start_date(start: date | datetime | str) -> date:
    """The start as a calendar date in Asia/Shanghai (aware datetimes converted, naive refused)."""
    if isinstance(start, str):
        try:
            start = datetime.fromisoformat(start) if "T" in start or " " in start.strip() else date.fromisoformat(start)
        except ValueError:
            raise ValueError(f"start must be an ISO 8601 date or datetime, got {start!r}") from None
    if isinstance(start, datetime):
        if start.tzinfo is None or start.utcoffset() is None:
            raise ValueError(f"start datetime must carry a time zone, got naive {start.isoformat()}")
        return start.astimezone(SHANGHAI).date()
    if isinstance(start, date):
        return start
    raise ValueError(f"start must be a date or an aware datetime, got {start!r}")


def _as_date(d: date) -> date:
    """Accept a date; an aware datetime gives its date in Asia/Shanghai, a naive one its own date."""
    if isinstance(d, datetime):
        return d.astimezone(SHANGHAI).date() if d.utcoffset() is not None else d.date()
    if isinstance(d, date):
        return d
    raise ValueError(f"expected a date, got {d!r}")
