"""Fixtures for the process scenario tests: deployed processes and the actors of the Measures.

- `deploy(*process_ids)` deploys processes/<id>.bpmn (all of processes/ when none is named) on the
  test's `engine` (tests/conftest.py: a fresh SQLite database, nothing deployed).
- `engine_with(*process_ids)` gives a fresh engine with those processes already deployed, copied
  from a template database built once per session (fast); a module overrides `engine` with it.
- `deployed_engine` is the test's `engine` with every file of processes/ deployed.
- `actors` creates demo-like organisations and users (two Urumqi districts, a Changji county, the
  prefecture and the region; enterprises, filed / applying / revoked audit agencies) and returns
  them as attributes, e.g. `actors.steel`, `actors.steel_user`, `actors.tianshan_epb`.
- `scene` offers read-side helpers (open tasks, records, undelivered messages, instances) and
  `act(user, bpmn_id, data)`.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import patch

import pytest
from sqlalchemy import select

# tests/engine does `from conftest import ROOT, SHANGHAI, add_organisation, add_user`, which resolves to
# whichever conftest pytest imported last (possibly this one): keep those names importable from here.
from tests.conftest import ROOT, SHANGHAI, add_organisation, add_user  # noqa: F401

PROCESSES = ROOT / "processes"

TIANSHAN, SAYBAG, URUMQI, CHANGJI_CITY, REGION = "650102", "650103", "650100", "652301", "650000"


def uscc(division: str, serial: int, kind: str = "91") -> str:
    """A valid unified social credit code (GB 32100-2015): `kind` 91 = enterprise legal person."""
    from engine.forms import uscc_check_character
    first17 = f"{kind}{division}{serial:09d}"
    return first17 + uscc_check_character(first17)


@pytest.fixture
def deploy(engine):
    """deploy("mandatory_audit", "audit_stages"): deploy those process files (all when none named)."""

    def _deploy(*process_ids: str):
        paths = [PROCESSES / f"{pid}.bpmn" for pid in process_ids] or sorted(PROCESSES.glob("*.bpmn"))
        return engine.deploy_paths(paths)

    return _deploy


@pytest.fixture(scope="session")
def _templates(tmp_path_factory):
    """Database files with the schema, reference data and some processes deployed, built once per
    session and copied by each test (deploying validates every form: ~0.4 s a time)."""
    from tests.conftest import make_engine
    built: dict[tuple, Path] = {}

    def template(process_ids: tuple) -> Path:
        if process_ids not in built:
            path = tmp_path_factory.mktemp("template") / "cleanaudit.sqlite"
            engine = make_engine(f"sqlite:///{path}")
            engine.deploy_paths([PROCESSES / f"{pid}.bpmn" for pid in process_ids]
                                or sorted(PROCESSES.glob("*.bpmn")))
            engine.db.dispose()
            built[process_ids] = path
        return built[process_ids]

    return template


@pytest.fixture(scope="session")
def _form_store():
    """One FormStore for the session: it caches each form by path and modification time, and the
    first load of a form checks it against the JSON Schema meta-schema (~75 ms)."""
    from engine.forms import FormStore
    return FormStore(ROOT / "forms")


@pytest.fixture
def engine_with(tmp_path, _templates, _form_store):
    """engine_with("mandatory_audit", "audit_stages"): a fresh engine (own SQLite file, divisions,
    calendar) with those processes (all of processes/ when none named) already deployed. A test
    module overrides the `engine` fixture with it: `def engine(engine_with): return engine_with(...)`."""
    from engine.facade import Engine
    engines = []

    def _engine_with(*process_ids: str):
        template = _templates(tuple(process_ids))
        target = tmp_path / f"cleanaudit-{len(engines)}.sqlite"
        for suffix in ("", "-wal"):
            if Path(f"{template}{suffix}").exists():
                shutil.copyfile(f"{template}{suffix}", f"{target}{suffix}")
        engine = Engine(f"sqlite:///{target}", processes_dir=PROCESSES, forms_dir=ROOT / "forms")
        engine.forms = _form_store
        engines.append(engine)
        return engine

    yield _engine_with
    for engine in engines:
        engine.db.dispose()


@pytest.fixture
def deployed_engine(engine, deploy):
    """The test's `engine` with every process of processes/ deployed (the same engine that `actors`
    and `scene` use; for speed a module can instead override `engine` with `engine_with()`)."""
    deploy()
    return engine


@pytest.fixture(scope="session")
def _password_hash() -> str:
    from engine.accounts import hash_password
    return hash_password("pw")


@pytest.fixture
def actors(engine, _password_hash):
    """Organisations and users like the demo data: who acts where (every password is "pw")."""
    # Hashing a password costs ~0.15 s; these users all share one hash, computed once per session.
    with patch("engine.accounts.hash_password", lambda password: _password_hash):
        return _create_actors(engine)


def _create_actors(engine) -> SimpleNamespace:
    a = SimpleNamespace()
    # Enterprises (Art. 8): two in Tianshan district, one in Saybag district, one in Changji city.
    a.steel = add_organisation(engine, kind="enterprise", name="天山钢铁有限公司", credit_code=uscc(TIANSHAN, 1),
                               division_code=TIANSHAN, legal_representative="王强", address="乌鲁木齐市天山区钢城路1号",
                               industry_code="C31")
    a.chem = add_organisation(engine, kind="enterprise", name="天山化工有限公司", credit_code=uscc(TIANSHAN, 2),
                              division_code=TIANSHAN, legal_representative="李敏", address="乌鲁木齐市天山区化工路8号",
                              industry_code="C26", is_central=True)
    a.cement = add_organisation(engine, kind="enterprise", name="沙依巴克建材有限公司", credit_code=uscc(SAYBAG, 3),
                                division_code=SAYBAG, industry_code="C30")
    a.coal = add_organisation(engine, kind="enterprise", name="昌吉煤电有限公司", credit_code=uscc(CHANGJI_CITY, 4),
                              division_code=CHANGJI_CITY, industry_code="D44")
    # Audit agencies (Art. 15, 19): filed, still applying, filing revoked.
    a.agency = add_organisation(engine, kind="agency", name="新疆清洁生产技术咨询中心", credit_code=uscc(URUMQI, 11, "12"),
                                division_code=URUMQI, filing_status="filed", filing_number="XJQJ-2024-001")
    a.applying_agency = add_organisation(engine, kind="agency", name="天山环保咨询有限公司",
                                         credit_code=uscc(TIANSHAN, 12), division_code=TIANSHAN,
                                         filing_status="applying")
    a.revoked_agency = add_organisation(engine, kind="agency", name="某已撤销备案咨询公司",
                                        credit_code=uscc(SAYBAG, 13), division_code=SAYBAG, filing_status="revoked",
                                        filing_number="XJQJ-2021-009")
    # Users of the enterprises and agencies.
    a.steel_user = add_user(engine, "steel", ["enterprise"], organisation_id=a.steel)
    a.chem_user = add_user(engine, "chem", ["enterprise"], organisation_id=a.chem)
    a.cement_user = add_user(engine, "cement", ["enterprise"], organisation_id=a.cement)
    a.agency_user = add_user(engine, "agency", ["consultancy"], organisation_id=a.agency)
    a.applying_agency_user = add_user(engine, "applying-agency", ["consultancy"], organisation_id=a.applying_agency)
    # Local authorities (Art. 4, 9, 10, 16-18) of Tianshan and Saybag districts and of Urumqi.
    a.tianshan_epb = add_user(engine, "tianshan-epb", ["local_epb"], jurisdiction_code=TIANSHAN)
    a.tianshan_drc = add_user(engine, "tianshan-drc", ["local_drc"], jurisdiction_code=TIANSHAN)
    a.tianshan_etc = add_user(engine, "tianshan-etc", ["local_etc"], jurisdiction_code=TIANSHAN)
    a.saybag_epb = add_user(engine, "saybag-epb", ["local_epb"], jurisdiction_code=SAYBAG)
    a.urumqi_epb = add_user(engine, "urumqi-epb", ["local_epb"], jurisdiction_code=URUMQI)
    # The region (Art. 9, 19, 28, 29).
    a.regional_epb = add_user(engine, "region-epb", ["regional_epb"], jurisdiction_code=REGION)
    a.regional_drc = add_user(engine, "region-drc", ["regional_drc"], jurisdiction_code=REGION)
    a.regional_etc = add_user(engine, "region-etc", ["regional_etc"], jurisdiction_code=REGION)
    a.admin = add_user(engine, "admin", ["administrator"], jurisdiction_code=REGION)
    return a


# ---------------------------------------------------------------------------------------------- engine
def _lists_event_subprocess_starts(waiting_messages) -> bool:
    """True when waiting_messages already reports the message start of an event sub-process."""
    from SpiffWorkflow.bpmn import BpmnWorkflow
    from SpiffWorkflow.spiff.parser.process import SpiffBpmnParser

    from engine.xmlsafe import parse_bpmn_bytes
    parser = SpiffBpmnParser()
    parser.add_bpmn_xml(parse_bpmn_bytes(_PROBE.encode(), "probe.bpmn"), filename="probe.bpmn")
    workflow = BpmnWorkflow(parser.get_spec("probe"), parser.get_subprocess_specs("probe"))
    workflow.do_engine_steps()
    return any(name == "probe_message" for name, _ in waiting_messages(workflow))


_PROBE = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" id="probe_definitions"
    targetNamespace="http://cleanaudit.example/probe">
  <bpmn:message id="probe_message" name="probe_message" />
  <bpmn:process id="probe" isExecutable="true">
    <bpmn:startEvent id="probe_start"><bpmn:outgoing>probe_flow</bpmn:outgoing></bpmn:startEvent>
    <bpmn:userTask id="probe_task"><bpmn:incoming>probe_flow</bpmn:incoming></bpmn:userTask>
    <bpmn:sequenceFlow id="probe_flow" sourceRef="probe_start" targetRef="probe_task" />
    <bpmn:subProcess id="probe_events" triggeredByEvent="true">
      <bpmn:startEvent id="probe_event_start" isInterrupting="false">
        <bpmn:outgoing>probe_event_flow</bpmn:outgoing>
        <bpmn:messageEventDefinition id="probe_event_message" messageRef="probe_message" />
      </bpmn:startEvent>
      <bpmn:endEvent id="probe_event_end"><bpmn:incoming>probe_event_flow</bpmn:incoming></bpmn:endEvent>
      <bpmn:sequenceFlow id="probe_event_flow" sourceRef="probe_event_start" targetRef="probe_event_end" />
    </bpmn:subProcess>
  </bpmn:process>
</bpmn:definitions>
"""


