"""Completing user tasks through the web: the Art. 10 disclosure, its return with a reason, and errors."""
from __future__ import annotations

import re

from webhelpers import csrf_token


def _open(site, username, bpmn_id=None):
    task = site.open_task(username, bpmn_id)
    assert task is not None, f"{username} has no open task {bpmn_id or ''}"
    return task


def test_enterprise_starts_the_disclosure_from_the_inbox(site, as_user):
    client = as_user("ent-a")
    html = client.get("/").get_data(as_text=True)
    assert 'data-process="web_fixture"' in html           # the Start button
    response = client.post("/start/web_fixture")
    assert response.status_code == 302
    task = _open(site, "ent-a")
    assert response.headers["Location"] == f"/tasks/{task.id}"
    page = client.get(f"/tasks/{task.id}").get_data(as_text=True)
    assert "第十条" in page                               # the article the task comes from
    assert 'value="乌鲁木齐甲化工有限公司"' in page        # the enterprise name comes with the start
    # a division code field is a select of the divisions
    assert '<option value="650102" selected>650102 天山区</option>' in page   # and filled in


def test_disclosure_with_two_pollutant_rows_goes_to_the_local_epb(site, as_user, disclosure_form):
    site.start_disclosure("ent-a")
    task = _open(site, "ent-a")
    client = as_user("ent-a")
    response = client.post(f"/tasks/{task.id}", data=disclosure_form)
    assert response.status_code == 302 and response.headers["Location"] == "/"
    assert "已提交" in client.get("/").get_data(as_text=True)      # the flash after the redirect
    review = _open(site, "epb-650102", "verify_emissions")
    page = as_user("epb-650102").get(f"/tasks/{review.id}").get_data(as_text=True)
    # the EPB sees what was published, labelled by the enterprise's form, rows as a table
    assert "二氧化硫" in page and "化学需氧量" in page and "废气" in page
    assert "主要污染物排放情况" in page


def test_return_with_a_reason_then_resubmit_then_public(site, as_user, app, disclosure_form):
    site.start_disclosure("ent-a")
    ent = as_user("ent-a")
    epb = as_user("epb-650102")
    ent.post(f"/tasks/{_open(site, 'ent-a').id}", data=disclosure_form)
    review = _open(site, "epb-650102")
    response = epb.post(f"/tasks/{review.id}", data={"decision": "return",
                                                     "return_reason": "缺少废气排放口的监测数据"})
    assert response.status_code == 302
    again = _open(site, "ent-a", "publish_emissions")
    page = ent.get(f"/tasks/{again.id}").get_data(as_text=True)
    assert "缺少废气排放口的监测数据" in page                        # the reason, in the instructions
    assert 'value="二氧化硫"' in page and 'value="化学需氧量"' in page  # the earlier rows, to correct
    disclosure_form["pollutants-1-concentration"] = "180"
    assert ent.post(f"/tasks/{again.id}", data=disclosure_form).status_code == 302
    epb.post(f"/tasks/{_open(site, 'epb-650102').id}", data={"decision": "accept"})
    public = app.test_client().get("/public/emissions").get_data(as_text=True)
    assert "乌鲁木齐甲化工有限公司" in public
    record_id = re.search(r'href="/public/records/(\d+)"', public).group(1)
    detail = app.test_client().get(f"/public/records/{record_id}").get_data(as_text=True)
    assert "180" in detail and "二氧化硫" in detail and "新疆日报" in detail
    # then the enterprise acknowledges: a required confirmation box
    ack = _open(site, "ent-a", "acknowledge_result")
    page = ent.get(f"/tasks/{ack.id}").get_data(as_text=True)
    assert 'name="confirmed"' in page
    assert ent.post(f"/tasks/{ack.id}", data={}).status_code == 422
    assert _open(site, "ent-a", "acknowledge_result").id == ack.id
    assert ent.post(f"/tasks/{ack.id}", data={"confirmed": "true"}).status_code == 302
    assert site.open_task("ent-a") is None


