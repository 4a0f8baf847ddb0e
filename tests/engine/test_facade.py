"""The engine's front door: deploy, versions, inbox scope, forms, locking, incidents, loops.

Runs on a real SQLite file and on the throwaway PostgreSQL server (`any_engine`).
"""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select, func

from tests.conftest import ROOT, SHANGHAI, add_organisation, add_user
from engine.errors import (InvalidFormData, InvalidProcess, NotAllowed, ProcessNotFound,
                           StaleInstance, TaskNotFound)
from engine.models import Event, HumanTask, Instance, ProcessVersion

FIXTURES = ROOT / "tests" / "data" / "engine" / "processes"
ENTERPRISE_CODE = "91350100M000100Y43"


def deploy(engine, *names):
    return engine.deploy_paths([FIXTURES / f"{name}.bpmn" for name in names], deployed_by="owner")


@pytest.fixture
def actors(any_engine):
    """An enterprise in Tianshan district, its local EPB, an EPB elsewhere, another enterprise."""
    eng = any_engine
    org = add_organisation(eng, kind="enterprise", name="天山化工有限公司", credit_code=ENTERPRISE_CODE,
                           division_code="650102")
    other_org = add_organisation(eng, kind="enterprise", name="昌吉建材有限公司",
                                 credit_code="9131000071785090X1", division_code="652301")
    return {
        "org": org, "other_org": other_org,
        "enterprise": add_user(eng, "ent-a", ["enterprise"], organisation_id=org),
        "other_enterprise": add_user(eng, "ent-b", ["enterprise"], organisation_id=other_org),
        "local_epb": add_user(eng, "epb-650102", ["local_epb"], jurisdiction_code="650102"),
        "other_epb": add_user(eng, "epb-652300", ["local_epb"], jurisdiction_code="652300"),
        "admin": add_user(eng, "admin", ["administrator", "process_owner"], jurisdiction_code="650000"),
    }


def start_approval(engine, actors, published_on="2025-01-31"):
    return engine.start("approval", actor="epb-650102", data={
        "enterprise_id": actors["org"], "enterprise_name": "天山化工有限公司",
        "jurisdiction_code": "650102", "published_on": published_on})


# ---------------------------------------------------------------------------- deploy and versions
def test_deploying_identical_content_twice_keeps_one_version(any_engine):
    first = deploy(any_engine, "approval")
    second = deploy(any_engine, "approval")
    assert first[0].id == second[0].id and first[0].version_no == 1
    with any_engine.db.read() as session:
        assert session.scalar(select(func.count()).select_from(ProcessVersion)) == 1


def test_new_instances_use_the_latest_version_and_running_ones_keep_theirs(any_engine, actors):
    deploy(any_engine, "approval")
    old = start_approval(any_engine, actors)
    changed = (FIXTURES / "approval.bpmn").read_bytes().replace("确认收到".encode(), "确认收到（第二版）".encode())
    v2 = any_engine.deploy_files([("approval.bpmn", changed)], deployed_by="owner")[0]
    assert v2.version_no == 2
    new = start_approval(any_engine, actors)
    assert any_engine.instance(old).version_id != any_engine.instance(new).version_id
    for instance_id in (old, new):
        task = any_engine.inbox(actors["enterprise"]).rows
        row = next(r for r in task if r.instance_id == instance_id)
        any_engine.complete(actors["enterprise"], row.id, {"figure": 1})
    titles = {r.instance_id: r.title for r in any_engine.inbox(actors["local_epb"]).rows}
    assert titles == {old: "确认收到", new: "确认收到（第二版）"}


def test_the_spec_is_stored_once_per_version_not_in_each_instance(any_engine, actors):
    deploy(any_engine, "approval")
    ids = [start_approval(any_engine, actors) for _ in range(3)]
    with any_engine.db.read() as session:
        version = session.scalar(select(ProcessVersion))
        for instance_id in ids:
            state = session.get(Instance, instance_id).state
            assert b"spec_json" not in state and len(state) < len(version.spec_json)


def test_deploy_refuses_a_script_that_escapes_and_stores_nothing(any_engine):
    hostile = (FIXTURES / "loop.bpmn").read_bytes().replace(
        b"counter = counter + 1", b"__import__('os').system('id')")
    with pytest.raises(InvalidProcess) as refused:
        any_engine.deploy_files([("loop.bpmn", hostile)], deployed_by="owner")
    assert "count_round" in str(refused.value) and "__import__" in str(refused.value)
    with any_engine.db.read() as session:
        assert session.scalar(select(func.count()).select_from(ProcessVersion)) == 0


