"""Instance history (/instances): who sees which instance, the diagram data, the timeline, the record
of every look at the enterprise's data (Art. 20, 30), the hash-chain badge and the CSV export."""
from __future__ import annotations

import csv
import io
import json
import re

import pytest

from test_i18n import untranslated
from webhelpers import login


@pytest.fixture
def submitted(site, app, disclosure_form):
    """ent-a's emission disclosure, submitted: the local EPB has the review open."""
    instance_id = site.start_disclosure("ent-a")
    task = site.open_task("ent-a")
    response = login(app.test_client(), "ent-a").post(f"/tasks/{task.id}", data=disclosure_form)
    assert response.status_code == 302
    return instance_id


def diagram_data(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="diagram-data">(.*?)</script>', html, re.S)
    assert match, "no diagram data on the page"
    return json.loads(match.group(1))


def views(site, instance_id: int) -> list:
    return [e for e in site.engine.history(instance_id) if e.kind == "confidential_viewed"]


@pytest.mark.parametrize("path", ["/instances", "/instances/{id}", "/instances/{id}/history.csv"])
def test_anonymous_visitors_are_sent_to_the_login(app, submitted, path):
    response = app.test_client().get(path.format(id=submitted))
    assert response.status_code == 302 and "/login" in response.headers["Location"]


@pytest.mark.parametrize("username, status", [
    ("auditor", 200),        # oversees the region, read-only
    ("admin", 200),          # administrator: oversees the region too
    ("ent-a", 200),          # the enterprise acted on it
    ("epb-650102", 200),     # has the review in its inbox
    ("ent-b", 403),          # another enterprise
    ("epb-652300", 403),     # another prefecture's EPB, no task in it
    ("agency-a", 403),       # not commissioned
])
def test_who_may_open_an_instance(as_user, submitted, username, status):
    client = as_user(username)
    assert client.get(f"/instances/{submitted}").status_code == status
    assert client.get(f"/instances/{submitted}/history.csv").status_code == status


def test_unknown_instance_is_not_found(as_user):
    assert as_user("auditor").get("/instances/99999").status_code == 404


def test_auditor_searches_the_instances_of_the_region(as_user, submitted, site):
    other = site.start_disclosure("ent-b")
    client = as_user("auditor")
    html = client.get("/instances").get_data(as_text=True)
    assert f'href="/instances/{submitted}"' in html and f'href="/instances/{other}"' in html
    html = client.get("/instances?enterprise=甲化工").get_data(as_text=True)
    assert f'href="/instances/{submitted}"' in html and f'href="/instances/{other}"' not in html
    html = client.get("/instances?jurisdiction=652301&status=running").get_data(as_text=True)
    assert f'href="/instances/{other}"' in html and f'href="/instances/{submitted}"' not in html
    html = client.get("/instances?status=completed").get_data(as_text=True)
    assert f'href="/instances/{submitted}"' not in html
    html = client.get("/instances?from=2025-03-03&to=2025-03-03&process=web_fixture").get_data(as_text=True)
    assert f'href="/instances/{submitted}"' in html
    html = client.get("/instances?from=2025-03-04").get_data(as_text=True)
    assert f'href="/instances/{submitted}"' not in html
    response = client.get("/instances?from=yesterday")
    assert response.status_code == 200 and 'aria-invalid="true"' in response.get_data(as_text=True)


def test_others_find_only_the_instances_they_act_on(as_user, submitted, site):
    other = site.start_disclosure("ent-b")
    html = as_user("ent-b").get("/instances").get_data(as_text=True)
    assert f'href="/instances/{other}"' in html and f'href="/instances/{submitted}"' not in html
    html = as_user("epb-650102").get("/instances").get_data(as_text=True)
    assert f'href="/instances/{submitted}"' in html and f'href="/instances/{other}"' not in html


def test_instance_page_has_the_diagram_marks_and_the_timeline(as_user, submitted):
    html = as_user("auditor").get(f"/instances/{submitted}").get_data(as_text=True)
    data = diagram_data(html)
    assert "<bpmn:userTask" in data["xml"]
    assert {"start", "set_deadline", "publish_emissions"} <= set(data["completed"])
    assert data["active"] == ["verify_emissions"]
    assert {"flow_start", "flow_deadline", "flow_published"} <= set(data["flows"])
    assert 'id="diagram"' in html and "bpmn-navigated-viewer.production.min.js" in html
    timeline = html.split('id="timeline"', 1)[1]
    assert "流程发起" in timeline and "办理完成" in timeline and "publish_emissions" in timeline
    assert "新疆日报" in timeline and "化学需氧量" in timeline     # the submitted data, readable
    assert "历史记录完整" in html


def test_a_look_at_the_enterprise_data_is_recorded_except_the_enterprise_own(as_user, submitted, site):
    assert views(site, submitted) == []
    as_user("ent-a").get(f"/instances/{submitted}")
    assert views(site, submitted) == []
    html = as_user("auditor").get(f"/instances/{submitted}").get_data(as_text=True)
    recorded = views(site, submitted)
    assert [(e.actor, e.data["what"], e.data["reason"]) for e in recorded] == [
        ("auditor", f"instance {submitted} history", "auditor")]
    assert "您的本次查阅已记入办理经过" in html
    assert "查阅保密信息" in html.split('id="timeline"', 1)[1]       # the view itself is on the timeline
    as_user("epb-650102").get(f"/instances/{submitted}/history.csv")
    assert views(site, submitted)[-1].data["what"] == f"instance {submitted} history (CSV export)"
    assert not site.engine.verify_history()


def test_an_administrator_sees_the_timeline_without_the_enterprise_data(as_user, submitted, site):
    html = as_user("admin").get(f"/instances/{submitted}").get_data(as_text=True)
    timeline = html.split('id="timeline"', 1)[1]
    assert "办理完成" in timeline and "新疆日报" not in timeline and "提交的数据保密" in timeline
    assert views(site, submitted) == []


def test_a_tampered_history_shows_a_broken_chain(as_user, submitted, site):
    from sqlalchemy import update
    from engine.models import Event
    with site.engine.db.transaction() as session:
        session.execute(update(Event).where(Event.instance_id == submitted, Event.seq == 2)
                        .values(data={"title": "forged", "data": {}}))
    html = as_user("ent-a").get(f"/instances/{submitted}").get_data(as_text=True)
    assert "历史记录校验失败" in html and "edited" in html


def test_csv_export_has_a_header_and_one_row_per_event(as_user, submitted, site):
    response = as_user("auditor").get(f"/instances/{submitted}/history.csv")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert f'filename="instance-{submitted}-history.csv"' in response.headers["Content-Disposition"]
    body = response.data
    assert body.startswith(b"\xef\xbb\xbf")             # so that Excel reads UTF-8
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    events = site.engine.history(submitted)
    assert rows[0][:5] == ["序号", "时间（北京时间）", "办理人", "用户名", "事件"]
    assert len(rows) == 1 + len(events)
    assert [int(r[0]) for r in rows[1:]] == [e.seq for e in events]
    assert [r[5] for r in rows[1:]] == [e.kind for e in events]
    assert [r[-1] for r in rows[1:]] == [e.hash for e in events]
    completed = next(r for r in rows[1:] if r[5] == "task_completed")
    assert completed[1] == "2025-03-03 09:00:00" and completed[3] == "ent-a" and completed[7] == "publish_emissions"
    assert "新疆日报" in completed[8]


def test_csv_export_withholds_the_data_from_an_administrator(as_user, submitted):
    body = as_user("admin").get(f"/instances/{submitted}/history.csv").data.decode("utf-8-sig")
    assert "新疆日报" not in body and "提交的数据保密" in body


def test_history_pages_are_translated(app, submitted):
    client = app.test_client()
    client.post("/language", data={"lang": "en"})
    login(client, "auditor")
    for path in ["/instances", "/instances?from=bad", f"/instances/{submitted}"]:
        html = client.get(path).get_data(as_text=True)
        assert 'lang="en"' in html[:200]
        assert untranslated(html) == [], path
        shown = re.sub(r"<script.*?</script>", "", html, flags=re.S)     # the BPMN XML may hold {{ }}
        assert "%(" not in shown and "{{" not in shown
    rows = list(csv.reader(io.StringIO(client.get(f"/instances/{submitted}/history.csv").data.decode("utf-8-sig"))))
    assert rows[0][0] == "No." and "Task completed" in {r[4] for r in rows}


def test_an_incident_is_on_the_diagram_and_the_timeline(as_user, site):
    instance_id = site.engine.start("web_incident", actor="tests", data={"divisor": 0})
    html = as_user("auditor").get(f"/instances/{instance_id}").get_data(as_text=True)
    assert diagram_data(html)["failed"] == ["compute_share"]
    timeline = html.split('id="timeline"', 1)[1]
    assert 'data-kind="incident"' in timeline and "ZeroDivisionError" in html
    html = as_user("auditor").get("/instances?status=incident").get_data(as_text=True)
    assert f'href="/instances/{instance_id}"' in html
