"""The stored state carries exactly what SpiffWorkflow's own format carries, and loads back the same.

engine/state.py stores a line per task and re-encodes only the tasks an action changed (for
speed). These tests run real processes and check, at every save and every load, that the state
(turned into SpiffWorkflow's dictionary format) equals what SpiffWorkflow's own converters produce,
and that a load gives what SpiffWorkflow's own converters restore.
"""
from __future__ import annotations

import json
from datetime import datetime
from uuid import UUID

import pytest

from tests.conftest import ROOT, SHANGHAI, add_organisation, add_user, make_engine

FIXTURES = ROOT / "tests" / "data" / "engine" / "processes"


def _reference_serializer():
    """SpiffWorkflow's stock converters, with the spec left out as engine.runtime does."""
    from SpiffWorkflow.bpmn import BpmnWorkflow
    from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
    from SpiffWorkflow.bpmn.serializer.default.workflow import BpmnWorkflowConverter, WorkflowConverter
    from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG

    class Reference(BpmnWorkflowConverter):
        def to_dict(self, workflow):
            dct = WorkflowConverter.to_dict(self, workflow)
            dct["subprocesses"] = self.mapping_to_dict(workflow.subprocesses)
            dct["bpmn_events"] = self.registry.convert(workflow.bpmn_events)
            return dct

        def from_dict(self, dct):
            spec = dct.pop("spec")
            workflow = self.target_class(spec, dct.pop("subprocess_specs", {}), deserializing=True)
            workflow.tasks = self.mapping_from_dict(dct["tasks"], UUID, workflow=workflow)
            workflow.task_tree = workflow.tasks.get(UUID(dct["root"]))
            self.set_default_attributes(workflow, dct)
            self.subprocesses_from_dict(dct["subprocesses"], workflow)
            workflow.bpmn_events = self.registry.restore(dct.pop("bpmn_events", []))
            return workflow

    config = dict(SPIFF_CONFIG)
    config[BpmnWorkflow] = Reference
    return BpmnWorkflowSerializer(BpmnWorkflowSerializer.configure(config))


REFERENCE = _reference_serializer()


def deployed_engine(tmp_path, *bpmn_files: str):
    """An engine on its own SQLite file with these fixture processes deployed."""
    engine = make_engine(f"sqlite:///{tmp_path / 'state.sqlite'}", FIXTURES,
                         ROOT / "tests" / "data" / "engine" / "forms")
    engine.deploy_paths([FIXTURES / name for name in bpmn_files], deployed_by="test")
    return engine


def reference_dump(workflow) -> dict:
    REFERENCE.registry._encoder_mode = True
    try:
        text = json.dumps(REFERENCE.to_dict(workflow), cls=REFERENCE._encoder_cls, separators=(",", ":"))
    finally:
        REFERENCE.registry._encoder_mode = False
    return json.loads(text)


def reference_load(state: bytes, spec, subprocess_specs):
    from SpiffWorkflow.bpmn import BpmnWorkflow
    from engine import runtime
    dct = runtime.state_as_spiff_dict(state)
    dct["spec"], dct["subprocess_specs"] = spec, subprocess_specs
    return REFERENCE.registry.convert_from_dict[REFERENCE.registry.typenames[BpmnWorkflow]](dct)


@pytest.fixture
def checked(monkeypatch):
    """Every save of the engine, and every workflow an action starts from (loaded from the database
    or kept in memory since the last save), is compared with SpiffWorkflow's own converters."""
    from engine import facade, runtime
    counts = {"dumps": 0, "loads": 0, "kept": 0}
    original_dump, original_load = runtime.dump_state, facade.Engine._load
    original_take = runtime.WorkflowCache.take

    def dump_state(workflow):
        state = original_dump(workflow)
        assert runtime.state_as_spiff_dict(state) == reference_dump(workflow)
        counts["dumps"] += 1
        return state

    def take(self, *args):
        workflow = original_take(self, *args)
        counts["kept"] += workflow is not None
        return workflow

    def load(self, session, instance_id, lock=True):
        loaded = original_load(self, session, instance_id, lock)
        row = loaded.row
        spec = self._specs(session, row.version_id)[1]
        subs = self._subprocess_specs(session, row.version_id, row.called_versions or {})
        expected = reference_load(row.state, spec, subs)
        assert reference_dump(loaded.workflow) == reference_dump(expected)
        for mine, theirs in zip(runtime._all_workflows(loaded.workflow), runtime._all_workflows(expected)):
            assert [str(t.id) for t in runtime._ready_engine_tasks(mine)] == \
                [str(t.id) for t in runtime._ready_engine_tasks(theirs)]
        counts["loads"] += 1
        return loaded

    monkeypatch.setattr(runtime, "dump_state", dump_state)
    monkeypatch.setattr(runtime.WorkflowCache, "take", take)
    monkeypatch.setattr(facade.Engine, "_load", load)
    return counts


