"""Issue 6 acceptance in a real browser, against the demo of `make run` and against the web fixture:
ent-a publishes its emissions with two pollutant rows (Art. 10), epb-650102 sees them and returns them
with a reason, ent-a sees the reason and resubmits, the EPB accepts, the public page shows the
disclosure; then the language switch."""
from __future__ import annotations

import os
import re

import pytest

pytestmark = pytest.mark.browser


def fill_disclosure(page, scenario, rows=None):
    """Type the scalars the form has, then the pollutant rows (adding rows with the JS button)."""
    for name, value in scenario.scalars.items():
        locator = page.locator(f"[name={name}]")
        if locator.count() == 0:
            continue
        tag = locator.first.evaluate("el => el.tagName.toLowerCase()")
        if tag == "select":
            locator.first.select_option(value)
        else:
            locator.first.fill(value)
    rows = scenario.rows if rows is None else rows
    body = page.locator(f'tbody[data-rows="{scenario.rows_field}"]')
    for index, row in enumerate(rows):
        if body.locator("tr[data-index]").count() <= index:
            page.click(f'[data-add-row="{scenario.rows_field}"]')
        tr = body.locator("tr[data-index]").nth(index)
        for column, value in row.items():
            cell = tr.locator(f'[name$="-{column}"]')
            if cell.count() == 0:
                continue
            if isinstance(value, bool) and cell.first.get_attribute("type") == "radio":
                tr.locator(f'[name$="-{column}"][value={"true" if value else "false"}]').check()
            elif isinstance(value, bool):
                cell.set_checked(value)
            elif cell.evaluate("el => el.tagName.toLowerCase()") == "select":
                cell.select_option(value)
            else:
                cell.fill(value)


def open_task(page, live, bpmn_id, process_id=None, enterprise=None):
    """Open the user's open task `bpmn_id` of the scenario's process (of that enterprise; the first by
    due date)."""
    page.goto(live.path(f"/?process={process_id or live.scenario.process_id}"))
    rows = page.locator(f'tr[data-task="{bpmn_id}"]', has_text=enterprise) if enterprise \
        else page.locator(f'tr[data-task="{bpmn_id}"]')
    assert rows.count() > 0, f"no open task {bpmn_id} in the inbox"
    rows.first.locator("a.task-link").click()
    page.wait_for_url(re.compile(r".*/tasks/[0-9a-f-]+$"))


