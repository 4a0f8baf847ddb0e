"""Helpers that BPMN scripts may call: database look-ups and business records (plain values in and out).

Each helper runs inside the transaction of the user action that runs the script.
"""
from __future__ import annotations

import re
from datetime import timedelta, timezone

from sqlalchemy import Text, bindparam, insert, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session

from . import clock, fastsql, history
from .models import Organisation

ENGINE_ACTOR = "engine"
_CHINA = timezone(timedelta(hours=8))  # Asia/Shanghai, no DST

# Art. 15, 19: an audit agency's filing with the regional DRC, ETC and EPB.
FILING_STATUSES = ("none", "applying", "filed", "revoked")
FILING_NUMBER_FORMAT = "新清审备〔{year}〕第{n:03d}号"
_FILING_NUMBER_RE = re.compile(r"^新清审备〔(\d{4})〕第(\d+)号$")

# Art. 23: the kinds of cleaner-production project listed as key areas of investment plans.
INVESTMENT_PRIORITY_CATEGORIES = ("energy_saving", "water_saving", "comprehensive_utilisation",
                                  "resource_efficiency", "pollution_prevention")
# Art. 24: pollution-fee funds go first to projects that meet the fee regulation (pollution prevention).
POLLUTION_FEE_CATEGORIES = ("pollution_prevention",)
# Art. 25: the priority sectors, by GB/T 4754-2017 division (regulation/domain-notes.md).
PRIORITY_SECTORS = {
    "petrochemical": ("C25", "B07"),
    "metallurgy": ("C31", "C32"),
    "chemical": ("C26", "C28", "C29"),
    "building_materials": ("C30",),
    "light_industry": ("C13", "C14", "C15", "C19", "C22"),
    "textile": ("C17", "C18"),
}


def priority_sector(industry_code) -> str | None:
    """The Art. 25 priority sector of a GB/T 4754 code ("C3120" or "C31"), or None."""
    division = str(industry_code or "").strip().upper()[:3]
    for sector, divisions in PRIORITY_SECTORS.items():
        if division in divisions:
            return sector
    return None


def incentive_flags(industry_code, options, is_sme=False) -> list[dict]:
    """Which of an enterprise's chosen options qualify for which incentive (Art. 23-25), with why."""
    sector = priority_sector(industry_code)
    result = []
    for option in options or []:
        category = str(option.get("category") or "")
        asked = bool(option.get("apply_for_support", True))
        key_area = category in INVESTMENT_PRIORITY_CATEGORIES
        flags = {
            "investment_priority": key_area,                                   # Art. 23
            "interest_subsidy": key_area and asked,                            # Art. 23
            "pollution_fee_priority": category in POLLUTION_FEE_CATEGORIES and asked,  # Art. 24
            "sme_fund": bool(is_sme) and asked,                                # Art. 25 (1)
            "central_special_fund": bool(sector or is_sme) and key_area and asked,  # Art. 25 (2)
        }
        reasons = []
        if flags["investment_priority"]:
            reasons.append("Art. 23: key area of investment plans")
        if flags["pollution_fee_priority"]:
            reasons.append("Art. 24: pollution-fee funds first")
        if flags["sme_fund"]:
            reasons.append("Art. 25: SME development fund")
        if flags["central_special_fund"]:
            reasons.append(f"Art. 25: central special fund ({sector or 'SME'})")
        result.append({"name": str(option.get("name") or ""), "category": category,
                       "investment": option.get("investment"), "priority_sector": sector,
                       "qualifies": any(flags.values()), "flags": flags, "reasons": reasons})
    return result


_INSERT_RECORD: list = []


def _insert_record():
    """INSERT INTO record ... RETURNING id, built once (fastsql keeps it compiled); and the same
    with the data given as JSON text (for SQLite, which stores JSON as text)."""
    if not _INSERT_RECORD:
        from .models import Record
        table = Record.__table__
        _INSERT_RECORD.append(insert(table).returning(table.c.id))
        _INSERT_RECORD.append(insert(table).values(data=bindparam("data_json", type_=Text()))
                              .returning(table.c.id))
    return _INSERT_RECORD


_ORGANISATION_FIELDS = ("id", "kind", "name", "credit_code", "division_code", "industry_code", "is_central",
                        "legal_representative", "address", "filing_status", "filing_number")
_SELECT_ORGANISATION: list = []
_ORGANISATION_IDENTITY = sa_inspect(Organisation).identity_key_from_primary_key


def _organisation(session: Session, org_id: int) -> dict | None:
    """An organisation's fields as scripts see them, or None.

    One object the session already holds (maybe changed in this transaction) is read from it;
    otherwise one Core SELECT (an ORM get in a fresh session cost ~0.5 ms, on most actions).
    """
    held = session.identity_map.get(_ORGANISATION_IDENTITY((org_id,)))
    if held is not None:
        return {name: getattr(held, name) for name in _ORGANISATION_FIELDS}
    if not _SELECT_ORGANISATION:
        table = Organisation.__table__
        _SELECT_ORGANISATION.append(select(*[table.c[name] for name in _ORGANISATION_FIELDS])
                                    .where(table.c.id == bindparam("org_id")))
    found = fastsql.fetch_one(session, _SELECT_ORGANISATION[0], {"org_id": org_id})
    return dict(zip(_ORGANISATION_FIELDS, found)) if found is not None else None


