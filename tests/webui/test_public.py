"""Public disclosure (no login): only what the Measures publish, never anything confidential."""
from __future__ import annotations

import pytest

from fixture_site import add_public_records

PAGES = {
    "/public/lists": "2025年第一批强制性清洁生产审核企业名单（乌鲁木齐市）",
    "/public/reviews": "丙纺织有限公司自愿性清洁生产审核评审结果",
    "/public/commendations": "2025年度清洁生产先进企业",
    "/public/named": "某咨询公司审核弄虚作假",
    "/public/penalties": "乌环罚〔2025〕1号",
}


@pytest.fixture
def records(site):
    return add_public_records(site)


@pytest.mark.parametrize("path", sorted(PAGES))
def test_each_public_page_lists_its_published_records(app, records, path):
    html = app.test_client().get(path).get_data(as_text=True)
    assert PAGES[path] in html
    for secret in ("机密", "未公开的审核报告"):
        assert secret not in html


def test_confidential_or_unpublished_records_are_never_shown(app, records):
    client = app.test_client()
    for title in ("机密：不应公开的排放记录", "未公开的审核报告"):
        assert client.get(f"/public/records/{records[title]}").status_code == 404
    assert "机密" not in client.get("/public/emissions").get_data(as_text=True)
    index = client.get("/public/").get_data(as_text=True)
    assert "机密" not in index


def test_index_counts_and_articles(app, records):
    html = app.test_client().get("/public/").get_data(as_text=True)
    for article in ("第九条", "第十条", "第十七条", "第十九条", "第二十二条", "第二十九条"):
        assert article in html
    assert html.count("1 条") >= 5


def test_mandatory_list_by_year_and_batch(app, records):
    client = app.test_client()
    html = client.get("/public/lists?year=2025").get_data(as_text=True)
    assert "2025 年度 第 1 批" in html and "乌鲁木齐甲化工有限公司" in html
    assert "超标或超总量排放" in html
    assert "乌鲁木齐甲化工有限公司" not in client.get("/public/lists?year=2024").get_data(as_text=True)


def test_registry_lists_only_filed_agencies(app, site):
    html = app.test_client().get("/public/agencies").get_data(as_text=True)
    assert "新疆清源环境咨询有限公司" in html and "XJQJ-2025-001" in html
    assert "新疆申请中咨询有限公司" not in html
    assert "乌鲁木齐" in html                     # the division, by name


def test_record_detail_is_public(app, records):
    record_id = records["某咨询公司审核弄虚作假"]
    html = app.test_client().get(f"/public/records/{record_id}").get_data(as_text=True)
    assert "伪造物料平衡数据" in html and "第二十九条" in html


def test_public_pages_need_no_login_and_unknown_sections_are_404(app):
    client = app.test_client()
    assert client.get("/public/").status_code == 200
    assert client.get("/public/secrets").status_code == 404
    assert client.get("/public/records/999").status_code == 404


def test_public_index_answers_with_and_without_the_slash(app):
    client = app.test_client()
    assert client.get("/public").status_code == 200
    assert client.get("/public/").status_code == 200
