"""A pure wrapper around SpiffWorkflow: specs, (de)serialisation without the spec, ready tasks, timers.

No database and no I/O here; engine.facade owns transactions.
"""
from __future__ import annotations

import copy
import functools
import json
import operator
import re
import threading
import zlib
from datetime import datetime, timezone
from typing import Optional
from uuid import UUID, SafeUUID

from SpiffWorkflow import TaskState
from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.serializer.default.workflow import (BpmnSubWorkflowConverter, BpmnWorkflowConverter,
                                                             TaskConverter)
from SpiffWorkflow.bpmn.specs.mixins.events.event_types import CatchingEvent
from SpiffWorkflow.bpmn.util.subworkflow import BpmnSubWorkflow
from SpiffWorkflow.task import Task
from SpiffWorkflow.bpmn.serializer.workflow import VERSION as SPIFF_SERIALIZER_VERSION
from SpiffWorkflow.bpmn.specs.event_definitions.message import MessageEventDefinition
from SpiffWorkflow.bpmn.specs.event_definitions.timer import TimerEventDefinition
from SpiffWorkflow.bpmn.specs.mixins.subworkflow_task import CallActivity, SubWorkflowTask
from SpiffWorkflow.spiff.parser.process import SpiffBpmnParser
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
        # A task's state is read hundreds of times per action (every scan for READY or WAITING
        # tasks): read straight from the task's dict in C (operator.attrgetter) rather than through
        # SpiffWorkflow's `state` property and a second Python-level one.
        Task._state = property(_STATE_OF, _set_task_state)
        Task.state = property(_STATE_OF, Task.state.fset, doc=Task.state.__doc__)
        original_remove = Workflow._remove_task

        def _remove_task(self, task_id):
            _live(self).pop(task_id, None)
            _astir(self).pop(task_id, None)
            original_remove(self, task_id)

        Workflow._remove_task = _remove_task
        # is_completed looked for an unfinished task by walking the tree from its root
        Workflow.is_completed = _is_completed
        Workflow.update_waiting_tasks = _update_waiting_tasks
        # SpiffWorkflow 3.2 looks for a data object in `self.process_parser.parent` forever instead of
        # walking up (`current.parent`): a reference two levels up, or to a missing data object inside
        # a sub-process, hangs the parser — an uploaded file could hang validation.
        from SpiffWorkflow.bpmn.parser.node_parser import NodeParser
        NodeParser._resolve_data_object_ref = _resolve_data_object_ref
        # A parallel join inside a loop counted the join tasks left by an earlier pass as tokens:
        # in the second round it fired as soon as one branch finished (a list published twice,
        # once before the second agency answered).
        from SpiffWorkflow.bpmn.specs.mixins.parallel_gateway import ParallelGateway
        ParallelGateway._check_threshold_unstructured = _parallel_join_ready
        # Triggering an event sub-process connected it to the START of the (shared) spec: every
        # instance created afterwards started that sub-process at once, uncorrelated, so one
        # enterprise's listing could land in another enterprise's audit.
        from SpiffWorkflow.bpmn.specs.control import BpmnStartTask
        BpmnStartTask.trigger_wf = _trigger_event_subprocess
        # Merging data (a join, a sub-process's result, a multi-instance child) changed dicts and
        # lists nested in the receiving task's data in place; those are shared with the tasks
        # before it, so the data that finished tasks recorded changed afterwards. Merge into copies.
        from SpiffWorkflow.util.deep_merge import DeepMerge
        DeepMerge.merge = staticmethod(_merge_into_copies)
        DeepMerge.merge_array = staticmethod(_merge_array_into_copies)
        # SpiffWorkflow builds its log records' extras eagerly, and while its loggers' level is
        # unset (0, below INFO) a workflow's extras list every task id: a walk of the whole tree on
        # every state change. Unless configured otherwise, its loggers report warnings and errors
        # (its INFO records, one per task state change, are not what an operator reads).
        import logging
        for name in ("spiff.workflow", "spiff.task"):
            if logging.getLogger(name).level == logging.NOTSET:
                logging.getLogger(name).setLevel(logging.WARNING)
        # ...and a state change builds its log record's extras even when nothing is logged: it
        # does so only when the record would be written.
        Task._set_state = _make_quiet_set_state(Task._set_state, logging.getLogger("spiff.task"))
        from . import clock
        clock.install()
        _installed = True


