"""engine.db: transactions on SQLite run on one connection per thread, kept between transactions."""
from __future__ import annotations

import gc
import threading

import pytest
from sqlalchemy import text

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
        assert session.info == {}
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
