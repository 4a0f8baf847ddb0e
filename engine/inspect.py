"""Read-only views for auditors and process owners: instance search, the instance's path, versions."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Optional

from lxml import etree
from sqlalchemy import and_, case, exists, func, or_, select
from SpiffWorkflow import TaskState

from . import history
from .errors import InstanceNotFound, NotAllowed, ProcessNotFound
from .models import HumanTask, Instance, Organisation, ProcessVersion, User
from .xmlsafe import parse_bpmn_bytes

BPMN_NS = "http://www.omg.org/spec/BPMN/20100524/MODEL"
OVERSEERS = ("auditor", "administrator")


@dataclass
class InstancePage:
    rows: list
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


@dataclass
class Diagram:
    """An instance's version XML with the elements and flows it went through."""

    instance_id: int
    process_id: str
    version_no: int
    xml: str
    completed: list[str] = field(default_factory=list)
    active: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    flows: list[str] = field(default_factory=list)


def jurisdiction_prefix(code: Optional[str]) -> Optional[str]:
    """Codes under a jurisdiction share its prefix: 650000 -> 65, 650100 -> 6501, 650102 -> 650102."""
    if not code:
        return None
    if code.endswith("0000"):
        return code[:2]
    if code.endswith("00"):
        return code[:4]
    return code


def _visible_condition(user: User):
    """Instances a user may see: overseers by jurisdiction, everyone else where they may act."""
    if any(user.has_role(role) for role in OVERSEERS):
        prefix = jurisdiction_prefix(user.jurisdiction_code)
        if prefix is None:
            return Instance.id.is_(None)
        return or_(Instance.jurisdiction_code.like(f"{prefix}%"), Instance.jurisdiction_code.is_(None)) \
            if prefix == "65" else Instance.jurisdiction_code.like(f"{prefix}%")
    return exists().where(and_(HumanTask.instance_id == Instance.id,
                               HumanTask.lane.in_(list(user.roles or [])),
                               HumanTask.scope.in_(user.scope_keys())))


def may_view_instance(engine, user: User, instance_id: int) -> bool:
    with engine.db.read() as session:
        return session.scalar(select(Instance.id).where(
            Instance.id == instance_id, _visible_condition(user))) is not None


def search_instances(engine, user: User, *, process_id: Optional[str] = None, status: Optional[str] = None,
                     enterprise: Optional[str] = None, jurisdiction: Optional[str] = None,
                     started_from: Optional[datetime] = None, started_to: Optional[datetime] = None,
                     page: int = 1, per_page: int = 25) -> InstancePage:
    """Instances this user may see, newest first, filtered as an auditor would filter them."""
    page = max(1, int(page))
    query = select(Instance, Organisation.name).outerjoin(
        Organisation, Organisation.id == Instance.enterprise_id).where(_visible_condition(user))
    if process_id:
        query = query.where(Instance.process_id == process_id)
    if status:
        query = query.where(Instance.status == status)
    if enterprise:
        pattern = f"%{enterprise.strip()}%"
        query = query.where(or_(Organisation.name.like(pattern), Organisation.credit_code.like(pattern),
                                Instance.title.like(pattern)))
    if jurisdiction:
        prefix = jurisdiction_prefix(jurisdiction)
        query = query.where(Instance.jurisdiction_code.like(f"{prefix}%"))
    if started_from:
        query = query.where(Instance.started_at >= started_from)
    if started_to:
        query = query.where(Instance.started_at <= started_to)
    with engine.db.read() as session:
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = session.execute(query.order_by(Instance.started_at.desc(), Instance.id.desc())
                               .offset((page - 1) * per_page).limit(per_page)).all()
    return InstancePage([(row[0], row[1]) for row in rows], total, page, per_page)


