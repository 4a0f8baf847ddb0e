"""Process owners (/processes): versions, downloads, diffs, and deploying from the modeler or an upload.

Saving validates and deploys: a valid change is a new version while running instances stay on theirs;
a user task outside the lanes (or in a lane that is no role) is refused with its id and nothing is
deployed; identical XML is the same version.
"""
from __future__ import annotations

import io
import json
import re

import pytest

from fixture_site import PROCESSES
from test_i18n import untranslated
from webhelpers import csrf_token, login

ORIGINAL = (PROCESSES / "web_fixture.bpmn").read_text(encoding="utf-8")
RENAMED = ORIGINAL.replace('name="核查排放情况公布"', 'name="核查排放情况公布（修订）"')
OUT_OF_LANE = ORIGINAL.replace("<bpmn:flowNodeRef>publish_emissions</bpmn:flowNodeRef>", "")
UNKNOWN_LANE = ORIGINAL.replace('<bpmn:lane id="lane_local_epb" name="local_epb">',
                                '<bpmn:lane id="lane_local_epb" name="reviewers">')
JSON = {"Accept": "application/json"}


def versions(site, process_id="web_fixture"):
    from engine import inspect
    return [(v.version_no, v.running) for v in inspect.process_versions(site.engine, process_id)]


@pytest.fixture
def owner(as_user):
    return as_user("admin")          # administrator and process owner


PAGES = ["/processes/", "/processes/web_fixture", "/processes/web_fixture/versions/1.bpmn",
         "/processes/web_fixture/edit", "/processes/new"]


@pytest.mark.parametrize("path", PAGES)
def test_only_process_owners_open_the_process_pages(app, as_user, path):
    anonymous = app.test_client().get(path)
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]
    for username in ("ent-a", "auditor", "epb-650000"):
        assert as_user(username).get(path).status_code == 403, username
    assert as_user("admin").get(path).status_code == 200


@pytest.mark.parametrize("path", ["/processes/web_fixture/edit", "/processes/new", "/processes/upload"])
def test_only_process_owners_deploy(as_user, path, site):
    response = as_user("auditor").post(path, data={"xml": RENAMED}, headers=JSON)
    assert response.status_code == 403
    assert versions(site) == [(1, 0)]


def test_unknown_process_and_version_are_not_found(owner):
    assert owner.get("/processes/nothing_here").status_code == 404
    assert owner.get("/processes/nothing_here/edit").status_code == 404
    assert owner.get("/processes/web_fixture/versions/7.bpmn").status_code == 404


def test_the_list_shows_versions_with_their_running_instances(owner, site):
    site.start_disclosure("ent-a")
    html = owner.get("/processes/").get_data(as_text=True)
    row = re.search(r'<tr class="latest" data-process="web_fixture" data-version="1">(.*?)</tr>', html, re.S).group(1)
    assert "tests" in row                                   # deployed by
    assert re.findall(r'<td class="num">(\d+)</td>', row) == ["1", "1"]   # running, total


def test_download_gives_the_deployed_xml(owner):
    response = owner.get("/processes/web_fixture/versions/1.bpmn")
    assert response.status_code == 200
    assert 'attachment; filename="web_fixture-v1.bpmn"' == response.headers["Content-Disposition"]
    assert response.data.decode("utf-8") == ORIGINAL


def test_the_edit_page_loads_the_modeler_with_the_latest_xml(owner):
    html = owner.get("/processes/web_fixture/edit").get_data(as_text=True)
    assert "bpmn-modeler.production.min.js" in html and "spiffworkflow-moddle.json" in html
    config = json.loads(re.search(r'id="modeler-data">(.*?)</script>', html, re.S).group(1))
    assert config["xml"] == ORIGINAL and config["saveUrl"] == "/processes/web_fixture/edit"
    # the form files of the process are offered in the panel
    assert '<option value="publish_emissions.schema.json"' in html


