"""Art. 28, 29 with the Cleaner Production Promotion Law and the Administrative Penalty Law: penalty cases."""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from engine.errors import InvalidFormData, NotAllowed
from engine.forms import uscc_check_character
from tests.conftest import ROOT, SHANGHAI, add_organisation, add_user

ROOT = Path(__file__).resolve().parents[2]
PENALTY_CASE = ROOT / "processes" / "penalty_case.bpmn"
COUNTY, OTHER_COUNTY = "650102", "650103"

# Another process opening a case: it throws penalty_case_opened with the payload given as start data
# `case` — the way mandatory_audit (or any process that finds the conduct) opens one.
OPENER_BPMN = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:spiffworkflow="http://spiffworkflow.org/bpmn/schema/1.0/core" id="opener_definitions"
    targetNamespace="http://cleanaudit.example/test">
  <bpmn:message id="penalty_case_opened" name="penalty_case_opened" />
  <bpmn:process id="case_opener" name="case opener (test)" isExecutable="true">
    <bpmn:startEvent id="start"><bpmn:documentation>test</bpmn:documentation><bpmn:outgoing>flow_1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:sequenceFlow id="flow_1" sourceRef="start" targetRef="open_case" />
    <bpmn:intermediateThrowEvent id="open_case">
      <bpmn:documentation>test</bpmn:documentation>
      <bpmn:incoming>flow_1</bpmn:incoming>
      <bpmn:outgoing>flow_2</bpmn:outgoing>
      <bpmn:messageEventDefinition id="open_case_message" messageRef="penalty_case_opened">
        <bpmn:extensionElements>
          <spiffworkflow:messagePayload>case</spiffworkflow:messagePayload>
        </bpmn:extensionElements>
      </bpmn:messageEventDefinition>
    </bpmn:intermediateThrowEvent>
    <bpmn:sequenceFlow id="flow_2" sourceRef="open_case" targetRef="done" />
    <bpmn:endEvent id="done"><bpmn:documentation>test</bpmn:documentation><bpmn:incoming>flow_2</bpmn:incoming></bpmn:endEvent>
  </bpmn:process>
