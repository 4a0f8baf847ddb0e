"""Art. 13 (with Art. 14, 19, 20, 29): the six stages of a cleaner production audit (process audit_stages).

audit_stages is called by mandatory_audit (and later by the voluntary audit); here it is mostly
started on its own with the inputs of its data contract: enterprise_id, enterprise_name, agency_id,
report_due.
"""
from __future__ import annotations

from datetime import datetime

import pytest

from engine.errors import InvalidFormData, NotAllowed
from tests.processes.conftest import PROCESSES

pytestmark = pytest.mark.usefixtures("clock")

STAGES = ["prepare_audit", "pre_audit", "audit_balances", "generate_options", "assess_feasibility", "write_report"]
REPORT_DUE = "2026-03-03T23:59:59+08:00"
CONFIRM = {"cosign_decision": "confirm", "signing_auditor": "陈静", "certificate_no": "QJ-0815"}


@pytest.fixture
def engine(engine_with):
    return engine_with("mandatory_audit", "audit_stages")


@pytest.fixture
def start_stages(engine, actors):
    """Start audit_stages for the steel works, with or without the filed agency (Art. 14)."""

    def _start(*, agency: bool = True, report_due=REPORT_DUE) -> int:
        return engine.start("audit_stages", data={
            "enterprise_id": actors.steel, "enterprise_name": "天山钢铁有限公司",
            "agency_id": actors.agency if agency else None, "report_due": report_due})

    return _start


def run_stages(scene, audit, user, instance_id, stages=STAGES):
    for stage in stages:
        scene.act(user, stage, audit.STAGES[stage], instance_id)


# ---------------------------------------------------------------------------------------------- Art. 13
def test_art13_the_six_stages_run_in_order_as_enterprise_tasks(start_stages, scene, audit, actors):
    instance_id = start_stages(agency=False)
    for number, stage in enumerate(STAGES, start=1):
        assert scene.open_tasks(instance_id) == [stage]
        row = scene.task(actors.steel_user, stage, instance_id)
        assert (row.lane, row.scope, row.article) == ("enterprise", f"o:{actors.steel}", f"Art. 13({number})")
        assert row.due_at == datetime.fromisoformat(REPORT_DUE)
        assert row.form == f"audit_stages/{stage}.schema.json"
        scene.act(actors.steel_user, stage, audit.STAGES[stage], instance_id)
    assert scene.status(instance_id) == "completed"


def test_art13_stage_tables_are_confidential_records_and_only_summaries_stay(start_stages, scene, audit, actors,
                                                                              engine):
    instance_id = start_stages(agency=False)
    run_stages(scene, audit, actors.steel_user, instance_id)

    kinds = ["audit_preparation", "audit_pre_audit", "audit_balances", "audit_options", "audit_feasibility",
             "audit_report"]
    records = {kind: scene.records(kind) for kind in kinds}
    assert all(len(found) == 1 for found in records.values())
    for [record] in records.values():   # Art. 20: technical and commercial secrets
        assert record.confidential and not record.public and record.enterprise_id == actors.steel
    assert [m["role"] for m in records["audit_preparation"][0].data["team"]] == ["leader", "member"]
    assert records["audit_balances"][0].data["max_closure_gap_pct"] == 1.5
    report = records["audit_report"][0].data   # the four parts of Art. 13(6)
    assert {"enterprise_basics", "audit_process_and_results", "options_summary_and_benefits",
            "implementation_plan"} <= set(report)

    data = engine.instance_data(instance_id)
    assert data["audit_team_size"] == 2 and data["audit_focus"] == "烧结工序"
    assert (data["options_total"], data["options_screened_in"], data["no_low_cost_options_count"]) == (3, 2, 1)
    assert data["chosen_options"] == ["烧结烟气脱硫改造", "循环水系统改造"]
    assert (data["planned_investment"], data["expected_annual_benefit"]) == (1500, 380)
    assert data["audit_report_record_id"] == records["audit_report"][0].id
    bulky = {"team", "work_plan", "targets", "no_low_cost_options", "survey_summary", "balances", "waste_causes",
             "options", "assessments", "enterprise_basics", "implementation_plan"}
    assert not bulky & set(data)


def test_art13_stage_forms_refuse_incomplete_or_impossible_data(start_stages, scene, audit, actors, engine):
    instance_id = start_stages(agency=False)
    row = scene.task(actors.steel_user, "prepare_audit", instance_id)
    lone = dict(audit.STAGES["prepare_audit"], team=audit.STAGES["prepare_audit"]["team"][:1])
    with pytest.raises(InvalidFormData) as refused:   # a team of managers AND technicians
        engine.complete(actors.steel_user, row.id, lone)
    assert "team" in refused.value.errors
    with pytest.raises(InvalidFormData):   # management's commitment is not optional
        engine.complete(actors.steel_user, row.id, dict(audit.STAGES["prepare_audit"], leadership_commitment=False))
    run_stages(scene, audit, actors.steel_user, instance_id, STAGES[:4])

    row = scene.task(actors.steel_user, "assess_feasibility", instance_id)
    bad = dict(audit.STAGES["assess_feasibility"])
    bad["assessments"] = [dict(bad["assessments"][0], investment=-5, payback_years="四年")]
    with pytest.raises(InvalidFormData) as refused:
        engine.complete(actors.steel_user, row.id, bad)
    assert set(refused.value.errors) == {"assessments/0/investment", "assessments/0/payback_years"}
    assert scene.records("audit_feasibility") == []


