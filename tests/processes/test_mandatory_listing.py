"""Art. 8, 9: how the list of enterprises under mandatory cleaner production audit is decided and published."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from engine.errors import InvalidFormData, NotAllowed
from engine.forms import uscc_check_character
from tests.conftest import add_organisation, add_user

ROOT = Path(__file__).resolve().parents[2]
LISTING = ROOT / "processes" / "mandatory_listing.bpmn"
MANDATORY_AUDIT = [ROOT / "processes" / "mandatory_audit.bpmn", ROOT / "processes" / "audit_stages.bpmn"]
COUNTY, PREFECTURE, OTHER_COUNTY = "650102", "650100", "650103"   # Tianshan, Urumqi, Saybag

# A stand-in for the receiving side of the enterprise_listed contract: a message start event, then
# a wait for the same enterprise's next listing (correlation property enterprise_id). It lets these
# tests prove the throwing side without depending on mandatory_audit.bpmn.
RECEIVER_BPMN = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:spiffworkflow="http://spiffworkflow.org/bpmn/schema/1.0/core" id="receiver_definitions"
    targetNamespace="http://cleanaudit.example/test">
  <bpmn:message id="enterprise_listed" name="enterprise_listed" />
  <bpmn:correlationProperty id="enterprise_id" name="enterprise_id">
    <bpmn:correlationPropertyRetrievalExpression messageRef="enterprise_listed">
      <bpmn:formalExpression>enterprise_id</bpmn:formalExpression>
    </bpmn:correlationPropertyRetrievalExpression>
  </bpmn:correlationProperty>
  <bpmn:process id="listing_receiver" name="listing receiver (test)" isExecutable="true">
    <bpmn:startEvent id="listed_first">
      <bpmn:documentation>test</bpmn:documentation>
      <bpmn:outgoing>flow_1</bpmn:outgoing>
      <bpmn:messageEventDefinition id="listed_first_message" messageRef="enterprise_listed" />
    </bpmn:startEvent>
    <bpmn:sequenceFlow id="flow_1" sourceRef="listed_first" targetRef="listed_again" />
    <bpmn:intermediateCatchEvent id="listed_again">
      <bpmn:documentation>test</bpmn:documentation>
      <bpmn:incoming>flow_1</bpmn:incoming>
      <bpmn:outgoing>flow_2</bpmn:outgoing>
      <bpmn:messageEventDefinition id="listed_again_message" messageRef="enterprise_listed">
        <bpmn:extensionElements>
          <spiffworkflow:messageVariable>second_listing</spiffworkflow:messageVariable>
        </bpmn:extensionElements>
      </bpmn:messageEventDefinition>
    </bpmn:intermediateCatchEvent>
    <bpmn:sequenceFlow id="flow_2" sourceRef="listed_again" targetRef="done" />
    <bpmn:endEvent id="done"><bpmn:documentation>test</bpmn:documentation><bpmn:incoming>flow_2</bpmn:incoming></bpmn:endEvent>
  </bpmn:process>
</bpmn:definitions>
"""


def uscc(division: str, serial: int) -> str:
    """A valid unified social credit code (GB 32100-2015) for an enterprise legal person."""
    first17 = f"91{division}{serial:09d}"
    return first17 + uscc_check_character(first17)