def test_fixture_processes_save_and_load_exactly_as_spiffworkflow_does(tmp_path, checked, clock):
    engine = make_engine(f"sqlite:///{tmp_path / 'state.sqlite'}", FIXTURES,
                         ROOT / "tests" / "data" / "engine" / "forms")
    engine.deploy_paths(sorted(FIXTURES.glob("*.bpmn")), deployed_by="test")
    org = add_organisation(engine, kind="enterprise", name="天山化工有限公司", credit_code="91350100M000100Y43",
                           division_code="650102")
    enterprise = add_user(engine, "ent", ["enterprise"], organisation_id=org)
    epb = add_user(engine, "epb", ["local_epb"], jurisdiction_code="650102")
    data = {"enterprise_id": org, "enterprise_name": "天山化工有限公司", "jurisdiction_code": "650102",
            "published_on": "2025-01-31"}
    approval = engine.start("approval", actor="x", data=data)
    engine.complete(enterprise, engine.inbox(enterprise).rows[0].id, {"figure": 2.5, "note": "月均值 ✓"})
    engine.complete(epb, engine.inbox(epb).rows[0].id, {"confirmed": True})
    assert engine.instance(approval).status == "completed"
    engine.start("loop", actor="x", data={"counter": 0, "rounds": 30})
    deadline = engine.start("deadline", actor="x", data=data)
    engine.tick(datetime(2025, 3, 1, 0, 0, 1, tzinfo=SHANGHAI))
    assert [r.bpmn_id for r in engine.inbox(epb).rows] == ["note_lateness"]
    engine.instance_data(deadline)
    assert checked["dumps"] >= 5 and checked["loads"] >= 3 and checked["kept"] >= 2
    engine.db.dispose()


def test_the_mandatory_audit_saves_and_loads_exactly_as_spiffworkflow_does(checked):
    """The real process (when deployed) through every task, via the benchmark's driver."""
    from engine import bench
    assert (ROOT / "processes" / "mandatory_audit.bpmn").exists()
    runner = bench.Bench(bench.resolve_sizes(True, {}), out=open("/dev/null", "w"))
    import tempfile
    from pathlib import Path
    tmp = Path(tempfile.mkdtemp(prefix="cleanaudit-state-"))
    try:
        runner.setup(tmp)
        assert runner.scenario.process_id == "mandatory_audit", runner.scenario.note
        instance_id = runner.start_instance()
        assert runner.run_instance(instance_id, runner._engine_complete) > 5
        runner.engine._workflows.clear()
        assert runner.run_instance(runner.start_instance(), runner._engine_complete) > 5
        assert checked["loads"] > 10 and checked["kept"] > 5
    finally:
        from engine import clock
        clock.reset()
        runner.engine.db.dispose()
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)


def started_approval(tmp_path):
    """An engine with the `approval` fixture deployed and one instance of it started."""
    engine = deployed_engine(tmp_path, "approval.bpmn")
    org = add_organisation(engine, kind="enterprise", name="甲", credit_code="91350100M000100Y43",
                           division_code="650102")
    instance_id = engine.start("approval", actor="x", data={
        "enterprise_id": org, "jurisdiction_code": "650102", "published_on": "2025-01-31"})
    return engine, instance_id


