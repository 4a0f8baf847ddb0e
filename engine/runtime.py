"""A pure wrapper around SpiffWorkflow: specs, (de)serialisation without the spec, ready tasks, timers.

No database and no I/O here; engine.facade owns transactions.
"""
from __future__ import annotations

import copy
import json
import re
import threading
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Optional
from uuid import UUID

from SpiffWorkflow import TaskState
from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.serializer.default.workflow import (BpmnSubWorkflowConverter, BpmnWorkflowConverter,
                                                             TaskConverter, WorkflowConverter)
from SpiffWorkflow.bpmn.specs.mixins.events.event_types import CatchingEvent
from SpiffWorkflow.bpmn.util.subworkflow import BpmnSubWorkflow
from SpiffWorkflow.task import Task
from SpiffWorkflow.bpmn.serializer.workflow import VERSION as SERIALIZER_VERSION
from SpiffWorkflow.bpmn.specs.event_definitions.timer import TimerEventDefinition
from SpiffWorkflow.bpmn.specs.mixins.subworkflow_task import CallActivity, SubWorkflowTask
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG

__all__ = ["SERIALIZER_VERSION", "install", "serializer", "spec_to_json", "spec_from_json",
           "dump_state", "load_state", "new_workflow", "ready_user_tasks", "next_timer_at",
           "waiting_messages", "user_task_properties", "called_process_ids"]

# A loop iteration adds a level to SpiffWorkflow's task tree, and its task search stops at depth
# 1000: a 2-task gateway loop then silently "completes" the instance after ~500 iterations.
UNLIMITED_DEPTH = 10**9
_installed = False
_install_lock = threading.Lock()


def install() -> None:
    """Lift SpiffWorkflow's task-search depth limit and route its timers through engine.clock."""
    global _installed
    with _install_lock:
        if _installed:
            return
        from SpiffWorkflow.util.task import TaskIterator
        from SpiffWorkflow.bpmn.util.task import BpmnTaskIterator
        for cls in (TaskIterator, BpmnTaskIterator):
            defaults = list(cls.__init__.__defaults__)
            # (end_at_spec, max_depth, ...) in both signatures
            defaults[1] = UNLIMITED_DEPTH
            cls.__init__.__defaults__ = tuple(defaults)
        # Completing any task walks the whole tree for WAITING tasks: O(n^2) over a long loop.
        from SpiffWorkflow.workflow import Workflow
        from SpiffWorkflow.task import Task
        Task._state = property(_get_task_state, _set_task_state)
        original_remove = Workflow._remove_task

        def _remove_task(self, task_id):
            _live(self).pop(task_id, None)
            original_remove(self, task_id)

        Workflow._remove_task = _remove_task
        Workflow.update_waiting_tasks = _update_waiting_tasks
        from . import clock
        clock.install()
        _installed = True


# Every workflow keeps an index of its unfinished tasks, so that finding READY and WAITING tasks
# costs the number of live tasks, not the size of the tree (which grows with every loop iteration).
def _live(workflow) -> dict:
    live = workflow.__dict__.get("_cleanaudit_live")
    if live is None:
        live = workflow.__dict__["_cleanaudit_live"] = {}
    return live


def _get_task_state(task) -> int:
    return task.__dict__["_cleanaudit_state"]


def _set_task_state(task, value: int) -> None:
    task.__dict__["_cleanaudit_state"] = value
    if value & TaskState.FINISHED_MASK:
        _live(task.workflow).pop(task.id, None)
    else:
        _live(task.workflow)[task.id] = task


def live_tasks(workflow) -> list:
    """The workflow's unfinished tasks (its own, not its sub-processes')."""
    return list(_live(workflow).values())


def _update_waiting_tasks(self) -> None:
    """Update all WAITING tasks, found in the live-task index rather than by walking the tree."""
    for task in [t for t in live_tasks(self) if t.state == TaskState.WAITING]:
        if task.state == TaskState.WAITING:
            task.task_spec._update(task)


# ---------------------------------------------------------------------- (de)serialisation
# The stored state is SpiffWorkflow's own dictionary format (serializer 1.5, without the spec), so
# that states stay readable by SpiffWorkflow's converters. The converters below produce and read
# exactly that format, with the per-task work (the largest part of a save or a load) done without
# SpiffWorkflow's generic per-value dispatch: ids are parsed and printed once, plain data is not
# walked value by value, and inherited data is copied the way DeepMerge.merge({}, parent) does.
_UUIDS: dict = {}
_UUID_TEXT: dict = {}
_MUTABLE = (dict, list, set)
_STRUCTURAL_TYPENAMES = frozenset({"Task", "BpmnWorkflow", "BpmnSubWorkflow"})
_TYPENAME_RE = re.compile(rb'"typename"\s*:\s*"([^"\\]*)"')
_load_flags = threading.local()