def _own(value):
    return _shallow_copy(value) if isinstance(value, (dict, list, set)) else value


def _shallow_copy(value):
    return value.copy() if type(value) in (dict, list, set) else copy.copy(value)


def _merge_into_copies(a, b, path=None):
    """DeepMerge.merge(a, b) (b merged into a, a returned), never changing a container nested in a
    in place: a nested dict or list that receives values is replaced by a merged copy."""
    for key in b:
        new = b[key]
        if key in a:
            old = a[key]
            if old == new:
                continue
            if isinstance(old, dict) and isinstance(new, dict):
                a[key] = _merge_into_copies(_shallow_copy(old), new)
            elif isinstance(old, list) and isinstance(new, list):
                merged = _shallow_copy(old)
                _merge_array_into_copies(merged, new)
                a[key] = merged
            else:
                a[key] = _own(new)
        else:
            a[key] = _own(new)
    return a


def _merge_array_into_copies(a, b, path=None):
    """DeepMerge.merge_array(a, b) (a changed in place, as there), merging nested dicts into copies."""
    seen_hashable, seen_unhashable = set(), []
    for item in a:
        try:
            seen_hashable.add(item)
        except TypeError:
            seen_unhashable.append(item)
    for index, value in enumerate(b):
        if isinstance(value, dict):
            if len(a) > index:
                old = a[index]
                a[index] = _merge_into_copies(_shallow_copy(old) if isinstance(old, dict) else old, value)
            else:
                a.append(value)
        else:
            try:
                if value in seen_hashable:
                    continue
                seen_hashable.add(value)
            except TypeError:
                if value in seen_unhashable:
                    continue
                seen_unhashable.append(value)
            a.append(value)
    del a[len(b):]


def _make_quiet_set_state(original, logger):
    import logging
    import time

    def _set_state(self, value: int) -> None:
        if logger.isEnabledFor(logging.INFO):
            original(self, value)  # SpiffWorkflow's own, with its log records
        elif value != self._state:
            self.last_state_change = time.time()
            self._state = value

    return _set_state


def tune_gc() -> None:
    """Garbage-collector settings for the long-running engine processes (web workers, timer worker).

    A workflow is thousands of small objects that all survive; with CPython's default thresholds
    (700 allocations) loading one runs several collections that walk every object of the process
    again (a quarter of a load's time, measured). Reference counting frees the engine's garbage;
    the collector is only needed for cycles, so it can run less often. Objects alive at start-up
    (modules, specs) are moved out of its way.
    """
    import gc
    gc.set_threshold(20_000, 50, 100)
    gc.freeze()


def _ancestor_ids(task) -> list:
    ids, parent = [], task.parent
    while parent is not None:  # iterative: a long loop makes the tree deeper than the recursion limit
        ids.append(parent.id)
        parent = parent.parent
    return ids


def _trigger_event_subprocess(self, my_task, spec_name):
    """Start an event sub-process for this workflow only, leaving the shared spec's start alone."""
    spec = self._wf_spec.task_specs.get(spec_name)
    connect_event_subprocess_ends(self._wf_spec)
    child = my_task._add_child(spec, TaskState.FUTURE)
    child.triggered = True  # never pruned by the start task's own children
    child.task_spec._update(child)
    return child.id


def connect_event_subprocess_ends(process_spec) -> None:
    """Let each event sub-process lead to End (what SpiffWorkflow adds on first trigger), up front,
    so every instance of a version sees the same spec."""
    start = getattr(process_spec, "start", None)
    end = getattr(process_spec, "end", None)
    for name in getattr(start, "trigger_specs", []) or []:
        spec = process_spec.task_specs.get(name)
        if spec is None:
            continue
        if end is not None and end not in spec.outputs:
            spec.connect(end)
        if start not in spec.inputs:
            # an input (SpiffWorkflow checks every ready task has one), not an output of the
            # start: connecting both ways would start the sub-process with every instance
            spec._connect_notify(start)