def test_a_state_with_typed_values_restores_them(tmp_path, clock):
    """Datetimes in task data (which SpiffWorkflow stores with a typename) survive save and load."""
    from engine import runtime
    engine, instance_id = started_approval(tmp_path)
    with engine.db.read() as session:
        loaded = engine._load(session, instance_id, lock=False)
        task = runtime.ready_user_tasks(loaded.workflow)[0]
        when = datetime(2025, 3, 1, 8, 0, tzinfo=SHANGHAI)
        task.data["seen_at"] = when
        state = runtime.dump_state(loaded.workflow)
        spec_bundle = engine._specs(session, loaded.row.version_id)
        subs = engine._subprocess_specs(session, loaded.row.version_id, loaded.row.called_versions or {})
        again = runtime.load_state(state, spec_bundle[1], subs, engine.script_engine(session))
        restored = again.get_task_from_id(task.id)
        assert restored.data["seen_at"] == when and isinstance(restored.data["seen_at"], datetime)
        assert reference_dump(again) == reference_dump(reference_load(state, spec_bundle[1], subs))
    engine.db.dispose()


def test_a_workflow_is_kept_in_memory_only_when_loading_its_state_would_give_it_back(tmp_path, clock):
    """Tuples, non-text keys, sets and datetimes change in a save and load: such a workflow is
    loaded again from its state next time instead of being reused."""
    from engine import runtime
    engine, instance_id = started_approval(tmp_path)
    with engine.db.read() as session:
        workflow = engine._load(session, instance_id, lock=False).workflow
    task = runtime.ready_user_tasks(workflow)[0]
    runtime.dump_state(workflow)  # (a save decides it)
    assert runtime.reusable(workflow)
    for value in [(1, 2), {1: "a"}, {"a"}, datetime(2025, 1, 1, tzinfo=SHANGHAI), float("nan")]:
        task.data["value"] = {"nested": [value]}
        runtime.dump_state(workflow)
        assert not runtime.reusable(workflow), value
    task.data["value"] = {"nested": [[1, 2], {"1": "a"}, "2025-01-01", 1.5, None, True]}
    runtime.dump_state(workflow)
    assert runtime.reusable(workflow)
    engine.db.dispose()


def test_values_nested_in_task_data_changed_by_scripts_and_a_join_are_kept_exactly(tmp_path, clock):
    """Scripts change nested values in place and a parallel join merges nested dicts: the next
    task sees all of it, before and after a reload, and the tasks that ran earlier keep the values
    they had (a later change must not reach back into their data)."""
    from engine import runtime
    engine = deployed_engine(tmp_path, "nested.bpmn")
    epb = add_user(engine, "epb", ["local_epb"], jurisdiction_code="650102")
    instance_id = engine.start("nested", actor="x", data={"jurisdiction_code": "650102"})
    engine.complete(epb, engine.inbox(epb).rows[0].id, {"confirmed": True})
    [row] = engine.inbox(epb).rows
    assert row.bpmn_id == "second"
    expected_info = {"x": {"a": 2, "ba": "a", "bb": "b"}}
    expected_rows = [{"v": 5}, {"v": 2}]

    def check(workflow):
        second = workflow.get_task_from_id(UUID(row.id))
        assert second.data["info"] == expected_info and second.data["rows"] == expected_rows
        setup = next(t for t in workflow.get_tasks() if t.task_spec.name == "setup")
        assert setup.data["info"] == {"x": {"a": 1}} and setup.data["rows"] == [{"v": 1}, {"v": 2}]
        branch_a = next(t for t in workflow.get_tasks() if t.task_spec.name == "branch_a")
        assert branch_a.data["info"] == {"x": {"a": 2, "ba": "a"}}

    with engine.db.read() as session:
        check(engine._load(session, instance_id, lock=False).workflow)  # kept in memory
    engine._workflows.clear()
    with engine.db.read() as session:
        loaded = engine._load(session, instance_id, lock=False)
        check(loaded.workflow)  # loaded from the state
        # the stored state, as SpiffWorkflow's own format, equals a full encoding of that workflow
        assert runtime.state_as_spiff_dict(loaded.row.state) == reference_dump(loaded.workflow)
    engine.complete(epb, row.id, {"confirmed": True})
    assert engine.instance(instance_id).status == "completed"
    engine.db.dispose()


