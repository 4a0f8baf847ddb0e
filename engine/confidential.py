"""Who may see an enterprise's audit data, and the record of every look (Art. 20, 30).

Art. 20: the DRCs, ETCs and EPBs and the audit agencies keep the enterprise's technical and commercial
secrets; Art. 30: an official who leaks them is punished. So the audit data — every record that is not
published (plan, balances, options, report, expert reviews, implementation) and an instance's data —
is shown only to:

- the enterprise's own users (role enterprise, organisation = the enterprise);
- its commissioned audit agency (role consultancy, organisation = the instance's agency_id, or the
  agency_id the record names — an agency sees its own filing records);
- the agencies with authority over it: local_* roles whose jurisdiction is the enterprise's division,
  its prefecture or the instance's jurisdiction; regional_* roles (jurisdiction 650000); the national
  role for a central enterprise (Art. 16);
- the auditor (application role that checks the system itself);
- the experts drawn for its review (access_grant rows written by grant_access, or the instance's
  drawn_experts);
- the person a record is about (a record whose data names their user name: an expert's enrolment).

Every view appends "confidential_viewed" to the instance's history chain (who, what record, when);
every refusal appends "access_refused" and raises NotAllowed. Published records need no check.
A task page shows an instance's data and the records its data names: record_task_page_view and
read_records record those looks the same way, except the enterprise's own users' (is_own_enterprise).
The functions take the Engine as first argument; the facade and the web UI call them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from sqlalchemy import select

from . import clock, history
from .authz import NATIONAL_CODE, REGION_CODE
from .errors import CleanauditError, InstanceNotFound, NotAllowed
from .models import AccessGrant, Instance, Organisation, Record, User

REGIONAL_ROLES = ("regional_epb", "regional_drc", "regional_etc")
LOCAL_ROLES = ("local_epb", "local_drc", "local_etc")


class RecordNotFound(CleanauditError):
    def __init__(self, record_id):
        self.record_id = record_id
        super().__init__(f"no record {record_id}")


@dataclass
class Decision:
    allowed: bool
    reason: str       # why (the rule that allowed it, or why not)


def _prefecture(code: Optional[str]) -> Optional[str]:
    return code[:4] + "00" if code and len(code) == 6 and code.isdigit() else None


def _instance_facts(engine, instance: Optional[Instance]) -> dict:
    """agency_id and drawn_experts from the instance's data (loaded only when needed)."""
    if instance is None:
        return {}
    try:
        data = engine.instance_data(instance.id)
    except InstanceNotFound:
        return {}
    return {"agency_id": data.get("agency_id"), "drawn_experts": list(data.get("drawn_experts") or [])}


def decide(engine, session, user: User, *, enterprise_id: Optional[int], instance: Optional[Instance],
           record: Optional[Record] = None) -> Decision:
    """Whether the user may see audit data of that enterprise / instance / record, and why."""
    if user is None or not getattr(user, "active", False):
        return Decision(False, "inactive or unknown user")
    roles = set(user.roles or [])
    data = (record.data or {}) if record is not None else {}
    if "auditor" in roles:
        return Decision(True, "auditor")
    if roles & set(REGIONAL_ROLES) and user.jurisdiction_code == REGION_CODE:
        return Decision(True, "regional authority")
    enterprise = session.get(Organisation, int(enterprise_id)) if enterprise_id else None
    if "enterprise" in roles and enterprise is not None and user.organisation_id == enterprise.id:
        return Decision(True, "the enterprise itself")
    if roles & set(LOCAL_ROLES) and user.jurisdiction_code:
        codes = {instance.jurisdiction_code if instance is not None else None}
        if enterprise is not None:
            codes |= {enterprise.division_code, _prefecture(enterprise.division_code)}
        if user.jurisdiction_code in codes - {None}:
            return Decision(True, "local authority over the enterprise")
    if "national" in roles and enterprise is not None and enterprise.is_central \
            and user.jurisdiction_code == NATIONAL_CODE:
        return Decision(True, "national authority (central enterprise, Art. 16)")
    if record is not None and data.get("username") and data.get("username") == user.username:
        return Decision(True, "the person the record is about")
    facts: dict[str, Any] = {}
    if "consultancy" in roles and user.organisation_id is not None:
        agencies = {data.get("agency_id")}
        facts = _instance_facts(engine, instance)
        agencies.add(facts.get("agency_id"))
        if user.organisation_id in {int(a) for a in agencies if a not in (None, "")}:
            return Decision(True, "the commissioned audit agency")
    if "expert" in roles and instance is not None:
        granted = session.scalar(select(AccessGrant.id).where(
            AccessGrant.instance_id == instance.id, AccessGrant.username == user.username))
        if granted is not None:
            return Decision(True, "expert drawn for the review")
        facts = facts or _instance_facts(engine, instance)
        if user.username in facts.get("drawn_experts", []):
            return Decision(True, "expert drawn for the review")
    return Decision(False, "not the enterprise, its agency, an authority over it or a drawn expert (Art. 20)")


