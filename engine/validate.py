"""Validation of BPMN files before deployment: safe XML -> SpiffBpmnParser (XSD, specs) -> our lint.

    report = validate_files([("audit.bpmn", data)], forms_dir=Path("forms"))
    if not report.ok:
        raise InvalidProcess(report.errors)
    spec = report.parser.get_spec(report.process_ids[0])

Nothing here raises on any input: every failure, ours or SpiffWorkflow's, becomes a `Problem`
(`FILE:LINE: ELEMENT_ID: message`, `?` for an unknown line and `-` for no element). Needs no
database. The lint covers what SpiffWorkflow's parser misses (see docs/architecture.md and the
"Validation gaps" in the SpiffWorkflow notes): lanes and roles, form files, scripts and
expressions (statically, through `engine.scripting.check_source`), call activities, clear
messages for dangling sequence flows, unknown `spiffworkflow:` extension elements, missing
documentation and modeler-generated ids.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from engine import authz

BPMN_NS = "http://www.omg.org/spec/BPMN/20100524/MODEL"
BPMNDI_NS = "http://www.omg.org/spec/BPMN/20100524/DI"
DC_NS = "http://www.omg.org/spec/DD/20100524/DC"
DI_NS = "http://www.omg.org/spec/DD/20100524/DI"
SPIFF_NS = "http://spiffworkflow.org/bpmn/schema/1.0/core"
NS = {"bpmn": BPMN_NS, "spiffworkflow": SPIFF_NS}

ERROR = "error"
WARNING = "warning"

MAX_SCHEMA_PROBLEMS = 50
"""At most this many XSD problems are reported per file (the rest are counted)."""

# --- what SpiffWorkflow 3.2's spiff parser reads (spiff/parser/task_spec.py, event_parsers.py,
# process.py, schema/spiffworkflow.xsd). Anything else in its namespace is silently ignored.
KNOWN_SPIFF_ELEMENTS = frozenset({
    "properties", "property",
    "preScript", "postScript",
    "instructionsForEndUser",
    "variableName", "calledDecisionId",
    "unitTests", "unitTest", "inputJson", "expectedOutputJson",
    "serviceTaskOperator", "parameters", "parameter", "retry",
    "taskMetadataValues", "taskMetadataValue",
    "messagePayload", "messageVariable", "payloadExpression",
    "processVariableCorrelation", "propertyId", "expression",
    "category",
})
KNOWN_SPIFF_ATTRIBUTES = frozenset({"scriptsOnInstances"})

KNOWN_PROPERTIES = frozenset({"formJsonSchemaFilename", "article", "scope", "due"})
"""`spiffworkflow:property` names our engine reads (docs/architecture.md); others get a warning."""

EXPRESSION_PROPERTIES = ("scope", "due")

GENERATED_ID_RE = re.compile(
    r"^(Activity|Event|Gateway|Flow|StartEvent|EndEvent|Task|Lane|Participant|Process|DataObject"
    r"|SequenceFlow)_[0-9a-z]{7}$")

_ACTIVITIES = ("task", "userTask", "manualTask", "scriptTask", "serviceTask", "sendTask",
               "receiveTask", "businessRuleTask", "callActivity", "subProcess", "transaction",
               "adHocSubProcess")
_EVENTS = ("startEvent", "endEvent", "intermediateCatchEvent", "intermediateThrowEvent",
           "boundaryEvent", "implicitThrowEvent")
_GATEWAYS = ("exclusiveGateway", "parallelGateway", "inclusiveGateway", "eventBasedGateway",
             "complexGateway")
_CONTAINERS = ("subProcess", "transaction", "adHocSubProcess")


def _q(local: str, ns: str = BPMN_NS) -> str:
    return f"{{{ns}}}{local}"


FLOW_NODE_TAGS = frozenset(_q(t) for t in _ACTIVITIES + _EVENTS + _GATEWAYS)
CONTAINER_TAGS = frozenset(_q(t) for t in _CONTAINERS)
HUMAN_TASK_TAGS = frozenset({_q("userTask"), _q("manualTask")})

_NS_SHORT = {BPMN_NS: "bpmn", BPMNDI_NS: "bpmndi", DC_NS: "dc", DI_NS: "di", SPIFF_NS: "spiffworkflow"}

# The shared XSD validator keeps its error log on the object: one validation at a time.
_SPIFF_LOCK = threading.Lock()


# --------------------------------------------------------------------------- results

@dataclass
class Problem:
    """One finding. `str()` gives `FILE:LINE: ELEMENT_ID: message` (`?` / `-` when unknown);
    a warning's message is prefixed with `warning: `."""
    file: str
    line: Optional[int]
    element_id: Optional[str]
    message: str
    severity: str = ERROR

    def __str__(self) -> str:
        line = str(self.line) if isinstance(self.line, int) and self.line > 0 else "?"
        prefix = "warning: " if self.severity == WARNING else ""
        return f"{self.file or '-'}:{line}: {self.element_id or '-'}: {prefix}{self.message}"


