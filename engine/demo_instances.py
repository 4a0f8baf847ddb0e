"""The demo instances of `cleanaudit init --demo`: every demo inbox has work (issue 4, 5, 6).

Everything is driven through the engine facade as the users of engine/demo.py would drive it:
`Engine.start`, `Engine.complete` (tasks found in the user's own inbox, so the authorisation of every
step is checked), and timers fired by `Engine.tick`. No message is sent from outside: every
`enterprise_listed` comes from a published list and every `penalty_case_opened` from a missed
deadline. The history therefore verifies like any other.

Each story below is a generator: it yields the (Asia/Shanghai) time of its next step, and the step
that follows the `yield` runs with the engine's clock fixed at that time. `_run` interleaves the
stories in time order and, before each step, fires the timers that fell due meanwhile at their own
time (as the timer worker would), so deadlines, penalty cases and the history are consistent. A
last tick at the real time fires whatever is due now.

What the demo leaves (today is 2026-11-30):
- ground-1 list 2026-1 (Tianshan district, Art. 8(1), 9): proposed by epb-650102, forwarded by
  epb-650100, confirmed by epb-650000 on 2026-11-20: ent-a (COD, ammonia nitrogen over GB 8978-1996)
  has publish_emissions (due 2026-12-21) and commission_agency open; ent-d (NOx over GB 13271-2014)
  has published its emissions (public page), verified by epb-650102, and has commission_agency open;
- ground-2 list 2026-1 of Changji (Art. 8(2)): epb-652300 with drc-652300 and etc-652300 on
  2026-09-15: ent-b (arsenic trioxide, potassium dichromate) missed its disclosure (due 2026-10-15,
  OVERDUE): a penalty case (Art. 28) waits for epb-652300's investigation; ent-b commissioned
  agency-a, which has not yet accepted, so the two-month reminder fired (ent-b, epb-652300);
- lists waiting: Midong's ground-1 list at the regional EPB (epb-650000), a Tianshan supplementary
  list at the Urumqi EPB (epb-650100), a fresh draft of epb-650102, a second Changji ground-2 list
  at drc-652300 / etc-652300, an Urumqi ground-2 list at drc-650100 / etc-650100;
- ent-c's voluntary audits (Art. 12, 17, 18): the 2024 audit passed the expert review (public
  result) and its implementation follow-up continues (ent-c reports again); the 2026 audit is under
  expert review by expert-1, expert-2 and expert-3;
- the commendation of ent-c (Art. 22) awaits the regional DRC, ETC and EPB;
- agency-b's filing (Art. 15, 19) came back from the regional EPB for supplements;
- expert-5's enrolment in the regional pool came back for supplements; expert-4 has started one.
"""
from __future__ import annotations

import heapq
from datetime import datetime, timedelta, timezone
from typing import Iterator, Optional

from sqlalchemy import select

from . import clock
from .models import HumanTask, Instance, Organisation

SHANGHAI = timezone(timedelta(hours=8))
Story = Iterator[datetime]


def at(year: int, month: int, day: int, hour: int = 10, minute: int = 0) -> datetime:
    """A demo moment in Asia/Shanghai."""
    return datetime(year, month, day, hour, minute, tzinfo=SHANGHAI)


def start_demo_instances(engine, orgs: dict[str, int], users: dict) -> list[str]:
    """Drive the demo stories through the facade; returns summary lines for the console."""
    demo = _Demo(engine, orgs, users)
    _run(engine, [
        demo.expert_pool(),
        demo.voluntary_audit_2024(),
        demo.voluntary_audit_2026(),
        demo.changji_hazardous_list(),
        demo.changji_second_hazardous_list(),
        demo.tianshan_list(),
        demo.midong_list(),
        demo.tianshan_supplementary_list(),
        demo.tianshan_draft(),
        demo.urumqi_hazardous_list(),
        demo.commendation(),
        demo.agency_b_filing(),
        demo.expert_enrolments(),
    ])
    now = clock.now()
    _fire_timers(engine, now)
    engine.tick(now)
    return demo.summary(now)


# ---------------------------------------------------------------------------------------------- running
def _run(engine, stories: list[Story]) -> None:
    """Run the stories' steps in time order, firing due timers before each step."""
    queue = []
    for number, story in enumerate(stories):
        first = next(story, None)
        if first is not None:
            heapq.heappush(queue, (first, number, story))
    while queue:
        when, number, story = heapq.heappop(queue)
        _fire_timers(engine, when)
        with clock.use_clock(when):
            following = next(story, None)
        if following is None:
            continue
        if following <= when:
            raise ValueError(f"demo story {number} goes back in time: {following} after {when}")
        heapq.heappush(queue, (following, number, story))


def _fire_timers(engine, until: datetime) -> None:
    """Fire every timer due by `until` at its own time (plus the worker's minute)."""
    last = None
    for _ in range(1000):
        with engine.db.read() as session:
            due = session.scalar(select(Instance.next_timer_at).where(
                Instance.status == "running", Instance.next_timer_at.is_not(None))
                .order_by(Instance.next_timer_at).limit(1))
        if due is None:
            return
        if due.tzinfo is None:
            due = due.replace(tzinfo=timezone.utc)
        if due > until or due == last:
            return
        last = due
        engine.tick(min(due + timedelta(minutes=1), until))


