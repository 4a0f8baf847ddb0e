"""The few statements every action runs, sent to SQLite's DBAPI cursor directly.

SQLAlchemy Core adds 40-50 µs to each statement it executes (compiled-cache look-up, execution
context, result wrapping); pysqlite itself takes 5-10 µs. An action runs about ten statements, all
of the same few shapes. Here a Core statement is compiled once per set of parameter names, with the
bind processors of its columns' types (so values are stored exactly as SQLAlchemy stores them: UTC
datetimes, JSON), and then executed on the connection of the session's own transaction.

On other databases (PostgreSQL) statements go through SQLAlchemy unchanged.
"""
from __future__ import annotations

import threading
from typing import Optional

from sqlalchemy.orm import Session

_compiled: dict = {}
_lock = threading.Lock()
# session.info key: (DBAPI connection, dialect) of the session's transaction, set by Database's
# after_begin listener and dropped at the transaction's end (asking the Session each time costs
# more than a statement on SQLite)
CONNECTION_KEY = "fastsql_connection"


def remember_connection(session: Session, _transaction, connection) -> None:
    """Session "after_begin" listener (engine/db.py)."""
    session.info[CONNECTION_KEY] = (connection.connection.driver_connection, connection.dialect)


def forget_connection(session: Session, transaction) -> None:
    """Session "after_transaction_end" listener (engine/db.py)."""
    if transaction.parent is None:
        session.info.pop(CONNECTION_KEY, None)


def is_sqlite(session: Session) -> bool:
    """Whether the session's transaction runs on SQLite (statements go to pysqlite here)."""
    return _connection(session)[1].name == "sqlite"


def _connection(session: Session) -> tuple:
    """(DBAPI connection, dialect) of the session's transaction (begun here if need be)."""
    found = session.info.get(CONNECTION_KEY)
    if found is None:
        connection = session.connection()
        found = session.info.get(CONNECTION_KEY) or (connection.connection.driver_connection,
                                                     connection.dialect)
    return found


class _Prepared:
    __slots__ = ("sql", "names", "processors", "pairs", "results", "fixed")

    def __init__(self, statement, dialect, keys: tuple):
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        if compiled.positiontup is None:
            raise ValueError("fastsql needs a positional paramstyle")
        self.sql = compiled.string
        self.names = list(compiled.positiontup)
        # a bind's processor (TypeDecorator chains included), or None for values passed as they are
        self.processors = [compiled.binds[name].type._cached_bind_processor(dialect) for name in self.names]
        self.pairs = list(zip(self.names, self.processors))
        # values written into the statement itself (status == "open"): not given by the caller
        self.fixed = {name: compiled.binds[name].effective_value for name in self.names
                      if name not in keys and compiled.binds[name].value is not None}
        # for a SELECT: each result column's processor (SQLite's text dates, JSON), or None
        self.results = [entry.type._cached_result_processor(dialect, None)
                        for entry in getattr(compiled, "_result_columns", None) or []]


def _prepared(statement, dialect, keys: tuple) -> _Prepared:
    key = (id(statement), keys)
    entry = _compiled.get(key)
    if entry is None or entry[0] is not statement:
        with _lock:
            if len(_compiled) > 1000:  # meant for module-level statements; stay bounded regardless
                _compiled.clear()
            entry = (statement, _Prepared(statement, dialect, keys))
            _compiled[key] = entry
    return entry[1]


def _args(prepared: _Prepared, params: dict) -> tuple:
    if prepared.fixed:
        params = {**prepared.fixed, **params}
    return tuple([params[name] if process is None else process(params[name]) for name, process in prepared.pairs])


def execute(session: Session, statement, params: dict):
    """Execute a prepared Core INSERT/UPDATE/SELECT with one parameter set; returns a DBAPI cursor
    on SQLite (rowcount, fetchone) or SQLAlchemy's result elsewhere (the same two work on both)."""
    driver, dialect = _connection(session)
    if dialect.name != "sqlite":
        return session.execute(statement, params)
    prepared = _prepared(statement, dialect, tuple(params))
    return driver.execute(prepared.sql, _args(prepared, params))


def fetch_one(session: Session, statement, params: dict) -> Optional[tuple]:
    """The first row of a prepared SELECT, its values converted as SQLAlchemy converts them."""
    driver, dialect = _connection(session)
    if dialect.name != "sqlite":
        found = session.execute(statement, params).first()
        return tuple(found) if found is not None else None
    prepared = _prepared(statement, dialect, tuple(params))
    found = driver.execute(prepared.sql, _args(prepared, params)).fetchone()
    if found is None:
        return None
    return tuple(value if process is None or value is None else process(value)
                 for value, process in zip(found, prepared.results))


def fetch_all(session: Session, statement, params: dict) -> list:
    """All rows of a prepared SELECT (tuples), values converted as SQLAlchemy converts them."""
    driver, dialect = _connection(session)
    if dialect.name != "sqlite":
        return [tuple(row) for row in session.execute(statement, params)]
    prepared = _prepared(statement, dialect, tuple(params))
    rows = driver.execute(prepared.sql, _args(prepared, params)).fetchall()
    results = prepared.results
    if not any(results):
        return rows
    return [tuple([value if process is None or value is None else process(value)
                   for value, process in zip(row, results)]) for row in rows]


def execute_many(session: Session, statement, rows: list[dict]) -> None:
    """Execute a Core INSERT for several rows with the same keys."""
    if not rows:
        return
    driver, dialect = _connection(session)
    if dialect.name != "sqlite":
        session.execute(statement, rows)
        return
    prepared = _prepared(statement, dialect, tuple(rows[0]))
    driver.executemany(prepared.sql, [_args(prepared, row) for row in rows])