@dataclass
class Report:
    """The outcome of `validate_files`.

    `process_ids`: the executable top-level processes that SpiffWorkflow accepted (in file
    order); `process_files`: process id -> the file that holds it; `calls`: process id -> the
    process ids its call activities name; `parser`: the SpiffBpmnParser holding every file that
    passed the XSD (use it only when `ok`: a process whose spec failed to build may hold a
    half-built spec).
    """
    problems: list[Problem] = field(default_factory=list)
    process_ids: list[str] = field(default_factory=list)
    process_files: dict[str, str] = field(default_factory=dict)
    calls: dict[str, list[str]] = field(default_factory=dict)
    parser: Any = None

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity != WARNING]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_for_errors(self) -> None:
        """Raise engine.errors.InvalidProcess carrying the errors, if any."""
        if not self.ok:
            from engine.errors import InvalidProcess
            raise InvalidProcess(self.errors)

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems) or "ok"


# --------------------------------------------------------------------------- helpers

def _safe_str(value: Any) -> str:
    try:
        text = str(value)
    except Exception:  # a hostile __str__
        try:
            text = repr(value)
        except Exception:
            text = f"<{type(value).__name__}>"
    return text


def _shorten_ns(text: str) -> str:
    for uri, prefix in _NS_SHORT.items():
        text = text.replace("{" + uri + "}", prefix + ":")
    return text


def _exc_message(exc: BaseException) -> str:
    """An exception's message without traceback, namespace URIs shortened."""
    if getattr(exc, "args", None) and isinstance(exc.args[0], str):
        msg = exc.args[0]
    else:
        msg = _safe_str(exc)
    notes = getattr(exc, "notes", None) or getattr(exc, "__notes__", None) or []
    if notes:
        msg = msg.rstrip(". ") + ". " + ". ".join(_safe_str(n) for n in notes)
    msg = re.sub(r"<Element (\S+) at 0x[0-9a-fA-F]+>", r"\1", msg)
    msg = re.sub(r"\s+", " ", _shorten_ns(msg)).strip().replace("Traceback", "traceback")
    if len(msg) > 1000:
        msg = msg[:1000] + "..."
    return msg or type(exc).__name__


def _localname(el) -> str:
    tag = el.tag
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1]


def _is_element(el) -> bool:
    return isinstance(getattr(el, "tag", None), str)


def _line(el) -> Optional[int]:
    line = getattr(el, "sourceline", None)
    return line if isinstance(line, int) and line > 0 else None


def _text(el) -> str:
    return (el.text or "") if el is not None else ""


def _kind(el) -> str:
    """A readable kind for messages: task, user task, event, gateway, sub-process, ..."""
    name = _localname(el)
    if name in ("userTask", "manualTask", "scriptTask", "serviceTask", "sendTask", "receiveTask",
                "businessRuleTask"):
        return re.sub(r"(?<!^)([A-Z])", r" \1", name).lower()
    if name == "callActivity":
        return "call activity"
    if name in _CONTAINERS:
        return {"subProcess": "sub-process", "transaction": "transaction",
                "adHocSubProcess": "ad hoc sub-process"}[name]
    if name in _EVENTS:
        return "event"
    if name in _GATEWAYS:
        return "gateway"
    if name == "sequenceFlow":
        return "sequence flow"
    if name == "process":
        return "process"
    return "task" if name == "task" else (name or "element")


def _owner_id(el) -> Optional[str]:
    """The id of the flow node, sequence flow or process an element belongs to."""
    node = el
    while node is not None:
        if _is_element(node) and (node.tag in FLOW_NODE_TAGS or node.tag in (_q("sequenceFlow"), _q("process"))):
            return node.get("id") or _nearest_id(el)
        node = node.getparent()
    return _nearest_id(el)


def _nearest_id(el) -> Optional[str]:
    while el is not None:
        if _is_element(el) and el.get("id"):
            return el.get("id")
        el = el.getparent()
    return None


