"""Scenario tests of commendation: Art. 22-25 of the Measures (commendation and incentives)."""
from __future__ import annotations

import pytest

from engine.domain import incentive_flags, priority_sector
from tests.processes.conftest import ensure_deployed


@pytest.fixture
def engine(engine_with):
    """A fresh database copied from a session template with these processes deployed."""
    return engine_with("commendation", "voluntary_audit", "audit_stages", "mandatory_audit")


@pytest.fixture
def commendation(engine, deploy, actors, scene, clock):
    """commendation deployed; the steel enterprise's audit was accepted (a record "audit_accepted", as
    written for an accepted audit; the first test earns it through a real voluntary audit instead)."""
    ensure_deployed(engine, deploy, "commendation")
    return scene


def _accepted(engine, enterprise_id: int) -> None:
    from engine import clock
    from engine.models import Record
    with engine.db.transaction() as session:
        session.add(Record(kind="audit_accepted", title="清洁生产审核验收", enterprise_id=enterprise_id,
                           data={"enterprise_id": enterprise_id, "accepted_on": "2026-01-25"},
                           created_at=clock.now()))


OPTIONS = [
    {"name": "烧结烟气脱硫改造", "category": "pollution_prevention", "investment": 1200, "implemented": True,
     "apply_for_support": True},
    {"name": "循环水系统改造", "category": "water_saving", "investment": 300, "implemented": True,
     "apply_for_support": True},
    {"name": "厂区绿化", "category": "other", "investment": 20, "implemented": True, "apply_for_support": False},
]


def _nominate(scene, user, iid, enterprise_id, **overrides):
    data = {"enterprise_id": enterprise_id, "achievements": "实施清洁生产方案后二氧化硫年削减310吨，吨钢新水消耗下降12%。",
            "energy_saved_tce": 5200, "water_saved_m3": 100000, "economic_benefit": 380,
            "pollutant_reductions": [{"pollutant": "二氧化硫", "reduction_t": 310}], "is_sme": False,
            "options": OPTIONS, "nominated_on": "2026-03-01"}
    data.update(overrides)
    return scene.act(user, "nominate_enterprise", data, iid)


def _decide(scene, actors, iid, drc="commend", etc="commend", epb="commend", reason="材料不足。"):
    for key, decision, user, bpmn_id in (("drc", drc, actors.regional_drc, "decide_commendation_drc"),
                                         ("etc", etc, actors.regional_etc, "concur_commendation_etc"),
                                         ("epb", epb, actors.regional_epb, "concur_commendation_epb")):
        data = {f"{key}_commendation": decision, f"{key}_decided_on": "2026-03-15"}
        if decision != "commend":
            data[f"{key}_commendation_reason"] = reason
        scene.act(user, bpmn_id, data, iid)


def test_enterprise_whose_voluntary_audit_passed_is_commended_and_its_options_listed_for_support(
        engine, commendation, voluntary, actors, clock):
    scene, a, v = commendation, actors, voluntary
    audit = v.start()                                                  # Art. 17: the review passes first
    v.to_review(audit)
    v.organise(audit, count=3)
    v.review_all(audit)
    v.decide(audit, "pass")
    iid = engine.start("commendation", actor=a.tianshan_drc, data={"jurisdiction_code": "650102"})
    _nominate(scene, a.tianshan_drc, iid, a.steel)
    assert scene.open_tasks(iid) == ["concur_commendation_epb", "concur_commendation_etc", "decide_commendation_drc"]
    _decide(scene, a, iid)
    # Art. 22: published in regional media (the public pages).
    [published] = scene.records("commendation")
    assert published.public and published.data["enterprise_name"] == "天山钢铁有限公司"
    # Art. 23-25: metallurgy (C31) is a priority sector; the "other" option qualifies for nothing.
    [candidates] = scene.records("incentive_candidates")
    assert not candidates.public and not candidates.confidential
    assert candidates.data["priority_sector"] == "metallurgy"
    flags = {row["name"]: row["flags"] for row in candidates.data["options"]}
    assert flags["烧结烟气脱硫改造"] == {"investment_priority": True, "interest_subsidy": True,
                                    "pollution_fee_priority": True, "sme_fund": False, "central_special_fund": True}
    assert flags["循环水系统改造"]["investment_priority"] and not flags["循环水系统改造"]["pollution_fee_priority"]
    assert not any(flags["厂区绿化"].values())
    assert candidates.data["qualifying_options"] == ["烧结烟气脱硫改造", "循环水系统改造"]
    assert scene.open_tasks(iid) == ["notify_enterprise_commended"]
    scene.act(a.steel_user, "notify_enterprise_commended", None, iid)
    assert scene.status(iid) == "completed"
    assert engine.instance(iid).enterprise_id == a.steel