def _uuid(text: str) -> UUID:
    """UUID(text), parsed once per process (ids repeat in every load of an instance)."""
    value = _UUIDS.get(text)
    if value is None:
        if len(_UUIDS) > 500_000:
            _UUIDS.clear()
        value = _UUIDS[text] = UUID(text)
    return value


def _text(value: UUID) -> str:
    """str(uuid), printed once per process."""
    text = _UUID_TEXT.get(value)
    if text is None:
        if len(_UUID_TEXT) > 500_000:
            _UUID_TEXT.clear()
        text = _UUID_TEXT[value] = str(value)
    return text


def _inherited(parent_data: dict) -> dict:
    """DeepMerge.merge({}, parent_data): a copy whose mutable values are shallow copies."""
    return {k: (v.copy() if type(v) in (dict, list) else copy.copy(v)) if isinstance(v, _MUTABLE) else v
            for k, v in parent_data.items()}


class LeanTaskConverter(TaskConverter):
    """SpiffWorkflow's TaskConverter (data stored as a delta to the parent), same output, less overhead."""

    def to_dict(self, task):
        tasks = task.workflow.tasks
        parent = tasks.get(task._parent)
        data = task.data
        if parent is None:
            delta = {}
        else:
            parent_data = parent.data
            delta = {"updates": {k: v for k, v in data.items() if k not in parent_data or v != parent_data[k]},
                     "deletions": [k for k in parent_data if k not in data]}
            data = {}
        return {
            "id": _text(task.id),
            "parent": _text(task._parent) if parent is not None else None,
            "children": [_text(child) for child in task._children],
            "last_state_change": task.last_state_change,
            "state": task._state,
            "task_spec": task.task_spec.name,
            "triggered": task.triggered,
            "internal_data": self.registry.convert(task.internal_data),
            "data": data,
            "delta": delta,
        }

    def from_dict(self, dct, workflow):
        typed = getattr(_load_flags, "typed", True)
        restore = self.registry.restore
        task_spec = workflow.spec.task_specs.get(dct["task_spec"])
        task = self.target_class(workflow, task_spec, state=dct["state"], id=_uuid(dct["id"]))
        parent_id = dct["parent"]
        task._parent = _uuid(parent_id) if parent_id is not None else None
        task._children = [_uuid(child) for child in dct["children"]]
        task.last_state_change = dct["last_state_change"]
        task.triggered = dct["triggered"]
        internal = dct["internal_data"]
        task.internal_data = restore(internal) if typed or not isinstance(internal, dict) else dict(internal)
        if isinstance(task_spec, CatchingEvent) and task.has_state(TaskState.WAITING):
            task.workflow.top_workflow.event_manager.add_task(task)
        delta = dct.get("delta")
        parent = workflow.tasks.get(task._parent)
        if delta and parent is not None:
            data = _inherited(parent.data)
            updates = delta.get("updates", {})
            data.update(restore(updates) if typed else updates)
            for key in delta.get("deletions", {}):
                if key in data:
                    del data[key]
        else:
            data = restore(dct["data"]) if typed else dct["data"]
        task.data = data
        return task


class _LeanMappings:
    def mapping_to_dict(self, mapping, **kwargs):
        convert = self.registry.convert
        return {(_text(k) if type(k) is UUID else str(k)): convert(v, **kwargs) for k, v in mapping.items()}

    def mapping_from_dict(self, mapping, key_class=None, **kwargs):
        restore = self.registry.restore
        if key_class is UUID:
            return {_uuid(k): restore(v, **kwargs) for k, v in mapping.items()}
        return super().mapping_from_dict(mapping, key_class, **kwargs)


class LeanSubWorkflowConverter(_LeanMappings, BpmnSubWorkflowConverter):
    """SpiffWorkflow's sub-workflow converter with the lean id handling."""


