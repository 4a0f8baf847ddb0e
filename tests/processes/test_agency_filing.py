"""Scenario tests of agency_filing and agency_revocation: Art. 15, 19 and 29 of the Measures."""
from __future__ import annotations

from datetime import datetime

import pytest

from engine.errors import InvalidFormData, NotAllowed
from engine.models import Organisation
from tests.conftest import SHANGHAI, add_user
from tests.processes.conftest import TIANSHAN, ensure_deployed, uscc


@pytest.fixture
def engine(engine_with):
    """A fresh database copied from a session template with these processes deployed."""
    return engine_with("agency_filing", "agency_revocation")


@pytest.fixture
def filing(engine, deploy, actors, scene):
    ensure_deployed(engine, deploy, "agency_filing", "agency_revocation")
    return scene


def _application(actors, **overrides) -> dict:
    data = {"agency_name": "天山环保咨询有限公司", "credit_code": uscc(TIANSHAN, 12),
            "legal_person_form": "enterprise_legal_person", "independent_legal_person": True,
            "legal_representative": "赵磊", "address": "乌鲁木齐市天山区人民路9号", "division_code": TIANSHAN,
            "technical_staff": [
                {"name": "孙涛", "qualification": "高级工程师（清洁生产审核师）", "certificate_number": "QJ-2019-0031",
                 "industries": ["C31", "C32"]},
                {"name": "阿依古丽", "qualification": "工程师", "certificate_number": "QJ-2021-0107",
                 "industries": ["C26", "C31"]}],
            "service_rules": "项目负责人回避制度、质量三级审核制度、保密制度和收费公示制度，确保服务公平、公正、高效。"}
    data.update(overrides)
    return data


def _review(scene, actors, iid, supplements: dict | None = None) -> None:
    supplements = supplements or {}
    for key, user in (("drc", actors.regional_drc), ("etc", actors.regional_etc), ("epb", actors.regional_epb)):
        data = {f"{key}_filing_decision": "supplement" if key in supplements else "approve",
                f"{key}_reviewed_on": "2025-03-20"}
        if key in supplements:
            data[f"{key}_supplement_reason"] = supplements[key]
            data[f"{key}_unmet_conditions"] = ["technical_staff"]
        scene.act(user, f"review_filing_{key}", data, iid)


def _status(engine, agency_id) -> tuple:
    with engine.db.read() as session:
        org = session.get(Organisation, agency_id)
        return org.filing_status, org.filing_number


def test_agency_meeting_the_three_conditions_is_filed_numbered_and_published(engine, filing, actors, clock):
    scene, a = filing, actors
    iid = engine.start("agency_filing", actor=a.applying_agency_user, data={"agency_id": a.applying_agency})
    assert scene.open_tasks(iid) == ["apply_for_filing"]
    scene.act(a.applying_agency_user, "apply_for_filing", _application(a), iid)
    assert _status(engine, a.applying_agency) == ("applying", None)
    assert scene.open_tasks(iid) == ["review_filing_drc", "review_filing_epb", "review_filing_etc"]
    _review(scene, a, iid)
    # Art. 19: filed by the three regional agencies, numbered for the year, and in the public registry.
    assert scene.status(iid) == "completed"
    assert _status(engine, a.applying_agency) == ("filed", "新清审备〔2025〕第001号")
    [registry] = scene.records("agency_registry")
    assert registry.public and registry.data["filing_number"] == "新清审备〔2025〕第001号"
    assert registry.data["industries"] == ["C26", "C31", "C32"]
    assert "technical_staff" not in registry.data                      # certificates stay confidential
    [application] = scene.records("agency_filing_application")
    assert application.confidential and len(application.data["technical_staff"]) == 2


def test_filing_waits_until_all_three_agencies_approve_the_supplemented_application(engine, filing, actors, clock):
    scene, a = filing, actors
    iid = engine.start("agency_filing", actor=a.applying_agency_user, data={"agency_id": a.applying_agency})
    scene.act(a.applying_agency_user, "apply_for_filing", _application(a), iid)
    _review(scene, a, iid, supplements={"epb": "缺少熟悉污染防治的技术人员。"})
    assert scene.open_tasks(iid) == ["apply_for_filing"]
    assert engine.instance_data(iid)["filing_return_reason"] == "自治区环保局：缺少熟悉污染防治的技术人员。"
    assert _status(engine, a.applying_agency) == ("applying", None)
    staff = _application(a)["technical_staff"] + [
        {"name": "周敏", "qualification": "环境工程师", "certificate_number": "HB-2020-0555", "industries": ["C31"]}]
    scene.act(a.applying_agency_user, "apply_for_filing",
              _application(a, technical_staff=staff, supplement_response="增加一名环境工程技术人员。"), iid)
    _review(scene, a, iid)
    assert scene.status(iid) == "completed"
    assert _status(engine, a.applying_agency)[0] == "filed"
    reviews = scene.records("agency_filing_review")
    assert [r.data["round"] for r in reviews] == [1, 2]
    assert reviews[0].data["reviews"][2]["unmet_conditions"] == ["technical_staff"]