def test_invalid_data_is_422_with_messages_next_to_fields_and_changes_nothing(site, as_user, disclosure_form):
    site.start_disclosure("ent-a")
    task = _open(site, "ent-a")
    client = as_user("ent-a")
    disclosure_form["pollutants-1-concentration"] = "很高"
    disclosure_form["disclosure_date"] = "2025-02-30"
    del disclosure_form["media"]
    response = client.post(f"/tasks/{task.id}", data=disclosure_form)
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert re.search(r'id="e-media">必填<', html)
    assert re.search(r'id="e-pollutants-1-concentration">应为数字，实际为 “很高”<', html)
    assert 'id="e-disclosure_date">不是有效的日期' in html
    assert 'value="很高"' in html                      # what came in is shown again
    assert 'aria-invalid="true"' in html
    assert "提交的内容有误" in html                    # the summary
    assert _open(site, "ent-a").id == task.id          # nothing changed
    assert site.open_task("epb-650102") is None
    history = site.engine.history(task.instance_id)
    assert [e.kind for e in history].count("task_completed") == 0


def test_invalid_data_messages_in_english(site, as_user, disclosure_form):
    site.start_disclosure("ent-a")
    task = _open(site, "ent-a")
    client = as_user("ent-a")
    client.post("/language", data={"lang": "en"})
    disclosure_form["pollutants-0-concentration"] = "-1"
    response = client.post(f"/tasks/{task.id}", data=disclosure_form)
    assert response.status_code == 422
    assert 'id="e-pollutants-0-concentration">must be at least 0, got -1<' in response.get_data(as_text=True)


def test_conditional_rule_message_shows_at_its_field(site, as_user, disclosure_form):
    site.start_disclosure("ent-a")
    as_user("ent-a").post(f"/tasks/{_open(site, 'ent-a').id}", data=disclosure_form)
    review = _open(site, "epb-650102")
    response = as_user("epb-650102").post(f"/tasks/{review.id}", data={"decision": "return"})
    assert response.status_code == 422
    assert 'id="e-return_reason">必填<' in response.get_data(as_text=True)
    assert 'value="return" checked' in response.get_data(as_text=True)


def test_completed_meanwhile_is_409_with_an_explanation(site, app, as_user, disclosure_form):
    site.start_disclosure("ent-a")
    task = _open(site, "ent-a")
    first, second = as_user("ent-a"), as_user("ent-a")
    second.get(f"/tasks/{task.id}")                    # both have the form open
    assert first.post(f"/tasks/{task.id}", data=disclosure_form).status_code == 302
    response = second.post(f"/tasks/{task.id}", data=disclosure_form)
    assert response.status_code == 409
    assert "已由他人办理或已发生变化" in response.get_data(as_text=True)
    closed = second.get(f"/tasks/{task.id}")
    assert closed.status_code == 200 and "已于" in closed.get_data(as_text=True) and "ent-a" in closed.get_data(as_text=True)


def test_missing_or_wrong_csrf_token_is_400(site, csrf_app, disclosure_form):
    site.start_disclosure("ent-a")
    task = _open(site, "ent-a")
    client = csrf_app.test_client()
    token = csrf_token(client, "/login")
    assert client.post("/login", data={"username": "ent-a", "password": "demo"}).status_code == 400
    assert client.post("/login", data={"username": "ent-a", "password": "demo",
                                       "csrf_token": token}).status_code == 302
    response = client.post(f"/tasks/{task.id}", data=disclosure_form)
    assert response.status_code == 400
    assert "安全校验码" in response.get_data(as_text=True)
    response = client.post(f"/tasks/{task.id}", data={**disclosure_form, "csrf_token": "forged"})
    assert response.status_code == 400
    assert _open(site, "ent-a").id == task.id
    token = csrf_token(client, f"/tasks/{task.id}")
    assert client.post(f"/tasks/{task.id}", data={**disclosure_form, "csrf_token": token}).status_code == 302


def test_add_row_without_javascript_redraws_the_form_and_saves_nothing(site, as_user, disclosure_form):
    site.start_disclosure("ent-a")
    task = _open(site, "ent-a")
    response = as_user("ent-a").post(f"/tasks/{task.id}", data={**disclosure_form, "_action": "add:pollutants"})
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert 'name="pollutants-2-name"' in html and 'value="二氧化硫"' in html
    assert _open(site, "ent-a").id == task.id