# ---------------------------------------------------------------------------------------------- the demo
class _Demo:
    def __init__(self, engine, orgs: dict[str, int], users: dict):
        self.engine, self.orgs, self.users = engine, orgs, users
        with engine.db.read() as session:
            self.info = {key: {"id": org.id, "name": org.name, "credit_code": org.credit_code,
                               "division_code": org.division_code}
                         for key, org in ((key, session.get(Organisation, org_id)) for key, org_id in orgs.items())}

    # -- facade ---------------------------------------------------------------------------------
    def start(self, process_id: str, username: str, data: Optional[dict] = None) -> int:
        return self.engine.start(process_id, actor=self.users[username], data=data or {})

    def act(self, username: str, bpmn_id: str, data: Optional[dict] = None, instance_id: Optional[int] = None):
        """Complete the user's open task `bpmn_id` (of that instance) from their own inbox."""
        user = self.users[username]
        wanted = {bpmn_id, f"{bpmn_id} [child]"}
        rows = [row for row in self.engine.inbox(user, per_page=200).rows
                if row.bpmn_id in wanted and (instance_id is None or row.instance_id == instance_id)]
        if not rows:
            raise RuntimeError(f"demo: {username} has no open task {bpmn_id} (instance {instance_id}); "
                               f"open there: {self.open_tasks(instance_id)}")
        result = self.engine.complete(user, rows[0].id, {"confirmed": True} if data is None else data)
        if result.incident:
            raise RuntimeError(f"demo: {bpmn_id} of instance {rows[0].instance_id} failed: {result.incident}")
        return result

    def open_tasks(self, instance_id: Optional[int]) -> list[str]:
        query = select(HumanTask.bpmn_id).where(HumanTask.status == "open")
        if instance_id is not None:
            query = query.where(HumanTask.instance_id == instance_id)
        with self.engine.db.read() as session:
            return sorted(session.scalars(query))

    def audit_of(self, key: str) -> int:
        """The mandatory audit that the publication of a list started for that enterprise."""
        with self.engine.db.read() as session:
            found = session.scalar(select(Instance.id).where(
                Instance.process_id == "mandatory_audit", Instance.enterprise_id == self.orgs[key]))
        if found is None:
            raise RuntimeError(f"demo: no mandatory audit started for {key}")
        return found

    def entry(self, key: str, **details) -> dict:
        info = self.info[key]
        return {"enterprise_id": info["id"], "enterprise_name": info["name"], "credit_code": info["credit_code"],
                **details}

    def summary(self, now: datetime) -> list[str]:
        with self.engine.db.read() as session:
            instances = list(session.scalars(select(Instance)))
            tasks = list(session.scalars(select(HumanTask).where(HumanTask.status == "open")))
        states: dict[str, int] = {}
        for row in instances:
            states[row.status] = states.get(row.status, 0) + 1
        overdue = [t for t in tasks if t.due_at is not None and t.due_at < now]
        described = ", ".join(f"{count} {status}" for status, count in sorted(states.items()))
        return [f"demo instances: {len(instances)} ({described}); open tasks: {len(tasks)}, "
                f"overdue: {len(overdue)}"]

    # -- Art. 21: the expert pool ---------------------------------------------------------------
    def expert_pool(self) -> Story:
        yield at(2024, 1, 8, 9)
        from .experts import enrol_demo_pool
        with self.engine.db.transaction() as session:
            enrol_demo_pool(session, self.orgs, clock.now())

    # -- Art. 12, 13, 17, 18: ent-c's first voluntary audit, passed in 2024 ---------------------
    def voluntary_audit_2024(self) -> Story:
        yield at(2024, 3, 4)
        iid = self.start("voluntary_audit", "ent-c")
        self.act("ent-c", "submit_application", {
            "meets_discharge_standards": True,
            "audit_scope": "液态奶车间、CIP清洗系统和污水处理站",
            "objectives": "吨奶新鲜水耗由4.2吨降至3.0吨以下，吨奶综合能耗下降10%，化学需氧量年排放量削减20%。",
            "focus_candidates": [
                {"name": "CIP清洗系统", "reason": "清洗用水占全厂新鲜水用量的38%，且清洗废水是COD的主要来源"},
                {"name": "杀菌与蒸发浓缩工段", "reason": "蒸汽消耗占全厂能耗的45%"}],
            "planned_start": "2024-04-01", "planned_completion": "2024-11-30",
            "audit_mode": "agency", "agency_id": self.orgs["agency-a"], "submit_level": "prefecture",
            "contact_name": "阿依努尔·买买提", "contact_phone": "0991-3816620"}, iid)
        yield at(2024, 3, 11)
        self._local_opinions(iid, "2024-03-11", "同意该企业开展自愿性清洁生产审核，审核重点应突出节水。")
        yield at(2024, 3, 20)
        self._regional_approvals(iid, "2024-03-20")
        yield from self._stages(iid, DAIRY_2024, [at(2024, 4, 12), at(2024, 5, 24), at(2024, 7, 5), at(2024, 8, 16),
                                                   at(2024, 9, 20), at(2024, 10, 25)], at(2024, 10, 28), "2024")
        yield at(2024, 11, 4)
        self.act("ent-c", "submit_report_for_review", {
            "report_summary": "审核重点为液态奶车间CIP清洗系统，共提出方案12项，其中无低费方案8项已全部实施；"
                              "中高费方案4项，总投资1245万元，预计年经济效益420万元，年节水13.6万立方米。",
            "truthful": True}, iid)
        yield at(2024, 11, 12)
        self._draw_reviewers(iid, "2024-12-10")
        for when, expert, score in ((at(2024, 12, 2), "expert-1", 88), (at(2024, 12, 3), "expert-2", 85),
                                    (at(2024, 12, 5), "expert-3", 90)):
            yield when
            self.act(expert, "review_by_expert", {
                "conflict_declaration": "none", "score": score, "recommendation": "pass",
                "comments": "审核程序规范，水平衡和能量平衡数据可信；CIP清洗水回收和沼气利用方案技术成熟，效益测算合理。",
                "reviewed_on": when.date().isoformat()}, iid)
        yield at(2024, 12, 18)
        self.act("epb-650100", "decide_review", {
            "review_result": "pass", "consulted_drc_etc": True, "decided_on": "2024-12-18",
            "result_summary": "经专家组审定并会同市发展改革委、经贸委研究，该企业清洁生产审核报告符合要求，审定通过。"}, iid)
        for when, (username, bpmn_id) in zip((at(2024, 12, 20), at(2024, 12, 23), at(2024, 12, 23, 15)),
                                              (("epb-650000", "copy_regional_epb"), ("drc-650000", "copy_regional_drc"),
                                               ("etc-650000", "copy_regional_etc"))):
            yield when
            self.act(username, bpmn_id, None, iid)
        yield at(2025, 6, 30)
        self.act("ent-c", "report_implementation", {
            "progress": [
                {"option_name": "CIP末道清洗水回收用于预冲洗", "status": "completed", "actual_investment": 82,
                 "effect": "年节约新鲜水9.8万立方米"},
                {"option_name": "板式换热器余热回收", "status": "completed", "actual_investment": 158,
                 "effect": "年节约蒸汽6200吨"},
                {"option_name": "污水站厌氧沼气回收利用", "status": "completed", "actual_investment": 315,
                 "effect": "年回收沼气42万立方米，化学需氧量年削减86吨"},
                {"option_name": "MVR蒸发浓缩改造", "status": "in_progress", "actual_investment": 260,
                 "effect": "设备已订货，计划2026年投运"}],
            "reported_on": "2025-06-30"}, iid)
        yield at(2025, 7, 15)
        self.act("drc-650100", "supervise_implementation", {
            "supervision_result": "continue", "checked_on": "2025-07-15",
            "supervision_reason": "MVR蒸发浓缩改造尚未完成，请在投运后报告实际节汽效果和投资完成情况。"}, iid)

    # -- Art. 12, 13, 17: ent-c's second voluntary audit, under expert review -------------------
    def voluntary_audit_2026(self) -> Story:
        yield at(2026, 3, 2)
        iid = self.start("voluntary_audit", "ent-c")
        self.act("ent-c", "submit_application", {
            "meets_discharge_standards": True,
            "audit_scope": "奶粉车间喷雾干燥系统和锅炉房",
            "objectives": "吨奶粉综合能耗下降12%，锅炉房氮氧化物排放量削减20%，包装工段粉尘回收率提高到99%。",
            "focus_candidates": [
                {"name": "喷雾干燥系统", "reason": "蒸汽和电耗占奶粉车间能耗的70%，排风温度高"},
                {"name": "燃气锅炉房", "reason": "排烟温度150℃，未设冷凝余热回收"}],
            "planned_start": "2026-04-01", "planned_completion": "2026-10-31",
            "audit_mode": "agency", "agency_id": self.orgs["agency-a"], "submit_level": "prefecture",
            "contact_name": "阿依努尔·买买提", "contact_phone": "0991-3816620"}, iid)
        yield at(2026, 3, 9)
        self._local_opinions(iid, "2026-03-09", "支持企业在第一轮审核基础上对奶粉车间和锅炉房开展第二轮审核。")
        yield at(2026, 3, 18)
        self._regional_approvals(iid, "2026-03-18")
        yield from self._stages(iid, DAIRY_2026, [at(2026, 4, 10), at(2026, 5, 15), at(2026, 6, 26), at(2026, 7, 31),
                                                   at(2026, 8, 28), at(2026, 9, 25)], at(2026, 9, 29), "2026")
        yield at(2026, 10, 12)
        self.act("ent-c", "submit_report_for_review", {
            "report_summary": "审核重点为喷雾干燥系统和锅炉房，共提出方案10项，无低费方案6项已实施；中高费方案4项，"
                              "总投资860万元，预计年节约标准煤1150吨、年经济效益265万元。",
            "truthful": True}, iid)
        yield at(2026, 11, 16)
        self._draw_reviewers(iid, "2026-12-15")

    def _local_opinions(self, iid: int, on: str, comments: str) -> None:
        for key in ("drc", "etc", "epb"):
            self.act(f"{key}-650100", f"local_{key}_opinion", {
                f"{key}_opinion": "support", f"{key}_comments": comments, f"{key}_opinion_date": on}, iid)

    def _regional_approvals(self, iid: int, on: str) -> None:
        for key in ("drc", "etc", "epb"):
            self.act(f"{key}-650000", f"regional_{key}_approval", {
                f"regional_{key}_decision": "approve", f"regional_{key}_decided_on": on}, iid)

    def _stages(self, iid: int, stages: dict, times: list, cosign_at: datetime, year: str) -> Story:
        """The six stages of Art. 13 as ent-c, then agency-a co-signs the report (Art. 19)."""
        for when, (bpmn_id, data) in zip(times, stages.items()):
            yield when
            self.act("ent-c", bpmn_id, data, iid)
        yield cosign_at
        self.act("agency-a", "cosign_report", {"cosign_decision": "confirm", "signing_auditor": "李明",
                                               "certificate_no": f"QJSH-{year}-0117"}, iid)

    def _draw_reviewers(self, iid: int, review_due: str) -> None:
        """Art. 17: the regional DRC draws three reviewers from the regional pool.

        The draw is the production one (random, without conflicts of interest); the demo pool makes
        its outcome certain: expert-4 works for agency-a, the agency ent-c commissioned, and expert-5
        sits in Changji's pool, so the three drawn are expert-1, expert-2 and expert-3.
        """
        self.act("drc-650000", "organise_expert_review", {
            "expert_count": 3, "pool_level": "region", "review_due": review_due}, iid)
        drawn = sorted(self.engine.instance_data(iid).get("review_panel") or [])
        if drawn != ["expert-1", "expert-2", "expert-3"]:
            raise RuntimeError(f"demo: the expert draw gave {drawn}; check engine.experts.DEMO_POOL")

    # -- Art. 8(2), 9, 10, 11, 28: Changji's ground-2 list; ent-b misses its disclosure ------------
    def changji_hazardous_list(self) -> Story:
        yield at(2026, 9, 1)
        iid = self.start("mandatory_listing", "epb-652300")
        self.act("epb-652300", "propose_list", {
            "listing_ground": "hazardous", "batch": "2026-1", "publication_media": "昌吉日报",
            "proposal_action": "submit",
            "entries": [self.entry("ent-b", substances=[
                {"name": "三氧化二砷（玻璃澄清剂）", "cas": "1327-53-3", "catalogue": "hazchem_2015",
                 "hazards": ["highly_toxic", "carcinogenic"], "use": "raw_material", "annual_quantity_t": 2.4},
                {"name": "重铬酸钾（玻璃着色剂）", "cas": "7778-50-9", "catalogue": "hazchem_2015",
                 "hazards": ["carcinogenic", "corrosive"], "use": "raw_material", "annual_quantity_t": 0.8}],
                entry_remarks="玻璃制品生产使用砷、六价铬化合物，依第八条第二项列入。")]}, iid)
        yield at(2026, 9, 15, 10)
        self.act("drc-652300", "drc_opinion", {"drc_decision": "agree"}, iid)
        yield at(2026, 9, 15, 15)
        self.act("etc-652300", "etc_opinion", {"etc_decision": "agree"}, iid)   # published: audit starts
        # Art. 10: nothing published by 2026-10-15 -> the timer opens the penalty case (Art. 28).
        yield at(2026, 11, 5)
        self.act("ent-b", "commission_agency", {"audit_mode": "agency", "agency_id": self.orgs["agency-a"],
                                                 "contract_no": "QYZX-2026-031", "contract_date": "2026-11-04"},
                 self.audit_of("ent-b"))
        # agency-a has not accepted by 2026-11-16: the two-month reminder fires (Art. 11).

    def changji_second_hazardous_list(self) -> Story:
        yield at(2026, 11, 18)
        iid = self.start("mandatory_listing", "epb-652300")
        self.act("epb-652300", "propose_list", {
            "listing_ground": "hazardous", "batch": "2026-2", "publication_media": "昌吉日报",
            "proposal_action": "submit",
            "entries": [self.entry("changji-plating", substances=[
                {"name": "三氧化铬（铬酐）", "cas": "1333-82-0", "catalogue": "hazchem_2015",
                 "hazards": ["carcinogenic", "corrosive"], "use": "raw_material", "annual_quantity_t": 6.5},
                {"name": "氰化钠", "cas": "143-33-9", "catalogue": "hazchem_2015", "hazards": ["highly_toxic"],
                 "use": "raw_material", "annual_quantity_t": 1.2},
                {"name": "电镀废水处理污泥", "catalogue": "hw_2021", "hw_class": "HW17", "waste_code": "336-063-17",
                 "hazards": ["highly_toxic"], "use": "discharged", "annual_quantity_t": 35}])]}, iid)

    # -- Art. 8(1), 9, 10: Tianshan's ground-1 list, published 2026-11-20 ------------------------
    def tianshan_list(self) -> Story:
        yield at(2026, 11, 9)
        iid = self.start("mandatory_listing", "epb-650102")
        self.act("epb-650102", "propose_list", {
            "listing_ground": "exceeding", "batch": "2026-1", "publication_media": "乌鲁木齐晚报",
            "proposal_action": "submit",
            "entries": [
                self.entry("ent-a", evidence=[
                    {"basis": "over_standard", "pollutant": "化学需氧量", "medium": "water", "measured_value": 168,
                     "limit_value": 100, "unit": "mg/L", "standard_or_quota": "GB 8978-1996（一级标准）",
                     "measured_on": "2026-08-18", "monitoring_report": "乌环监字〔2026〕第0415号"},
                    {"basis": "over_standard", "pollutant": "氨氮", "medium": "water", "measured_value": 28.6,
                     "limit_value": 15, "unit": "mg/L", "standard_or_quota": "GB 8978-1996（一级标准）",
                     "measured_on": "2026-08-18", "monitoring_report": "乌环监字〔2026〕第0415号"}]),
                self.entry("ent-d", evidence=[
                    {"basis": "over_standard", "pollutant": "氮氧化物", "medium": "air", "measured_value": 286,
                     "limit_value": 200, "unit": "mg/m³",
                     "standard_or_quota": "GB 13271-2014（大气污染物特别排放限值）",
                     "measured_on": "2026-03-12", "monitoring_report": "乌环监字〔2026〕第0132号"}])]}, iid)
        yield at(2026, 11, 13)
        self.act("epb-650100", "review_by_prefecture", {
            "prefecture_decision": "forward", "prefecture_remarks": "监测数据经复核属实，同意上报。"}, iid)
        yield at(2026, 11, 20)
        self.act("epb-650000", "review_by_region", {"region_decision": "confirm"}, iid)   # published today
        # ent-d publishes its emissions within the month (Art. 10); epb-650102 verifies them.
        yield at(2026, 11, 26)
        self.act("ent-d", "publish_emissions", {
            "enterprise_name": self.info["ent-d"]["name"], "uscc": self.info["ent-d"]["credit_code"],
            "legal_representative": "赵志刚", "address": "乌鲁木齐市天山区新华南路210号", "division_code": "650102",
            "media": "乌鲁木齐晚报", "disclosure_date": "2026-11-25", "reporting_year": 2025,
            "pollutants": [
                {"name": "氮氧化物", "medium": "air", "discharge_mode": "organised_continuous", "concentration": 248,
                 "unit": "mg/m³", "standard_limit": 200, "annual_total_t": 186.4, "quota_t": 160,
                 "exceeds": True, "over_quota": True},
                {"name": "二氧化硫", "medium": "air", "discharge_mode": "organised_continuous", "concentration": 142,
                 "unit": "mg/m³", "standard_limit": 200, "annual_total_t": 98.2, "quota_t": 120,
                 "exceeds": False, "over_quota": False},
                {"name": "颗粒物", "medium": "air", "discharge_mode": "organised_continuous", "concentration": 24,
                 "unit": "mg/m³", "standard_limit": 30, "annual_total_t": 14.6, "exceeds": False,
                 "over_quota": False}]}, self.audit_of("ent-d"))
        yield at(2026, 11, 27)
        self.act("epb-650102", "verify_disclosure", {
            "verification": "accept", "checked_on": "2026-11-27",
            "findings": "与在线监测数据和排污许可执行报告一致。"}, self.audit_of("ent-d"))

    def midong_list(self) -> Story:
        """Urumqi's own ground-1 proposal (Midong district) goes straight to the regional EPB."""
        yield at(2026, 11, 24)
        iid = self.start("mandatory_listing", "epb-650100")
        self.act("epb-650100", "propose_list", {
            "listing_ground": "exceeding", "batch": "2026-2", "publication_media": "乌鲁木齐晚报",
            "proposal_action": "submit",
            "entries": [self.entry("midong-chemical", evidence=[
                {"basis": "over_standard", "pollutant": "氨氮", "medium": "water", "measured_value": 32.5,
                 "limit_value": 15, "unit": "mg/L", "standard_or_quota": "GB 8978-1996（一级标准）",
                 "measured_on": "2026-09-22", "monitoring_report": "乌环监字〔2026〕第0688号"},
                {"basis": "over_quota", "pollutant": "化学需氧量", "medium": "water", "measured_value": 86.2,
                 "limit_value": 60, "unit": "t/a", "standard_or_quota": "乌环总量〔2025〕12号",
                 "measured_on": "2026-10-10"}])]}, iid)

    def tianshan_supplementary_list(self) -> Story:
        """A supplementary Tianshan proposal waits for the Urumqi EPB (Art. 9 逐级上报)."""
        yield at(2026, 11, 26, 15)
        iid = self.start("mandatory_listing", "epb-650102")
        self.act("epb-650102", "propose_list", {
            "listing_ground": "exceeding", "batch": "2026-3", "publication_media": "乌鲁木齐晚报",
            "proposal_action": "submit",
            "entries": [self.entry("tianshan-brewery", evidence=[
                {"basis": "over_standard", "pollutant": "化学需氧量", "medium": "water", "measured_value": 142,
                 "limit_value": 80, "unit": "mg/L", "standard_or_quota": "GB 19821-2005",
                 "measured_on": "2026-10-28", "monitoring_report": "乌环监字〔2026〕第0751号"}])]}, iid)

    def tianshan_draft(self) -> Story:
        yield at(2026, 11, 28, 9)
        self.start("mandatory_listing", "epb-650102")

    def urumqi_hazardous_list(self) -> Story:
        """Urumqi's ground-2 proposal waits for the DRC and ETC of the same level (Art. 9 para. 2)."""
        yield at(2026, 11, 23)
        iid = self.start("mandatory_listing", "epb-650100")
        self.act("epb-650100", "propose_list", {
            "listing_ground": "hazardous", "batch": "2026-1", "publication_media": "乌鲁木齐晚报",
            "proposal_action": "submit",
            "entries": [self.entry("toutunhe-battery", substances=[
                {"name": "硫酸", "cas": "7664-93-9", "catalogue": "hazchem_2015", "hazards": ["corrosive"],
                 "use": "both", "annual_quantity_t": 420},
                {"name": "含铅废渣及废水处理污泥", "catalogue": "hw_2021", "hw_class": "HW31",
                 "waste_code": "384-004-31", "hazards": ["other"], "use": "discharged",
                 "annual_quantity_t": 58}])]}, iid)

    # -- Art. 22-25: the commendation of ent-c ----------------------------------------------------
    def commendation(self) -> Story:
        yield at(2026, 11, 10)
        iid = self.start("commendation", "drc-650100", {"jurisdiction_code": "650100"})
        self.act("drc-650100", "nominate_enterprise", {
            "enterprise_id": self.orgs["ent-c"],
            "achievements": "2024年自愿性清洁生产审核经专家审定通过。实施CIP清洗水回收、板式换热器余热回收和污水站沼气利用"
                            "等方案后，吨奶新鲜水耗由4.2吨降至3.1吨，年节约新鲜水13.6万立方米、标准煤1860吨，"
                            "化学需氧量年削减86吨。",
            "energy_saved_tce": 1860, "water_saved_m3": 136000, "economic_benefit": 420,
            "pollutant_reductions": [{"pollutant": "化学需氧量", "reduction_t": 86}], "is_sme": False,
            "options": [
                {"name": "CIP末道清洗水回收用于预冲洗", "category": "water_saving", "investment": 82,
                 "implemented": True, "apply_for_support": True},
                {"name": "板式换热器余热回收", "category": "energy_saving", "investment": 158, "implemented": True,
                 "apply_for_support": True},
                {"name": "污水站厌氧沼气回收利用", "category": "comprehensive_utilisation", "investment": 315,
                 "implemented": True, "apply_for_support": True},
                {"name": "MVR蒸发浓缩改造", "category": "energy_saving", "investment": 690, "implemented": False,
                 "apply_for_support": True}],
            "nominated_on": "2026-11-10"}, iid)

    # -- Art. 15, 19: agency-b's filing comes back for supplements --------------------------------
    def agency_b_filing(self) -> Story:
        yield at(2026, 11, 2)
        iid = self.start("agency_filing", "agency-b")
        self.act("agency-b", "apply_for_filing", {
            "agency_name": self.info["agency-b"]["name"], "credit_code": self.info["agency-b"]["credit_code"],
            "legal_person_form": "enterprise_legal_person", "independent_legal_person": True,
            "legal_representative": "张丽", "address": "乌鲁木齐市水磨沟区南湖东路45号", "division_code": "650105",
            "technical_staff": [
                {"name": "王建新", "qualification": "高级工程师（清洁生产审核师）", "certificate_number": "QSH-2018-0215",
                 "industries": ["C26", "C28"]},
                {"name": "古丽米拉·吐尔洪", "qualification": "工程师（清洁生产审核师）", "certificate_number": "QSH-2020-0342",
                 "industries": ["C13", "C14"]},
                {"name": "李航", "qualification": "工程师", "certificate_number": "QSH-2022-0087",
                 "industries": ["D44", "C30"]}],
            "service_rules": "实行项目负责人回避制度、报告三级审核制度、客户资料保密制度和收费标准公示制度，"
                             "保证审核服务公平、公正、高效。"}, iid)
        yield at(2026, 11, 9)
        self.act("drc-650000", "review_filing_drc", {"drc_filing_decision": "approve",
                                                     "drc_reviewed_on": "2026-11-09"}, iid)
        yield at(2026, 11, 10)
        self.act("etc-650000", "review_filing_etc", {"etc_filing_decision": "approve",
                                                     "etc_reviewed_on": "2026-11-10"}, iid)
        yield at(2026, 11, 12)
        self.act("epb-650000", "review_filing_epb", {
            "epb_filing_decision": "supplement", "epb_reviewed_on": "2026-11-12",
            "epb_unmet_conditions": ["technical_staff"],
            "epb_supplement_reason": "请补充三名技术人员在本机构缴纳社会保险的证明及李航的清洁生产审核培训合格证书，"
                                     "以证明其为本机构专职技术人员（第十五条第（二）项）。"}, iid)

    # -- Art. 21: expert enrolments ---------------------------------------------------------------
    def expert_enrolments(self) -> Story:
        yield at(2026, 10, 20)
        iid = self.start("expert_enrolment", "expert-5")
        self.act("expert-5", "apply_for_enrolment", {
            "name": "李卫东", "title": "副教授", "organisation_name": "昌吉学院", "specialities": ["C30", "D44"],
            "pool_level": "region", "experience_years": 12,
            "expertise_summary": "长期从事建材和火电行业节能减排研究，参加昌吉州清洁生产审核报告评审20余项。",
            "recusal_commitment": True}, iid)
        yield at(2026, 10, 28)
        self.act("drc-650000", "approve_regional_enrolment", {
            "enrolment_decision": "supplement", "decided_on": "2026-10-28",
            "enrolment_reason": "请补充近三年参加清洁生产审核报告评审的项目清单和一份评审意见样本。"}, iid)
        yield at(2026, 11, 25)
        self.start("expert_enrolment", "expert-4")   # a draft: expert-4 has not submitted it yet


