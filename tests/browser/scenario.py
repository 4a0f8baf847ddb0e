"""What the acceptance scenario of issue 6 needs to know about the site it runs against.

DEMO drives `cleanaudit init --demo` (engine/demo.py, engine/demo_instances.py): ent-a's emission
disclosure of the mandatory audit (processes/mandatory_audit.bpmn: publish_emissions, then the
script that publishes the record, then epb-650102's verify_disclosure). FIXTURE drives the small
web fixture (tests/webui/data, process `web_fixture`). Tasks are chosen by process and BPMN id.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Scenario:
    name: str
    screenshot_prefix: str = ""
    enterprise: str = "ent-a"
    epb: str = "epb-650102"
    enterprise_name: str = "乌鲁木齐甲化工有限公司"
    process_id: str = "web_fixture"
    disclosure_task: str = "publish_emissions"          # BPMN id of the enterprise's task
    review_task: str = "verify_emissions"               # BPMN id of the EPB's review
    decision_field: str = "decision"
    return_value: str = "return"
    accept_value: str = "accept"
    reason_field: str = "return_reason"
    review_values: dict = field(default_factory=dict)   # other fields the review form asks for
    english_form_title: str = "Publish main pollutant emissions"
    acknowledgement_task: str = ""                      # the enterprise's last task, if the process has one
    public_path: str = "/public/emissions"
    # values typed into the disclosure form when the page has such a field
    scalars: dict = field(default_factory=dict)
    rows_field: str = "pollutants"
    rows: list = field(default_factory=list)
    prepare: Callable = lambda site: None


POLLUTANT_ROWS = [
    {"name": "化学需氧量", "medium": "water", "discharge_mode": "间接排放", "concentration": "85.5",
     "unit": "mg/L", "annual_total_t": "12.4", "exceeds": False},
    {"name": "二氧化硫", "medium": "air", "discharge_mode": "有组织连续排放", "concentration": "320",
     "unit": "mg/m³", "annual_total_t": "48", "exceeds": True},
]

DISCLOSURE_SCALARS = {
    "enterprise_name": "乌鲁木齐甲化工有限公司", "legal_representative": "王建国",
    "address": "乌鲁木齐市天山区解放南路1号", "media": "新疆日报", "disclosure_date": "2025-03-10",
    "division_code": "650102",
}

FIXTURE = Scenario(name="fixture", scalars=DISCLOSURE_SCALARS, rows=POLLUTANT_ROWS,
                   acknowledgement_task="acknowledge_result",
                   prepare=lambda site: site.start_disclosure("ent-a"))

# The demo: ent-a (listed on 2026-11-20, ground 1) has publish_emissions open, due 2026-12-21
# (forms/mandatory_audit/publish_emissions + verify_disclosure).
DEMO_ROWS = [
    {"name": "化学需氧量", "medium": "water", "discharge_mode": "indirect", "concentration": "85.5",
     "unit": "mg/L", "standard_limit": "100", "annual_total_t": "12.4", "exceeds": False, "over_quota": False},
    {"name": "二氧化硫", "medium": "air", "discharge_mode": "organised_continuous", "concentration": "320",
     "unit": "mg/m³", "standard_limit": "200", "annual_total_t": "48", "exceeds": True, "over_quota": False},
]
DEMO = Scenario(name="demo", screenshot_prefix="demo-", enterprise_name="乌鲁木齐天山化工有限公司",
                process_id="mandatory_audit",
                scalars={"enterprise_name": "乌鲁木齐天山化工有限公司", "uscc": "91650102MA77A1B2CD",
                         "legal_representative": "王建国", "address": "乌鲁木齐市天山区解放南路88号",
                         "division_code": "650102", "media": "乌鲁木齐晚报", "disclosure_date": "2026-11-27",
                         "reporting_year": "2025"},
                rows=DEMO_ROWS, disclosure_task="publish_emissions", review_task="verify_disclosure",
                decision_field="verification", reason_field="verification_reason",
                review_values={"checked_on": "2026-11-29"},
                english_form_title="Publish the main pollutant emissions")