def test_blank_rows_are_dropped_and_rows_keep_their_order(site, as_user, disclosure_form):
    site.start_disclosure("ent-a")
    task = _open(site, "ent-a")
    disclosure_form.update({"pollutants-5-name": "", "pollutants-5-concentration": ""})
    as_user("ent-a").post(f"/tasks/{task.id}", data=disclosure_form)
    data = site.engine.instance_data(task.instance_id)
    assert [p["name"] for p in data["pollutants"]] == ["化学需氧量", "二氧化硫"]
    assert data["pollutants"][1]["exceeds"] is True and data["pollutants"][0]["exceeds"] is False
    assert data["pollutants"][0]["concentration"] == 85.5


def test_upload_is_stored_outside_task_data_and_checked(site, as_user, disclosure_form):
    import io
    from engine.models import Upload
    site.start_disclosure("ent-a")
    task = _open(site, "ent-a")
    client = as_user("ent-a")
    bad = client.post(f"/tasks/{task.id}", data={**disclosure_form, "evidence": (io.BytesIO(b"MZ\x90\x00"), "clip.pdf")},
                      content_type="multipart/form-data")
    assert bad.status_code == 422
    assert "文件内容与扩展名 .pdf 不符" in bad.get_data(as_text=True)
    exe = client.post(f"/tasks/{task.id}", data={**disclosure_form, "evidence": (io.BytesIO(b"MZ"), "x.exe")},
                      content_type="multipart/form-data")
    assert exe.status_code == 422 and "只接受以下类型" in exe.get_data(as_text=True)
    with site.engine.db.read() as session:
        assert session.query(Upload).count() == 0          # nothing stored for refused submissions
    pdf = b"%PDF-1.4\n" + b"0" * 100
    ok = client.post(f"/tasks/{task.id}", data={**disclosure_form, "evidence": (io.BytesIO(pdf), "日报截图.pdf")},
                     content_type="multipart/form-data")
    assert ok.status_code == 302
    data = site.engine.instance_data(task.instance_id)
    upload_id = int(data["evidence"])
    with site.engine.db.read() as session:
        upload = session.get(Upload, upload_id)
        assert upload.filename == "日报截图.pdf" and upload.size == len(pdf) and upload.uploaded_by == "ent-a"
    # the reviewing EPB may download it, another enterprise may not
    review = _open(site, "epb-650102")
    epb = as_user("epb-650102")
    assert "日报截图.pdf" in epb.get(f"/tasks/{review.id}").get_data(as_text=True)
    download = epb.get(f"/files/{upload_id}")
    assert download.status_code == 200 and download.data == pdf
    assert "attachment" in download.headers["Content-Disposition"]
    assert as_user("ent-b").get(f"/files/{upload_id}").status_code == 403
    assert as_user("ent-a").get(f"/files/{upload_id}").status_code == 200


def test_upload_of_another_instance_cannot_be_referenced(site, as_user, disclosure_form):
    import io
    site.start_disclosure("ent-a")
    site.start_disclosure("ent-b")
    pdf = b"%PDF-1.4 secret"
    b_task = _open(site, "ent-b")
    as_user("ent-b").post(f"/tasks/{b_task.id}", data={**disclosure_form, "evidence": (io.BytesIO(pdf), "b.pdf")},
                          content_type="multipart/form-data")
    b_upload = site.engine.instance_data(b_task.instance_id)["evidence"]
    a_task = _open(site, "ent-a")
    response = as_user("ent-a").post(f"/tasks/{a_task.id}", data={**disclosure_form, "evidence": b_upload})
    assert response.status_code == 422
    assert "引用的文件不存在" in response.get_data(as_text=True)


def test_too_large_upload_is_refused(site, app, as_user, disclosure_form):
    import io
    app.config["UPLOAD_MAX_BYTES"] = 1000
    site.start_disclosure("ent-a")
    task = _open(site, "ent-a")
    big = b"%PDF-" + b"0" * 2000
    response = as_user("ent-a").post(f"/tasks/{task.id}", data={**disclosure_form, "evidence": (io.BytesIO(big), "a.pdf")},
                                     content_type="multipart/form-data")
    assert response.status_code == 422
    assert "文件不得超过" in response.get_data(as_text=True)