def test_a_save_encodes_again_only_the_tasks_that_changed(tmp_path, clock):
    """Completing one task of a long-running instance re-encodes a few task lines, not all."""
    from engine import runtime, state
    engine = deployed_engine(tmp_path, "loop.bpmn", "nested.bpmn")
    epb = add_user(engine, "epb", ["local_epb"], jurisdiction_code="650102")
    instance_id = engine.start("nested", actor="x", data={"jurisdiction_code": "650102"})
    with engine.db.read() as session:
        workflow = engine._load(session, instance_id, lock=False).workflow
    before = {task.id: task.__dict__.get(state._ENTRY) for task in workflow.get_tasks()}
    engine._workflows.put(instance_id, engine.instance(instance_id).lock_version, workflow)
    engine.complete(epb, engine.inbox(epb).rows[0].id, {"confirmed": True})
    with engine.db.read() as session:
        after_workflow = engine._load(session, instance_id, lock=False).workflow
    assert after_workflow is workflow  # the kept workflow was used and saved
    kept = [tid for tid, entry in before.items()
            if entry is not None and tid in workflow.tasks and workflow.tasks[tid].__dict__.get(state._ENTRY) is entry]
    assert {workflow.tasks[tid].task_spec.name for tid in kept} >= {"Start", "start", "setup"}
    assert 0 < len(kept) < len(workflow.tasks)
    engine.db.dispose()


def test_a_state_saved_in_the_earlier_format_still_loads_and_is_saved_in_the_new_one(tmp_path, clock):
    """Instances saved before format 2 (zlib-compressed SpiffWorkflow dictionaries) go on after an upgrade."""
    import zlib
    from engine import runtime, state
    from engine.models import Instance
    engine = deployed_engine(tmp_path, "nested.bpmn")
    epb = add_user(engine, "epb", ["local_epb"], jurisdiction_code="650102")
    instance_id = engine.start("nested", actor="x", data={"jurisdiction_code": "650102"})
    with engine.db.read() as session:
        workflow = engine._load(session, instance_id, lock=False).workflow
    legacy = zlib.compress(json.dumps(reference_dump(workflow)).encode("utf-8"))
    with engine.db.transaction() as session:
        session.get(Instance, instance_id).state = legacy
        session.get(Instance, instance_id).serializer_version = "1.5"
    engine._workflows.clear()
    with engine.db.read() as session:
        loaded = engine._load(session, instance_id, lock=False)
        assert reference_dump(loaded.workflow) == reference_dump(workflow)
    engine._workflows.clear()
    engine.complete(epb, engine.inbox(epb).rows[0].id, {"confirmed": True})
    row = engine.instance(instance_id)
    assert state.is_current(row.state) and row.serializer_version == runtime.SERIALIZER_VERSION
    [task] = engine.inbox(epb).rows
    assert task.bpmn_id == "second"
    engine.complete(epb, task.id, {"confirmed": True})
    assert engine.instance(instance_id).status == "completed"
    engine.db.dispose()


def test_an_instance_row_read_by_the_engine_equals_the_orms(tmp_path, clock):
    """The engine reads instance rows with one statement of its own (fastsql): every column comes
    back as SQLAlchemy gives it (aware UTC datetimes, JSON, bytes)."""
    from engine.models import Instance
    engine = deployed_engine(tmp_path, "deadline.bpmn")
    org = add_organisation(engine, kind="enterprise", name="甲", credit_code="91350100M000100Y43",
                           division_code="650102")
    clock.set(datetime(2025, 2, 1, 9, 0, tzinfo=SHANGHAI))  # the Art. 10 deadline is still ahead
    instance_id = engine.start("deadline", actor="x", data={
        "enterprise_id": org, "jurisdiction_code": "650102", "published_on": "2025-01-31"})
    with engine.db.read() as session:
        orm = session.get(Instance, instance_id)
        expected = {c.key: getattr(orm, c.key) for c in Instance.__table__.columns}
    assert expected["next_timer_at"] is not None and expected["next_timer_at"].tzinfo is not None
    with engine.db.read() as session:
        mine = engine._read_instance(session, instance_id, lock=False)
        assert {c.key: getattr(mine, c.key) for c in Instance.__table__.columns} == expected
        assert mine in session and not session.dirty
    engine.db.dispose()