class _File:
    """One input file and everything found about it."""

    def __init__(self, order: int, name: str, data: bytes):
        self.order = order
        self.name = name
        self.data = data
        self.tree = None
        self.root = None
        self.index: dict[str, Any] = {}
        self.added = False                 # accepted by SpiffBpmnParser.add_bpmn_xml
        self.processes: list[Any] = []     # top-level bpmn:process elements
        self.executable: list[str] = []    # ids of executable top-level processes
        self.broken: set[str] = set()      # process ids whose structure is broken (skip get_spec)
        self.scripting_unavailable = False

    def line_of(self, element_id: Optional[str]) -> Optional[int]:
        el = self.index.get(element_id) if element_id else None
        return _line(el) if el is not None else None

    def element_at_line(self, line: Optional[int]) -> Optional[str]:
        if not line or self.root is None:
            return None
        for el in self.root.iter():
            if _line(el) == line and _is_element(el):
                return _nearest_id(el)
        return None


class _Collector:
    def __init__(self):
        self.problems: list[Problem] = []
        self._seen: set[tuple] = set()

    def add(self, file: str, line, element_id, message: str, severity: str = ERROR) -> None:
        message = re.sub(r"\s+", " ", _safe_str(message)).strip()
        key = (file, line, element_id, message, severity)
        if key in self._seen:
            return
        self._seen.add(key)
        self.problems.append(Problem(file, line if isinstance(line, int) and line > 0 else None,
                                     element_id or None, message, severity))

    def at(self, f: _File, el, message: str, severity: str = ERROR, element_id: Optional[str] = None) -> None:
        self.add(f.name, _line(el), element_id or _nearest_id(el), message, severity)


# --------------------------------------------------------------------------- entry points

def validate_paths(paths: Iterable[Union[str, Path]], *, forms_dir: Optional[Path] = None,
                   known_process_ids: Iterable[str] = frozenset(),
                   roles: tuple[str, ...] = authz.ROLES) -> Report:
    """Read the files and validate them together (see `validate_files`). A file that cannot be
    read becomes a problem; problems name each file as given."""
    files: list[tuple[str, bytes]] = []
    unreadable: list[Problem] = []
    try:
        from engine.xmlsafe import MAX_BYTES, too_large_message
        for p in paths:
            name = _safe_str(p)
            try:
                path = Path(p)
                size = path.stat().st_size
                if size > MAX_BYTES:
                    unreadable.append(Problem(name, None, None, too_large_message(size)))
                    continue
                with open(path, "rb") as fh:
                    files.append((name, fh.read(MAX_BYTES + 1)))
            except OSError as exc:
                reason = exc.strerror or type(exc).__name__
                unreadable.append(Problem(name, None, None, f"cannot read the file: {reason}"))
            except Exception as exc:
                unreadable.append(Problem(name, None, None, f"cannot read the file: {_exc_message(exc)}"))
    except Exception as exc:
        unreadable.append(Problem("-", None, None, f"cannot read the files: {_exc_message(exc)}"))
    report = validate_files(files, forms_dir=forms_dir, known_process_ids=known_process_ids, roles=roles)
    report.problems[:0] = unreadable
    return report


def validate_files(files: list[tuple[str, bytes]], *, forms_dir: Optional[Path] = None,
                   known_process_ids: Iterable[str] = frozenset(),
                   roles: tuple[str, ...] = authz.ROLES) -> Report:
    """Validate BPMN files together (call activities may point from one to another).

    `forms_dir`: the `forms/` directory; without it form files are not checked.
    `known_process_ids`: processes already deployed, valid targets of call activities.
    `roles`: the lane names a human task may sit in.
    Never raises: every failure becomes a Problem.
    """
    out = _Collector()
    report = Report()
    try:
        files = list(files or [])
        _validate(files, forms_dir, frozenset(known_process_ids or ()), tuple(roles or ()), out, report)
    except Exception as exc:  # the safety net: report, never raise
        out.add("-", None, None, f"internal error while validating: {type(exc).__name__}: {_exc_message(exc)}")
    try:
        order = {_safe_str(item[0]): i for i, item in enumerate(files) if _pair(item)}
        report.problems = sorted(out.problems, key=lambda p: (order.get(p.file, -1), p.line or 0))
    except Exception:
        report.problems = out.problems
    return report


def _pair(item) -> bool:
    return isinstance(item, (tuple, list)) and len(item) == 2


# --------------------------------------------------------------------------- steps

