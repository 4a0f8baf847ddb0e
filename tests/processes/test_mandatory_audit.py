"""Art. 10, 11, 14, 16, 18, 28: the mandatory audit of a listed enterprise, from the publication of the
list to the next mandatory audit.

The list of the fixtures' enterprise is published on 2025-03-03 (the `clock` fixture's day), so:
- emissions must be published by 2025-04-03 (Art. 10, one month);
- the audit commissioned by 2025-05-06 (Art. 11, two months: 2025-05-03 falls in the May Day holiday);
- the report submitted by 2026-03-03 (Art. 11, 16, one year).
"""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from engine.errors import InvalidFormData, NotAllowed
from tests.processes.conftest import PROCESSES, SAYBAG, TIANSHAN

pytestmark = pytest.mark.usefixtures("clock")

DISCLOSURE_DUE = datetime.fromisoformat("2025-04-03T23:59:59+08:00")
COMMISSION_DUE = datetime.fromisoformat("2025-05-06T23:59:59+08:00")
REPORT_DUE = datetime.fromisoformat("2026-03-03T23:59:59+08:00")


@pytest.fixture
def engine(engine_with):
    """mandatory_audit and audit_stages deployed; penalty_case is not (its message is kept undelivered)."""
    return engine_with("mandatory_audit", "audit_stages")


@pytest.fixture
def listed(audit, actors):
    """The steel works listed on ground 1 (Art. 8(1)), published 2025-03-03."""
    return audit.list_enterprise(actors.steel)


def after(deadline: datetime, clock) -> datetime:
    """Move the test clock one second past a deadline (the end of its day, Civil Code Art. 203)."""
    return clock.set(deadline + timedelta(seconds=1))


def disclose_and_verify(scene, audit, actors, instance_id):
    scene.act(actors.steel_user, "publish_emissions", audit.disclosure(), instance_id)
    scene.act(actors.tianshan_epb, "verify_disclosure", {"verification": "accept", "checked_on": "2025-03-25"},
              instance_id)


# ---------------------------------------------------------------------------------------------- start
def test_art10_11_listing_starts_the_audit_with_statutory_deadlines(listed, scene, actors, engine):
    assert scene.status(listed) == "running"
    assert scene.open_tasks(listed) == ["commission_agency", "publish_emissions"]
    publish = scene.task(actors.steel_user, "publish_emissions", listed)
    commission = scene.task(actors.steel_user, "commission_agency", listed)
    assert (publish.article, publish.due_at) == ("Art. 10", DISCLOSURE_DUE)
    assert (commission.article, commission.due_at) == ("Art. 11, 14", COMMISSION_DUE)
    assert publish.enterprise_name == "天山钢铁有限公司"
    data = engine.instance_data(listed)
    assert data["report_due"] == "2026-03-03T23:59:59+08:00"
    assert "listing" not in data   # the message payload is unpacked, not kept twice
    row = engine.instance(listed)
    assert (row.enterprise_id, row.jurisdiction_code) == (actors.steel, TIANSHAN)
    assert scene.history_kinds(listed)[:2] == ["started", "message_received"]


# ---------------------------------------------------------------------------------------------- Art. 10
def test_art10_enterprise_discloses_emissions_and_local_epb_accepts(listed, scene, audit, actors, engine):
    scene.act(actors.steel_user, "publish_emissions", audit.disclosure(), listed)

    [published] = scene.records("emission_disclosure")
    assert published.public and not published.confidential
    assert published.enterprise_id == actors.steel
    assert [p["name"] for p in published.data["pollutants"]] == ["二氧化硫", "化学需氧量"]
    verify = scene.task(actors.tianshan_epb, "verify_disclosure", listed)
    view = engine.task_view(actors.tianshan_epb, verify.id)
    assert view.data["disclosure_record_id"] == published.id
    assert view.data["disclosure_summary"] == {"pollutants": 2, "exceeding": ["二氧化硫"], "over_quota": ["二氧化硫"]}
    assert "pollutants" not in view.data   # bulky rows stay out of task data

    scene.act(actors.tianshan_epb, "verify_disclosure", {"verification": "accept", "checked_on": "2025-03-25"}, listed)
    assert scene.open_tasks(listed) == ["commission_agency"]