def _parallel_join_ready(self, my_task) -> bool:
    """SpiffWorkflow's parallel-join rule, counting only the tokens of the current pass of a loop.

    Join tasks of one pass cancel each other as branches arrive, so a CANCELLED join can still be a
    token of this pass; but one left by an earlier pass through a loop is not. A task belongs to
    this pass when it descends from the join that fired last (the nearest completed ancestor of
    the same spec), or when there is none.
    """
    waiting_inputs = set(self.inputs)
    my_ancestors = _ancestor_ids(my_task)
    ancestor_set = set(my_ancestors)
    previous_pass = None
    for ancestor_id in my_ancestors:
        ancestor = my_task.workflow.tasks.get(ancestor_id)
        if ancestor is not None and ancestor.task_spec == self and ancestor.state == TaskState.COMPLETED:
            previous_pass = ancestor_id
            break

    def remove_ancestor(task):
        while task is not None:
            if task.task_spec in waiting_inputs:
                waiting_inputs.remove(task.task_spec)
                return
            task = task.parent

    # every task of this join spec in the workflow (a scan of the flat task map: a walk of the
    # tree, as get_tasks(spec_name=...) does, costs far more and gives the same set)
    name = self.name
    for task in [t for t in my_task.workflow.tasks.values() if t.task_spec.name == name]:
        task_ancestors = _ancestor_ids(task)
        if my_task.id in task_ancestors:
            remove_ancestor(task)
        elif task.id in ancestor_set:
            continue
        elif previous_pass is not None and previous_pass not in task_ancestors:
            continue  # a token of an earlier pass through the loop
        elif task.parent.state == TaskState.COMPLETED and task.parent.task_spec in waiting_inputs:
            waiting_inputs.remove(task.parent.task_spec)
    return len(waiting_inputs) == 0


def _resolve_data_object_ref(self, ref):
    """The data object a reference names, looked up in this process and then its ancestors."""
    if ref is None:
        return None
    current = self.process_parser
    while current is not None:
        data_obj = current.spec.data_objects.get(ref.get("dataObjectRef"))
        if data_obj is not None:
            return data_obj
        current = current.parent
    return None


# Every workflow keeps an index of its unfinished tasks, so that finding READY and WAITING tasks
# costs the number of live tasks, not the size of the tree (which grows with every loop iteration);
# and, within it, one of its READY and WAITING tasks: the searches for those (several per action)
# then skip the predicted tasks (FUTURE, LIKELY, MAYBE), most of a workflow's unfinished ones.
_ASTIR = TaskState.READY | TaskState.WAITING


def _live(workflow) -> dict:
    live = workflow.__dict__.get("_cleanaudit_live")
    if live is None:
        live = workflow.__dict__["_cleanaudit_live"] = {}
    return live


def _astir(workflow) -> dict:
    """The workflow's READY and WAITING tasks (id -> task), kept with the live-task index."""
    astir = workflow.__dict__.get("_cleanaudit_astir")
    if astir is None:
        astir = workflow.__dict__["_cleanaudit_astir"] = {}
    return astir


# A task's state, kept in its dict (read in C; set through _set_task_state, which keeps the index)
_STATE_OF = operator.attrgetter("_cleanaudit_state")


def _set_task_state(task, value: int) -> None:
    task.__dict__["_cleanaudit_state"] = value
    workflow = task.workflow
    if value & TaskState.FINISHED_MASK:
        _live(workflow).pop(task.id, None)
    else:
        _live(workflow)[task.id] = task
    if value & _ASTIR:
        _astir(workflow)[task.id] = task
    else:
        _astir(workflow).pop(task.id, None)


def _is_completed(self) -> bool:
    """Workflow.is_completed: no unfinished task left (the live-task index, not a tree walk)."""
    if not self.completed and not _live(self):
        self.completed = True
    return self.completed


def astir_tasks(workflow) -> list:
    """The workflow's READY and WAITING tasks (its own, not its sub-processes')."""
    return list(_astir(workflow).values())


