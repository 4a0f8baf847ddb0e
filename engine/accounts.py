"""Users, organisations and reference data (divisions, calendar) kept by the engine."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable, Optional

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from .authz import ROLES
from .errors import CleanauditError
from .models import CalendarDay, Division, Organisation, User

DATA_DIR = Path(__file__).resolve().parent / "data"


class AccountError(CleanauditError):
    """Invalid user or organisation data."""


def hash_password(password: str) -> str:
    return generate_password_hash(password)


def verify_password(user: User, password: str) -> bool:
    return bool(user.password_hash) and check_password_hash(user.password_hash, password)


def seed_divisions(session: Session) -> int:
    """Load the GB/T 2260 divisions shipped in engine/data (idempotent)."""
    count = 0
    with open(DATA_DIR / "xinjiang-divisions.csv", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if session.get(Division, row["code"]) is None:
                session.add(Division(code=row["code"], parent=row["parent"] or None, level=row["level"],
                                     name_zh=row["name_zh"], name_en=row["name_en"]))
                count += 1
    # The national agencies (Art. 16 copies for central enterprises) act for the whole country.
    if session.get(Division, "000000") is None:
        session.add(Division(code="000000", parent=None, level="national", name_zh="国家（中央）",
                             name_en="National (central government)"))
        count += 1
    session.flush()
    return count


def seed_calendar(session: Session) -> int:
    """Copy the shipped holiday calendar into the database, where administrators edit it."""
    from .deadlines import Calendar
    if session.scalar(select(CalendarDay).limit(1)) is not None:
        return 0
    rows = Calendar.shipped().to_rows()
    for day, kind, name in rows:
        session.add(CalendarDay(day=day, kind=kind, name=name))
    session.flush()
    return len(rows)


def create_user(session: Session, username: str, password: str, roles: Iterable[str], *,
                display_name: str = "", jurisdiction_code: Optional[str] = None,
                organisation_id: Optional[int] = None) -> User:
    """Create a user after checking roles, jurisdiction and organisation."""
    roles = list(roles)
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise AccountError(f"unknown role(s) {', '.join(unknown)}; roles are {', '.join(ROLES)}")
    if not username or len(username) > 64:
        raise AccountError("username must be 1-64 characters")
    if session.scalar(select(User).where(User.username == username)) is not None:
        raise AccountError(f"user {username} exists already")
    if jurisdiction_code and session.get(Division, jurisdiction_code) is None:
        raise AccountError(f"unknown division code {jurisdiction_code}")
    if organisation_id is not None and session.get(Organisation, organisation_id) is None:
        raise AccountError(f"unknown organisation {organisation_id}")
    user = User(username=username, display_name=display_name or username,
                password_hash=hash_password(password), roles=roles,
                jurisdiction_code=jurisdiction_code, organisation_id=organisation_id, active=True)
    session.add(user)
    session.flush()
    return user


def find_user(session: Session, username: str) -> Optional[User]:
    return session.scalar(select(User).where(User.username == username))