def _validate(files, forms_dir, known_ids, roles, out: _Collector, report: Report) -> None:
    from engine.xmlsafe import XmlRefused, parse_bpmn_bytes

    ctxs: list[_File] = []
    for i, item in enumerate(files):
        try:
            name, data = item
            name = _safe_str(name) or f"file {i + 1}"
        except Exception:
            out.add(f"file {i + 1}", None, None, "expected a (name, bytes) pair")
            continue
        if any(c.name == name for c in ctxs):
            out.add(name, None, None, f"the file name {name} is given twice")
            continue
        f = _File(i, name, data)
        ctxs.append(f)
        try:
            f.tree = parse_bpmn_bytes(data, name)
            f.root = f.tree.getroot()
        except XmlRefused as exc:
            out.add(name, exc.line, None, exc.message)
            continue
        except Exception as exc:
            out.add(name, None, None, f"the file could not be read as XML: {_exc_message(exc)}")
            continue
        try:
            _index(f)
        except Exception as exc:
            out.add(name, None, None, f"internal error while indexing the file: {_exc_message(exc)}")

    parsed = [f for f in ctxs if f.root is not None]

    # Step 2a: SpiffWorkflow's parser (XSD validation, process registration), all files first
    # so that call activities resolve across files.
    parser = None
    try:
        from SpiffWorkflow.spiff.parser.process import VALIDATOR
        from engine import runtime
        runtime.install()  # SpiffWorkflow fixes the engine relies on (e.g. a parser hang) apply here too
        parser = runtime.DocumentOrderParser(validator=VALIDATOR)
    except Exception as exc:
        out.add("-", None, None, f"SpiffWorkflow's parser is unavailable: {_exc_message(exc)}")
    report.parser = parser
    by_name = {f.name: f for f in parsed}
    if parser is not None:
        for f in parsed:
            _add_to_parser(parser, f, by_name, out)

    # Process ids given in these files (executable or not), for call activities.
    exec_ids: dict[str, _File] = {}
    nonexec_ids: set[str] = set()
    for f in parsed:
        for proc in f.processes:
            pid = proc.get("id")
            if not pid:
                continue
            if _is_executable(proc):
                exec_ids.setdefault(pid, f)
            else:
                nonexec_ids.add(pid)

    # Step 3: our lint (before get_spec: structural problems get clear messages and skip it).
    for f in parsed:
        try:
            _lint_file(f, exec_ids, nonexec_ids, known_ids, roles, forms_dir, out, report)
        except Exception as exc:
            out.add(f.name, None, None, f"internal error while checking the file: {type(exc).__name__}: "
                                        f"{_exc_message(exc)}")

    # The processes SpiffWorkflow accepted.
    for f in parsed:
        if not f.added or parser is None:
            continue
        for pid in f.executable:
            pp = parser.get_process_parser(pid)
            if pp is not None and getattr(pp, "process_executable", False) and pid not in report.process_files:
                report.process_ids.append(pid)
                report.process_files[pid] = f.name

    # Step 2b: build the specs (SpiffWorkflow's own checks of each process and its sub-processes).
    if parser is not None:
        broken = set().union(*(f.broken for f in parsed)) if parsed else set()
        for pid in report.process_ids:
            if pid in broken:
                continue
            f = by_name[report.process_files[pid]]
            try:
                _build_specs(parser, pid, {pid}, broken)
            except Exception as exc:
                _spiff_problem(exc, f, by_name, out)


def _index(f: _File) -> None:
    for el in f.root.iter():
        if not _is_element(el):
            continue
        el_id = el.get("id")
        if el_id and el_id not in f.index:
            f.index[el_id] = el
    f.processes = [el for el in f.root if _is_element(el) and el.tag == _q("process")]
    f.executable = [p.get("id") for p in f.processes if p.get("id") and _is_executable(p)]


def _is_executable(proc) -> bool:
    # SpiffWorkflow treats a missing isExecutable as executable.
    return (proc.get("isExecutable") or "true").strip() == "true"


def _add_to_parser(parser, f: _File, by_name, out: _Collector) -> None:
    from SpiffWorkflow.bpmn.parser.ValidationException import ValidationException
    with _SPIFF_LOCK:
        try:
            parser.add_bpmn_xml(f.tree, filename=f.name)
            f.added = True
            return
        except ValidationException as exc:
            schema_errors = _schema_errors(parser)
            if schema_errors and getattr(exc, "line_number", None) in {e.line for e in schema_errors}:
                shown = schema_errors[:MAX_SCHEMA_PROBLEMS]
                for err in shown:
                    msg = _shorten_ns(_safe_str(err.message)).strip()
                    out.add(f.name, err.line, f.element_at_line(err.line),
                            f"does not match the BPMN schema: {msg}")
                if len(schema_errors) > len(shown):
                    out.add(f.name, None, None,
                            f"{len(schema_errors) - len(shown)} more schema problems not shown")
                return
            if str(exc.args[0] if exc.args else "").startswith("Data Store") \
                    and next(f.root.iter(_q("dataStore")), None) is not None:
                return  # our lint names the data store, with its line
            _spiff_problem(exc, f, by_name, out)
        except Exception as exc:
            _spiff_problem(exc, f, by_name, out)


