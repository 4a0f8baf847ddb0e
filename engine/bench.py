"""`cleanaudit bench [--quick]`: what users feel, measured against this machine's own floor.

Everything runs in a temporary SQLite database of its own (WAL, the engine's settings), which is
deleted at the end. The process measured is a parameter: `mandatory_audit` (with its forms) when
it is deployed in processes/ and deployable, else the engine's test fixture `approval`. Every user
task is completed with data generated from its JSON Schema form, so the benchmark follows the
processes as they change.

Output: a readable table, then ONE line of JSON with every figure (the last line).

Sizes can be overridden (tests use tiny ones) with the `sizes` argument of `main` or the
environment variable CLEANAUDIT_BENCH_SIZES (a JSON object).
"""
from __future__ import annotations

import gc
import json
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from sqlalchemy import JSON, Column, Integer, MetaData, Table, insert, literal, select, update

from .facade import PROJECT_ROOT

SHANGHAI = timezone(timedelta(hours=8))
START_TIME = datetime(2025, 3, 3, 9, 0, tzinfo=SHANGHAI)
FIXTURES = PROJECT_ROOT / "tests" / "data" / "engine"
PASSWORD = "bench-password"
SIZES_ENV = "CLEANAUDIT_BENCH_SIZES"

SIZES = {
    "quick": {
        "floor_updates": 300, "floor_instances": 20, "warmup_instances": 2, "instances": 20,
        "http_instances": 5, "inbox_rows": 100_000, "inbox_user_rows": 5_000, "inbox_queries": 150,
        "tick_waiting": 100_000, "tick_due": 1000, "tick_due_one_process": 250, "tick_idle_runs": 30,
        "loop_rounds": [10, 100, 1000], "save_repeats": 5,
    },
    "full": {
        "floor_updates": 1000, "floor_instances": 100, "warmup_instances": 5, "instances": 150,
        "http_instances": 40, "inbox_rows": 100_000, "inbox_user_rows": 5_000, "inbox_queries": 1000,
        "tick_waiting": 100_000, "tick_due": 10_000, "tick_due_one_process": 2000,
        "tick_idle_runs": 100,
        "loop_rounds": [10, 100, 1000], "save_repeats": 15,
    },
}

# (key, comparison, target): the project's goals (issue 8), for --quick and the full run alike.
TARGETS = [
    ("complete_ratio", "<=", 3.0),
    ("complete_ms_p95", "<=", 10.0),
    ("inbox_ms_p95_100k", "<=", 2.0),
    ("inbox_count_ms_p95_100k", "<=", 5.0),
    ("http_complete_ms_p95", "<=", 25.0),
    ("tick_per_s", ">=", 300.0),
    ("tick_idle_ms", "<=", 5.0),
    ("growth_exponent", "<=", 1.1),
    ("state_bytes_final", "<=", 40000),
]

KEYS = ["floor_update_ms", "floor_engine_ms", "complete_ms_p50", "complete_ms_p95", "complete_ratio",
        "lifecycle_per_s", "inbox_ms_p95_100k", "inbox_count_ms_p95_100k", "http_complete_ms_p95",
        "tick_per_s", "tick_idle_ms", "state_bytes_final", "growth_exponent"]