# ---------------------------------------------------------------------------------------------- Art. 14, 19, 29
def test_art19_commissioned_agency_cosigns_the_report(start_stages, scene, audit, actors, engine):
    instance_id = start_stages(agency=True)
    run_stages(scene, audit, actors.steel_user, instance_id)
    row = scene.task(actors.agency_user, "cosign_report", instance_id)
    assert (row.lane, row.scope, row.article) == ("consultancy", f"o:{actors.agency}", "Art. 19, 29")
    with pytest.raises(InvalidFormData):   # a confirmation names its signatory
        engine.complete(actors.agency_user, row.id, {"cosign_decision": "confirm"})
    scene.act(actors.agency_user, "cosign_report", CONFIRM, instance_id)

    assert scene.status(instance_id) == "completed"
    data = engine.instance_data(instance_id)
    assert (data["agency_name"], data["report_cosigned_by"]) == ("新疆清洁生产技术咨询中心", "陈静")
    assert scene.records("audit_report")[0].data["agency_name"] == "新疆清洁生产技术咨询中心"


def test_art29_agency_returns_the_report_for_revision_with_its_reason(start_stages, scene, audit, actors, engine):
    instance_id = start_stages(agency=True)
    run_stages(scene, audit, actors.steel_user, instance_id)
    reason = "物料平衡数据与预审核不一致，请核实后修改"
    scene.act(actors.agency_user, "cosign_report", {"cosign_decision": "return", "cosign_reason": reason},
              instance_id)

    row = scene.task(actors.steel_user, "write_report", instance_id)
    view = engine.task_view(actors.steel_user, row.id)
    assert view.data["report_return_reason"] == reason
    assert view.data["cosign_decision"] is None
    scene.act(actors.steel_user, "write_report", audit.STAGES["write_report"], instance_id)
    scene.act(actors.agency_user, "cosign_report", CONFIRM, instance_id)
    assert scene.status(instance_id) == "completed"
    first, second = scene.records("audit_report")   # each version of the report is kept
    assert engine.instance_data(instance_id)["audit_report_record_id"] == second.id


def test_art14_self_audit_needs_no_agency_signature(start_stages, scene, audit, actors, engine):
    instance_id = start_stages(agency=False)
    run_stages(scene, audit, actors.steel_user, instance_id)
    assert scene.status(instance_id) == "completed"
    data = engine.instance_data(instance_id)
    assert data["agency_name"] is None and data["report_cosigned_by"] is None
    assert engine.inbox(actors.agency_user).total == 0


def test_art20_only_the_enterprise_and_its_own_agency_act_on_the_stages(start_stages, scene, audit, actors, engine):
    instance_id = start_stages(agency=True)
    row = scene.task(actors.steel_user, "prepare_audit", instance_id)
    for outsider in (actors.cement_user, actors.agency_user, actors.tianshan_epb):
        with pytest.raises(NotAllowed):
            engine.complete(outsider, row.id, audit.STAGES["prepare_audit"])
    run_stages(scene, audit, actors.steel_user, instance_id)
    cosign = scene.task(actors.agency_user, "cosign_report", instance_id)
    with pytest.raises(NotAllowed):   # another agency (not commissioned, not filed)
        engine.complete(actors.applying_agency_user, cosign.id, CONFIRM)
    with pytest.raises(NotAllowed):   # the enterprise cannot sign for its agency
        engine.complete(actors.steel_user, cosign.id, CONFIRM)


def test_voluntary_audit_without_statutory_deadline_shows_no_due_date(start_stages, scene, actors):
    instance_id = start_stages(agency=False, report_due=None)
    assert scene.task(actors.steel_user, "prepare_audit", instance_id).due_at is None


# ---------------------------------------------------------------------------------------------- the contract
def test_called_from_mandatory_audit_only_declared_outputs_come_back(audit, actors, scene, engine):
    listed = audit.list_enterprise(actors.steel)
    audit.to_report(actors.steel_user, listed)
    row = scene.task(actors.steel_user, "submit_report", listed)
    data = engine.task_view(actors.steel_user, row.id).data
    assert data["report_cosigned_by"] == "陈静" and data["audit_report_date"] == "2025-11-20"
    # Working fields of the stages (not in the ioSpecification's outputs) stay inside audit_stages.
    assert not {"team_leader", "training_sessions", "focus_reason", "screening_method", "discount_rate_pct",
                "cosign_decision", "cosign_confirmed", "signing_auditor"} & set(data)


def test_processes_validate_without_errors_or_warnings():
    from engine.validate import validate_paths
    report = validate_paths([PROCESSES / "audit_stages.bpmn", PROCESSES / "mandatory_audit.bpmn"],
                            forms_dir=PROCESSES.parent / "forms")
    assert report.ok, [str(p) for p in report.errors]
    assert [str(p) for p in report.warnings] == []
    assert sorted(report.process_ids) == ["audit_stages", "mandatory_audit"]