# ---------------------------------------------------------------------------------------------- scene
class Scene:
    """Read-side helpers over one test's engine (what a scenario test looks at)."""

    def __init__(self, engine):
        self.engine = engine

    def task(self, user, bpmn_id: str, instance_id=None):
        """The open inbox row of that task which the user may act on (fails when there is none)."""
        rows = [r for r in self.engine.inbox(user, per_page=100).rows
                if r.bpmn_id == bpmn_id and (instance_id is None or r.instance_id == instance_id)]
        assert rows, f"{user.username} has no open task {bpmn_id}; open: {self.open_tasks(instance_id)}"
        return rows[0]

    def act(self, user, bpmn_id: str, data: dict | None = None, instance_id=None):
        """Complete the user's open task `bpmn_id` with the form data (acknowledgements: no data)."""
        row = self.task(user, bpmn_id, instance_id)
        return self.engine.complete(user, row.id, {"confirmed": True} if data is None else data)

    def status(self, instance_id: int) -> str:
        row = self.engine.instance(instance_id)
        return f"{row.status}: {row.incident_error}" if row.status == "incident" else row.status

    def open_tasks(self, instance_id=None) -> list[str]:
        """The BPMN ids of the open inbox rows (of one instance, called processes included), sorted."""
        from engine.models import HumanTask
        query = select(HumanTask.bpmn_id).where(HumanTask.status == "open")
        if instance_id is not None:
            query = query.where(HumanTask.instance_id == instance_id)
        with self.engine.db.read() as session:
            return sorted(session.scalars(query))

    def history_kinds(self, instance_id: int) -> list[str]:
        return [event.kind for event in self.engine.history(instance_id)]

    def records(self, kind: str) -> list:
        """Records of one kind, oldest first."""
        from engine.models import Record
        with self.engine.db.read() as session:
            return list(session.scalars(select(Record).where(Record.kind == kind).order_by(Record.id)))

    def undelivered(self, name: str) -> list:
        """Messages of that name that no instance or start event took."""
        from engine.models import UndeliveredMessage
        with self.engine.db.read() as session:
            return list(session.scalars(select(UndeliveredMessage).where(UndeliveredMessage.name == name)
                                        .order_by(UndeliveredMessage.id)))

    def instances(self, process_id: str) -> list:
        """Instances of a process, oldest first."""
        from engine.models import Instance
        with self.engine.db.read() as session:
            return list(session.scalars(select(Instance).where(Instance.process_id == process_id)
                                        .order_by(Instance.id)))