# ---------------------------------------------------------------------- small helpers
def percentile(values: list[float], pct: float) -> float:
    """The pct-th percentile (linear interpolation between closest ranks)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _loglog_slope(xs: list, ys: list) -> Optional[float]:
    points = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len(points) < 2:
        return None
    mean_x = sum(p[0] for p in points) / len(points)
    mean_y = sum(p[1] for p in points) / len(points)
    spread = sum((p[0] - mean_x) ** 2 for p in points)
    if spread == 0:
        return None
    return sum((p[0] - mean_x) * (p[1] - mean_y) for p in points) / spread


def _ms(seconds: float) -> float:
    return seconds * 1000.0


def _round(value, digits=3):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return round(value, digits) if isinstance(value, float) else value


def history_plain(data):
    from .history import plain
    return plain(data)


def _uscc(division: str, serial: int) -> str:
    from .forms import uscc_check_character
    first17 = "91" + division + f"{serial:09d}"
    return first17 + uscc_check_character(first17)


# ---------------------------------------------------------------------- form data from a schema
class FormDataGenerator:
    """Valid data for a JSON Schema form: required fields, enums (first option), minimums, formats.

    `hints` maps a field name to the value to use wherever that field appears (ids of the
    organisations the bench created, the decision that moves the process forward, ...).
    """

    def __init__(self, hints: Optional[dict] = None, today: date = START_TIME.date()):
        self.hints = dict(hints or {})
        self.today = today

    def generate(self, form) -> dict:
        data = self._value(form.schema, form.schema, "")
        problems = form.check(data)
        if problems:
            raise RuntimeError(f"bench: generated data for {form.path} is invalid: "
                               + "; ".join(f"{k}: {[m.text('en') for m in v]}" for k, v in problems.items()))
        return data

    def _resolve(self, root: dict, node: Any) -> Any:
        seen = 0
        while isinstance(node, dict) and "$ref" in node and seen < 20:
            ref = node["$ref"]
            target: Any = root
            for token in ref.lstrip("#/").split("/"):
                if token:
                    target = target[token.replace("~1", "/").replace("~0", "~")]
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            seen += 1
        return node

    def _value(self, root: dict, node: Any, name: str) -> Any:
        node = self._resolve(root, node)
        if name in self.hints:
            return self.hints[name]
        if not isinstance(node, dict):
            return None
        if "const" in node:
            return node["const"]
        for keyword in ("oneOf", "anyOf"):
            branches = node.get(keyword)
            if isinstance(branches, list) and branches:
                consts = [b for b in branches if isinstance(b, dict) and "const" in b]
                if consts:
                    return consts[0]["const"]
        if isinstance(node.get("enum"), list) and node["enum"]:
            return node["enum"][0]
        types = node.get("type")
        types = [types] if isinstance(types, str) else list(types or [])
        kind = next((t for t in types if t != "null"), None)
        if kind is None:
            kind = "object" if "properties" in node else "string"
        if kind == "object":
            return self._object(root, node)
        if kind == "array":
            count = max(1, int(node.get("minItems", 1) or 1)) if node.get("minItems", 1) else 1
            items = node.get("items") or {}
            return [self._value(root, items, f"{name}[]") for _ in range(count)]
        if kind == "integer":
            return int(self._number(node, 1))
        if kind == "number":
            return float(self._number(node, 1.0))
        if kind == "boolean":
            return True
        return self._string(node, name)

    def _number(self, node: dict, default):
        low = node.get("minimum")
        if node.get("exclusiveMinimum") is not None:
            low = node["exclusiveMinimum"] + 1
        high = node.get("maximum")
        value = default if low is None else max(low, default)
        if high is not None and value > high:
            value = high
        return value

    def _string(self, node: dict, name: str) -> str:
        fmt = node.get("format")
        if fmt == "date":
            return self.today.isoformat()
        if fmt == "date-time":
            return f"{self.today.isoformat()}T10:00:00+08:00"
        if fmt == "uscc":
            return _uscc("650102", 1)
        if fmt == "division-code":
            return "650102"
        if fmt == "cas":
            return "7732-18-5"
        if fmt == "amount":
            return "100.00"
        text = "基准测试数据"
        low, high = int(node.get("minLength", 1) or 0), node.get("maxLength")
        if len(text) < low:
            text = text + "据" * (low - len(text))
        if high is not None:
            text = text[:int(high)]
        return text

    def _object(self, root: dict, node: dict) -> dict:
        import jsonschema
        props = dict(node.get("properties") or {})
        required = list(node.get("required") or [])
        out: dict = {}
        for _ in range(5):  # conditional requirements (allOf / if-then) until nothing changes
            for key in required:
                if key not in out:
                    out[key] = self._value(root, props.get(key, {}), key)
            added = False
            for branch in node.get("allOf") or []:
                branch = self._resolve(root, branch)
                if not isinstance(branch, dict):
                    continue
                condition = branch.get("if")
                chosen = branch.get("then") if condition is None or jsonschema.Draft202012Validator(
                    condition).is_valid(out) else branch.get("else")
                chosen = self._resolve(root, chosen) if chosen else None
                if isinstance(chosen, dict):
                    for key, sub in (chosen.get("properties") or {}).items():
                        props.setdefault(key, sub)
                    for key in chosen.get("required") or []:
                        if key not in required:
                            required.append(key)
                            added = True
            if not added:
                break
        for key in required:
            if key not in out:
                out[key] = self._value(root, props.get(key, {}), key)
        return out


def form_fields(data: dict, prefix: str = "") -> list[tuple[str, str]]:
    """Data as HTML form fields (the naming engine.forms.coerce reads back)."""
    fields: list[tuple[str, str]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            fields += form_fields(value, name + "-")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    fields += form_fields(item, f"{name}-{index}-")
                else:
                    fields.append((name, _form_scalar(item)))
        else:
            fields.append((name, _form_scalar(value)))
    return fields


def _form_scalar(value) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return "" if value is None else str(value)


# ---------------------------------------------------------------------- scenarios (the process measured)
ENTERPRISE_NAME = "天山清洁化工有限公司"


@dataclass
class Scenario:
    """The process measured and how to start it; everything else follows its forms.

    Every instance gets an enterprise of its own: a second listing of the same enterprise would
    reach the open audit (the relisting event sub-process) instead of starting a new one.
    """

    name: str
    process_id: str
    processes: list[Path]
    forms_dir: Path
    note: str = ""
    ctx: dict = field(default_factory=dict)
    enterprises: dict = field(default_factory=dict)   # index -> {"id", "code", "name"}
    instances: dict = field(default_factory=dict)     # instance id -> index

    def setup(self, engine) -> None:
        """The filed audit agency every enterprise commissions."""
        from .models import Organisation
        self.engine = engine
        with engine.db.transaction() as session:
            agency = Organisation(kind="agency", name="新疆清洁生产咨询有限公司", credit_code=_uscc("650104", 2),
                                  division_code="650104", filing_status="filed", filing_number="XJ-QS-2024-001",
                                  filed_at=START_TIME, legal_representative="李娜", address="乌鲁木齐市新市区")
            session.add(agency)
            session.flush()
            self.ctx.update(agency_id=agency.id, agency_code=agency.credit_code)

    def enterprise(self, index: int) -> dict:
        found = self.enterprises.get(index)
        if found is None:
            from .models import Organisation
            code = _uscc("650102", 1000 + index)
            name = f"{ENTERPRISE_NAME}（{index + 1}）"
            with self.engine.db.transaction() as session:
                org = Organisation(kind="enterprise", name=name, credit_code=code, division_code="650102",
                                   industry_code="2614", is_central=False, legal_representative="王伟",
                                   address="乌鲁木齐市天山区解放南路1号")
                session.add(org)
                session.flush()
                found = self.enterprises[index] = {"id": org.id, "code": code, "name": name}
        return found

    def hints(self, index: int) -> dict:
        enterprise = self.enterprise(index)
        return {"agency_id": self.ctx["agency_id"], "enterprise_id": enterprise["id"],
                "uscc": enterprise["code"], "credit_code": enterprise["code"],
                "division_code": "650102", "jurisdiction_code": "650102",
                "enterprise_name": enterprise["name"], "expert": "bench-expert"}

    def met_tasks(self) -> list[str]:
        """Tasks that meet the first deadline's obligation (the routine case of a due timer)."""
        if self.process_id == "mandatory_audit":
            return ["publish_emissions", "verify_disclosure"]  # Art. 10 done: next is Art. 11
        return []

    def start_data(self, index: int) -> dict:
        enterprise = self.enterprise(index)
        data = {"enterprise_id": enterprise["id"], "enterprise_name": enterprise["name"],
                "jurisdiction_code": "650102", "published_on": "2025-03-03"}
        if self.process_id == "mandatory_audit":
            data.update(grounds=["exceeding"], batch="2025-1", is_central=False)
        return data

    def start(self, engine, index: int) -> int:
        data = self.start_data(index)
        if self.process_id == "mandatory_audit":
            # as mandatory_listing throws it: correlation property enterprise_id
            instance_id = engine.send_message("enterprise_listed", data,
                                              {"MainCorrelationKey": {"enterprise_id": data["enterprise_id"]}})
            if instance_id is None:
                raise RuntimeError("bench: no process took the message enterprise_listed")
            if instance_id in self.instances:
                raise RuntimeError(f"bench: the listing of a new enterprise reached the open audit "
                                   f"{instance_id} of another one instead of starting an audit")
        else:
            instance_id = engine.start(self.process_id, actor="bench", data=data)
        self.instances[instance_id] = index
        return instance_id

    def start_in_memory(self, make_workflow, index: int = 0) -> Any:
        """The same start without the database, for the engine floor."""
        data = self.start_data(index)
        workflow = make_workflow(data)
        if self.process_id == "mandatory_audit":
            from SpiffWorkflow.bpmn import BpmnEvent
            from SpiffWorkflow.spiff.specs.event_definitions import MessageEventDefinition as SpiffMessage
            from . import runtime
            runtime.do_engine_steps(workflow)
            workflow.send_event(BpmnEvent(SpiffMessage("enterprise_listed"), payload=data, correlations={
                "MainCorrelationKey": {"enterprise_id": data["enterprise_id"]}}))
        return workflow


