"""Administration: users, organisations, the holiday calendar, incidents, undelivered messages."""
from __future__ import annotations

from datetime import date

from webhelpers import login
from fixture_site import uscc


def test_administrator_creates_a_user_who_can_log_in(site, app, as_user):
    admin = as_user("admin")
    response = admin.post("/admin/users", data={
        "username": "epb-650103", "display_name": "沙依巴克区环保局", "password": "long-enough-1",
        "roles": ["local_epb"], "jurisdiction_code": "650103", "organisation_id": "", "active": "on"})
    assert response.status_code == 302
    assert "epb-650103" in admin.get("/admin/users").get_data(as_text=True)
    user = site.user("epb-650103")
    assert user.roles == ["local_epb"] and user.jurisdiction_code == "650103"
    assert login(app.test_client(), "epb-650103", "long-enough-1")


def test_user_form_errors_are_422_next_to_the_fields(site, as_user):
    response = as_user("admin").post("/admin/users", data={
        "username": "ent-a", "password": "short", "roles": ["wizard"], "jurisdiction_code": "999999"})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "用户名已存在" in html and "密码至少 8 位" in html and "未知角色：wizard" in html
    assert "未知的行政区划代码：999999" in html


def test_administrator_edits_roles_organisation_and_disables(site, app, as_user):
    admin = as_user("admin")
    user_id = site.user("ent-b").id
    page = admin.get(f"/admin/users/{user_id}")
    assert page.status_code == 200
    response = admin.post(f"/admin/users/{user_id}", data={
        "display_name": "乙电镀", "roles": ["enterprise"], "jurisdiction_code": "",
        "organisation_id": str(site.orgs["ent-a"])})
    assert response.status_code == 302
    user = site.user("ent-b")
    assert user.active is False and user.organisation_id == site.orgs["ent-a"]
    assert app.test_client().post("/login", data={"username": "ent-b", "password": "demo"}).status_code == 403


def test_administrator_cannot_lock_themselves_out(site, as_user):
    admin = as_user("admin")
    user_id = site.user("admin").id
    response = admin.post(f"/admin/users/{user_id}", data={"roles": ["auditor"], "active": "on"})
    assert response.status_code == 422
    assert site.user("admin").has_role("administrator")


def test_short_reset_password_is_refused(site, as_user):
    admin = as_user("admin")
    user_id = site.user("ent-a").id
    before = site.user("ent-a").password_hash
    response = admin.post(f"/admin/users/{user_id}/password", data={"password": "short"}, follow_redirects=True)
    assert "密码至少 8 位" in response.get_data(as_text=True)
    assert site.user("ent-a").password_hash == before


def test_organisations_are_registered_with_a_checked_credit_code(site, as_user):
    from engine.models import Organisation
    admin = as_user("admin")
    bad = admin.post("/admin/organisations", data={"kind": "enterprise", "name": "丙纺织有限公司",
                                                   "credit_code": "91650102MA7E0000", "division_code": "650102"})
    assert bad.status_code == 422
    assert "应为18位，实际为16位" in bad.get_data(as_text=True)
    code = uscc("91650102MA7E00005")
    ok = admin.post("/admin/organisations", data={"kind": "enterprise", "name": "丙纺织有限公司",
                                                  "credit_code": code, "division_code": "650102",
                                                  "industry_code": "C17", "is_central": "on"})
    assert ok.status_code == 302
    with site.engine.db.read() as session:
        org = session.query(Organisation).filter_by(credit_code=code).one()
        assert org.is_central and org.industry_code == "C17" and org.filing_status == "none"
    duplicate = admin.post("/admin/organisations", data={"kind": "enterprise", "name": "重复",
                                                         "credit_code": code, "division_code": "650102"})
    assert duplicate.status_code == 422 and "已登记" in duplicate.get_data(as_text=True)


def test_filing_an_agency_puts_it_on_the_public_registry(site, app, as_user):
    admin = as_user("admin")
    org_id = site.orgs["agency-b"]
    assert "新疆申请中咨询有限公司" not in app.test_client().get("/public/agencies").get_data(as_text=True)
    page = admin.get(f"/admin/organisations/{org_id}").get_data(as_text=True)
    assert "申请备案中" in page
    with site.engine.db.read() as session:
        from engine.models import Organisation
        org = session.get(Organisation, org_id)
        form = {"kind": "agency", "name": org.name, "credit_code": org.credit_code,
                "division_code": org.division_code, "filing_status": "filed"}
    assert admin.post(f"/admin/organisations/{org_id}", data=form).status_code == 422   # number missing
    form["filing_number"] = "XJQJ-2025-002"
    assert admin.post(f"/admin/organisations/{org_id}", data=form).status_code == 302
    registry = app.test_client().get("/public/agencies").get_data(as_text=True)
    assert "新疆申请中咨询有限公司" in registry and "XJQJ-2025-002" in registry