# ---------------------------------------------------------------------------------------------- stage data
def _dairy_stages(*, leader_task: str, survey: str, focus: str, focus_reason: str, targets: list,
                  no_low_cost: list, balances: list, causes: list, options: list, assessments: list,
                  report: dict, work_plan: list) -> dict:
    return {
        "prepare_audit": {
            "leadership_commitment": True, "team_leader": "刘海涛",
            "team": [
                {"name": "刘海涛", "post": "生产副总经理", "title": "高级工程师", "speciality": "食品工程", "role": "leader"},
                {"name": "阿依努尔·买买提", "post": "质量环保部部长", "title": "工程师", "speciality": "环境工程",
                 "role": "deputy"},
                {"name": "马俊", "post": "动力设备部部长", "title": "工程师", "speciality": "热能动力",
                 "role": "member"},
                {"name": "王晓燕", "post": leader_task, "title": "助理工程师", "speciality": "乳品工艺", "role": "member"}],
            "work_plan": work_plan, "training_sessions": 3, "trained_staff": 126},
        "pre_audit": {"survey_summary": survey, "audit_focus": focus, "focus_reason": focus_reason,
                      "targets": targets, "no_low_cost_options": no_low_cost},
        "audit_balances": {"balances": balances, "waste_causes": causes},
        "generate_options": {"options": options, "screening_method": "权重总和计分排序法"},
        "assess_feasibility": {"discount_rate_pct": 8, "assessments": assessments},
        "write_report": report,
    }