class World:
    """The actors of Art. 9 around one county of Urumqi."""

    def __init__(self, engine):
        self.engine = engine
        self.steel = add_organisation(engine, kind="enterprise", name="天山钢铁有限公司",
                                      credit_code=uscc(COUNTY, 1), division_code=COUNTY)
        self.chem = add_organisation(engine, kind="enterprise", name="天山化工有限公司",
                                     credit_code=uscc(COUNTY, 2), division_code=COUNTY, is_central=True)
        self.elsewhere = add_organisation(engine, kind="enterprise", name="沙依巴克建材有限公司",
                                          credit_code=uscc(OTHER_COUNTY, 3), division_code=OTHER_COUNTY)
        self.county_epb = add_user(engine, "tianshan-epb", ["local_epb"], jurisdiction_code=COUNTY)
        self.other_county_epb = add_user(engine, "saybag-epb", ["local_epb"], jurisdiction_code=OTHER_COUNTY)
        self.prefecture_epb = add_user(engine, "urumqi-epb", ["local_epb"], jurisdiction_code=PREFECTURE)
        self.regional_epb = add_user(engine, "region-epb", ["regional_epb"], jurisdiction_code="650000")
        self.county_drc = add_user(engine, "tianshan-drc", ["local_drc"], jurisdiction_code=COUNTY)
        self.county_etc = add_user(engine, "tianshan-etc", ["local_etc"], jurisdiction_code=COUNTY)

    # -- entries -----------------------------------------------------------------------------
    def exceeding_entry(self, org_id: int, measured: float = 180.0, limit: float = 100.0) -> dict:
        info = self.org(org_id)
        return {"enterprise_id": org_id, "enterprise_name": info["name"], "credit_code": info["credit_code"],
                "evidence": [{"basis": "over_standard", "pollutant": "二氧化硫", "medium": "air",
                              "measured_value": measured, "limit_value": limit, "unit": "mg/m³",
                              "standard_or_quota": "GB 13223-2011", "measured_on": "2025-01-15",
                              "monitoring_report": "WJC-2025-017"}]}

    def hazardous_entry(self, org_id: int) -> dict:
        info = self.org(org_id)
        return {"enterprise_id": org_id, "enterprise_name": info["name"], "credit_code": info["credit_code"],
                "substances": [
                    {"name": "镉", "cas": "7440-43-9", "catalogue": "hazchem_2015",
                     "hazards": ["highly_toxic", "carcinogenic"], "use": "raw_material", "annual_quantity_t": 12.5},
                    {"name": "含镉废物", "catalogue": "hw_2021", "hw_class": "HW26", "waste_code": "384-002-26",
                     "hazards": ["highly_toxic"], "use": "discharged", "annual_quantity_t": 3}]}

    def org(self, org_id: int) -> dict:
        from engine.models import Organisation
        with self.engine.db.read() as session:
            org = session.get(Organisation, org_id)
            return {"name": org.name, "credit_code": org.credit_code}

    def proposal(self, ground: str, entries: list[dict], batch: str = "2025-1") -> dict:
        return {"listing_ground": ground, "batch": batch, "publication_media": "乌鲁木齐晚报",
                "entries": entries, "proposal_action": "submit"}

    # -- driving the engine ------------------------------------------------------------------
    def start(self, jurisdiction_code: str = COUNTY, user=None) -> int:
        return self.engine.start("mandatory_listing", actor=user or self.county_epb,
                                 data={"jurisdiction_code": jurisdiction_code})

    def task(self, user, bpmn_id: str):
        rows = [r for r in self.engine.inbox(user, process_id="mandatory_listing").rows if r.bpmn_id == bpmn_id]
        assert rows, f"{user.username} has no open task {bpmn_id}"
        return rows[0]

    def act(self, user, bpmn_id: str, data: dict):
        return self.engine.complete(user, self.task(user, bpmn_id).id, data)

    def status(self, instance_id: int) -> str:
        row = self.engine.instance(instance_id)
        return f"{row.status}: {row.incident_error}" if row.status == "incident" else row.status

    def open_tasks(self, instance_id: int) -> list[str]:
        from engine.models import HumanTask
        with self.engine.db.read() as session:
            return sorted(session.scalars(select(HumanTask.bpmn_id).where(
                HumanTask.instance_id == instance_id, HumanTask.status == "open")))

    def records(self, kind: str) -> list:
        from engine.models import Record
        with self.engine.db.read() as session:
            return list(session.scalars(select(Record).where(Record.kind == kind).order_by(Record.id)))

    def undelivered(self, name: str = "enterprise_listed") -> list:
        from engine.models import UndeliveredMessage
        with self.engine.db.read() as session:
            return list(session.scalars(select(UndeliveredMessage).where(UndeliveredMessage.name == name)
                                        .order_by(UndeliveredMessage.id)))

    def instances(self, process_id: str) -> list:
        from engine.models import Instance
        with self.engine.db.read() as session:
            return list(session.scalars(select(Instance).where(Instance.process_id == process_id)
                                        .order_by(Instance.id)))

    # -- whole routes -------------------------------------------------------------------------
    def publish_exceeding(self, entries: list[dict], batch: str = "2025-1") -> int:
        instance_id = self.start()
        self.act(self.county_epb, "propose_list", self.proposal("exceeding", entries, batch))
        self.act(self.prefecture_epb, "review_by_prefecture", {"prefecture_decision": "forward"})
        self.act(self.regional_epb, "review_by_region", {"region_decision": "confirm"})
        return instance_id

    def publish_hazardous(self, entries: list[dict], batch: str = "2025-2") -> int:
        instance_id = self.start()
        self.act(self.county_epb, "propose_list", self.proposal("hazardous", entries, batch))
        self.act(self.county_drc, "drc_opinion", {"drc_decision": "agree"})
        self.act(self.county_etc, "etc_opinion", {"etc_decision": "agree"})
        return instance_id