@pytest.fixture
def scene(engine):
    return Scene(engine)


# ---------------------------------------------------------------------------------------------- audits
def correlation(enterprise_id: int) -> dict:
    """The correlations of enterprise_listed (property enterprise_id, SpiffWorkflow's default key)."""
    return {"MainCorrelationKey": {"enterprise_id": enterprise_id}}


class AuditDriver:
    """Drives mandatory_audit / audit_stages through the facade with valid form data."""

    def __init__(self, engine, actors, scene):
        self.engine, self.actors, self.scene = engine, actors, scene

    # -- Art. 9: the listing that starts the audit ---------------------------------------------------
    def listing(self, enterprise_id: int, *, grounds=("exceeding",), published_on: str = "2025-03-03",
                jurisdiction_code: str = TIANSHAN, batch: str = "2025-1") -> dict:
        from engine.models import Organisation
        with self.engine.db.read() as session:
            org = session.get(Organisation, enterprise_id)
            name, is_central = org.name, bool(org.is_central)
        return {"enterprise_id": enterprise_id, "enterprise_name": name, "jurisdiction_code": jurisdiction_code,
                "grounds": list(grounds), "published_on": published_on, "batch": batch, "is_central": is_central}

    def list_enterprise(self, enterprise_id: int, **kwargs):
        """Deliver enterprise_listed as mandatory_listing does on publication; returns the instance id."""
        return self.engine.send_message("enterprise_listed", self.listing(enterprise_id, **kwargs),
                                        correlation(enterprise_id))

    # -- Art. 10 -------------------------------------------------------------------------------------
    @staticmethod
    def disclosure(name: str = "天山钢铁有限公司", division: str = TIANSHAN) -> dict:
        return {"enterprise_name": name, "uscc": uscc(division, 1), "legal_representative": "王强",
                "address": "乌鲁木齐市天山区钢城路1号", "division_code": division, "media": "乌鲁木齐晚报",
                "disclosure_date": "2025-03-20", "reporting_year": 2024,
                "pollutants": [
                    {"name": "二氧化硫", "medium": "air", "discharge_mode": "organised_continuous",
                     "concentration": 180.0, "unit": "mg/m³", "standard_limit": 100.0, "annual_total_t": 420.5,
                     "quota_t": 380.0, "exceeds": True, "over_quota": True},
                    {"name": "化学需氧量", "medium": "water", "discharge_mode": "indirect", "concentration": 60.0,
                     "unit": "mg/L", "standard_limit": 100.0, "annual_total_t": 12.3, "exceeds": False,
                     "over_quota": False}]}

    # -- Art. 11, 14, 15, 19 -------------------------------------------------------------------------
    @staticmethod
    def commission(agency_id: int) -> dict:
        return {"audit_mode": "agency", "agency_id": agency_id, "contract_no": "QJSH-2025-017",
                "contract_date": "2025-04-10"}

    @staticmethod
    def self_audit() -> dict:
        return {"audit_mode": "self",
                "self_audit_team": [
                    {"name": "张伟", "post": "生产副总经理", "qualification": "高级工程师", "speciality": "冶金工程"},
                    {"name": "刘芳", "post": "环保科科长", "qualification": "工程师（清洁生产审核师）",
                     "speciality": "环境工程"}],
                "self_audit_basis": "企业设有环保科和技术中心，两名技术人员参加过自治区清洁生产审核师培训。"}

    @staticmethod
    def accept_commission() -> dict:
        return {"commission_answer": "accept", "lead_auditor": "陈静", "auditor_count": 3,
                "planned_completion": "2025-12-31"}

    # -- Art. 13: the six stages ---------------------------------------------------------------------
    STAGES = {
        "prepare_audit": {
            "leadership_commitment": True, "team_leader": "张伟",
            "team": [{"name": "张伟", "post": "生产副总经理", "title": "高级工程师", "speciality": "冶金", "role": "leader"},
                     {"name": "刘芳", "post": "环保科科长", "title": "工程师", "speciality": "环境工程", "role": "member"}],
            "work_plan": [{"phase": "preparation", "task": "成立审核小组、培训", "start_date": "2025-04-15",
                           "end_date": "2025-04-30", "department": "环保科", "output": "审核工作计划"}],
            "training_sessions": 2, "trained_staff": 45},
        "pre_audit": {
            "survey_summary": "烧结工序二氧化硫排放超标，吨钢新水消耗高于行业清洁生产二级标准。",
            "audit_focus": "烧结工序", "focus_reason": "权重总和计分排序第一。",
            "targets": [{"indicator": "二氧化硫排放浓度", "unit": "mg/m³", "baseline": 180, "near_term": 100,
                         "long_term": 50}],
            "no_low_cost_options": [{"name": "加强跑冒滴漏管理", "description": "建立巡检制度", "investment": 0.5,
                                     "status": "implemented"}]},
        "audit_balances": {
            "balances": [{"kind": "material", "item": "铁矿粉", "unit": "t/a", "inputs": 1000000, "outputs": 985000,
                          "closure_pct": 98.5},
                         {"kind": "water", "item": "新鲜水", "unit": "m³/a", "inputs": 520000, "outputs": 512000,
                          "closure_pct": 98.5}],
            "waste_causes": [{"aspect": "equipment", "description": "脱硫设施老化，效率下降。"}]},
        "generate_options": {
            "options": [{"name": "烧结烟气脱硫改造", "category": "medium_high_cost", "aspect": "equipment",
                         "description": "石灰石-石膏法脱硫", "screened_in": True},
                        {"name": "循环水系统改造", "category": "medium_high_cost", "aspect": "technology",
                         "description": "提高水重复利用率", "screened_in": True},
                        {"name": "更换照明灯具", "category": "no_low_cost", "aspect": "equipment",
                         "description": "LED 灯具", "screened_in": False}],
            "screening_method": "权重总和计分排序法"},
        "assess_feasibility": {
            "discount_rate_pct": 8,
            "assessments": [{"option_name": "烧结烟气脱硫改造", "technical_feasible": True, "investment": 1200,
                             "annual_benefit": 300, "payback_years": 4, "npv": 450.5,
                             "environmental_effect": "二氧化硫年削减约300吨", "chosen": True},
                            {"option_name": "循环水系统改造", "technical_feasible": True, "investment": 300,
                             "annual_benefit": 80, "payback_years": 3.75, "npv": 120,
                             "environmental_effect": "年节约新鲜水10万立方米", "chosen": True}]},
        "write_report": {
            "report_title": "天山钢铁有限公司清洁生产审核报告", "report_date": "2025-11-20",
            "enterprise_basics": "年产钢200万吨……", "audit_process_and_results": "审核重点为烧结工序……",
            "options_summary_and_benefits": "共提出方案3项……预计年经济效益380万元。",
            "implementation_plan": [{"option_name": "烧结烟气脱硫改造", "start_date": "2026-01-01",
                                     "end_date": "2026-10-31", "department": "设备处", "investment": 1200}]},
    }

    def run_stages(self, enterprise_user, instance_id: int, agency_user=None) -> None:
        """Complete the six stages (Art. 13) as the enterprise; the agency co-signs when commissioned."""
        for bpmn_id, data in self.STAGES.items():
            self.scene.act(enterprise_user, bpmn_id, data, instance_id)
        if agency_user is not None:
            self.scene.act(agency_user, "cosign_report",
                           {"cosign_decision": "confirm", "signing_auditor": "陈静", "certificate_no": "QJ-0815"},
                           instance_id)

    # -- Art. 16 -------------------------------------------------------------------------------------
    @staticmethod
    def report_summary() -> dict:
        return {"report_title": "天山钢铁有限公司清洁生产审核报告", "report_date": "2025-11-20", "audit_focus": "烧结工序",
                "options_total": 3, "no_low_cost_options_count": 1, "medium_high_cost_options_count": 2,
                "planned_investment": 1500, "expected_annual_benefit": 380,
                "expected_reductions": [{"pollutant": "二氧化硫", "reduction_t": 300}], "recipients_confirmed": True}

    @staticmethod
    def accept_report() -> dict:
        return {"review_decision": "accept", "reviewed_on": "2025-12-15", "review_opinion": "报告内容完整。"}

    # -- whole routes --------------------------------------------------------------------------------
    def to_report(self, enterprise_user, instance_id: int, *, agency: bool = True) -> None:
        """Commission (agency or self-audit) and run the six stages: the report is ready to submit."""
        a = self.actors
        if agency:
            self.scene.act(enterprise_user, "commission_agency", self.commission(a.agency), instance_id)
            self.scene.act(a.agency_user, "accept_commission", self.accept_commission(), instance_id)
            self.run_stages(enterprise_user, instance_id, a.agency_user)
        else:
            self.scene.act(enterprise_user, "commission_agency", self.self_audit(), instance_id)
            self.run_stages(enterprise_user, instance_id)

    def complete_audit(self, enterprise_user, epb_user, instance_id: int, *, agency: bool = True) -> None:
        """From a fresh listing to the local EPB's acceptance of the report (disclosure left aside)."""
        self.to_report(enterprise_user, instance_id, agency=agency)
        self.scene.act(enterprise_user, "submit_report", self.report_summary(), instance_id)
        self.scene.act(epb_user, "review_report", self.accept_report(), instance_id)