def _schema_errors(parser) -> list:
    try:
        log = parser.validator.validator.error_log
        return [e for e in log if getattr(e, "level_name", "") in ("ERROR", "FATAL")]
    except Exception:
        return []


def _spiff_problem(exc: BaseException, f: _File, by_name, out: _Collector) -> None:
    """Turn an exception from SpiffWorkflow into a Problem with the best location we have."""
    target = by_name.get(getattr(exc, "file_name", None) or "", f)
    element_id = getattr(exc, "id", None) or None
    line = getattr(exc, "line_number", None)
    if not isinstance(line, int) or line <= 0:
        line = target.line_of(element_id)
    msg = _exc_message(exc)
    from SpiffWorkflow.bpmn.parser.ValidationException import ValidationException
    if not isinstance(exc, ValidationException):
        msg = f"SpiffWorkflow could not read the process ({type(exc).__name__}: {msg})"
    out.add(target.name, line, element_id, msg)


def _build_specs(parser, pid: str, seen: set, broken: set) -> None:
    """parser.get_spec(pid) and, recursively, the specs it calls that these files hold
    (like get_subprocess_specs, but a call to a process not given is left to our lint)."""
    from SpiffWorkflow.bpmn.specs.mixins.subworkflow_task import SubWorkflowTask as SubWorkflowTaskMixin
    spec = parser.get_spec(pid)
    for task_spec in list(spec.task_specs.values()):
        if not isinstance(task_spec, SubWorkflowTaskMixin):
            continue
        sub = task_spec.spec
        if sub in seen or sub in broken:
            continue
        seen.add(sub)
        pp = parser.get_process_parser(sub)
        if pp is not None and getattr(pp, "process_executable", False):
            _build_specs(parser, sub, seen, broken)


# --------------------------------------------------------------------------- lint

def _lint_file(f: _File, exec_ids, nonexec_ids, known_ids, roles, forms_dir, out: _Collector,
               report: Report) -> None:
    for proc in f.processes:
        pid = proc.get("id") or ""
        severity = ERROR if _is_executable(proc) else WARNING
        try:
            _lint_process(f, proc, pid, severity, exec_ids, nonexec_ids, known_ids, roles, forms_dir, out,
                          report)
        except Exception as exc:
            out.at(f, proc, f"internal error while checking process {pid}: {type(exc).__name__}: "
                            f"{_exc_message(exc)}")
            f.broken.add(pid)
    _lint_document(f, out)

    if not f.executable:
        out.add(f.name, _line(f.root), None, f"no executable process in {f.name}")
    elif len(f.executable) == 1:
        stem = re.sub(r"\.bpmn$", "", re.split(r"[\\/]", f.name)[-1])
        pid = f.executable[0]
        if stem != pid:
            out.add(f.name, f.line_of(pid), pid,
                    f"file name {stem}.bpmn differs from process id {pid} "
                    f"(convention: processes/<process_id>.bpmn)", WARNING)
    else:
        out.add(f.name, None, None,
                f"the file holds {len(f.executable)} executable processes ({', '.join(f.executable)}); "
                f"the convention is one per file", WARNING)