def test_a_task_line_stores_exactly_what_its_data_adds_to_its_parents():
    """The data part of a task line: the values that differ from the parent's or are new, and the
    parent's keys the task lacks (whatever the order of keys, shared or copied values)."""
    from engine.state import _delta
    shared = {"rows": [1, 2]}
    parent = {"a": 1, "b": "x", "nested": shared, "c": None}
    assert _delta(dict(parent), parent) == [{}, []]
    assert _delta({**parent, "b": "y", "d": 4}, parent) == [{"b": "y", "d": 4}, []]
    assert _delta({**parent, "nested": {"rows": [1, 2]}}, parent) == [{}, []]  # equal copy: nothing
    assert _delta({**parent, "nested": {"rows": [1, 3]}}, parent) == [{"nested": {"rows": [1, 3]}}, []]
    child = dict(parent)
    del child["b"]
    child["e"] = 5
    assert _delta(child, parent) == [{"e": 5}, ["b"]]
    reordered = {"c": None, "b": "x", "a": 2, "nested": shared}
    assert _delta(reordered, parent) == [{"a": 2}, []]


def test_state_text_is_parsed_to_exactly_what_json_loads_gives():
    """Loads parse state text with orjson where it gives the same value as json.loads, and with
    json.loads where it would not (NaN and Infinity, lone surrogates, integers beyond 64 bits
    that orjson would read as floats)."""
    import random
    from engine.state import parse_json
    rng = random.Random(7)
    floats = [rng.uniform(-1e6, 1e6) for _ in range(300)] + [rng.random() * 10 ** rng.randint(-300, 300)
                                                            for _ in range(300)]
    values = [
        {"a": 1, "b": [1.5, -0.0, None, True, False], "c": "天山 ✓", "d": {"e": []}},
        floats,
        [2 ** 63 - 1, -2 ** 63, 2 ** 64 - 1, 2 ** 64, -2 ** 63 - 1, 10 ** 30, -10 ** 40, 1796034432.0971427],
        ["1234567890123456789012 digits in a string", 12345678901234567],
        [float("nan"), float("inf"), float("-inf")],
        ["lone \ud800 surrogate", {"k\udfff": 1}],
    ]
    for value in values:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
        got, expected = parse_json(text), json.loads(text)
        assert json.dumps(got) == json.dumps(expected)  # (NaN != NaN: compared as text)
        assert [type(x) for x in got] == [type(x) for x in expected]
    big = parse_json(b"[18446744073709551616,-9223372036854775809]")
    assert big == [18446744073709551616, -9223372036854775809] and all(type(x) is int for x in big)


def test_values_orjson_cannot_read_survive_a_save_and_load(tmp_path, clock):
    """Task data with an integer beyond 64 bits, NaN and a lone surrogate is stored and loaded back
    as it was (such text is read by json.loads)."""
    import math
    from engine import runtime
    engine, instance_id = started_approval(tmp_path)
    with engine.db.read() as session:
        loaded = engine._load(session, instance_id, lock=False)
        task = runtime.ready_user_tasks(loaded.workflow)[0]
        spec_bundle = engine._specs(session, loaded.row.version_id)
        subs = engine._subprocess_specs(session, loaded.row.version_id, loaded.row.called_versions or {})

        def saved_and_loaded(values: dict) -> dict:
            task.data.update(values)
            state = runtime.dump_state(loaded.workflow)
            again = runtime.load_state(state, spec_bundle[1], subs, engine.script_engine(session))
            return again.get_task_from_id(task.id).data

        data = saved_and_loaded({"big": 2 ** 70, "negative": -2 ** 64})  # (each kind in a state of its own)
        assert data["big"] == 2 ** 70 and type(data["big"]) is int
        assert data["negative"] == -2 ** 64 and type(data["negative"]) is int
        data = saved_and_loaded({"big": 1, "negative": -1, "nan": float("nan")})
        assert math.isnan(data["nan"])
        del task.data["nan"]
        assert saved_and_loaded({"text": "a\ud800b"})["text"] == "a\ud800b"
    engine.db.dispose()


