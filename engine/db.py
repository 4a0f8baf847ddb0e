"""Database engine and sessions: SQLite (WAL) by default, PostgreSQL via DATABASE_URL."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.orm import Session, sessionmaker

DEFAULT_SQLITE_PATH = Path("instance") / "cleanaudit.sqlite"


def default_url() -> str:
    """DATABASE_URL from the environment, else a SQLite file under instance/."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return normalise_url(url)
    DEFAULT_SQLITE_PATH.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{DEFAULT_SQLITE_PATH.resolve()}"


def normalise_url(url: str) -> str:
    """Use psycopg 3 for plain postgresql:// URLs."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def make_engine(url: str) -> SAEngine:
    """Create the SQLAlchemy engine with the settings the workflow engine relies on."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            # Let SQLAlchemy, not pysqlite, decide when transactions begin (BEGIN IMMEDIATE below).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            # SQLite's default page cache is 2 MB per connection; the inbox and instance indexes of
            # a region's year (10^5 rows) do not fit, and every action then reads pages again.
            cursor.execute("PRAGMA cache_size=-32768")  # 32 MB
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            # Writers serialise at BEGIN: a deferred transaction that later writes fails with
            # SQLITE_BUSY_SNAPSHOT instead of waiting, which would fail unrelated instances.
            mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
            # straight to pysqlite (this runs for every transaction; SQLAlchemy adds nothing here)
            conn.connection.driver_connection.execute(_BEGIN[mode])

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


_BEGIN = {"IMMEDIATE": "BEGIN IMMEDIATE", "DEFERRED": "BEGIN DEFERRED", "EXCLUSIVE": "BEGIN EXCLUSIVE"}


def is_sqlite(engine: SAEngine) -> bool:
    return engine.dialect.name == "sqlite"


class Database:
    """Owns the SQLAlchemy engine and hands out transactions."""

    def __init__(self, url: str):
        self.url = normalise_url(url)
        self.engine = make_engine(self.url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._readers = sessionmaker(
            self.engine.execution_options(sqlite_begin="DEFERRED"), expire_on_commit=False)

    def on_commit(self, callback) -> None:
        """Call `callback(session)` after every committed transaction (writes and reads)."""
        event.listen(self._sessions, "after_commit", callback)
        event.listen(self._readers, "after_commit", callback)

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self.engine)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One write transaction: commit on success, roll back on any error."""
        with self._sessions() as session:
            with session.begin():
                yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session (a deferred transaction on SQLite, so readers never block)."""
        with self._readers() as session:
            with session.begin():
                yield session

    def dispose(self) -> None:
        self.engine.dispose()
