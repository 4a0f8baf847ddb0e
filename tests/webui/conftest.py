"""Fixtures of the web tests: the fixture process in a fresh SQLite file, actors, logged-in clients."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixture_site  # noqa: E402
from webhelpers import DISCLOSURE_FORM, login, make_app  # noqa: E402


@pytest.fixture(scope="session")
def site_template(tmp_path_factory):
    """The fixture site built once; each test gets a copy of its database file."""
    from datetime import datetime, timedelta, timezone
    from engine import clock as engine_clock
    path = tmp_path_factory.mktemp("web-template") / "web.sqlite"
    with engine_clock.use_clock(datetime(2025, 3, 3, 9, 0, tzinfo=timezone(timedelta(hours=8)))):
        built = fixture_site.build_site(f"sqlite:///{path}")
    built.engine.db.dispose()          # closes connections: the WAL is checkpointed into the file
    return built, path


@pytest.fixture
def site(site_template, tmp_path, clock):
    """The web fixture site on a fixed clock (2025-03-03 09:00 Asia/Shanghai)."""
    template, path = site_template
    copied = fixture_site.copy_site(template, path, tmp_path / "web.sqlite")
    yield copied
    copied.engine.db.dispose()


@pytest.fixture
def app(site):
    return make_app(site)


@pytest.fixture
def csrf_app(site):
    """The app with CSRF protection on, as in production."""
    return make_app(site, WTF_CSRF_ENABLED=True)


@pytest.fixture
def as_user(app):
    """as_user("ent-a") -> a test client logged in as that user."""
    def make(username):
        return login(app.test_client(), username)
    return make


@pytest.fixture
def disclosure_form():
    return dict(DISCLOSURE_FORM)


@pytest.fixture
def demo(tmp_path):
    """A fresh copy of `cleanaudit init --demo` (real processes and forms; real clock)."""
    copied = fixture_site.demo_site(tmp_path / "demo.sqlite")
    yield copied
    copied.engine.db.dispose()


@pytest.fixture
def demo_app(demo):
    return make_app(demo)


@pytest.fixture
def as_demo_user(demo_app):
    """as_demo_user("ent-a") -> a test client of the demo logged in as that demo user."""
    def make(username):
        return login(demo_app.test_client(), username)
    return make


def __getattr__(name):
    """Other folders' `from conftest import ROOT, add_user, ...` reach tests/conftest.py.

    pytest keeps only the most recently loaded conftest.py under the module name "conftest", so
    without this a test module collected after this folder would import from this file.
    """
    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(fixture_site.root_helpers(), name)