def test_inbox_sorts_by_due_date_with_badges_filters_and_pages(site, app, as_user, clock):
    from datetime import timedelta
    for _ in range(3):
        site.start_disclosure("ent-a")                 # due 2025-04-03 (one month)
    clock.advance(days=20)
    site.start_disclosure("ent-a")                     # due a month later
    client = as_user("ent-a")
    clock.advance(days=9)                              # 2025-04-01: the first three are due within 7 days
    html = client.get("/").get_data(as_text=True)
    assert html.count("badge-soon") == 3
    dues = re.findall(r'<time datetime="([^"]+)"', html)
    assert dues == sorted(dues)
    clock.advance(days=5)                              # 2025-04-06: three overdue
    html = client.get("/").get_data(as_text=True)
    assert html.count("badge-overdue") == 3
    overdue = client.get("/?overdue=1").get_data(as_text=True)
    assert overdue.count('class="task-link"') == 3
    assert client.get("/?process=web_incident").get_data(as_text=True).count('class="task-link"') == 0
    app.config["INBOX_PER_PAGE"] = 2
    page1 = client.get("/").get_data(as_text=True)
    assert page1.count('class="task-link"') == 2 and "第 1 / 2 页" in page1
    page2 = client.get("/?page=2").get_data(as_text=True)
    assert page2.count('class="task-link"') == 2
    assert 'id="inbox-count">4<' in page2


def test_task_page_escapes_data(site, as_user, disclosure_form):
    site.start_disclosure("ent-a")
    client = as_user("ent-a")
    disclosure_form["legal_representative"] = "<script>alert(1)</script>"
    client.post(f"/tasks/{_open(site, 'ent-a').id}", data=disclosure_form)
    html = as_user("epb-650102").get(f"/tasks/{_open(site, 'epb-650102').id}").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html


def test_security_headers(as_user):
    response = as_user("ent-a").get("/")
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"


def test_lists_of_values_are_checkboxes_or_typed_comma_separated():
    """A list with known values is a group of checkboxes; a free list is typed "C31, C26"."""
    from werkzeug.datastructures import MultiDict
    from engine.forms import Form
    from webui.formview import FormView, split_lists
    schema = {"type": "object", "properties": {
        "conditions": {"type": "array", "title": "条件", "items": {"type": "string", "oneOf": [
            {"const": "a", "title": "甲"}, {"const": "b", "title": "乙"}]}},
        "staff": {"type": "array", "title": "人员", "items": {"type": "object", "properties": {
            "name": {"type": "string", "title": "姓名"},
            "industries": {"type": "array", "title": "行业", "items": {"type": "string"}}}}}}}
    form = Form(schema)
    fields = FormView(form, "zh", {"conditions": ["b"], "staff": [{"name": "张", "industries": ["C31", "C26"]}]}).fields()
    assert fields[0].widget == "checkboxes" and fields[0].value == ["b"]
    assert [o for o in fields[0].options] == [("a", "甲"), ("b", "乙")]
    cell = fields[1].rows[0][1]
    assert cell.widget == "list" and cell.value == "C31, C26" and cell.name == "staff-0-industries"
    raw = MultiDict([("conditions", "a"), ("conditions", "b"), ("staff-0-name", "张"),
                     ("staff-0-industries", "C31，C26 C17")])
    assert form.coerce(split_lists(form, raw)) == {
        "conditions": ["a", "b"], "staff": [{"name": "张", "industries": ["C31", "C26", "C17"]}]}


def test_start_that_fails_at_once_says_so(site, as_user):
    client = as_user("epb-650000")                     # web_incident starts in the regional EPB's lane
    response = client.post("/start/web_incident", follow_redirects=True)
    html = response.get_data(as_text=True)
    assert "自动处理步骤出错" in html and "flash-error" in html
    assert "division by zero" not in html              # the error itself is for the administrator
