"""Statutory timers, messages between instances, and the tamper-evident history (issue 3)."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, text

from tests.conftest import ROOT, SHANGHAI, add_organisation, add_user
from engine.models import Instance, UndeliveredMessage

FIXTURES = ROOT / "tests" / "data" / "engine" / "processes"


def deploy(engine, *names):
    return engine.deploy_paths([FIXTURES / f"{name}.bpmn" for name in names], deployed_by="owner")


@pytest.fixture
def org(any_engine):
    return add_organisation(any_engine, kind="enterprise", name="天山化工有限公司",
                            credit_code="91350100M000100Y43", division_code="650102")


def start_deadline(engine, org, published_on="2025-01-31"):
    return engine.start("deadline", actor="x", data={
        "enterprise_id": org, "jurisdiction_code": "650102", "published_on": published_on})


# ---------------------------------------------------------------------------- timers
def test_art10_deadline_timer_fires_only_after_the_statutory_day_across_save_and_load(any_engine, org, clock):
    deploy(any_engine, "deadline")
    epb = add_user(any_engine, "epb-650102", ["local_epb"], jurisdiction_code="650102")
    clock.set(datetime(2025, 2, 1, 9, 0, tzinfo=SHANGHAI))
    instance_id = start_deadline(any_engine, org, "2025-01-31")
    # 2025-01-31 + 1 month = 2025-02-28 23:59:59 +08:00
    assert any_engine.instance(instance_id).next_timer_at == datetime(2025, 2, 28, 23, 59, 59, tzinfo=SHANGHAI)
    any_engine._spec_cache.clear()  # nothing survives in memory: the timer lives in the database
    assert any_engine.tick(datetime(2025, 2, 28, 23, 59, 0, tzinfo=SHANGHAI)) == []
    assert any_engine.inbox(epb).total == 0
    fired = any_engine.tick(datetime(2025, 3, 1, 0, 0, 1, tzinfo=SHANGHAI))
    assert [r.instance_id for r in fired] == [instance_id] and fired[0].fired_timers == ["report_late"]
    assert [r.bpmn_id for r in any_engine.inbox(epb).rows] == ["note_lateness"]
    assert any_engine.instance(instance_id).next_timer_at is None
    kinds = [e.kind for e in any_engine.history(instance_id)]
    assert kinds == ["started", "timer_fired"]
    assert any_engine.history(instance_id)[1].actor == "timer"


def test_an_idle_tick_loads_no_instance(any_engine, org, clock, monkeypatch):
    deploy(any_engine, "deadline")
    clock.set(datetime(2025, 2, 1, 9, 0, tzinfo=SHANGHAI))
    for _ in range(5):
        start_deadline(any_engine, org)
    loads = []
    original = any_engine._load
    monkeypatch.setattr(any_engine, "_load", lambda *a, **k: loads.append(a) or original(*a, **k))
    assert any_engine.tick(datetime(2025, 2, 10, tzinfo=SHANGHAI)) == []
    assert loads == []


def test_two_workers_ticking_the_same_due_instances_fire_each_once(any_engine, org, clock):
    deploy(any_engine, "deadline")
    clock.set(datetime(2025, 2, 1, 9, 0, tzinfo=SHANGHAI))
    ids = [start_deadline(any_engine, org) for _ in range(6)]
    later = datetime(2025, 3, 5, tzinfo=SHANGHAI)
    results: list = []
    barrier = threading.Barrier(2)

    def worker():
        barrier.wait()
        results.extend(any_engine.tick(later))
    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(r.instance_id for r in results) == sorted(ids)
    for instance_id in ids:
        assert [e.kind for e in any_engine.history(instance_id)].count("timer_fired") == 1


def test_a_tick_fires_in_batches_and_one_failing_instance_does_not_stop_the_others(any_engine, org, clock,
                                                                                  monkeypatch):
    """Art. 10 deadlines of seven enterprises fall due together; firing one fails (a database error,
    not its BPMN): the other six fire, nothing of the failed one is kept, and it fires next tick."""
    deploy(any_engine, "deadline")
    clock.set(datetime(2025, 2, 1, 9, 0, tzinfo=SHANGHAI))
    ids = [start_deadline(any_engine, org) for _ in range(7)]
    broken = ids[3]
    monkeypatch.setattr(type(any_engine), "TICK_BATCH", 4)
    original = type(any_engine)._run_and_save

    def run_and_save(self, session, loaded, *args, **kwargs):
        if loaded.row.id == broken:
            raise RuntimeError("disk full")
        return original(self, session, loaded, *args, **kwargs)

    monkeypatch.setattr(type(any_engine), "_run_and_save", run_and_save)
    later = datetime(2025, 3, 5, tzinfo=SHANGHAI)
    results = any_engine.tick(later)
    assert sorted(r.instance_id for r in results) == sorted(i for i in ids if i != broken)
    assert "timer_fired" not in [e.kind for e in any_engine.history(broken)]
    assert any_engine.instance(broken).next_timer_at is not None
    monkeypatch.setattr(type(any_engine), "_run_and_save", original)
    assert [r.instance_id for r in any_engine.tick(later)] == [broken]
    for instance_id in ids:
        assert [e.kind for e in any_engine.history(instance_id)].count("timer_fired") == 1
    assert any_engine.verify_history() == []


def test_art10_deadlines_falling_due_together_are_shared_out_to_helper_processes_and_each_fires_once(
        any_engine, org, clock, monkeypatch):
    """A deadline day: the reporting deadlines of many enterprises (Art. 10) fall due at once. The
    sweep is shared out to two helper processes (as `cleanaudit worker` runs them): every instance
    fires exactly once, the EPB gets each lateness task, and the history chains stay intact."""
    deploy(any_engine, "deadline")
    epb = add_user(any_engine, "epb-650102", ["local_epb"], jurisdiction_code="650102")
    clock.set(datetime(2025, 2, 1, 9, 0, tzinfo=SHANGHAI))
    ids = [start_deadline(any_engine, org) for _ in range(24)]
    monkeypatch.setattr(type(any_engine), "POOL_MIN_DUE", 10)
    monkeypatch.setattr(type(any_engine), "TICK_BATCH", 5)
    here = []
    original = any_engine._fire_ids
    monkeypatch.setattr(any_engine, "_fire_ids", lambda due, now: here.extend(due) or original(due, now))
    any_engine.timer_processes = 2
    try:
        assert any_engine.start_timer_processes() == 2
        results = any_engine.tick(datetime(2025, 3, 5, tzinfo=SHANGHAI))
        assert any_engine.tick(datetime(2025, 3, 6, tzinfo=SHANGHAI)) == []  # nothing fires twice
    finally:
        any_engine.shutdown_timer_processes()
    assert here == []  # the helpers fired them all, not this process
    assert sorted(r.instance_id for r in results) == sorted(ids)
    assert all(r.fired_timers == ["report_late"] for r in results)
    for instance_id in ids:
        assert [e.kind for e in any_engine.history(instance_id)] == ["started", "timer_fired"]
        assert any_engine.instance(instance_id).next_timer_at is None
    assert any_engine.inbox(epb).total == len(ids)
    assert any_engine.verify_history() == []


def test_art10_deadlines_are_still_fired_when_a_helper_process_has_died(engine, clock, monkeypatch):
    """A helper process of the worker is killed (out of memory, an operator's kill): the sweep's
    deadlines are fired by the worker itself, each once, and the next large sweep has helpers again."""
    import os
    import signal
    import time
    deploy(engine, "deadline")
    org = add_organisation(engine, kind="enterprise", name="甲", credit_code="91350100M000100Y43",
                           division_code="650102")
    clock.set(datetime(2025, 2, 1, 9, 0, tzinfo=SHANGHAI))
    ids = [start_deadline(engine, org) for _ in range(12)]
    monkeypatch.setattr(type(engine), "POOL_MIN_DUE", 5)
    monkeypatch.setattr(type(engine), "TICK_BATCH", 4)
    engine.timer_processes = 2
    try:
        assert engine.start_timer_processes() == 2
        os.kill(next(iter(engine._pool._processes)), signal.SIGKILL)
        time.sleep(0.5)
        results = engine.tick(datetime(2025, 3, 5, tzinfo=SHANGHAI))
        assert sorted(r.instance_id for r in results) == sorted(ids)
        clock.set(datetime(2025, 3, 5, 9, 0, tzinfo=SHANGHAI))
        later = [start_deadline(engine, org, "2025-03-03") for _ in range(6)]  # due 2025-04-03
        assert sorted(r.instance_id for r in engine.tick(datetime(2025, 3, 6, tzinfo=SHANGHAI))) == []
        assert sorted(r.instance_id for r in engine.tick(datetime(2025, 4, 5, tzinfo=SHANGHAI))) == sorted(later)
        assert engine._pool is not None  # started again
    finally:
        engine.shutdown_timer_processes()
    for instance_id in ids + later:
        assert [e.kind for e in engine.history(instance_id)] == ["started", "timer_fired"]
    assert engine.verify_history() == []


def test_art10_a_report_filed_while_its_deadline_is_being_fired_wins_and_no_lateness_is_kept(engine, clock,
                                                                                            monkeypatch):
    """A timer fire is worked out outside the write lock; if the enterprise files its report (Art.
    10) in between, the fire is worked out again from what the database holds: the report stands,
    the instance ends, and no lateness task or timer event is recorded."""
    deploy(engine, "deadline")
    org = add_organisation(engine, kind="enterprise", name="甲", credit_code="91350100M000100Y43",
                           division_code="650102")
    enterprise = add_user(engine, "ent", ["enterprise"], organisation_id=org)
    epb = add_user(engine, "epb-650102", ["local_epb"], jurisdiction_code="650102")
    clock.set(datetime(2025, 2, 1, 9, 0, tzinfo=SHANGHAI))
    instance_id = start_deadline(engine, org)
    other = start_deadline(engine, org)
    original = type(engine)._prepare_fires
    prepared_fires = []

    def prepare_then_file(self, due_ids, position, now):
        prepared = original(self, due_ids, position, now)
        prepared_fires.extend(prepared)
        task = next(r for r in engine.inbox(enterprise).rows if r.instance_id == instance_id)
        with clock_at(datetime(2025, 3, 4, 23, 0, tzinfo=SHANGHAI)):
            engine.complete(enterprise, task.id, {"confirmed": True})
        return prepared

    monkeypatch.setattr(type(engine), "_prepare_fires", prepare_then_file)
    results = engine.tick(datetime(2025, 3, 5, tzinfo=SHANGHAI))
    assert sorted(i for i, fire in prepared_fires if fire is not None) == sorted([instance_id, other])
    assert [r.instance_id for r in results] == [other]
    assert engine.instance(instance_id).status == "completed"
    assert [e.kind for e in engine.history(instance_id)] == ["started", "task_completed", "completed"]
    assert [e.kind for e in engine.history(other)] == ["started", "timer_fired"]
    assert [r.instance_id for r in engine.inbox(epb).rows] == [other]
    assert engine.verify_history() == []


def test_work_done_outside_the_write_lock_cannot_write_on_either_database(any_engine, org):
    from engine.models import Organisation
    with pytest.raises(Exception, match="(?i)read.?only"):
        with any_engine.db.read_only() as session:
            session.get(Organisation, org).name = "改名"
    with any_engine.db.read() as session:
        assert session.get(Organisation, org).name == "天山化工有限公司"


def clock_at(when):
    from engine import clock as engine_clock
    return engine_clock.use_clock(when)


def test_art28_a_lateness_script_that_writes_is_fired_under_the_write_lock_even_if_it_catches_the_refusal(
        engine, clock):
    """The lateness is kept on record by a script (Art. 28) that carries on when it cannot write.
    Worked out outside the write lock the write is refused: the fire is done again under the lock,
    so the record is kept once and the instance refers to it."""
    from engine.models import Record
    deploy(engine, "late_record")
    org = add_organisation(engine, kind="enterprise", name="甲", credit_code="91350100M000100Y43",
                           division_code="650102")
    epb = add_user(engine, "epb-650102", ["local_epb"], jurisdiction_code="650102")
    clock.set(datetime(2025, 2, 1, 9, 0, tzinfo=SHANGHAI))
    ids = [engine.start("late_record", actor="x", data={
        "enterprise_id": org, "jurisdiction_code": "650102", "published_on": "2025-01-31"}) for _ in range(3)]
    results = engine.tick(datetime(2025, 3, 5, tzinfo=SHANGHAI))
    assert sorted(r.instance_id for r in results) == sorted(ids)
    with engine.db.read() as session:
        records = {r.instance_id: r.id for r in session.scalars(select(Record).where(Record.kind == "lateness"))}
    assert sorted(records) == sorted(ids)  # one each
    for instance_id in ids:
        assert engine.instance_data(instance_id)["lateness_record"] == records[instance_id]
        assert [e.kind for e in engine.history(instance_id)] == ["started", "timer_fired"]
    assert engine.inbox(epb).total == 3


def test_a_changed_calendar_moves_the_deadline(engine, clock):
    from engine.models import CalendarDay
    deploy(engine, "deadline")
    org = add_organisation(engine, kind="enterprise", name="甲", credit_code="91350100M000100Y43",
                           division_code="650102")
    with engine.db.transaction() as session:  # the administrator declares 2025-02-28 a holiday
        session.add(CalendarDay(day=datetime(2025, 2, 28).date(), kind="holiday", name="测试假日"))
    engine.invalidate_calendar()
    instance_id = start_deadline(engine, org, "2025-01-31")
    # Friday 28 Feb is now a holiday; Sat/Sun are rest days: Monday 3 March
    assert engine.instance(instance_id).next_timer_at == datetime(2025, 3, 3, 23, 59, 59, tzinfo=SHANGHAI)


# ---------------------------------------------------------------------------- messages
def test_a_message_correlates_to_the_right_one_of_two_waiting_instances(any_engine, org):
    deploy(any_engine, "listener", "pinger")
    other = add_organisation(any_engine, kind="enterprise", name="乙", credit_code="9131000071785090X1",
                             division_code="652301")
    first = any_engine.start("listener", actor="x", data={"enterprise_id": org})
    second = any_engine.start("listener", actor="x", data={"enterprise_id": other})
    any_engine.start("pinger", actor="x", data={"target": other, "note": "第二家"})
    assert any_engine.instance(first).status == "running"
    assert "message_received" not in [e.kind for e in any_engine.history(first)]
    received = [e for e in any_engine.history(second) if e.kind == "message_received"]
    assert len(received) == 1 and received[0].data["payload"]["note"] == "第二家"
    user = add_user(any_engine, "ent-b", ["enterprise"], organisation_id=other)
    assert [r.bpmn_id for r in any_engine.inbox(user).rows] == ["see_ping"]
    assert any_engine.instance_data(second)["ping"]["note"] == "第二家"


def test_a_message_starts_an_instance_of_the_process_that_catches_it(any_engine, org):
    deploy(any_engine, "kickoff")
    user = add_user(any_engine, "ent-a", ["enterprise"], organisation_id=org)
    started = any_engine.send_message("kickoff", {"enterprise_id": org})
    assert started is not None
    assert any_engine.instance(started).process_id == "kickoff"
    assert [r.bpmn_id for r in any_engine.inbox(user).rows] == ["handle_kickoff"]


def test_an_undeliverable_message_is_kept_and_visible(any_engine):
    deploy(any_engine, "pinger")
    instance_id = any_engine.start("pinger", actor="x", data={"target": 99, "note": "无人接收"})
    with any_engine.db.read() as session:
        kept = session.scalars(select(UndeliveredMessage)).all()
    assert [(m.name, m.payload["note"], m.source_instance_id) for m in kept] == [("ping", "无人接收", instance_id)]
    assert "message_undelivered" in [e.kind for e in any_engine.history(instance_id)]


# ---------------------------------------------------------------------------- tamper evidence
def _complete_one(engine, org):
    deploy(engine, "kickoff")
    user = add_user(engine, "ent-a", ["enterprise"], organisation_id=org)
    instance_id = engine.send_message("kickoff", {"enterprise_id": org})
    engine.complete(user, engine.inbox(user).rows[0].id, {"confirmed": True})
    return instance_id


def test_verify_history_catches_an_event_edited_with_raw_sql(any_engine, org):
    instance_id = _complete_one(any_engine, org)
    assert any_engine.verify_history() == []
    with any_engine.db.engine.begin() as conn:
        conn.execute(text("UPDATE event SET actor = 'someone-else' WHERE kind = 'task_completed'"))
    breaks = any_engine.verify_history()
    assert len(breaks) == 1 and breaks[0].chain == f"instance:{instance_id}"
    assert "edited" in breaks[0].message


def test_verify_history_catches_an_inserted_event(any_engine, org):
    instance_id = _complete_one(any_engine, org)
    with any_engine.db.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO event (chain, seq, instance_id, actor, kind, data, at, prev_hash, hash) "
            "SELECT chain, seq + 100, instance_id, actor, kind, data, at, hash, hash FROM event "
            f"WHERE chain = 'instance:{instance_id}' AND seq = 1"))
    assert [b.chain for b in any_engine.verify_history()] == [f"instance:{instance_id}"]


@pytest.mark.parametrize("which", ["first", "last"])
def test_verify_history_catches_a_deleted_event(any_engine, org, which):
    instance_id = _complete_one(any_engine, org)
    order = "ASC" if which == "first" else "DESC"
    with any_engine.db.engine.begin() as conn:
        victim = conn.execute(text(f"SELECT id FROM event WHERE chain = 'instance:{instance_id}' "
                                   f"ORDER BY seq {order} LIMIT 1")).scalar()
        conn.execute(text(f"DELETE FROM event WHERE id = {victim}"))
    breaks = any_engine.verify_history()
    assert [b.chain for b in breaks] == [f"instance:{instance_id}"]


def test_cli_verify_history_exits_1_naming_the_broken_chain(engine, capsys):
    from engine.cli import main
    org = add_organisation(engine, kind="enterprise", name="甲", credit_code="91350100M000100Y43",
                           division_code="650102")
    instance_id = _complete_one(engine, org)
    url = engine.db.url
    assert main(["--database-url", url, "verify-history"]) == 0
    with engine.db.engine.begin() as conn:
        conn.execute(text("UPDATE event SET data = '{}' WHERE kind = 'started'"))
    assert main(["--database-url", url, "verify-history"]) == 1
    assert f"BROKEN instance:{instance_id}" in capsys.readouterr().out


def test_event_timestamps_in_the_hash_keep_their_form():
    """The canonical timestamp of an event (part of its hash) is exactly what it always was:
    UTC, microseconds, Z; also for times given in China time and on whole seconds."""
    from datetime import datetime, timedelta, timezone
    from engine.history import _iso
    china = timezone(timedelta(hours=8))
    for at in (datetime(2025, 3, 1, 8, 0, tzinfo=china), datetime(2025, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
               datetime(2026, 1, 1, 0, 0, 0, 5, tzinfo=china), datetime(2030, 6, 15, 12, 30, 1, 120000, tzinfo=timezone.utc)):
        assert _iso(at) == at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert _iso(datetime(2025, 3, 1, 8, 0, tzinfo=china)) == "2025-03-01T00:00:00.000000Z"
