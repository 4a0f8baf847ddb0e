"""Browser tests: the app served on a free loopback port in a thread, driven by Debian Chromium.

Every test runs against each site (test ids `[demo]`, `[fixture]`):
- demo: `cleanaudit init --demo` (engine.seed + engine.demo), the real processes and forms, as
  `make run` serves them (built once per session, copied for each test; screenshots demo-*.png);
- fixture: the web fixture (tests/webui/data, process `web_fixture`).
CLEANAUDIT_BROWSER_SITE=demo (or =fixture) runs one of them only.
"""
from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "webui"))
import fixture_site  # noqa: E402
from scenario import DEMO, FIXTURE, Scenario  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"


@dataclass
class LiveSite:
    url: str
    site: object            # fixture_site.Site (or a Site wrapping the demo engine)
    scenario: Scenario

    def path(self, path: str) -> str:
        return self.url + path


SITES = [name for name in ("demo", "fixture")
         if os.environ.get("CLEANAUDIT_BROWSER_SITE", name) == name] or ["demo", "fixture"]


def _build(name: str, tmp_path) -> tuple[object, Scenario]:
    if name == "demo":
        return fixture_site.demo_site(tmp_path / "demo.sqlite"), DEMO
    site = fixture_site.build_site(f"sqlite:///{tmp_path / 'browser.sqlite'}")
    return site, FIXTURE


@pytest.fixture(params=SITES)
def live(request, tmp_path):
    """The web UI on http://127.0.0.1:<free port>, in a thread, with a fresh database."""
    from werkzeug.serving import make_server
    from webui import create_app
    site, scenario = _build(request.param, tmp_path)
    scenario.prepare(site)
    app = create_app({"SECRET_KEY": "browser-tests", "ENGINE": site.engine, "SESSION_COOKIE_SECURE": False})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="webui-test-server", daemon=True)
    thread.start()
    try:
        yield LiveSite(f"http://127.0.0.1:{server.server_port}", site, scenario)
    finally:
        server.shutdown()
        thread.join(timeout=10)
        site.engine.db.dispose()


@pytest.fixture(scope="module")
def browser():
    """Chromium for one test module: Playwright's sync API allows one running instance per process,
    so it is closed before other folders' browser tests start theirs."""
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)       # never silently skipped in CI
        pytest.skip(message)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def shot(live):
    """shot(page, "01-login") saves a full-page screenshot under test-artifacts/screenshots/
    (demo-01-login.png for the demo site)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    prefix = live.scenario.screenshot_prefix

    def save(page, name: str) -> Path:
        path = SCREENSHOTS / f"{prefix}{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path
    return save


@pytest.fixture
def actor(browser, live):
    """actor("ent-a") -> a page in its own browser context (own cookies), logged in."""
    contexts = []

    def make(username: str | None, *, locale: str = "zh-CN"):
        context = browser.new_context(viewport={"width": 1280, "height": 860}, locale=locale)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15000)
        if username:
            login(page, live, username)
        return page
    yield make
    for context in contexts:
        context.close()


def login(page, live, username: str, password: str = fixture_site.PASSWORD) -> None:
    page.goto(live.path("/login"))
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit].primary")
    page.wait_for_url(live.path("/"))


def __getattr__(name):
    """Other folders' `from conftest import ROOT, add_user, ...` reach tests/conftest.py.

    pytest keeps only the most recently loaded conftest.py under the module name "conftest", so
    without this a test module collected after this folder would import from this file.
    """
    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(fixture_site.root_helpers(), name)
