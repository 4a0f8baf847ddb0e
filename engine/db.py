"""Database engine and sessions: SQLite (WAL) by default, PostgreSQL via DATABASE_URL."""
from __future__ import annotations

import os
import threading
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.orm import Session, sessionmaker

from . import fastsql

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
        # Each thread keeps one connection checked out (Database below): the pool must not run
        # out however many threads a server runs (a SQLite connection is a file handle).
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               pool_size=8, max_overflow=-1)

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
            if mode != _NO_BEGIN:  # (a held connection's lasting transaction: Database._on_held)
                # straight to pysqlite (SQLAlchemy adds nothing here)
                conn.connection.driver_connection.execute(_BEGIN[mode])

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


_BEGIN = {"IMMEDIATE": "BEGIN IMMEDIATE", "DEFERRED": "BEGIN DEFERRED", "EXCLUSIVE": "BEGIN EXCLUSIVE"}
_NO_BEGIN = "none"


def _empty(session: Session) -> None:
    """Empty a held Session for its next transaction, as close() would (it keeps its connection)."""
    session.expunge_all()
    info = session.info
    key = fastsql.CONNECTION_KEY
    connection = info.get(key)
    info.clear()
    info[key] = connection


def is_sqlite(engine: SAEngine) -> bool:
    return engine.dialect.name == "sqlite"


class _Held:
    """A thread's own connection (SQLite): checked out once, not for every transaction.

    Its Sessions (one per sessionmaker) stay inside one SQLAlchemy transaction for as long as the
    connection lives; SQLite's own transactions are begun and committed on the DBAPI connection
    (see Database._on_held).
    """

    __slots__ = ("connection", "pid", "busy", "sessions", "__weakref__")

    def __init__(self, connection):
        self.connection = connection
        self.pid = os.getpid()
        self.busy = False
        self.sessions: dict = {}  # sessionmaker -> its Session on this connection, emptied after use


def _close_quietly(connection) -> None:
    try:
        connection.close()
    except Exception:  # noqa: BLE001 - closing at thread exit or dispose: nothing left to do
        pass


