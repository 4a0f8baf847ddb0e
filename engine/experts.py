"""The cleaner-production expert pools (Art. 21) and the random draw of reviewers (Art. 17).

The regional pool is kept under the region's code "650000"; a prefecture may keep its own pool under
its six-digit code (Art. 21 (2)). A draw takes active experts of one pool whose user account is active
and holds the role `expert`, optionally only those with a speciality (GB/T 4754 division, e.g. "C31"),
and never an expert with a conflict of interest: one working for the audited enterprise or for the
audit agency it commissioned (matched by organisation id, or by organisation name for experts whose
organisation is not registered here), nor one named in `exclude_usernames` (already drawn, recused).
"""
from __future__ import annotations

import random
import re
from datetime import datetime
from typing import Iterable, Optional

from sqlalchemy import select
from sqlalchemy.orm import Session

from .authz import REGION_CODE
from .models import Expert, Organisation, User

DIVISION_RE = re.compile(r"^[A-T]\d{2}$")   # a GB/T 4754-2017 division ("C31"), its section letter first
POOL_RE = re.compile(r"^65\d{2}00$")        # the region (650000) or a prefecture (6501 00, 6523 00, ...)
_random = random.SystemRandom()


class ExpertPoolError(ValueError):
    """Enrolment data that cannot go into a pool; says what was wrong and what came in."""


def _check_pool(pool: str) -> str:
    pool = str(pool or REGION_CODE)
    if not POOL_RE.match(pool):
        raise ExpertPoolError(f"pool must be the region 650000 or a prefecture code (65xx00), got {pool!r}")
    return pool


def _check_specialities(specialities: Iterable[str]) -> list[str]:
    result = []
    for code in specialities or ():
        code = str(code).strip().upper()
        if not DIVISION_RE.match(code):
            raise ExpertPoolError(f"speciality must be a GB/T 4754 division such as C31, got {code!r}")
        if code not in result:
            result.append(code)
    if not result:
        raise ExpertPoolError("an expert needs at least one speciality (GB/T 4754 division)")
    return result


def enrol(session: Session, *, username: str, name: str, organisation_name: str = "",
          specialities: Iterable[str], pool: str = REGION_CODE, organisation_id: Optional[int] = None,
          title: Optional[str] = None, enrolled_by: str = "engine", now: datetime,
          instance_id: Optional[int] = None) -> Expert:
    """Enrol a person in a pool, or update and reactivate their entry there; returns the row."""
    pool = _check_pool(pool)
    specialities = _check_specialities(specialities)
    if not str(username or "").strip():
        raise ExpertPoolError("an expert needs the user name of their account")
    if organisation_id in ("", 0):
        organisation_id = None
    if organisation_id is not None and session.get(Organisation, int(organisation_id)) is None:
        raise ExpertPoolError(f"unknown organisation id {organisation_id!r}")
    row = session.scalar(select(Expert).where(Expert.username == username, Expert.pool == pool))
    if row is None:
        row = Expert(username=username, pool=pool, enrolled_at=now)
        session.add(row)
    row.name = str(name)[:100]
    row.title = (str(title)[:100] if title else None)
    row.organisation_name = str(organisation_name or "")[:200]
    row.organisation_id = int(organisation_id) if organisation_id is not None else None
    row.specialities = specialities
    row.active = True
    row.enrolled_at = now
    row.enrolled_by = enrolled_by
    row.instance_id = instance_id
    session.flush()
    return row


def withdraw(session: Session, username: str, pool: Optional[str] = None) -> int:
    """Deactivate a person's entries (in one pool, or all); returns how many."""
    query = select(Expert).where(Expert.username == username, Expert.active.is_(True))
    if pool:
        query = query.where(Expert.pool == pool)
    rows = list(session.scalars(query))
    for row in rows:
        row.active = False
    return len(rows)


def candidates(session: Session, *, pool: str = REGION_CODE, industry: Optional[str] = None,
               exclude_organisation_ids: Iterable = (), exclude_usernames: Iterable[str] = ()) -> list[Expert]:
    """The experts a draw may pick: active, with an active `expert` account, without a conflict."""
    pool = _check_pool(pool)
    excluded_ids = {int(x) for x in exclude_organisation_ids or () if x not in (None, "")}
    excluded_names = set()
    if excluded_ids:
        excluded_names = {name.strip() for name in session.scalars(
            select(Organisation.name).where(Organisation.id.in_(excluded_ids))) if name}
    excluded_users = {str(u) for u in exclude_usernames or ()}
    industry = str(industry).strip().upper() if industry else None
    rows = session.execute(
        select(Expert, User).join(User, User.username == Expert.username)
        .where(Expert.pool == pool, Expert.active.is_(True), User.active.is_(True))
        .order_by(Expert.username)).all()
    result = []
    for expert, user in rows:
        if not user.has_role("expert") or expert.username in excluded_users:
            continue
        if expert.organisation_id is not None and expert.organisation_id in excluded_ids:
            continue
        if (expert.organisation_name or "").strip() in excluded_names:
            continue
        if industry and industry not in (expert.specialities or []):
            continue
        result.append(expert)
    return result


def draw(session: Session, count: int, *, pool: str = REGION_CODE, industry: Optional[str] = None,
         exclude_organisation_ids: Iterable = (), exclude_usernames: Iterable[str] = (),
         rng: Optional[random.Random] = None) -> list[str]:
    """Draw up to `count` reviewers at random (fewer when the pool has fewer); their user names."""
    count = int(count)
    if count < 0:
        raise ExpertPoolError(f"the number of experts to draw must not be negative, got {count}")
    pool_members = [e.username for e in candidates(
        session, pool=pool, industry=industry, exclude_organisation_ids=exclude_organisation_ids,
        exclude_usernames=exclude_usernames)]
    pool_members = list(dict.fromkeys(pool_members))
    return (rng or _random).sample(pool_members, min(count, len(pool_members)))


# Demo pool for `cleanaudit init --demo` (engine/demo.py): user name, name, title, employer, the demo
# organisation key of the employer (engine.demo.ORGANISATIONS) or None, specialities, pool. expert-4
# works for the filed demo agency, so a draw for an audit that agency assists never picks them.
DEMO_POOL = [
    ("expert-1", "周文华", "教授级高级工程师", "新疆大学", None, ["C26", "C31", "C30"], REGION_CODE),
    ("expert-2", "古丽娜·阿不都", "高级工程师", "新疆环境保护科学研究院", None, ["C26", "C14", "C30"], REGION_CODE),
    ("expert-3", "陈建平", "高级工程师", "新疆化工设计研究院", None, ["C26", "C28"], REGION_CODE),
    ("expert-4", "马立新", "工程师", "新疆清源清洁生产技术咨询有限公司", "agency-a", ["C26", "C31"], REGION_CODE),
    ("expert-5", "李卫东", "副教授", "昌吉学院", None, ["C30", "D44"], "652300"),
]


def enrol_demo_pool(session: Session, organisations: dict[str, int], now: datetime) -> list[str]:
    """Enrol the DEMO_POOL members whose user accounts exist; returns their user names."""
    enrolled = []
    for username, name, title, employer, org_key, specialities, pool in DEMO_POOL:
        if session.scalar(select(User.id).where(User.username == username)) is None:
            continue
        enrol(session, username=username, name=name, title=title, organisation_name=employer,
              organisation_id=organisations.get(org_key) if org_key else None, specialities=specialities,
              pool=pool, enrolled_by="demo", now=now)
        enrolled.append(username)
    return enrolled
