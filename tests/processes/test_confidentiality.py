"""Art. 20, 30: who may see an enterprise's audit data, and the record of every view (engine/confidential.py).

The data: the confidential records and instance data of a voluntary audit under expert review, the
application of an agency for filing. The people: the enterprise's users, its commissioned agency, the
local and regional authorities, the auditor, the drawn experts — and everybody else.
"""
from __future__ import annotations

import pytest

from engine.confidential import RecordNotFound, may_view_record, view_instance_data, view_record, views
from engine.errors import NotAllowed
from tests.conftest import add_user
from tests.processes.conftest import SAYBAG, ensure_deployed


@pytest.fixture
def engine(engine_with):
    """A fresh database copied from a session template with these processes deployed."""
    return engine_with("voluntary_audit", "audit_stages", "agency_filing", "agency_revocation")


@pytest.fixture
def under_review(voluntary, scene):
    """A voluntary audit of the steel enterprise (agency commissioned) whose report three experts review."""
    iid = voluntary.start()
    voluntary.to_review(iid)
    voluntary.organise(iid, count=3)
    report = voluntary.data(iid)["audit_report_record_id"]
    return iid, report, voluntary.reviewers(iid)


def _events(engine, iid, kind):
    return [(e.actor, e.data.get("record_id")) for e in views(engine, iid) if e.kind == kind]


def test_enterprise_its_agency_and_the_authorities_over_it_see_the_report_and_every_view_is_recorded(
        engine, under_review, actors, pool, clock):
    iid, report, _ = under_review
    a = actors
    allowed = [a.steel_user, a.agency_user, a.tianshan_epb, a.tianshan_drc, a.urumqi_epb, a.regional_drc,
               a.regional_epb, pool.auditor]
    for user in allowed:
        seen = view_record(engine, user, report)
        assert seen["kind"] == "audit_report" and seen["data"]["implementation_plan"]
    assert _events(engine, iid, "confidential_viewed") == [(u.username, report) for u in allowed]
    assert _events(engine, iid, "access_refused") == []
    event = views(engine, iid)[0]
    assert event.data["record_kind"] == "audit_report" and event.data["reason"] == "the enterprise itself"


def test_everybody_else_is_refused_and_the_refusal_is_recorded(engine, under_review, actors, pool, clock):
    iid, report, _ = under_review
    a = actors
    refused = [a.chem_user, pool.other_agency_user, a.saybag_epb, a.admin, pool.changji_drc,
               pool.users["expert-steel"]]
    for user in refused:
        assert not may_view_record(engine, user, report)
        with pytest.raises(NotAllowed):
            view_record(engine, user, report)
    assert _events(engine, iid, "access_refused") == [(u.username, report) for u in refused]
    assert _events(engine, iid, "confidential_viewed") == []
    assert engine.verify_history() == []                            # the chain still verifies
    with pytest.raises(RecordNotFound):
        view_record(engine, a.steel_user, 10**6)


def test_only_the_experts_drawn_for_the_review_see_the_audit_data(engine, under_review, voluntary, pool, scene,
                                                                  clock):
    iid, report, reviewers = under_review
    outsiders = sorted({"expert-a", "expert-b", "expert-c", "expert-d"} - set(reviewers))
    for name in reviewers:
        assert view_record(engine, pool.users[name], report)["id"] == report
    with pytest.raises(NotAllowed):
        view_record(engine, pool.users[outsiders[0]], report)
    # The stage records of the called audit_stages belong to the same instance: same rules.
    balances = voluntary.data(iid)["balances_record_id"]
    assert view_record(engine, pool.users[reviewers[0]], balances)["kind"] == "audit_balances"
    # What the Measures publish needs no permission and leaves no trace (Art. 17).
    voluntary.review_all(iid)
    voluntary.decide(iid, "pass")
    before = len(views(engine, iid))
    published = voluntary.data(iid)["review_result_record_id"]
    assert view_record(engine, pool.users[outsiders[0]], published)["data"]["result"] == "pass"
    assert len(views(engine, iid)) == before


def test_instance_data_follows_the_same_rules(engine, under_review, actors, pool, clock):
    iid, _, reviewers = under_review
    data = view_instance_data(engine, actors.steel_user, iid)
    assert data["audit_report_record_id"] and sorted(data["drawn_experts"]) == reviewers
    view_instance_data(engine, pool.users[reviewers[0]], iid)
    with pytest.raises(NotAllowed):
        view_instance_data(engine, actors.cement_user, iid)
    kinds = [(e.kind, e.actor, e.data["what"]) for e in views(engine, iid)]
    assert kinds == [("confidential_viewed", "steel", f"instance {iid} data"),
                     ("confidential_viewed", reviewers[0], f"instance {iid} data"),
                     ("access_refused", "cement", f"instance {iid} data")]


def test_a_deactivated_user_sees_nothing(engine, under_review, actors, clock):
    from engine.models import User
    iid, report, _ = under_review
    with engine.db.transaction() as session:
        session.get(User, actors.steel_user.id).active = False
        user = session.get(User, actors.steel_user.id)
    with pytest.raises(NotAllowed):
        view_record(engine, user, report)
    assert _events(engine, iid, "access_refused") == [("steel", report)]


def test_agency_sees_its_own_filing_application_but_not_another_agencys(engine, deploy, actors, scene, clock):
    from tests.processes.conftest import uscc
    ensure_deployed(engine, deploy, "agency_filing")
    a = actors
    iid = engine.start("agency_filing", actor=a.applying_agency_user, data={"agency_id": a.applying_agency})
    scene.act(a.applying_agency_user, "apply_for_filing", {
        "agency_name": "天山环保咨询有限公司", "credit_code": uscc("650102", 12),
        "legal_person_form": "enterprise_legal_person", "independent_legal_person": True,
        "legal_representative": "赵磊", "address": "乌鲁木齐市天山区人民路9号", "division_code": "650102",
        "technical_staff": [{"name": "孙涛", "qualification": "高级工程师", "certificate_number": "QJ-2019-0031",
                             "industries": ["C31"]},
                            {"name": "阿依古丽", "qualification": "工程师", "certificate_number": "QJ-2021-0107",
                             "industries": ["C26"]}],
        "service_rules": "项目负责人回避制度、质量三级审核制度、保密制度和收费公示制度。"}, iid)
    [application] = scene.records("agency_filing_application")
    assert view_record(engine, a.applying_agency_user, application.id)["data"]["technical_staff"]
    assert view_record(engine, a.regional_etc, application.id)
    for outsider in (a.agency_user, add_user(engine, "saybag-drc", ["local_drc"], jurisdiction_code=SAYBAG)):
        with pytest.raises(NotAllowed):
            view_record(engine, outsider, application.id)
    assert [e.kind for e in views(engine, iid)] == ["confidential_viewed", "confidential_viewed",
                                                    "access_refused", "access_refused"]
