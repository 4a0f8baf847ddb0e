"""Task pages of the real demo (`cleanaudit init --demo`): records referenced by task data, the record
of every look at an enterprise's confidential data (Art. 20, 30), and organisation fields as lists."""
from __future__ import annotations

import re

from engine import confidential
from engine.choices import organisation_options
from engine.models import Organisation, Record
from sqlalchemy import select

DISCLOSURE = {
    "enterprise_name": "乌鲁木齐天山化工有限公司", "uscc": "91650102MA77A1B2CD", "legal_representative": "王建国",
    "address": "乌鲁木齐市天山区解放南路88号", "division_code": "650102", "media": "乌鲁木齐晚报",
    "disclosure_date": "2026-11-28", "reporting_year": "2025",
    "pollutants-0-name": "化学需氧量", "pollutants-0-medium": "water", "pollutants-0-discharge_mode": "indirect",
    "pollutants-0-concentration": "85.5", "pollutants-0-unit": "mg/L", "pollutants-0-standard_limit": "100",
    "pollutants-0-annual_total_t": "12.4", "pollutants-0-exceeds": "false", "pollutants-0-over_quota": "false",
    "pollutants-1-name": "氨氮", "pollutants-1-medium": "water", "pollutants-1-discharge_mode": "indirect",
    "pollutants-1-concentration": "28.6", "pollutants-1-unit": "mg/L", "pollutants-1-standard_limit": "15",
    "pollutants-1-annual_total_t": "4.1", "pollutants-1-exceeds": "true", "pollutants-1-over_quota": "false",
}


def _task(demo, username, bpmn_id):
    rows = [row for row in demo.engine.inbox(demo.user(username), per_page=100).rows
            if row.bpmn_id in (bpmn_id, f"{bpmn_id} [child]")]
    assert rows, f"{username} has no open task {bpmn_id}"
    return rows[0]


def _views(demo, instance_id, kind="confidential_viewed"):
    return [e for e in demo.engine.history(instance_id) if e.kind == kind]


def _org_id(demo, name):
    with demo.engine.db.read() as session:
        return session.scalar(select(Organisation.id).where(Organisation.name == name))


def _submit_disclosure(demo, as_demo_user):
    task = _task(demo, "ent-a", "publish_emissions")
    response = as_demo_user("ent-a").post(f"/tasks/{task.id}", data=DISCLOSURE)
    assert response.status_code == 302, response.get_data(as_text=True)[:2000]
    return task.instance_id


def test_the_epb_sees_the_disclosure_record_the_enterprise_published(demo, as_demo_user):
    instance_id = _submit_disclosure(demo, as_demo_user)
    review = _task(demo, "epb-650102", "verify_disclosure")
    epb = as_demo_user("epb-650102")
    page = epb.get(f"/tasks/{review.id}").get_data(as_text=True)
    # task data keeps only disclosure_record_id; the page shows the record it names, as a table
    assert "乌鲁木齐天山化工有限公司主要污染物排放情况（2025年度）" in page
    assert "化学需氧量" in page and "氨氮" in page and "28.6" in page and "王建国" in page
    assert "间接排放" in page and "排放浓度" in page        # option titles and column labels of the form
    # the instructions name the record by its key; the page says which record that is
    record_id = demo.engine.task_view(demo.user("epb-650102"), review.id).data["disclosure_record_id"]
    instructions = page.split('class="panel instructions"', 1)[1].split("</section>", 1)[0]
    assert f"（公开记录 {record_id}）" in instructions and "disclosure_record_id" not in instructions
    assert f"记录 {record_id}</span>" in page
    # a published record needs no record of the look; the page view itself is recorded
    events = _views(demo, instance_id)
    assert [e.data.get("record_id") for e in events] == [None]
    english = epb.post("/language", data={"lang": "en", "next": f"/tasks/{review.id}"}, follow_redirects=True)
    assert "indirect (to a central treatment plant)" in english.get_data(as_text=True)