def _in_creation_order(workflow, tasks: list) -> list:
    """Tasks of one workflow in the order they were created (the order of workflow.tasks).

    The live index keeps a task at the end when it becomes unfinished again (a retried task); a
    restored workflow lists it where it was created. Ordering by creation makes both the same.
    """
    if len(tasks) < 2:
        return tasks
    # The positions are kept while the number of tasks stays the same. Tasks are only appended
    # (and some removed): one created since is missing and sorts after the others, in the order
    # the live index has it, which for a new task is its creation order.
    all_tasks = workflow.tasks
    kept = workflow.__dict__.get("_cleanaudit_positions")
    if kept is None or kept[0] is not all_tasks or kept[1] != len(all_tasks):
        kept = (all_tasks, len(all_tasks), {task_id: index for index, task_id in enumerate(all_tasks)})
        workflow.__dict__["_cleanaudit_positions"] = kept
    position = kept[2]
    end = len(position)
    return sorted(tasks, key=lambda t: position.get(t.id, end))


def _all_workflows(workflow) -> list:
    return [workflow, *getattr(workflow, "subprocesses", {}).values()]


def _update_waiting_tasks(self) -> None:
    """Update all WAITING tasks, found in the ready/waiting index rather than by walking the tree."""
    for task in _in_creation_order(self, [t for t in astir_tasks(self) if t.state == TaskState.WAITING]):
        if task.state == TaskState.WAITING:
            task.task_spec._update(task)


# ---------------------------------------------------------------------- (de)serialisation
# States are written in engine/state.py's format (a line per task, saved incrementally). The lean
# converters below read states of the earlier format (SpiffWorkflow's own dictionary format,
# serializer 1.5, without the spec) without SpiffWorkflow's generic per-value dispatch: ids are
# parsed once, plain data is not walked value by value, inherited data is copied the way
# DeepMerge.merge({}, parent) does. The serializers also serialise specs (once per version).
_UUIDS: dict = {}
_UUID_TEXT: dict = {}
# What instance.serializer_version records for states written now (engine/state.py's format 2,
# carrying what SpiffWorkflow's serializer of this version carries).
SERIALIZER_VERSION = f"ca2-spiff{SPIFF_SERIALIZER_VERSION}"
_MUTABLE = (dict, list, set)
_STRUCTURAL_TYPENAMES = frozenset({"Task", "BpmnWorkflow", "BpmnSubWorkflow"})
_TYPENAME_RE = re.compile(rb'"typename"\s*:\s*"([^"\\]*)"')
_load_flags = threading.local()


class _ReadId(UUID):
    """A task id read from a state: a UUID that keeps the text it was read from, which the next
    save writes again without printing the UUID. (Equal to, and hashed as, the plain UUID.)"""

    __slots__ = ("text",)

    def __str__(self) -> str:
        try:
            return self.text
        except AttributeError:  # (a copy: copies carry the number only)
            return UUID.__str__(self)

    def __repr__(self) -> str:
        return f"UUID('{self}')"


def _uuid(text: str) -> UUID:
    """UUID(text), parsed once per process (ids repeat in every load of an instance)."""
    value = _UUIDS.get(text)
    if value is None:
        if len(_UUIDS) > 20_000:  # recent instances only: UUID objects are tracked by the GC
            _UUIDS.clear()
        if len(text) == 36 and text[8] == text[13] == text[18] == text[23] == "-":
            # what UUID(text) builds, without its general parsing (ids are always this form)
            value = _new_uuid(_ReadId)
            _set_attr(value, "int", int(text.replace("-", ""), 16))
            _set_attr(value, "is_safe", _UNKNOWN_SAFETY)
            # (ids are written lower-case; str.islower costs more than the rest together)
            _set_attr(value, "text", text if text.lower() == text else str(value))
        else:
            value = UUID(text)
        _UUIDS[text] = value
    return value


_new_uuid = UUID.__new__
_set_attr = object.__setattr__
_UNKNOWN_SAFETY = SafeUUID.unknown  # (an enum member: looked up once, not on every id)