def test_art10_local_epb_returns_disclosure_with_reason_and_enterprise_resubmits(listed, scene, audit, actors,
                                                                                  engine):
    scene.act(actors.steel_user, "publish_emissions", audit.disclosure(), listed)
    verify = scene.task(actors.tianshan_epb, "verify_disclosure", listed)
    with pytest.raises(InvalidFormData) as refused:   # a return needs its reason
        engine.complete(actors.tianshan_epb, verify.id, {"verification": "return", "checked_on": "2025-03-25"})
    assert "verification_reason" in refused.value.errors

    reason = "未公布颗粒物排放浓度，二氧化硫总量与在线监测数据不符"
    scene.act(actors.tianshan_epb, "verify_disclosure",
              {"verification": "return", "verification_reason": reason, "checked_on": "2025-03-25"}, listed)
    again = scene.task(actors.steel_user, "publish_emissions", listed)
    data = engine.task_view(actors.steel_user, again.id).data
    assert data["disclosure_return_reason"] == reason
    assert data["verification"] is None   # the next verification starts from an empty decision

    scene.act(actors.steel_user, "publish_emissions", audit.disclosure(), listed)
    scene.act(actors.tianshan_epb, "verify_disclosure", {"verification": "accept", "checked_on": "2025-03-28"}, listed)
    first, second = scene.records("emission_disclosure")   # both kept on record ...
    assert not first.public and second.public   # the returned one withdrawn, the corrected one public
    assert scene.open_tasks(listed) == ["commission_agency"]


def test_art10_disclosure_form_checks_credit_code_division_and_amounts(listed, scene, audit, actors, engine):
    data = audit.disclosure()
    data["uscc"] = data["uscc"][:17]
    data["division_code"] = "659999"
    data["pollutants"][0]["annual_total_t"] = -1
    row = scene.task(actors.steel_user, "publish_emissions", listed)
    with pytest.raises(InvalidFormData) as refused:
        engine.complete(actors.steel_user, row.id, data)
    assert set(refused.value.errors) >= {"uscc", "division_code", "pollutants/0/annual_total_t"}
    assert scene.records("emission_disclosure") == []


# ---------------------------------------------------------------------------------------------- Art. 28
def test_art28_missing_the_one_month_disclosure_opens_a_penalty_case(listed, scene, engine, clock, actors):
    clock.set(datetime.fromisoformat("2025-04-03T23:00:00+08:00"))
    engine.tick(clock.now)
    assert scene.undelivered("penalty_case_opened") == []   # not yet due

    engine.tick(after(DISCLOSURE_DUE, clock))
    # No penalty_case process is deployed in this test: the message is kept, never dropped.
    [message] = scene.undelivered("penalty_case_opened")
    assert message.source_instance_id == listed
    assert message.payload == {"enterprise_id": actors.steel, "enterprise_name": "天山钢铁有限公司",
                               "jurisdiction_code": TIANSHAN, "conduct": "disclosure_missed",
                               "conduct_date": "2025-04-04", "deadline": "2025-04-03T23:59:59+08:00",
                               "authority": "local_epb"}
    kinds = scene.history_kinds(listed)
    assert "timer_fired" in kinds and "message_undelivered" in kinds
    assert "publish_emissions" in scene.open_tasks(listed)   # the duty to publish stays open

    engine.tick(clock.advance(days=1))
    assert len(scene.undelivered("penalty_case_opened")) == 1   # opened once


@pytest.mark.skipif(not (PROCESSES / "penalty_case.bpmn").exists(), reason="penalty_case not written yet")
def test_art28_missed_disclosure_starts_a_local_epb_penalty_case(deploy, audit, actors, scene, engine, clock):
    deploy("penalty_case")
    instance_id = audit.list_enterprise(actors.steel)
    engine.tick(after(DISCLOSURE_DUE, clock))
    [case] = scene.instances("penalty_case")
    assert (case.enterprise_id, case.status) == (actors.steel, "running")
    assert scene.undelivered("penalty_case_opened") == []
    assert "publish_emissions" in scene.open_tasks(instance_id)


def test_art10_disclosure_waiting_for_verification_at_the_deadline_is_not_penalised(listed, scene, audit, actors,
                                                                                     engine, clock):
    scene.act(actors.steel_user, "publish_emissions", audit.disclosure(), listed)
    engine.tick(after(DISCLOSURE_DUE, clock))
    assert scene.undelivered("penalty_case_opened") == []
    assert "verify_disclosure" in scene.open_tasks(listed)