@pytest.fixture
def world(engine, clock, monkeypatch):
    # Password hashing (scrypt) costs ~0.15 s a user and these tests never log in.
    monkeypatch.setattr("engine.accounts.hash_password", lambda password: "test-only:" + password)
    engine.deploy_paths([LISTING])
    return World(engine)


@pytest.fixture
def mandatory_audit(engine):
    """The colleague's receiving process."""
    engine.deploy_paths(MANDATORY_AUDIT)


@pytest.fixture
def receiver(engine, tmp_path):
    path = tmp_path / "listing_receiver.bpmn"
    path.write_text(RECEIVER_BPMN, encoding="utf-8")
    engine.deploy_paths([path])
    return path


# ---------------------------------------------------------------------------------------------
def test_art9_a_county_epb_starts_a_listing_proposal(world):
    assert "mandatory_listing" in world.engine.startable_processes(world.county_epb)
    assert "mandatory_listing" not in world.engine.startable_processes(world.county_drc)


def test_art9_county_proposal_reviewed_by_prefecture_confirmed_by_region_is_published(world):
    instance_id = world.start()
    world.act(world.county_epb, "propose_list",
              world.proposal("exceeding", [world.exceeding_entry(world.steel), world.exceeding_entry(world.chem)]))
    assert world.open_tasks(instance_id) == ["review_by_prefecture"]
    world.act(world.prefecture_epb, "review_by_prefecture", {"prefecture_decision": "forward"})
    assert world.open_tasks(instance_id) == ["review_by_region"]
    world.act(world.regional_epb, "review_by_region", {"region_decision": "confirm"})

    assert world.status(instance_id) == "completed"
    [published] = world.records("mandatory_list")
    assert published.public and not published.confidential
    assert published.data["batch"] == "2025-1"
    assert published.data["ground"] == "exceeding"
    assert published.data["published_on"] == "2025-03-03"
    assert [e["enterprise_id"] for e in published.data["entries"]] == [world.steel, world.chem]
    # the public list names the enterprises, not the monitoring evidence (Art. 20)
    assert "evidence" not in json.dumps(published.data, ensure_ascii=False)


def test_art9_a_prefecture_proposal_goes_straight_to_the_region(world):
    instance_id = world.start(PREFECTURE, user=world.prefecture_epb)
    world.act(world.prefecture_epb, "propose_list",
              world.proposal("exceeding", [world.exceeding_entry(world.steel), world.exceeding_entry(world.elsewhere)]))
    assert world.open_tasks(instance_id) == ["review_by_region"]


def test_art9_prefecture_returns_proposal_to_county_with_reason(world):
    instance_id = world.start()
    world.act(world.county_epb, "propose_list", world.proposal("exceeding", [world.exceeding_entry(world.steel)]))
    with pytest.raises(InvalidFormData) as refused:
        world.act(world.prefecture_epb, "review_by_prefecture", {"prefecture_decision": "return"})
    assert "prefecture_return_reason" in refused.value.errors

    world.act(world.prefecture_epb, "review_by_prefecture",
              {"prefecture_decision": "return", "prefecture_return_reason": "监测报告未加盖监测机构印章"})
    assert world.open_tasks(instance_id) == ["propose_list"]
    view = world.engine.task_view(world.county_epb, world.task(world.county_epb, "propose_list").id)
    assert view.data["returned"]["by"] == "prefecture_epb"
    assert view.data["returned"]["reasons"] == ["监测报告未加盖监测机构印章"]

    # revised and sent up again: the prefecture reviews it a second time
    world.act(world.county_epb, "propose_list", world.proposal("exceeding", [world.exceeding_entry(world.steel)]))
    assert world.open_tasks(instance_id) == ["review_by_prefecture"]


def test_art9_regional_epb_strikes_an_entry(world):
    instance_id = world.start()
    world.act(world.county_epb, "propose_list",
              world.proposal("exceeding", [world.exceeding_entry(world.steel), world.exceeding_entry(world.chem)]))
    world.act(world.prefecture_epb, "review_by_prefecture", {"prefecture_decision": "forward"})
    world.act(world.regional_epb, "review_by_region", {
        "region_decision": "confirm",
        "struck_entries": [{"enterprise_id": world.chem, "reason": "已完成限期治理并经验收达标"}]})

    [published] = world.records("mandatory_list")
    assert [e["enterprise_id"] for e in published.data["entries"]] == [world.steel]
    assert [n.enterprise_id for n in world.records("written_notice")] == [world.steel]
    assert world.status(instance_id) == "completed"