def test_a_state_says_whether_its_load_must_look_for_long_numbers(tmp_path, clock, monkeypatch):
    """A save marks its text "digits":0 when no number in it can have 19 digits or more: its load
    reads it by orjson without looking through it. A text holding such a number is marked
    "digits":1, and one written before the mark existed is looked through; both load exactly."""
    from engine import runtime
    from engine import state as state_format
    engine, instance_id = started_approval(tmp_path)
    looked = []
    real_look = state_format.has_long_digits
    monkeypatch.setattr(state_format, "has_long_digits", lambda text: looked.append(len(text)) or real_look(text))
    with engine.db.read() as session:
        loaded = engine._load(session, instance_id, lock=False)
        task = runtime.ready_user_tasks(loaded.workflow)[0]
        spec_bundle = engine._specs(session, loaded.row.version_id)
        subs = engine._subprocess_specs(session, loaded.row.version_id, loaded.row.called_versions or {})

        def load(state):
            looked.clear()
            return runtime.load_state(state, spec_bundle[1], subs, engine.script_engine(session))

        def unmarked(state) -> bytes:  # the same state as saved before the mark existed
            texts = [text for _, text in state_format.frames(state)]
            texts[0] = texts[0].replace(b'"digits":0,', b"", 1).replace(b'"digits":1,', b"", 1)
            assert b'"digits"' not in texts[0]
            return state_format.compress_frames(texts)

        plain = runtime.dump_state(loaded.workflow)
        assert state_format.decompress(plain).startswith(b'{"format":2,"digits":0,"wf":')
        again = load(plain)
        assert looked == []  # read by orjson at once
        assert reference_dump(again) == reference_dump(reference_load(plain, spec_bundle[1], subs))
        assert reference_dump(load(unmarked(plain))) == reference_dump(again)
        assert looked  # an unmarked text is looked through

        task.data["serial"] = 2 ** 70
        marked = runtime.dump_state(loaded.workflow)
        assert state_format.decompress(marked).startswith(b'{"format":2,"digits":1,"wf":')
        for state in (marked, unmarked(marked)):
            data = load(state).get_task_from_id(task.id).data
            assert data["serial"] == 2 ** 70 and type(data["serial"]) is int
    engine.db.dispose()


def test_what_a_save_finds_out_belongs_to_its_own_thread():
    """One codec serves every thread: whether the save under way round-trips (and may keep its
    workflow in memory) must not be changed by a save running in another thread."""
    import threading
    from engine import runtime
    codec = runtime._codec
    codec.round_trip_ok, codec.long_digits = True, False
    seen = []

    def other_thread():
        codec.round_trip_ok, codec.long_digits = False, True
        seen.append((codec.round_trip_ok, codec.long_digits))

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert seen == [(False, True)]
    assert (codec.round_trip_ok, codec.long_digits) == (True, False)


def test_task_ids_read_from_a_state_behave_as_uuids_and_keep_their_text():
    """Ids read from a state keep the text they were read from (the next save writes it without
    printing the UUID): equal to and hashed as the UUID, printed as it prints, upper-case text
    written in the canonical lower case, copies printed right."""
    import copy
    from engine import runtime
    text = "0a94c30a-010e-4aac-be2b-c7144c0c8552"
    read = runtime._uuid(text)
    plain = UUID(text)
    assert read == plain and plain == read and hash(read) == hash(plain) and {plain: 1}[read] == 1
    assert str(read) == runtime._text(read) == text and repr(read) == repr(plain)
    upper = runtime._uuid(text.upper().replace("0A94", "0B94"))
    assert str(upper) == runtime._text(upper) == str(UUID(text.replace("0a94", "0b94")))
    for copied in (copy.copy(read), copy.deepcopy(read)):
        assert copied == plain and str(copied) == runtime._text(copied) == text