DAIRY_2024 = _dairy_stages(
    leader_task="液态奶车间主任",
    work_plan=[
        {"phase": "preparation", "task": "成立审核小组，开展全员培训", "start_date": "2024-04-01",
         "end_date": "2024-04-15", "department": "质量环保部", "output": "审核工作计划"},
        {"phase": "pre_audit", "task": "现状调研，确定审核重点", "start_date": "2024-04-16", "end_date": "2024-05-31",
         "department": "审核小组", "output": "预审核报告"},
        {"phase": "audit", "task": "水平衡、能量平衡测试", "start_date": "2024-06-01", "end_date": "2024-07-15",
         "department": "动力设备部", "output": "平衡测试报告"},
        {"phase": "report", "task": "编写审核报告", "start_date": "2024-10-01", "end_date": "2024-10-31",
         "department": "审核小组", "output": "清洁生产审核报告"}],
    survey="全厂年处理鲜奶16万吨。液态奶车间吨奶新鲜水耗4.2吨、综合能耗52千克标准煤，高于《清洁生产标准 乳制品制造业》"
           "二级水平；CIP清洗用水占全厂新鲜水用量的38%。",
    focus="液态奶车间CIP清洗系统", focus_reason="权重总和计分排序第一：用水量大、废水COD负荷高、节水潜力明显。",
    targets=[{"indicator": "吨奶新鲜水耗", "unit": "t/t", "baseline": 4.2, "near_term": 3.5, "long_term": 3.0},
             {"indicator": "吨奶综合能耗", "unit": "kgce/t", "baseline": 52, "near_term": 48, "long_term": 45}],
    no_low_cost=[
        {"name": "CIP清洗程序优化（缩短预冲洗时间）", "description": "按管路长度重新设定预冲洗时间",
         "investment": 0.5, "status": "implemented"},
        {"name": "蒸汽管道和阀门保温修复", "description": "修复破损保温层约320米", "investment": 6.8,
         "status": "implemented"}],
    balances=[
        {"kind": "water", "item": "新鲜水", "unit": "m³/a", "inputs": 672000, "outputs": 658500, "closure_pct": 98.0},
        {"kind": "energy", "item": "蒸汽", "unit": "t/a", "inputs": 98500, "outputs": 95300, "closure_pct": 96.8},
        {"kind": "pollutant", "item": "化学需氧量", "unit": "t/a", "inputs": 412, "outputs": 398, "closure_pct": 96.6}],
    causes=[{"aspect": "process_control", "description": "CIP末道清洗水直接排放，未分段回收。"},
            {"aspect": "equipment", "description": "杀菌工段板式换热器热回收段面积不足。"},
            {"aspect": "waste", "description": "污水站厌氧段产生的沼气直接火炬燃烧。"}],
    options=[
        {"name": "CIP末道清洗水回收用于预冲洗", "category": "medium_high_cost", "aspect": "process_control",
         "description": "增设回收罐和自动切换阀", "screened_in": True},
        {"name": "板式换热器余热回收", "category": "medium_high_cost", "aspect": "equipment",
         "description": "增加热回收段面积，提高回收率至90%", "screened_in": True},
        {"name": "污水站厌氧沼气回收利用", "category": "medium_high_cost", "aspect": "waste",
         "description": "沼气净化后作锅炉燃料", "screened_in": True},
        {"name": "MVR蒸发浓缩改造", "category": "medium_high_cost", "aspect": "technology",
         "description": "以机械蒸汽再压缩替代三效蒸发", "screened_in": True},
        {"name": "更换LED照明", "category": "no_low_cost", "aspect": "equipment", "description": "车间照明改造",
         "screened_in": False}],
    assessments=[
        {"option_name": "CIP末道清洗水回收用于预冲洗", "technical_feasible": True, "investment": 85,
         "annual_benefit": 62, "payback_years": 1.4, "npv": 310.5, "environmental_effect": "年节约新鲜水9.8万立方米",
         "chosen": True},
        {"option_name": "板式换热器余热回收", "technical_feasible": True, "investment": 160, "annual_benefit": 96,
         "payback_years": 1.7, "npv": 450.2, "environmental_effect": "年节约蒸汽6200吨", "chosen": True},
        {"option_name": "污水站厌氧沼气回收利用", "technical_feasible": True, "investment": 320, "annual_benefit": 108,
         "payback_years": 3.0, "npv": 405.8, "environmental_effect": "化学需氧量年削减86吨", "chosen": True},
        {"option_name": "MVR蒸发浓缩改造", "technical_feasible": True, "investment": 680, "annual_benefit": 154,
         "payback_years": 4.4, "npv": 352.6, "environmental_effect": "年节约标准煤1100吨", "chosen": True}],
    report={"report_title": "新疆雪莲乳业股份有限公司清洁生产审核报告（2024年）", "report_date": "2024-10-25",
            "enterprise_basics": "公司位于乌鲁木齐市新市区，年处理鲜奶16万吨，主要产品为液态奶和奶粉。",
            "audit_process_and_results": "审核重点为液态奶车间CIP清洗系统，完成水平衡、蒸汽平衡和COD平衡测试。",
            "options_summary_and_benefits": "共提出方案12项，无低费方案8项已实施；中高费方案4项，总投资1245万元，"
                                            "预计年经济效益420万元。",
            "implementation_plan": [
                {"option_name": "CIP末道清洗水回收用于预冲洗", "start_date": "2025-01-01", "end_date": "2025-04-30",
                 "department": "液态奶车间", "investment": 85},
                {"option_name": "板式换热器余热回收", "start_date": "2025-01-01", "end_date": "2025-05-31",
                 "department": "动力设备部", "investment": 160},
                {"option_name": "污水站厌氧沼气回收利用", "start_date": "2025-02-01", "end_date": "2025-06-30",
                 "department": "质量环保部", "investment": 320},
                {"option_name": "MVR蒸发浓缩改造", "start_date": "2025-06-01", "end_date": "2026-06-30",
                 "department": "动力设备部", "investment": 680}]})