def test_art9_region_cannot_strike_an_enterprise_that_was_not_proposed(world):
    instance_id = world.start()
    world.act(world.county_epb, "propose_list", world.proposal("exceeding", [world.exceeding_entry(world.steel)]))
    world.act(world.prefecture_epb, "review_by_prefecture", {"prefecture_decision": "forward"})
    world.act(world.regional_epb, "review_by_region", {
        "region_decision": "confirm", "struck_entries": [{"enterprise_id": world.elsewhere, "reason": "误填"}]})
    assert world.open_tasks(instance_id) == ["review_by_region"]
    assert world.records("mandatory_list") == []


def test_art9_proposal_outside_the_county_jurisdiction_or_not_exceeding_is_sent_back(world):
    instance_id = world.start()
    world.act(world.county_epb, "propose_list", world.proposal("exceeding", [
        world.exceeding_entry(world.elsewhere), world.exceeding_entry(world.steel, measured=80, limit=100)]))
    assert world.open_tasks(instance_id) == ["propose_list"]
    problems = world.engine.instance_data(instance_id)["proposal_problems"]
    assert any("管辖范围" in p for p in problems)
    assert any("未超过限值" in p for p in problems)


def test_art9_entries_are_checked_against_the_form(world):
    world.start()
    entry = world.exceeding_entry(world.steel)
    entry["credit_code"] = entry["credit_code"][:-1]
    with pytest.raises(InvalidFormData):
        world.act(world.county_epb, "propose_list", world.proposal("exceeding", [entry]))
    hazardous = world.hazardous_entry(world.steel)
    hazardous["substances"][0]["cas"] = "7440-43-8"   # wrong check digit
    with pytest.raises(InvalidFormData):
        world.act(world.county_epb, "propose_list", world.proposal("hazardous", [hazardous]))
    without_evidence = world.hazardous_entry(world.steel)   # ground 1 needs the monitoring evidence
    with pytest.raises(InvalidFormData):
        world.act(world.county_epb, "propose_list", world.proposal("exceeding", [without_evidence]))


def test_art9_ground2_needs_epb_drc_and_etc_to_agree(world):
    instance_id = world.start()
    world.act(world.county_epb, "propose_list", world.proposal("hazardous", [world.hazardous_entry(world.chem)]))
    assert world.open_tasks(instance_id) == ["drc_opinion", "etc_opinion"]
    world.act(world.county_drc, "drc_opinion", {"drc_decision": "agree"})
    world.act(world.county_etc, "etc_opinion", {"etc_decision": "disagree", "etc_reason": "年用量数据与统计报表不一致"})

    assert world.open_tasks(instance_id) == ["propose_list"]
    assert world.records("mandatory_list") == []
    returned = world.engine.instance_data(instance_id)["returned"]
    assert returned["reasons"] == ["经贸部门：年用量数据与统计报表不一致"]

    world.act(world.county_epb, "propose_list", world.proposal("hazardous", [world.hazardous_entry(world.chem)]))
    world.act(world.county_drc, "drc_opinion", {"drc_decision": "agree"})
    world.act(world.county_etc, "etc_opinion", {"etc_decision": "agree"})
    [published] = world.records("mandatory_list")
    assert published.data["ground"] == "hazardous"
    assert world.status(instance_id) == "completed"


def test_art9_ground2_second_round_is_decided_on_the_new_answers_whichever_agency_answers_last(world):
    """Round 1: the DRC disagrees; round 2 both agree, the ETC answering last must not revive it."""
    instance_id = world.start()
    world.act(world.county_epb, "propose_list", world.proposal("hazardous", [world.hazardous_entry(world.chem)]))
    world.act(world.county_etc, "etc_opinion", {"etc_decision": "agree"})
    world.act(world.county_drc, "drc_opinion", {"drc_decision": "disagree", "drc_reason": "替代工艺尚未论证"})
    assert world.open_tasks(instance_id) == ["propose_list"]

    world.act(world.county_epb, "propose_list", world.proposal("hazardous", [world.hazardous_entry(world.chem)]))
    world.act(world.county_drc, "drc_opinion", {"drc_decision": "agree"})
    world.act(world.county_etc, "etc_opinion", {"etc_decision": "agree"})
    assert world.status(instance_id) == "completed"
    [published] = world.records("mandatory_list")
    assert published.data["ground"] == "hazardous"