def test_nomination_without_an_accepted_audit_or_outside_the_area_comes_back(engine, commendation, actors, clock):
    scene, a = commendation, actors
    _accepted(engine, a.steel)
    iid = engine.start("commendation", actor=a.tianshan_drc, data={"jurisdiction_code": "650102"})
    _nominate(scene, a.tianshan_drc, iid, a.chem)                      # audited? no
    assert scene.open_tasks(iid) == ["nominate_enterprise"]
    assert "第二十二条" in engine.instance_data(iid)["nomination_return_reason"]
    _nominate(scene, a.tianshan_drc, iid, a.coal)                      # a Changji enterprise
    assert "第四条" in engine.instance_data(iid)["nomination_return_reason"]
    _nominate(scene, a.tianshan_drc, iid, a.steel)
    assert scene.open_tasks(iid) == ["concur_commendation_epb", "concur_commendation_etc", "decide_commendation_drc"]


def test_request_for_more_evidence_returns_the_nomination_to_the_local_drc(engine, commendation, actors, clock):
    scene, a = commendation, actors
    _accepted(engine, a.steel)
    iid = engine.start("commendation", actor=a.tianshan_drc, data={"jurisdiction_code": "650102"})
    _nominate(scene, a.tianshan_drc, iid, a.steel)
    _decide(scene, a, iid, etc="return", reason="请补充节能量的监测报告。")
    assert scene.open_tasks(iid) == ["nominate_enterprise"]
    assert engine.instance_data(iid)["nomination_return_reason"] == "自治区经贸委：请补充节能量的监测报告。"
    _nominate(scene, a.tianshan_drc, iid, a.steel, achievements="节能量经第三方监测（报告附后）：年节能5200吨标准煤。")
    _decide(scene, a, iid)
    assert len(scene.records("commendation")) == 1


def test_one_refusal_among_the_three_agencies_means_no_commendation(engine, commendation, actors, clock):
    scene, a = commendation, actors
    _accepted(engine, a.steel)
    iid = engine.start("commendation", actor=a.tianshan_drc, data={"jurisdiction_code": "650102"})
    _nominate(scene, a.tianshan_drc, iid, a.steel)
    _decide(scene, a, iid, epb="reject", etc="return", reason="该企业年内发生环境违法行为。")
    assert scene.open_tasks(iid) == ["notify_not_commended"]
    assert "自治区环保局" in engine.instance_data(iid)["not_commended_reason"]
    scene.act(a.tianshan_drc, "notify_not_commended", None, iid)
    assert scene.status(iid) == "completed" and scene.records("commendation") == []


def test_a_mandatory_audit_whose_report_was_accepted_also_qualifies(engine, commendation, audit, actors, clock):
    """Art. 16, 22: the local EPB's acceptance of a mandatory audit report counts as an accepted audit."""
    scene, a = commendation, actors
    listed = audit.list_enterprise(a.steel)
    audit.complete_audit(a.steel_user, a.tianshan_epb, listed)
    iid = engine.start("commendation", actor=a.tianshan_drc, data={"jurisdiction_code": "650102"})
    _nominate(scene, a.tianshan_drc, iid, a.steel)
    assert scene.open_tasks(iid) == ["concur_commendation_epb", "concur_commendation_etc", "decide_commendation_drc"]
    accepted = engine.instance_data(iid)["accepted_audit"]
    assert accepted["kind"] == "mandatory_audit" and accepted["instance_id"] == listed


def test_priority_sectors_of_article_25_follow_the_gbt_4754_divisions():
    assert [priority_sector(code) for code in ("C2511", "B07", "C31", "C3211", "C26", "C30", "C14", "C22",
                                               "C17", "D44", "B06", None)] == [
        "petrochemical", "petrochemical", "metallurgy", "metallurgy", "chemical", "building_materials",
        "light_industry", "light_industry", "textile", None, None, None]
    [flagged] = incentive_flags("D44", [{"name": "余热发电", "category": "energy_saving", "apply_for_support": True}],
                                is_sme=True)
    assert flagged["flags"]["sme_fund"] and flagged["flags"]["central_special_fund"]   # Art. 25: an SME
    assert flagged["priority_sector"] is None
