"""Scenario tests of expert_enrolment: the expert pools of Art. 21 and their use in the draw (Art. 17)."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from engine.errors import InvalidFormData
from engine.models import Expert
from tests.conftest import add_user
from tests.processes.conftest import PREFECTURE_CHANGJI, URUMQI, ensure_deployed, uscc


@pytest.fixture
def engine(engine_with):
    """A fresh database copied from a session template with these processes deployed."""
    return engine_with("expert_enrolment")


@pytest.fixture
def enrolment(engine, deploy, actors, pool, scene):
    ensure_deployed(engine, deploy, "expert_enrolment")
    candidate = add_user(engine, "expert-new", ["expert"], jurisdiction_code="650000")
    return candidate


def _apply(scene, user, iid, **overrides):
    data = {"name": "王海燕", "title": "教授级高级工程师", "organisation_name": "新疆清洁生产技术咨询中心",
            "organisation_credit_code": uscc(URUMQI, 11, "12"), "specialities": ["C26", "C28"],
            "pool_level": "region", "experience_years": 18,
            "expertise_summary": "从事化工行业清洁生产审核十余年，主持审核项目30余项。", "recusal_commitment": True}
    data.update(overrides)
    data = {k: v for k, v in data.items() if v is not None}
    return scene.act(user, "apply_for_enrolment", data, iid)


def _decide(scene, user, bpmn_id, iid, decision="approve", reason=None):
    data = {"enrolment_decision": decision, "decided_on": "2025-03-12"}
    if reason:
        data["enrolment_reason"] = reason
    return scene.act(user, bpmn_id, data, iid)


def _entries(engine, username):
    with engine.db.read() as session:
        return list(session.scalars(select(Expert).where(Expert.username == username)))


def test_expert_approved_by_the_regional_drc_joins_the_regional_pool_with_their_employer(engine, enrolment, actors,
                                                                                          scene, clock):
    iid = engine.start("expert_enrolment", actor=enrolment, data={"started_by": enrolment.username})
    assert scene.open_tasks(iid) == ["apply_for_enrolment"]
    _apply(scene, enrolment, iid)
    assert scene.open_tasks(iid) == ["approve_regional_enrolment"]
    _decide(scene, actors.regional_drc, "approve_regional_enrolment", iid)
    assert scene.status(iid) == "completed"
    [entry] = _entries(engine, "expert-new")
    assert (entry.pool, entry.specialities, entry.active) == ("650000", ["C26", "C28"], True)
    # Art. 17: the employer was found by its credit code, so the conflict check knows it.
    assert entry.organisation_id == actors.agency
    from engine.experts import candidates
    with engine.db.read() as session:
        usable = [e.username for e in candidates(session, industry="C26", exclude_organisation_ids=[actors.agency])]
    assert "expert-new" not in usable and "expert-b" in usable


def test_prefecture_pool_enrolment_is_decided_by_that_prefectures_drc(engine, enrolment, actors, pool, scene, clock):
    iid = engine.start("expert_enrolment", actor=enrolment, data={"started_by": enrolment.username})
    _apply(scene, enrolment, iid, pool_level="prefecture", prefecture_code="652301", organisation_credit_code=None,
           organisation_name="昌吉学院")
    assert scene.open_tasks(iid) == ["approve_local_enrolment"]
    assert engine.inbox(actors.regional_drc).total == 0                 # not the regional pool
    _decide(scene, pool.changji_drc, "approve_local_enrolment", iid)
    [entry] = _entries(engine, "expert-new")
    assert entry.pool == PREFECTURE_CHANGJI and entry.organisation_id is None


def test_enrolment_returned_for_more_information_is_applied_for_again(engine, enrolment, actors, scene, clock):
    iid = engine.start("expert_enrolment", actor=enrolment, data={"started_by": enrolment.username})
    row = scene.task(enrolment, "apply_for_enrolment", iid)
    with pytest.raises(InvalidFormData) as refused:                       # specialities are GB/T 4754 divisions
        engine.complete(enrolment, row.id, {"name": "王海燕", "title": "高工", "organisation_name": "某院",
                                            "specialities": ["chemistry"], "pool_level": "prefecture",
                                            "experience_years": 3, "expertise_summary": "化工清洁生产审核经验。",
                                            "recusal_commitment": True})
    assert "specialities/0" in refused.value.errors and "prefecture_code" in refused.value.errors
    _apply(scene, enrolment, iid)
    _decide(scene, actors.regional_drc, "approve_regional_enrolment", iid, "supplement", "请补充近三年主持的审核项目清单。")
    assert scene.open_tasks(iid) == ["apply_for_enrolment"]
    assert engine.instance_data(iid)["enrolment_return_reason"] == "请补充近三年主持的审核项目清单。"
    assert _entries(engine, "expert-new") == []
    _apply(scene, enrolment, iid, expertise_summary="近三年主持化工企业审核项目12项（清单附后）。")
    _decide(scene, actors.regional_drc, "approve_regional_enrolment", iid)
    assert len(_entries(engine, "expert-new")) == 1


def test_rejected_candidate_is_told_why_and_stays_out_of_the_pool(engine, enrolment, actors, scene, clock):
    iid = engine.start("expert_enrolment", actor=enrolment, data={"started_by": enrolment.username})
    _apply(scene, enrolment, iid, experience_years=1)
    _decide(scene, actors.regional_drc, "approve_regional_enrolment", iid, "reject", "从事相关工作年限不足。")
    assert scene.open_tasks(iid) == ["notify_rejection"]
    assert engine.instance_data(iid)["rejection_reason"] == "从事相关工作年限不足。"
    scene.act(enrolment, "notify_rejection", None, iid)
    assert scene.status(iid) == "completed" and _entries(engine, "expert-new") == []


def test_demo_pool_enrols_the_demo_experts_that_have_accounts(engine, actors, clock):
    from engine import experts
    add_user(engine, "expert-1", ["expert"], jurisdiction_code="650000")
    add_user(engine, "expert-4", ["expert"], jurisdiction_code="650000")
    with engine.db.transaction() as session:
        assert experts.enrol_demo_pool(session, {"agency-a": actors.agency}, clock.now) == ["expert-1", "expert-4"]
    with engine.db.read() as session:
        assert experts.draw(session, 5, exclude_organisation_ids=[actors.agency]) == ["expert-1"]