def test_emission_disclosure_returned_resubmitted_and_published(live, actor, shot):
    scenario = live.scenario
    anonymous = actor(None)
    anonymous.goto(live.path("/"))
    assert anonymous.url.startswith(live.path("/login"))
    shot(anonymous, "01-login-zh")

    # ent-a: the inbox shows the open disclosure with its article and due date
    ent = actor(scenario.enterprise)
    assert ent.locator("#inbox-count").inner_text().strip() != "0"
    assert ent.locator(f'tr[data-task="{scenario.disclosure_task}"]', has_text="第十条").count() == 1
    shot(ent, "02-inbox-ent-a-zh")
    open_task(ent, live, scenario.disclosure_task)
    assert ent.locator("h1").inner_text().strip() == "公布主要污染物排放情况"
    assert ent.locator(".confidential-note").count() == 0        # the enterprise's own data: not recorded

    # an invalid submission first: 422, messages next to the fields, nothing saved
    fill_disclosure(ent, scenario)
    ent.fill("[name=media]", "")
    ent.fill(f"[name={scenario.rows_field}-1-concentration]", "很高")
    ent.click("#submit-task")
    assert ent.locator(".error-summary").is_visible()
    assert ent.locator("#e-media").inner_text() == "必填"
    assert "应为数字" in ent.locator(f"#e-{scenario.rows_field}-1-concentration").inner_text()
    shot(ent, "03-disclosure-invalid-zh")

    fill_disclosure(ent, scenario)
    assert ent.locator(f'tbody[data-rows="{scenario.rows_field}"] tr[data-index]').count() == 2
    shot(ent, "04-disclosure-filled-zh")
    ent.click("#submit-task")
    ent.wait_for_url(live.path("/"))
    assert ent.locator(".flash-success").count() == 1

    # epb-650102 sees the two rows (the earlier data, or the record the task data names) and
    # returns the disclosure with a reason
    epb = actor(scenario.epb)
    open_task(epb, live, scenario.review_task)
    shown = epb.locator(".earlier, .record")
    assert shown.locator("text=二氧化硫").count() == 1 and shown.locator("text=化学需氧量").count() == 1
    if scenario.name == "demo":
        record = epb.locator("details.record")
        assert record.locator("h2", has_text="乌鲁木齐天山化工有限公司主要污染物排放情况（2025年度）").is_visible()
        assert record.locator("td", has_text="有组织连续排放").count() == 1      # option titles, not codes
        assert epb.locator(".confidential-note").is_visible()                     # the look is recorded
    shot(epb, "05-review-epb-zh")
    epb.check(f"[name={scenario.decision_field}][value={scenario.return_value}]")
    for name, value in scenario.review_values.items():
        epb.fill(f"[name={name}]", value)
    epb.click("#submit-task")
    assert "必填" in epb.locator(f"#e-{scenario.reason_field}").inner_text()   # a return needs a reason
    epb.check(f"[name={scenario.decision_field}][value={scenario.return_value}]")
    epb.fill(f"[name={scenario.reason_field}]", "二氧化硫排放浓度与在线监测数据不符，请核实后重新公布。")
    epb.click("#submit-task")
    epb.wait_for_url(live.path("/"))

    # ent-a sees the reason and its rows as it sent them, corrects one value and resubmits
    open_task(ent, live, scenario.disclosure_task)
    assert ent.locator(".instructions", has_text="二氧化硫排放浓度与在线监测数据不符").count() == 1
    assert ent.locator(f"[name={scenario.rows_field}-1-name]").input_value() == "二氧化硫"
    assert ent.locator(f"[name={scenario.rows_field}-1-concentration]").input_value() == "320"
    shot(ent, "06-returned-with-reason-zh")
    ent.fill(f"[name={scenario.rows_field}-1-concentration]", "180")
    ent.click("#submit-task")
    ent.wait_for_url(live.path("/"))
    assert ent.locator(".flash-success").count() == 1

    # the EPB accepts; the disclosure is public
    open_task(epb, live, scenario.review_task)
    assert epb.locator(".earlier, .record").locator("text=180").count() >= 1
    epb.check(f"[name={scenario.decision_field}][value={scenario.accept_value}]")
    for name, value in scenario.review_values.items():
        epb.fill(f"[name={name}]", value)
    epb.click("#submit-task")
    epb.wait_for_url(live.path("/"))
    assert epb.locator(".flash-success").count() == 1

    public = actor(None)
    public.goto(live.path(scenario.public_path))
    shot(public, "07a-public-emissions-zh")
    public.locator("a", has_text=scenario.enterprise_name).first.click()
    assert public.locator("td", has_text=re.compile(r"^\s*180\s*$")).count() == 1
    assert public.locator("text=二氧化硫").count() >= 1
    assert public.locator("text=新疆日报" if scenario.name == "fixture" else "text=乌鲁木齐晚报").count() >= 1
    shot(public, "07-public-disclosure-zh")

    if scenario.acknowledgement_task:
        # the acknowledgement task: a required confirmation box
        open_task(ent, live, scenario.acknowledgement_task)
        ent.check("[name=confirmed]")
        shot(ent, "08-acknowledge-zh")
        ent.click("#submit-task")
        ent.wait_for_url(live.path("/"))