class LeanWorkflowConverter(_LeanMappings, BpmnWorkflowConverter):
    """Serialises a workflow without its spec (stored once per version); restores with given specs."""

    def to_dict(self, workflow):
        dct = WorkflowConverter.to_dict(self, workflow)
        dct["subprocesses"] = self.mapping_to_dict(workflow.subprocesses)
        dct["bpmn_events"] = self.registry.convert(workflow.bpmn_events)
        return dct

    def from_dict(self, dct):
        spec = dct.pop("spec")
        subprocess_specs = dct.pop("subprocess_specs", {})
        workflow = self.target_class(spec, subprocess_specs, deserializing=True)
        workflow.tasks = self.mapping_from_dict(dct["tasks"], UUID, workflow=workflow)
        workflow.task_tree = workflow.tasks.get(_uuid(dct["root"]))
        self.set_default_attributes(workflow, dct)
        self.subprocesses_from_dict(dct["subprocesses"], workflow)
        workflow.bpmn_events = self.registry.restore(dct.pop("bpmn_events", []))
        return workflow


def _make_serializer() -> BpmnWorkflowSerializer:
    config = dict(SPIFF_CONFIG)
    config[BpmnWorkflow] = LeanWorkflowConverter
    config[BpmnSubWorkflow] = LeanSubWorkflowConverter
    config[Task] = LeanTaskConverter
    return BpmnWorkflowSerializer(BpmnWorkflowSerializer.configure(config))


serializer = _make_serializer()
# A second registry permanently in SpiffWorkflow's "encoder mode" (values are converted by the JSON
# encoder), so that a save never flips a flag that another thread's spec serialisation reads.
_dump_serializer = _make_serializer()
_dump_serializer.registry._encoder_mode = True
_dump_encoder = _dump_serializer._encoder_cls(separators=(",", ":"), ensure_ascii=False)
_dump_encoder_ascii = _dump_serializer._encoder_cls(separators=(",", ":"))
STATE_COMPRESSION_LEVEL = 1  # 3x faster than 6 for ~20% more bytes; states stay far below 40 KB


def spec_to_json(spec, subprocess_specs: dict) -> str:
    """Serialise a process spec and its embedded sub-process specs (once per version)."""
    return json.dumps({
        "spec": serializer.to_dict(spec),
        "subprocess_specs": {name: serializer.to_dict(s) for name, s in subprocess_specs.items()},
    })


def spec_from_json(text: str):
    """Restore (spec, embedded subprocess specs) from spec_to_json output."""
    dct = json.loads(text)
    spec = serializer.from_dict(dct["spec"])
    subs = {name: serializer.from_dict(s) for name, s in dct["subprocess_specs"].items()}
    return spec, subs


def called_process_ids(spec, subprocess_specs: dict) -> list[str]:
    """Process ids called by call activities of the spec or its embedded sub-processes."""
    called = set()
    for one in [spec, *subprocess_specs.values()]:
        for task_spec in one.task_specs.values():
            if isinstance(task_spec, CallActivity):
                called.add(task_spec.spec)
    return sorted(called - set(subprocess_specs))


def embedded_subprocess_specs(spec, get_spec) -> dict:
    """The sub-process specs that belong to this process (not separately deployed call targets).

    `get_spec(name)` returns the parsed spec of an embedded sub-process (e.g. parser.get_spec).
    """
    result, queue = {}, [spec]
    while queue:
        one = queue.pop()
        for task_spec in one.task_specs.values():
            if isinstance(task_spec, SubWorkflowTask) and not isinstance(task_spec, CallActivity):
                name = task_spec.spec
                if name not in result:
                    result[name] = get_spec(name)
                    queue.append(result[name])
    return result


def new_workflow(spec, subprocess_specs: dict, script_engine) -> BpmnWorkflow:
    """A fresh workflow of a spec, with the restricted script engine attached."""
    return BpmnWorkflow(spec, subprocess_specs, script_engine=script_engine)


def dump_state(workflow: BpmnWorkflow) -> bytes:
    """The workflow's state without its spec, as compressed JSON."""
    dct = _dump_serializer.to_dict(workflow)
    try:
        data = _dump_encoder.encode(dct).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate in some text: keep it escaped
        data = _dump_encoder_ascii.encode(dct).encode("utf-8")
    return zlib.compress(data, STATE_COMPRESSION_LEVEL)