def test_opening_a_task_page_records_the_look_with_the_viewer_name(demo, as_demo_user):
    instance_id = _submit_disclosure(demo, as_demo_user)
    before = len(_views(demo, instance_id))
    review = _task(demo, "epb-650102", "verify_disclosure")
    epb = as_demo_user("epb-650102")
    page = epb.get(f"/tasks/{review.id}").get_data(as_text=True)
    assert "您的查看已记录" in page
    epb.get(f"/tasks/{review.id}")
    events = _views(demo, instance_id)[before:]
    assert len(events) == 2                                   # once per page view
    assert {e.actor for e in events} == {"epb-650102"}
    assert {e.data["user_name"] for e in events} == {"天山区环境保护局"}
    assert {e.bpmn_id for e in events} == {"verify_disclosure"} and events[0].task_id == review.id
    assert demo.engine.verify_history() == []


def test_the_enterprise_own_looks_are_not_recorded(demo, as_demo_user):
    task = _task(demo, "ent-a", "commission_agency")
    before = _views(demo, task.instance_id)
    page = as_demo_user("ent-a").get(f"/tasks/{task.id}").get_data(as_text=True)
    assert "您的查看已记录" not in page
    assert _views(demo, task.instance_id) == before
    # ent-c's own audit: task data refers to its confidential records; its looks leave no trace
    own = _task(demo, "ent-c", "report_implementation")
    before = _views(demo, own.instance_id)
    page = as_demo_user("ent-c").get(f"/tasks/{own.id}").get_data(as_text=True)
    assert "新疆雪莲乳业股份有限公司清洁生产审核报告（2024年）" in page
    assert _views(demo, own.instance_id) == before


def test_an_expert_looking_at_confidential_records_is_recorded_per_record(demo, as_demo_user):
    review = _task(demo, "expert-1", "review_by_expert")
    with demo.engine.db.read() as session:
        report = session.scalar(select(Record).where(Record.instance_id == review.instance_id,
                                                     Record.kind == "audit_report"))
    before = len(_views(demo, review.instance_id))
    page = as_demo_user("expert-1").get(f"/tasks/{review.id}").get_data(as_text=True)
    assert report.title in page and "喷雾干燥塔排风余热回收" in page       # the report's implementation plan
    events = _views(demo, review.instance_id)[before:]
    assert {e.actor for e in events} == {"expert-1"}
    assert report.id in {e.data.get("record_id") for e in events}
    assert any(e.data.get("what", "").startswith("task page") for e in events)


def test_a_record_the_user_may_not_see_is_refused_and_the_refusal_recorded(demo):
    with demo.engine.db.read() as session:
        record = session.scalar(select(Record).where(Record.kind == "audit_report"))
        public = session.scalar(select(Record).where(Record.kind == "emission_disclosure"))
    outsider = demo.user("ent-b")
    views = confidential.read_records(demo.engine, outsider, [record.id, public.id, 99999, "x"])
    assert [(v.id, v.allowed) for v in views] == [(record.id, False), (public.id, True)]
    assert views[0].data is None and views[0].title == ""
    refused = _views(demo, record.instance_id, "access_refused")
    assert refused and refused[-1].actor == "ent-b" and refused[-1].data["record_id"] == record.id
    # may_view_record agrees, without writing anything
    assert not confidential.may_view_record(demo.engine, outsider, record.id)