def test_art28_returned_disclosure_not_published_again_by_the_deadline_is_penalised(listed, scene, audit, actors,
                                                                                     engine, clock):
    scene.act(actors.steel_user, "publish_emissions", audit.disclosure(), listed)
    scene.act(actors.tianshan_epb, "verify_disclosure",
              {"verification": "return", "verification_reason": "缺少排放方式", "checked_on": "2025-03-25"}, listed)
    engine.tick(after(DISCLOSURE_DUE, clock))
    [message] = scene.undelivered("penalty_case_opened")
    assert message.payload["conduct"] == "disclosure_missed"


# ---------------------------------------------------------------------------------------------- Art. 11, 14
def test_art11_missing_two_month_commissioning_reminds_enterprise_and_notifies_local_epb(listed, scene, audit,
                                                                                         actors, engine, clock):
    disclose_and_verify(scene, audit, actors, listed)
    engine.tick(after(COMMISSION_DUE, clock))

    reminder = scene.task(actors.steel_user, "commission_reminder", listed)
    assert (reminder.article, reminder.due_at, reminder.form) == ("Art. 11", COMMISSION_DUE, None)
    assert scene.task(actors.tianshan_epb, "commission_overdue_notice", listed).form is None
    assert scene.undelivered("penalty_case_opened") == []   # no penalty of its own
    with pytest.raises(InvalidFormData):   # an acknowledgement must be confirmed
        engine.complete(actors.steel_user, reminder.id, {})
    scene.act(actors.steel_user, "commission_reminder", instance_id=listed)
    scene.act(actors.tianshan_epb, "commission_overdue_notice", instance_id=listed)

    assert scene.open_tasks(listed) == ["commission_agency"]   # still to be done, late
    scene.act(actors.steel_user, "commission_agency", audit.commission(actors.agency), listed)
    assert scene.open_tasks(listed) == ["accept_commission"]


def test_art14_unfiled_agency_cannot_be_commissioned(listed, scene, audit, actors, engine):
    for agency in (actors.applying_agency, actors.revoked_agency):
        scene.act(actors.steel_user, "commission_agency", audit.commission(agency), listed)
        again = scene.task(actors.steel_user, "commission_agency", listed)
        reason = engine.task_view(actors.steel_user, again.id).data["commission_return_reason"]
        assert f"编号 {agency}" in reason and "第十九条" in reason
    assert engine.inbox(actors.applying_agency_user).total == 0
    assert scene.records("audit_commission") == []

    scene.act(actors.steel_user, "commission_agency", audit.commission(actors.agency), listed)
    row = scene.task(actors.agency_user, "accept_commission", listed)
    assert (row.lane, row.scope, row.article) == ("consultancy", f"o:{actors.agency}", "Art. 15, 19")


def test_art15_agency_that_declines_sends_the_enterprise_back(listed, scene, audit, actors, engine):
    scene.act(actors.steel_user, "commission_agency", audit.commission(actors.agency), listed)
    scene.act(actors.agency_user, "accept_commission",
              {"commission_answer": "decline", "decline_reason": "本年度审核任务已满"}, listed)
    again = scene.task(actors.steel_user, "commission_agency", listed)
    assert engine.task_view(actors.steel_user, again.id).data["commission_return_reason"] == "受托机构谢绝委托：本年度审核任务已满"

    scene.act(actors.steel_user, "commission_agency", audit.commission(actors.agency), listed)
    scene.act(actors.agency_user, "accept_commission", audit.accept_commission(), listed)
    [commission] = scene.records("audit_commission")
    assert commission.confidential and commission.data["agency_id"] == actors.agency
    assert scene.open_tasks(listed) == ["prepare_audit", "publish_emissions"]


def test_art14_enterprise_may_declare_a_self_audit(listed, scene, audit, actors, engine):
    scene.act(actors.steel_user, "commission_agency", audit.self_audit(), listed)
    assert scene.open_tasks(listed) == ["prepare_audit", "publish_emissions"]
    [capacity] = scene.records("self_audit_capacity")
    assert [member["name"] for member in capacity.data["team"]] == ["张伟", "刘芳"]
    audit.run_stages(actors.steel_user, listed)   # no agency signs
    submit = scene.task(actors.steel_user, "submit_report", listed)
    data = engine.task_view(actors.steel_user, submit.id).data
    assert data["agency_id"] is None and data["report_cosigned_by"] is None
    assert "self_audit_team" not in data