def test_a_valid_change_is_deployed_as_a_new_version_and_running_instances_stay(owner, site):
    site.start_disclosure("ent-a")
    response = owner.post("/processes/web_fixture/edit", data={"xml": RENAMED}, headers=JSON)
    assert response.status_code == 201
    body = response.get_json()
    assert body["ok"] and body["created"] and body["version_no"] == 2 and body["errors"] == []
    assert body["url"] == "/processes/web_fixture"
    assert versions(site) == [(2, 0), (1, 1)]
    html = owner.get("/processes/web_fixture").get_data(as_text=True)
    assert '<tr data-version="2">' in html and '<tr data-version="1">' in html


def test_identical_xml_is_the_same_version(owner, site):
    response = owner.post("/processes/web_fixture/edit", data={"xml": ORIGINAL}, headers=JSON)
    assert response.status_code == 200
    body = response.get_json()
    assert body["ok"] and not body["created"] and body["version_no"] == 1
    owner.post("/processes/web_fixture/edit", data={"xml": RENAMED}, headers=JSON)
    again = owner.post("/processes/web_fixture/edit", data={"xml": RENAMED}, headers=JSON).get_json()
    assert again["version_no"] == 2 and not again["created"]
    assert versions(site) == [(2, 0), (1, 0)]


@pytest.mark.parametrize("xml, element", [(OUT_OF_LANE, "publish_emissions"), (UNKNOWN_LANE, "verify_emissions")])
def test_a_user_task_outside_the_role_lanes_is_refused_and_nothing_deployed(owner, site, xml, element):
    response = owner.post("/processes/web_fixture/edit", data={"xml": xml}, headers=JSON)
    assert response.status_code == 422
    body = response.get_json()
    assert not body["ok"] and body["version_no"] is None
    assert element in [p["element_id"] for p in body["errors"]]
    assert all(p["severity"] == "error" for p in body["errors"])
    assert versions(site) == [(1, 0)]
    # without JavaScript: the modeler page again, with the problems listed at their elements
    response = owner.post("/processes/web_fixture/edit", data={"xml": xml})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert f'class="problem problem-error" data-element="{element}"' in html
    assert versions(site) == [(1, 0)]


def test_without_javascript_a_valid_save_redirects_to_the_process(owner, site):
    response = owner.post("/processes/web_fixture/edit", data={"xml": RENAMED})
    assert response.status_code == 302 and response.headers["Location"].endswith("/processes/web_fixture")
    assert "第 2 版" in owner.get("/processes/web_fixture").get_data(as_text=True)


def test_a_file_of_another_process_is_refused_on_the_edit_page(owner, site):
    other = ORIGINAL.replace('id="web_fixture"', 'id="web_other"').replace(
        'processRef="web_fixture"', 'processRef="web_other"')
    response = owner.post("/processes/web_fixture/edit", data={"xml": other}, headers=JSON)
    assert response.status_code == 422 and "web_other" in response.get_json()["errors"][0]["message"]
    assert versions(site) == [(1, 0)]


def test_the_diff_page_shows_what_changed_between_two_versions(owner):
    owner.post("/processes/web_fixture/edit", data={"xml": RENAMED}, headers=JSON)
    html = owner.get("/processes/web_fixture").get_data(as_text=True)          # latest two by default
    assert '<tr class="diff-removed">' in html and '<tr class="diff-added">' in html
    removed = re.findall(r'<tr class="diff-removed">.*?</tr>', html, re.S)
    added = re.findall(r'<tr class="diff-added">.*?</tr>', html, re.S)
    assert len(removed) == len(added) == 1
    assert "核查排放情况公布&#34;" in removed[0] or 'name="核查排放情况公布"' in removed[0].replace("&#34;", '"')
    assert "核查排放情况公布（修订）" in added[0]
    raw = owner.get("/processes/web_fixture?from=1&to=2&raw=1").get_data(as_text=True)
    removed = re.findall(r'<tr class="diff-removed">.*?</tr>', raw, re.S)
    assert len(removed) == 1 and '<td class="ln">53</td>' in removed[0]       # line numbers of the file
    same = owner.get("/processes/web_fixture?from=2&to=2").get_data(as_text=True)
    assert "diff-added" not in same and "两个版本的内容相同" in same


def test_an_upload_is_validated_and_deployed(owner, site):
    response = owner.post("/processes/upload", data={"file": (io.BytesIO(RENAMED.encode()), "web_fixture.bpmn")},
                          content_type="multipart/form-data")
    assert response.status_code == 302 and response.headers["Location"].endswith("/processes/web_fixture")
    assert versions(site) == [(2, 0), (1, 0)]