DAIRY_2026 = _dairy_stages(
    leader_task="奶粉车间主任",
    work_plan=[
        {"phase": "preparation", "task": "调整审核小组，开展第二轮审核培训", "start_date": "2026-04-01",
         "end_date": "2026-04-10", "department": "质量环保部", "output": "审核工作计划"},
        {"phase": "audit", "task": "喷雾干燥系统和锅炉房能量平衡测试", "start_date": "2026-05-16",
         "end_date": "2026-06-25", "department": "动力设备部", "output": "平衡测试报告"},
        {"phase": "report", "task": "编写审核报告", "start_date": "2026-09-01", "end_date": "2026-09-25",
         "department": "审核小组", "output": "清洁生产审核报告"}],
    survey="奶粉车间年产奶粉1.8万吨，吨奶粉综合能耗410千克标准煤；喷雾干燥塔排风温度85℃，燃气锅炉排烟温度150℃，"
           "均无余热回收。",
    focus="喷雾干燥系统和燃气锅炉房", focus_reason="两项合计占全厂能耗的58%，余热回收潜力大。",
    targets=[{"indicator": "吨奶粉综合能耗", "unit": "kgce/t", "baseline": 410, "near_term": 380, "long_term": 360},
             {"indicator": "锅炉氮氧化物排放浓度", "unit": "mg/m³", "baseline": 48, "near_term": 40, "long_term": 30}],
    no_low_cost=[
        {"name": "喷雾干燥塔进风温度优化", "description": "按产品配方分档设定进风温度", "investment": 0,
         "status": "implemented"},
        {"name": "压缩空气管网查漏", "description": "每季度超声波检漏", "investment": 1.2, "status": "implemented"}],
    balances=[
        {"kind": "energy", "item": "天然气", "unit": "万m³/a", "inputs": 1450, "outputs": 1408, "closure_pct": 97.1},
        {"kind": "energy", "item": "电", "unit": "万kWh/a", "inputs": 2860, "outputs": 2795, "closure_pct": 97.7},
        {"kind": "material", "item": "奶粉", "unit": "t/a", "inputs": 18300, "outputs": 18120, "closure_pct": 99.0}],
    causes=[{"aspect": "equipment", "description": "干燥塔排风和锅炉烟气余热未回收。"},
            {"aspect": "equipment", "description": "空压机定频运行，加卸载频繁。"},
            {"aspect": "management", "description": "包装工段粉尘回收未计量。"}],
    options=[
        {"name": "喷雾干燥塔排风余热回收", "category": "medium_high_cost", "aspect": "equipment",
         "description": "排风热管换热器预热进风", "screened_in": True},
        {"name": "锅炉烟气冷凝余热回收", "category": "medium_high_cost", "aspect": "equipment",
         "description": "加装烟气冷凝器，回收热量预热锅炉补水", "screened_in": True},
        {"name": "空压机变频改造", "category": "medium_high_cost", "aspect": "equipment",
         "description": "两台空压机改为变频控制", "screened_in": True},
        {"name": "包装工段脉冲布袋除尘回收", "category": "medium_high_cost", "aspect": "waste",
         "description": "回收粉尘回用于饲料级产品", "screened_in": True}],
    assessments=[
        {"option_name": "喷雾干燥塔排风余热回收", "technical_feasible": True, "investment": 420, "annual_benefit": 128,
         "payback_years": 3.3, "npv": 438.0, "environmental_effect": "年节约天然气92万立方米", "chosen": True},
        {"option_name": "锅炉烟气冷凝余热回收", "technical_feasible": True, "investment": 210, "annual_benefit": 74,
         "payback_years": 2.8, "npv": 286.4, "environmental_effect": "年节约天然气48万立方米", "chosen": True},
        {"option_name": "空压机变频改造", "technical_feasible": True, "investment": 95, "annual_benefit": 38,
         "payback_years": 2.5, "npv": 160.2, "environmental_effect": "年节电112万千瓦时", "chosen": True},
        {"option_name": "包装工段脉冲布袋除尘回收", "technical_feasible": True, "investment": 135, "annual_benefit": 25,
         "payback_years": 5.4, "npv": 32.7, "environmental_effect": "年回收奶粉约60吨", "chosen": True}],
    report={"report_title": "新疆雪莲乳业股份有限公司清洁生产审核报告（2026年）", "report_date": "2026-09-25",
            "enterprise_basics": "公司位于乌鲁木齐市新市区，年处理鲜奶16万吨，奶粉车间年产奶粉1.8万吨。",
            "audit_process_and_results": "审核重点为喷雾干燥系统和燃气锅炉房，完成能量平衡和物料平衡测试。",
            "options_summary_and_benefits": "共提出方案10项，无低费方案6项已实施；中高费方案4项，总投资860万元，"
                                            "预计年节约标准煤1150吨、年经济效益265万元。",
            "implementation_plan": [
                {"option_name": "喷雾干燥塔排风余热回收", "start_date": "2027-03-01", "end_date": "2027-08-31",
                 "department": "奶粉车间", "investment": 420},
                {"option_name": "锅炉烟气冷凝余热回收", "start_date": "2027-04-01", "end_date": "2027-09-30",
                 "department": "动力设备部", "investment": 210},
                {"option_name": "空压机变频改造", "start_date": "2027-03-01", "end_date": "2027-05-31",
                 "department": "动力设备部", "investment": 95},
                {"option_name": "包装工段脉冲布袋除尘回收", "start_date": "2027-05-01", "end_date": "2027-10-31",
                 "department": "奶粉车间", "investment": 135}]})