# ---------------------------------------------------------------------------------------------- Art. 16
def test_art16_report_returned_for_revision_then_accepted(listed, scene, audit, actors, engine):
    audit.to_report(actors.steel_user, listed)
    submit = scene.task(actors.steel_user, "submit_report", listed)
    assert (submit.article, submit.due_at) == ("Art. 16", REPORT_DUE)
    data = engine.task_view(actors.steel_user, submit.id).data
    # The summary fields start from the audit's own results (Art. 13 outputs of audit_stages).
    assert (data["options_total"], data["planned_investment"], data["audit_focus"]) == (3, 1500, "烧结工序")
    assert data["grounds"] == ["exceeding"]

    scene.act(actors.steel_user, "submit_report", audit.report_summary(), listed)
    reason = "方案汇总缺少效益预测分析"
    scene.act(actors.tianshan_epb, "review_report",
              {"review_decision": "return", "review_reason": reason, "reviewed_on": "2025-12-01"}, listed)
    again = scene.task(actors.steel_user, "submit_report", listed)
    assert engine.task_view(actors.steel_user, again.id).data["report_return_reason"] == reason

    scene.act(actors.steel_user, "submit_report", audit.report_summary(), listed)
    scene.act(actors.tianshan_epb, "review_report", audit.accept_report(), listed)
    assert len(scene.records("audit_report_submission")) == 2
    assert "report_implementation" in scene.open_tasks(listed)
    assert engine.instance_data(listed)["accepted_on"] == "2025-03-03"


def test_art16_central_enterprise_copies_the_national_agencies(audit, actors, scene, engine):
    chem = audit.list_enterprise(actors.chem)
    audit.to_report(actors.chem_user, chem, agency=False)
    submit = scene.task(actors.chem_user, "submit_report", chem)
    recipients = engine.task_view(actors.chem_user, submit.id).data["report_recipients"]
    assert recipients[-2:] == ["国家环境保护总局（抄报）", "国家发展和改革委员会（抄报）"]
    assert len(recipients) == 5


def test_art11_one_year_deadline_missed_opens_penalty_case(listed, scene, audit, actors, engine, clock):
    disclose_and_verify(scene, audit, actors, listed)
    scene.act(actors.steel_user, "commission_agency", audit.self_audit(), listed)
    engine.tick(clock.set(datetime.fromisoformat("2026-03-03T12:00:00+08:00")))
    assert scene.undelivered("penalty_case_opened") == []

    engine.tick(after(REPORT_DUE, clock))
    [message] = scene.undelivered("penalty_case_opened")
    assert message.payload == {"enterprise_id": actors.steel, "enterprise_name": "天山钢铁有限公司",
                               "jurisdiction_code": TIANSHAN, "conduct": "audit_not_done",
                               "conduct_date": "2026-03-04", "deadline": "2026-03-03T23:59:59+08:00",
                               "authority": "regional_epb"}
    # Non-interrupting: the audit can still be finished, late.
    assert scene.open_tasks(listed) == ["prepare_audit"]
    audit.run_stages(actors.steel_user, listed)
    scene.act(actors.steel_user, "submit_report", audit.report_summary(), listed)
    scene.act(actors.tianshan_epb, "review_report", audit.accept_report(), listed)
    assert "report_implementation" in scene.open_tasks(listed)
    assert len(scene.undelivered("penalty_case_opened")) == 1


def test_art16_report_waiting_for_review_at_the_deadline_is_not_penalised(listed, scene, audit, actors, engine,
                                                                          clock):
    disclose_and_verify(scene, audit, actors, listed)
    audit.to_report(actors.steel_user, listed, agency=False)
    scene.act(actors.steel_user, "submit_report", audit.report_summary(), listed)
    engine.tick(after(REPORT_DUE, clock))
    assert scene.undelivered("penalty_case_opened") == []
    assert scene.open_tasks(listed) == ["review_report"]