def _lint_process(f, proc, pid, sev, exec_ids, nonexec_ids, known_ids, roles, forms_dir, out, report):
    if not pid:
        out.at(f, proc, "a process has no id", sev)
        return
    if GENERATED_ID_RE.match(pid):
        out.at(f, proc, f"process id {pid} looks generated by the modeler; give it a readable snake_case id",
               WARNING)

    # Structure: start events and sequence flows, per container (process, sub-processes).
    containers = [proc] + [el for el in proc.iter() if _is_element(el) and el.tag in CONTAINER_TAGS]
    for container in containers:
        if _check_container(f, container, pid, sev, out):
            f.broken.add(pid)

    lane_of = _lane_resolver(proc)

    for el in proc.iter():
        if not _is_element(el):
            continue
        tag = el.tag
        el_id = el.get("id")

        if tag in FLOW_NODE_TAGS:
            _check_flow_node_docs(f, el, out)

        if tag in HUMAN_TASK_TAGS:
            _check_lane(f, el, lane_of, roles, sev, out)

        props = _properties(f, el, sev, out, pid)
        if props:
            if "formJsonSchemaFilename" in props:
                _check_form(f, el, pid, props["formJsonSchemaFilename"], forms_dir, sev, out)
            for name in EXPRESSION_PROPERTIES:
                if name in props:
                    _check_code(f, el, props[name][0], "eval", f"`{name}` property of {_kind(el)} {el_id}",
                                sev, out, line_el=props[name][1])

        if tag == _q("scriptTask"):
            scripts = el.findall(_q("script"))
            if not scripts or not any(_text(s).strip() for s in scripts):
                out.at(f, el, f"script task {el_id} has no script", WARNING)
            for s in scripts:
                if _text(s).strip():
                    _check_code(f, el, _text(s), "exec", f"script of task {el_id}", sev, out, line_el=s)

        for local, label in (("preScript", "pre-script"), ("postScript", "post-script")):
            for s in el.findall(f"{_q('extensionElements')}/{_q(local, SPIFF_NS)}"):
                if _text(s).strip():
                    _check_code(f, el, _text(s), "exec", f"{label} of {_kind(el)} {el_id}", sev, out, line_el=s)

        if tag == _q("sequenceFlow"):
            for cond in el.iter(_q("conditionExpression")):
                if _text(cond).strip():
                    _check_code(f, el, _text(cond), "eval", f"condition of sequence flow {el_id}", sev, out,
                                line_el=cond)

        if tag == _q("timerEventDefinition"):
            event = el.getparent()
            event_id = _nearest_id(event)
            found = False
            for local in ("timeDate", "timeDuration", "timeCycle"):
                for expr in el.findall(_q(local)):
                    found = True
                    if not _text(expr).strip():
                        out.at(f, expr, f"timer of event {event_id} has an empty {local} expression", sev,
                               element_id=event_id)
                    else:
                        _check_code(f, event, _text(expr), "eval", f"timer expression ({local}) of event {event_id}",
                                    sev, out, line_el=expr)
            if not found:
                out.at(f, el, f"timer of event {event_id} has no timeDate, timeDuration or timeCycle", sev,
                       element_id=event_id)

        if tag == _q("callActivity"):
            called = (el.get("calledElement") or "").strip()
            calls = report.calls.setdefault(pid, [])
            if not called:
                out.at(f, el, f"call activity {el_id} names no process (calledElement is empty)", sev)
            else:
                if called not in calls:
                    calls.append(called)
                if called in exec_ids or called in known_ids:
                    pass
                elif called in nonexec_ids:
                    out.at(f, el, f"call activity {el_id} calls process {called}, which is not executable", sev)
                else:
                    out.at(f, el, f"call activity {el_id} calls process {called}, which is neither in the files "
                                  f"given nor deployed", sev)

        # Other expressions the script engine evaluates at run time.
        local = _localname(el)
        if tag in (_q("loopCardinality"), _q("completionCondition"), _q("loopCondition"), _q("condition")):
            if _text(el).strip():
                owner = _owner_id(el)
                _check_code(f, el, _text(el), "eval", f"{local} of {owner}", sev, out, line_el=el,
                            element_id=owner)


def _check_container(f, container, pid, sev, out) -> bool:
    """Start events and dangling sequence flows of one process or sub-process; True when the
    structure is broken (SpiffWorkflow's get_spec would fail with a misleading message)."""
    broken = False
    cid = container.get("id") or pid
    name = _localname(container)
    children = [c for c in container if _is_element(c)]
    node_ids = {c.get("id") for c in children if c.tag in FLOW_NODE_TAGS and c.get("id")}

    if name == "process":
        if not any(c.tag == _q("startEvent") for c in children):
            out.at(f, container, f"process {cid} has no start event", sev)
            broken = True
    elif name in ("subProcess", "transaction"):
        starts = [c for c in children if c.tag == _q("startEvent")]
        if len(starts) != 1:
            out.at(f, container, f"{_kind(container)} {cid} has {len(starts) or 'no'} start "
                                 f"event{'s' if len(starts) > 1 else ''}; exactly one is required", sev)
            broken = True
        if not any(c.tag == _q("endEvent") for c in children):
            out.at(f, container, f"{_kind(container)} {cid} has no end event", sev)
            broken = True

    for flow in children:
        if flow.tag != _q("sequenceFlow"):
            continue
        fid = flow.get("id") or "(without id)"
        for attr, verb in (("sourceRef", "starts at"), ("targetRef", "points to")):
            ref = flow.get(attr)
            if not ref:
                out.at(f, flow, f"sequence flow {fid} has no {attr}", sev, element_id=flow.get("id"))
                broken = True
            elif ref not in node_ids:
                elsewhere = f.index.get(ref)
                if elsewhere is not None and elsewhere.tag in FLOW_NODE_TAGS:
                    out.at(f, flow, f"sequence flow {fid} {verb} node {ref}, which is not in the same "
                                    f"process or sub-process", sev, element_id=flow.get("id"))
                else:
                    out.at(f, flow, f"sequence flow {fid} {verb} missing node {ref}", sev,
                           element_id=flow.get("id"))
                broken = True
    return broken