def test_task_lines_are_written_as_the_json_encoder_writes_them(tmp_path, clock):
    """The head of a task line is put together by hand (ids, times, states): it must be exactly
    the text json.dumps gives for the same values, so that any reader of the format agrees."""
    from sqlalchemy import select
    from engine import state as state_format
    from engine.models import Instance
    engine = deployed_engine(tmp_path, "approval.bpmn", "loop.bpmn")
    org = add_organisation(engine, kind="enterprise", name="天山化工有限公司", credit_code="91350100M000100Y43",
                           division_code="650102")
    enterprise = add_user(engine, "ent", ["enterprise"], organisation_id=org)
    engine.start("approval", actor="x", data={"enterprise_id": org, "enterprise_name": "天山化工有限公司",
                                               "jurisdiction_code": "650102", "published_on": "2025-01-31"})
    engine.complete(enterprise, engine.inbox(enterprise).rows[0].id, {"figure": 2.5, "note": "月均值 ✓"})
    engine.start("loop", actor="x", data={"counter": 0, "rounds": 10})
    with engine.db.read() as session:
        states = [row.state for row in session.scalars(select(Instance))]
    lines = [line for state in states for line in state_format.decompress(state).split(b"\n")[1:]]
    assert len(lines) > 20
    for line in lines:
        head, _, payload = line.partition(b"\t")
        for part in (head, payload):
            value = json.loads(part)
            assert json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode() == part
    engine.db.dispose()


def test_finished_sub_processes_are_stored_once_compressed_and_copied_afterwards():
    """A finished sub-process of the real process goes last in the state, in a zstd frame of its
    own, which a load keeps and the next save copies instead of compressing it again."""
    import shutil
    import tempfile
    from pathlib import Path
    from sqlalchemy import select
    from engine import bench, clock as engine_clock, runtime, state as state_format
    from engine.models import Instance
    runner = bench.Bench(bench.resolve_sizes(True, {}), out=open("/dev/null", "w"))
    tmp = Path(tempfile.mkdtemp(prefix="cleanaudit-frames-"))
    try:
        runner.setup(tmp)
        instance_id = runner.start_instance()
        stored = None
        for _ in range(60):  # complete tasks until a sub-process has finished
            rows = runner.open_tasks(instance_id)
            if not rows:
                break
            row = rows[0]
            runner._engine_complete(runner.user_for(row.lane, row.scope), row, runner.task_data(row))
            with runner.engine.db.read() as session:
                stored = session.scalar(select(Instance.state).where(Instance.id == instance_id))
            if json.loads(state_format.decompress(stored).split(b"\n")[0]).get("tail"):
                break
        header = json.loads(state_format.decompress(stored).split(b"\n")[0])
        frames = state_format.frames(stored)
        assert header["tail"] >= 1 and len(frames) == 1 + header["tail"]
        with runner.engine.db.read() as session:
            row = session.get(Instance, instance_id)
            _, spec, _, _ = runner.engine._specs(session, row.version_id)
            subs = runner.engine._subprocess_specs(session, row.version_id, row.called_versions or {})
        workflow = runtime.load_state(stored, spec, subs, runner.engine.script_engine())
        kept = [sp.__dict__[state_format._FINISHED_BLOCK] for sp in workflow.subprocesses.values()
                if state_format._FINISHED_BLOCK in sp.__dict__]
        assert sorted(entry[3] for entry in kept) == sorted(frame for frame, _ in frames[1:])
        again = runtime.dump_state(workflow)
        assert state_format.decompress(again) == state_format.decompress(stored)
        assert again.endswith(b"".join(frame for frame, _ in frames[1:]))
    finally:
        engine_clock.reset()
        runner.engine.db.dispose()
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_workflow_the_cache_lets_go_of_is_freed_without_the_garbage_collector(tmp_path, clock):
    """Workflows are object graphs full of cycles; one pushed out of the cache is taken apart so
    that reference counting frees it at once (a timer sweep through thousands of instances spent
    a quarter of its time in garbage collections before)."""
    import gc
    import weakref
    from engine import runtime
    engine = deployed_engine(tmp_path, "loop.bpmn")
    engine._workflows.size = 1
    first = engine.start("loop", actor="x", data={"counter": 0, "rounds": 3})
    workflow = engine._workflows._entries[first][1]
    tasks = [weakref.ref(task) for one in runtime._all_workflows(workflow) for task in one.tasks.values()]
    kept = weakref.ref(workflow)
    del workflow
    gc.collect()
    gc.disable()
    try:
        engine.start("loop", actor="x", data={"counter": 0, "rounds": 3})  # pushes the first one out
        assert first not in engine._workflows._entries
        assert kept() is None and all(task() is None for task in tasks)
    finally:
        gc.enable()
    engine.db.dispose()