@pytest.fixture
def audit(engine, actors, scene):
    """An AuditDriver over the test's engine and actors."""
    return AuditDriver(engine, actors, scene)


# ==================================================================================================
# Issue 5 (voluntary audit, agency filing, expert pool, commendation, confidentiality): fixtures of
# tests/processes/test_voluntary_audit.py, test_agency_filing.py, test_expert_enrolment.py,
# test_commendation.py and test_confidentiality.py. Nothing above this line depends on them.
# ==================================================================================================
PREFECTURE_URUMQI, PREFECTURE_CHANGJI = "650100", "652300"


def review_task_id(bpmn_id: str) -> set:
    """A user task's inbox ids: a multi-instance task's instances are named '<id> [child]'."""
    return {bpmn_id, f"{bpmn_id} [child]"}


@pytest.fixture
def pool(engine, actors, _password_hash):
    """Expert users and their pool entries (Art. 21): two with a conflict of interest with the steel
    enterprise or the filed agency (one by organisation id, one by organisation name only), four
    independent metallurgy/chemistry experts in the regional pool, one in Changji's pool; plus
    Urumqi's DRC and ETC, a Changji DRC, an auditor and a second filed agency."""
    from engine import clock, experts

    p = SimpleNamespace()
    with patch("engine.accounts.hash_password", lambda password: _password_hash):
        rows = [  # username, name, organisation name, organisation id, specialities, pool
            ("expert-steel", "钢铁厂总工", "天山钢铁有限公司", actors.steel, ["C31"], REGION),
            ("expert-agency", "咨询中心专家", "新疆清洁生产技术咨询中心", actors.agency, ["C31", "C26"], REGION),
            ("expert-agency-name", "咨询中心兼职专家", "新疆清洁生产技术咨询中心", None, ["C31"], REGION),
            ("expert-a", "周文华", "新疆大学", None, ["C31", "C32"], REGION),
            ("expert-b", "古丽娜", "新疆环境保护科学研究院", None, ["C31", "C26"], REGION),
            ("expert-c", "陈建平", "新疆冶金设计研究院", None, ["C31"], REGION),
            ("expert-d", "马立新", "新疆化工设计研究院", None, ["C26", "C28"], REGION),
            ("expert-changji", "李卫东", "昌吉学院", None, ["C30", "D44"], PREFECTURE_CHANGJI),
        ]
        p.users = {}
        for username, name, org_name, org_id, specialities, pool_code in rows:
            p.users[username] = add_user(engine, username, ["expert"], jurisdiction_code=REGION)
            with engine.db.transaction() as session:
                experts.enrol(session, username=username, name=name, organisation_name=org_name,
                              organisation_id=org_id, specialities=specialities, pool=pool_code,
                              now=clock.now())
        p.urumqi_drc = add_user(engine, "urumqi-drc", ["local_drc"], jurisdiction_code=URUMQI)
        p.urumqi_etc = add_user(engine, "urumqi-etc", ["local_etc"], jurisdiction_code=URUMQI)
        p.changji_drc = add_user(engine, "changji-drc", ["local_drc"], jurisdiction_code=PREFECTURE_CHANGJI)
        p.auditor = add_user(engine, "auditor", ["auditor"], jurisdiction_code=REGION)
        p.other_agency = add_organisation(engine, kind="agency", name="昌吉环境咨询有限公司",
                                          credit_code=uscc(CHANGJI_CITY, 14), division_code=CHANGJI_CITY,
                                          filing_status="filed", filing_number="新清审备〔2024〕第002号")
        p.other_agency_user = add_user(engine, "other-agency", ["consultancy"], organisation_id=p.other_agency)
    return p