def test_agency_fields_list_the_filed_agencies(demo, as_demo_user):
    task = _task(demo, "ent-a", "commission_agency")
    ent = as_demo_user("ent-a")
    page = ent.get(f"/tasks/{task.id}").get_data(as_text=True)
    select_html = re.search(r'<select id="f-agency_id" name="agency_id" class="organisation".*?</select>', page, re.S)
    assert select_html, "agency_id is not drawn as a list"
    filed, applying = _org_id(demo, "新疆清源清洁生产技术咨询有限公司"), _org_id(demo, "新疆绿洲环境工程咨询有限公司")
    assert f'value="{filed}"' in select_html.group(0) and "新清审备〔2024〕第001号" in select_html.group(0)
    assert "新疆绿洲环境工程咨询有限公司" not in select_html.group(0)      # still applying (Art. 19)
    assert 'translate="no"' in select_html.group(0)
    # the list is a convenience: the process still checks the value (an unfiled agency comes back)
    response = ent.post(f"/tasks/{task.id}", data={"audit_mode": "agency", "agency_id": str(applying),
                                                   "contract_no": "HT-2026-01", "contract_date": "2026-11-29"})
    assert response.status_code == 302
    again = _task(demo, "ent-a", "commission_agency")
    page = ent.get(f"/tasks/{again.id}").get_data(as_text=True)
    assert "未经自治区发展改革委、经贸委、环保局审核备案" in page
    assert re.search(rf'<option value="{applying}" selected translate="no">新疆绿洲环境工程咨询有限公司', page)
    response = ent.post(f"/tasks/{again.id}", data={"audit_mode": "agency", "agency_id": str(filed),
                                                    "contract_no": "HT-2026-01", "contract_date": "2026-11-29"})
    assert response.status_code == 302
    accept = [row for row in demo.engine.inbox(demo.user("agency-a"), per_page=100).rows
              if row.bpmn_id == "accept_commission" and row.instance_id == task.instance_id]
    assert len(accept) == 1


def test_enterprise_fields_list_the_enterprises_of_the_user_jurisdiction(demo, as_demo_user):
    draft = _task(demo, "epb-650102", "propose_list")
    page = as_demo_user("epb-650102").get(f"/tasks/{draft.id}").get_data(as_text=True)
    cell = re.search(r'<select id="f-entries-0-enterprise_id" name="entries-0-enterprise_id" class="organisation"'
                     r'.*?</select>', page, re.S)
    assert cell, "enterprise_id of the entries is not drawn as a list"
    assert "乌鲁木齐天山化工有限公司" in cell.group(0) and "乌鲁木齐天山酿造有限公司" in cell.group(0)
    assert "昌吉市宏达建材有限责任公司" not in cell.group(0)                  # Changji, not Tianshan district
    assert "新疆米东天宇化工有限公司" not in cell.group(0)                    # Midong district
    assert "新疆清源清洁生产技术咨询有限公司" not in cell.group(0)           # an agency
    template = re.search(r'<template id="tpl-entries">.*?</template>', page, re.S).group(0)
    assert 'name="entries-__index__-enterprise_id" class="organisation"' in template


def test_organisation_lists_follow_the_jurisdiction(demo):
    engine = demo.engine

    def names(username, option_filter="enterprises_in_jurisdiction"):
        return {label.split("（")[0] for _, label in organisation_options(engine, demo.user(username), option_filter)}
    assert names("epb-650100") >= {"乌鲁木齐天山化工有限公司", "新疆米东天宇化工有限公司", "新疆雪莲乳业股份有限公司"}
    assert "昌吉市宏达建材有限责任公司" not in names("epb-650100")
    assert "昌吉市宏达建材有限责任公司" in names("epb-650000")               # the region: every enterprise
    assert names("ent-a") == {"乌鲁木齐天山化工有限公司"}                    # an enterprise: itself
    assert names("agency-a") == set()
    assert names("ent-a", "filed_agencies") == {"新疆清源清洁生产技术咨询有限公司"}
    english = organisation_options(engine, demo.user("ent-a"), "filed_agencies", "en")
    assert english[0][1].endswith("(新清审备〔2024〕第001号)")


def test_the_form_validator_knows_the_organisation_widget(tmp_path):
    import json
    from engine.forms import check_schema_file
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
              "properties": {"agency_id": {"type": "integer", "title": "机构"}}}
    (tmp_path / "f.schema.json").write_text(json.dumps(schema), encoding="utf-8")
    ui = tmp_path / "f.uischema.json"
    ui.write_text(json.dumps({"agency_id": {"ui:widget": "organisation", "ui:options": {"filter": "filed_agencies"}}}))
    assert check_schema_file(tmp_path / "f.schema.json") == []
    ui.write_text(json.dumps({"agency_id": {"ui:widget": "organisation"}}))
    assert any("needs ui:options.filter" in p for p in check_schema_file(tmp_path / "f.schema.json"))