def test_starting_an_unknown_process_says_so(any_engine):
    with pytest.raises(ProcessNotFound):
        any_engine.start("no_such_process", actor="x")


# ---------------------------------------------------------------------------- inbox and scope
def test_art10_task_reaches_only_its_enterprise_with_the_statutory_due_date(any_engine, actors):
    deploy(any_engine, "approval")
    start_approval(any_engine, actors, published_on="2025-01-31")
    page = any_engine.inbox(actors["enterprise"])
    assert page.total == 1
    row = page.rows[0]
    assert (row.title, row.article, row.lane, row.scope) == ("报送数据", "Art. 10", "enterprise", f"o:{actors['org']}")
    # 2025-01-31 + 1 month = 2025-02-28 (a Friday), end of day in Asia/Shanghai
    assert row.due_at == datetime(2025, 2, 28, 23, 59, 59, tzinfo=SHANGHAI)
    assert any_engine.inbox(actors["other_enterprise"]).total == 0
    assert any_engine.inbox(actors["local_epb"]).total == 0  # the lane is enterprise


def test_user_of_another_organisation_or_jurisdiction_cannot_act(any_engine, actors):
    deploy(any_engine, "approval")
    start_approval(any_engine, actors)
    task_id = any_engine.inbox(actors["enterprise"]).rows[0].id
    with pytest.raises(NotAllowed):
        any_engine.complete(actors["other_enterprise"], task_id, {"figure": 2})
    with pytest.raises(NotAllowed):
        any_engine.task_view(actors["other_enterprise"], task_id)
    any_engine.complete(actors["enterprise"], task_id, {"figure": 2})
    review = any_engine.inbox(actors["local_epb"]).rows[0]
    with pytest.raises(NotAllowed):
        any_engine.complete(actors["other_epb"], review.id, {"confirmed": True})
    with pytest.raises(TaskNotFound):
        any_engine.complete(actors["local_epb"], "00000000-0000-0000-0000-000000000000", {})


def test_invalid_form_data_gets_a_message_per_field_and_changes_nothing(any_engine, actors):
    deploy(any_engine, "approval")
    instance_id = start_approval(any_engine, actors)
    task_id = any_engine.inbox(actors["enterprise"]).rows[0].id
    before = any_engine.instance(instance_id).lock_version
    with pytest.raises(InvalidFormData) as invalid:
        any_engine.complete(actors["enterprise"], task_id, {"figure": -5})
    assert "figure" in invalid.value.errors
    with pytest.raises(InvalidFormData) as missing:
        any_engine.complete(actors["enterprise"], task_id, {})
    assert missing.value.errors["figure"]
    assert any_engine.instance(instance_id).lock_version == before
    assert [e.kind for e in any_engine.history(instance_id)] == ["started"]
    assert any_engine.inbox(actors["enterprise"]).rows[0].id == task_id


def test_an_acknowledgement_needs_its_confirmation(any_engine, actors):
    deploy(any_engine, "approval")
    start_approval(any_engine, actors)
    any_engine.complete(actors["enterprise"], any_engine.inbox(actors["enterprise"]).rows[0].id, {"figure": 1})
    ack = any_engine.inbox(actors["local_epb"]).rows[0]
    with pytest.raises(InvalidFormData):
        any_engine.complete(actors["local_epb"], ack.id, {})
    any_engine.complete(actors["local_epb"], ack.id, {"confirmed": True})
    assert any_engine.instance(ack.instance_id).status == "completed"


def test_completing_an_already_completed_task_is_a_clear_conflict(any_engine, actors):
    deploy(any_engine, "approval")
    start_approval(any_engine, actors)
    task_id = any_engine.inbox(actors["enterprise"]).rows[0].id
    any_engine.complete(actors["enterprise"], task_id, {"figure": 1})
    with pytest.raises(StaleInstance) as stale:
        any_engine.complete(actors["enterprise"], task_id, {"figure": 9})
    assert "already completed by ent-a" in str(stale.value)


# ---------------------------------------------------------------------------- concurrency
def _race(engine, jobs):
    """Run jobs at the same moment from separate threads; return their outcomes."""
    barrier = threading.Barrier(len(jobs))
    outcomes = [None] * len(jobs)

    def run(index, job):
        barrier.wait()
        try:
            job()
            outcomes[index] = "ok"
        except StaleInstance as exc:
            outcomes[index] = exc
    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcomes


