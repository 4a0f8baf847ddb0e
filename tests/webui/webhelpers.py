"""Helpers of the web tests (imported by name: a module called conftest would be ambiguous)."""
from __future__ import annotations

import re

import fixture_site


def make_app(site, **config):
    from webui import create_app
    settings = {"TESTING": True, "SECRET_KEY": "test-secret", "ENGINE": site.engine,
                "WTF_CSRF_ENABLED": False, "SERVER_NAME": None}
    settings.update(config)
    return create_app(settings)


def login(client, username, password=fixture_site.PASSWORD):
    response = client.post("/login", data={"username": username, "password": password})
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    return client


def csrf_token(client, path="/login") -> str:
    html = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no csrf token on " + path
    return match.group(1)


DISCLOSURE_FORM = {
    "enterprise_name": "乌鲁木齐甲化工有限公司", "legal_representative": "王建国",
    "address": "乌鲁木齐市天山区解放南路1号", "division_code": "650102", "media": "新疆日报",
    "disclosure_date": "2025-03-10", "pollutants-0-name": "化学需氧量", "pollutants-0-medium": "water", "pollutants-0-discharge_mode": "间接排放",
    "pollutants-0-concentration": "85.5", "pollutants-0-unit": "mg/L", "pollutants-0-annual_total_t": "12.4",
    "pollutants-1-name": "二氧化硫", "pollutants-1-medium": "air", "pollutants-1-discharge_mode": "有组织连续排放",
    "pollutants-1-concentration": "320", "pollutants-1-unit": "mg/m³", "pollutants-1-annual_total_t": "48",
    "pollutants-1-exceeds": "true",
}