def choose_scenario(out, process: str = "auto") -> Scenario:
    """mandatory_audit when it is in processes/ and deployable, else the `approval` fixture.

    `process` ("auto", "mandatory_audit" or "approval"; the size key "process") forces a choice.
    """
    real = PROJECT_ROOT / "processes" / "mandatory_audit.bpmn"
    fallback = Scenario(
        name="approval (test fixture)", process_id="approval",
        processes=[FIXTURES / "processes" / "approval.bpmn"], forms_dir=FIXTURES / "forms")
    if process == "approval":
        fallback.note = "chosen"
        return fallback
    if not real.exists():
        fallback.note = "processes/mandatory_audit.bpmn does not exist yet"
        return fallback
    from .validate import validate_files
    files = sorted((PROJECT_ROOT / "processes").glob("*.bpmn"))
    try:
        report = validate_files([(p.name, p.read_bytes()) for p in files], forms_dir=PROJECT_ROOT / "forms",
                                known_process_ids=set())
    except Exception as exc:  # noqa: BLE001 — a broken process must not stop the benchmark
        fallback.note = f"processes/ could not be validated: {exc}"
        return fallback
    if not report.ok or "mandatory_audit" not in report.process_ids:
        first = "; ".join(str(p) for p in report.errors[:3])
        fallback.note = f"processes/mandatory_audit.bpmn is not deployable ({first})"
        return fallback
    return Scenario(name="mandatory_audit", process_id="mandatory_audit", processes=files,
                    forms_dir=PROJECT_ROOT / "forms")