def _text(value: UUID) -> str:
    """str(uuid): kept by ids read from a state, printed once per process for new ones (keyed by
    the integer: UUID.__hash__ is Python code)."""
    text = getattr(value, "text", None)
    if text is not None:
        return text
    key = value.int
    text = _UUID_TEXT.get(key)
    if text is None:
        if len(_UUID_TEXT) > 200_000:  # int -> str: not tracked by the GC, small
            _UUID_TEXT.clear()
        text = _UUID_TEXT[key] = str(value)
    return text


def _inherited(parent_data: dict) -> dict:
    """DeepMerge.merge({}, parent_data): a copy whose mutable values are shallow copies."""
    return {k: (v.copy() if type(v) in (dict, list) else copy.copy(v)) if isinstance(v, _MUTABLE) else v
            for k, v in parent_data.items()}


class LeanTaskConverter(TaskConverter):
    """SpiffWorkflow's TaskConverter (data stored as a delta to the parent), for reading, with less overhead."""

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
    def mapping_from_dict(self, mapping, key_class=None, **kwargs):
        restore = self.registry.restore
        if key_class is UUID:
            return {_uuid(k): restore(v, **kwargs) for k, v in mapping.items()}
        return super().mapping_from_dict(mapping, key_class, **kwargs)


class LeanSubWorkflowConverter(_LeanMappings, BpmnSubWorkflowConverter):
    """SpiffWorkflow's sub-workflow converter with the lean id handling."""


class DocumentOrderParser(SpiffBpmnParser):
    """SpiffWorkflow's parser, with outgoing flows in document order rather than by drawing position.

    SpiffWorkflow sorts a node's outgoing flows by the y coordinate of their targets, so an exclusive
    gateway would test its conditions in an order that changes when someone drags a shape. The
    order must come from the process, not from its picture.
    """

    def _add_diagram_indexes(self, bpmn):
        super()._add_diagram_indexes(bpmn)
        self.document_positions[self._document_key(bpmn)] = {}


class LeanWorkflowConverter(_LeanMappings, BpmnWorkflowConverter):
    """Restores a workflow stored without its spec (earlier format) with the given specs."""

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
for _registry in (serializer.registry, _dump_serializer.registry):  # (an id in data is stored as a UUID)
    _registry.typenames[_ReadId] = _registry.typenames[UUID]


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
    """The workflow's state without its spec (engine/state.py: only changed tasks are encoded again)."""
    return _codec.dump(workflow)


def load_state(state: bytes, spec, subprocess_specs: dict, script_engine) -> BpmnWorkflow:
    """Restore a workflow from dump_state output; the restricted script engine is re-attached.

    States in the earlier format (zlib-compressed SpiffWorkflow dictionaries) are read as well.
    """
    from . import state as state_format
    if state_format.is_current(state):
        frames = state_format.frames(state)
        workflow = _codec.load(b"".join(text for _, text in frames), spec, subprocess_specs, frames=frames)
    else:
        workflow = _load_spiff_dict_state(state, spec, subprocess_specs)
    # The script engine is not serialised: a restored workflow would get the unrestricted default.
    workflow.script_engine = script_engine
    mark_loaded(workflow)
    return workflow


def state_as_spiff_dict(state: bytes) -> dict:
    """A stored state (either format) in SpiffWorkflow's dictionary format, without the spec."""
    from . import state as state_format
    if state_format.is_current(state):
        return state_format.to_spiff_dict(state_format.decompress(state), _codec)
    return json.loads(zlib.decompress(state))


def _load_spiff_dict_state(state: bytes, spec, subprocess_specs: dict) -> BpmnWorkflow:
    text = zlib.decompress(state)
    dct = json.loads(text)
    dct["spec"] = spec
    dct["subprocess_specs"] = subprocess_specs
    # Values of types SpiffWorkflow converts (datetime, events...) carry a typename; when the state
    # has none besides the workflow's own structure, data is plain JSON and needs no restoring walk.
    typenames = set(_TYPENAME_RE.findall(text))
    _load_flags.typed = not {name.decode() for name in typenames} <= _STRUCTURAL_TYPENAMES
    try:
        return serializer.registry.convert_from_dict[serializer.registry.typenames[BpmnWorkflow]](dct)
    finally:
        _load_flags.typed = True