def test_art9_each_listed_enterprise_gets_written_notice_copied_to_drc_and_etc(world):
    world.publish_exceeding([world.exceeding_entry(world.steel), world.exceeding_entry(world.chem)])
    notices = world.records("written_notice")
    assert [n.enterprise_id for n in notices] == [world.steel, world.chem]
    for notice in notices:
        assert not notice.confidential
        assert [c["role"] for c in notice.data["copy_to"]] == ["regional_drc", "regional_etc"]

    world.publish_hazardous([world.hazardous_entry(world.chem)])
    ground2 = world.records("written_notice")[-1]
    assert ground2.enterprise_id == world.chem
    assert ground2.data["copy_to"] == [
        {"role": "local_drc", "jurisdiction_code": COUNTY, "name": "同级发展改革部门"},
        {"role": "local_etc", "jurisdiction_code": COUNTY, "name": "同级经贸部门"}]


def test_art9_publication_throws_one_enterprise_listed_message_per_enterprise(world):
    world.publish_exceeding([world.exceeding_entry(world.steel), world.exceeding_entry(world.chem)])
    messages = world.undelivered()   # nothing deployed here catches them: kept, never dropped
    assert [m.payload for m in messages] == [
        {"enterprise_id": world.steel, "enterprise_name": "天山钢铁有限公司", "jurisdiction_code": COUNTY,
         "grounds": ["exceeding"], "published_on": "2025-03-03", "batch": "2025-1", "is_central": False},
        {"enterprise_id": world.chem, "enterprise_name": "天山化工有限公司", "jurisdiction_code": COUNTY,
         "grounds": ["exceeding"], "published_on": "2025-03-03", "batch": "2025-1", "is_central": True}]
    assert [m.correlations for m in messages] == [
        {"MainCorrelationKey": {"enterprise_id": world.steel}}, {"MainCorrelationKey": {"enterprise_id": world.chem}}]


def test_art9_publication_starts_one_receiving_instance_per_enterprise(world, receiver):
    world.publish_exceeding([world.exceeding_entry(world.steel), world.exceeding_entry(world.chem)])
    started = world.instances("listing_receiver")
    assert sorted(i.enterprise_id for i in started) == [world.steel, world.chem]
    assert all(i.status == "running" for i in started)
    assert world.undelivered() == []


def test_both_grounds_enterprise_is_routed_to_its_one_waiting_instance(world, receiver):
    world.publish_exceeding([world.exceeding_entry(world.steel), world.exceeding_entry(world.chem)])
    world.publish_hazardous([world.hazardous_entry(world.chem)])

    started = world.instances("listing_receiver")
    assert len(started) == 2   # the second listing of the chemical plant started nothing new
    by_enterprise = {i.enterprise_id: i for i in started}
    assert by_enterprise[world.chem].status == "completed"
    assert by_enterprise[world.steel].status == "running"
    second = world.engine.instance_data(by_enterprise[world.chem].id)["second_listing"]
    assert second["grounds"] == ["hazardous"] and second["batch"] == "2025-2"


def test_art9_publication_starts_one_mandatory_audit_per_enterprise(world, mandatory_audit):
    world.publish_exceeding([world.exceeding_entry(world.steel), world.exceeding_entry(world.chem)])
    audits = world.instances("mandatory_audit")
    assert sorted(a.enterprise_id for a in audits) == [world.steel, world.chem]
    assert all(a.status == "running" for a in audits), [world.status(a.id) for a in audits]
    assert world.undelivered() == []


def test_both_grounds_enterprise_gets_one_audit(world, mandatory_audit):
    world.publish_exceeding([world.exceeding_entry(world.steel), world.exceeding_entry(world.chem)])
    world.publish_hazardous([world.hazardous_entry(world.chem)])
    audits = world.instances("mandatory_audit")
    assert sorted(a.enterprise_id for a in audits) == [world.steel, world.chem]
    chem_audit = next(a for a in audits if a.enterprise_id == world.chem)
    received = [e for e in world.engine.history(chem_audit.id) if e.kind == "message_received"]
    assert [e.data["payload"]["grounds"] for e in received] == [["exceeding"], ["hazardous"]]
    assert world.undelivered() == []


def test_art9_a_user_of_another_county_cannot_act_on_the_proposal(world):
    world.start()
    row = world.task(world.county_epb, "propose_list")
    with pytest.raises(NotAllowed):
        world.engine.complete(world.other_county_epb, row.id,
                              world.proposal("exceeding", [world.exceeding_entry(world.steel)]))
    assert world.engine.inbox(world.other_county_epb).total == 0


def test_art9_a_withdrawn_proposal_publishes_nothing(world):
    instance_id = world.start()
    data = world.proposal("exceeding", [world.exceeding_entry(world.steel)])
    data.update(proposal_action="withdraw", withdraw_reason="企业已关停")
    world.act(world.county_epb, "propose_list", data)
    assert world.status(instance_id) == "completed"
    assert world.records("mandatory_list") == [] and world.undelivered() == []
