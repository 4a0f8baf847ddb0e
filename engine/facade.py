"""The engine's one front door: deploy, start, inbox, complete, tick, messages, history.

Every public method that changes something runs in ONE transaction: everything or nothing.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import os
import re
import threading
from collections import OrderedDict, namedtuple
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Optional, Union
from uuid import UUID

from sqlalchemy import Integer, and_, bindparam, delete, func, insert, or_, select, union_all, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session, configure_mappers, defer, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.exc import StaleDataError
from SpiffWorkflow import TaskState
from SpiffWorkflow.bpmn.specs.event_definitions.message import MessageEventDefinition

from . import authz, clock, domain, fastsql, history, runtime
from .db import Database, default_url
from .errors import (CleanauditError, InstanceNotFound, InvalidFormData, InvalidProcess, NotAllowed,
                     ProcessNotFound, ScriptError, StaleInstance, TaskNotFound)
from .models import (Base, HumanTask, Instance, MessageWait, Organisation, ProcessVersion,
                     UndeliveredMessage, User)

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENGINE_ACTOR = "engine"
TIMER_ACTOR = "timer"
MAX_MESSAGE_HOPS = 500


@dataclass
class InboxPage:
    rows: list  # human_task rows (read-only, attribute access by column name)
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


@dataclass
class TaskView:
    """What a task page shows: the inbox row, its form, instructions and the data the user may see."""

    task: HumanTask
    instance: Instance
    form: Any
    instructions: str
    documentation: str
    data: dict


@dataclass
class RunResult:
    """What one engine run changed, for the caller and the history."""

    instance_id: int
    status: str
    fired_timers: list[str] = field(default_factory=list)
    incident: Optional[str] = None


class _Loaded:
    """An instance row with its live workflow, inside one transaction."""

    def __init__(self, row: Instance, workflow):
        self.row = row
        self.workflow = workflow


class _Fire(_Loaded):
    """A timer fire worked out outside the write lock: the instance as read (at lock_version), its
    timers fired (`fired`, as Engine._fire_timers gives them) and its engine run."""

    def __init__(self, row: Instance, workflow, lock_version: int, fired: list):
        super().__init__(row, workflow)
        self.lock_version = lock_version
        self.fired = fired
        # what its save writes (Engine._outcome), when it threw no message (delivering one needs the
        # lock); the workflow is then taken apart at once. Else None: worked out under the lock.
        self.outcome: Optional[_Outcome] = None


@dataclass
class _Outcome:
    """What a save writes, worked out from the workflow (Engine._outcome, Engine._write_outcome)."""

    inbox: tuple  # (inbox row ids to cancel, new inbox rows' values)
    status: str  # running | completed | incident | "incident (kept)": the open incident stays
    incident: Optional[tuple]  # (task id, error) of a new incident
    stored_waits: Optional[list]  # the message_wait rows as known, None: read them
    waits: list  # the message_wait rows wanted
    next_timer_at: Optional[datetime]
    metadata: dict  # search columns to set from the data
    state: bytes
    reusable: bool  # the workflow may be kept in the workflow cache


_UNDER_LOCK = object()  # a fire to be done (again) from the database, under the write lock


class Engine:
    """Runs the processes of processes/ with the forms of forms/ on one database."""

    def __init__(self, database_url: Optional[str] = None, *, processes_dir: Union[str, Path, None] = None,
                 forms_dir: Union[str, Path, None] = None, helpers: Optional[dict] = None,
                 script_budget_seconds: float = 5.0, workflow_cache_size: int = 128,
                 timer_processes: int = 1):
        runtime.install()
        # The ORM's mappers are set up on first use; _read_instance builds rows with the class
        # manager directly, which a process whose first action fires a timer would reach first.
        configure_mappers()
        from .forms import FormStore
        self.db = Database(database_url or default_url())
        self.processes_dir = Path(processes_dir or PROJECT_ROOT / "processes")
        self.forms_dir = Path(forms_dir or PROJECT_ROOT / "forms")
        self.forms = FormStore(self.forms_dir)
        self.extra_helpers = dict(helpers or {})
        self.script_budget_seconds = script_budget_seconds
        self._spec_cache: "OrderedDict[int, tuple]" = OrderedDict()
        self._calendar = None
        # Workflows saved by committed transactions, so the next action on an instance skips
        # deserialising it (checked against the instance's lock version; see runtime.WorkflowCache).
        self._workflows = runtime.WorkflowCache(workflow_cache_size)
        self.db.on_commit(self._after_commit)
        # Processes that fire a large timer sweep together (tick); 1: this process alone
        self.timer_processes = max(1, int(timer_processes))
        self._pool = None

    # ------------------------------------------------------------------ schema
    def create_schema(self) -> None:
        """Create or upgrade the database to the newest Alembic revision."""
        from .migrate import upgrade
        upgrade(self.db)

    # ------------------------------------------------------------------ scripting
    def script_engine(self, session: Optional[Session] = None, holder: Optional[dict] = None):
        """A restricted script engine with the standard helpers plus this engine's own.

        `holder` is a dict whose "instance" key is the Instance row the scripts run for, once known.
        """
        from .scripting import RestrictedScriptEngine
        helpers = dict(self.extra_helpers)
        helpers["due"] = self._due_helper
        if session is not None:
            helpers.update(self._lookup_helpers(session, holder if holder is not None else {}))
        return RestrictedScriptEngine(helpers=helpers)

    def calendar(self):
        """The holiday calendar: the administrator's copy in the database, else the shipped data."""
        from .deadlines import Calendar
        if self._calendar is None:
            from .models import CalendarDay
            with self.db.read() as session:
                rows = [(d.day, d.kind, d.name) for d in session.scalars(select(CalendarDay))]
            self._calendar = Calendar.from_rows(rows) if rows else Calendar.shipped()
        return self._calendar

    def invalidate_calendar(self) -> None:
        self._calendar = None

    def _due_helper(self, start, period):
        from .deadlines import due
        from datetime import date as date_cls
        if isinstance(start, str):
            start = datetime.fromisoformat(start) if "T" in start else date_cls.fromisoformat(start)
        return due(start, period, self.calendar()).isoformat()

    def _lookup_helpers(self, session: Session, holder: dict) -> dict:
        """Database look-ups and record keeping offered to scripts (engine/domain.py)."""
        from .domain import make_helpers
        return make_helpers(session, holder)

    # ------------------------------------------------------------------ validation and deploy
    def validate_files(self, files: list[tuple[str, bytes]]):
        """Validate BPMN files against the parser, the XSD and our lint (needs no database)."""
        from .validate import validate_files
        known = set()
        try:
            with self.db.read() as session:
                known = set(session.scalars(select(ProcessVersion.process_id).distinct()))
        except Exception:  # validation must not need a database
            known = set()
        return validate_files(files, forms_dir=self.forms_dir, known_process_ids=known)

    def deploy_paths(self, paths: Iterable[Union[str, Path]], deployed_by: str = "system") -> list[ProcessVersion]:
        files = [(Path(p).name, Path(p).read_bytes()) for p in paths]
        return self.deploy_files(files, deployed_by)

    def deploy_files(self, files: list[tuple[str, bytes]], deployed_by: str) -> list[ProcessVersion]:
        """Validate, then store a new version of each executable process (identical content = same version)."""
        report = self.validate_files(files)
        if not report.ok:
            raise InvalidProcess(report.errors)
        parser = report.parser
        contents = {name: data for name, data in files}
        now = clock.now()
        versions = []
        with self.db.transaction() as session:
            for process_id in report.process_ids:
                spec = parser.get_spec(process_id)
                embedded = runtime.embedded_subprocess_specs(spec, parser.get_spec)
                filename = report.process_files.get(process_id) or f"{process_id}.bpmn"
                xml = contents[filename]
                spec_json = runtime.spec_to_json(spec, embedded)
                digest = hashlib.sha256(xml + b"\0" + process_id.encode()).hexdigest()
                existing = session.scalar(select(ProcessVersion).where(
                    ProcessVersion.process_id == process_id, ProcessVersion.content_hash == digest))
                if existing is not None:
                    versions.append(existing)
                    continue
                latest_no = session.scalar(select(func.max(ProcessVersion.version_no)).where(
                    ProcessVersion.process_id == process_id)) or 0
                version = ProcessVersion(
                    process_id=process_id, version_no=latest_no + 1, name=spec.description or process_id,
                    content_hash=digest, filename=filename, bpmn_xml=xml.decode("utf-8"),
                    spec_json=spec_json, called_process_ids=runtime.called_process_ids(spec, embedded),
                    start_messages=_start_messages(spec), deployed_by=deployed_by, deployed_at=now)
                session.add(version)
                session.flush()
                history.append(session, chain=history.process_chain(process_id), kind="deployed",
                               actor=deployed_by, at=now, data={
                                   "version": version.version_no, "content_hash": digest,
                                   "filename": filename, "warnings": [str(w) for w in report.warnings]})
                versions.append(version)
        return versions

    def latest_version(self, session: Session, process_id: str) -> ProcessVersion:
        version = session.scalar(select(ProcessVersion).where(ProcessVersion.process_id == process_id)
                                 .order_by(ProcessVersion.version_no.desc()).limit(1))
        if version is None:
            raise ProcessNotFound(process_id)
        return version

    def _latest_version_id(self, session: Session, process_id: str) -> int:
        """The id of the newest version (one indexed look-up; no XML or spec text is read)."""
        version_id = session.scalar(select(ProcessVersion.id).where(ProcessVersion.process_id == process_id)
                                    .order_by(ProcessVersion.version_no.desc()).limit(1))
        if version_id is None:
            raise ProcessNotFound(process_id)
        return version_id

    def _specs(self, session: Session, version_id: int):
        cached = self._spec_cache.get(version_id)
        if cached is None:
            version = session.get(ProcessVersion, version_id)
            spec, embedded = runtime.spec_from_json(version.spec_json)
            for one in [spec, *embedded.values()]:
                runtime.connect_event_subprocess_ends(one)
            cached = (version.process_id, spec, embedded, list(version.called_process_ids))
            self._spec_cache[version_id] = cached
            while len(self._spec_cache) > 256:
                self._spec_cache.popitem(last=False)
        else:
            self._spec_cache.move_to_end(version_id)
        return cached

    def _pin_versions(self, session: Session, version_id: int) -> dict[str, int]:
        """The latest versions of every process the version calls, transitively (pinned at start)."""
        pins: dict[str, int] = {}
        queue = list(self._specs(session, version_id)[3])
        while queue:
            process_id = queue.pop()
            if process_id in pins:
                continue
            called_id = self._latest_version_id(session, process_id)
            pins[process_id] = called_id
            queue.extend(self._specs(session, called_id)[3])
        return pins

    def _subprocess_specs(self, session: Session, version_id: int, pins: dict[str, int]) -> dict:
        _, _, embedded, _ = self._specs(session, version_id)
        subs = dict(embedded)
        for process_id, pinned in pins.items():
            _, spec, called_embedded, _ = self._specs(session, int(pinned))
            subs[process_id] = spec
            subs.update(called_embedded)
        return subs

    # ------------------------------------------------------------------ instances
    def start(self, process_id: str, *, actor: Union[User, str, None] = None,
              data: Optional[dict] = None) -> int:
        """Start an instance of the latest version of a process; returns its id."""
        actor_name = _actor_name(actor)
        data = dict(data or {})
        with self._budget(), self.db.transaction() as session:
            if isinstance(actor, User):
                self._check_may_start(session, actor, process_id)
                data.update(_starter_context(session, actor, data))
            loaded = self._new_instance(session, process_id, actor_name, data)
            self._run_and_save(session, loaded, actor_name, first_run=True)
            return loaded.row.id

    def startable_processes(self, user: User) -> list[str]:
        """Processes whose start lane (the lane of the first user task) is one of the user's roles.

        A process that other processes call (e.g. audit_stages) is started by its callers only.
        """
        result = []
        with self.db.read() as session:
            latest = self._latest_versions(session)
            called = {pid for version in latest for pid in (version.called_process_ids or [])}
            for version in latest:
                if version.process_id in called:
                    continue
                lanes = _start_lanes(self._specs(session, version.id)[1])
                if lanes and any(user.has_role(lane) for lane in lanes):
                    result.append(version.process_id)
        return result

    def _check_may_start(self, session: Session, user: User, process_id: str) -> None:
        version = self.latest_version(session, process_id)
        if any(process_id in (v.called_process_ids or []) for v in self._latest_versions(session)):
            raise NotAllowed(user, f"process {process_id}", "it is started by the processes that call it")
        lanes = _start_lanes(self._specs(session, version.id)[1])
        if not any(user.has_role(lane) for lane in lanes) and not user.has_role("administrator"):
            raise NotAllowed(user, f"process {process_id}", "your roles do not start this process")

    def _new_instance(self, session: Session, process_id: str, actor: str, data: dict,
                      version: Optional[ProcessVersion] = None) -> _Loaded:
        version = version or self.latest_version(session, process_id)
        pins = self._pin_versions(session, version.id)
        _, spec, _, _ = self._specs(session, version.id)
        holder = {"actor": actor}
        workflow = runtime.new_workflow(spec, self._subprocess_specs(session, version.id, pins),
                                        self.script_engine(session, holder))
        workflow.__dict__["_cleanaudit_open"] = set()  # a new instance has no inbox rows yet
        workflow.__dict__["_cleanaudit_waits"] = []  # nor message_wait rows
        start_data = history.plain(data)
        workflow.task_tree.data.update(start_data)
        for task in workflow.get_tasks(state=TaskState.READY):
            task.data.update(start_data)
        now = clock.now()
        row = Instance(process_id=process_id, version_id=version.id, called_versions=pins,
                       status="running", state=b"", serializer_version=runtime.SERIALIZER_VERSION,
                       title=str(data.get("title") or version.name or process_id),
                       started_by=actor, started_at=now, updated_at=now)
        _apply_metadata(row, start_data)
        session.add(row)
        session.flush()
        holder["instance"] = row
        history.append(session, chain=history.instance_chain(row.id), kind="started", actor=actor,
                       at=now, instance_id=row.id, data={"process_id": process_id,
                                                         "version": version.version_no,
                                                         "data": start_data})
        return _Loaded(row, workflow)

    def _load(self, session: Session, instance_id: int, lock: bool = True) -> _Loaded:
        kept = self._load_kept(session, instance_id, lock)
        if kept is not None:
            return kept
        row = self._read_instance(session, instance_id, lock)
        if row is None:
            raise InstanceNotFound(instance_id)
        _, spec, _, _ = self._specs(session, row.version_id)
        holder = {"instance": row, "actor": ENGINE_ACTOR}
        script_engine = self.script_engine(session, holder)
        workflow = self._workflows.take(row.id, row.lock_version, spec)
        if workflow is not None:
            # The script engine is not part of the state: attach this transaction's, as a load does.
            workflow.script_engine = script_engine
        else:
            subs = self._subprocess_specs(session, row.version_id, row.called_versions or {})
            workflow = runtime.load_state(row.state, spec, subs, script_engine)
            # The instance's inbox rows and message_wait rows were written with this state by the
            # save that wrote it (same transaction): known without reading them.
            workflow.__dict__["_cleanaudit_open"] = {str(t.id) for t in runtime.ready_user_tasks(workflow)}
            workflow.__dict__["_cleanaudit_waits"] = self._wanted_waits(row, workflow)
        return _Loaded(row, workflow)

    def _read_instance(self, session: Session, instance_id: int, lock: bool) -> Optional[Instance]:
        """The instance row as an ORM object of this session, read with one Core statement.

        What the ORM's loader does (columns set as committed values, identity from the key), without
        its per-query machinery; an object already in the session is returned as the ORM would.
        """
        existing = session.identity_map.get(_INSTANCE_IDENTITY((instance_id,)))
        if existing is not None:
            if lock and not self.db.is_sqlite:
                session.execute(_LOCK_VERSION, {"instance_id": instance_id})
            return existing
        query = _LOCK_ROW if lock and not self.db.is_sqlite else _READ_ROW
        found = fastsql.fetch_one(session, query, {"instance_id": instance_id})
        if found is None:
            return None
        row = _INSTANCE_MANAGER.new_instance()
        # as the ORM's loader populates a new object: the values in its dict, all committed
        row.__dict__.update(zip(_INSTANCE_KEYS, found))
        sa_inspect(row)._commit_all(row.__dict__)
        make_transient_to_detached(row)
        session.add(row)
        return row

    def _load_kept(self, session: Session, instance_id: int, lock: bool) -> Optional[_Loaded]:
        """The workflow and row kept in memory since this process last saved the instance, if the
        database still holds that version (every write of an instance row moves its lock_version:
        the engine's own UPDATE, or the ORM's version counter), else None."""
        row = self._workflows.row_of(instance_id)
        if row is None or session.identity_map.get(_INSTANCE_IDENTITY((instance_id,))) is not None:
            return None
        query = _LOCK_VERSION if lock and not self.db.is_sqlite else _READ_VERSION
        found = fastsql.execute(session, query, {"instance_id": instance_id}).fetchone()
        if found is None or found[0] != row.lock_version:
            return None
        _, spec, _, _ = self._specs(session, row.version_id)
        workflow = self._workflows.take(instance_id, found[0], spec)
        if workflow is None:
            return None
        try:
            session.add(row)  # attached again as it was committed: no read
        except Exception:  # noqa: BLE001 — still attached elsewhere (a closing session): read it
            return None
        # The script engine is not part of the state: attach this transaction's, as a load does.
        workflow.script_engine = self.script_engine(session, {"instance": row, "actor": ENGINE_ACTOR})
        return _Loaded(row, workflow)

    def _keep_after_commit(self, session: Session, loaded: _Loaded) -> None:
        """Offer the workflow to the cache once (and only if) this transaction commits.

        Not in a timer sweep (tick): it goes through thousands of instances that are rarely acted
        on next, and kept workflows only pushed out the others and kept the garbage collector
        busy. Those are taken apart as soon as their instance is saved (_dismantle_all).
        """
        swept = session.info.get(_SWEEP)
        if swept is not None:
            swept.append(loaded.workflow)
            return
        session.info.setdefault("cleanaudit_workflows", {})[loaded.row.id] = (loaded.row, loaded.workflow)

    def _after_commit(self, session: Session) -> None:
        for row, workflow in session.info.pop("cleanaudit_workflows", {}).values():
            try:
                self._workflows.put(row.id, row.lock_version, workflow, row)
            except Exception:  # noqa: BLE001 — a cache must never fail a committed action
                log.exception("could not keep the workflow of instance %s", row.id)

    # ------------------------------------------------------------------ inbox
    def _inbox_query(self, user: User, process_id: Optional[str], overdue: bool):
        query = select(HumanTask).where(
            HumanTask.status == "open",
            HumanTask.lane.in_(list(user.roles or [])),
            HumanTask.scope.in_(user.scope_keys()))
        if process_id:
            query = query.where(HumanTask.process_id == process_id)
        if overdue:
            query = query.where(HumanTask.due_at < clock.now())
        return query

    def inbox(self, user: User, *, process_id: Optional[str] = None, overdue: bool = False,
              page: int = 1, per_page: int = 25) -> InboxPage:
        """The open tasks this user may act on, soonest due first (never deserialises workflows).

        A user matches several (lane, scope) pairs; sorting all their rows would cost the size of
        the inbox. Each pair is one range of ix_human_task_inbox, already in due order: the first
        page*per_page rows of each range (due ones, then those without a due date) are merged.
        """
        page = max(1, int(page))
        lanes = sorted(set(user.roles or []))
        keys = list(dict.fromkeys(user.scope_keys()))
        params = _inbox_params(lanes, keys)
        params.update(now=clock.now())
        if process_id:
            params["process_id"] = process_id
        with self.db.read() as session:
            total = self._inbox_total(session, lanes, keys, process_id, overdue, params)
            rows: list = []
            offset, wanted = (page - 1) * per_page, page * per_page
            if total > offset:
                params.update(wanted=wanted, offset=offset, per_page=per_page)
                statement = _inbox_page_statement(len(lanes), len(keys), bool(process_id), overdue)
                rows = [_InboxRow(*found) for found in fastsql.fetch_all(session, statement, params)]
        return InboxPage(rows, total, page, per_page)

    @staticmethod
    def _inbox_total(session: Session, lanes: list, keys: list, process_id: Optional[str], overdue: bool,
                     params: dict) -> int:
        """COUNT(*) straight on the table: answered from ix_human_task_inbox alone."""
        if not lanes or not keys:
            return 0
        found = fastsql.fetch_one(session, _inbox_count_statement(len(lanes), len(keys), bool(process_id), overdue),
                                  params)
        return (found[0] if found else 0) or 0

    def inbox_count(self, user: User) -> int:
        lanes, keys = sorted(set(user.roles or [])), list(dict.fromkeys(user.scope_keys()))
        with self.db.read() as session:
            return self._inbox_total(session, lanes, keys, None, False, _inbox_params(lanes, keys))

    def may_act(self, user: User, row: HumanTask) -> bool:
        return bool(user.active) and authz.may_act(user.roles or [], user.scope_keys(), row.lane, row.scope)

    def _authorised_row(self, session: Session, user: User, task_id: str, *, orm: bool = True):
        """The inbox row if this user may act on it (TaskNotFound / NotAllowed otherwise).

        With orm=False the row is a plain (read-only) Core row: cheaper, for complete().
        """
        if orm:
            row = session.get(HumanTask, str(task_id))
        else:
            found = fastsql.execute(session, _TASK_ROW, {"task_id": str(task_id)}).fetchone()
            row = _TaskRow(*found) if found is not None else None
        if row is None:
            raise TaskNotFound(task_id)
        if not self.may_act(user, row):
            raise NotAllowed(user, f"task {task_id}")
        return row

    def task_view(self, user: User, task_id: str) -> TaskView:
        """A task with its form and the data its actor may see (only for users who may act on it)."""
        with self.db.read() as session:
            row = self._authorised_row(session, user, task_id)
            loaded = self._load(session, row.instance_id, lock=False)
            task = loaded.workflow.get_task_from_id(UUID(row.id))
            form = self.forms.load(row.form_process_id, row.form) if row.form else None
            ext = getattr(task.task_spec, "extensions", {}) or {}
            # A copy: the workflow goes back to the cache and must not change through the view.
            data = copy.deepcopy({k: v for k, v in (task.data or {}).items() if not k.startswith("_")})
            self._keep_after_commit(session, loaded)
            return TaskView(task=row, instance=loaded.row, form=form,
                            instructions=str(ext.get("instructionsForEndUser") or ""),
                            documentation=str(getattr(task.task_spec, "documentation", "") or ""),
                            data=data)

    # ------------------------------------------------------------------ complete
    def complete(self, user: User, task_id: str, data: Optional[dict] = None, *, lang: str = "zh") -> RunResult:
        """Complete a user task as this user: authorise, validate the form, run, save — one transaction."""
        data = dict(data or {})
        try:
            with self._budget(), self.db.transaction() as session:
                row = self._authorised_row(session, user, task_id, orm=False)
                if row.status != "open":
                    who = f" by {row.completed_by}" if row.completed_by else ""
                    raise StaleInstance(row.instance_id, f"task '{row.title}' was already {row.status}{who}")
                if row.form:
                    form = self.forms.load(row.form_process_id, row.form)
                    data = form.validate(data, lang=lang)
                elif data.get("confirmed") not in (True, "true", "on", "1", 1):
                    raise InvalidFormData({"confirmed": ["请确认已阅知" if lang == "zh" else "please confirm"]})
                loaded = self._load(session, row.instance_id)
                task = loaded.workflow.get_task_from_id(runtime._uuid(row.id))
                if task is None or task.state != TaskState.READY:
                    raise StaleInstance(row.instance_id, "task is no longer ready")
                plain_data = history.plain(data)
                task.data.update(plain_data)
                now = clock.now()
                self._close_human_task(session, row.id, "completed", now, user.username)
                known_open = loaded.workflow.__dict__.get("_cleanaudit_open")
                if known_open is not None:
                    known_open.discard(row.id)
                history.append(session, chain=history.instance_chain(row.instance_id),
                               kind="task_completed", actor=user.username, at=now,
                               instance_id=row.instance_id, task_id=row.id, bpmn_id=row.bpmn_id,
                               data={"title": str(row.title), "data": plain_data}, is_plain=True)
                result = self._run_and_save(session, loaded, user.username, run_task=task)
                return result
        except StaleDataError as exc:
            raise StaleInstance(getattr(exc, "instance_id", None), "changed meanwhile; reload and try again") from exc

    # ------------------------------------------------------------------ running and saving
    def _run_engine(self, session: Session, loaded: _Loaded, actor: str, run_task=None) -> Optional[tuple[str, str]]:
        """Run the task (if any) and the engine steps; a failure becomes an incident (task id, error)."""
        workflow = loaded.workflow
        try:
            if run_task is not None:
                run_task.run()
            runtime.do_engine_steps(workflow)
            return None
        except Exception as exc:  # any failure inside user-supplied BPMN becomes an incident
            failing = workflow.get_tasks(state=TaskState.ERROR)
            task_id = str(failing[0].id) if failing else (str(run_task.id) if run_task else "")
            bpmn_id = failing[0].task_spec.name if failing else ""
            return task_id, f"{bpmn_id}: {_describe(exc)}"

    def _budget(self):
        """A fresh script budget (iterations, size, wall clock) for everything one action runs."""
        from .scripting import start_run
        return start_run(budget_seconds=self.script_budget_seconds)

    def _run_and_save(self, session: Session, loaded: _Loaded, actor: str, *, run_task=None,
                      first_run: bool = False, fired: Optional[list[str]] = None,
                      ran: bool = False) -> RunResult:
        """Run the engine, then route messages, sync inbox rows, timers, waits, state and history
        (`ran`: the engine has run already, without failing: a fire worked out by _prepare_fires)."""
        pending = [(loaded, run_task)]
        result: Optional[RunResult] = None
        hops = 0
        while pending:
            current, task = pending.pop(0)
            hops += 1
            if hops > MAX_MESSAGE_HOPS:
                raise ScriptError("too many messages between instances in one action")
            incident = None if ran and hops == 1 else self._run_engine(session, current, actor, task)
            follow_ups = self._save(session, current, actor, incident)
            if result is None:
                result = RunResult(current.row.id, current.row.status, fired or [],
                                   incident[1] if incident else None)
            pending.extend(follow_ups)
        return result

    def _save(self, session: Session, loaded: _Loaded, actor: str,
              incident: Optional[tuple[str, str]]) -> list:
        """Route what the instance threw, then work out and write its save (_outcome, _write_outcome)."""
        row, workflow = loaded.row, loaded.workflow
        now = clock.now()
        follow_ups = []
        # a timer fire worked out outside the lock comes with its outcome (it threw no message)
        outcome = loaded.outcome if isinstance(loaded, _Fire) else None
        if outcome is None:
            if incident is None:
                follow_ups = self._route_events(session, loaded, actor)
            outcome = self._outcome(loaded, incident, now)
        self._write_outcome(session, row, outcome, now)
        if outcome.reusable:
            self._keep_after_commit(session, loaded)
        else:
            session.info.get("cleanaudit_workflows", {}).pop(row.id, None)
        return follow_ups

    def _outcome(self, loaded: _Loaded, incident: Optional[tuple[str, str]], now: datetime) -> "_Outcome":
        """What a save writes, worked out from the workflow without writing (the instance row is
        only read): inbox changes, status, message waits, next timer, metadata, state."""
        row, workflow = loaded.row, loaded.workflow
        inbox = self._inbox_changes(loaded, now)
        # the status, as _write_outcome sets it
        if incident is not None:
            status = "incident"
        elif row.status == "incident" and row.incident_task is not None and self._incident_open(loaded):
            status = "incident (kept)"
        elif workflow.is_completed():
            status = "completed"
        else:
            status = "running"
        stored_waits = workflow.__dict__.get("_cleanaudit_waits")
        waits = [] if status == "completed" else [(name, correlations)
                                                  for name, correlations in runtime.waiting_messages(workflow)]
        workflow.__dict__["_cleanaudit_waits"] = waits
        last = workflow.last_task.data if workflow.last_task is not None else {}
        return _Outcome(inbox=inbox, status=status, incident=incident, stored_waits=stored_waits, waits=waits,
                        next_timer_at=runtime.next_timer_at(workflow) if status == "running" else None,
                        metadata=_metadata(row, last), state=runtime.dump_state(workflow),
                        reusable=runtime.reusable(workflow))

    def _write_outcome(self, session: Session, row: Instance, outcome: "_Outcome", now: datetime) -> None:
        """Write a save worked out by _outcome: inbox rows, status (and its history), message waits,
        the instance row."""
        self._write_inbox(session, outcome.inbox, now)
        status, incident = outcome.status, outcome.incident
        if status == "incident":
            row.status, row.incident_task, row.incident_error = "incident", incident[0], incident[1]
            history.append(session, chain=history.instance_chain(row.id), kind="incident",
                           actor=ENGINE_ACTOR, at=now, instance_id=row.id, task_id=incident[0],
                           data={"error": incident[1]})
        elif status == "completed":
            if row.status != "completed":
                row.status, row.completed_at = "completed", now
                history.append(session, chain=history.instance_chain(row.id), kind="completed",
                               actor=ENGINE_ACTOR, at=now, instance_id=row.id, data={})
        elif status == "running":
            row.status = "running"
            row.incident_task = row.incident_error = None
        self._write_waits(session, row, outcome.stored_waits, outcome.waits)
        row.next_timer_at = outcome.next_timer_at
        for key, value in outcome.metadata.items():
            setattr(row, key, value)
        row.state = outcome.state
        row.serializer_version = runtime.SERIALIZER_VERSION
        row.updated_at = now
        self._write_instance(session, row)

    def _write_instance(self, session: Session, row: Instance) -> None:
        """Write the instance's changed columns with the optimistic lock the ORM would use.

        UPDATE ... SET ..., lock_version = old + 1 WHERE id = ? AND lock_version = old; no row
        means another transaction saved it first (StaleDataError, as from a flush). One Core
        statement instead of a unit-of-work flush on every save.
        """
        state = sa_inspect(row)
        if state.pending or state.transient or state.deleted or not state.has_identity:
            session.flush()
            return
        values = {}
        for key, old in state.committed_state.items():
            new = state.dict.get(key)
            if key != "lock_version" and new != old:
                values[key] = new
        if not values:
            _settle(session, state)
            return
        old_version = row.lock_version
        new_version = old_version + 1
        # the SET clause follows the parameter names (one compiled statement per set of columns)
        result = fastsql.execute(session, _UPDATE_INSTANCE, {**values, "lock_version": new_version,
                                                              "_id": row.id, "_version": old_version})
        if result.rowcount != 1:
            exc = StaleDataError(f"instance {row.id} was saved by another transaction (lock version "
                                 f"{old_version} is gone)")
            exc.instance_id = row.id
            raise exc
        state.dict["lock_version"] = new_version
        _settle(session, state)  # the new values (in the row's dict already) become the committed ones

    def _incident_open(self, loaded: _Loaded) -> bool:
        return bool(loaded.workflow.get_tasks(state=TaskState.ERROR))

    def _close_human_task(self, session: Session, task_id: str, status: str, now: datetime,
                          by: Optional[str] = None) -> None:
        """Mark an inbox row completed or cancelled: one Core UPDATE, a loaded row kept in step."""
        values = {"status": status, "completed_at": now}
        if by is None:
            fastsql.execute(session, _CANCEL_TASK, {"task_id": task_id, "new_status": status, "at": now})
        else:
            values["completed_by"] = by
            fastsql.execute(session, _COMPLETE_TASK, {"task_id": task_id, "new_status": status, "at": now, "by": by})
        loaded_row = session.identity_map.get(_TASK_IDENTITY((task_id,)))
        if loaded_row is not None:
            for key, value in values.items():
                set_committed_value(loaded_row, key, value)

    def _inbox_changes(self, loaded: _Loaded, now: datetime) -> tuple[list[str], list[dict]]:
        """How the inbox rows must change to match the READY user tasks: (ids of rows to cancel,
        values of new rows; scope and due date evaluated over the task data). Writes nothing."""
        row, workflow = loaded.row, loaded.workflow
        # What the database holds: known from the last save (or load) of this workflow
        open_ids = workflow.__dict__.get("_cleanaudit_open")
        if open_ids is None:  # (a workflow from elsewhere: read them)
            session = sa_inspect(row).session
            open_ids = set(session.scalars(_OPEN_TASK_IDS, {"instance_id": row.id}))
        ready = {str(t.id): t for t in runtime.ready_user_tasks(workflow)}
        gone = [task_id for task_id in sorted(open_ids) if task_id not in ready]
        workflow.__dict__["_cleanaudit_open"] = set(ready)
        # the script engine this action runs with (its helpers see this transaction)
        script_engine = workflow.script_engine
        return gone, [self._human_task_values(row, task, now, script_engine)
                      for task_id, task in ready.items() if task_id not in open_ids]

    def _write_inbox(self, session: Session, changes: tuple[list[str], list[dict]], now: datetime) -> None:
        """Write inbox changes worked out by _inbox_changes (Core statements: this runs on every save)."""
        gone, new_rows = changes
        for task_id in gone:
            self._close_human_task(session, task_id, "cancelled", now)
        if new_rows:
            fastsql.execute_many(session, _INSERT_TASK, new_rows)

    def _human_task_values(self, instance: Instance, task, now: datetime, script_engine) -> dict:
        """The inbox row of a READY user task: scope and due date evaluated over the task data."""
        props = runtime.user_task_properties(task)
        lane = task.task_spec.lane or ""
        evaluate_expression = script_engine.evaluate_expression
        expression = props.get("scope") or authz.default_scope_expression(lane)
        scope = _simple_scope(expression, task.data, script_engine)
        if scope is None:
            try:
                scope = str(evaluate_expression(expression, task.data))
            except Exception as exc:
                raise ScriptError(f"scope of task {task.task_spec.name} ({expression}): {_describe(exc)}") from exc
        due_at = None
        if props.get("due"):
            try:
                value = _simple_value(props["due"], task.data)
                if value is None:
                    value = evaluate_expression(props["due"], task.data)
                due_at = _to_datetime(value)
            except Exception as exc:
                raise ScriptError(f"due date of task {task.task_spec.name}: {_describe(exc)}") from exc
        return dict(
            id=str(task.id), instance_id=instance.id, process_id=instance.process_id,
            bpmn_id=task.task_spec.bpmn_id or task.task_spec.name,
            title=task.task_spec.bpmn_name or task.task_spec.name,
            lane=lane, scope=scope, form=props.get("formJsonSchemaFilename"),
            form_process_id=task.workflow.spec.name, article=props.get("article"),
            enterprise_name=(task.data.get("enterprise_name") or None), due_at=due_at,
            status="open", created_at=now, completed_at=None, completed_by=None)

    def _write_waits(self, session: Session, row: Instance, stored: Optional[list], wanted: list) -> None:
        """Keep the instance's message_wait rows equal to what it waits for (untouched when equal).

        `stored`: what the database holds, as remembered on the workflow by its last save or load
        in this process (valid because a kept workflow is only reused at the lock version that save
        wrote); None: read it.
        """
        table = MessageWait.__table__
        if stored is None:
            stored = [(name, correlations) for name, correlations in session.execute(
                select(table.c.message_name, table.c.correlations)
                .where(table.c.instance_id == row.id).order_by(table.c.id))]
        if stored != wanted:
            session.execute(delete(table).where(table.c.instance_id == row.id))
            if wanted:
                session.execute(insert(table), [{"instance_id": row.id, "message_name": name,
                                                 "correlations": correlations} for name, correlations in wanted])

    @staticmethod
    def _wanted_waits(row: Instance, workflow) -> list:
        if row.status not in ("running", "incident"):
            return []
        return [(name, correlations) for name, correlations in runtime.waiting_messages(workflow)]

    # ------------------------------------------------------------------ messages
    def _route_events(self, session: Session, loaded: _Loaded, actor: str) -> list:
        """Deliver what the instance threw: to a waiting instance, else to a start event, else keep it."""
        follow_ups = []
        now = clock.now()
        for event in loaded.workflow.get_events():
            definition = event.event_definition
            if not isinstance(definition, MessageEventDefinition):
                continue
            payload = history.plain(event.payload if isinstance(event.payload, dict) else {"payload": event.payload})
            correlations = history.plain(event.correlations or {})
            history.append(session, chain=history.instance_chain(loaded.row.id), kind="message_sent",
                           actor=ENGINE_ACTOR, at=now, instance_id=loaded.row.id,
                           data={"message": definition.name, "correlations": correlations, "payload": payload})
            target = self._deliver(session, definition.name, event, payload, correlations,
                                   source_instance_id=loaded.row.id, actor=actor)
            if target is not None:
                follow_ups.append((target, None))
        return follow_ups

    def _deliver(self, session: Session, name: str, event, payload: dict, correlations: dict,
                 source_instance_id: Optional[int], actor: str) -> Optional[_Loaded]:
        now = clock.now()
        waits = session.scalars(select(MessageWait).where(MessageWait.message_name == name)
                                .order_by(MessageWait.instance_id)).all()
        for wait in waits:
            if wait.instance_id == source_instance_id:
                continue
            if not runtime.correlations_match(correlations, wait.correlations or {}):
                continue
            target = self._load(session, wait.instance_id)
            try:
                target.workflow.send_event(event)
            except Exception:
                continue
            history.append(session, chain=history.instance_chain(target.row.id), kind="message_received",
                           actor=ENGINE_ACTOR, at=now, instance_id=target.row.id,
                           data={"message": name, "from_instance": source_instance_id, "payload": payload})
            return target
        starters = self._starter_versions(session, name)
        if starters:
            version = starters[0]
            start_data = dict(payload)
            if source_instance_id is not None:
                start_data.setdefault("source_instance_id", source_instance_id)
            target = self._new_instance(session, version.process_id, actor, start_data, version=version)
            runtime.do_engine_steps(target.workflow)
            if not runtime.catch_at_start(target.workflow, event):
                target.workflow.send_event(event)
            history.append(session, chain=history.instance_chain(target.row.id), kind="message_received",
                           actor=ENGINE_ACTOR, at=now, instance_id=target.row.id,
                           data={"message": name, "from_instance": source_instance_id, "payload": payload})
            return target
        session.add(UndeliveredMessage(name=name, payload=payload, correlations=correlations,
                                       source_instance_id=source_instance_id, created_at=now,
                                       reason="no instance waits for it and no process starts with it"))
        if source_instance_id is not None:
            history.append(session, chain=history.instance_chain(source_instance_id),
                           kind="message_undelivered", actor=ENGINE_ACTOR, at=now,
                           instance_id=source_instance_id, data={"message": name})
        return None

    def _starter_versions(self, session: Session, name: str) -> list[ProcessVersion]:
        """The latest versions whose start event catches the message `name`, by process id.

        Asked on every delivery: the start messages of the latest versions are read as plain
        columns, and only a matching version is loaded (its XML and spec text left unread).
        """
        newest = select(ProcessVersion.process_id, func.max(ProcessVersion.version_no).label("n")) \
            .group_by(ProcessVersion.process_id).subquery()
        table = ProcessVersion.__table__
        ids = [version_id for version_id, messages in session.execute(
            select(table.c.id, table.c.start_messages).join(newest, and_(
                table.c.process_id == newest.c.process_id, table.c.version_no == newest.c.n))
            .order_by(table.c.process_id)) if name in (messages or [])]
        if not ids:
            return []
        found = {v.id: v for v in session.scalars(
            select(ProcessVersion).where(ProcessVersion.id.in_(ids))
            .options(defer(ProcessVersion.bpmn_xml), defer(ProcessVersion.spec_json)))}
        return [found[i] for i in ids]

    def _latest_versions(self, session: Session) -> list[ProcessVersion]:
        newest = select(ProcessVersion.process_id, func.max(ProcessVersion.version_no).label("n")) \
            .group_by(ProcessVersion.process_id).subquery()
        # Every delivery asks this: leave the XML and the serialised spec unread (loaded on access).
        return list(session.scalars(select(ProcessVersion).join(newest, and_(
            ProcessVersion.process_id == newest.c.process_id, ProcessVersion.version_no == newest.c.n))
            .options(defer(ProcessVersion.bpmn_xml), defer(ProcessVersion.spec_json))
            .order_by(ProcessVersion.process_id)))

    def send_message(self, name: str, payload: Optional[dict] = None, correlations: Optional[dict] = None,
                     *, actor: str = ENGINE_ACTOR) -> Optional[int]:
        """Deliver a message from outside; returns the instance that took it, or None (kept undelivered)."""
        from SpiffWorkflow.bpmn import BpmnEvent
        from SpiffWorkflow.spiff.specs.event_definitions import MessageEventDefinition as SpiffMessage
        payload = history.plain(payload or {})
        # Catching events compare definitions by class and name: use the spiff class they use.
        definition = SpiffMessage(name)
        event = BpmnEvent(definition, payload=payload, correlations=correlations or {})
        with self._budget(), self.db.transaction() as session:
            target = self._deliver(session, name, event, payload, correlations or {}, None, actor)
            if target is None:
                return None
            self._run_and_save(session, target, actor)
            return target.row.id

    # ------------------------------------------------------------------ timers
    # A tick fires timers in batches of up to TICK_BATCH instances (or TICK_BATCH_SECONDS of work).
    # On SQLite a batch is worked out first in a read-only transaction (load, fire, run the engine:
    # most of the work, done without the database's one write lock), then written in one write
    # transaction that checks each instance's lock version: an instance changed meanwhile, or one
    # whose scripts write (domain.NeedsWriteLock), is fired again from the database under the lock.
    # So several processes fire timers at once (timer_processes; the `worker` command runs one per
    # core) and still write one at a time. PostgreSQL locks each instance's row instead and fires
    # under that lock. If an instance fails with an error outside its BPMN (those become
    # incidents), its batch is rolled back and fired again one transaction per instance, so that
    # only the failing one is left out (and left due for the next tick).
    TICK_BATCH = 50
    TICK_BATCH_SECONDS = 0.1  # the longest a batch keeps SQLite's write lock from web requests
    POOL_MIN_DUE = 200  # fewer due instances are fired in this process (starting helpers costs more)

    def tick(self, now: Optional[datetime] = None) -> list[RunResult]:
        """Fire every due timer; safe from several workers (each instance is fired once).

        An instance whose firing fails is logged and left due for the next tick; the others go on.
        With timer_processes > 1 a large sweep is shared out to helper processes (kept for the
        next ticks; shutdown_timer_processes ends them).
        """
        now = now or clock.now()
        with clock.use_clock(now):
            with self.db.read() as session:
                due_ids = list(session.scalars(
                    select(Instance.id).where(Instance.next_timer_at <= now, Instance.status == "running")
                    .order_by(Instance.next_timer_at).limit(10000)))
            if len(due_ids) >= self.POOL_MIN_DUE and self.timer_processes > 1:
                pool = self._timer_pool()
                if pool is not None:
                    return self._fire_in_pool(pool, due_ids, now)
            return self._fire_ids(due_ids, now)

    def _timer_pool(self):
        """The helper processes of large sweeps, started on first use and kept (None where they
        cannot work: an in-memory database, or script helpers given to this Engine object)."""
        if self._pool is None and not self.extra_helpers and not _in_memory(self.db):
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor
            config = dict(database_url=self.db.url, processes_dir=str(self.processes_dir),
                          forms_dir=str(self.forms_dir), script_budget_seconds=self.script_budget_seconds,
                          parent_pid=os.getpid())
            # spawned, not forked: this process holds connections and threads a fork would copy
            self._pool = ProcessPoolExecutor(self.timer_processes, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_timer_helper, initargs=(config,))
        return self._pool

    def start_timer_processes(self) -> int:
        """Start the helper processes of large timer sweeps now (the `worker` command does, so that
        its first sweep does not wait for them); returns how many run (0: this process alone)."""
        if self.timer_processes <= 1:
            return 0
        pool = self._timer_pool()
        if pool is None:
            return 0
        # each helper answers with its pid once it has started; one that is up takes the questions
        # of those still starting, so ask until every one has answered (or a minute has passed)
        import time
        started: set[int] = set()
        deadline = time.monotonic() + 60
        while len(started) < self.timer_processes and time.monotonic() < deadline:
            started |= set(pool.map(_timer_helper_ready, [0.2] * self.timer_processes))
        return len(started)

    def shutdown_timer_processes(self) -> None:
        """End the helper processes of timer sweeps (if started)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _fire_in_pool(self, pool, due_ids: list[int], now: datetime) -> list[RunResult]:
        """Share a sweep out to the helper processes, a batch at a time (whoever is free takes the
        next). A batch whose helper failed as a whole (a helper died) is fired here afterwards:
        what it had fired already is not due any more and is skipped."""
        from concurrent.futures.process import BrokenProcessPool
        step = self.TICK_BATCH
        chunks = [due_ids[start:start + step] for start in range(0, len(due_ids), step)]
        results: list[RunResult] = []
        left: list[int] = []
        broken = False
        futures = []
        for chunk in chunks:
            try:
                futures.append((chunk, pool.submit(_fire_in_helper, chunk, now)))
            except BrokenProcessPool:  # (a helper died before this sweep)
                broken = True
                left += chunk
        for chunk, future in futures:
            try:
                results += future.result()
            except BrokenProcessPool:
                broken = True
                left += chunk
            except Exception:  # noqa: BLE001 — reported; fired here below
                log.exception("tick: a helper process failed on %d instances; firing them here", len(chunk))
                left += chunk
        if broken:
            log.error("tick: a timer helper process died; its batches are fired here, helpers restart next tick")
            self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
        if left:
            results += self._fire_ids(left, now)
        return results

    def _fire_ids(self, due_ids: list[int], now: datetime) -> list[RunResult]:
        """Fire the timers of these instances in this process (inside tick's clock)."""
        results: list[RunResult] = []
        position = 0
        while position < len(due_ids):
            batch = self._fire_batch(due_ids, position, now)
            if batch is not None:
                done, fired = batch
            else:  # something failed: the batch was rolled back; one instance at a time
                done, fired = self._fire_one_by_one(due_ids, position, now)
            results += fired
            position += done
        return results

    def _fire_batch(self, due_ids: list[int], position: int, now: datetime):
        """Fire a batch from due_ids[position:] in one write transaction: (instances done, results),
        or None when one failed (nothing of the batch is kept)."""
        import time
        prepared: list = []
        if self.db.is_sqlite and not self.extra_helpers:  # (helpers of unknown effect: under the lock)
            prepared = self._prepare_fires(due_ids, position, now)
        fired = []
        swept: list = []
        try:
            with self.db.transaction() as session:
                session.info[_SWEEP] = swept
                if prepared:
                    count = len(prepared)
                    for instance_id, fire in prepared:
                        with self._budget():
                            result = (self._fire(session, instance_id, now) if fire is _UNDER_LOCK
                                      else None if fire is None else self._write_fire(session, fire, now))
                        _dismantle_all(swept)  # its state is written: the workflows are not used again
                        if result is not None:
                            fired.append(result)
                else:
                    started = time.perf_counter()
                    count = 0
                    while (position + count < len(due_ids) and count < self.TICK_BATCH
                           and time.perf_counter() - started < self.TICK_BATCH_SECONDS):
                        result = self._fire(session, due_ids[position + count], now)
                        _dismantle_all(swept)
                        count += 1
                        if result is not None:
                            fired.append(result)
        except Exception:  # noqa: BLE001 — found out below, one instance at a time
            return None
        finally:
            _dismantle_all(swept)
            _dismantle_all([fire.workflow for _, fire in prepared if isinstance(fire, _Fire)])
        return count, fired

    def _prepare_fires(self, due_ids: list[int], position: int, now: datetime) -> list:
        """Work out the fires of a batch from due_ids[position:] in a read-only transaction:
        [(instance id, the instance loaded with its timers fired and engine run | None when not
        due | _UNDER_LOCK)]. Nothing is written; _write_fire writes each (or fires it again)."""
        import time
        prepared: list = []
        started = time.perf_counter()
        try:
            with self.db.read_only() as session:
                session.info[domain.PREPARING] = True
                while (position + len(prepared) < len(due_ids) and len(prepared) < self.TICK_BATCH
                       and time.perf_counter() - started < self.TICK_BATCH_SECONDS):
                    instance_id = due_ids[position + len(prepared)]
                    session.info.pop(domain.WANTED_LOCK, None)
                    try:
                        with self._budget():
                            fire = self._prepare_fire(session, instance_id, now)
                    except Exception:  # noqa: BLE001 — whatever it was, it happens again under the lock
                        fire = _UNDER_LOCK
                    if fire is not None and fire is not _UNDER_LOCK and session.info.get(domain.WANTED_LOCK):
                        runtime.dismantle(fire.workflow)
                        fire = _UNDER_LOCK
                    prepared.append((instance_id, fire))
                session.info.pop(domain.PREPARING, None)
        except Exception:  # noqa: BLE001 — the read itself failed: all of them under the lock
            _dismantle_all([fire.workflow for _, fire in prepared if isinstance(fire, _Fire)])
            return [(instance_id, _UNDER_LOCK) for instance_id, _ in prepared] or [(due_ids[position], _UNDER_LOCK)]
        return prepared

    def _prepare_fire(self, session: Session, instance_id: int, now: datetime):
        """One instance's fire worked out without writing (see _prepare_fires)."""
        loaded = self._load(session, instance_id, lock=False)
        row = loaded.row
        if row.status != "running" or row.next_timer_at is None or row.next_timer_at > now:
            return None  # fired meanwhile (by another worker, or an action that came first)
        workflow = loaded.workflow
        fire = _Fire(row, workflow, row.lock_version, self._fire_timers(workflow))
        runtime.do_engine_steps(workflow)  # (a failure: the caller fires it under the lock)
        if not workflow.bpmn_events:
            fire.outcome = self._outcome(fire, None, now)
            runtime.dismantle(workflow)  # (not needed any more: the batch holds only outcomes)
        return fire

    def _write_fire(self, session: Session, fire: "_Fire", now: datetime) -> Optional[RunResult]:
        """Write a fire worked out by _prepare_fires, if its instance is still at the lock version
        it was read at; otherwise fire it again from the database, under the lock."""
        row = fire.row
        found = fastsql.execute(session, _READ_VERSION, {"instance_id": row.id}).fetchone()
        if found is None or found[0] != fire.lock_version or session.identity_map.get(
                _INSTANCE_IDENTITY((row.id,))) is not None:
            runtime.dismantle(fire.workflow)
            return self._fire(session, row.id, now)
        session.add(row)  # attached again as it was read: no read
        if fire.outcome is None:  # its save is worked out here, the workflow's scripts may run again:
            # the script engine is not part of the state: this transaction's, as a load attaches
            fire.workflow.script_engine = self.script_engine(session, {"instance": row, "actor": ENGINE_ACTOR})
        return self._save_fire(session, fire, now, fire.fired, ran=True)

    def _fire_one_by_one(self, due_ids: list[int], position: int, now: datetime):
        fired = []
        end = min(len(due_ids), position + self.TICK_BATCH)
        for instance_id in due_ids[position:end]:
            swept: list = []
            try:
                with self.db.transaction() as session:
                    session.info[_SWEEP] = swept
                    result = self._fire(session, instance_id, now)
            except Exception:  # noqa: BLE001 — one broken instance must not stop the others
                log.exception("tick: firing the timers of instance %s failed", instance_id)
                self._workflows.discard(instance_id)
                continue
            finally:
                _dismantle_all(swept)
            if result is not None:
                fired.append(result)
        return end - position, fired

    def _fire(self, session: Session, instance_id: int, now: datetime) -> Optional[RunResult]:
        """Fire one instance's due timers under the write lock (its row's lock on PostgreSQL)."""
        with self._budget():
            if not self.db.is_sqlite:  # lock it first; another worker may hold it (skip it then)
                if session.execute(_LOCK_IF_DUE, {"instance_id": instance_id, "now": now}).first() is None:
                    return None
            loaded = self._load(session, instance_id)
            row = loaded.row
            if row.status != "running" or row.next_timer_at is None or row.next_timer_at > now:
                return None  # fired meanwhile (by another worker, or an action that came first)
            return self._save_fire(session, loaded, now, self._fire_timers(loaded.workflow))

    @staticmethod
    def _fire_timers(workflow) -> list[tuple]:
        """Fire the workflow's due timers: (task id, spec name, timer name, due) of each fired."""
        waiting = {t.id: t for t in runtime.waiting_tasks(workflow)}
        workflow.refresh_timers()
        return [(str(task.id), task.task_spec.name, task.task_spec.bpmn_name or task.task_spec.name,
                 str(task._get_internal_data("event_value")))
                for task in waiting.values()
                if task.state != TaskState.WAITING or task._get_internal_data("event_fired", False)]

    def _save_fire(self, session: Session, loaded: _Loaded, now: datetime, fired: list[tuple],
                   ran: bool = False) -> RunResult:
        """The history of the fired timers, then the engine's run (unless `ran`) and the save."""
        instance_id = loaded.row.id
        for task_id, name, timer, due in fired:
            history.append(session, chain=history.instance_chain(instance_id), kind="timer_fired",
                           actor=TIMER_ACTOR, at=now, instance_id=instance_id, task_id=task_id,
                           bpmn_id=name, data={"timer": timer, "due": due})
        return self._run_and_save(session, loaded, TIMER_ACTOR, fired=[name for _, name, _, _ in fired],
                                  ran=ran)

    # ------------------------------------------------------------------ incidents
    def retry(self, user: User, instance_id: int, data_patch: Optional[dict] = None) -> RunResult:
        """Retry an instance's failing task (administrator), optionally after correcting its data."""
        if not user.has_role("administrator"):
            raise NotAllowed(user, f"instance {instance_id}", "only an administrator retries incidents")
        with self._budget(), self.db.transaction() as session:
            loaded = self._load(session, instance_id)
            failing = loaded.workflow.get_tasks(state=TaskState.ERROR)
            if not failing and loaded.row.status != "incident":
                raise StaleInstance(instance_id, "has no incident to retry")
            now = clock.now()
            for task in failing:
                if data_patch:
                    task.data.update(history.plain(data_patch))
                task._set_state(TaskState.READY)
            history.append(session, chain=history.instance_chain(instance_id), kind="retried",
                           actor=user.username, at=now, instance_id=instance_id,
                           task_id=loaded.row.incident_task,
                           data={"previous_error": loaded.row.incident_error, "data_patch": data_patch or {}})
            loaded.row.status = "running"
            loaded.row.incident_task = loaded.row.incident_error = None
            return self._run_and_save(session, loaded, user.username)

    # ------------------------------------------------------------------ history
    def history(self, instance_id: int) -> list:
        from .models import Event
        with self.db.read() as session:
            return list(session.scalars(select(Event).where(
                Event.chain == history.instance_chain(instance_id)).order_by(Event.seq)))

    def verify_history(self) -> list[history.Break]:
        with self.db.read() as session:
            return history.verify(session)

    def instance(self, instance_id: int) -> Instance:
        with self.db.read() as session:
            row = session.get(Instance, instance_id)
            if row is None:
                raise InstanceNotFound(instance_id)
            return row

    def instance_data(self, instance_id: int) -> dict:
        """The data of the instance's most recent task (for tests, the CLI and auditors)."""
        with self.db.read() as session:
            loaded = self._load(session, instance_id, lock=False)
            last = loaded.workflow.last_task
            data = copy.deepcopy(dict(last.data)) if last is not None else {}
            self._keep_after_commit(session, loaded)
            return data


# ---------------------------------------------------------------------- hot-path statements
# Built once: a statement built per call costs more than running it (cache keys of its values).
_HUMAN = HumanTask.__table__
# what complete() needs of an inbox row (no dates: they would need the column types' processing)
_TASK_ROW = select(_HUMAN.c.id, _HUMAN.c.instance_id, _HUMAN.c.process_id, _HUMAN.c.bpmn_id, _HUMAN.c.title,
                   _HUMAN.c.lane, _HUMAN.c.scope, _HUMAN.c.form, _HUMAN.c.form_process_id, _HUMAN.c.status,
                   _HUMAN.c.completed_by).where(_HUMAN.c.id == bindparam("task_id"))


class _TaskRow(NamedTuple):
    id: str
    instance_id: int
    process_id: str
    bpmn_id: str
    title: str
    lane: str
    scope: str
    form: Optional[str]
    form_process_id: str
    status: str
    completed_by: Optional[str]


_OPEN_TASK_IDS = select(_HUMAN.c.id).where(_HUMAN.c.instance_id == bindparam("instance_id"),
                                            _HUMAN.c.status == "open")
_INSERT_TASK = insert(_HUMAN)
_CANCEL_TASK = (update(_HUMAN).where(_HUMAN.c.id == bindparam("task_id"))
                .values(status=bindparam("new_status"), completed_at=bindparam("at")))
_COMPLETE_TASK = (update(_HUMAN).where(_HUMAN.c.id == bindparam("task_id"))
                  .values(status=bindparam("new_status"), completed_at=bindparam("at"),
                          completed_by=bindparam("by")))


_INSTANCE = Instance.__table__
_INSTANCE_KEYS = [column.key for column in _INSTANCE.columns]
_INSTANCE_MANAGER = sa_inspect(Instance).class_manager
# identity-map keys from primary keys (Session.identity_key looks the mapper up on every call)
_INSTANCE_IDENTITY = sa_inspect(Instance).identity_key_from_primary_key
_TASK_IDENTITY = sa_inspect(HumanTask).identity_key_from_primary_key
# no autoflush: the engine writes instance rows itself (_write_instance), and a flush looks at every
# object of the session first (in a batch of timer fires, every instance fired so far)
_READ_ROW = (select(*_INSTANCE.columns).where(_INSTANCE.c.id == bindparam("instance_id"))
             .execution_options(autoflush=False))
_LOCK_ROW = _READ_ROW.with_for_update()
_LOCK_IF_DUE = (select(_INSTANCE.c.id)
                .where(_INSTANCE.c.id == bindparam("instance_id"), _INSTANCE.c.next_timer_at <= bindparam("now"),
                       _INSTANCE.c.status == "running")
                .with_for_update(skip_locked=True))
_READ_VERSION = select(_INSTANCE.c.lock_version).where(_INSTANCE.c.id == bindparam("instance_id"))
_LOCK_VERSION = _READ_VERSION.with_for_update()
_UPDATE_INSTANCE = update(_INSTANCE).where(_INSTANCE.c.id == bindparam("_id"),
                                           _INSTANCE.c.lock_version == bindparam("_version"))


# ---------------------------------------------------------------------- inbox statements
# Built once per shape and reused: building and hashing a statement of a dozen sub-selects would
# cost more than running it.
_HT = HumanTask.__table__
_INBOX_SHAPES: dict = {}


def _inbox_filters(with_process: bool, overdue: bool) -> list:
    extra = []
    if with_process:
        extra.append(_HT.c.process_id == bindparam("process_id"))
    if overdue:
        extra.append(_HT.c.due_at < bindparam("now", type_=HumanTask.due_at.type))
    return extra


def _inbox_params(lanes: list, keys: list) -> dict:
    params = {f"lane_{i}": lane for i, lane in enumerate(lanes)}
    params.update({f"key_{i}": key for i, key in enumerate(keys)})
    return params


# an inbox row: every human_task column, by name (read-only)
_InboxRow = namedtuple("_InboxRow", [column.key for column in HumanTask.__table__.columns])


def _inbox_count_statement(lanes: int, keys: int, with_process: bool, overdue: bool):
    key = ("count", lanes, keys, with_process, overdue)
    statement = _INBOX_SHAPES.get(key)
    if statement is None:
        statement = select(func.count()).select_from(_HT).where(
            _HT.c.status == "open", _HT.c.lane.in_([bindparam(f"lane_{i}") for i in range(lanes)]),
            _HT.c.scope.in_([bindparam(f"key_{j}") for j in range(keys)]), *_inbox_filters(with_process, overdue))
        if len(_INBOX_SHAPES) > 512:
            _INBOX_SHAPES.clear()
        _INBOX_SHAPES[key] = statement
    return statement


def _inbox_page_statement(lanes: int, keys: int, with_process: bool, overdue: bool):
    key = ("page", lanes, keys, with_process, overdue)
    statement = _INBOX_SHAPES.get(key)
    if statement is None:
        extra = _inbox_filters(with_process, overdue)
        wanted = bindparam("wanted", type_=Integer)
        parts = []
        for i in range(lanes):
            for j in range(keys):
                base = select(_HT.c.id, _HT.c.due_at, _HT.c.created_at).where(
                    _HT.c.status == "open", _HT.c.lane == bindparam(f"lane_{i}"),
                    _HT.c.scope == bindparam(f"key_{j}"), *extra)
                parts.append(base.where(_HT.c.due_at.is_not(None))
                             .order_by(_HT.c.due_at, _HT.c.created_at).limit(wanted).subquery())
                if not overdue:  # a task without a due date is never overdue
                    parts.append(base.where(_HT.c.due_at.is_(None))
                                 .order_by(_HT.c.created_at).limit(wanted).subquery())
        merged = union_all(*[select(part) for part in parts]).subquery()
        page = (select(merged.c.id, merged.c.due_at, merged.c.created_at)
                .order_by(merged.c.due_at.is_(None), merged.c.due_at, merged.c.created_at)
                .offset(bindparam("offset", type_=Integer)).limit(bindparam("per_page", type_=Integer))
                .subquery())
        # plain rows (read-only, attribute access like the model's): no ORM objects to build
        statement = (select(*_HT.c).join(page, _HT.c.id == page.c.id)
                     .order_by(page.c.due_at.is_(None), page.c.due_at, page.c.created_at))
        if len(_INBOX_SHAPES) > 512:
            _INBOX_SHAPES.clear()
        _INBOX_SHAPES[key] = statement
    return statement


# ---------------------------------------------------------------------- helpers
def _settle(session: Session, state) -> None:
    """Leave nothing of a written instance row to the unit of work: attributes set to the values
    they had still mark it modified, and the commit's flush would go through it for nothing."""
    commit_all = getattr(state, "_commit_all", None)  # (SQLAlchemy's own step after a flush)
    if commit_all is not None:
        commit_all(state.dict, session.identity_map)


def _actor_name(actor) -> str:
    if actor is None:
        return ENGINE_ACTOR
    return actor.username if isinstance(actor, User) else str(actor)


def _form_process_id(task, instance: Instance) -> str:
    """The process whose forms/ folder holds the task's form: embedded sub-processes use their
    process's folder, call activities the called process's."""
    own = {instance.process_id, *(instance.called_versions or {})}
    workflow = task.workflow
    while workflow is not None and workflow.spec.name not in own:
        workflow = getattr(workflow, "parent_workflow", None)
    return workflow.spec.name if workflow is not None else instance.process_id


def _starter_context(session: Session, user: User, data: dict) -> dict:
    """Who started the instance and for whom: a process needs not ask the starter what it knows.

    `starter_*` keys are always set; `jurisdiction_code`, `enterprise_id` / `agency_id` only default
    to the starter's own when the caller did not give them.
    """
    context = {"started_by": user.username, "starter_roles": list(user.roles or []),
               "starter_jurisdiction_code": user.jurisdiction_code,
               "starter_organisation_id": user.organisation_id}
    if user.jurisdiction_code and "jurisdiction_code" not in data:
        context["jurisdiction_code"] = user.jurisdiction_code
    if user.organisation_id is not None:
        org = session.get(Organisation, user.organisation_id)
        key = "enterprise_id" if org is not None and org.kind == "enterprise" else "agency_id"
        if key not in data:
            context[key] = user.organisation_id
        if org is not None and org.kind == "enterprise" and "enterprise_name" not in data:
            context["enterprise_name"] = org.name
            context.setdefault("jurisdiction_code", data.get("jurisdiction_code") or org.division_code)
    return context


def _apply_metadata(row: Instance, data: dict) -> None:
    for key, value in _metadata(row, data).items():
        setattr(row, key, value)


def _metadata(row: Instance, data: dict) -> dict:
    """The instance row's search columns as the data sets them (only those that change)."""
    values: dict = {}
    if not isinstance(data, dict):
        return values
    if data.get("enterprise_id") not in (None, ""):
        try:
            values["enterprise_id"] = int(data["enterprise_id"])
        except (TypeError, ValueError):
            pass
    if data.get("jurisdiction_code"):
        values["jurisdiction_code"] = str(data["jurisdiction_code"])[:6]
    if data.get("business_key"):
        values["business_key"] = str(data["business_key"])[:100]
    if data.get("enterprise_name") and row.title and data["enterprise_name"] not in row.title:
        values["title"] = f"{row.title} — {data['enterprise_name']}"[:300]
    return values


def _start_messages(spec) -> list[str]:
    from SpiffWorkflow.bpmn.specs.mixins.events.start_event import StartEvent
    names = []
    for task_spec in spec.task_specs.values():
        if isinstance(task_spec, StartEvent):
            definition = getattr(task_spec, "event_definition", None)
            if isinstance(definition, MessageEventDefinition):
                names.append(definition.name)
    return names


def _start_lanes(spec) -> list[str]:
    """The lanes of the user tasks reachable first from the start event."""
    from SpiffWorkflow.bpmn.specs.mixins.events.start_event import StartEvent
    lanes, seen = [], set()
    queue = [t for t in spec.task_specs.values() if isinstance(t, StartEvent)]
    if any(getattr(t, "event_definition", None) is not None
           and type(t.event_definition).__name__ != "NoneEventDefinition" for t in queue):
        return []
    while queue:
        task_spec = queue.pop(0)
        if task_spec.name in seen:
            continue
        seen.add(task_spec.name)
        if getattr(task_spec, "manual", False):
            if task_spec.lane:
                lanes.append(task_spec.lane)
            continue
        queue.extend(task_spec.outputs)
    return lanes


def _to_datetime(value) -> Optional[datetime]:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        when = value
    else:
        text = str(value)
        when = datetime.fromisoformat(text if "T" in text else text + "T23:59:59+08:00")
    if when.tzinfo is None:
        raise ValueError(f"due date {value!r} has no UTC offset")
    return when.astimezone(timezone.utc)


_SIMPLE_SCOPE_CALL = re.compile(r"^(organisation|jurisdiction|user)\((?:([A-Za-z_]\w*)|'(\d+)')\)$")


def _simple_scope(expression: str, data: dict, script_engine) -> Optional[str]:
    """A scope expression of the usual form — organisation(enterprise_id), jurisdiction('650000'),
    user(expert), the defaults of authz.default_scope_expression among them — evaluated without
    the script engine; None where the script engine must decide (another form, a variable missing
    or not text or a number, a name the task data or the engine's helpers give another meaning)."""
    match = _SIMPLE_SCOPE_CALL.match(expression)
    if match is None:
        return None
    name, variable, literal = match.groups()
    helper = getattr(authz, name)
    environment = getattr(script_engine, "environment", None)
    if getattr(environment, "globals", {}).get(name) is not helper or name in data:
        return None
    if variable is None:
        return str(helper(literal))
    value = data.get(variable, _NO_VALUE)
    if type(value) not in (str, int):
        return None
    return str(helper(value))


def _simple_value(expression: str, data: dict):
    """The value of an expression that is only the name of a text variable of the task data (a
    due date: "report_due"), as the script engine would give it; None otherwise."""
    if not expression.isidentifier() or expression.startswith("_"):
        return None
    value = data.get(expression)
    return value if type(value) is str else None


_NO_VALUE = object()


_SWEEP = "cleanaudit_sweep"  # session.info: workflows of a timer sweep, taken apart after it


def _in_memory(db: Database) -> bool:
    return db.is_sqlite and db.engine.url.database in (None, "", ":memory:")


# ---------------------------------------------------------------------- timer helper processes
_helper_engine: Optional[Engine] = None


def _start_timer_helper(config: dict) -> None:
    """A helper process's start (Engine._timer_pool): an Engine of its own on the same database."""
    global _helper_engine
    parent_pid = config.pop("parent_pid")
    _helper_engine = Engine(config.pop("database_url"), **config)
    runtime.tune_gc()
    threading.Thread(target=_end_with_parent, args=(parent_pid,), name="timer-helper-parent",
                     daemon=True).start()


def _end_with_parent(parent_pid: int) -> None:
    """A helper whose worker is gone (killed without shutting its helpers down) ends too: what it
    had not committed is rolled back by the database, and its instances stay due."""
    import time
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(0)


def _timer_helper_ready(pause: float) -> int:
    import time
    time.sleep(pause)
    return os.getpid()


def default_timer_processes() -> int:
    """Processes for large timer sweeps: one per core, at most four (SQLite writes one at a time)."""
    return max(1, min(4, os.cpu_count() or 1))


def _fire_in_helper(due_ids: list[int], now: datetime) -> list[RunResult]:
    with clock.use_clock(now):
        return _helper_engine._fire_ids(due_ids, now)


def _dismantle_all(workflows: list) -> None:
    seen = set()
    for workflow in workflows:
        if id(workflow) not in seen:
            seen.add(id(workflow))
            runtime.dismantle(workflow)
    workflows.clear()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    inner = getattr(exc, "exception", None)
    if inner is not None and str(inner) and str(inner) not in text:
        text = f"{text}: {inner}"
    return text[:2000]