# session.info keys of work done outside the write lock (Engine.tick works out timer fires in a
# read-only transaction, then writes them): a helper that writes, or whose answer a write must
# agree with (the next filing number, an expert draw), is refused there and the fire is done again
# under the lock. The mark stays even if a script catches the refusal.
PREPARING = "cleanaudit_preparing"
WANTED_LOCK = "cleanaudit_wanted_lock"


class NeedsWriteLock(Exception):
    """A helper that writes was called in work done outside the write lock (done again under it)."""


def make_helpers(session: Session, holder: dict) -> dict:
    """The helpers for scripts of one instance; `holder["instance"]` is its row once known."""

    def writes(helper: str) -> None:
        info = session.info
        if info.get(PREPARING):
            info[WANTED_LOCK] = True
            raise NeedsWriteLock(f"{helper} writes: done again under the write lock")

    def is_filed_agency(org_id) -> bool:
        if org_id in (None, ""):
            return False
        org = _organisation(session, int(org_id))
        return bool(org and org["kind"] == "agency" and org["filing_status"] == "filed")

    def organisation_info(org_id) -> dict:
        org = _organisation(session, int(org_id)) if org_id not in (None, "") else None
        return dict(org) if org is not None else {}

    def _record(kind, title, data, public, confidential) -> int:
        writes("publish / keep_record")
        instance = holder.get("instance")
        values = dict(kind=str(kind)[:60], title=str(title)[:300],
                      public=public, confidential=confidential,
                      instance_id=instance.id if instance is not None else None,
                      enterprise_id=(instance.enterprise_id if instance is not None else None),
                      created_at=clock.now(), created_by=holder.get("actor", ENGINE_ACTOR))
        if isinstance(data, dict) and data.get("enterprise_id") not in (None, ""):
            values["enterprise_id"] = int(data["enterprise_id"])
        # One Core INSERT ... RETURNING (scripts keep records on most steps; the ORM's add + flush
        # cost several times more). On SQLite the data goes in as the JSON text it is stored as
        # (what history.plain would turn it into, encoded once).
        as_object, as_text = _insert_record()
        if fastsql.is_sqlite(session):
            values["data_json"] = history.plain_json(data or {})
            return fastsql.execute(session, as_text, values).fetchone()[0]
        values["data"] = history.plain(data or {})
        return fastsql.execute(session, as_object, values).fetchone()[0]

    def publish(kind, title, data=None) -> int:
        """Publish a record on the public disclosure pages (what the Measures publish)."""
        return _record(kind, title, data, True, False)

    def keep_record(kind, title, data=None, confidential=True) -> int:
        """Keep bulky or growing business data in its own table; returns its id for task data."""
        return _record(kind, title, data, False, bool(confidential))

    def read_record(record_id) -> dict:
        from .models import Record
        row = session.get(Record, int(record_id))
        return dict(row.data) if row is not None else {}

    def withdraw_publication(record_id) -> bool:
        """Take a published record off the public pages (e.g. a disclosure the EPB returned as not as
        required, Art. 10); it stays on record for the instance, and the reason is in its history."""
        writes("withdraw_publication")
        from .models import Record
        row = session.get(Record, int(record_id)) if record_id not in (None, "") else None
        if row is None or not row.public:
            return False
        row.public = False
        session.flush()
        return True

    # ---------------------------------------------------------------- Art. 15, 19: agency filing
    def set_agency_filing(agency_id, status, filing_number=None) -> dict:
        """Set an audit agency's filing status (none|applying|filed|revoked); returns its filing."""
        writes("set_agency_filing")
        if status not in FILING_STATUSES:
            raise ValueError(f"filing status must be one of {', '.join(FILING_STATUSES)}, got {status!r}")
        org = session.get(Organisation, int(agency_id)) if agency_id not in (None, "") else None
        if org is None or org.kind != "agency":
            raise ValueError(f"organisation {agency_id!r} is not an audit agency")
        org.filing_status = status
        if status == "filed":
            if not filing_number:
                raise ValueError("a filed agency needs its filing number")
            org.filing_number = str(filing_number)[:40]
            org.filed_at = clock.now()
        elif filing_number:
            org.filing_number = str(filing_number)[:40]
        session.flush()
        return {"agency_id": org.id, "filing_status": org.filing_status, "filing_number": org.filing_number}

    def next_filing_number() -> str:
        """The next filing number of the current year, e.g. 新清审备〔2025〕第003号 (never reused)."""
        writes("next_filing_number")
        from .scripting import today
        year = int(today()[:4])
        used = [0]
        for number in session.scalars(select(Organisation.filing_number).where(
                Organisation.filing_number.like(f"新清审备〔{year}〕%"))):
            match = _FILING_NUMBER_RE.match(number or "")
            if match and int(match.group(1)) == year:
                used.append(int(match.group(2)))
        return FILING_NUMBER_FORMAT.format(year=year, n=max(used) + 1)

    def find_organisation(credit_code) -> int | None:
        """The id of the organisation with that unified social credit code, or None."""
        if not credit_code:
            return None
        return session.scalar(select(Organisation.id).where(
            Organisation.credit_code == str(credit_code).strip().upper()))

    # ---------------------------------------------------------------- Art. 17, 21: experts
    def draw_experts(count, industry=None, exclude_organisation_ids=(), exclude_usernames=(),
                     pool="650000") -> list:
        """Draw reviewers at random from a pool, without conflicts of interest (engine/experts.py)."""
        writes("draw_experts")
        from . import experts
        return experts.draw(session, count, pool=pool, industry=industry,
                            exclude_organisation_ids=list(exclude_organisation_ids or ()),
                            exclude_usernames=list(exclude_usernames or ()))

    def enrol_expert(username, name, organisation_name="", specialities=(), pool="650000",
                     organisation_id=None, title=None) -> int:
        """Enrol (or re-enrol) a person in an expert pool; returns the pool entry's id."""
        writes("enrol_expert")
        from . import experts
        instance = holder.get("instance")
        row = experts.enrol(session, username=username, name=name, organisation_name=organisation_name,
                            specialities=list(specialities or ()), pool=pool, organisation_id=organisation_id,
                            title=title, enrolled_by=holder.get("actor", ENGINE_ACTOR), now=clock.now(),
                            instance_id=instance.id if instance is not None else None)
        return row.id

    def grant_access(usernames, reason="expert_review") -> int:
        """Allow these people to see this instance's confidential audit data (Art. 20); returns how many new."""
        writes("grant_access")
        from .models import AccessGrant
        instance = holder.get("instance")
        if instance is None:
            raise ValueError("grant_access needs a stored instance")
        if isinstance(usernames, str):
            usernames = [usernames]
        existing = set(session.scalars(select(AccessGrant.username).where(
            AccessGrant.instance_id == instance.id)))
        added = 0
        for username in usernames or ():
            username = str(username)
            if username in existing:
                continue
            session.add(AccessGrant(instance_id=instance.id, username=username, reason=str(reason)[:60],
                                    granted_at=clock.now(), granted_by=holder.get("actor", ENGINE_ACTOR)))
            existing.add(username)
            added += 1
        session.flush()
        return added

    # ---------------------------------------------------------------- Art. 22-25: incentives
    def has_accepted_audit(enterprise_id) -> dict:
        """The enterprise's latest accepted audit ({} when none): a voluntary review passed (Art. 17),
        a record "audit_accepted", or a mandatory audit whose report the local EPB accepted (Art. 16)."""
        return _accepted_audit(session, enterprise_id)

    def instance_id():
        """The id of the instance the script runs for."""
        instance = holder.get("instance")
        return instance.id if instance is not None else None

    return {"instance_id": instance_id, "is_filed_agency": is_filed_agency, "organisation_info": organisation_info,
            "publish": publish, "keep_record": keep_record, "read_record": read_record,
            "withdraw_publication": withdraw_publication,
            "set_agency_filing": set_agency_filing, "next_filing_number": next_filing_number,
            "find_organisation": find_organisation, "draw_experts": draw_experts,
            "enrol_expert": enrol_expert, "grant_access": grant_access,
            "has_accepted_audit": has_accepted_audit, "priority_sector": priority_sector,
            "incentive_flags": incentive_flags}


