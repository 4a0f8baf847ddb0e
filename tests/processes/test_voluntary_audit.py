"""Scenario tests of voluntary_audit: Art. 6, 12, 13, 17, 18, 19, 20 and 21 of the Measures.

Each test drives the process through the engine facade as the actors would (fixtures `voluntary`,
`pool`, `actors`, `scene` in tests/processes/conftest.py, issue 5 block); the clock is the fake one.
"""
from __future__ import annotations

import pytest
from sqlalchemy import select

from engine.errors import NotAllowed
from tests.processes.conftest import review_task_id


@pytest.fixture
def engine(engine_with):
    """A fresh database copied from a session template with these processes deployed."""
    return engine_with("voluntary_audit", "audit_stages", "agency_revocation")


def _grants(engine, iid: int) -> set[str]:
    from engine.models import AccessGrant
    with engine.db.read() as session:
        return set(session.scalars(select(AccessGrant.username).where(AccessGrant.instance_id == iid)))


def _review_row(engine, iid: int, username: str):
    from engine.models import HumanTask
    with engine.db.read() as session:
        return session.scalars(select(HumanTask).where(
            HumanTask.instance_id == iid, HumanTask.status == "open", HumanTask.scope == f"u:{username}",
            HumanTask.bpmn_id.in_(review_task_id("review_by_expert")))).first()


def test_voluntary_audit_passed_by_the_experts_is_published_copied_and_followed_up(voluntary, actors, scene, clock):
    v, a = voluntary, actors
    iid = v.start()
    assert scene.open_tasks(iid) == ["submit_application"]
    v.submit_plan(iid)
    # Art. 12: the local DRC, ETC and EPB of the enterprise's district give their opinions in parallel.
    assert scene.open_tasks(iid) == ["local_drc_opinion", "local_epb_opinion", "local_etc_opinion"]
    v.local_opinions(iid)
    assert scene.open_tasks(iid) == ["regional_drc_approval", "regional_epb_approval", "regional_etc_approval"]
    v.regional_decision(iid)
    # Art. 13: the six stages run as audit_stages, the filed agency co-signs the report.
    v.run_stages(iid, a.agency_user)
    v.submit_report(iid)
    assert scene.open_tasks(iid) == ["organise_expert_review"]

    v.organise(iid, count=3)
    reviewers = v.reviewers(iid)
    assert len(reviewers) == 3
    assert _grants(v.engine, iid) == set(reviewers)          # Art. 20: drawn experts may see the data
    for name in reviewers:
        v.review(iid, name, "pass", score=88)
    assert scene.open_tasks(iid) == ["decide_review"]
    data = v.data(iid)
    assert data["average_score"] == 88 and data["recommendations"] == {"pass": 3, "revise": 0, "fail": 0}

    v.decide(iid, "pass")
    # Art. 17: the result is public, without the confidential audit data; copies go to the region.
    [published] = scene.records("review_result")
    assert published.public and not published.confidential
    assert published.data["result"] == "pass" and published.data["enterprise_name"] == "天山钢铁有限公司"
    assert published.data["experts"] == 3
    assert not {"reviews", "scores", "panel", "comments"} & set(published.data)
    assert scene.open_tasks(iid) == ["copy_regional_drc", "copy_regional_epb", "copy_regional_etc",
                                     "report_implementation"]
    v.acknowledge_copies(iid)
    # Art. 18: the enterprise reports on its options, the local DRC supervises.
    v.report_implementation(iid)
    v.supervise(iid, "satisfactory")
    assert scene.status(iid) == "completed"
    assert scene.records("expert_review_sheets")[0].confidential
    kinds = scene.history_kinds(iid)
    assert kinds.count("task_completed") >= 25 and kinds[-1] == "completed"


def test_plan_naming_an_unfiled_or_revoked_agency_comes_back_to_the_enterprise(voluntary, actors, scene, clock):
    v, a = voluntary, actors
    iid = v.start()
    v.submit_plan(iid, agency_id=a.applying_agency)
    assert scene.open_tasks(iid) == ["submit_application"]
    assert "第十九条" in v.data(iid)["application_return_reason"]
    v.submit_plan(iid, agency_id=a.revoked_agency)
    assert scene.open_tasks(iid) == ["submit_application"]
    assert f"编号 {a.revoked_agency}" in v.data(iid)["application_return_reason"]
    # Art. 14: a self-audit needs no agency.
    v.submit_plan(iid, audit_mode="self", agency_id=None, self_audit_basis="企业技术中心有两名清洁生产审核师。")
    assert scene.open_tasks(iid) == ["local_drc_opinion", "local_epb_opinion", "local_etc_opinion"]
    assert v.data(iid)["agency_id"] is None


def test_schedule_ending_before_it_starts_is_returned(voluntary, scene, clock):
    v = voluntary
    iid = v.start()
    v.submit_plan(iid, planned_start="2025-06-01", planned_completion="2025-05-01")
    assert scene.open_tasks(iid) == ["submit_application"]
    assert "早于" in v.data(iid)["application_return_reason"]