def test_calendar_day_added_and_removed_changes_deadlines(site, as_user):
    from engine.deadlines import due
    admin = as_user("admin")
    engine = site.engine
    before = due(date(2025, 9, 1), "P1M", engine.calendar())            # 2025-10-01 is a holiday
    page = admin.get("/admin/calendar?year=2025").get_data(as_text=True)
    assert "2025-10-01" in page
    response = admin.post("/admin/calendar?year=2026", data={"day": "2026-03-02", "kind": "holiday",
                                                             "name": "测试休假日"})
    assert response.status_code == 302
    assert engine.calendar().is_working_day(date(2026, 3, 2)) is False   # the engine re-read it
    assert "测试休假日" in admin.get("/admin/calendar?year=2026").get_data(as_text=True)
    assert admin.post("/admin/calendar/2026-03-02/delete").status_code == 302
    assert engine.calendar().is_working_day(date(2026, 3, 2)) is True
    assert due(date(2025, 9, 1), "P1M", engine.calendar()) == before
    assert admin.post("/admin/calendar", data={"day": "2026-13-01", "kind": "holiday"}).status_code == 422
    assert admin.post("/admin/calendar/2031-01-05/delete").status_code == 404


def test_incident_shows_its_error_and_retry_with_a_data_patch_resolves_it(site, as_user):
    instance_id = site.engine.start("web_incident", actor="tests", data={"divisor": 0})
    assert site.engine.instance(instance_id).status == "incident"
    admin = as_user("admin")
    page = admin.get("/admin/incidents").get_data(as_text=True)
    assert "division by zero" in page and f"/admin/incidents/{instance_id}/retry" in page
    assert 'class="card alert"' in admin.get("/admin/").get_data(as_text=True)
    again = admin.post(f"/admin/incidents/{instance_id}/retry", data={}, follow_redirects=True)
    assert "仍然出错" in again.get_data(as_text=True)
    bad = admin.post(f"/admin/incidents/{instance_id}/retry", data={"data_patch": "{divisor: 2"},
                     follow_redirects=True)
    assert "不是有效的 JSON" in bad.get_data(as_text=True)
    fixed = admin.post(f"/admin/incidents/{instance_id}/retry", data={"data_patch": '{"divisor": 4}'},
                       follow_redirects=True)
    assert "已恢复运行" in fixed.get_data(as_text=True)
    assert site.engine.instance(instance_id).status == "running"
    assert site.engine.instance_data(instance_id)["share"] == 25
    assert "没有运行故障" in admin.get("/admin/incidents").get_data(as_text=True)


def test_retry_is_for_administrators_only(site, as_user):
    instance_id = site.engine.start("web_incident", actor="tests", data={"divisor": 0})
    assert as_user("epb-650000").post(f"/admin/incidents/{instance_id}/retry").status_code == 403
    assert site.engine.instance(instance_id).status == "incident"


def test_undelivered_messages_are_listed_resolved_and_redelivered(site, as_user):
    from engine.models import UndeliveredMessage
    site.engine.send_message("agency_filed", {"agency_id": 3}, {"agency_id": 3})
    site.engine.send_message("nobody_waits", {"x": 1}, {})
    admin = as_user("admin")
    html = admin.get("/admin/messages").get_data(as_text=True)
    assert "agency_filed" in html and "nobody_waits" in html
    with site.engine.db.read() as session:
        ids = {m.name: m.id for m in session.query(UndeliveredMessage)}
    assert admin.post(f"/admin/messages/{ids['nobody_waits']}/resolve").status_code == 302
    response = admin.post(f"/admin/messages/{ids['agency_filed']}/redeliver", follow_redirects=True)
    assert "仍无实例接收此消息" in response.get_data(as_text=True)
    html = admin.get("/admin/messages").get_data(as_text=True)
    assert "nobody_waits" not in html and html.count("agency_filed") == 1    # one open copy remains
    assert "nobody_waits" in admin.get("/admin/messages?all=1").get_data(as_text=True)
    assert admin.post(f"/admin/messages/{ids['nobody_waits']}/resolve").status_code == 404
