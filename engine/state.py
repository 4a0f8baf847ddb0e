"""Stored instance state: one line per task, re-encoded only where an action changed something.

Completing a task changes a handful of the ~100 tasks of an instance; encoding all of them again
on every save was most of the cost of an action. Here every task keeps the bytes of its last
encoding, and a save re-encodes only the tasks that changed.

Format "cleanaudit-state/2" (zstd-compressed UTF-8 text, lines separated by "\\n"):

    line 0    header: {"format": 2, "digits": d, "wf": {...}, "subs": [{...}, ...], "tail": k, "events": [...]}
              d is 1 when some number in the text may have 19 digits or more (which orjson would
              read as a float: such a text is read by json.loads), else 0; headers written before
              this key existed lack it, and their text is looked through on load
              each workflow entry: n (its number of task lines), root, data, correlations,
              last_task, success, completed; a sub-process also id (its task) and spec
    then      for the top workflow and each sub-process in header order, n task lines:
              [id, parent, children, last_state_change, state, task_spec, triggered, internal_data]
              TAB [data, null]              the task's whole data, or
              TAB [updates, deletions]      data = the parent's data + updates - deletions

The last k sub-processes of the header are finished ones: each is a zstd frame of its own ("\\n"
and its lines), written once and copied by later saves; the frames joined give the text. Every
line is exactly what json.dumps(value, separators=(",", ":"), ensure_ascii=False) writes.

This carries exactly what SpiffWorkflow's own dictionary format (serializer 1.5, spec left out)
carries; `to_spiff_dict` turns a state into that format.

Why a task's delta is computed against what is *stored* for its parent: SpiffWorkflow copies
only the top level of a parent's data into a child, so nested lists and dicts are shared along
the tree, and a change to one (a script, a join merging branches) also changes finished
ancestors in memory, whose stored lines are not rewritten. A delta taken against the parent in
memory would then drop that change when the state is loaded. So when the parent was not
re-encoded in the same save, the base is the parent's stored data, rebuilt from its own line
(and cached).

States written before this format (zlib-compressed JSON in SpiffWorkflow's dictionary format)
are still read.
"""
from __future__ import annotations

import json
import math
import os
import threading
import zlib
from itertools import compress as _compress
from operator import is_not as _is_not
from typing import Optional
from uuid import UUID

import orjson
import zstandard
from SpiffWorkflow import TaskState
from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.bpmn.specs.mixins.events.event_types import CatchingEvent
from SpiffWorkflow.bpmn.specs.mixins.subworkflow_task import SubWorkflowTask
from SpiffWorkflow.bpmn.util.subworkflow import BpmnSubWorkflow
from SpiffWorkflow.task import Task

FORMAT = 2
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZSTD_LEVEL = -1  # the part saved every time: a fast level (half the time of level 1, ~20% larger)
ZSTD_TAIL_LEVEL = 1  # a finished sub-process's frame, compressed once: 20% smaller than at -1
# Set to 1 (the tests do) to check every save against a full re-encoding of the workflow.
CHECK_ENV = "CLEANAUDIT_STATE_CHECK"

_ENTRY = "_cleanaudit_line"  # on a task: its _Line
_FINISHED_BLOCK = "_cleanaudit_finished_block"  # on a finished sub-process: its lines and header
_HEADER = "_cleanaudit_header"  # on a workflow: its header entry as last saved (see _header_entry)
# On a (top) workflow: True once any line of its state may have had 19 digits in a row (see dump)
_LONG_DIGITS = "_cleanaudit_long_digits"
# How a state's text starts when no number in it has 19 digits or more: its load need not look
_SHORT_DIGITS_START = b'{"format":%d,"digits":0,' % FORMAT
_FINISHED = TaskState.FINISHED_MASK
_WAITING = TaskState.WAITING
# Tasks in these states change data and internal data without changing state (a multi-instance
# task merging its children, a sub-process task, a user task given its form data): they are
# encoded again at every save. A WAITING task (a timer, a join, a catch event) changes its data
# when its state changes; predicted tasks (MAYBE, LIKELY, FUTURE) likewise. (The tests check every
# save against a full encoding: CHECK_ENV.)
_ALWAYS = TaskState.READY | TaskState.STARTED
_MISSING = object()
_threads = threading.local()


# ---------------------------------------------------------------------- parsing
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_NUMBER = b"0" * 19  # (as _DIGITS_AS_ZERO writes a run of 19 digits)