def test_a_returned_disclosure_shows_the_reason_with_the_instructions(demo, as_demo_user):
    instance_id = _submit_disclosure(demo, as_demo_user)
    review = _task(demo, "epb-650102", "verify_disclosure")
    response = as_demo_user("epb-650102").post(f"/tasks/{review.id}", data={
        "verification": "return", "checked_on": "2026-11-29",
        "verification_reason": "氨氮年排放总量与排污许可执行报告不符，请核实。"})
    assert response.status_code == 302
    again = _task(demo, "ent-a", "publish_emissions")
    assert again.instance_id == instance_id
    page = as_demo_user("ent-a").get(f"/tasks/{again.id}").get_data(as_text=True)
    instructions = page.split('class="panel instructions"', 1)[1].split("</section>", 1)[0]
    assert "退回理由" in instructions and "氨氮年排放总量与排污许可执行报告不符，请核实。" in instructions
    assert page.count("氨氮年排放总量与排污许可执行报告不符") == 1       # not again in the earlier data
    # the form comes back with the disclosure as published (task data keeps only its record id)
    assert 'value="氨氮"' in page and 'value="28.6"' in page and 'value="乌鲁木齐晚报"' in page


def test_every_demo_task_page_and_public_record_renders_in_english(demo, demo_app, as_demo_user):
    """Every open task of the demo (records, reasons, organisation lists included) and every public
    record, in English without a missing translation."""
    from test_i18n import untranslated
    from engine.demo import USERS
    _submit_disclosure(demo, as_demo_user)
    problems, pages = [], 0
    for username, *_ in USERS:
        client = as_demo_user(username)
        client.post("/language", data={"lang": "en"})
        for row in demo.engine.inbox(demo.user(username), per_page=100).rows:
            response = client.get(f"/tasks/{row.id}")
            assert response.status_code == 200, (username, row.bpmn_id)
            pages += 1
            problems += [f"{username} {row.bpmn_id}: {text}" for text in untranslated(response.get_data(as_text=True))]
    anonymous = demo_app.test_client()
    anonymous.post("/language", data={"lang": "en"})
    with demo.engine.db.read() as session:
        public = list(session.scalars(select(Record.id).where(Record.public.is_(True), Record.confidential.is_(False))))
    for record_id in public:
        html = anonymous.get(f"/public/records/{record_id}").get_data(as_text=True)
        problems += [f"record {record_id}: {text}" for text in untranslated(html)]
    html = anonymous.get("/public/lists").get_data(as_text=True)
    problems += [f"lists: {text}" for text in untranslated(html)]
    assert pages >= 25 and public
    assert not problems, problems[:20]


def _ground_one_proposal(demo, measured="168"):
    """The demo draft of epb-650102 filled in as a county EPB would: one enterprise, two rows of evidence."""
    ent_a = _org_id(demo, "乌鲁木齐天山化工有限公司")
    evidence = {"basis": "over_standard", "medium": "water", "limit_value": "100", "unit": "mg/L",
                "standard_or_quota": "GB 8978-1996（一级标准）", "measured_on": "2026-08-18",
                "monitoring_report": "乌环监字〔2026〕第0415号"}
    data = {"listing_ground": "exceeding", "batch": "2026-4", "publication_media": "乌鲁木齐晚报",
            "proposal_action": "submit", "entries-0-enterprise_id": str(ent_a),
            "entries-0-enterprise_name": "乌鲁木齐天山化工有限公司", "entries-0-credit_code": "91650102MA77A1B2CD"}
    for j, (pollutant, value) in enumerate([("化学需氧量", measured), ("氨氮", "28.6")]):
        data.update({f"entries-0-evidence-{j}-{k}": v for k, v in evidence.items()})
        data[f"entries-0-evidence-{j}-pollutant"] = pollutant
        data[f"entries-0-evidence-{j}-measured_value"] = value
    # the empty rows the page draws (one more evidence row, the untouched substances table) are dropped
    data.update({"entries-0-evidence-2-pollutant": "", "entries-0-substances-0-name": ""})
    return data