def _lane_resolver(proc):
    """The lane element of a node exactly as SpiffWorkflow computes `task_spec.lane`: inside a
    sub-process the sub-process's lane wins; otherwise the lane whose flowNodeRef lists the node
    (the innermost, as nested lanes come later in document order)."""
    refs: dict[str, Any] = {}
    for lane in proc.iter(_q("lane")):
        for ref in lane.findall(_q("flowNodeRef")):
            if ref.text is not None:
                refs[ref.text] = lane

    def lane_of(el):
        parent = el.getparent()
        if parent is not None and parent.tag in CONTAINER_TAGS:
            outer = lane_of(parent)
            if outer is not None and outer.get("name") is not None:
                return outer
        return refs.get(el.get("id"))

    return lane_of


def _check_lane(f, el, lane_of, roles, sev, out) -> None:
    el_id = el.get("id")
    kind = _kind(el)
    lane = lane_of(el)
    if lane is None:
        out.at(f, el, f"{kind} {el_id} is in no lane; lanes name the role that acts", sev)
        return
    name = lane.get("name")
    if not name:
        out.at(f, el, f"{kind} {el_id} is in lane {lane.get('id')}, which has no name; lanes name the role "
                      f"that acts", sev)
    elif name not in roles:
        out.at(f, el, f"{kind} {el_id} is in lane '{name}', which is not a role "
                      f"(roles: {', '.join(roles)})", sev)


def _check_flow_node_docs(f, el, out) -> None:
    el_id = el.get("id") or ""
    doc = el.find(_q("documentation"))
    if doc is None or not "".join(doc.itertext()).strip():
        out.at(f, el, f"{_kind(el)} {el_id} has no documentation (cite its article)", WARNING)
    if el_id and GENERATED_ID_RE.match(el_id) and not el_id.endswith("_di"):
        out.at(f, el, f"id {el_id} looks generated by the modeler; give it a readable snake_case id", WARNING)


def _properties(f, el, sev, out, pid) -> dict[str, tuple[str, Any]]:
    """The `spiffworkflow:property` values of an element: name -> (value, element). Mirrors
    SpiffWorkflow (`.//spiffworkflow:property` under `extensionElements/spiffworkflow:properties`;
    the last one of a name wins); a property without name or value would crash its parser."""
    result: dict[str, tuple[str, Any]] = {}
    for props in el.findall(f"{_q('extensionElements')}/{_q('properties', SPIFF_NS)}"):
        for prop in props.iter(_q("property", SPIFF_NS)):
            name = prop.get("name")
            value = prop.get("value")
            owner = el.get("id")
            if name is None:
                out.at(f, prop, f"a property of {_kind(el)} {owner} has no name", sev, element_id=owner)
                f.broken.add(pid)
                continue
            if value is None:
                out.at(f, prop, f"property {name} of {_kind(el)} {owner} has no value", sev, element_id=owner)
                f.broken.add(pid)
                continue
            if name in result:
                out.at(f, prop, f"property {name} of {_kind(el)} {owner} is given twice; the last one wins",
                       WARNING, element_id=owner)
            elif name not in KNOWN_PROPERTIES:
                out.at(f, prop, f"unknown property {name} on {_kind(el)} {owner} "
                                f"(known: {', '.join(sorted(KNOWN_PROPERTIES))})", WARNING, element_id=owner)
            result[name] = (value, prop)
    return result