def test_two_people_completing_the_same_task_at_once_exactly_one_wins(any_engine, actors):
    deploy(any_engine, "approval")
    colleague = add_user(any_engine, "ent-a2", ["enterprise"], organisation_id=actors["org"])
    for round_no in range(5):
        instance_id = start_approval(any_engine, actors)
        task_id = next(r.id for r in any_engine.inbox(actors["enterprise"], per_page=100).rows
                       if r.instance_id == instance_id)
        outcomes = _race(any_engine, [
            lambda: any_engine.complete(actors["enterprise"], task_id, {"figure": 1}),
            lambda: any_engine.complete(colleague, task_id, {"figure": 2}),
        ])
        assert outcomes.count("ok") == 1, outcomes
        assert isinstance([o for o in outcomes if o != "ok"][0], StaleInstance)
        kinds = [e.kind for e in any_engine.history(instance_id)]
        assert kinds.count("task_completed") == 1
        assert any_engine.inbox(actors["local_epb"], per_page=100).total == round_no + 1
    assert any_engine.verify_history() == []


def test_three_agencies_completing_parallel_tasks_at_once_lose_no_update(any_engine):
    deploy(any_engine, "parallel")
    users = [add_user(any_engine, f"{role}-650102", [role], jurisdiction_code="650102")
             for role in ("local_drc", "local_etc", "local_epb")]
    instance_id = any_engine.start("parallel", actor="x", data={"jurisdiction_code": "650102"})
    tasks = [any_engine.inbox(user).rows[0].id for user in users]
    outcomes = _race(any_engine, [
        (lambda u=u, t=t: _retrying_complete(any_engine, u, t)) for u, t in zip(users, tasks)])
    assert outcomes == ["ok", "ok", "ok"]
    assert any_engine.instance(instance_id).status == "completed"
    assert [e.kind for e in any_engine.history(instance_id)].count("task_completed") == 3


def _retrying_complete(engine, user, task_id):
    # A user whose save lost the race is told "changed meanwhile" and simply submits again.
    for _ in range(10):
        try:
            return engine.complete(user, task_id, {"confirmed": True})
        except StaleInstance as exc:
            if "already" in str(exc):
                raise
    raise AssertionError("never succeeded")


# ---------------------------------------------------------------------------- incidents and loops
def test_a_failing_script_becomes_an_incident_and_the_users_completion_is_kept(any_engine, actors):
    deploy(any_engine, "fragile")
    instance_id = any_engine.start("fragile", actor="x", data={
        "enterprise_id": actors["org"], "divisor": 0, "spins": 1})
    task_id = any_engine.inbox(actors["enterprise"]).rows[0].id
    result = any_engine.complete(actors["enterprise"], task_id, {"confirmed": True})
    assert result.incident and "divide" in result.incident and "division by zero" in result.incident
    instance = any_engine.instance(instance_id)
    assert instance.status == "incident" and "division by zero" in instance.incident_error
    assert [e.kind for e in any_engine.history(instance_id)] == ["started", "task_completed", "incident"]
    with any_engine.db.read() as session:
        assert session.get(HumanTask, task_id).status == "completed"
    with pytest.raises(NotAllowed):
        any_engine.retry(actors["enterprise"], instance_id, {"divisor": 4})
    any_engine.retry(actors["admin"], instance_id, {"divisor": 4})
    assert any_engine.instance(instance_id).status == "running"
    assert any_engine.inbox(actors["enterprise"]).rows[0].bpmn_id == "see_result"
    assert any_engine.instance_data(instance_id)["result"] == 25
    assert [e.kind for e in any_engine.history(instance_id)][-1] == "retried"


def test_a_runaway_script_is_stopped_and_becomes_an_incident_other_instances_carry_on(any_engine, actors):
    deploy(any_engine, "fragile", "approval")
    runaway = any_engine.start("fragile", actor="x", data={
        "enterprise_id": actors["org"], "divisor": 1, "spins": 100_000})
    task_id = next(r.id for r in any_engine.inbox(actors["enterprise"]).rows if r.instance_id == runaway)
    any_engine.complete(actors["enterprise"], task_id, {"confirmed": True})
    instance = any_engine.instance(runaway)
    assert instance.status == "incident" and "budget" in instance.incident_error
    healthy = start_approval(any_engine, actors)
    row = next(r for r in any_engine.inbox(actors["enterprise"]).rows if r.instance_id == healthy)
    any_engine.complete(actors["enterprise"], row.id, {"figure": 1})
    assert any_engine.instance(healthy).status == "running"