def test_the_listing_proposal_draws_rows_inside_its_rows(demo, as_demo_user):
    draft = _task(demo, "epb-650102", "propose_list")
    page = as_demo_user("epb-650102").get(f"/tasks/{draft.id}").get_data(as_text=True)
    # evidence and substances of an entry are tables of their own, not one comma-separated box
    assert 'name="entries-0-evidence"' not in page and 'name="entries-0-substances"' not in page
    assert '<fieldset class="rows nested-rows" id="f-entries-0-evidence">' in page
    assert '<input id="f-entries-0-evidence-0-pollutant" name="entries-0-evidence-0-pollutant"' in page
    assert re.search(r'<select id="f-entries-0-evidence-0-medium" name="entries-0-evidence-0-medium"', page)
    assert 'name="entries-0-evidence-0-measured_on"' in page and 'type="date"' in page
    assert 'name="entries-0-substances-0-name"' in page
    assert 'name="entries-0-substances-0-hazards" value="carcinogenic"' in page      # checkboxes
    assert 'data-add-row="entries-0-evidence"' in page and 'value="add:entries-0-substances"' in page
    # templates: a new entry brings its own evidence table; a new evidence row its own index
    assert 'name="entries-__index__-evidence-0-pollutant"' in page
    assert '<template id="tpl-entries-0-evidence" data-placeholder="__index1__">' in page
    assert 'name="entries-0-evidence-__index1__-pollutant"' in page
    assert 'name="entries-__index__-evidence-__index1__-pollutant"' in page


def test_a_ground_one_proposal_is_completed_through_the_web(demo, as_demo_user):
    draft = _task(demo, "epb-650102", "propose_list")
    epb = as_demo_user("epb-650102")
    # without JavaScript, "add a row" of the evidence draws the form again one evidence row longer
    data = _ground_one_proposal(demo)
    page = epb.post(f"/tasks/{draft.id}", data={**data, "_action": "add:entries-0-evidence"})
    assert page.status_code == 200
    assert 'name="entries-0-evidence-3-pollutant"' in page.get_data(as_text=True)
    response = epb.post(f"/tasks/{draft.id}", data=data)
    assert response.status_code == 302, response.get_data(as_text=True)[:2000]
    stored = demo.engine.instance_data(draft.instance_id)
    entries = stored["entries"]
    assert [(e["pollutant"], e["measured_value"]) for e in entries[0]["evidence"]] == [
        ("化学需氧量", 168), ("氨氮", 28.6)]
    assert "substances" not in entries[0]


def test_an_invalid_nested_value_is_shown_at_its_field(demo, as_demo_user):
    draft = _task(demo, "epb-650102", "propose_list")
    epb = as_demo_user("epb-650102")
    data = _ground_one_proposal(demo, measured="-5")
    data["entries-0-evidence-1-medium"] = ""
    response = epb.post(f"/tasks/{draft.id}", data=data)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    cell = re.search(r'<td class="has-error w-number"><input id="f-entries-0-evidence-0-measured_value"'
                     r'[^>]*aria-invalid="true"[^>]*>(.*?)</td>', page, re.S)
    assert cell and 'id="e-entries-0-evidence-0-measured_value"' in cell.group(1) and "不得小于 0" in cell.group(1)
    assert 'id="e-entries-0-evidence-1-medium">必填' in page
    assert 'href="#f-entries-0-evidence-0-measured_value"' in page          # the summary links to it
    assert 'value="氨氮"' in page                                             # nothing typed is lost
    assert _task(demo, "epb-650102", "propose_list").id == draft.id          # nothing saved
