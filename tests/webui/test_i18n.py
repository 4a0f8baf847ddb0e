"""Every page in zh-CN and in English, without a missing translation.

Source strings are Chinese (the default language), so a string that misses its English
translation shows up as Chinese on an English page. Data (task titles, enterprise names, ...) is
marked `translate="no"` in the templates and is left out of the check.
"""
from __future__ import annotations

import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from fixture_site import add_public_records
from webhelpers import login

ROOT = Path(__file__).resolve().parents[2]
WEBUI = ROOT / "webui"
PO = WEBUI / "translations" / "en" / "LC_MESSAGES" / "messages.po"
MO = PO.with_suffix(".mo")
CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")
CHECKED_ATTRIBUTES = ("title", "placeholder", "aria-label", "alt")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def _catalogue():
    from babel.messages.pofile import read_po
    with PO.open("rb") as handle:
        return read_po(handle, locale="en")


def test_english_catalogue_has_no_empty_or_fuzzy_translation():
    catalogue = _catalogue()
    empty = [m.id for m in catalogue if m.id and not (m.string if isinstance(m.string, str) else all(m.string))]
    fuzzy = [m.id for m in catalogue if m.id and m.fuzzy]
    assert not empty, f"untranslated: {empty}"
    assert not fuzzy, f"fuzzy: {fuzzy}"


def test_every_string_of_the_code_is_in_the_catalogue(tmp_path):
    pot = tmp_path / "messages.pot"
    subprocess.run([sys.executable, "-m", "babel.messages.frontend", "extract", "-F", str(WEBUI / "babel.cfg"),
                    "-k", "_l", "--ignore-dirs=.* ._ node_modules __pycache__", "-o", str(pot), str(WEBUI)],
                   check=True, capture_output=True)
    from babel.messages.pofile import read_po
    with pot.open("rb") as handle:
        wanted = {m.id for m in read_po(handle) if m.id}
    known = {m.id for m in _catalogue() if m.id}
    assert not sorted(wanted - known), "run pybabel update (see webui/babel.cfg) and translate"


def test_compiled_catalogue_matches_the_po_file():
    from babel.messages.mofile import read_mo
    with MO.open("rb") as handle:
        compiled = {m.id: m.string for m in read_mo(handle) if m.id}
    source = {m.id: m.string for m in _catalogue() if m.id}
    assert compiled == source, "compile with: pybabel compile -d webui/translations"


def test_placeholders_survive_translation():
    for message in _catalogue():
        if message.id:
            assert sorted(re.findall(r"%\(\w+\)\w", message.id)) == sorted(re.findall(r"%\(\w+\)\w", message.string)), message.id