# ---------------------------------------------------------------------- the bench
class Bench:
    def __init__(self, sizes: dict, out=None):
        self.sizes = sizes
        self.out = out or sys.stdout
        self.results: dict[str, Any] = {}
        self.details: dict[str, Any] = {}
        self._users: dict[tuple[str, str], Any] = {}
        self._data_cache: dict[tuple[str, str], dict] = {}

    def start_instance(self) -> int:
        """A new instance of the measured process, for an enterprise of its own."""
        self._started = getattr(self, "_started", 0) + 1
        return self.scenario.start(self.engine, self._started)

    def log(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # ---- setup
    def setup(self, tmp: Path) -> None:
        from . import clock
        from .accounts import seed_calendar, seed_divisions
        from .facade import Engine, default_timer_processes
        clock.set_now(START_TIME)
        self.scenario = choose_scenario(self.out, self.sizes.get("process", "auto"))
        self.url = f"sqlite:///{tmp / 'bench.sqlite'}"
        # timer sweeps as the `worker` command fires them: one process per core (at most 4)
        self.engine = Engine(self.url, processes_dir=self.scenario.processes[0].parent,
                             forms_dir=self.scenario.forms_dir, timer_processes=default_timer_processes())
        self.engine.create_schema()
        with self.engine.db.transaction() as session:
            seed_divisions(session)
            seed_calendar(session)
        self.engine.invalidate_calendar()
        self.engine.deploy_paths(self.scenario.processes, deployed_by="bench")
        self.scenario.setup(self.engine)
        from .accounts import hash_password
        self._password_hash = hash_password(PASSWORD)  # once: every bench user shares it
        self.user_for("expert", "u:bench-expert")

    def user_for(self, lane: str, scope: str):
        """A user with the role `lane` matching the scope key (created once)."""
        key = (lane, scope)
        user = self._users.get(key)
        if user is not None:
            return user
        from .models import User
        kind, _, value = scope.partition(":")
        kwargs: dict = {}
        if kind == "j":
            kwargs["jurisdiction_code"] = value
            username = f"bench-{lane}-{value}"
        elif kind == "o":
            kwargs["organisation_id"] = int(value)
            username = f"bench-{lane}-org{value}"
        else:
            username = value
        with self.engine.db.transaction() as session:
            existing = session.scalar(select(User).where(User.username == username))
            if existing is not None:
                if lane not in (existing.roles or []):
                    existing.roles = list(existing.roles or []) + [lane]
                user = existing
            else:
                user = User(username=username, display_name=username, password_hash=self._password_hash,
                            roles=[lane], active=True, **kwargs)
                session.add(user)
                session.flush()
        self._users[key] = user
        return user

    def task_data(self, row) -> dict:
        if not row.form:
            return {"confirmed": True}
        index = self.scenario.instances.get(row.instance_id, 0)
        key = (row.form_process_id, row.form, index)
        data = self._data_cache.get(key)
        if data is None:
            form = self.engine.forms.load(row.form_process_id, row.form)
            data = self._data_cache[key] = FormDataGenerator(self.scenario.hints(index)).generate(form)
        return json.loads(json.dumps(data))

    def open_tasks(self, instance_id: int) -> list:
        from .models import HumanTask
        with self.engine.db.read() as session:
            return list(session.scalars(select(HumanTask).where(
                HumanTask.instance_id == instance_id, HumanTask.status == "open").order_by(HumanTask.created_at)))

    def run_instance(self, instance_id: int, complete: Callable, timings: Optional[list] = None,
                     max_steps: int = 500, prepare: Optional[Callable] = None) -> int:
        """Complete every task of an instance until it ends; returns the number of completions."""
        steps = 0
        while True:
            rows = self.open_tasks(instance_id)
            if not rows:
                return steps
            for row in rows:
                user = self.user_for(row.lane, row.scope)
                data = self.task_data(row)
                if prepare is not None:
                    prepare(user)  # e.g. log in: not part of completing the task
                started = time.perf_counter()
                complete(user, row, data)
                if timings is not None:
                    timings.append(time.perf_counter() - started)
                steps += 1
                if steps > max_steps:
                    raise RuntimeError(f"bench: instance {instance_id} did not end after {max_steps} tasks")

    def _engine_complete(self, user, row, data) -> None:
        result = self.engine.complete(user, row.id, data)
        if result.incident:
            raise RuntimeError(f"bench: completing {row.bpmn_id} caused an incident: {result.incident}")

    # ---- floors
    # ---- floors, measured interleaved with the completions (a shared machine's load changes
    # by the second: floors and completions must see the same load for their ratio to mean anything)
    def _floor_update_runner(self) -> Callable:
        """A bare Core UPDATE of a 5 KB JSON row, one transaction each, same engine settings."""
        metadata = MetaData()
        table = Table("bench_floor", metadata, Column("id", Integer, primary_key=True), Column("data", JSON))
        db = self.engine.db.engine
        metadata.create_all(db)
        payload = {f"field_{i:03d}": "x" * 90 for i in range(50)}  # ~5 KB of JSON
        with db.begin() as conn:
            conn.execute(insert(table).values(id=1, data=payload))
        self.details["floor_update_bytes"] = len(json.dumps(payload))
        statement = update(table).where(table.c.id == 1)
        counter = [0]

        def run(count: int, timings: list) -> None:
            for _ in range(count):
                counter[0] += 1
                payload["field_000"] = f"{counter[0]:090d}"
                started = time.perf_counter()
                with db.begin() as conn:
                    conn.execute(statement.values(data=payload))
                timings.append(time.perf_counter() - started)

        return run

    def _floor_engine_runner(self) -> Callable:
        """The same completions by SpiffWorkflow alone: in memory, no database, no (de)serialisation.

        Scripts run in the same restricted engine; the helpers that write or read the database
        (records, organisations) are replaced by in-memory ones, the rarer look-ups are left as they
        are (on a read-only session).
        """
        from SpiffWorkflow import TaskState
        from . import history, runtime
        from .scripting import RestrictedScriptEngine, start_run
        from .models import ProcessVersion
        engine = self.engine
        with engine.db.read() as session:
            version = engine.latest_version(session, self.scenario.process_id)
            pins = engine._pin_versions(session, version.id)
            spec_texts = [version.spec_json] + [session.get(ProcessVersion, v).spec_json for v in pins.values()]
            called = list(pins)
        forms_cache: dict = {}

        def private_specs():
            # SpiffWorkflow changes a spec the first time an event sub-process is triggered
            # (BpmnStartTask.trigger_wf connects it to the start): the floor must not share the
            # engine's cached specs, nor one floor instance another's.
            spec, subs = runtime.spec_from_json(spec_texts[0])
            subs = dict(subs)
            for process_id, text in zip(called, spec_texts[1:]):
                called_spec, embedded = runtime.spec_from_json(text)
                subs[process_id] = called_spec
                subs.update(embedded)
            return spec, subs

        def run(index: int, timings: list) -> None:
            self.scenario.start_data(index)  # creates the enterprise (not timed)
            spec, subs = private_specs()
            with engine.db.read() as session:
                helpers = dict(engine.extra_helpers)
                helpers["due"] = engine._due_helper
                helpers.update(engine._lookup_helpers(session, {"actor": "bench"}))
                helpers.update(self._memory_helpers(session))
                script_engine = RestrictedScriptEngine(helpers=helpers)

                def make_workflow(data):
                    workflow = runtime.new_workflow(spec, subs, script_engine)
                    start = history.plain(data)
                    workflow.task_tree.data.update(start)
                    for task in workflow.get_tasks(state=TaskState.READY):
                        task.data.update(start)
                    return workflow

                workflow = self.scenario.start_in_memory(make_workflow, index)
                with start_run(budget_seconds=engine.script_budget_seconds):
                    runtime.do_engine_steps(workflow)
                steps = 0
                while True:
                    ready = runtime.ready_user_tasks(workflow)
                    if not ready:
                        break
                    for task in ready:
                        props = runtime.user_task_properties(task)
                        form_name = props.get("formJsonSchemaFilename")
                        if form_name:
                            key = (task.workflow.spec.name, form_name, index)
                            if key not in forms_cache:
                                form = engine.forms.load(task.workflow.spec.name, form_name)
                                forms_cache[key] = FormDataGenerator(self.scenario.hints(index)).generate(form)
                            data = json.loads(json.dumps(forms_cache[key]))
                        else:
                            data = {"confirmed": True}
                        started = time.perf_counter()
                        task.data.update(data)
                        with start_run(budget_seconds=engine.script_budget_seconds):
                            task.run()
                            runtime.do_engine_steps(workflow)
                        timings.append(time.perf_counter() - started)
                        steps += 1
                    if steps > 500:
                        raise RuntimeError("bench: the in-memory floor did not end")

        return run

    def _memory_helpers(self, session) -> dict:
        """In-memory stand-ins for the script helpers that touch the database on the hot path."""
        from .models import Organisation
        organisations = {}
        for org in session.scalars(select(Organisation)):
            organisations[org.id] = {
                "id": org.id, "kind": org.kind, "name": org.name, "credit_code": org.credit_code,
                "division_code": org.division_code, "industry_code": org.industry_code,
                "is_central": org.is_central, "legal_representative": org.legal_representative,
                "address": org.address, "filing_status": org.filing_status, "filing_number": org.filing_number}
        records: dict[int, dict] = {}

        def is_filed_agency(org_id) -> bool:
            org = organisations.get(int(org_id)) if org_id not in (None, "") else None
            return bool(org and org["kind"] == "agency" and org["filing_status"] == "filed")

        def organisation_info(org_id) -> dict:
            org = organisations.get(int(org_id)) if org_id not in (None, "") else None
            return dict(org) if org else {}

        def _record(kind, title, data=None, *args, **kwargs) -> int:
            records[len(records) + 1] = history_plain(data or {})
            return len(records)

        def read_record(record_id) -> dict:
            return dict(records.get(int(record_id), {}))

        return {"is_filed_agency": is_filed_agency, "organisation_info": organisation_info,
                "publish": _record, "keep_record": _record, "read_record": read_record}

    # ---- completion and lifecycle (with the floors, interleaved)
    def measure_complete(self) -> None:
        from .models import Instance
        floor_update, floor_engine = self._floor_update_runner(), self._floor_engine_runner()
        for _ in range(self.sizes["warmup_instances"]):
            self.run_instance(self.start_instance(), self._engine_complete)
            floor_engine(self._started, [])
            floor_update(5, [])
        instances = self.sizes["instances"]
        floor_instances = max(1, self.sizes["floor_instances"])
        updates_per_round = max(1, -(-self.sizes["floor_updates"] // instances))
        timings: list[float] = []
        update_t: list[float] = []
        engine_t: list[float] = []
        elapsed = 0.0
        last_id = None
        gc.collect()
        for round_no in range(instances):
            started = time.perf_counter()
            last_id = self.start_instance()
            self.run_instance(last_id, self._engine_complete, timings)
            elapsed += time.perf_counter() - started
            if round_no * floor_instances // instances != (round_no + 1) * floor_instances // instances:
                floor_engine(self._started, engine_t)  # the same enterprise, data and completions
            floor_update(updates_per_round, update_t)
        with self.engine.db.read() as session:
            row = session.get(Instance, last_id)
            status, state_bytes = row.status, len(row.state)
        if status not in ("completed", "running"):  # running: only timers left (not fired here)
            raise RuntimeError(f"bench: the last instance ended {status}")
        self.details["final_status"] = status
        self.results["floor_update_ms"] = _ms(statistics.median(update_t))
        self.results["floor_engine_ms"] = _ms(statistics.median(engine_t))
        self.results["complete_ms_p50"] = _ms(percentile(timings, 50))
        self.results["complete_ms_p95"] = _ms(percentile(timings, 95))
        self.results["lifecycle_per_s"] = instances / elapsed
        self.results["state_bytes_final"] = state_bytes
        self.details["completions"] = len(timings)
        self.details["floor_engine_completions"] = len(engine_t)
        self.details["floor_updates"] = len(update_t)
        self.details["tasks_per_instance"] = len(timings) / max(1, instances)

    # ---- http
    def measure_http(self) -> None:
        try:
            from webui import create_app
        except Exception as exc:  # noqa: BLE001
            self.results["http_complete_ms_p95"] = None
            self.details["http_missing"] = f"webui.create_app is missing ({exc})"
            return
        app = create_app({"ENGINE": self.engine, "SECRET_KEY": "bench-secret-key",
                          "SESSION_COOKIE_SECURE": False})
        clients: dict[str, Any] = {}
        token_re = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')

        def client_for(user):
            entry = clients.get(user.username)
            if entry is not None:
                return entry
            client = app.test_client()
            page = client.get("/login").get_data(as_text=True)
            token = token_re.search(page).group(1)
            response = client.post("/login", data={"username": user.username, "password": PASSWORD,
                                                   "csrf_token": token})
            if response.status_code != 302:
                raise RuntimeError(f"bench: login of {user.username} failed ({response.status_code})")
            page = client.get("/").get_data(as_text=True)
            found = token_re.search(page)
            if found is None:
                raise RuntimeError("bench: no CSRF token on the inbox page")
            clients[user.username] = entry = (client, found.group(1))
            return entry

        def complete(user, row, data):
            client, token = client_for(user)
            fields = form_fields(data) if row.form else [("confirmed", "on")]
            from werkzeug.datastructures import MultiDict
            response = client.post(f"/tasks/{row.id}", data=MultiDict(fields + [("csrf_token", token)]))
            if response.status_code != 302:
                text = response.get_data(as_text=True)
                raise RuntimeError(f"bench: HTTP completion of {row.bpmn_id} answered "
                                   f"{response.status_code}: {text[:500]}")

        # warm up: one instance
        self.run_instance(self.start_instance(), complete, prepare=client_for)
        timings: list[float] = []
        for index in range(self.sizes["http_instances"]):
            self.run_instance(self.start_instance(), complete, timings, prepare=client_for)
        self.results["http_complete_ms_p95"] = _ms(percentile(timings, 95))
        self.details["http_complete_ms_p50"] = _ms(percentile(timings, 50))
        self.details["http_completions"] = len(timings)

    # ---- inbox at scale
    def measure_inbox(self) -> None:
        from .authz import ACTOR_ROLES
        from .models import Division, HumanTask, Instance
        engine = self.engine
        total, mine = self.sizes["inbox_rows"], self.sizes["inbox_user_rows"]
        with engine.db.read() as session:
            codes = [c for c in session.scalars(select(Division.code)) if c != "650102"][:150]
        now = START_TIME.astimezone(timezone.utc)
        holders = max(1, min(1000, total // 100))
        with engine.db.engine.begin() as conn:
            first = conn.execute(insert(Instance.__table__).returning(Instance.__table__.c.id), [
                {"process_id": "bench_inbox", "version_id": 1, "called_versions": {}, "status": "running",
                 "state": b"", "serializer_version": "bench", "lock_version": 1, "title": f"inbox {i}",
                 "started_by": "bench", "started_at": now, "updated_at": now} for i in range(holders)]).scalars().all()
        holder_ids = list(first)
        user_lanes = ("local_epb", "local_drc")
        stride = max(1, total // max(1, mine))
        rows = []
        for i in range(total):
            if i % stride == 0 and i // stride < mine:
                lane, scope = user_lanes[(i // stride) % 2], "j:650102"   # the measured user's share
            else:
                lane = ACTOR_ROLES[i % len(ACTOR_ROLES)]
                if lane in ("enterprise", "consultancy"):
                    scope = f"o:{1000 + i % 3000}"
                elif lane == "expert":
                    scope = f"u:expert-{i % 200}"
                elif lane in user_lanes:
                    scope = f"j:{codes[i % len(codes)]}"                 # same roles, other places
                else:
                    scope = "j:650102" if i % 7 == 0 else f"j:{codes[i % len(codes)]}"
            due = None if i % 5 == 0 else now + timedelta(days=(i * 7919) % 90, minutes=i % 1440)
            rows.append({"id": str(uuid.UUID(int=i + 1)), "instance_id": holder_ids[i % len(holder_ids)],
                         "process_id": "bench_inbox", "bpmn_id": f"task_{i % 40}", "title": f"基准任务 {i}",
                         "lane": lane, "scope": scope, "form": None, "form_process_id": "bench_inbox",
                         "article": "Art. 10", "enterprise_name": f"企业 {i % 3000}", "due_at": due,
                         "status": "open", "created_at": now - timedelta(seconds=i)})
        started = time.perf_counter()
        table = HumanTask.__table__
        with engine.db.engine.begin() as conn:
            for chunk in range(0, len(rows), 10_000):
                conn.execute(insert(table), rows[chunk:chunk + 10_000])
        seeded = time.perf_counter() - started
        with engine.db.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE") if engine.db.is_sqlite else None
        user = self.user_for("local_epb", "j:650102")
        with engine.db.transaction() as session:
            from .models import User
            db_user = session.get(User, user.id)
            db_user.roles = list(user_lanes)
            user.roles = list(user_lanes)
        expected = sum(1 for r in rows if r["lane"] in user_lanes and r["scope"] == "j:650102")
        page = engine.inbox(user)
        if page.total < expected:
            raise RuntimeError(f"bench: inbox shows {page.total} tasks, expected at least {expected}")
        inbox_t, count_t = [], []
        for _ in range(self.sizes["inbox_queries"]):
            started = time.perf_counter()
            engine.inbox(user)
            inbox_t.append(time.perf_counter() - started)
            started = time.perf_counter()
            engine.inbox_count(user)
            count_t.append(time.perf_counter() - started)
        self.results["inbox_ms_p95_100k"] = _ms(percentile(inbox_t, 95))
        self.results["inbox_count_ms_p95_100k"] = _ms(percentile(count_t, 95))
        self.details["inbox_ms_p50"] = _ms(percentile(inbox_t, 50))
        self.details["inbox_user_tasks"] = page.total
        self.details["inbox_rows_seeded"] = total
        self.details["inbox_seed_s"] = seeded

    # ---- timers at scale
    def _timer_template(self, met: bool) -> dict:
        """A real instance waiting on a timer, as a row to clone.

        met=True: the obligations of the first phase are done (the scenario's `met_tasks`), so the
        next timer is a routine one (for mandatory_audit the two-month commission deadline, which
        opens two reminders). met=False: a fresh instance, whose first deadline finds the
        obligation unmet (for mandatory_audit it opens a penalty case: a second process starts).
        Without a process timer, the `deadline` test fixture is used.
        """
        from .models import HumanTask, Instance, MessageWait
        instance_id = self.start_instance()
        if met:
            for bpmn_id in self.scenario.met_tasks():
                row = next((r for r in self.open_tasks(instance_id) if r.bpmn_id == bpmn_id), None)
                if row is not None:
                    self._engine_complete(self.user_for(row.lane, row.scope), row, self.task_data(row))
        with self.engine.db.read() as session:
            if session.get(Instance, instance_id).next_timer_at is None:
                instance_id = None
        source = self.scenario.process_id
        if instance_id is None:
            self.engine.deploy_paths([FIXTURES / "processes" / "deadline.bpmn"], deployed_by="bench")
            instance_id = self.engine.start("deadline", actor="bench", data={
                "enterprise_id": self.scenario.enterprise(0)["id"], "jurisdiction_code": "650102",
                "published_on": "2025-03-03"})
            source = "deadline (test fixture)"
        with self.engine.db.read() as session:
            row = session.get(Instance, instance_id)
            tasks = list(session.scalars(select(HumanTask).where(HumanTask.instance_id == instance_id,
                                                                 HumanTask.status == "open")))
            template = {c.name: getattr(row, c.key) for c in Instance.__table__.columns if c.name != "id"}
            task_rows = [{c.name: getattr(t, c.key) for c in HumanTask.__table__.columns} for t in tasks]
            waits = [{"message_name": w.message_name, "correlations": w.correlations} for w in session.scalars(
                select(MessageWait).where(MessageWait.instance_id == instance_id).order_by(MessageWait.id))]
        return {"row": template, "tasks": task_rows, "waits": waits, "source": source,
                "due_at": template["next_timer_at"]}

    def _clone(self, template: dict, count: int, next_timer_at) -> list[int]:
        """Bulk-insert `count` copies of a waiting instance (fresh task ids) with their inbox rows."""
        from .models import HumanTask, Instance, MessageWait
        table, tasks, waits = Instance.__table__, HumanTask.__table__, MessageWait.__table__
        from . import state as state_format
        # (frame by frame: finished sub-processes keep frames of their own, as the engine saves them)
        texts = [text.decode("utf-8") for _, text in state_format.frames(template["row"]["state"])]
        text = "".join(texts)
        ids = sorted(set(re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", text)))
        pattern = re.compile("|".join(re.escape(i) for i in ids))
        created: list[int] = []
        with self.engine.db.engine.begin() as conn:
            for chunk in range(0, count, 2000):
                rows, humans = [], []
                for _ in range(min(2000, count - chunk)):
                    mapping = {old: str(uuid.uuid4()) for old in ids}
                    row = dict(template["row"], next_timer_at=next_timer_at)
                    row["state"] = state_format.compress_frames(
                        [pattern.sub(lambda m: mapping[m.group(0)], part).encode("utf-8") for part in texts])
                    rows.append(row)
                    humans.append([{**t, "id": mapping[t["id"]]} for t in template["tasks"]])
                new_ids = conn.execute(insert(table).returning(table.c.id), rows).scalars().all()
                created += new_ids
                human_rows = [{**t, "instance_id": iid} for iid, ts in zip(new_ids, humans) for t in ts]
                if human_rows:
                    conn.execute(insert(tasks), human_rows)
                wait_rows = [{**w, "instance_id": iid} for iid in new_ids for w in template["waits"]]
                if wait_rows:
                    conn.execute(insert(waits), wait_rows)
        return created

    def _fire_rate(self, now, expected: int) -> float:
        gc.collect()
        started = time.perf_counter()
        results = self.engine.tick(now)
        elapsed = time.perf_counter() - started
        fired = [r for r in results if r.fired_timers]
        if len(fired) < expected:
            raise RuntimeError(f"bench: a tick fired {len(fired)} of {expected} due timers")
        return len(fired) / elapsed

    def measure_tick(self) -> None:
        from .models import Instance
        engine = self.engine
        table = Instance.__table__
        met, unmet = self._timer_template(met=True), self._timer_template(met=False)
        first_due = min(met["due_at"], unmet["due_at"])
        started = time.perf_counter()
        # Instances that only wait: never loaded by these ticks (not due), so they keep a stand-in
        # state (100,000 copies of a real one would only fill the disk).
        stand_in = zlib.compress(b'{"stand_in":"never loaded: not due"}')
        waiting = self.sizes["tick_waiting"]
        later = first_due + timedelta(days=365)
        values = dict(met["row"], state=stand_in, next_timer_at=later)
        columns = [c for c in table.columns if c.name in values]
        numbers = select(literal(1).label("n")).cte("numbers", recursive=True)
        numbers = numbers.union_all(select(numbers.c.n + 1).where(numbers.c.n < waiting))
        with engine.db.engine.begin() as conn:  # one INSERT ... SELECT over a generated series
            conn.execute(insert(table).from_select(
                [c.name for c in columns],
                select(*[literal(values[c.name], type_=c.type).label(c.name) for c in columns])
                .select_from(numbers)))
        due = self.sizes["tick_due"]
        unmet_count = max(1, due // 10)
        self._clone(met, due, met["due_at"])
        # not due until the sweeps before theirs are measured
        one_process = self._clone(met, self.sizes["tick_due_one_process"], None)
        parked = self._clone(unmet, unmet_count, None)
        self.details["tick_seed_s"] = round(time.perf_counter() - started, 1)
        with engine.db.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE") if engine.db.is_sqlite else None

        idle_now = first_due - timedelta(hours=1)
        idle = []
        for _ in range(self.sizes["tick_idle_runs"]):
            started = time.perf_counter()
            if engine.tick(idle_now):
                raise RuntimeError("bench: an idle tick fired timers")
            idle.append(time.perf_counter() - started)
        self.results["tick_idle_ms"] = _ms(statistics.median(idle))
        self.details["tick_idle_ms_p95"] = _ms(percentile(idle, 95))
        self.details["tick_instances_waiting"] = waiting + due + unmet_count + 2

        # as a running `worker` has them: its helper processes started before the sweep
        self.details["tick_processes"] = (engine.start_timer_processes() or 1) if due >= engine.POOL_MIN_DUE else 1
        self.results["tick_per_s"] = self._fire_rate(met["due_at"] + timedelta(minutes=1), due)
        self.details["tick_process"] = met["source"]
        self.details["tick_fired"] = due
        self._make_due(one_process, met["due_at"])
        processes, engine.timer_processes = engine.timer_processes, 1
        try:  # the same sweep fired by this process alone
            self.details["tick_per_s_one_process"] = round(self._fire_rate(
                met["due_at"] + timedelta(minutes=2), len(one_process)), 1)
        finally:
            engine.timer_processes = processes
        self.details["tick_fired_one_process"] = len(one_process)
        self._make_due(parked, unmet["due_at"])
        self.details["tick_per_s_unmet"] = round(self._fire_rate(unmet["due_at"] + timedelta(minutes=1),
                                                                 unmet_count), 1)
        self.details["tick_fired_unmet"] = unmet_count
        engine.shutdown_timer_processes()

    def _make_due(self, instance_ids: list[int], due_at) -> None:
        from .models import Instance
        table = Instance.__table__
        with self.engine.db.engine.begin() as conn:
            for chunk in range(0, len(instance_ids), 500):
                conn.execute(update(table).where(table.c.id.in_(instance_ids[chunk:chunk + 500]))
                             .values(next_timer_at=due_at))

    # ---- growth over a loop
    def measure_growth(self) -> None:
        from . import runtime
        from .models import Instance
        engine = self.engine
        engine.deploy_paths([FIXTURES / "processes" / "loop.bpmn"], deployed_by="bench")
        sizes, saves, rounds_list = [], [], list(self.sizes["loop_rounds"])
        for rounds in rounds_list:
            instance_id = engine.start("loop", actor="bench", data={"counter": 0, "rounds": rounds})
            with engine.db.read() as session:
                row = session.get(Instance, instance_id)
                if row.status != "completed":
                    raise RuntimeError(f"bench: the loop of {rounds} ended {row.status}")
                loaded = engine._load(session, instance_id, lock=False)
            table = Instance.__table__
            timings = []
            for _ in range(self.sizes["save_repeats"]):
                started = time.perf_counter()
                state = runtime.dump_state(loaded.workflow)
                with engine.db.engine.begin() as conn:
                    conn.execute(update(table).where(table.c.id == instance_id).values(state=state))
                timings.append(time.perf_counter() - started)
            sizes.append(len(state))
            saves.append(statistics.median(timings))
        # the exponent k of value ~ rounds^k, fitted (least squares in log-log) to each series;
        # the larger of the two is reported (1.0 = linear, 2.0 = quadratic)
        size_k, save_k = _loglog_slope(rounds_list, sizes), _loglog_slope(rounds_list, saves)
        found = [k for k in (size_k, save_k) if k is not None]
        self.results["growth_exponent"] = max(found) if found else None
        self.details["growth_exponent_state_bytes"] = _round(size_k)
        self.details["growth_exponent_save_time"] = _round(save_k)
        self.details["loop_state_bytes"] = dict(zip(map(str, rounds_list), sizes))
        self.details["loop_save_ms"] = {str(n): round(_ms(s), 3) for n, s in zip(rounds_list, saves)}

    # ---- report
    def verdicts(self) -> dict:
        verdicts = {}
        for key, op, target in TARGETS:
            value = self.results.get(key)
            if value is None:
                verdicts[key] = {"target": f"{op} {target}", "holds": None}
            else:
                holds = value <= target if op == "<=" else value >= target
                verdicts[key] = {"target": f"{op} {target}", "holds": bool(holds)}
        return verdicts

    def report(self, mode: str, elapsed: float) -> dict:
        verdicts = self.verdicts()
        labels = {
            "floor_update_ms": "storage floor: Core UPDATE of a 5 KB JSON row (median)",
            "floor_engine_ms": "engine floor: same completions, SpiffWorkflow in memory (median)",
            "complete_ms_p50": "complete a user task via the facade, p50",
            "complete_ms_p95": "complete a user task via the facade, p95",
            "complete_ratio": "complete p50 / (engine floor + storage floor)",
            "lifecycle_per_s": "whole instances (start to end) per second",
            "inbox_ms_p95_100k": "inbox page (count + 25 rows) at 100k open tasks, p95",
            "inbox_count_ms_p95_100k": "inbox count at 100k open tasks, p95",
            "http_complete_ms_p95": "complete through the web app (Flask test client), p95",
            "tick_per_s": "timers fired per second (due at once)",
            "tick_idle_ms": "tick with 100k waiting, none due (median)",
            "state_bytes_final": "stored state of one finished instance (bytes)",
            "growth_exponent": "state size / save time growth over a 10-100-1000 loop",
        }
        self.log("")
        self.log(f"cleanaudit bench ({mode}) — process measured: {self.scenario.name}"
                 + (f" [{self.scenario.note}]" if self.scenario.note else ""))
        self.log(f"{'figure':<26} {'value':>12}  {'target':>9}  {'holds':<5}  meaning")
        self.log("-" * 110)
        for key in KEYS:
            value = self.results.get(key)
            shown = "missing" if value is None else (f"{value:,.0f}" if key == "state_bytes_final"
                                                     else f"{value:,.3f}")
            verdict = verdicts.get(key)
            target = verdict["target"] if verdict else ""
            holds = "" if verdict is None else ("-" if verdict["holds"] is None else
                                                ("yes" if verdict["holds"] else "NO"))
            self.log(f"{key:<26} {shown:>12}  {target:>9}  {holds:<5}  {labels[key]}")
        self.log("-" * 110)
        for key, value in self.details.items():
            self.log(f"  {key}: {value}")
        self.log(f"  total time: {elapsed:.1f} s")
        summary = {key: _round(self.results.get(key)) for key in KEYS}
        summary.update({
            "mode": mode, "process": self.scenario.process_id,
            "process_note": self.scenario.note or None,
            "targets": verdicts,
            "all_targets_hold": all(v["holds"] for v in verdicts.values()),
            "elapsed_s": round(elapsed, 1),
        })
        return summary


def resolve_sizes(quick: bool, sizes: Optional[dict]) -> dict:
    chosen = dict(SIZES["quick" if quick else "full"])
    env = os.environ.get(SIZES_ENV)
    if env:
        chosen.update(json.loads(env))
    if sizes:
        chosen.update(sizes)
    return chosen


def main(quick: bool = False, sizes: Optional[dict] = None, out=None) -> int:
    """Run the benchmark; prints the table and, last, one line of JSON. Returns 0 when it ran."""
    from . import clock
    out = out or sys.stdout
    bench = Bench(resolve_sizes(quick, sizes), out)
    mode = "quick" if quick else "full"
    tmp = Path(tempfile.mkdtemp(prefix="cleanaudit-bench-"))
    started = time.perf_counter()
    thresholds = gc.get_threshold()

    def setup():
        bench.setup(tmp)
        # the settings of the engine's long-running processes (cleanaudit serve / worker)
        from .runtime import tune_gc
        tune_gc()
        bench.details["gc"] = "thresholds %s, start-up objects frozen (as in cleanaudit serve/worker)" % (
            gc.get_threshold(),)

    try:
        steps = [("setup", setup),
                 ("floors, task completion and lifecycle", bench.measure_complete),
                 ("web completion", bench.measure_http),
                 ("inbox at 100k", bench.measure_inbox),
                 ("timers", bench.measure_tick),
                 ("state growth", bench.measure_growth)]
        for name, step in steps:
            step_started = time.perf_counter()
            step()
            print(f"  {name}: {time.perf_counter() - step_started:.1f} s", file=out, flush=True)
        ratio_base = bench.results["floor_engine_ms"] + bench.results["floor_update_ms"]
        bench.results["complete_ratio"] = bench.results["complete_ms_p50"] / ratio_base
        summary = bench.report(mode, time.perf_counter() - started)
    finally:
        clock.reset()
        gc.set_threshold(*thresholds)
        gc.unfreeze()
        try:
            bench.engine.shutdown_timer_processes()
            bench.engine.db.dispose()
        except Exception:  # noqa: BLE001
            pass
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(summary, ensure_ascii=False, sort_keys=False), file=out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main("--quick" in sys.argv))
