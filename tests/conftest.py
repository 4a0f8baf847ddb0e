"""Shared fixtures: a real SQLite database per test, a movable clock, actors."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable, Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHANGHAI = timezone(timedelta(hours=8))


class Clock:
    """The test's clock: every engine call inside the test sees this time."""

    def __init__(self, start: datetime):
        from engine import clock as engine_clock
        self._clock = engine_clock
        self.now = start
        engine_clock.set_now(start)

    def set(self, when: datetime) -> datetime:
        self.now = when
        self._clock.set_now(when)
        return when

    def advance(self, **kwargs) -> datetime:
        return self.set(self.now + timedelta(**kwargs))


@pytest.fixture
def clock():
    """A fake clock starting 2025-03-03 09:00 Asia/Shanghai; tests move it, never sleep."""
    from engine import clock as engine_clock
    fake = Clock(datetime(2025, 3, 3, 9, 0, tzinfo=SHANGHAI))
    yield fake
    engine_clock.reset()


def make_engine(url: str, processes_dir: Optional[Path] = None, forms_dir: Optional[Path] = None):
    from engine.facade import Engine
    from engine.accounts import seed_calendar, seed_divisions
    engine = Engine(url, processes_dir=processes_dir or ROOT / "processes",
                    forms_dir=forms_dir or ROOT / "forms")
    engine.create_schema()
    with engine.db.transaction() as session:
        seed_divisions(session)
        seed_calendar(session)
    return engine


@pytest.fixture
def engine(tmp_path):
    """An engine on a fresh SQLite file with divisions and the calendar loaded, nothing deployed."""
    eng = make_engine(f"sqlite:///{tmp_path / 'cleanaudit.sqlite'}")
    yield eng
    eng.db.dispose()


def add_organisation(engine, *, kind: str, name: str, credit_code: str, division_code: str,
                     filing_status: str = "none", **extra) -> int:
    from engine.models import Organisation
    with engine.db.transaction() as session:
        org = Organisation(kind=kind, name=name, credit_code=credit_code, division_code=division_code,
                           filing_status=filing_status, **extra)
        session.add(org)
        session.flush()
        return org.id


def add_user(engine, username: str, roles: Iterable[str], *, jurisdiction_code: Optional[str] = None,
             organisation_id: Optional[int] = None, password: str = "pw"):
    from engine.accounts import create_user
    with engine.db.transaction() as session:
        return create_user(session, username, password, roles, jurisdiction_code=jurisdiction_code,
                           organisation_id=organisation_id)