def test_application_in_another_legal_persons_name_comes_back(engine, filing, actors, clock):
    scene, a = filing, actors
    iid = engine.start("agency_filing", actor=a.applying_agency_user, data={"agency_id": a.applying_agency})
    scene.act(a.applying_agency_user, "apply_for_filing", _application(a, credit_code=uscc(TIANSHAN, 99)), iid)
    assert scene.open_tasks(iid) == ["apply_for_filing"]
    assert "第十五条第（一）项" in engine.instance_data(iid)["filing_return_reason"]
    row = scene.task(a.applying_agency_user, "apply_for_filing", iid)
    with pytest.raises(InvalidFormData) as refused:                        # format: uscc
        engine.complete(a.applying_agency_user, row.id, _application(a, credit_code="91650102000000012X"))
    assert "credit_code" in refused.value.errors
    with pytest.raises(InvalidFormData):                                   # at least two technical staff
        engine.complete(a.applying_agency_user, row.id,
                        _application(a, technical_staff=_application(a)["technical_staff"][:1]))
    with pytest.raises(NotAllowed):                                        # another agency's application
        engine.complete(a.agency_user, row.id, _application(a))


def test_filing_numbers_count_up_within_the_year_and_restart_the_next(engine, filing, actors, clock):
    scene, a = filing, actors
    with engine.db.transaction() as session:
        session.get(Organisation, a.agency).filing_number = "新清审备〔2025〕第007号"
    iid = engine.start("agency_filing", actor=a.applying_agency_user, data={"agency_id": a.applying_agency})
    scene.act(a.applying_agency_user, "apply_for_filing", _application(a), iid)
    _review(scene, a, iid)
    assert _status(engine, a.applying_agency)[1] == "新清审备〔2025〕第008号"
    # Next year the agency whose filing was revoked applies again: numbering restarts at 001.
    clock.set(datetime(2026, 1, 5, 9, tzinfo=SHANGHAI))
    revoked_user = add_user(engine, "revoked-agency", ["consultancy"], organisation_id=a.revoked_agency)
    iid = engine.start("agency_filing", actor=revoked_user, data={"agency_id": a.revoked_agency})
    with engine.db.read() as session:
        code = session.get(Organisation, a.revoked_agency).credit_code
    scene.act(revoked_user, "apply_for_filing", _application(a, agency_name="某已撤销备案咨询公司", credit_code=code), iid)
    _review(scene, a, iid)
    assert _status(engine, a.revoked_agency) == ("filed", "新清审备〔2026〕第001号")


def test_filed_agency_starting_again_keeps_its_filing(engine, filing, actors, clock):
    iid = engine.start("agency_filing", actor=actors.agency_user, data={"agency_id": actors.agency})
    assert filing.status(iid) == "completed"
    assert _status(engine, actors.agency) == ("filed", "XJQJ-2024-001")


def test_penalty_decision_revokes_the_filing_publishes_it_and_tells_the_agency(engine, filing, actors, clock):
    scene, a = filing, actors
    iid = engine.send_message("agency_filing_revoked", {
        "agency_id": a.agency, "reason": "故意弄虚作假、谎报审核结果", "decision_record_id": 42,
        "decided_on": "2025-03-01", "case_instance_id": 7})
    assert iid is not None and scene.instances("agency_revocation")[0].id == iid
    assert _status(engine, a.agency) == ("revoked", "XJQJ-2024-001")
    [published] = scene.records("agency_filing_revoked")
    assert published.public and published.data["reason"] == "故意弄虚作假、谎报审核结果"
    assert published.data["decision_record_id"] == 42 and published.data["previous_status"] == "filed"
    assert scene.open_tasks(iid) == ["acknowledge_revocation"]
    scene.act(a.agency_user, "acknowledge_revocation", None, iid)
    assert scene.status(iid) == "completed"