def test_plan_returned_by_one_regional_agency_goes_round_again(voluntary, actors, scene, clock):
    v = voluntary
    iid = v.start()
    v.submit_plan(iid)
    v.local_opinions(iid)
    v.regional_decision(iid, returns={"etc": "审核范围应包括炼铁工序。"})
    assert scene.open_tasks(iid) == ["submit_application"]
    assert v.data(iid)["application_return_reason"] == "自治区经贸委：审核范围应包括炼铁工序。"
    v.submit_plan(iid, audit_scope="烧结、炼铁和轧钢车间")
    v.local_opinions(iid)
    v.regional_decision(iid)
    assert scene.open_tasks(iid) == ["prepare_audit"]
    assert v.data(iid)["application_return_reason"] is None


def test_plan_may_go_to_the_prefecture_authorities(voluntary, actors, pool, scene, clock):
    """Art. 12 names the prefecture (地、州、市) and county (县、市) authorities: the enterprise chooses."""
    v, a = voluntary, actors
    iid = v.start()
    v.submit_plan(iid, submit_level="prefecture")
    assert v.data(iid)["local_code"] == "650100"
    row = scene.task(pool.urumqi_drc, "local_drc_opinion", iid)
    with pytest.raises(NotAllowed):
        v.engine.complete(a.tianshan_drc, row.id, {"drc_opinion": "support", "drc_comments": "同意",
                                                  "drc_opinion_date": "2025-03-10"})
    v.local_opinions(iid, drc=pool.urumqi_drc, etc=pool.urumqi_etc, epb=a.urumqi_epb)
    assert scene.open_tasks(iid) == ["regional_drc_approval", "regional_epb_approval", "regional_etc_approval"]


def test_agency_revoked_after_the_plan_must_be_replaced_before_the_audit_starts(voluntary, actors, pool, scene,
                                                                                 clock):
    v, a = voluntary, actors
    iid = v.start()
    v.submit_plan(iid)
    v.local_opinions(iid)
    # Art. 29: a penalty decision revokes the agency's filing while the plan is being decided.
    v.engine.send_message("agency_filing_revoked", {"agency_id": a.agency, "reason": "谎报审核结果",
                                                    "decision_record_id": None, "decided_on": "2025-03-15"})
    v.regional_decision(iid)
    assert scene.open_tasks(iid) == ["choose_other_agency"]
    assert "已被撤销" in v.data(iid)["agency_change_reason"]
    scene.act(a.steel_user, "choose_other_agency", {"audit_mode": "agency", "agency_id": a.revoked_agency}, iid)
    assert scene.open_tasks(iid) == ["choose_other_agency"]          # still not a filed agency
    scene.act(a.steel_user, "choose_other_agency", {"audit_mode": "agency", "agency_id": pool.other_agency}, iid)
    assert scene.open_tasks(iid) == ["prepare_audit"]
    v.run_stages(iid, pool.other_agency_user)                          # the new agency co-signs
    assert scene.open_tasks(iid) == ["submit_report_for_review"]


def test_draw_never_picks_experts_of_the_enterprise_or_its_agency(voluntary, actors, pool, scene, clock):
    """Art. 17: of the six metallurgy (C31) experts of the regional pool, three work for the steel
    enterprise or its agency (one known only by the agency's name): exactly the other three are drawn."""
    v = voluntary
    iid = v.start()
    v.to_review(iid)
    v.organise(iid, count=3, speciality="C31")
    assert v.reviewers(iid) == ["expert-a", "expert-b", "expert-c"]
    assert sorted(v.data(iid)["drawn_experts"]) == ["expert-a", "expert-b", "expert-c"]
    [draw] = scene.records("expert_draw")
    assert draw.confidential and set(draw.data["excluded_organisations"]) == {actors.steel, actors.agency}
    # An expert with a conflict has no task and cannot act on another's.
    assert v.engine.inbox(pool.users["expert-steel"]).total == 0
    row = _review_row(v.engine, iid, "expert-a")
    with pytest.raises(NotAllowed):
        v.engine.complete(pool.users["expert-agency-name"], row.id, {"conflict_declaration": "none"})


def test_too_few_experts_without_conflict_sends_the_draw_back_to_the_regional_drc(voluntary, scene, clock):
    v = voluntary
    iid = v.start()
    v.to_review(iid)
    v.organise(iid, count=4, speciality="C31")                       # only three C31 experts without conflict
    assert scene.open_tasks(iid) == ["organise_expert_review"]
    data = v.data(iid)
    assert "只有 3 名" in data["draw_problem"] and data["drawn_experts"] == []
    v.organise(iid, count=3, speciality="C31", excluded=["expert-c"])   # the organiser excludes one more
    assert "只有 2 名" in v.data(iid)["draw_problem"]
    v.organise(iid, count=3, pool_level="prefecture")                # Urumqi keeps no pool of its own
    assert scene.open_tasks(iid) == ["organise_expert_review"]
    assert "650100" in v.data(iid)["draw_problem"]
    v.organise(iid, count=4)                                         # any speciality: a, b, c, d
    assert v.reviewers(iid) == ["expert-a", "expert-b", "expert-c", "expert-d"]
    assert v.data(iid)["draw_problem"] is None