@pytest.mark.skipif(os.environ.get("CLEANAUDIT_BROWSER_SITE") == "fixture", reason="a task of the demo only")
@pytest.mark.parametrize("live", ["demo"], indirect=True)
def test_commissioning_an_agency_chooses_from_the_filed_agencies(live, actor, shot):
    """Art. 11, 19: ent-a commissions a filed audit agency, chosen by name from a list."""
    ent = actor("ent-a")
    open_task(ent, live, "commission_agency")
    agency = ent.locator("select[name=agency_id]")
    options = agency.locator("option").all_inner_texts()
    assert "新疆清源清洁生产技术咨询有限公司（新清审备〔2024〕第001号）" in options
    assert not any("新疆绿洲环境工程咨询有限公司" in text for text in options)       # applying, not filed
    ent.check("[name=audit_mode][value=agency]")
    agency.select_option(label="新疆清源清洁生产技术咨询有限公司（新清审备〔2024〕第001号）")
    ent.fill("[name=contract_no]", "QYZX-2026-045")
    ent.fill("[name=contract_date]", "2026-11-29")
    shot(ent, "08-commission-agency-zh")
    ent.click("#submit-task")
    ent.wait_for_url(live.path("/"))
    assert ent.locator(".flash-success").count() == 1
    # the agency sees the commission, with the enterprise's name; its look is recorded
    agency_user = actor("agency-a")
    open_task(agency_user, live, "accept_commission", enterprise="乌鲁木齐天山化工有限公司")
    assert agency_user.locator(".task-head", has_text="乌鲁木齐天山化工有限公司").count() == 1
    assert agency_user.locator(".confidential-note").is_visible()
    shot(agency_user, "08b-accept-commission-agency-zh")


@pytest.mark.skipif(os.environ.get("CLEANAUDIT_BROWSER_SITE") == "fixture", reason="a task of the demo only")
@pytest.mark.parametrize("live", ["demo"], indirect=True)
def test_a_listing_proposal_chooses_enterprises_of_the_district(live, actor, shot):
    """Art. 8, 9: epb-650102's draft list names enterprises by choosing them, not by typing ids."""
    epb = actor("epb-650102")
    open_task(epb, live, "propose_list", process_id="mandatory_listing")
    choices = epb.locator("select[name=entries-0-enterprise_id] option").all_inner_texts()
    assert "乌鲁木齐天山化工有限公司（91650102MA77A1B2CD）" in choices
    assert not any("昌吉" in text for text in choices)                 # another prefecture
    epb.locator("select[name=entries-0-enterprise_id]").select_option(label="乌鲁木齐天山酿造有限公司（91650102MA7JT8WK2B）")
    # rows inside rows: each listed enterprise has its own evidence table (Art. 8(1))
    before = epb.locator("[name^='entries-0-evidence-'][name$='-pollutant']").count()
    epb.click('[data-add-row="entries-0-evidence"]')
    assert epb.locator("[name^='entries-0-evidence-'][name$='-pollutant']").count() == before + 1
    epb.click('[data-add-row="entries"]')
    assert epb.locator("[name^='entries-1-evidence-'][name$='-pollutant']").count() >= 1
    assert epb.locator("[name*='__index']").evaluate_all(
        "els => els.filter(e => !e.closest('template')).length") == 0
    shot(epb, "16-propose-list-zh")


def test_language_switch(live, actor, shot):
    scenario = live.scenario
    page = actor(scenario.enterprise)
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    page.click("button[name=lang][value=en]")
    page.wait_for_url(live.path("/"))
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.locator("nav.nav").inner_text().startswith("Inbox")
    assert page.locator("text=Art. 10").count() > 0
    shot(page, "10-inbox-en")
    open_task(page, live, scenario.disclosure_task)
    assert page.locator("h2", has_text=scenario.english_form_title).count() == 1
    page.click("#submit-task")                     # empty form: English messages
    assert page.locator(".error-summary").is_visible()
    assert "required" in page.locator("#e-media").inner_text()           # not pre-filled on either site
    shot(page, "11-task-invalid-en")
    page.goto(live.path("/public/"))
    shot(page, "12-public-en")
    page.click("button[name=lang][value=zh_CN]")
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    assert page.locator("h1").inner_text().startswith("清洁生产审核信息公开")


