"""Helpers that BPMN scripts may call: database look-ups and business records (plain values in and out).

Each helper runs inside the transaction of the user action that runs the script.
"""
from __future__ import annotations

from sqlalchemy.orm import Session

from . import clock, history
from .models import Organisation

ENGINE_ACTOR = "engine"


def make_helpers(session: Session, holder: dict) -> dict:
    """The helpers for scripts of one instance; `holder["instance"]` is its row once known."""

    def is_filed_agency(org_id) -> bool:
        if org_id in (None, ""):
            return False
        org = session.get(Organisation, int(org_id))
        return bool(org and org.kind == "agency" and org.filing_status == "filed")

    def organisation_info(org_id) -> dict:
        org = session.get(Organisation, int(org_id)) if org_id not in (None, "") else None
        if org is None:
            return {}
        return {"id": org.id, "kind": org.kind, "name": org.name, "credit_code": org.credit_code,
                "division_code": org.division_code, "industry_code": org.industry_code,
                "is_central": org.is_central, "legal_representative": org.legal_representative,
                "address": org.address, "filing_status": org.filing_status,
                "filing_number": org.filing_number}

    def _record(kind, title, data, public, confidential) -> int:
        from .models import Record
        instance = holder.get("instance")
        row = Record(kind=str(kind)[:60], title=str(title)[:300], data=history.plain(data or {}),
                     public=public, confidential=confidential,
                     instance_id=instance.id if instance is not None else None,
                     enterprise_id=(instance.enterprise_id if instance is not None else None),
                     created_at=clock.now(), created_by=holder.get("actor", ENGINE_ACTOR))
        if isinstance(data, dict) and data.get("enterprise_id") not in (None, ""):
            row.enterprise_id = int(data["enterprise_id"])
        session.add(row)
        session.flush()
        return row.id

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

    return {"is_filed_agency": is_filed_agency, "organisation_info": organisation_info,
            "publish": publish, "keep_record": keep_record, "read_record": read_record}