def test_a_gateway_loop_of_1000_iterations_runs_exactly_1000_times(any_engine):
    deploy(any_engine, "loop")
    instance_id = any_engine.start("loop", actor="x", data={"counter": 0, "rounds": 1000})
    assert any_engine.instance(instance_id).status == "completed"
    assert any_engine.instance_data(instance_id)["counter"] == 1000


def test_a_gateway_loop_of_1000_iterations_survives_save_and_load(engine):
    """SQLite only: the restored state holds the whole loop and its counter."""
    deploy(engine, "loop")
    instance_id = engine.start("loop", actor="x", data={"counter": 0, "rounds": 1000})
    engine._spec_cache.clear()
    assert engine.instance_data(instance_id)["counter"] == 1000


# ---------------------------------------------------------------------------- history
def test_every_action_leaves_a_verifiable_history(any_engine, actors):
    deploy(any_engine, "approval")
    instance_id = start_approval(any_engine, actors)
    any_engine.complete(actors["enterprise"], any_engine.inbox(actors["enterprise"]).rows[0].id,
                        {"figure": 3.5, "note": "月均值"})
    events = any_engine.history(instance_id)
    assert [e.kind for e in events] == ["started", "task_completed"]
    assert events[1].actor == "ent-a" and events[1].data["data"] == {"figure": 3.5, "note": "月均值"}
    assert events[1].prev_hash == events[0].hash
    assert any_engine.verify_history() == []


def test_a_called_process_is_not_offered_for_starting_by_hand(engine):
    from tests.conftest import ROOT as root
    engine.deploy_paths([root / "processes" / "audit_stages.bpmn", root / "processes" / "mandatory_audit.bpmn",
                         root / "processes" / "voluntary_audit.bpmn"], deployed_by="owner")
    org = add_organisation(engine, kind="enterprise", name="甲", credit_code="91350100M000100Y43",
                           division_code="650102")
    user = add_user(engine, "ent", ["enterprise"], organisation_id=org)
    offered = engine.startable_processes(user)
    assert "voluntary_audit" in offered and "audit_stages" not in offered
    with pytest.raises(NotAllowed):
        engine.start("audit_stages", actor=user)


def test_usual_inbox_scopes_and_due_dates_are_what_the_script_engine_gives():
    """The scope of a user task in its usual forms (the defaults of every role, the `scope`
    properties of the processes: helper(variable), helper('code')) and a due date given as a
    variable are computed directly: equal to the restricted evaluation; where a name means
    something else (task data, the engine's own helpers) or a value is not plain, the script
    engine decides."""
    import re
    from engine import authz
    from engine.facade import _simple_scope, _simple_value
    from engine.scripting import RestrictedScriptEngine
    engine = RestrictedScriptEngine()
    data = {"enterprise_id": 7, "agency_id": "12", "jurisdiction_code": "650102", "expert": "li.si",
            "local_code": "650100", "candidate": "wang.wu", "report_due": "2025-05-01T00:00:00+08:00"}
    expressions = {authz.default_scope_expression(lane) for lane in authz.ROLES}
    for path in (ROOT / "processes").glob("*.bpmn"):
        expressions |= set(re.findall(r'name="scope" value="([^"]*)"', path.read_text(encoding="utf-8")))
    checked = 0
    for expression in sorted(expressions):
        fast = _simple_scope(expression, data, engine)
        if fast is not None:
            assert fast == str(engine.evaluate_expression(expression, data)), expression
            checked += 1
    assert checked >= 6
    assert _simple_value("report_due", data) == engine.evaluate_expression("report_due", data)
    assert _simple_value("missing_due", data) is None and _simple_value("due('x')", data) is None
    assert _simple_scope("organisation(enterprise_id)", {}, engine) is None
    assert _simple_scope("organisation(enterprise_id)", {"enterprise_id": [1]}, engine) is None
    assert _simple_scope("organisation(enterprise_id)", {"enterprise_id": 1, "organisation": "x"}, engine) is None
    assert _simple_scope("jurisdiction(jurisdiction_code) + 'x'", data, engine) is None
    own = RestrictedScriptEngine(helpers={"organisation": lambda value: f"org-{value}"})
    assert _simple_scope("organisation(enterprise_id)", {"enterprise_id": 1}, own) is None