def test_a_faulty_upload_opens_in_the_modeler_with_its_errors(owner, site):
    response = owner.post("/processes/upload", data={"file": (io.BytesIO(OUT_OF_LANE.encode()), "mine.bpmn")},
                          content_type="multipart/form-data")
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    config = json.loads(re.search(r'id="modeler-data">(.*?)</script>', html, re.S).group(1))
    assert config["xml"] == OUT_OF_LANE and config["saveUrl"] == "/processes/upload?filename=mine.bpmn"
    assert "publish_emissions" in [p["element_id"] for p in config["errors"]]
    assert versions(site) == [(1, 0)]
    # saved again from that page, corrected
    response = owner.post("/processes/upload?filename=mine.bpmn", data={"xml": RENAMED}, headers=JSON)
    assert response.status_code == 201 and response.get_json()["version_no"] == 2


def test_an_upload_that_is_no_bpmn_file_is_refused(owner, site):
    response = owner.post("/processes/upload", data={"file": (io.BytesIO(b"hello"), "notes.txt")},
                          content_type="multipart/form-data", follow_redirects=True)
    assert "请选择一个 .bpmn 文件" in response.get_data(as_text=True)
    response = owner.post("/processes/upload", data={"file": (io.BytesIO(b"<not xml"), "broken.bpmn")},
                          content_type="multipart/form-data")
    assert response.status_code == 422
    assert versions(site) == [(1, 0)]


def test_a_new_process_starts_from_a_skeleton_with_a_diagram(owner, site):
    assert owner.get("/processes/new?process_id=Bad-Id&name=x").status_code == 422
    assert owner.get("/processes/new?process_id=web_fixture&name=x").status_code == 422
    html = owner.get("/processes/new?process_id=noise_report&name=噪声报告").get_data(as_text=True)
    config = json.loads(re.search(r'id="modeler-data">(.*?)</script>', html, re.S).group(1))
    assert 'id="noise_report"' in config["xml"] and "bpmndi:BPMNShape" in config["xml"]
    response = owner.post(config["saveUrl"], data={"xml": config["xml"]}, headers=JSON)
    assert response.status_code == 201 and response.get_json()["process_id"] == "noise_report"
    assert versions(site, "noise_report") == [(1, 0)]
    again = owner.post(config["saveUrl"], data={"xml": config["xml"]}, headers=JSON)
    assert again.status_code == 422                       # "new" never overwrites an existing process


def test_saving_needs_the_csrf_token(csrf_app, site):
    client = csrf_app.test_client()
    token = csrf_token(client, "/login")
    assert client.post("/login", data={"username": "admin", "password": "demo", "csrf_token": token}).status_code == 302
    assert client.post("/processes/web_fixture/edit", data={"xml": RENAMED}, headers=JSON).status_code == 400
    token = csrf_token(client, "/processes/web_fixture/edit")
    response = client.post("/processes/web_fixture/edit", data={"xml": RENAMED, "csrf_token": token}, headers=JSON)
    assert response.status_code == 201
    assert versions(site) == [(2, 0), (1, 0)]


def test_process_pages_are_translated(app, site):
    client = app.test_client()
    client.post("/language", data={"lang": "en"})
    login(client, "admin")
    client.post("/processes/web_fixture/edit", data={"xml": RENAMED}, headers=JSON)
    pages = [client.get(p) for p in ["/processes/", "/processes/web_fixture", "/processes/web_fixture/edit",
                                     "/processes/new", "/processes/new?process_id=x&name="]]
    pages.append(client.post("/processes/web_fixture/edit", data={"xml": OUT_OF_LANE}))
    for response in pages:
        html = response.get_data(as_text=True)
        assert 'lang="en"' in html[:200]
        assert untranslated(html) == [], response.request.path
        shown = re.sub(r"<script.*?</script>", "", html, flags=re.S)     # the BPMN XML may hold {{ }}
        assert "%(" not in shown and "{{" not in shown
    body = client.post("/processes/web_fixture/edit", data={"xml": OUT_OF_LANE}, headers=JSON).get_json()
    assert body["message"].startswith("Not deployed")
