"""A small site for the web and browser tests: the web_fixture process, organisations, users, records.

User names mirror the demo of issue 6 (`ent-a`, `epb-650102`, ...), so that a test written against
this site can later run against `cleanaudit init --demo` (see tests/browser/conftest.py).
"""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
PROCESSES = DATA / "processes"
FORMS = DATA / "forms"
PASSWORD = "demo"


def root_helpers():
    """tests/conftest.py as a module (make_engine, add_organisation, add_user, Clock)."""
    name = "cleanaudit_tests_root_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE.parent / "conftest.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


def uscc(body17: str) -> str:
    """A valid unified social credit code from its first 17 characters."""
    from engine.forms import uscc_check_character
    return body17 + uscc_check_character(body17)


@dataclass
class Site:
    engine: object
    orgs: dict[str, int] = field(default_factory=dict)
    users: dict[str, object] = field(default_factory=dict)

    def user(self, username: str):
        from engine.accounts import find_user
        with self.engine.db.read() as session:
            return find_user(session, username)

    def start_disclosure(self, enterprise: str = "ent-a") -> int:
        """Start the emission disclosure as the enterprise user would with the Start button."""
        user = self.user(enterprise)
        org_id = user.organisation_id
        with self.engine.db.read() as session:
            from engine.models import Organisation
            org = session.get(Organisation, org_id)
            data = {"enterprise_id": org.id, "enterprise_name": org.name,
                    "jurisdiction_code": org.division_code, "started_by": enterprise}
        return self.engine.start("web_fixture", actor=user, data=data)

    def open_task(self, username: str, bpmn_id: str | None = None):
        rows = self.engine.inbox(self.user(username)).rows
        if bpmn_id:
            rows = [r for r in rows if r.bpmn_id == bpmn_id]
        return rows[0] if rows else None


DISCLOSURE = {
    "enterprise_name": "乌鲁木齐甲化工有限公司", "legal_representative": "王建国",
    "address": "乌鲁木齐市天山区解放南路1号", "media": "新疆日报", "disclosure_date": "2025-03-10",
    "pollutants": [
        {"name": "化学需氧量", "medium": "water", "discharge_mode": "间接排放", "concentration": 85.5,
         "unit": "mg/L", "annual_total_t": 12.4, "exceeds": False},
        {"name": "二氧化硫", "medium": "air", "discharge_mode": "有组织连续排放", "concentration": 320,
         "unit": "mg/m³", "annual_total_t": 48, "exceeds": True},
    ],
}


def build_site(database_url: str) -> Site:
    """An engine on `database_url` with the fixture processes deployed and the actors created."""
    helpers = root_helpers()
    engine = helpers.make_engine(database_url, PROCESSES, FORMS)
    engine.deploy_paths(sorted(PROCESSES.glob("*.bpmn")), deployed_by="tests")
    site = Site(engine)
    add_org, add_user = helpers.add_organisation, helpers.add_user
    site.orgs["ent-a"] = add_org(engine, kind="enterprise", name="乌鲁木齐甲化工有限公司",
                                 credit_code=uscc("91650102MA7A00001"),
                                 division_code="650102", legal_representative="王建国",
                                 address="乌鲁木齐市天山区解放南路1号", industry_code="C26")
    site.orgs["ent-b"] = add_org(engine, kind="enterprise", name="昌吉乙电镀有限公司",
                                 credit_code=uscc("91652301MA7B00002"), division_code="652301",
                                 industry_code="C33")
    site.orgs["agency-a"] = add_org(engine, kind="agency", name="新疆清源环境咨询有限公司",
                                    credit_code=uscc("91650100MA7C00003"), division_code="650100",
                                    filing_status="filed", filing_number="XJQJ-2025-001")
    site.orgs["agency-b"] = add_org(engine, kind="agency", name="新疆申请中咨询有限公司",
                                    credit_code=uscc("91650100MA7D00004"), division_code="650100",
                                    filing_status="applying")
    actors = [
        ("admin", ["administrator", "process_owner"], "650000", None),
        ("auditor", ["auditor"], "650000", None),
        ("epb-650102", ["local_epb"], "650102", None),
        ("epb-652300", ["local_epb"], "652300", None),
        ("epb-650000", ["regional_epb"], "650000", None),
        ("ent-a", ["enterprise"], None, site.orgs["ent-a"]),
        ("ent-b", ["enterprise"], None, site.orgs["ent-b"]),
        ("agency-a", ["consultancy"], None, site.orgs["agency-a"]),
    ]
    for username, roles, jurisdiction, org in actors:
        site.users[username] = add_user(engine, username, roles, jurisdiction_code=jurisdiction,
                                        organisation_id=org, password=PASSWORD)
    cheapen_passwords(engine)
    return site