def _chain(record: Optional[Record], instance_id: Optional[int]) -> str:
    if instance_id is not None:
        return history.instance_chain(instance_id)
    return f"record:{record.id}" if record is not None else "confidential"


def _log(session, user: User, kind: str, *, instance_id: Optional[int], record: Optional[Record],
         what: str, reason: str) -> None:
    data = {"what": what, "reason": reason, "user": user.username}
    if record is not None:
        data.update(record_id=record.id, record_kind=record.kind, record_title=record.title,
                    enterprise_id=record.enterprise_id)
    history.append(session, chain=_chain(record, instance_id), kind=kind, actor=user.username,
                   at=clock.now(), instance_id=instance_id, data=data)


def may_view_record(engine, user: User, record_id: int) -> bool:
    """Whether the user could see the record (no history entry: for showing or hiding a link)."""
    with engine.db.read() as session:
        record = session.get(Record, int(record_id))
        if record is None:
            return False
        if record.public:
            return True
        instance = session.get(Instance, record.instance_id) if record.instance_id else None
        enterprise_id = record.enterprise_id or (instance.enterprise_id if instance is not None else None)
        return decide(engine, session, user, enterprise_id=enterprise_id, instance=instance, record=record).allowed


def view_record(engine, user: User, record_id: int) -> dict:
    """The record's content for this user; the view is recorded, a refusal recorded and raised."""
    refused: Optional[Decision] = None
    with engine.db.transaction() as session:
        record = session.get(Record, int(record_id))
        if record is None:
            raise RecordNotFound(record_id)
        result = {"id": record.id, "kind": record.kind, "title": record.title, "data": dict(record.data or {}),
                  "public": record.public, "confidential": record.confidential,
                  "instance_id": record.instance_id, "enterprise_id": record.enterprise_id,
                  "created_at": record.created_at, "created_by": record.created_by}
        if record.public:
            return result
        instance = session.get(Instance, record.instance_id) if record.instance_id else None
        enterprise_id = record.enterprise_id or (instance.enterprise_id if instance is not None else None)
        decision = decide(engine, session, user, enterprise_id=enterprise_id, instance=instance, record=record)
        kind = "confidential_viewed" if decision.allowed else "access_refused"
        _log(session, user, kind, instance_id=record.instance_id, record=record,
             what=f"record {record.id}", reason=decision.reason)
        if not decision.allowed:
            refused = decision
    if refused is not None:  # raised after the commit, so the refusal stays in the history
        raise NotAllowed(user, f"record {record_id}", refused.reason)
    return result


def view_instance_data(engine, user: User, instance_id: int) -> dict:
    """An instance's data for this user (keys starting with "_" left out); recorded like view_record."""
    refused: Optional[Decision] = None
    with engine.db.transaction() as session:
        instance = session.get(Instance, int(instance_id))
        if instance is None:
            raise InstanceNotFound(instance_id)
        decision = decide(engine, session, user, enterprise_id=instance.enterprise_id, instance=instance)
        kind = "confidential_viewed" if decision.allowed else "access_refused"
        _log(session, user, kind, instance_id=instance.id, record=None,
             what=f"instance {instance.id} data", reason=decision.reason)
        if not decision.allowed:
            refused = decision
    if refused is not None:
        raise NotAllowed(user, f"instance {instance_id}", refused.reason)
    data = engine.instance_data(int(instance_id))
    return {key: value for key, value in data.items() if not str(key).startswith("_")}


def views(engine, instance_id: int) -> list:
    """The views and refusals recorded for an instance, oldest first (history events)."""
    return [event for event in engine.history(instance_id)
            if event.kind in ("confidential_viewed", "access_refused")]


