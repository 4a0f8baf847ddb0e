"""engine.db: transactions on SQLite run on one connection per thread, kept between transactions."""
from __future__ import annotations

import gc
import threading

import pytest
from sqlalchemy import text

from engine import fastsql
from engine.db import Database


@pytest.fixture()
def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with database.transaction() as session:
        session.execute(text("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT)"))
    yield database
    database.dispose()


def _names(db) -> list:
    with db.read() as session:
        return list(session.scalars(text("SELECT name FROM item ORDER BY id")))


def _checked_out(db) -> int:
    return db.engine.pool.checkedout()


def test_a_thread_runs_its_transactions_on_one_connection(db):
    seen = set()
    for name in ("a", "b", "c"):
        with db.transaction() as session:
            session.execute(text("INSERT INTO item (name) VALUES (:n)"), {"n": name})
            seen.add(id(session.connection().connection.driver_connection))
        with db.read() as session:
            seen.add(id(session.connection().connection.driver_connection))
    assert len(seen) == 1
    assert _names(db) == ["a", "b", "c"]
    assert _checked_out(db) == 1


def test_a_failed_transaction_changes_nothing_and_the_next_one_works(db):
    with pytest.raises(RuntimeError):
        with db.transaction() as session:
            session.execute(text("INSERT INTO item (name) VALUES ('lost')"))
            raise RuntimeError("the action failed")
    with db.transaction() as session:
        session.execute(text("INSERT INTO item (name) VALUES ('kept')"))
    assert _names(db) == ["kept"]


def test_a_session_is_empty_when_reused(db):
    with db.transaction() as session:
        session.info["marker"] = 1
        session.execute(text("INSERT INTO item (name) VALUES ('x')"))
    with db.transaction() as session:
        # nothing the last transaction left (the only key is fastsql's note of the connection)
        assert "marker" not in session.info
        assert set(session.info) <= {fastsql.CONNECTION_KEY}
        assert len(session.identity_map) == 0


def test_a_transaction_inside_another_gets_its_own_connection(db):
    with db.transaction() as outer:
        outer.execute(text("INSERT INTO item (name) VALUES ('outer')"))
        with db.read() as inner:  # a deferred read: sees what was committed, not the outer's insert
            assert list(inner.scalars(text("SELECT name FROM item"))) == []
            assert inner.connection().connection.driver_connection is not \
                outer.connection().connection.driver_connection
    assert _names(db) == ["outer"]


def test_threads_keep_their_own_connection_and_give_it_back_when_they_end(db):
    errors = []

    def work(n):
        try:
            for i in range(5):
                with db.transaction() as session:
                    session.execute(text("INSERT INTO item (name) VALUES (:n)"), {"n": f"{n}-{i}"})
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    _names(db)  # this thread's connection
    threads = [threading.Thread(target=work, args=(n,)) for n in range(12)]  # more than pool_size
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    gc.collect()
    assert errors == []
    assert len(_names(db)) == 60
    assert _checked_out(db) == 1  # only this thread's


def test_dispose_closes_every_held_connection(db):
    _names(db)
    done = threading.Event()
    release = threading.Event()

    def hold():
        _names(db)
        done.set()
        release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    done.wait(10)
    assert _checked_out(db) == 2
    db.dispose()
    assert _checked_out(db) == 0
    release.set()
    thread.join()
    assert _names(db) == []  # a new connection after dispose


def test_the_migrations_build_the_schema_the_models_describe(tmp_path):
    """An empty database upgraded by the Alembic migrations has every table and index of the models."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from engine.migrate import upgrade
    from engine.models import Base
    database = Database(f"sqlite:///{tmp_path / 'migrated.sqlite'}")
    upgrade(database)
    with database.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    database.dispose()
    assert differences == []


def test_commit_callbacks_run_after_a_commit_and_never_after_a_failure(db):
    seen = []
    db.on_commit(lambda session: seen.append(session.info.get("marker")))
    with db.transaction() as session:
        session.info["marker"] = "committed"
        session.execute(text("INSERT INTO item (name) VALUES ('a')"))
    with pytest.raises(RuntimeError):
        with db.transaction() as session:
            session.info["marker"] = "failed"
            raise RuntimeError("the action failed")
    with db.read() as session:
        session.info["marker"] = "read"
    assert seen == ["committed", "read"]


def test_pending_orm_changes_are_written_at_commit_and_dropped_on_failure(tmp_path):
    from engine.models import Base, Division  # a real mapped table

    def division(code, name):
        return Division(code=code, parent="650000", level="county", name_zh=name, name_en=name)

    def names(database):
        with database.read() as session:
            found = list(session.scalars(text("SELECT name_zh FROM division ORDER BY code")))
            assert len(session.identity_map) == 0
            return found

    database = Database(f"sqlite:///{tmp_path / 'orm.sqlite'}")
    Base.metadata.create_all(database.engine)
    try:
        with database.transaction() as session:  # added, never flushed by the caller
            session.add(division("650102", "天山区"))
        with pytest.raises(RuntimeError):
            with database.transaction() as session:
                session.add(division("650103", "lost"))
                session.flush()  # written inside the transaction, then rolled back
                raise RuntimeError("the action failed")
        # the reader's Session was thrown away with the writer's: a new one reads
        assert names(database) == ["天山区"]
        with database.transaction() as session:  # and the connection still works
            session.add(division("650104", "新市区"))
        assert names(database) == ["天山区", "新市区"]
    finally:
        database.dispose()


def test_a_read_only_transaction_refuses_writes_and_the_next_transaction_may_write(db):
    import sqlite3
    with db.transaction() as session:
        session.execute(text("INSERT INTO item (name) VALUES ('kept')"))
    with pytest.raises(Exception) as refused:
        with db.read_only() as session:
            assert list(session.scalars(text("SELECT name FROM item"))) == ["kept"]
            session.execute(text("INSERT INTO item (name) VALUES ('refused')"))
    assert isinstance(refused.value.__cause__ or refused.value, sqlite3.OperationalError)
    assert "readonly" in str(refused.value).replace(" ", "")
    with db.read_only() as session:  # (reads go on as ever)
        assert session.scalar(text("SELECT count(*) FROM item")) == 1
    with db.transaction() as session:
        session.execute(text("INSERT INTO item (name) VALUES ('later')"))
    assert _names(db) == ["kept", "later"]