def cheapen_passwords(engine) -> None:
    """Tests log in hundreds of times: a fast hash method for the fixture users only."""
    from werkzeug.security import generate_password_hash
    from engine.models import User
    with engine.db.transaction() as session:
        for user in session.query(User):
            user.password_hash = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")


def copy_site(template: Site, template_path: Path, target_path: Path) -> Site:
    """A fresh site from a built template database file (building one takes seconds, copying not)."""
    import shutil
    from engine.facade import Engine
    shutil.copyfile(template_path, target_path)
    engine = Engine(f"sqlite:///{target_path}", processes_dir=PROCESSES, forms_dir=FORMS)
    return Site(engine, dict(template.orgs), dict(template.users))


def add_public_records(site: Site) -> dict[str, int]:
    """One published record of every public kind, plus records that must never be shown."""
    from engine import clock
    from engine.models import Record
    made = {}
    rows = [
        ("mandatory_list", "2025年第一批强制性清洁生产审核企业名单（乌鲁木齐市）", True, False,
         {"year": 2025, "batch": 1, "enterprises": [
             {"name": "乌鲁木齐甲化工有限公司", "credit_code": "91650102MA7A00001X", "ground": "1"}]}),
        ("review_result", "丙纺织有限公司自愿性清洁生产审核评审结果", True, False,
         {"enterprise_name": "丙纺织有限公司", "result": "通过"}),
        ("commendation", "2025年度清洁生产先进企业", True, False, {"enterprise_name": "丙纺织有限公司"}),
        ("agency_named", "某咨询公司审核弄虚作假", True, False, {"agency_name": "某咨询公司", "reason": "伪造物料平衡数据"}),
        ("penalty_decision", "乌环罚〔2025〕1号", True, False, {"enterprise_name": "丁冶炼有限公司", "penalty": "罚款"}),
        ("emission_disclosure", "机密：不应公开的排放记录", True, True, {"enterprise_name": "机密企业"}),
        ("audit_report", "未公开的审核报告", False, True, {"enterprise_name": "甲化工"}),
    ]
    with site.engine.db.transaction() as session:
        for kind, title, public, confidential, data in rows:
            record = Record(kind=kind, title=title, public=public, confidential=confidential, data=data,
                            created_at=clock.now(), created_by="tests")
            session.add(record)
            session.flush()
            made[title] = record.id
    return made


# ---------------------------------------------------------------------------------------------- the demo
_DEMO: dict = {}


def demo_template() -> Path:
    """`cleanaudit init --demo` (engine.seed.init_database with demo=True) built once per test session
    in a SQLite file; the web and browser tests copy it (building takes ~12 s, copying not)."""
    if "path" not in _DEMO:
        import tempfile
        from engine.facade import Engine
        from engine.seed import init_database
        path = Path(tempfile.mkdtemp(prefix="cleanaudit-demo-")) / "demo.sqlite"
        engine = Engine(f"sqlite:///{path}")
        init_database(engine, demo=True)
        cheapen_passwords(engine)
        engine.db.dispose()          # closes connections: the WAL is checkpointed into the file
        _DEMO["path"] = path
    return _DEMO["path"]


def demo_site(target_path: Path) -> Site:
    """A fresh copy of the demo (real processes/ and forms/, demo users with the password `demo`)."""
    import shutil
    from engine.facade import Engine
    shutil.copyfile(demo_template(), target_path)
    return Site(Engine(f"sqlite:///{target_path}"))