</bpmn:definitions>
"""

EVIDENCE = [{"kind": "media_record", "description": "名单公布后一个月内未在当地主要媒体公布排污情况",
             "obtained_on": "2025-02-20"}]


def uscc(division: str, serial: int, kind: str = "91") -> str:
    first17 = f"{kind}{division}{serial:09d}"
    return first17 + uscc_check_character(first17)


class Case:
    """The actors of Art. 28 and 29 and a way to open and drive one case."""

    def __init__(self, engine, clock):
        self.engine, self.clock = engine, clock
        self.steel = add_organisation(engine, kind="enterprise", name="天山钢铁有限公司",
                                      credit_code=uscc(COUNTY, 1), division_code=COUNTY)
        self.agency = add_organisation(engine, kind="agency", name="新疆某清洁生产咨询有限公司",
                                       credit_code=uscc("650100", 7), division_code="650100", filing_status="filed")
        self.county_epb = add_user(engine, "tianshan-epb", ["local_epb"], jurisdiction_code=COUNTY)
        self.other_county_epb = add_user(engine, "saybag-epb", ["local_epb"], jurisdiction_code=OTHER_COUNTY)
        self.regional_epb = add_user(engine, "region-epb", ["regional_epb"], jurisdiction_code="650000")
        self.regional_drc = add_user(engine, "region-drc", ["regional_drc"], jurisdiction_code="650000")
        self.regional_etc = add_user(engine, "region-etc", ["regional_etc"], jurisdiction_code="650000")
        self.enterprise = add_user(engine, "steel-env", ["enterprise"], organisation_id=self.steel)
        self.consultant = add_user(engine, "agency-lead", ["consultancy"], organisation_id=self.agency)

    # -- opening -----------------------------------------------------------------------------
    def payload(self, conduct: str = "disclosure_missed", conduct_date: str = "2025-02-05", **extra) -> dict:
        authority = {"disclosure_missed": "local_epb", "disclosure_improper": "local_epb",
                     "audit_not_done": "regional_epb", "false_report": "regional_epb",
                     "agency_misconduct": "regional_joint"}[conduct]
        case = {"enterprise_id": self.steel, "enterprise_name": "天山钢铁有限公司", "jurisdiction_code": COUNTY,
                "conduct": conduct, "conduct_date": conduct_date, "authority": authority}
        if conduct == "agency_misconduct":
            case["agency_id"] = self.agency
        case.update(extra)
        return case

    def open(self, conduct: str = "disclosure_missed", conduct_date: str = "2025-02-05", **extra) -> int:
        """Open a case the way another process does (thrown message); returns the penalty_case instance."""
        self.engine.start("case_opener", data={"case": self.payload(conduct, conduct_date, **extra)})
        return self.latest()

    def latest(self) -> int:
        from engine.models import Instance
        with self.engine.db.read() as session:
            return session.scalar(select(Instance.id).where(Instance.process_id == "penalty_case")
                                  .order_by(Instance.id.desc()).limit(1))

    # -- driving ------------------------------------------------------------------------------
    def task(self, user, bpmn_id: str):
        rows = [r for r in self.engine.inbox(user, process_id="penalty_case").rows if r.bpmn_id == bpmn_id]
        assert rows, f"{user.username} has no open task {bpmn_id}"
        return rows[0]

    def act(self, user, bpmn_id: str, data: dict):
        return self.engine.complete(user, self.task(user, bpmn_id).id, data)

    def open_tasks(self, instance_id: int) -> list[str]:
        from engine.models import HumanTask
        with self.engine.db.read() as session:
            return sorted(session.scalars(select(HumanTask.bpmn_id).where(
                HumanTask.instance_id == instance_id, HumanTask.status == "open")))

    def data(self, instance_id: int) -> dict:
        return self.engine.instance_data(instance_id)

    def status(self, instance_id: int) -> str:
        row = self.engine.instance(instance_id)
        return f"{row.status}: {row.incident_error}" if row.status == "incident" else row.status

    def records(self, kind: str) -> list:
        from engine.models import Record
        with self.engine.db.read() as session:
            return list(session.scalars(select(Record).where(Record.kind == kind).order_by(Record.id)))

    # -- typical forms ------------------------------------------------------------------------
    @staticmethod
    def proposal(article: str, fine: float = 0, correction_due: str | None = "2025-04-30", **extra) -> dict:
        data = {"facts": "该企业被列入强制性清洁生产审核名单后，未在一个月内公布主要污染物排放情况。",
                "evidence": EVIDENCE, "investigation_outcome": "propose", "article_relied_on": article,
                "order_to_correct": correction_due is not None, "intended_fine": fine}
        if correction_due is not None:
            data["correction_due"] = correction_due
        data.update(extra)
        return data

    @staticmethod
    def decision(article: str, fine: float = 0, correction_due: str | None = "2025-04-30", **extra) -> dict:
        data = {"decision": "penalise", "article_relied_on": article, "order_to_correct": correction_due is not None,
                "fine": fine, "statement_considered": "当事人未提出新的事实和理由，维持事先告知的处罚。"}
        if correction_due is not None:
            data["correction_due"] = correction_due
        data.update(extra)
        return data

    STATEMENT = {"statement_choice": "state", "statement": "我公司已于3月1日在《乌鲁木齐晚报》补充公布排污情况。"}


@pytest.fixture
def case(engine, clock, tmp_path, monkeypatch):
    # Password hashing (scrypt) costs ~0.15 s a user and these tests never log in.
    monkeypatch.setattr("engine.accounts.hash_password", lambda password: "test-only:" + password)
    opener = tmp_path / "case_opener.bpmn"
    opener.write_text(OPENER_BPMN, encoding="utf-8")
    engine.deploy_paths([PENALTY_CASE, opener])
    return Case(engine, clock)


# ---------------------------------------------------------------------------------------------
# The article relied on (Administrative Penalty Law Art. 37)

def test_penalty_article_for_conduct_before_2012_07_01_is_2002_law_art_41(case):
    case.clock.set(datetime(2012, 3, 5, 9, 0, tzinfo=SHANGHAI))   # decided within the two-year limitation
    instance_id = case.open("disclosure_missed", "2011-06-30")
    data = case.data(instance_id)
    assert data["article_candidates"] == ["cppl2002_art41", "cppl2012_art36"]
    assert data["law_in_force"] == "cppl2002_art41"
    assert data["suggested_article"] == "cppl2002_art41"   # the 2012 text is not lighter
    assert case.open_tasks(instance_id) == ["investigate_local_epb"]


def test_penalty_article_for_conduct_on_or_after_2012_07_01_is_2012_law_art_36(case):
    instance_id = case.open("disclosure_improper", "2012-07-01")
    data = case.data(instance_id)
    assert data["law_in_force"] == data["suggested_article"] == "cppl2012_art36"


def test_audit_not_done_before_2012_keeps_2002_art_40_because_2012_art_39_is_heavier(case):
    instance_id = case.open("audit_not_done", "2012-06-30")
    data = case.data(instance_id)
    assert data["suggested_article"] == "cppl2002_art40"
    assert data["fine_articles"]["cppl2012_art39"]["fine_min"] == 50000
    assert case.open_tasks(instance_id) == ["investigate_regional_epb"]


def test_another_article_than_the_suggested_one_needs_a_reason(case):
    instance_id = case.open("disclosure_missed", "2025-02-05")
    case.act(case.county_epb, "investigate_local_epb", case.proposal("cppl2002_art41"))
    assert case.open_tasks(instance_id) == ["investigate_local_epb"]
    assert any("第三十七条" in p for p in case.data(instance_id)["penalty_problems"])


# ---------------------------------------------------------------------------------------------
# Fines within the article's range

def test_fine_outside_article_range_is_refused(case):
    instance_id = case.open("disclosure_missed", "2025-02-05")
    with pytest.raises(InvalidFormData):   # the form's own bound: no article allows more than 500,000
        case.act(case.county_epb, "investigate_local_epb", case.proposal("cppl2012_art36", fine=600000))
    case.act(case.county_epb, "investigate_local_epb", case.proposal("cppl2012_art36", fine=150000))
    assert case.open_tasks(instance_id) == ["investigate_local_epb"]   # back to the investigator
    [problem] = case.data(instance_id)["penalty_problems"]
    assert "150000" in problem and "100000" in problem
    assert case.records("penalty_notice") == []


def test_art39_fine_needs_an_order_to_correct_that_was_not_followed(case):
    instance_id = case.open("audit_not_done", "2025-01-10")
    case.act(case.regional_epb, "investigate_regional_epb", case.proposal("cppl2012_art39", fine=80000))
    assert any("拒不改正" in p for p in case.data(instance_id)["penalty_problems"])
    case.act(case.regional_epb, "investigate_regional_epb", case.proposal("cppl2012_art39", fine=20000,
                                                                             prior_order_reference="新环罚〔2024〕3号"))
    assert any("50000" in p for p in case.data(instance_id)["penalty_problems"])   # below the 2012 minimum
    case.act(case.regional_epb, "investigate_regional_epb", case.proposal("cppl2012_art39", fine=80000,
                                                                             prior_order_reference="新环罚〔2024〕3号"))
    assert case.open_tasks(instance_id) == ["state_and_defend_enterprise"]


# ---------------------------------------------------------------------------------------------
# Notice, statement and defence, hearing (Administrative Penalty Law Art. 44, 45, 63, 64)

def test_party_is_heard_before_decision(case):
    instance_id = case.open("disclosure_missed", "2025-02-05")
    case.act(case.county_epb, "investigate_local_epb", case.proposal("cppl2012_art36", fine=20000))

    assert case.open_tasks(instance_id) == ["state_and_defend_enterprise"]
    [notice] = case.records("penalty_notice")
    assert notice.enterprise_id == case.steel and not notice.confidential
    assert notice.data["intended"]["fine"] == 20000
    assert notice.data["hearing_allowed"] is False   # below the large-fine threshold
    assert notice.data["statement_due"] == "2025-03-10T23:59:59+08:00"   # 5 days, weekend rolled over
    assert case.task(case.enterprise, "state_and_defend_enterprise").due_at is not None

    case.act(case.enterprise, "state_and_defend_enterprise", Case.STATEMENT)
    assert case.open_tasks(instance_id) == ["decide_local_epb"]
    view = case.engine.task_view(case.county_epb, case.task(case.county_epb, "decide_local_epb").id)
    assert view.data["statement"].startswith("我公司已于3月1日")


def test_large_fine_entitles_the_party_to_a_hearing(case):
    instance_id = case.open("audit_not_done", "2025-01-10")
    case.act(case.regional_epb, "investigate_regional_epb", case.proposal(
        "cppl2012_art39", fine=80000, prior_order_reference="新环罚〔2024〕3号"))
    assert case.records("penalty_notice")[-1].data["hearing_allowed"] is True
    case.act(case.enterprise, "state_and_defend_enterprise", {**Case.STATEMENT, "request_hearing": True})
    assert case.open_tasks(instance_id) == ["hold_hearing_regional_epb"]
    with pytest.raises(InvalidFormData):   # the chair must not be an investigator of the case
        case.act(case.regional_epb, "hold_hearing_regional_epb", {
            "hearing_notified_on": "2025-03-05", "hearing_date": "2025-03-12", "hearing_host": "王某",
            "host_did_not_investigate": False, "party_attended": True, "hearing_record": "当事人陈述了整改计划。"})
    case.act(case.regional_epb, "hold_hearing_regional_epb", {
        "hearing_notified_on": "2025-03-05", "hearing_date": "2025-03-12", "hearing_host": "王某",
        "host_did_not_investigate": True, "party_attended": True, "hearing_record": "当事人陈述了整改计划。"})
    assert case.open_tasks(instance_id) == ["decide_regional_epb"]


def test_hearing_request_for_a_small_fine_is_noted_but_not_held(case):
    instance_id = case.open("disclosure_missed", "2025-02-05")
    case.act(case.county_epb, "investigate_local_epb", case.proposal("cppl2012_art36", fine=20000))
    case.act(case.enterprise, "state_and_defend_enterprise", {**Case.STATEMENT, "request_hearing": True})
    assert case.open_tasks(instance_id) == ["decide_local_epb"]
    assert "50000" in case.data(instance_id)["hearing_note"]


def test_statement_period_lapses_after_five_days_and_the_authority_decides(case):
    instance_id = case.open("disclosure_missed", "2025-02-05")
    case.act(case.county_epb, "investigate_local_epb", case.proposal("cppl2012_art36", fine=20000))
    case.clock.set(datetime(2025, 3, 10, 23, 0, tzinfo=SHANGHAI))
    case.engine.tick()
    assert case.open_tasks(instance_id) == ["state_and_defend_enterprise"]
    case.clock.set(datetime(2025, 3, 11, 0, 0, 1, tzinfo=SHANGHAI))
    case.engine.tick()
    assert case.open_tasks(instance_id) == ["decide_local_epb"]
    assert case.data(instance_id)["statement_choice"] == "lapsed"


# ---------------------------------------------------------------------------------------------
# Decision and follow-up

def test_art28_penalty_decision_is_published(case):
    instance_id = case.open("disclosure_missed", "2025-02-05")
    case.act(case.county_epb, "investigate_local_epb", case.proposal("cppl2012_art36", fine=20000))
    case.act(case.enterprise, "state_and_defend_enterprise", {"statement_choice": "waive"})
    case.act(case.county_epb, "decide_local_epb", case.decision("cppl2012_art36", fine=20000))

    [published] = case.records("penalty_decision")
    assert published.public and published.enterprise_id == case.steel
    assert published.data["article"] == "cppl2012_art36" and published.data["fine"] == 20000
    assert published.data["measures_article"] == "Art. 28"
    assert case.open_tasks(instance_id) == ["report_correction_enterprise"]


def test_decision_may_not_be_heavier_than_the_notice(case):
    instance_id = case.open("disclosure_missed", "2025-02-05")
    case.act(case.county_epb, "investigate_local_epb", case.proposal("cppl2012_art36", fine=20000))
    case.act(case.enterprise, "state_and_defend_enterprise", Case.STATEMENT)
    case.act(case.county_epb, "decide_local_epb", case.decision("cppl2012_art36", fine=30000))
    assert case.open_tasks(instance_id) == ["decide_local_epb"]
    assert any("第四十五条" in p for p in case.data(instance_id)["decision_problems"])
    assert case.records("penalty_decision") == []


def test_refusal_to_correct_makes_the_art39_fine_possible(case):
    instance_id = case.open("audit_not_done", "2025-01-10")
    case.act(case.regional_epb, "investigate_regional_epb", case.proposal("cppl2012_art39"))
    case.act(case.enterprise, "state_and_defend_enterprise", {"statement_choice": "waive"})
    case.act(case.regional_epb, "decide_regional_epb", case.decision("cppl2012_art39"))
    assert case.open_tasks(instance_id) == ["report_correction_enterprise"]

    case.clock.set(datetime(2025, 5, 1, 9, 0, tzinfo=SHANGHAI))   # the time limit passes without a report
    case.engine.tick()
    assert case.open_tasks(instance_id) == ["verify_correction_regional_epb"]
    case.act(case.regional_epb, "verify_correction_regional_epb", {
        "verification": "not_corrected", "verified_on": "2025-05-06", "verification_note": "仍未委托审核机构"})

    assert case.open_tasks(instance_id) == ["investigate_regional_epb"]
    assert case.data(instance_id)["prior_order_not_corrected"] is True
    case.act(case.regional_epb, "investigate_regional_epb",
             case.proposal("cppl2012_art39", fine=60000, correction_due="2025-07-31"))
    assert case.open_tasks(instance_id) == ["state_and_defend_enterprise"]


def test_corrected_case_is_closed_after_verification(case):
    instance_id = case.open("disclosure_missed", "2025-02-05")
    case.act(case.county_epb, "investigate_local_epb", case.proposal("cppl2012_art36"))
    case.act(case.enterprise, "state_and_defend_enterprise", {"statement_choice": "waive"})
    case.act(case.county_epb, "decide_local_epb", case.decision("cppl2012_art36"))
    case.act(case.enterprise, "report_correction_enterprise", {
        "corrected_on": "2025-03-20", "correction_description": "已在《乌鲁木齐晚报》公布主要污染物排放情况。"})
    case.act(case.county_epb, "verify_correction_local_epb", {
        "verification": "corrected", "verified_on": "2025-03-25", "verification_note": "已核实公布内容"})
    assert case.status(instance_id) == "completed"
    assert case.records("penalty_correction_verified")[0].enterprise_id == case.steel


# ---------------------------------------------------------------------------------------------
# Art. 29: audit agencies

def propose_agency_measures(case, instance_id: int, revoke: bool = False) -> None:
    case.act(case.regional_drc, "investigate_agency", {
        "facts": "该机构出具的审核报告物料平衡数据系编造，未进行现场监测。",
        "evidence": [{"kind": "audit_report", "description": "审核报告第三章物料平衡表"}],
        "investigation_outcome": "propose", "misconduct_kinds": ["falsified"], "correction_due": "2025-05-31",
        "propose_revoke_filing": revoke, "serious_consequences": False})
    assert case.open_tasks(instance_id) == ["concur_regional_epb", "concur_regional_etc"]


def test_art29_agency_misconduct_names_the_agency_publicly(case):
    instance_id = case.open("agency_misconduct", "2025-01-20")
    assert case.open_tasks(instance_id) == ["investigate_agency"]
    propose_agency_measures(case, instance_id, revoke=True)
    case.act(case.regional_etc, "concur_regional_etc", {"etc_concurrence": "agree"})
    case.act(case.regional_epb, "concur_regional_epb", {"epb_concurrence": "agree"})

    assert case.open_tasks(instance_id) == ["state_and_defend_agency"]
    assert case.records("penalty_notice")[-1].data["hearing_allowed"] is True   # revocation announced
    case.act(case.consultant, "state_and_defend_agency", {"statement_choice": "waive"})
    case.act(case.regional_drc, "decide_agency", {
        "agency_decision": "order_correction", "correction_due": "2025-05-31", "revoke_filing": True,
        "refer_for_liability": False, "statement_considered": "当事人放弃陈述、申辩。"})

    [named] = case.records("agency_named")
    assert named.public
    assert named.data["agency_id"] == case.agency and named.data["agency_name"] == "新疆某清洁生产咨询有限公司"
    assert named.data["article"] == "Art. 29"
    assert "enterprise_name" not in named.data   # its client's business stays confidential (Art. 20)
    assert case.data(instance_id)["revoke_filing"] is True
    assert case.records("agency_penalty_decision")[-1].data["revoke_filing"] is True
    assert case.open_tasks(instance_id) == ["report_correction_agency"]


def test_art29_a_decision_revoking_the_filing_revokes_it_so_no_enterprise_can_commission_the_agency(case):
    from engine.models import Organisation
    case.engine.deploy_paths([ROOT / "processes" / "agency_revocation.bpmn"])
    with case.engine.db.transaction() as session:
        session.get(Organisation, case.agency).filing_status = "filed"
    instance_id = case.open("agency_misconduct", "2025-01-20")
    propose_agency_measures(case, instance_id, revoke=True)
    case.act(case.regional_etc, "concur_regional_etc", {"etc_concurrence": "agree"})
    case.act(case.regional_epb, "concur_regional_epb", {"epb_concurrence": "agree"})
    case.act(case.consultant, "state_and_defend_agency", {"statement_choice": "waive"})
    case.act(case.regional_drc, "decide_agency", {
        "agency_decision": "order_correction", "correction_due": "2025-05-31", "revoke_filing": True,
        "refer_for_liability": False, "statement_considered": "当事人放弃陈述、申辩。"})

    with case.engine.db.read() as session:
        assert session.get(Organisation, case.agency).filing_status == "revoked"
    [revoked] = case.records("agency_filing_revoked")
    assert revoked.public and revoked.data["agency_id"] == case.agency
    kinds = [e.kind for e in case.engine.history(instance_id)]
    assert "message_sent" in kinds and "message_undelivered" not in kinds


def test_art29_regional_etc_and_epb_must_concur(case):
    instance_id = case.open("agency_misconduct", "2025-01-20")
    propose_agency_measures(case, instance_id)
    case.act(case.regional_etc, "concur_regional_etc", {"etc_concurrence": "agree"})
    case.act(case.regional_epb, "concur_regional_epb",
             {"epb_concurrence": "disagree", "epb_concurrence_reason": "证据不足，需补充现场核查"})
    assert case.open_tasks(instance_id) == ["investigate_agency"]
    assert case.data(instance_id)["returned"]["reasons"] == ["自治区环保局：证据不足，需补充现场核查"]


def test_art29_revocation_not_announced_in_the_notice_is_refused(case):
    instance_id = case.open("agency_misconduct", "2025-01-20")
    propose_agency_measures(case, instance_id, revoke=False)
    case.act(case.regional_etc, "concur_regional_etc", {"etc_concurrence": "agree"})
    case.act(case.regional_epb, "concur_regional_epb", {"epb_concurrence": "agree"})
    case.act(case.consultant, "state_and_defend_agency", {"statement_choice": "waive"})
    case.act(case.regional_drc, "decide_agency", {
        "agency_decision": "order_correction", "correction_due": "2025-05-31", "revoke_filing": True,
        "refer_for_liability": False, "statement_considered": "当事人放弃陈述、申辩。"})
    assert case.open_tasks(instance_id) == ["decide_agency"]
    assert case.records("agency_named") == []


# ---------------------------------------------------------------------------------------------
# Who may act, how a case is opened

def test_a_user_of_another_jurisdiction_cannot_act_on_the_case(case):
    case.open("disclosure_missed", "2025-02-05")
    row = case.task(case.county_epb, "investigate_local_epb")
    with pytest.raises(NotAllowed):
        case.engine.complete(case.other_county_epb, row.id, case.proposal("cppl2012_art36"))
    with pytest.raises(NotAllowed):   # the regional EPB does not penalise a missed disclosure (Art. 28)
        case.engine.complete(case.regional_epb, row.id, case.proposal("cppl2012_art36"))


def test_art28_conduct_and_authority_must_match(case):
    case.engine.start("case_opener", data={"case": case.payload("disclosure_missed", authority="regional_epb")})
    instance_id = case.latest()
    assert case.status(instance_id).startswith("incident")
    assert "Art. 28, 29" in case.engine.instance(instance_id).incident_error


def test_an_epb_official_opens_a_case_by_hand_through_send_message(case):
    instance_id = case.engine.send_message("penalty_case_opened", case.payload("disclosure_missed", "2025-02-05"),
                                           actor=case.county_epb.username)
    assert instance_id is not None
    assert case.open_tasks(instance_id) == ["investigate_local_epb"]


def test_art28_missed_disclosure_in_a_mandatory_audit_opens_a_case_of_the_local_epb(case):
    case.engine.deploy_paths([ROOT / "processes" / "mandatory_audit.bpmn", ROOT / "processes" / "audit_stages.bpmn"])
    case.engine.send_message("enterprise_listed", {
        "enterprise_id": case.steel, "enterprise_name": "天山钢铁有限公司", "jurisdiction_code": COUNTY,
        "grounds": ["exceeding"], "published_on": "2025-03-03", "batch": "2025-1", "is_central": False},
        {"MainCorrelationKey": {"enterprise_id": case.steel}})
    assert case.latest() is None
    case.clock.set(datetime(2025, 4, 4, 9, 0, tzinfo=SHANGHAI))   # Art. 10: one month after publication
    case.engine.tick()

    instance_id = case.latest()
    assert instance_id is not None, "mandatory_audit opened no penalty case"
    data = case.data(instance_id)
    assert (data["conduct"], data["authority"], data["suggested_article"]) == \
        ("disclosure_missed", "local_epb", "cppl2012_art36")
    assert case.open_tasks(instance_id) == ["investigate_local_epb"]
    assert case.task(case.county_epb, "investigate_local_epb").enterprise_name == "天山钢铁有限公司"


def test_every_form_title_has_an_english_text():
    for schema_path in sorted((ROOT / "forms" / "penalty_case").glob("*.schema.json")) + \
            sorted((ROOT / "forms" / "mandatory_listing").glob("*.schema.json")):
        schema = json.loads(schema_path.read_text(encoding="utf-8"))
        english = json.loads(schema_path.with_name(schema_path.name.replace(".schema.json", ".en.json"))
                             .read_text(encoding="utf-8"))
        missing = [p for p in _title_pointers(schema) if p not in english]
        assert missing == [], f"{schema_path.name}: no English for {missing}"


def _title_pointers(node, pointer: str = "") -> list[str]:
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{pointer}/{key.replace('~', '~0').replace('/', '~1')}"
            if key in ("title", "description") and isinstance(value, str):
                found.append(here)
            elif key not in ("if",):
                found.extend(_title_pointers(value, here))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(_title_pointers(value, f"{pointer}/{index}"))
    return found