def test_administration_pages(live, actor, shot):
    if live.scenario.name == "fixture":
        live.site.engine.start("web_incident", actor="tests", data={"divisor": 0})
        live.site.engine.send_message("agency_filed", {"agency_id": 3}, {"agency_id": 3})
    admin = actor("admin", locale="en")
    admin.click("button[name=lang][value=en]")
    for path, name in (("/admin/", "20-admin-overview-en"), ("/admin/users", "21-admin-users-en"),
                       ("/admin/organisations", "22-admin-organisations-en"),
                       ("/admin/calendar?year=2025", "23-admin-calendar-en"),
                       ("/admin/incidents", "24-admin-incidents-en"), ("/admin/messages", "25-admin-messages-en")):
        response = admin.goto(live.path(path))
        assert response.status == 200, path
        shot(admin, name)
    if live.scenario.name == "demo":
        admin.goto(live.path("/admin/users"))
        assert admin.locator("text=epb-650102").count() >= 1 and admin.locator("text=expert-5").count() >= 1
        return
    admin.goto(live.path("/admin/incidents"))
    admin.fill("textarea[name=data_patch]", '{"divisor": 5}')
    admin.click("form[action$='/retry'] button[type=submit]")
    assert admin.locator(".flash-success").count() == 1
    assert admin.locator("text=No incidents.").count() == 1


def test_add_and_remove_rows_with_javascript(live, actor):
    page = actor(live.scenario.enterprise)
    open_task(page, live, live.scenario.disclosure_task)
    body = page.locator(f'tbody[data-rows="{live.scenario.rows_field}"]')
    assert body.locator("tr[data-index]").count() == 1
    page.click(f'[data-add-row="{live.scenario.rows_field}"]')
    page.click(f'[data-add-row="{live.scenario.rows_field}"]')
    assert body.locator("tr[data-index]").count() == 3
    assert [t.strip() for t in body.locator("td.rownum").all_inner_texts()] == ["1", "2", "3"]
    body.locator("tr[data-index]").nth(1).locator("[data-remove-row]").click()
    assert body.locator("tr[data-index]").count() == 2
    assert body.locator("tr[data-index]").nth(1).get_attribute("data-index") == "2"
    assert page.url.endswith(page.url.split("/")[-1])      # no page load happened


def test_inbox_badges_public_lists_and_error_pages(live, actor, shot):
    """Screenshots of what the other tests do not show: due badges, published lists, an error page."""
    from datetime import datetime, timedelta, timezone
    from engine import clock
    from fixture_site import add_public_records
    user = live.scenario.enterprise
    if live.scenario.name == "fixture":
        now = datetime.now(timezone.utc)
        with clock.use_clock(now - timedelta(days=40)):
            live.site.start_disclosure("ent-a")            # a month's deadline, passed: overdue
        with clock.use_clock(now - timedelta(days=26)):
            live.site.start_disclosure("ent-a")            # due within 7 days
        add_public_records(live.site)
    else:
        user = "ent-b"                                     # missed its disclosure (due 2026-10-15)
    page = actor(user)
    assert page.locator(".badge-overdue").count() >= 1
    if live.scenario.name == "fixture":
        assert page.locator(".badge-soon").count() >= 1
    shot(page, "09-inbox-badges-zh")
    page.goto(live.path("/public/lists"))
    if live.scenario.name == "demo":
        assert page.locator("text=乌鲁木齐天山化工有限公司").count() >= 1   # the Tianshan list of 2026-11-20
    shot(page, "13-public-lists-zh")
    page.goto(live.path("/public/agencies"))
    assert page.locator("text=新清审备〔2024〕第001号" if live.scenario.name == "demo"
                        else "text=XJQJ-2025-001").count() == 1
    shot(page, "14-public-agencies-zh")
    response = page.goto(live.path("/admin/users"))
    assert response.status == 403
    shot(page, "15-error-403-zh")