def load_state(state: bytes, spec, subprocess_specs: dict, script_engine) -> BpmnWorkflow:
    """Restore a workflow from dump_state output; the restricted script engine is re-attached."""
    text = zlib.decompress(state)
    dct = json.loads(text)
    dct["spec"] = spec
    dct["subprocess_specs"] = subprocess_specs
    # Values of types SpiffWorkflow converts (datetime, events...) carry a typename; when the state
    # has none besides the workflow's own structure, data is plain JSON and needs no restoring walk.
    typenames = set(_TYPENAME_RE.findall(text))
    _load_flags.typed = not {name.decode() for name in typenames} <= _STRUCTURAL_TYPENAMES
    try:
        workflow = serializer.registry.convert_from_dict[
            serializer.registry.typenames[BpmnWorkflow]](dct)
    finally:
        _load_flags.typed = True
    # The script engine is not serialised: a restored workflow would get the unrestricted default.
    workflow.script_engine = script_engine
    return workflow


def ready_user_tasks(workflow: BpmnWorkflow) -> list:
    """READY manual (user) tasks, sub-processes included."""
    return workflow.get_tasks(state=TaskState.READY, manual=True)


def user_task_properties(task) -> dict[str, str]:
    """The spiffworkflow:properties of a task spec as a dict."""
    ext = getattr(task.task_spec, "extensions", None) or {}
    return dict(ext.get("properties", {}) or {})


def _parse_when(value) -> Optional[datetime]:
    if value is None:
        return None
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, dict):  # cycle timers keep {'next': iso, ...}
        return _parse_when(value.get("next"))
    else:
        text = str(value)
        try:
            when = TimerEventDefinition.parse_time_or_duration(text)
        except Exception:
            return None
        if not isinstance(when, datetime):
            return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)


def next_timer_at(workflow: BpmnWorkflow) -> Optional[datetime]:
    """The earliest due time of every waiting timer (boundary, intermediate, gateway, sub-process)."""
    times = []
    for task in workflow.get_tasks(state=TaskState.WAITING):
        definition = getattr(task.task_spec, "event_definition", None)
        if definition is None:
            continue
        candidates = [definition]
        candidates += list(getattr(definition, "event_definitions", []) or [])
        if any(isinstance(d, TimerEventDefinition) for d in candidates):
            when = _parse_when(task._get_internal_data("event_value"))
            if when is not None:
                times.append(when)
    return min(times) if times else None


def waiting_messages(workflow: BpmnWorkflow) -> list[tuple[str, dict]]:
    """(message name, correlations) for every message the workflow waits for."""
    result = []
    for pending in workflow.waiting_events():
        if pending.event_type.endswith("MessageEventDefinition"):
            correlations = getattr(pending, "correlations", None) or {}
            if not isinstance(correlations, dict):
                correlations = {}
            result.append((pending.name, json.loads(json.dumps(correlations, default=str))))
    return result


def correlations_match(event_correlations: dict, waiting: dict) -> bool:
    """SpiffWorkflow's rule: no correlation on either side matches; else any shared key equal."""
    if not event_correlations or not waiting:
        return True
    return any(event_correlations.get(key) == waiting.get(key) for key in event_correlations)


def _ready_engine_tasks(workflow) -> list:
    # SpiffWorkflow walks the whole task tree from the root to find READY tasks, once per step:
    # a loop of n iterations then costs O(n^2) tree walks. Scanning the flat task map is the same
    # search without the walk (creation order stands in for depth-first order).
    return [t for t in live_tasks(workflow) if t.state == TaskState.READY and not t.task_spec.manual]


def do_engine_steps(workflow: BpmnWorkflow) -> None:
    """BpmnWorkflow.do_engine_steps with a linear search for ready tasks (same semantics)."""

    def update(one) -> int:
        count = 0
        for task in _ready_engine_tasks(one):
            if task.state == TaskState.READY:  # an earlier task of this pass may have changed it
                task.run()
                count += 1
        return count

    while True:
        active = workflow.get_active_subprocesses()
        for subprocess in sorted(active, key=lambda sp: sp.depth, reverse=True):
            count = None
            while count is None or count > 0:
                count = update(subprocess)
            if subprocess.parent_task_id is not None:
                task = workflow.get_task_from_id(subprocess.parent_task_id)
                task.task_spec._update(task)
        count = update(workflow)
        # SpiffWorkflow compares the number of active sub-processes: when one ends and a call
        # activity starts another in the same pass, the new one is never run. Compare identities.
        known = {id(sp) for sp in active}
        if not (count > 0 or any(id(sp) not in known for sp in workflow.get_active_subprocesses())):
            break
    workflow.refresh_timers()