def _make_codec():
    from .state import Codec
    return Codec(_dump_serializer.registry, serializer.registry, _dump_serializer._encoder_cls)


_codec = _make_codec()


# ---------------------------------------------------------------------- workflows kept in memory
class WorkflowCache:
    """Workflows of recently saved instances, kept so that the next action needs no deserialising.

    An entry is (lock version, workflow) and is handed out once (`take` removes it): one action
    owns a workflow at a time. The caller puts a workflow back only after its transaction
    committed, with the lock version that transaction wrote; a different version in the database
    (another process saved meanwhile) means the entry is stale and the state is loaded again.
    """

    def __init__(self, size: int = 128):
        from collections import OrderedDict
        self.size = size
        self._entries: "OrderedDict[int, tuple]" = OrderedDict()
        self._lock = threading.Lock()

    def take(self, instance_id: int, version: int, spec):
        with self._lock:
            entry = self._entries.pop(instance_id, None)
        if entry is None:
            return None
        if entry[0] != version or entry[1].spec is not spec:
            dismantle(entry[1])  # stale: nobody else has it
            return None
        workflow = entry[1]
        mark_loaded(workflow)
        return workflow

    def row_of(self, instance_id: int):
        """The instance row (ORM object, detached) kept with the workflow, if any; not removed."""
        entry = self._entries.get(instance_id)
        return entry[2] if entry is not None else None

    def put(self, instance_id: int, version: int, workflow, row=None) -> None:
        if self.size <= 0:
            return
        dropped = []
        with self._lock:
            replaced = self._entries.get(instance_id)
            if replaced is not None and replaced[1] is not workflow:
                dropped.append(replaced[1])
            self._entries[instance_id] = (version, workflow, row)
            self._entries.move_to_end(instance_id)
            while len(self._entries) > self.size:
                dropped.append(self._entries.popitem(last=False)[1][1])
        for old in dropped:
            dismantle(old)

    def discard(self, instance_id: int) -> None:
        with self._lock:
            self._entries.pop(instance_id, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def dismantle(workflow) -> None:
    """Take apart a workflow nobody uses any more (one the cache lets go of).

    A workflow is thousands of objects in reference cycles (tasks and workflow point at each
    other): dropped as it is, only the garbage collector frees it, and a timer sweep through
    thousands of instances then spent a quarter of its time in collections. Emptied, it is freed
    at once by reference counting.
    """
    for one in _all_workflows(workflow):
        for task in list(getattr(one, "tasks", {}).values()):
            task.__dict__.clear()
        one.__dict__.clear()


def mark_loaded(workflow) -> None:
    """A workflow handed to an action: whether it may be kept is decided again by its next save."""
    workflow.__dict__.pop("_cleanaudit_reusable", None)


def reusable(workflow) -> bool:
    """True when the workflow equals what loading its saved state would give, so it may be kept.

    Loading turns tuples into lists, non-text keys into text, sets into lists, and restores
    datetimes with a fixed offset: a workflow whose data holds such values is not kept. The save
    (engine/state.py) decides it, decoding again every line it encoded; a workflow not saved since
    it was handed out is not kept.
    """
    return bool(workflow.__dict__.get("_cleanaudit_reusable", False))


def ready_user_tasks(workflow: BpmnWorkflow) -> list:
    """READY manual (user) tasks, sub-processes included (from the ready/waiting index, no tree walk)."""
    ready = []
    for one in _all_workflows(workflow):
        ready += _in_creation_order(one, [t for t in astir_tasks(one)
                                          if t.state == TaskState.READY and t.task_spec.manual])
    return ready


def waiting_tasks(workflow: BpmnWorkflow) -> list:
    """WAITING tasks, sub-processes included (from the ready/waiting index, no tree walk)."""
    waiting = []
    for one in _all_workflows(workflow):
        waiting += _in_creation_order(one, [t for t in astir_tasks(one) if t.state == TaskState.WAITING])
    return waiting


def user_task_properties(task) -> dict[str, str]:
    """The spiffworkflow:properties of a task spec as a dict."""
    ext = getattr(task.task_spec, "extensions", None) or {}
    return dict(ext.get("properties", {}) or {})


def _parse_when(value) -> Optional[datetime]:
    if type(value) is str:
        return _parse_when_text(value)
    return _parse_when_value(value)


@functools.lru_cache(maxsize=4096)
def _parse_when_text(value: str) -> Optional[datetime]:
    return _parse_when_value(value)


def _parse_when_value(value) -> Optional[datetime]:
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
    # (the earliest of them: their order does not matter, unlike waiting_tasks')
    waiting = [task for one in _all_workflows(workflow) for task in _astir(one).values()
               if task.state == TaskState.WAITING]
    for task in waiting:
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
    """(message name, correlations) for every message the workflow waits for.

    Besides waiting catch events, this includes the message start events of event sub-processes
    of the running (sub)workflows: SpiffWorkflow creates their tasks only when the message arrives.
    """
    result = []
    # workflow.waiting_events(), details made only for the message events (it made them for every
    # waiting event, timers included)
    for task in workflow.event_manager.tasks.values():
        definition = task.task_spec.event_definition
        if type(definition).__name__.endswith("MessageEventDefinition"):  # (details' event_type)
            pending = definition.details(task)
            correlations = getattr(pending, "correlations", None) or {}
            if not isinstance(correlations, dict):
                correlations = {}
            result.append((pending.name, _json_plain(correlations)))
    running = [workflow] + [sp for sp in workflow.subprocesses.values() if not sp.completed]
    for one in running:
        if one.completed:
            continue
        for name in getattr(one.spec.start, "trigger_specs", []):
            sub_spec = workflow.subprocess_specs.get(name)
            for start in getattr(sub_spec, "bpmn_start_events", []) if sub_spec is not None else []:
                definition = getattr(start, "event_definition", None)
                if isinstance(definition, MessageEventDefinition):
                    result.append((definition.name, _json_plain(one.correlations or workflow.correlations or {})))
    return result


def _json_plain(value):
    copied = _plain_copy(value, 3)
    return copied if copied is not _NOT_PLAIN else json.loads(json.dumps(value, default=str))


_NOT_PLAIN = object()
_PLAIN_SCALARS = (str, int, bool, type(None))


def _plain_copy(value, depth: int):
    """A copy of value if it is made of dicts with text keys and text, integers, booleans and None
    (what a JSON round trip gives back unchanged), else _NOT_PLAIN. Correlations are such dicts."""
    if type(value) in _PLAIN_SCALARS:
        return value
    if type(value) is dict and depth:
        out = {}
        for key, item in value.items():
            if type(key) is not str:
                return _NOT_PLAIN
            copied = _plain_copy(item, depth - 1)
            if copied is _NOT_PLAIN:
                return _NOT_PLAIN
            out[key] = copied
        return out
    return _NOT_PLAIN


def correlations_match(event_correlations: dict, waiting: dict) -> bool:
    """SpiffWorkflow's rule: no correlation on either side matches; else any shared key equal."""
    if not event_correlations or not waiting:
        return True
    return any(event_correlations.get(key) == waiting.get(key) for key in event_correlations)


def _ready_engine_tasks(workflow) -> list:
    # SpiffWorkflow walks the whole task tree from the root to find READY tasks, once per step:
    # a loop of n iterations then costs O(n^2) tree walks. Scanning the flat task map is the same
    # search without the walk (creation order stands in for depth-first order).
    return _in_creation_order(workflow, [t for t in astir_tasks(workflow)
                                         if t.state == TaskState.READY and not t.task_spec.manual])


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


def catch_at_start(workflow: BpmnWorkflow, event) -> bool:
    """Deliver a message to the process's own message start event only.

    `send_event` offers it to every waiting catcher, so the message that starts an instance would
    also trigger the instance's event sub-processes that listen for the same message.
    """
    from SpiffWorkflow.bpmn.specs.mixins.events.start_event import StartEvent
    for task in workflow.get_tasks(state=TaskState.WAITING):
        spec = task.task_spec
        if task.workflow is workflow and isinstance(spec, StartEvent) and spec.catches(task, event):
            spec.catch(task, event)
            spec._update(task)
            return True
    return False