# ---------------------------------------------------------------------------------------------- Art. 11, 18
def test_art11_next_mandatory_audit_alert_five_years_after_completion(listed, scene, audit, actors, engine, clock):
    disclose_and_verify(scene, audit, actors, listed)
    clock.set(datetime.fromisoformat("2025-12-15T10:00:00+08:00"))
    audit.complete_audit(actors.steel_user, actors.tianshan_epb, listed)
    data = engine.instance_data(listed)
    assert data["accepted_on"] == "2025-12-15"
    assert data["next_audit_due"] == "2030-12-16T23:59:59+08:00"   # 2030-12-15 is a Sunday

    engine.tick(clock.set(datetime.fromisoformat("2030-12-16T12:00:00+08:00")))
    assert "reaudit_due_alert" not in scene.open_tasks(listed)
    engine.tick(after(datetime.fromisoformat(data["next_audit_due"]), clock))
    alert = scene.task(actors.tianshan_epb, "reaudit_due_alert", listed)
    assert (alert.article, alert.form) == ("Art. 11", None)
    assert scene.open_tasks(listed) == ["reaudit_due_alert", "report_implementation"]


def test_mandatory_audit_from_listing_through_the_six_stages_to_completion(listed, scene, audit, actors, engine,
                                                                           clock):
    a = actors
    disclose_and_verify(scene, audit, a, listed)
    scene.act(a.steel_user, "commission_agency", audit.commission(a.agency), listed)
    scene.act(a.agency_user, "accept_commission", audit.accept_commission(), listed)
    for stage in ("prepare_audit", "pre_audit", "audit_balances", "generate_options", "assess_feasibility",
                  "write_report"):
        assert scene.open_tasks(listed) == [stage]
        scene.act(a.steel_user, stage, audit.STAGES[stage], listed)
    scene.act(a.agency_user, "cosign_report", {"cosign_decision": "confirm", "signing_auditor": "陈静"}, listed)
    scene.act(a.steel_user, "submit_report", audit.report_summary(), listed)
    scene.act(a.tianshan_epb, "review_report", audit.accept_report(), listed)

    # Art. 18: progress on the chosen options, taken note of by the local EPB, DRC and ETC.
    scene.act(a.steel_user, "report_implementation", {
        "reporting_date": "2026-06-30", "summary": "脱硫改造已开工。",
        "progress": [{"option_name": "烧结烟气脱硫改造", "status": "in_progress", "investment_made": 600,
                      "benefit_achieved": 0},
                     {"option_name": "循环水系统改造", "status": "completed", "investment_made": 300,
                      "benefit_achieved": 80}]}, listed)
    assert scene.open_tasks(listed) == ["acknowledge_implementation_drc", "acknowledge_implementation_epb",
                                        "acknowledge_implementation_etc"]
    scene.act(a.tianshan_drc, "acknowledge_implementation_drc", instance_id=listed)
    scene.act(a.tianshan_etc, "acknowledge_implementation_etc", instance_id=listed)
    scene.act(a.tianshan_epb, "acknowledge_implementation_epb", instance_id=listed)
    assert scene.open_tasks(listed) == []
    assert scene.status(listed) == "running"   # the five-year clock still runs

    engine.tick(after(datetime.fromisoformat(engine.instance_data(listed)["next_audit_due"]), clock))
    scene.act(a.tianshan_epb, "reaudit_due_alert", instance_id=listed)
    assert scene.status(listed) == "completed"
    assert audit.list_enterprise(a.steel, published_on="2031-01-10", batch="2031-1") != listed   # Art. 11: the next one

    kinds = {"emission_disclosure", "audit_commission", "audit_preparation", "audit_pre_audit", "audit_balances",
             "audit_options", "audit_feasibility", "audit_report", "audit_report_submission",
             "implementation_progress"}
    assert all(len(scene.records(kind)) == 1 for kind in kinds)
    assert scene.undelivered("penalty_case_opened") == []
    assert engine.verify_history() == []


# ---------------------------------------------------------------------------------------------- who acts
def test_user_of_another_jurisdiction_cannot_act(listed, scene, audit, actors, engine):
    scene.act(actors.steel_user, "publish_emissions", audit.disclosure(), listed)
    verify = scene.task(actors.tianshan_epb, "verify_disclosure", listed)
    assert verify.scope == f"j:{TIANSHAN}"
    accept = {"verification": "accept", "checked_on": "2025-03-25"}
    for outsider in (actors.saybag_epb, actors.urumqi_epb):   # another district; the prefecture
        assert engine.inbox(outsider).total == 0
        with pytest.raises(NotAllowed):
            engine.complete(outsider, verify.id, accept)
    commission = scene.task(actors.steel_user, "commission_agency", listed)
    with pytest.raises(NotAllowed):   # another enterprise
        engine.complete(actors.cement_user, commission.id, audit.commission(actors.agency))
    with pytest.raises(NotAllowed):   # the local EPB does not act for the enterprise
        engine.complete(actors.tianshan_epb, commission.id, audit.commission(actors.agency))
    assert scene.open_tasks(listed) == ["commission_agency", "verify_disclosure"]