def view_instance_history(engine, user: User, instance_id: int, what: str = "history") -> Decision:
    """Whether the user may see the data submitted in an instance's history (Art. 20).

    A view by anyone but the enterprise itself is recorded as "confidential_viewed" (`what`: the
    page or the export); a user who may not see the data is shown the timeline without it, which
    is no refusal to record.
    """
    with engine.db.transaction() as session:
        instance = session.get(Instance, int(instance_id))
        if instance is None:
            raise InstanceNotFound(instance_id)
        decision = decide(engine, session, user, enterprise_id=instance.enterprise_id, instance=instance)
        if decision.allowed and decision.reason != "the enterprise itself":
            _log(session, user, "confidential_viewed", instance_id=instance.id, record=None,
                 what=f"instance {instance.id} {what}", reason=decision.reason)
    return decision


# ------------------------------------------------------------------ what a task page shows
def is_own_enterprise(user: Optional[User], enterprise_id) -> bool:
    """Whether the user is one of the enterprise's own users (their looks are not recorded)."""
    if user is None or enterprise_id in (None, "") or user.organisation_id is None:
        return False
    try:
        return "enterprise" in (user.roles or []) and int(user.organisation_id) == int(enterprise_id)
    except (TypeError, ValueError):
        return False


def record_task_page_view(engine, user: User, task) -> bool:
    """A task page shows the instance's earlier data: record the look (Art. 20, 30), once per page view.

    `task` is the HumanTask row the user opened (the caller has checked that the user may act on it).
    Appends "confidential_viewed" to the instance's chain when the instance concerns an enterprise
    (enterprise_id set) and the user is not one of that enterprise's own users; returns whether it did.
    """
    with engine.db.transaction() as session:
        instance = session.get(Instance, int(task.instance_id))
        if instance is None:
            raise InstanceNotFound(task.instance_id)
        if instance.enterprise_id is None or is_own_enterprise(user, instance.enterprise_id):
            return False
        history.append(session, chain=history.instance_chain(instance.id), kind="confidential_viewed",
                       actor=user.username, at=clock.now(), instance_id=instance.id, task_id=str(task.id),
                       bpmn_id=task.bpmn_id,
                       data={"what": f"task page {task.bpmn_id}", "reason": f"may act on the task ({task.lane})",
                             "user": user.username, "user_name": user.display_name or user.username,
                             "enterprise_id": instance.enterprise_id})
    return True


@dataclass
class RecordView:
    """A record as a page shows it; `allowed` False means the user may not see it (no title, no data)."""

    id: int
    allowed: bool
    kind: str = ""
    title: str = ""
    data: Optional[dict] = None
    public: bool = False
    confidential: bool = False
    instance_id: Optional[int] = None
    enterprise_id: Optional[int] = None
    created_at: Any = None
    recorded: bool = False        # this look was written to the history as confidential_viewed


def read_records(engine, user: User, record_ids) -> list[RecordView]:
    """Records a page shows next to a task (ids from its data, `*_record_id(s)`), in the order given.

    Published records are shown as they are. A record that is not published is shown when `decide`
    allows it; a look at a confidential one by anyone but the enterprise's own users is recorded
    ("confidential_viewed", one event per record); a refusal is recorded ("access_refused") and the
    record comes back with allowed False. Unknown ids are left out. One transaction.
    """
    out: list[RecordView] = []
    seen: set[int] = set()
    record_ids = list(record_ids or [])
    if not record_ids:
        return out
    with engine.db.transaction() as session:
        for raw in record_ids:
            try:
                record_id = int(raw)
            except (TypeError, ValueError):
                continue
            if record_id in seen:
                continue
            seen.add(record_id)
            record = session.get(Record, record_id)
            if record is None:
                continue
            view = RecordView(id=record.id, allowed=True, kind=record.kind, title=record.title,
                              data=dict(record.data or {}), public=record.public,
                              confidential=record.confidential, instance_id=record.instance_id,
                              enterprise_id=record.enterprise_id, created_at=record.created_at)
            if not record.public:
                instance = session.get(Instance, record.instance_id) if record.instance_id else None
                enterprise_id = record.enterprise_id or (instance.enterprise_id if instance is not None else None)
                decision = decide(engine, session, user, enterprise_id=enterprise_id, instance=instance, record=record)
                if not decision.allowed:
                    _log(session, user, "access_refused", instance_id=record.instance_id, record=record,
                         what=f"record {record.id}", reason=decision.reason)
                    view = RecordView(id=record.id, allowed=False)
                elif record.confidential and not is_own_enterprise(user, enterprise_id):
                    _log(session, user, "confidential_viewed", instance_id=record.instance_id, record=record,
                         what=f"record {record.id}", reason=decision.reason)
                    view.recorded = True
            out.append(view)
    return out