def test_expert_who_declares_a_conflict_is_replaced_by_a_new_draw(voluntary, pool, scene, clock):
    """Art. 17: four regional experts have no conflict; three are drawn, one recuses: the fourth replaces them."""
    v = voluntary
    iid = v.start()
    v.to_review(iid)
    v.organise(iid, count=3)
    first = v.reviewers(iid)
    recused, others = first[0], first[1:]
    v.review(iid, recused, conflict="三年内曾在该企业兼职")
    for name in others:
        v.review(iid, name, "pass")
    [replacement] = v.reviewers(iid)
    assert {replacement} == {"expert-a", "expert-b", "expert-c", "expert-d"} - set(first)
    v.review(iid, replacement, "revise", score=70)
    assert scene.open_tasks(iid) == ["decide_review"]
    data = v.data(iid)
    assert data["recusals"] == [{"expert": recused, "reason": "三年内曾在该企业兼职"}]
    assert sorted(data["review_panel"]) == sorted(others + [replacement])
    assert data["recommendations"] == {"pass": 2, "revise": 1, "fail": 0}
    assert set(data["drawn_experts"]) == set(first) | {replacement}  # the recused expert saw the data
    assert len(scene.records("expert_draw")) == 2


def test_report_to_revise_goes_back_to_the_enterprise_and_the_same_panel_reviews_it_again(voluntary, actors,
                                                                                          scene, clock):
    v, a = voluntary, actors
    iid = v.start()
    v.to_review(iid)
    v.organise(iid, count=3)
    panel = v.review_all(iid, "revise")
    first_report = v.data(iid)["audit_report_record_id"]
    v.decide(iid, "revise", reason="方案的经济效益测算缺少依据。")
    assert scene.open_tasks(iid) == ["revise_report"]
    assert scene.records("review_result") == []                     # nothing published yet
    scene.act(a.steel_user, "revise_report", {
        "report_title": "天山钢铁有限公司清洁生产审核报告（修订稿）", "report_date": "2026-02-10",
        "revision_summary": "补充了脱硫改造的投资估算和效益测算依据。", "enterprise_basics": "年产钢200万吨……",
        "audit_process_and_results": "审核重点为烧结工序……", "options_summary_and_benefits": "共提出方案3项……",
        "implementation_plan": [{"option_name": "烧结烟气脱硫改造", "start_date": "2026-03-01",
                                 "end_date": "2026-12-31", "department": "设备处", "investment": 1200}]}, iid)
    assert v.reviewers(iid) == panel
    data = v.data(iid)
    assert data["report_version"] == 2 and data["audit_report_record_id"] != first_report
    revised = [r for r in scene.records("audit_report") if r.id == data["audit_report_record_id"]][0]
    assert revised.confidential and revised.data["previous_record_id"] == first_report
    v.review_all(iid, "pass")
    assert v.data(iid)["recommendations"] == {"pass": 3, "revise": 0, "fail": 0}
    v.decide(iid, "pass")
    assert [r.data["result"] for r in scene.records("review_result")] == ["pass"]


def test_failed_report_is_published_and_copied_without_follow_up(voluntary, scene, clock):
    v = voluntary
    iid = v.start()
    v.to_review(iid)
    v.organise(iid, count=3)
    v.review_all(iid, "fail")
    v.decide(iid, "fail", reason="物料平衡严重不闭合，审核结论不可信。")
    [published] = scene.records("review_result")
    assert published.data["result"] == "fail"
    assert scene.open_tasks(iid) == ["copy_regional_drc", "copy_regional_epb", "copy_regional_etc"]
    v.acknowledge_copies(iid)
    assert scene.status(iid) == "completed"


def test_enterprise_behind_its_implementation_plan_reports_again(voluntary, scene, clock):
    v = voluntary
    iid = v.start()
    v.to_review(iid)
    v.organise(iid, count=3)
    v.review_all(iid)
    v.decide(iid, "pass")
    v.acknowledge_copies(iid)
    v.report_implementation(iid, status="in_progress")
    v.supervise(iid, "continue", reason="脱硫改造应于年底前完工。")
    assert scene.open_tasks(iid) == ["report_implementation"]
    v.report_implementation(iid, status="completed")
    v.supervise(iid, "satisfactory")
    assert scene.status(iid) == "completed"
    reports = scene.records("implementation_progress")
    assert [r.data["progress"][0]["status"] for r in reports] == ["in_progress", "completed"]
    assert all(r.confidential for r in reports)
    [to_do] = scene.records("implementation_supervision")
    assert to_do.data["to_do"] == "脱硫改造应于年底前完工。"