class UntranslatedFinder(HTMLParser):
    """Collects CJK text outside translate="no" elements, <script> and <style>."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[bool] = []        # True where translation is off (data)
        self.found: list[str] = []

    def _skipping(self) -> bool:
        return any(self.stack)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        # <title> may hold data (a task title) and cannot be marked; its words are checked in <h1>
        off = attributes.get("translate") == "no" or tag in ("script", "style", "template", "textarea", "title")
        if not self._skipping() and not off:
            for name in CHECKED_ATTRIBUTES:
                if attributes.get(name) and CJK.search(attributes[name]):
                    self.found.append(f"<{tag} {name}={attributes[name]!r}>")
        if tag not in VOID:
            self.stack.append(off)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag not in VOID and self.stack:
            self.stack.pop()

    def handle_data(self, data):
        if not self._skipping() and CJK.search(data):
            self.found.append(data.strip())


def untranslated(html: str) -> list[str]:
    finder = UntranslatedFinder()
    finder.feed(html)
    return finder.found


def test_the_checker_finds_chinese_outside_data():
    assert untranslated('<p>Hello <b translate="no">甲公司</b></p>') == []
    assert untranslated("<p>待办</p>") == ["待办"]
    assert untranslated('<input title="必填">') == ["<input title='必填'>"]
    assert untranslated('<div translate="no"><p>甲</p><br></div><p>乙</p>') == ["乙"]


@pytest.fixture
def walk(site, app, disclosure_form):
    """Pages of every kind, with data behind them: (user, method, path, form, expected status)."""
    site.start_disclosure("ent-a")
    publish = site.open_task("ent-a")
    site.engine.start("web_incident", actor="tests", data={"divisor": 0})
    site.engine.send_message("nobody_waits", {"x": 1}, {})
    add_public_records(site)
    # a second instance, submitted, so that the EPB has a review with earlier data
    site.start_disclosure("ent-a")
    second = [r for r in site.engine.inbox(site.user("ent-a")).rows if r.id != publish.id][0]
    login(app.test_client(), "ent-a").post(f"/tasks/{second.id}", data=disclosure_form)
    review = site.open_task("epb-650102")
    invalid = {**disclosure_form, "pollutants-0-concentration": "x", "media": ""}
    return [
        (None, "GET", "/login", None, 200),
        (None, "POST", "/login", {"username": "ent-a", "password": "wrong"}, 200),
        (None, "GET", "/public/", None, 200),
        (None, "GET", "/public/lists", None, 200),
        (None, "GET", "/public/emissions", None, 200),
        (None, "GET", "/public/agencies", None, 200),
        (None, "GET", "/public/reviews", None, 200),
        (None, "GET", "/public/commendations", None, 200),
        (None, "GET", "/public/named", None, 200),
        (None, "GET", "/public/penalties", None, 200),
        (None, "GET", "/public/nowhere", None, 404),
        ("ent-a", "GET", "/", None, 200),
        ("ent-a", "GET", "/?overdue=1", None, 200),
        ("ent-a", "GET", f"/tasks/{publish.id}", None, 200),
        ("ent-a", "POST", f"/tasks/{publish.id}", invalid, 422),
        ("ent-a", "POST", f"/tasks/{publish.id}", {**disclosure_form, "_action": "add:pollutants"}, 200),
        ("ent-a", "GET", f"/tasks/{second.id}", None, 200),          # completed: the closed page
        ("ent-a", "POST", f"/tasks/{second.id}", disclosure_form, 409),
        ("ent-a", "GET", "/admin/", None, 403),
        ("ent-b", "GET", f"/tasks/{publish.id}", None, 403),
        ("epb-650102", "GET", "/", None, 200),
        ("epb-650102", "GET", f"/tasks/{review.id}", None, 200),
        ("epb-650102", "POST", f"/tasks/{review.id}", {"decision": "return"}, 422),
        ("admin", "GET", "/", None, 200),
        ("admin", "GET", "/admin/", None, 200),
        ("admin", "GET", "/admin/users", None, 200),
        ("admin", "POST", "/admin/users", {"username": "", "password": "x", "roles": ["nope"]}, 422),
        ("admin", "GET", f"/admin/users/{site.user('ent-a').id}", None, 200),
        ("admin", "GET", "/admin/organisations", None, 200),
        ("admin", "POST", "/admin/organisations", {"kind": "", "credit_code": "123"}, 422),
        ("admin", "GET", f"/admin/organisations/{site.orgs['agency-a']}", None, 200),
        ("admin", "GET", "/admin/calendar?year=2025", None, 200),
        ("admin", "GET", "/admin/calendar?year=2031", None, 200),
        ("admin", "GET", "/admin/incidents", None, 200),
        ("admin", "GET", "/admin/messages", None, 200),
        ("admin", "GET", "/tasks/00000000-0000-0000-0000-000000000000", None, 404),
    ]


def _fetch(app, user, method, path, form):
    client = app.test_client()
    if user:
        login(client, user)
    return client, client.open(path, method=method, data=form)


@pytest.mark.parametrize("language", ["zh_CN", "en"])
def test_every_page_renders_in_both_languages(app, walk, language):
    problems = []
    for user, method, path, form, status in walk:
        client = app.test_client()
        client.post("/language", data={"lang": language})
        if user:
            login(client, user)
        response = client.open(path, method=method, data=form)
        html = response.get_data(as_text=True)
        where = f"{user or 'anonymous'} {method} {path}"
        if response.status_code != status:
            problems.append(f"{where}: status {response.status_code}, expected {status}")
            continue
        expected_lang = 'lang="en"' if language == "en" else 'lang="zh-CN"'
        if expected_lang not in html[:200]:
            problems.append(f"{where}: not in {language}")
        if "%(" in html or "{{" in html or "{%" in html:
            problems.append(f"{where}: unformatted placeholder")
        if language == "en":
            leftovers = untranslated(html)
            if leftovers:
                problems.append(f"{where}: untranslated {leftovers[:8]}")
    assert not problems, "\n".join(problems)


def test_flash_messages_and_throttle_page_are_translated(app, site, disclosure_form):
    client = app.test_client()
    client.post("/language", data={"lang": "en"})
    login(client, "ent-a")
    response = client.post("/start/web_fixture", follow_redirects=True)
    assert "Started:" in response.get_data(as_text=True)
    assert not untranslated(response.get_data(as_text=True))
    task = site.open_task("ent-a")
    response = client.post(f"/tasks/{task.id}", data=disclosure_form, follow_redirects=True)
    assert "Submitted:" in response.get_data(as_text=True)
    assert not untranslated(response.get_data(as_text=True))
    anonymous = app.test_client()
    anonymous.post("/language", data={"lang": "en"})
    response = anonymous.get("/", follow_redirects=True)
    assert "Please log in first." in response.get_data(as_text=True)
    for _ in range(5):
        anonymous.post("/login", data={"username": "x", "password": "y"})
    response = anonymous.post("/login", data={"username": "x", "password": "y"})
    assert response.status_code == 429 and not untranslated(response.get_data(as_text=True))


def test_articles_and_dates_follow_the_language(app, site):
    site.start_disclosure("ent-a")
    client = login(app.test_client(), "ent-a")
    assert "第十条" in client.get("/").get_data(as_text=True)
    client.post("/language", data={"lang": "en"})
    html = client.get("/").get_data(as_text=True)
    assert "Art. 10" in html
    assert "2025-04-03" in html             # due one month after 2025-03-03, shown in Asia/Shanghai


def test_article_labels(app):
    from webui.i18n import article_label
    with app.test_request_context():
        assert article_label("Art. 10") == "第十条"
        assert article_label("Art. 15, 19") == "第十五条、第十九条"
        assert article_label("Art. 33") == "第三十三条"
        assert article_label("第二十条") == "第二十条"
    with app.test_request_context():
        from flask import session
        session["lang"] = "en"
        assert article_label("Art. 15, 19") == "Arts. 15, 19"