def instance_diagram(engine, user: User, instance_id: int) -> Diagram:
    """The instance's version diagram with completed, active, failed and cancelled elements and taken flows."""
    if not may_view_instance(engine, user, instance_id):
        raise NotAllowed(user, f"instance {instance_id}")
    with engine.db.read() as session:
        row = session.get(Instance, instance_id)
        if row is None:
            raise InstanceNotFound(instance_id)
        version = session.get(ProcessVersion, row.version_id)
        loaded = engine._load(session, instance_id, lock=False)
    diagram = Diagram(instance_id, row.process_id, version.version_no, version.bpmn_xml)
    flows = _sequence_flows(version.bpmn_xml)
    workflows = [loaded.workflow] + [sp for sp in loaded.workflow.subprocesses.values()
                                     if sp.spec.name not in (row.called_versions or {})]
    states: dict[str, str] = {}
    rank = {"cancelled": 0, "completed": 1, "active": 2, "failed": 3}
    taken = set()
    for workflow in workflows:
        for task in workflow.tasks.values():
            bpmn_id = getattr(task.task_spec, "bpmn_id", None)
            state = _classify(task.state)
            if bpmn_id and state:
                if rank[state] > rank.get(states.get(bpmn_id, ""), -1):
                    states[bpmn_id] = state
            if bpmn_id and task.state in (TaskState.COMPLETED, TaskState.READY, TaskState.STARTED,
                                          TaskState.WAITING, TaskState.ERROR):
                source = _bpmn_ancestor(task)
                if source is not None:
                    taken.update(flows.get((source, bpmn_id), []))
    for bpmn_id, state in sorted(states.items()):
        getattr(diagram, state).append(bpmn_id)
    diagram.flows = sorted(taken)
    return diagram


def _classify(state: int) -> Optional[str]:
    if state == TaskState.COMPLETED:
        return "completed"
    if state in (TaskState.READY, TaskState.STARTED, TaskState.WAITING):
        return "active"
    if state == TaskState.ERROR:
        return "failed"
    if state == TaskState.CANCELLED:
        return "cancelled"
    return None


def _bpmn_ancestor(task) -> Optional[str]:
    parent = task.parent
    while parent is not None:
        bpmn_id = getattr(parent.task_spec, "bpmn_id", None)
        if bpmn_id:
            return bpmn_id if parent.state == TaskState.COMPLETED else None
        parent = parent.parent
    return None


def _sequence_flows(xml: str) -> dict[tuple[str, str], list[str]]:
    tree = parse_bpmn_bytes(xml.encode("utf-8"), "version.bpmn")
    flows: dict[tuple[str, str], list[str]] = {}
    for flow in tree.getroot().iter(f"{{{BPMN_NS}}}sequenceFlow"):
        key = (flow.get("sourceRef"), flow.get("targetRef"))
        flows.setdefault(key, []).append(flow.get("id"))
    return flows


def chain_status(engine, instance_id: int) -> list[history.Break]:
    """Breaks in the instance's history chain (empty: intact)."""
    with engine.db.read() as session:
        return history.verify(session, history.instance_chain(instance_id))


# ---------------------------------------------------------------------- versions
@dataclass
class VersionInfo:
    id: int
    process_id: str
    version_no: int
    name: str
    content_hash: str
    filename: str
    deployed_by: str
    deployed_at: datetime
    running: int
    total: int


def process_versions(engine, process_id: Optional[str] = None) -> list[VersionInfo]:
    """Every version (or one process's), newest first, with its running and total instance counts."""
    running = func.sum(case((Instance.status.in_(("running", "incident")), 1), else_=0))
    query = select(ProcessVersion, func.count(Instance.id), running).outerjoin(
        Instance, Instance.version_id == ProcessVersion.id).group_by(ProcessVersion.id)
    if process_id:
        query = query.where(ProcessVersion.process_id == process_id)
    with engine.db.read() as session:
        rows = session.execute(query.order_by(ProcessVersion.process_id, ProcessVersion.version_no.desc())).all()
    if process_id and not rows:
        raise ProcessNotFound(process_id)
    return [VersionInfo(v.id, v.process_id, v.version_no, v.name, v.content_hash, v.filename,
                        v.deployed_by, v.deployed_at, int(run or 0), int(total or 0))
            for v, total, run in rows]


def version_xml(engine, process_id: str, version_no: Optional[int] = None) -> tuple[int, str]:
    """(version number, BPMN XML) of a version, the latest when no number is given."""
    with engine.db.read() as session:
        query = select(ProcessVersion).where(ProcessVersion.process_id == process_id)
        if version_no is not None:
            query = query.where(ProcessVersion.version_no == int(version_no))
        version = session.scalar(query.order_by(ProcessVersion.version_no.desc()).limit(1))
        if version is None:
            raise ProcessNotFound(process_id if version_no is None else f"{process_id} version {version_no}")
        return version.version_no, version.bpmn_xml