def _check_form(f, el, pid, prop, forms_dir, sev, out) -> None:
    value, prop_el = prop
    el_id = el.get("id")
    what = f"form file {value} of {_kind(el)} {el_id}"
    if not value.strip():
        out.at(f, prop_el, f"formJsonSchemaFilename of {_kind(el)} {el_id} is empty", sev, element_id=el_id)
        return
    if forms_dir is None:
        return
    try:
        from engine import forms
    except Exception as exc:
        out.at(f, prop_el, f"{what} could not be checked (engine.forms: {_exc_message(exc)})", sev,
               element_id=el_id)
        return
    try:
        path = forms.FormStore(Path(forms_dir)).resolve(pid, value)
    except Exception as exc:  # UnsafeFormPath and the like
        reason = getattr(exc, "reason", None) or _exc_message(exc)
        out.at(f, prop_el, f"{what} is refused: {reason}", sev, element_id=el_id)
        return
    if not path.is_file():
        out.at(f, prop_el, f"{what} not found (looked for {path})", sev, element_id=el_id)
        return
    try:
        problems = forms.check_schema_file(path)
    except Exception as exc:
        problems = [f"could not be checked ({type(exc).__name__}: {_exc_message(exc)})"]
    for problem in problems or ():
        text = _safe_str(problem)
        if text.startswith(f"{path}: "):
            text = text[len(f"{path}: "):]
        out.at(f, prop_el, f"{what} is invalid: {text}", sev, element_id=el_id)


def _check_code(f, el, source: str, mode: str, label: str, sev, out, *, line_el=None,
                element_id: Optional[str] = None) -> None:
    """Statically check a script (mode "exec") or an expression ("eval") with the restricted
    engine's rules; each problem becomes `<label>: <problem>`."""
    where = line_el if line_el is not None else el
    element_id = element_id or _nearest_id(el)
    try:
        from engine.scripting import check_source
    except Exception as exc:
        if not f.scripting_unavailable:
            f.scripting_unavailable = True
            out.at(f, where, f"scripts and expressions could not be checked (engine.scripting: "
                             f"{_exc_message(exc)})", sev, element_id=element_id)
        return
    try:
        problems = check_source(source, mode)
    except Exception as exc:
        problems = [f"could not be checked ({type(exc).__name__}: {_exc_message(exc)})"]
    base = _line(where)
    # The source is the element's text: "line N" of it is N - 1 lines below the start tag
    # (eval strips leading blanks first). Property values (attributes) keep the element's line.
    text_source = line_el is not None and base is not None and source == _text(line_el)
    skipped = source[:len(source) - len(source.lstrip())].count("\n") if mode == "eval" else 0
    for problem in problems or ():
        text = _safe_str(problem)
        line = base
        m = re.match(r"line (\d+):", text)
        if text_source and m and int(m.group(1)) > 0:
            line = base + skipped + int(m.group(1)) - 1
        out.add(f.name, line, element_id, f"{label}: {text}", sev)


def _lint_document(f, out) -> None:
    """Checks over the whole document: unknown spiffworkflow extensions, and expressions that
    live outside processes (message payloads and correlations)."""
    for el in f.root.iter():
        if not _is_element(el):
            continue
        tag = el.tag
        if tag.startswith("{" + SPIFF_NS + "}"):
            local = _localname(el)
            if local not in KNOWN_SPIFF_ELEMENTS:
                owner = _nearest_id(el)
                out.at(f, el, f"unknown extension element spiffworkflow:{local} on {owner or 'the document'} "
                              f"(SpiffWorkflow 3.2 ignores it)", WARNING, element_id=owner)
        for attr in el.attrib:
            if attr.startswith("{" + SPIFF_NS + "}") and attr.split("}", 1)[1] not in KNOWN_SPIFF_ATTRIBUTES:
                out.at(f, el, f"unknown extension attribute spiffworkflow:{attr.split('}', 1)[1]} on "
                              f"{_nearest_id(el) or 'the document'} (SpiffWorkflow 3.2 ignores it)", WARNING)

    sev = ERROR if f.executable else WARNING
    for store in f.root.iter(_q("dataStore")):
        out.at(f, store, f"data store {store.get('id')} ({store.get('name')}) is not supported: SpiffWorkflow has "
                         f"no implementation for it; keep such data in our own tables", sev)
    for local in ("messagePayload", "payloadExpression", "expression"):
        for el in f.root.iter(_q(local, SPIFF_NS)):
            if _text(el).strip():
                owner = _nearest_id(el.getparent())
                _check_code(f, el, _text(el), "eval", f"spiffworkflow:{local} of {owner}", sev, out,
                            line_el=el, element_id=owner)
    for cpre in f.root.iter(_q("correlationPropertyRetrievalExpression")):
        for el in cpre:
            if _is_element(el) and _text(el).strip():
                owner = _nearest_id(cpre.getparent())
                _check_code(f, el, _text(el), "eval", f"correlation expression of {owner}", sev, out,
                            line_el=el, element_id=owner)
