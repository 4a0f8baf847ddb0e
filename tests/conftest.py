"""Shared fixtures: a real SQLite database per test, a movable clock, actors."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
import os
from pathlib import Path
import shutil
import tempfile
from typing import Iterable, Optional

import pytest

# Every save in the tests is checked against a full re-encoding of the workflow (engine/state.py):
# a task whose change the incremental save missed fails the test that changed it.
os.environ.setdefault("CLEANAUDIT_STATE_CHECK", "1")

ROOT = Path(__file__).resolve().parent.parent
SHANGHAI = timezone(timedelta(hours=8))


class Clock:
    """The test's clock: every engine call inside the test sees this time."""

    def __init__(self, start: datetime):
        from engine import clock as engine_clock
        self._clock = engine_clock
        self.now = start
        engine_clock.set_now(start)

    def set(self, when: datetime) -> datetime:
        self.now = when
        self._clock.set_now(when)
        return when

    def advance(self, **kwargs) -> datetime:
        return self.set(self.now + timedelta(**kwargs))


@pytest.fixture
def clock():
    """A fake clock starting 2025-03-03 09:00 Asia/Shanghai; tests move it, never sleep."""
    from engine import clock as engine_clock
    fake = Clock(datetime(2025, 3, 3, 9, 0, tzinfo=SHANGHAI))
    yield fake
    engine_clock.reset()


_TEMPLATE: dict = {}


def _sqlite_template() -> Path:
    """A migrated, seeded SQLite file made once per test session and copied for each test."""
    if "path" not in _TEMPLATE:
        from engine.facade import Engine
        from engine.accounts import seed_calendar, seed_divisions
        path = Path(tempfile.mkdtemp(prefix="cleanaudit-template-")) / "template.sqlite"
        engine = Engine(f"sqlite:///{path}")
        engine.create_schema()
        with engine.db.transaction() as session:
            seed_divisions(session)
            seed_calendar(session)
        engine.db.dispose()
        _TEMPLATE["path"] = path
    return _TEMPLATE["path"]


def make_engine(url: str, processes_dir: Optional[Path] = None, forms_dir: Optional[Path] = None):
    """An engine on a migrated database with the divisions and the holiday calendar loaded."""
    from engine.facade import Engine
    from engine.accounts import seed_calendar, seed_divisions
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        shutil.copyfile(_sqlite_template(), url[len("sqlite:///"):])
        return Engine(url, processes_dir=processes_dir or ROOT / "processes",
                      forms_dir=forms_dir or ROOT / "forms")
    engine = Engine(url, processes_dir=processes_dir or ROOT / "processes",
                    forms_dir=forms_dir or ROOT / "forms")
    engine.create_schema()
    with engine.db.transaction() as session:
        seed_divisions(session)
        seed_calendar(session)
    return engine


@pytest.fixture(autouse=True)
def _fast_password_hashing(monkeypatch):
    """scrypt costs ~0.15 s per user; tests create hundreds. Same code path, a cheap method."""
    from werkzeug.security import generate_password_hash
    import engine.accounts as accounts
    monkeypatch.setattr(accounts, "generate_password_hash",
                        lambda password: generate_password_hash(password, method="pbkdf2:sha256:1000"))


@pytest.fixture
def engine(tmp_path):
    """An engine on a fresh SQLite file with divisions and the calendar loaded, nothing deployed."""
    eng = make_engine(f"sqlite:///{tmp_path / 'cleanaudit.sqlite'}")
    yield eng
    eng.db.dispose()


def add_organisation(engine, *, kind: str, name: str, credit_code: str, division_code: str,
                     filing_status: str = "none", **extra) -> int:
    from engine.models import Organisation
    with engine.db.transaction() as session:
        org = Organisation(kind=kind, name=name, credit_code=credit_code, division_code=division_code,
                           filing_status=filing_status, **extra)
        session.add(org)
        session.flush()
        return org.id


def add_user(engine, username: str, roles: Iterable[str], *, jurisdiction_code: Optional[str] = None,
             organisation_id: Optional[int] = None, password: str = "pw"):
    from engine.accounts import create_user
    with engine.db.transaction() as session:
        return create_user(session, username, password, roles, jurisdiction_code=jurisdiction_code,
                           organisation_id=organisation_id)


# ---------------------------------------------------------------------------- PostgreSQL
import glob
import os
import shutil
import socket
import subprocess
import tempfile


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """A throwaway PostgreSQL cluster on loopback, started for the test session."""

    def __init__(self):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            raise RuntimeError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); "
                               "`make test` installs the Debian package postgresql")
        self.bindir = Path(bins[-1]).parent
        self.root = Path(tempfile.mkdtemp(prefix="cleanaudit-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
            os.chmod(self.root, 0o700)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-locale")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "start", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                  f"-c max_connections=200")
        self.counter = 0

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bindir / tool), *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, text=True)

    def create_database(self) -> str:
        import psycopg
        self.counter += 1
        name = f"test_{os.getpid()}_{self.counter}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    """The session's PostgreSQL server; in CI its absence is a failure, elsewhere a loud skip."""
    try:
        server = PostgresServer()
    except Exception as exc:  # noqa: BLE001 — report why, then fail or skip
        message = f"PostgreSQL could not be started: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message)
        print("\n" + "!" * 70 + f"\n{message}\n" + "!" * 70)
        pytest.skip(message)
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_engine(request, tmp_path):
    """The same test on a SQLite file and on the throwaway PostgreSQL server."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'cleanaudit.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_server").create_database()
    eng = make_engine(url, ROOT / "tests" / "data" / "engine" / "processes",
                      ROOT / "tests" / "data" / "engine" / "forms")
    yield eng
    eng.db.dispose()