# ---------------------------------------------------------------------------------------------- Art. 8, 9
def test_enterprise_listed_again_on_second_ground_gets_no_second_audit(listed, scene, audit, actors, engine, clock):
    clock.set(datetime.fromisoformat("2025-04-20T10:00:00+08:00"))
    again = audit.list_enterprise(actors.steel, grounds=["hazardous"], published_on="2025-04-20", batch="2025-2")
    assert again == listed
    assert [i.id for i in scene.instances("mandatory_audit")] == [listed]
    assert scene.history_kinds(listed).count("message_received") == 2
    # The clocks keep running from the first publication.
    assert scene.task(actors.steel_user, "commission_agency", listed).due_at == COMMISSION_DUE

    other = audit.list_enterprise(actors.cement, jurisdiction_code=SAYBAG)   # another enterprise: its own audit
    assert other != listed and len(scene.instances("mandatory_audit")) == 2

    audit.to_report(actors.steel_user, listed, agency=False)
    submit = scene.task(actors.steel_user, "submit_report", listed)
    assert engine.task_view(actors.steel_user, submit.id).data["grounds"] == ["exceeding", "hazardous"]


def test_art11_listing_after_the_report_was_accepted_alerts_the_local_epb(listed, scene, audit, actors, engine,
                                                                         clock):
    audit.complete_audit(actors.steel_user, actors.tianshan_epb, listed, agency=False)
    clock.set(datetime.fromisoformat("2026-04-15T10:00:00+08:00"))
    audit.list_enterprise(actors.steel, published_on="2026-04-15", batch="2026-1")
    alert = scene.task(actors.tianshan_epb, "relisted_after_audit", listed)
    assert (alert.article, alert.form) == ("Art. 9, 11", None)
    data = engine.task_view(actors.tianshan_epb, alert.id).data
    assert (data["relisted_batch"], data["relisted_on"], data["relisted_grounds"]) == ("2026-1", "2026-04-15",
                                                                                        ["exceeding"])
    scene.act(actors.tianshan_epb, "relisted_after_audit", instance_id=listed)
    assert "relisted_after_audit" not in scene.open_tasks(listed)


# ---------------------------------------------------------------------------------------------- engine canary
def test_engine_waits_for_messages_that_start_event_subprocesses():
    """A listing on a second ground must reach the open audit's event sub-process (Art. 8, 11)."""
    from engine import runtime
    from tests.processes.conftest import _lists_event_subprocess_starts
    assert _lists_event_subprocess_starts(runtime.waiting_messages)


def test_the_listing_that_starts_the_audit_is_not_also_taken_as_a_second_listing(engine, actors, audit):
    """Art. 8, 9: the event sub-process for a later listing must not fire on the first one."""
    from engine import inspect
    instance_id = audit.list_enterprise(actors.steel)
    diagram = inspect.instance_diagram(engine, actors.admin, instance_id)
    assert "relisted" not in diagram.completed + diagram.active
    kinds = [e.kind for e in engine.history(instance_id)]
    assert kinds.count("message_received") == 1


def test_a_relisting_of_one_enterprise_never_reaches_another_enterprises_audit(engine, actors, audit):
    """Art. 8, 9: after enterprise A was listed twice, B and C each still get their own audit."""
    from engine.models import Instance
    from sqlalchemy import select
    first = audit.list_enterprise(actors.steel)
    assert audit.list_enterprise(actors.steel, grounds=("hazardous",)) == first
    second = audit.list_enterprise(actors.chem)
    third = audit.list_enterprise(actors.cement, jurisdiction_code="650103")
    assert len({first, second, third}) == 3
    with engine.db.read() as session:
        audits = session.scalars(select(Instance).where(Instance.process_id == "mandatory_audit")).all()
        by_enterprise = {}
        for row in audits:
            by_enterprise.setdefault(row.enterprise_id, []).append(row.id)
    assert all(len(ids) == 1 for ids in by_enterprise.values()), by_enterprise
    kinds = [e.kind for e in engine.history(second)]
    assert kinds.count("message_received") == 1