class VoluntaryDriver:
    """Drives voluntary_audit through the facade with valid form data (Art. 6, 12, 13, 17, 18)."""

    def __init__(self, engine, actors, scene, pool):
        self.engine, self.a, self.scene, self.pool = engine, actors, scene, pool

    # -- Art. 6, 12 ----------------------------------------------------------------------------------
    def start(self, user=None, enterprise_id=None) -> int:
        user = user or self.a.steel_user
        enterprise_id = enterprise_id or self.a.steel
        return self.engine.start("voluntary_audit", actor=user, data={
            "enterprise_id": enterprise_id, "started_by": user.username, "jurisdiction_code": TIANSHAN})

    def plan(self, **overrides) -> dict:
        data = {"meets_discharge_standards": True, "audit_scope": "烧结车间和轧钢车间",
                "objectives": "吨钢新水消耗下降10%，二氧化硫排放量削减15%。",
                "focus_candidates": [{"name": "烧结工序", "reason": "能耗和二氧化硫排放占全厂一半以上"}],
                "planned_start": "2025-04-01", "planned_completion": "2025-12-31", "audit_mode": "agency",
                "agency_id": self.a.agency, "submit_level": "county", "contact_name": "刘芳",
                "contact_phone": "0991-8888888"}
        data.update(overrides)
        return {k: v for k, v in data.items() if v is not None}

    def submit_plan(self, iid: int, user=None, **overrides):
        return self.scene.act(user or self.a.steel_user, "submit_application", self.plan(**overrides), iid)

    def local_opinions(self, iid: int, drc=None, etc=None, epb=None) -> None:
        a = self.a
        for key, user in (("drc", drc or a.tianshan_drc), ("etc", etc or a.tianshan_etc), ("epb", epb or a.tianshan_epb)):
            self.scene.act(user, f"local_{key}_opinion", {f"{key}_opinion": "support",
                                                          f"{key}_comments": "同意企业开展自愿性清洁生产审核。",
                                                          f"{key}_opinion_date": "2025-03-10"}, iid)

    def regional_decision(self, iid: int, returns: dict | None = None) -> None:
        """All three regional agencies decide; `returns` maps "drc"/"etc"/"epb" to a return reason."""
        returns = returns or {}
        users = {"drc": self.a.regional_drc, "etc": self.a.regional_etc, "epb": self.a.regional_epb}
        for key, user in users.items():
            data = {f"regional_{key}_decision": "return" if key in returns else "approve",
                    f"regional_{key}_decided_on": "2025-03-20"}
            if key in returns:
                data[f"regional_{key}_reason"] = returns[key]
            self.scene.act(user, f"regional_{key}_approval", data, iid)

    def approve_plan(self, iid: int, **plan) -> None:
        self.submit_plan(iid, **plan)
        self.local_opinions(iid)
        self.regional_decision(iid)

    # -- Art. 13 -------------------------------------------------------------------------------------
    def run_stages(self, iid: int, agency_user=None) -> None:
        for bpmn_id, data in AuditDriver.STAGES.items():
            self.scene.act(self.a.steel_user, bpmn_id, data, iid)
        if agency_user is not None:
            self.scene.act(agency_user, "cosign_report",
                           {"cosign_decision": "confirm", "signing_auditor": "陈静", "certificate_no": "QJ-0815"}, iid)

    def submit_report(self, iid: int) -> None:
        self.scene.act(self.a.steel_user, "submit_report_for_review",
                       {"report_summary": "审核重点为烧结工序，提出方案3项，预计年经济效益380万元。", "truthful": True}, iid)

    def to_review(self, iid: int) -> None:
        """From a fresh instance to the report waiting for the expert review (agency commissioned)."""
        self.approve_plan(iid)
        self.run_stages(iid, self.a.agency_user)
        self.submit_report(iid)

    # -- Art. 17, 21 ---------------------------------------------------------------------------------
    def organise(self, iid: int, count: int = 3, pool_level: str = "region", speciality=None, excluded=()) -> None:
        data = {"expert_count": count, "pool_level": pool_level, "review_due": "2026-01-20"}
        if speciality:
            data["speciality"] = speciality
        if excluded:
            data["excluded_experts"] = [{"username": u, "reason": "曾为该企业提供技术服务"} for u in excluded]
        self.scene.act(self.a.regional_drc, "organise_expert_review", data, iid)

    def reviewers(self, iid: int) -> list[str]:
        """The user names of the experts with an open review task in this instance."""
        from engine.models import HumanTask
        with self.engine.db.read() as session:
            rows = session.scalars(select(HumanTask).where(
                HumanTask.instance_id == iid, HumanTask.status == "open",
                HumanTask.bpmn_id.in_(review_task_id("review_by_expert")))).all()
        return sorted(row.scope.split(":", 1)[1] for row in rows)

    def review(self, iid: int, username: str, recommendation: str = "pass", score: int = 86,
               conflict: str | None = None):
        user = self.pool.users[username]
        rows = [r for r in self.engine.inbox(user, per_page=100).rows
                if r.instance_id == iid and r.bpmn_id in review_task_id("review_by_expert")]
        assert rows, f"{username} has no review task; open: {self.scene.open_tasks(iid)}"
        if conflict:
            data = {"conflict_declaration": "conflict", "conflict_reason": conflict}
        else:
            data = {"conflict_declaration": "none", "score": score, "recommendation": recommendation,
                    "comments": "报告内容完整，方案可行。", "reviewed_on": "2026-01-15"}
        return self.engine.complete(user, rows[0].id, data)

    def review_all(self, iid: int, recommendation: str = "pass") -> list[str]:
        names = self.reviewers(iid)
        for name in names:
            self.review(iid, name, recommendation)
        return names

    def decide(self, iid: int, result: str = "pass", reason: str | None = None, user=None) -> None:
        data = {"review_result": result, "result_summary": "经专家审定，报告符合要求。", "consulted_drc_etc": True,
                "decided_on": "2026-01-25"}
        if reason:
            data["result_reason"] = reason
        self.scene.act(user or self.a.tianshan_epb, "decide_review", data, iid)

    def acknowledge_copies(self, iid: int) -> None:
        a = self.a
        for user, bpmn_id in ((a.regional_epb, "copy_regional_epb"), (a.regional_drc, "copy_regional_drc"),
                              (a.regional_etc, "copy_regional_etc")):
            self.scene.act(user, bpmn_id, None, iid)

    # -- Art. 18 -------------------------------------------------------------------------------------
    def report_implementation(self, iid: int, status: str = "completed") -> None:
        self.scene.act(self.a.steel_user, "report_implementation", {
            "progress": [{"option_name": "烧结烟气脱硫改造", "status": status, "actual_investment": 1180,
                          "effect": "二氧化硫年削减310吨"}],
            "reported_on": "2026-11-05"}, iid)

    def supervise(self, iid: int, result: str = "satisfactory", reason: str | None = None) -> None:
        data = {"supervision_result": result, "checked_on": "2026-11-20"}
        if reason:
            data["supervision_reason"] = reason
        self.scene.act(self.a.tianshan_drc, "supervise_implementation", data, iid)

    def data(self, iid: int) -> dict:
        return self.engine.instance_data(iid)


def ensure_deployed(engine, deploy, *process_ids: str) -> None:
    """Deploy those processes unless the test's engine has them already (engine_with templates)."""
    from engine.models import ProcessVersion
    with engine.db.read() as session:
        have = set(session.scalars(select(ProcessVersion.process_id)))
    if not set(process_ids) <= have:
        deploy(*process_ids)


@pytest.fixture
def voluntary(engine, deploy, actors, scene, pool):
    """voluntary_audit and audit_stages deployed, with a VoluntaryDriver over the test's actors."""
    ensure_deployed(engine, deploy, "voluntary_audit", "audit_stages")
    return VoluntaryDriver(engine, actors, scene, pool)