class Database:
    """Owns the SQLAlchemy engine and hands out transactions.

    On SQLite every thread keeps one connection and runs its transactions on it: checking a
    connection out of the pool and back for every transaction cost more than the statements of a
    typical action. (A transaction opened inside another one in the same thread gets a pooled
    connection of its own, as before; the connection is closed when its thread ends, and after a
    fork a process never uses its parent's.) PostgreSQL uses the pool as it is.
    """

    def __init__(self, url: str):
        self.url = normalise_url(url)
        self.engine = make_engine(self.url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._readers = sessionmaker(
            self.engine.execution_options(sqlite_begin="DEFERRED"), expire_on_commit=False)
        self._local: Optional[threading.local] = threading.local() if is_sqlite(self.engine) else None
        self._closers: set = set()  # weakref.finalize of every held connection (for dispose)
        self._closers_lock = threading.Lock()
        self._commit_callbacks: list = []
        for maker in (self._sessions, self._readers):
            event.listen(maker, "after_begin", fastsql.remember_connection)
            event.listen(maker, "after_transaction_end", fastsql.forget_connection)

    def on_commit(self, callback) -> None:
        """Call `callback(session)` after every committed transaction (writes and reads)."""
        self._commit_callbacks.append(callback)  # (held connections: called by _on_held)
        event.listen(self._sessions, "after_commit", callback)
        event.listen(self._readers, "after_commit", callback)

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self.engine)

    def transaction(self):
        """One write transaction: commit on success, roll back on any error."""
        return self._begin(self._sessions, "IMMEDIATE")

    def read(self):
        """A read-only session (a deferred transaction on SQLite, so readers never block)."""
        return self._begin(self._readers, "DEFERRED")

    @contextmanager
    def read_only(self) -> Iterator[Session]:
        """A read that the database itself keeps from writing (SQLite: PRAGMA query_only for its
        length, so a write raises instead of taking the write lock; PostgreSQL: a READ ONLY
        transaction). For work done outside the write lock whose writes must wait for it."""
        with self.read() as session:
            if not self.is_sqlite:
                session.execute(text("SET TRANSACTION READ ONLY"))
                yield session
                return
            driver = fastsql._connection(session)[0]
            driver.execute("PRAGMA query_only = ON")
            try:
                yield session
                session.flush()  # (what the read's end would write is refused here as well)
            finally:
                driver.execute("PRAGMA query_only = OFF")

    def _begin(self, maker, mode: str):
        held = self._held()
        if held is None:
            return self._pooled(maker)
        return self._on_held(held, maker, mode)

    @staticmethod
    @contextmanager
    def _pooled(maker) -> Iterator[Session]:
        """A transaction on a pooled connection (PostgreSQL; SQLite inside another transaction)."""
        with maker() as session:
            with session.begin():
                yield session

    def _held(self) -> Optional[_Held]:
        """This thread's connection, if it is free (None on PostgreSQL and inside a transaction)."""
        local = self._local
        if local is None:
            return None
        held = getattr(local, "held", None)
        if held is not None and (held.pid != os.getpid() or held.connection.closed
                                 or held.connection.invalidated):
            local.held = held = None  # (a parent's connection after a fork is left alone)
        if held is None:
            connection = self.engine.connect()
            held = local.held = _Held(connection)
            closer = weakref.finalize(held, _close_quietly, connection)  # at thread exit
            with self._closers_lock:
                self._closers = {c for c in self._closers if c.alive}
                self._closers.add(closer)
        return None if held.busy else held

    @contextmanager
    def _on_held(self, held: _Held, maker, mode: str) -> Iterator[Session]:
        """A transaction on this thread's connection: BEGIN and COMMIT straight on the DBAPI connection.

        SQLAlchemy's transaction bookkeeping (a SessionTransaction and a Core Transaction begun and
        ended, their events, the snapshot of the identity map) cost ~85 µs per transaction against
        ~9 µs for BEGIN IMMEDIATE ... COMMIT themselves: more than the statements of a typical read.
        So the Session stays inside one SQLAlchemy transaction (which sends no BEGIN, see
        _sqlite_begin) for as long as the connection lives, and each of our transactions is SQLite's
        own: BEGIN <mode>, the caller's statements, flush, COMMIT, then the commit callbacks
        (on_commit) and an emptied Session. On any error SQLite's transaction is rolled back and
        the Sessions of this connection are thrown away (their objects are detached, as a closed
        Session's are).
        """
        held.busy = True
        driver = None
        session = None
        try:
            session = held.sessions.get(maker)
            if session is None:
                session = self._held_session(held, maker)
            driver = session.info[fastsql.CONNECTION_KEY][0]
            driver.execute(_BEGIN[mode])
            yield session
            session.flush()  # what Session.commit would write first
            driver.commit()
            for callback in self._commit_callbacks:
                callback(session)
            _empty(session)
        except BaseException:
            if driver is not None and driver.in_transaction:
                try:
                    driver.rollback()
                except Exception:  # noqa: BLE001 - the connection is not used again below
                    _close_quietly(held.connection)
            self._drop_sessions(held)
            if held.connection.invalidated:
                _close_quietly(held.connection)  # (a new one is made for the next transaction)
            raise
        finally:
            held.busy = False

    def _held_session(self, held: _Held, maker) -> Session:
        """A Session for this maker inside the connection's lasting SQLAlchemy transaction."""
        connection = held.connection
        if not connection.in_transaction():
            # SQLAlchemy's transaction, without a BEGIN sent to SQLite (see _sqlite_begin)
            connection.execution_options(sqlite_begin=_NO_BEGIN)
            connection.begin()
        # "rollback_only": the Session joins that transaction and never commits it
        session = maker(bind=connection, join_transaction_mode="rollback_only")
        session.connection()  # joined now: fastsql's after_begin listener notes the DBAPI connection
        held.sessions[maker] = session
        return session

    @staticmethod
    def _drop_sessions(held: _Held) -> None:
        sessions, held.sessions = held.sessions, {}
        for session in sessions.values():
            try:
                session.close()
            except Exception:  # noqa: BLE001 - thrown away either way
                pass
        connection = held.connection
        try:
            if connection.in_transaction():
                connection.rollback()  # SQLAlchemy's lasting transaction (SQLite's ended above)
        except Exception:  # noqa: BLE001 - an unusable connection is closed by the caller
            _close_quietly(connection)

    def dispose(self) -> None:
        with self._closers_lock:
            closers, self._closers = self._closers, set()
        for closer in closers:
            closer()
        self.engine.dispose()