def _accepted_audit(session: Session, enterprise_id) -> dict:
    from .models import Event, Instance, Record
    if enterprise_id in (None, ""):
        return {}
    enterprise_id = int(enterprise_id)
    found = []
    for row in session.scalars(select(Record).where(
            Record.enterprise_id == enterprise_id, Record.kind.in_(("review_result", "audit_accepted")))):
        data = row.data or {}
        if row.kind == "audit_accepted" or data.get("result") == "pass":
            found.append({"record_id": row.id, "instance_id": row.instance_id, "kind": row.kind,
                          "accepted_on": str(data.get("decided_on") or data.get("accepted_on")
                                             or row.created_at.date().isoformat())})
    # The mandatory chain keeps its acceptance in the instance (report_status): read the review task.
    mandatory = list(session.scalars(select(Instance.id).where(
        Instance.process_id == "mandatory_audit", Instance.enterprise_id == enterprise_id)))
    if mandatory:
        chains = [history.instance_chain(instance_id) for instance_id in mandatory]
        for event in session.scalars(select(Event).where(
                Event.chain.in_(chains), Event.kind == "task_completed",
                Event.bpmn_id == "review_report")):
            if (event.data or {}).get("data", {}).get("review_decision") == "accept":
                found.append({"record_id": None, "instance_id": event.instance_id, "kind": "mandatory_audit",
                              "accepted_on": event.at.astimezone(_CHINA).date().isoformat()})
    if not found:
        return {}
    return sorted(found, key=lambda item: item["accepted_on"])[-1]