def parse_json(text: bytes):
    """json.loads(text), by orjson wherever that gives the same value (it parses state text 2-3x
    faster; loads of instances are most of a timer sweep).

    orjson refuses some of what json.dumps writes and json.loads reads back (NaN, Infinity, lone
    surrogates); json.loads reads those. It would read an integer beyond 64 bits as a float, so a
    text with 19 digits in a row (maybe such an integer, maybe digits in a string) goes to
    json.loads too.
    """
    return _parse(text, has_long_digits(text))


def has_long_digits(text: bytes) -> bool:
    """Whether the text has 19 digits in a row (then it may hold an integer orjson reads as a float)."""
    return _LONG_NUMBER in text.translate(_DIGITS_AS_ZERO)


def _parse(text: bytes, long_digits: bool):
    """json.loads(text); by orjson unless the text has long digit runs (see parse_json)."""
    if long_digits:
        return json.loads(text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


class StateError(RuntimeError):
    """A state that cannot be read (or, in check mode, a save that would not load back exactly)."""


class _Line:
    """A task's last encoding: its bytes, what it was encoded from, and its stored data (lazily)."""

    __slots__ = ("line", "sig", "children", "offset", "parent_key", "stored", "whole")

    def __init__(self, line: str, sig: tuple, children: list, offset: int, parent_key: Optional[int],
                 stored: Optional[dict] = None, whole: bool = False):
        self.line = line              # the task's line (UTF-8 bytes, as stored)
        self.sig = sig                # (state, last_state_change, triggered) it was encoded with
        self.children = children      # its children's ids then (a copy)
        self.offset = offset          # where the data part ([data, null] or [updates, deletions]) starts (bytes)
        self.parent_key = parent_key  # its parent's id as an integer (hashed in C, unlike a UUID)
        self.stored = stored          # its data as a load would give it (built when a child needs it)
        self.whole = whole            # its data is stored whole ([data, null]), not over its parent's

    @property
    def payload(self) -> bytes:
        return self.line[self.offset:]


# ---------------------------------------------------------------------- compression
def _compressor():
    c = getattr(_threads, "c", None)
    if c is None:
        c = _threads.c = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return c


def _decompressor():
    d = getattr(_threads, "d", None)
    if d is None:
        d = _threads.d = zstandard.ZstdDecompressor()
    return d


def is_current(state: bytes) -> bool:
    return bytes(state[:4]) == ZSTD_MAGIC


def decompress(state: bytes) -> bytes:
    """The text of a stored state, either format."""
    if is_current(state):
        return b"".join(text for _, text in frames(state))
    return zlib.decompress(state)


def frames(state: bytes) -> list:
    """(compressed, text) of each zstd frame of a state, in order (their texts joined are its text)."""
    out = []
    rest = bytes(state)
    decompressor = _decompressor()
    while rest:
        reader = decompressor.decompressobj()
        text = reader.decompress(rest)
        left = reader.unused_data
        out.append((rest[:len(rest) - len(left)], text))
        rest = left
    return out


def compress(text: bytes) -> bytes:
    return _compressor().compress(text)


def compress_frames(texts: list) -> bytes:
    """A state from the texts of its frames (as frames() gives them), compressed as dump does."""
    return b"".join([compress(text) if index == 0 else _compress_tail(text[1:])
                     for index, text in enumerate(texts)])


def _compress_tail(block: bytes) -> bytes:
    c = getattr(_threads, "tail", None)
    if c is None:
        c = _threads.tail = zstandard.ZstdCompressor(level=ZSTD_TAIL_LEVEL)
    return c.compress(b"\n" + block)


# ---------------------------------------------------------------------- encoding
class Codec:
    """Encodes and restores workflows with a SpiffWorkflow converter registry (for typed values)."""

    def __init__(self, encode_registry, restore_registry, encoder_cls):
        # encode_registry is in SpiffWorkflow's "encoder mode": typed values are converted by the
        # JSON encoder (encoder_cls) as it meets them, not by a walk over every value first
        self.registry = encode_registry
        self.restore_registry = restore_registry
        text_encoder = encoder_cls(separators=(",", ":"), ensure_ascii=False)
        self._encode_text = text_encoder.encode
        self._encode_ascii = encoder_cls(separators=(",", ":")).encode
        make = getattr(json.encoder, "c_make_encoder", None)
        if make is not None:  # what JSONEncoder.encode builds on every call, built once
            one_shot = make({}, text_encoder.default, json.encoder.encode_basestring, None, ":", ",",
                            False, False, True)
            self._encode_text = lambda value: "".join(one_shot(value, 0))
        self.check = os.environ.get(CHECK_ENV) == "1"
        self._spec_texts: dict = {}  # task spec name -> its JSON text

    # What one dump has found so far, per thread (one Codec serves every thread of a process)
    @property
    def round_trip_ok(self) -> bool:
        """False once a line of the current dump did not come back equal from JSON."""
        return getattr(_threads, "round_trip_ok", True)

    @round_trip_ok.setter
    def round_trip_ok(self, value: bool) -> None:
        _threads.round_trip_ok = value

    @property
    def long_digits(self) -> bool:
        """True once a line encoded by the current dump has 19 digits in a row (see dump)."""
        return getattr(_threads, "long_digits", False)

    @long_digits.setter
    def long_digits(self, value: bool) -> None:
        _threads.long_digits = value

    # ---- values
    def encode(self, value) -> str:
        return self._encode_text(value)

    def restore(self, value, typed: bool):
        return self.restore_registry.restore(value) if typed else value

    # ---- dump
    def dump(self, workflow) -> bytes:
        """The state of a workflow as compressed bytes (tasks unchanged since the last save reuse their line).

        Lines are kept as the UTF-8 bytes they are stored as: encoding the whole text again on every
        save cost as much as compressing it (text in Chinese is slow to encode). A finished
        sub-process never changes again: its lines go last, each in a zstd frame of its own that
        is compressed once and then copied (the header's "tail" counts them).
        """
        parts: list[bytes] = [b""]
        header_wf = None
        subs: list[str] = []
        tail_subs: list[str] = []
        tail_frames: list[bytes] = []
        tail_blocks: list[bytes] = []
        order, tail_order = [], []  # the workflows in the order of their lines (check mode)
        self.round_trip_ok = True
        # whether some line may hold an integer orjson would misread (19 digits in a row): lines
        # kept from earlier saves were looked at when they were encoded (or loaded), so this is
        # known without reading the whole text again; a load of a text marked "digits":0 skips the look
        self.long_digits = bool(workflow.__dict__.get(_LONG_DIGITS))
        for one in _workflows(workflow):
            kept = one.__dict__.get(_FINISHED_BLOCK) if one is not workflow else None
            if kept is not None and kept[0] == (len(one.tasks), one.completed, one.last_task):
                # a finished sub-process does not change: its lines and header as saved last time
                if kept[3] is None:  # (kept by a load that had no frame for it)
                    kept = one.__dict__[_FINISHED_BLOCK] = kept[:3] + (_compress_tail(kept[1]),)
                tail_subs.append(kept[2])
                tail_frames.append(kept[3])
                tail_blocks.append(kept[1])
                tail_order.append(one)
                continue
            start = len(parts)
            count = self._dump_tasks(one, parts)
            entry_text, data_ok = self._header_entry(one, count, one is workflow)
            if not data_ok:
                self.round_trip_ok = False
            if one is workflow:
                header_wf = entry_text
            else:
                if one.completed and count and self.round_trip_ok:
                    block = b"\n".join(parts[start:])
                    del parts[start:]
                    frame = _compress_tail(block)
                    one.__dict__[_FINISHED_BLOCK] = ((count, True, one.last_task), block, entry_text, frame)
                    tail_subs.append(entry_text)
                    tail_frames.append(frame)
                    tail_blocks.append(block)
                    tail_order.append(one)
                    continue
                subs.append(entry_text)
            order.append(one)
        # the header, put together from its parts (a finished sub-process's part is kept encoded)
        header = "".join([',"wf":', header_wf, ',"subs":[', ",".join(subs + tail_subs), '],"tail":',
                          str(len(tail_subs)), ',"events":',
                          self.encode(self.registry.convert(workflow.bpmn_events)),
                          "}"]).encode("utf-8", "surrogatepass")
        long_digits = self.long_digits or has_long_digits(header)
        workflow.__dict__[_LONG_DIGITS] = long_digits
        parts[0] = b'{"format":%d,"digits":%d' % (FORMAT, long_digits) + header
        workflow.__dict__["_cleanaudit_reusable"] = self.round_trip_ok
        data = b"\n".join(parts)
        if self.check:
            text = b"\n".join([data] + tail_blocks)
            self._check(order + tail_order, text)
            _check_indexes(workflow)
            if not long_digits:
                _check_short_digits(text)
        return b"".join([compress(data)] + tail_frames)

    def _header_entry(self, one, count: int, top: bool) -> tuple:
        """(header entry of a workflow as JSON text, whether its data survives a JSON round trip).

        The entry is what encode(dict) gives for {root, data, correlations, last_task, success,
        completed, n[, id, spec]}; its data is encoded again only when it changed since the last
        save (a sub-process's data is a copy of a task's, ~60 values: converting, encoding and
        checking it on every save cost as much as a task line)."""
        data = one.data
        cached = one.__dict__.get(_HEADER)
        if cached is not None and cached[0] == data:
            data_text, data_ok = cached[1], cached[2]
            if self.check:  # check mode: what a fresh encoding gives
                if self._header_data(data) != (data_text, data_ok):
                    raise StateError(f"kept header data {data_text!r} differs from a fresh encoding")
        else:
            data_text, data_ok = self._header_data(data)
            # (a deep copy: a value changed in place must not compare equal to itself next time)
            one.__dict__[_HEADER] = (_own_copy()(data), data_text, data_ok)
        encode = self.encode
        root = one.task_tree
        last = one.last_task
        parts = ['{"root":', '"' + _runtime()._text(root.id) + '"' if root is not None else "null",
                 ',"data":', data_text, ',"correlations":', encode(one.correlations),
                 ',"last_task":', '"' + _runtime()._text(last.id) + '"' if last is not None else "null",
                 ',"success":', encode(one.success), ',"completed":', encode(one.completed),
                 ',"n":', str(count)]
        if not top:
            parts += [',"id":', encode(str(one.parent_task_id)), ',"spec":', encode(one.spec.name)]
        parts.append("}")
        return "".join(parts), data_ok

    def _header_data(self, data) -> tuple:
        converted = self.registry.convert(self.registry.clean(data))
        text = self.encode(converted)
        return text, not converted or json.loads(text) == converted

    def _dump_tasks(self, one, parts: list, fresh: bool = False) -> int:
        """Append a line per task of one workflow; returns their number.

        A task keeps its line when nothing it was encoded from changed: its state (and the time of
        that change), `triggered`, its children, and its parent's stored data. Tasks that change
        without changing state (_ALWAYS) are encoded again every time.

        Every line encoded here is also decoded again and compared (`self.round_trip_ok`): a
        workflow whose new values do not come back equal from JSON (tuples, sets, non-text keys,
        datetimes, NaN) must not be kept in memory in place of a load.
        """
        _text = _runtime()._text
        tasks = one.tasks
        spec_texts = self._spec_texts
        changed: set = set()  # int ids of tasks whose stored data may have changed in this save
        encoded: set = set()  # int ids of tasks encoded in this save
        encode = self.encode
        loads = json.loads
        append = parts.append
        for task_id, task in tasks.items():
            attrs = task.__dict__
            old = None if fresh else attrs.get(_ENTRY)
            state = attrs["_cleanaudit_state"]
            # a line whose data is stored whole does not depend on its parent's stored data
            if (old is not None and not state & _ALWAYS
                    and (old.whole or old.parent_key not in changed)
                    and old.sig == (state, attrs["last_state_change"], attrs["triggered"])
                    and old.children == attrs["_children"]):
                append(old.line)
                continue
            parent_id = task._parent
            key = task_id.int
            children = task._children
            data = task.data
            parent = tasks.get(parent_id) if parent_id is not None else None
            if parent is None or not data:  # (a predicted task has no data yet: not "all deleted")
                base = None
            elif parent_id.int in encoded:
                base = parent.data  # encoded in this save: memory and storage agree right now
            else:
                base = self._stored_data(parent, tasks)
            if base is None:
                value = [data, None]
            else:
                value = _delta(data, base)
            payload = encode(value)
            if old is not None:  # ["<id>","<parent>", or ["<id>",null, (ids are 36 characters)
                prefix = old.line[:79] if old.line[40] == 34 else old.line[:45]  # (34: '"')
                parent_key = old.parent_key
            else:
                parent_key = parent_id.int if parent_id is not None else None
                prefix = ('["' + _text(task_id) + '",'
                          + ('"' + _text(parent_id) + '",' if parent is not None else "null,")).encode("ascii")
            internal = task.internal_data
            internal_text = encode(internal) if internal else "{}"
            # the rest of the head, after the id and the parent: [children, lsc, state, spec, triggered, internal]
            # put together as the encoder would write it (ids and numbers need no escaping)
            changed_at = attrs["last_state_change"]
            triggered = attrs["triggered"]
            spec_text = spec_texts.get(task.task_spec.name)
            if spec_text is None:
                spec_text = spec_texts[task.task_spec.name] = encode(task.task_spec.name)
            children_text = '["' + '","'.join([_text(child) for child in children]) + '"],' if children else "[],"
            rest = "".join([children_text,
                            repr(changed_at) if type(changed_at) is float and math.isfinite(changed_at)
                            else encode(changed_at), ",", str(state), ",", spec_text, ",",
                            "true" if triggered is True else "false" if triggered is False else encode(triggered),
                            ",", internal_text, "]"])
            # (a lone surrogate, possible in text from a script, is kept as it is, and read back so)
            head = prefix + rest.encode("utf-8", "surrogatepass")
            payload = payload.encode("utf-8", "surrogatepass")
            # numbers are in the data's values and in internal data (the rest of the head is ids,
            # a float and a small integer: never 19 digits in a row)
            long_digits = bool(value[0]) and has_long_digits(payload)
            if internal and not long_digits:
                long_digits = has_long_digits(head)
            if long_digits:
                self.long_digits = True
            if self.round_trip_ok and ((value[0] and _parse(payload, long_digits) != value)
                                       or (internal and loads(internal_text) != internal)):
                self.round_trip_ok = False
            line = head + b"\t" + payload
            # a finished task's data is what was just encoded, and it is not changed in place again
            # (merges and scripts work on copies; the tests' check mode compares every save)
            attrs[_ENTRY] = _Line(line, (state, task.last_state_change, task.triggered), list(children),
                                  len(head) + 1, parent_key, data if state & _FINISHED else None,
                                  value[1] is None)
            encoded.add(key)
            if fresh or old is None or old.payload != payload or old.parent_key in changed:
                changed.add(key)
            append(line)
        return len(tasks)

    def _stored_data(self, task, tasks) -> Optional[dict]:
        """The data a load would give this task (from its line and its ancestors'), or None."""
        chain = []
        current = task
        base = None
        while current is not None:
            entry = current.__dict__.get(_ENTRY)
            if entry is None:
                return None  # never encoded (cannot happen for a parent): store the child whole
            if entry.stored is not None:
                base = entry.stored
                break
            chain.append((current, entry))
            if entry.whole:
                break
            current = tasks.get(current._parent) if current._parent is not None else None
            if current is None:
                return None
        for current, entry in reversed(chain):
            data = _apply(self, entry.payload, base)  # private to the stored view, never changed
            if data is None:
                return None
            entry.stored = base = data
        return base

    # ---- load
    def load(self, text: bytes, spec, subprocess_specs: dict, script_engine=None,
             frames: Optional[list] = None) -> BpmnWorkflow:
        """Restore a workflow from the text of a format-2 state (`frames`: its frames, see dump)."""
        from .runtime import install
        install()
        lines = text.split(b"\n")
        # Every line parsed in one call (a call per line cost more than the parsing)
        joined = _as_rows(text)
        # (a text its save marked as having no 19-digit run is not looked through again)
        long_digits = not text.startswith(_SHORT_DIGITS_START) and has_long_digits(joined)
        rows = _parse(joined, long_digits)
        any_typed = b'"typename"' in text  # (else no line needs the restoring walk)
        header = rows[0][0]
        typed = b'"typename"' in lines[0]  # (otherwise workflow data needs no restoring walk)
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise StateError(f"unknown state format {header.get('format') if isinstance(header, dict) else None!r}")
        workflow = BpmnWorkflow(spec, subprocess_specs, deserializing=True)
        workflow.__dict__[_LONG_DIGITS] = long_digits
        position = self._load_tasks(workflow, workflow, lines, rows, 1, header["wf"], any_typed)
        self._set_attributes(workflow, header["wf"], typed)
        created = {}
        # the last `tail` sub-processes were saved one per frame: their frames are copied by the next save
        tail = header.get("tail") or 0
        first_tail = len(header["subs"]) - tail
        tail_frames = ({first_tail + i: frame for i, (frame, _) in enumerate(frames[1:])}
                       if frames is not None and tail and len(frames) == tail + 1 else {})
        for index, entry in enumerate(header["subs"]):
            parent_task = workflow.get_task_from_id(_uuid(entry["id"]))
            sub_spec = workflow.subprocess_specs.get(parent_task.task_spec.spec)
            sub = BpmnSubWorkflow(sub_spec, parent_task.id, workflow, deserializing=True)
            start = position
            position = self._load_tasks(sub, workflow, lines, rows, position, entry, any_typed)
            self._set_attributes(sub, entry, typed)
            if sub.completed and entry["n"]:  # as dump keeps it: a finished sub-process does not change
                sub.__dict__[_FINISHED_BLOCK] = ((entry["n"], True, sub.last_task),
                                                 b"\n".join(lines[start:position]), self.encode(entry),
                                                 tail_frames.get(index))
            workflow.subprocesses[parent_task.id] = sub
            created[parent_task.id] = (sub, parent_task)
        if len(created) > 1:
            _order_like_spiffworkflow(workflow, created)
        for sub, parent_task in created.values():
            sub.completed_event.connect(parent_task.task_spec._on_subworkflow_completed, parent_task)
        events = header.get("events") or []
        workflow.bpmn_events = self.restore_registry.restore(events) if events else []
        if script_engine is not None:
            workflow.script_engine = script_engine
        return workflow

    def _set_attributes(self, one, entry: dict, typed: bool = True) -> None:
        one.task_tree = one.tasks.get(_uuid(entry["root"])) if entry.get("root") else None
        one.success = entry["success"]
        one.completed = entry.get("completed", False)
        one.correlations = entry.get("correlations") or {}
        last = entry.get("last_task")
        one.last_task = one.tasks.get(_uuid(last)) if isinstance(last, str) else None
        data = entry.get("data") or {}
        # (a copy, so that the header entry stays as it was read: a finished sub-process keeps it)
        one.data = self.restore_registry.restore(data) if typed else dict(data)

    def _load_tasks(self, one, top, lines: list, rows: list, start: int, entry: dict, any_typed: bool = True) -> int:
        runtime = _runtime()
        _inherited, _live, uuid_of = runtime._inherited, runtime._live, runtime._uuid
        astir_states = runtime._ASTIR
        known_uuid = runtime._UUIDS.get  # (a hit needs no call of uuid_of)
        count = entry["n"]
        specs = one.spec.task_specs
        tasks: dict = {}
        one.tasks = tasks
        live = _live(one)
        astir = runtime._astir(one)
        events = top.event_manager
        restore = self.restore_registry.restore
        thread_id = Task.thread_id_pool
        new_task = Task.__new__
        for line, ((task_id, parent_id, children, changed_at, state, spec_name, triggered, internal),
                   (first, deletions)) in zip(lines[start:start + count], rows[start:start + count]):
            typed = any_typed and b'"typename"' in line
            task_spec = specs.get(spec_name)
            uid = known_uuid(task_id) or uuid_of(task_id)
            parent_uid = (known_uuid(parent_id) or uuid_of(parent_id)) if parent_id is not None else None
            child_ids = [known_uuid(child) or uuid_of(child) for child in children] if children else []
            if typed:
                first = restore(first)
                if internal:
                    internal = restore(internal)
            if deletions is None:
                data = first
            else:
                parent = tasks.get(parent_uid)
                if parent is None:
                    data = {}
                elif state & _FINISHED:
                    # a finished task's data is never changed in place again (scripts work on
                    # copies, merges go into copies): it may share lists and dicts with its parent
                    data = parent.data.copy()
                else:
                    data = _inherited(parent.data)  # its own top-level lists and dicts, as SpiffWorkflow gives
                data.update(first)
                for key in deletions:
                    if key in data:
                        del data[key]
            if task_spec is None:  # as SpiffWorkflow does: a task whose spec is gone gets a start spec
                task_spec = Task(one, None, state=state, id=uid).task_spec
            task = new_task(Task)
            task.__dict__ = ({
                "id": uid, "workflow": one, "_parent": parent_uid, "_children": child_ids,
                "_cleanaudit_state": state, "triggered": triggered, "task_spec": task_spec,
                "thread_id": thread_id, "data": data, "internal_data": internal,
                "last_state_change": changed_at,
                _ENTRY: _Line(line, (state, changed_at, triggered), list(child_ids), line.index(b"\t") + 1,
                              parent_uid.int if parent_uid is not None else None,
                              # a finished task's data is what its line stores (it is never changed
                              # in place: the check mode of the tests compares every save)
                              data if state & _FINISHED else None, deletions is None)})
            tasks[uid] = task
            if not state & _FINISHED:
                live[uid] = task
                if state & astir_states:
                    astir[uid] = task
                if state == _WAITING and isinstance(task_spec, CatchingEvent):
                    events.add_task(task)
        return start + count

    # ---- check mode
    def _check(self, order: list, text: bytes) -> None:
        """Check mode: the incremental save must load back exactly as a full re-encoding does
        (`order`: the workflows in the order the save wrote them)."""
        saved = {one: {tid: t.__dict__.get(_ENTRY) for tid, t in one.tasks.items()} for one in order}
        round_trip_ok, long_digits = self.round_trip_ok, self.long_digits
        parts: list[bytes] = [b""]
        try:
            for one in order:
                self._dump_tasks(one, parts, fresh=True)
        finally:
            for one, entries in saved.items():
                for tid, entry in entries.items():
                    task = one.tasks[tid]
                    if entry is None:
                        task.__dict__.pop(_ENTRY, None)
                    else:
                        task.__dict__[_ENTRY] = entry
            self.round_trip_ok, self.long_digits = round_trip_ok, long_digits
        mine = _decode_tasks(text.split(b"\n")[1:], self)
        full = _decode_tasks(parts[1:], self)
        if mine != full:
            for index, (a, b) in enumerate(zip(mine, full)):
                if a != b:
                    raise StateError(f"incremental save differs from a full one at task line {index}: "
                                     f"{a!r} != {b!r}")
            raise StateError("incremental save differs from a full one (number of tasks)")


def _as_rows(text: bytes) -> bytes:
    """A state's text as one JSON array: a task line (head TAB data; JSON never holds a raw tab or
    newline) becomes [head, data], the header [header]."""
    return b"[[" + text.replace(b"\t", b",").replace(b"\n", b"],[") + b"]]"


def _check_short_digits(text: bytes) -> None:
    """Check mode: a text marked "digits":0 reads the same by orjson as by json.loads."""
    joined = _as_rows(text)
    if json.dumps(_parse(joined, False)) != json.dumps(json.loads(joined)):
        raise StateError('a state marked "digits":0 holds a number orjson reads differently')


def _check_indexes(workflow) -> None:
    """Check mode: each workflow's indexes of unfinished and of READY/WAITING tasks hold exactly
    the tasks a walk over all its tasks finds."""
    runtime = _runtime()
    for one in _workflows(workflow):
        tasks = one.tasks
        live = {key for key, task in tasks.items() if not task.state & _FINISHED}
        astir = {key for key in live if tasks[key].state & runtime._ASTIR}
        if set(runtime._live(one)) != live or set(runtime._astir(one)) != astir:
            raise StateError(f"task indexes of {one.spec.name} differ from its tasks: live "
                             f"{sorted(map(str, set(runtime._live(one)) ^ live))}, ready/waiting "
                             f"{sorted(map(str, set(runtime._astir(one)) ^ astir))}")


def _delta(data: dict, base: dict) -> list:
    """[updates, deletions] turning base into data: the keys whose value differs or is new, in
    data's order, and the keys of base that data lacks.

    A task's data is its parent's copied, then changed: usually the same keys in the same order
    with a few values replaced and keys added at the end. Then the values that are not the
    parent's own objects are found in C (map/compress over both value lists) and only those are
    compared; otherwise key by key.
    """
    base_keys = list(base)
    data_keys = list(data)
    count = len(base_keys)
    if data_keys[:count] == base_keys:
        updates = {}
        values = list(data.values())
        if values[:count] != list(base.values()):  # (equal lists compare by identity, in C)
            for key in _compress(base_keys, map(_is_not, values, base.values())):
                if data[key] != base[key]:
                    updates[key] = data[key]
        for key in data_keys[count:]:
            updates[key] = data[key]
        return [updates, []]
    get = base.get
    missing = _MISSING
    return [{k: v for k, v in data.items() if (b := get(k, missing)) is not v and (b is missing or v != b)},
            [k for k in base_keys if k not in data]]


def _decode_tasks(lines: list, codec: Codec) -> list:
    """(head, whole data) of every task line, data resolved through the parents (check mode)."""
    out, data_by_id = [], {}
    for line in lines:
        head, _, payload = line.partition(b"\t")
        fields = json.loads(head)
        data = _apply(codec, payload, data_by_id.get(fields[1], {}))
        data_by_id[fields[0]] = data
        out.append((fields, json.loads(codec.encode(data))))
    return out


_runtime_module = None


def _apply(codec: Codec, payload: bytes, base: Optional[dict]) -> Optional[dict]:
    """The data a task line's data part gives over its parent's data (`base`); None if it needs a
    base and has none. The result shares values with `base` (as loaded data does)."""
    first, deletions = parse_json(payload)
    first = codec.restore(first, b'"typename"' in payload)
    if deletions is None:
        return first
    if base is None:
        return None
    data = base.copy()
    data.update(first)
    for key in deletions:
        data.pop(key, None)
    return data


_own_copy_function = None


def _own_copy():
    global _own_copy_function
    if _own_copy_function is None:
        from .scripting import own_copy  # (scripting imports the runtime, which imports this module)
        _own_copy_function = own_copy
    return _own_copy_function


def _runtime():
    global _runtime_module
    if _runtime_module is None:
        from . import runtime  # (runtime imports this module: looked up when first needed)
        _runtime_module = runtime
    return _runtime_module


def _workflows(workflow) -> list:
    return [workflow, *getattr(workflow, "subprocesses", {}).values()]


def _uuid(text: str) -> UUID:
    from .runtime import _uuid as cached  # (runtime imports this module)
    return cached(text)


def _order_like_spiffworkflow(workflow, created: dict) -> None:
    """Sub-processes in the order SpiffWorkflow's own loader gives (tree order of their tasks)."""
    ordered = {}
    wanted = {task_id.int: task_id for task_id in created}  # (ints hash in C, UUIDs in Python)

    def visit(one):
        for task_id, task in one.tasks.items():
            key = task_id.int
            if key in wanted and isinstance(task.task_spec, SubWorkflowTask):
                del wanted[key]
                ordered[task_id] = created[task_id][0]
                visit(created[task_id][0])

    visit(workflow)
    for task_id, (sub, _) in created.items():  # any not reached keep their place at the end
        ordered.setdefault(task_id, sub)
    workflow.subprocesses.clear()
    workflow.subprocesses.update(ordered)


# ---------------------------------------------------------------------- conversion
def to_spiff_dict(text: bytes, codec: Codec) -> dict:
    """A format-2 state as SpiffWorkflow's dictionary format (without the spec), values as stored."""
    lines = text.decode("utf-8", "surrogatepass").split("\n")
    header = json.loads(lines[0])

    def tasks_of(entry, start):
        out, data_by_id = {}, {}
        for line in lines[start:start + entry["n"]]:
            head, _, payload = line.partition("\t")
            task_id, parent, children, changed_at, state, spec_name, triggered, internal = json.loads(head)
            first, deletions = json.loads(payload)
            if deletions is None:
                whole = first
            else:
                whole = dict(data_by_id.get(parent, {}))
                whole.update(first)
                for key in deletions:
                    whole.pop(key, None)
            data_by_id[task_id] = whole
            if parent is None:
                data, delta = whole, {}
            else:
                # SpiffWorkflow stores a delta against the parent's data as it loads
                parent_data = data_by_id.get(parent, {})
                data = {}
                delta = {"updates": {k: v for k, v in whole.items() if k not in parent_data or v != parent_data[k]},
                         "deletions": [k for k in parent_data if k not in whole]}
            out[task_id] = {"id": task_id, "parent": parent, "children": children,
                            "last_state_change": changed_at, "state": state, "task_spec": spec_name,
                            "triggered": triggered, "internal_data": internal, "data": data,
                            "delta": delta, "typename": "Task"}
        return out, start + entry["n"]

    def workflow_dict(entry, tasks):
        return {"data": entry["data"], "correlations": entry.get("correlations") or {},
                "last_task": entry.get("last_task"), "success": entry["success"],
                "completed": entry.get("completed", False), "tasks": tasks, "root": entry["root"]}

    tasks, position = tasks_of(header["wf"], 1)
    top = workflow_dict(header["wf"], tasks)
    top["subprocesses"] = {}
    for entry in header["subs"]:
        tasks, position = tasks_of(entry, position)
        sub = workflow_dict(entry, tasks)
        sub.update(parent_task_id=entry["id"], spec=entry["spec"], typename="BpmnSubWorkflow")
        top["subprocesses"][entry["id"]] = sub
    top["bpmn_events"] = header.get("events") or []
    top["typename"] = "BpmnWorkflow"
    return top
