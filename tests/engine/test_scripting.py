"""The restricted script engine: what scripts may not do, what they may, and what they may spend."""
from __future__ import annotations

import threading
from datetime import datetime, timezone

import pytest
from lxml import etree
from RestrictedPython import compile_restricted_exec
from SpiffWorkflow.bpmn.exceptions import WorkflowTaskException
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.spiff.parser.process import VALIDATOR, SpiffBpmnParser
from SpiffWorkflow.util.task import TaskState

from engine import scripting
from engine.errors import ScriptError, ScriptRefused
from engine.scripting import (HELPERS, RestrictedEnvironment, RestrictedScriptEngine, check_source,
                              evaluate_expression, start_run)


def run(script: str, **data) -> dict:
    """Run a script over task data (checked and compiled like the engine does) and return the data."""
    RestrictedEnvironment().execute(script, data)
    return data


def run_unchecked(script: str, **data) -> dict:
    """Run a script compiled by the RestrictedPython policy alone, skipping check_source's extra checks."""
    result = compile_restricted_exec(script, policy=scripting._Policy)
    assert result.code is not None, result.errors
    scope = {**data, **scripting.guarded_globals()}
    exec(result.code, scope)
    return scope


# ---------------------------------------------------------------------- refused statically
@pytest.mark.parametrize("source, named", [
    ("open('/etc/passwd')", "open"),
    ("__import__('os')", "__import__"),
    ("import os", "import"),
    ("from os import path", "import"),
    ("eval('1')", "eval"),
    ("exec('x=1')", "exec"),
    ("getattr(x, 'y')", "getattr"),
    ("type(x)", "type"),
    ("while True: pass", "while"),
    ("().__class__.__base__.__subclasses__()", "__class__"),
    ("x.__dict__", "__dict__"),
    ("class A: pass", "class"),
    ("global x", "global"),
    ("def f():\n    nonlocal x", "nonlocal"),
    ("def f():\n    yield 1", "yield"),
    ("async def f(): pass", "async"),
    ("'{0.__class__}'.format(1)", "format"),
    ("g = (x for x in [1])\ng.gi_frame", "gi_frame"),
    ("[].__class__", "__class__"),
    ("int.mro()", "mro"),
    ("vars()", "vars"),
    ("print(secret)", "print"),
])
def test_forbidden_construct_is_refused_with_a_message_naming_it(source, named):
    problems = check_source(source, "exec")
    assert problems, source
    assert any(named in problem for problem in problems), problems
    assert all(problem.startswith("line ") for problem in problems)


def test_problem_names_the_line():
    assert check_source("x = 1\nwhile x: pass", "exec") == ["line 2: `while` loops are not allowed"]
    assert check_source("ok = 1\nopen('f')", "exec") == ["line 2: name `open` is not allowed"]


def test_syntax_error_is_reported_with_its_line():
    (problem,) = check_source("x = 1\ny = (", "exec")
    assert problem.startswith("line 2: syntax error")


def test_expression_mode_refuses_statements_and_forbidden_names():
    assert check_source("x = 1", "eval")
    assert check_source("__import__('os')", "eval")
    assert check_source("  amount > 10 and kind == 'a'\n", "eval") == []


def test_restrictedpython_refusals_are_reported_too():
    assert any("Match" in p for p in check_source("match x:\n    case 1:\n        pass", "exec"))


def test_refused_script_does_not_run_and_leaves_the_data_alone():
    data = {"x": 1}
    with pytest.raises(ScriptRefused, match="import"):
        RestrictedEnvironment().execute("y = 2\nimport os", data)
    assert data == {"x": 1}


# ---------------------------------------------------------------------- ordinary scripts
def test_arithmetic_comprehensions_dicts_and_fstrings_run():
    script = (
        "total = sum(a * b for a, b in zip(prices, counts))\n"
        "doubled = [p * 2 for p in prices if p > 1]\n"
        "summary = {'total': total, 'n': len(prices), 'max': max(prices)}\n"
        "label = f'{name}: {total:.2f} ({len(doubled)!r} items)'\n"
        "pct = '%d%%' % 50\n"
        "def half(v):\n    return v / 2\n"
        "halves = sorted(half(p) for p in prices)\n"
        "count = 0\n"
        "for _ in range(3):\n    count += 1\n")
    assert check_source(script, "exec") == []
    data = run(script, prices=[1, 2, 3], counts=[10, 20, 30], name="fee")
    assert data["total"] == 140
    assert data["doubled"] == [4, 6]
    assert data["summary"] == {"total": 140, "n": 3, "max": 3}
    assert data["label"] == "fee: 140.00 (2 items)"
    assert data["pct"] == "50%"
    assert data["halves"] == [0.5, 1.0, 1.5]
    assert data["count"] == 3
    assert "half" not in data  # functions the script defined are not task data


def test_helpers_are_callable_and_removed_from_the_task_data_afterwards():
    data = run("j = jurisdiction('650102')\np = prefecture_of('650102')\no = organisation(17)\nu = user('expert-1')")
    assert data == {"j": "j:650102", "p": "650100", "o": "o:17", "u": "u:expert-1"}


def test_isinstance_works_but_types_lead_nowhere():
    assert run("ok = isinstance(x, str) and isinstance(n, (int, float))", x="a", n=1)["ok"] is True
    with pytest.raises(ScriptError, match="type"):
        run_unchecked("m = int.mro()")


def test_conditions_and_expressions_evaluate_over_data():
    env = RestrictedEnvironment()
    assert env.evaluate("amount > 10 and kind in ('a', 'b')", {"amount": 11, "kind": "a"}) is True
    assert evaluate_expression("organisation(enterprise_id)", {"enterprise_id": 17}) == "o:17"
    assert RestrictedScriptEngine().evaluate_expression("jurisdiction(code)", {"code": "650102"}) == "j:650102"


def test_expression_failures_become_script_errors():
    with pytest.raises(ScriptError, match="NameError"):
        evaluate_expression("missing + 1", {})
    with pytest.raises(ScriptRefused):
        evaluate_expression("__import__('os')", {})


def test_task_data_cannot_replace_the_guards():
    assert evaluate_expression("x.upper()", {"x": "a", "_getattr_": "not a guard"}) == "A"


def test_engine_takes_extra_helpers():
    engine = RestrictedScriptEngine(helpers={"is_filed_agency": lambda org_id: org_id == 17})
    assert engine.evaluate_expression("is_filed_agency(agency_id)", {"agency_id": 17}) is True
    assert evaluate_expression("twice(3)", {}, helpers={"twice": lambda v: v * 2}) == 6
    with pytest.raises(ValueError):
        RestrictedScriptEngine(helpers={"_sneaky": print})


# ---------------------------------------------------------------------- escapes at run time
def test_str_format_attribute_walk_is_refused_at_run_time():
    # '{0.__class__}'.format(1) passes RestrictedPython's compiler; safer_getattr stops it.
    with pytest.raises(NotImplementedError):
        run_unchecked("leak = '{0.__class__}'.format(1)")
    with pytest.raises(NotImplementedError):
        run_unchecked("leak = 'x'.format_map({})")


def test_format_builtin_and_fstring_specs_cannot_walk_attributes():
    with pytest.raises(ValueError):
        run_unchecked("leak = format(1, '{0.__class__}')")
    with pytest.raises(ValueError):
        run_unchecked("spec = '{0.__class__}'\nleak = f'{1:{spec}}'")


def test_generator_frames_and_dunder_attributes_are_refused_at_run_time():
    getattr_guard = scripting.guarded_globals()["_getattr_"]
    generator = (x for x in [1])
    for obj, name in [(generator, "gi_frame"), (generator, "gi_code"), ([], "__class__"),
                      (HELPERS["today"], "__globals__")]:
        with pytest.raises(AttributeError):
            getattr_guard(obj, name)
    assert compile_restricted_exec("[].__class__", policy=scripting._Policy).code is None
    assert compile_restricted_exec("(x for x in [1]).gi_frame", policy=scripting._Policy).code is None


def test_unbound_methods_of_types_are_refused_at_run_time():
    with pytest.raises(ScriptError, match="type"):
        run_unchecked("x = list.mro()")
    with pytest.raises(AttributeError):  # `str` is a checked wrapper, not the type
        run_unchecked("x = str.format('{0.__class__}', 1)")


# ---------------------------------------------------------------------- cost bounds
def test_runaway_range_is_stopped():
    with pytest.raises(ScriptError, match="range"):
        run("for i in range(10**9):\n    pass")


def test_nested_loops_exhaust_the_iteration_budget():
    with pytest.raises(ScriptError, match="iteration budget of 200000"):
        run("for i in range(1000):\n    for j in range(1000):\n        pass")


def test_comprehensions_count_against_the_iteration_budget():
    with pytest.raises(ScriptError, match="iteration budget"):
        run("x = [[j for j in range(1000)] for i in range(1000)]")


def test_recursion_without_loops_spends_the_budget_too():
    with pytest.raises(ScriptError, match="iteration budget"):
        run("def f(n):\n    return f(n - 1) + f(n - 1) if n else 1\nx = f(40)")
    with pytest.raises(ScriptError, match="iteration budget"):
        run("f = lambda n: f(n - 1) + f(n - 1) if n else 1\nx = f(40)")


def test_swallowing_the_budget_error_does_not_help():
    with pytest.raises(ScriptError, match="iteration budget"):
        run("try:\n    for i in range(10**6):\n        pass\nexcept:\n    pass")


@pytest.mark.parametrize("script", [
    "x = 'x' * 10**9",
    "x = [0] * 10**9",
    "x = 10**9 * [0]",
    "x = 2 ** 10**8",
    "x = 1 << 10**9",
    "x = [[0] * 1000] * 10000",
    "s = 'ab'\nfor i in range(40):\n    s = s + s",
    "s = 'ab'\nfor i in range(40):\n    s += s",
    "l = [1]\nfor i in range(40):\n    l.extend(l)",
    "x = 'a'.ljust(10**9)",
    "x = 'ab'.replace('', 'x' * 999999)",
    "x = f'{1:>1000000000}'",
    "x = format(1, '>1000000000')",
    "x = '%1000000000d' % 1",
    "x = sum([[1]] * 10, [])",
    "x = [1]\nfor i in range(40):\n    x = [x, x]\ny = str(x)",
    "x = [1]\nfor i in range(40):\n    x = [x, x]",  # refused as task data after the script
])
def test_oversized_values_are_refused(script):
    with pytest.raises(ScriptError):
        run(script)


def test_wall_clock_budget_trips():
    with start_run(budget_seconds=0.01, max_iterations=10**9):
        with pytest.raises(ScriptError, match="time budget"):
            run("for i in range(1000):\n    for j in range(1000):\n        pass")
        with pytest.raises(ScriptError, match="time budget"):
            run("x = 1")  # the next script of the same run fails at its start


def test_budget_is_shared_by_the_scripts_of_one_run_and_reset_by_start_run():
    loop = "for i in range(60):\n    pass"
    with start_run(max_iterations=100):
        run(loop)
        with pytest.raises(ScriptError, match="iteration budget of 100"):
            run(loop)
    start_run(max_iterations=100)  # the plain-call form
    run(loop)
    with start_run(max_iterations=100):
        run(loop)


def test_threads_do_not_share_a_budget():
    outcome = []
    with start_run(max_iterations=10):
        thread = threading.Thread(target=lambda: outcome.append(run("for i in range(100):\n    pass")))
        thread.start()
        thread.join()
    assert outcome == [{"i": 99}]


# ---------------------------------------------------------------------- helpers
def test_date_helpers():
    assert HELPERS["prefecture_of"]("650102") == "650100"
    assert HELPERS["add_days"]("2025-02-27", 2) == "2025-03-01"
    assert HELPERS["add_days"]("2025-03-31T23:59:59+08:00", -1) == "2025-03-30T23:59:59+08:00"
    assert HELPERS["parse_date"]("2025/3/1") == "2025-03-01"
    assert HELPERS["parse_date"]("2025年3月1日") == "2025-03-01"
    assert HELPERS["parse_date"]("2025-03-31T16:30:00+00:00") == "2025-04-01"  # the date in China
    with pytest.raises(ValueError):
        HELPERS["prefecture_of"]("65")


def test_today_and_now_read_the_engine_clock():
    from engine import clock
    with clock.use_clock(datetime(2025, 3, 31, 16, 30, tzinfo=timezone.utc)):
        assert run("t = today()\nn = now()") == {"t": "2025-04-01", "n": "2025-04-01T00:30:00+08:00"}


def test_due_helper_gives_the_statutory_deadline_as_iso_text():
    from engine import deadlines
    expected = deadlines.due("2025-03-01", "P30D").isoformat()
    assert run("d = due(start, 'P30D')", start="2025-03-01") == {"start": "2025-03-01", "d": expected}


# ---------------------------------------------------------------------- end to end with SpiffWorkflow
def process_xml(script: str) -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
                  id="defs_double" targetNamespace="http://bpmn.io/schema/bpmn">
  <bpmn:process id="double" isExecutable="true">
    <bpmn:startEvent id="start"><bpmn:outgoing>to_script</bpmn:outgoing></bpmn:startEvent>
    <bpmn:sequenceFlow id="to_script" sourceRef="start" targetRef="compute" />
    <bpmn:scriptTask id="compute" name="Double x">
      <bpmn:incoming>to_script</bpmn:incoming><bpmn:outgoing>to_gateway</bpmn:outgoing>
      <bpmn:script>{script}</bpmn:script>
    </bpmn:scriptTask>
    <bpmn:sequenceFlow id="to_gateway" sourceRef="compute" targetRef="is_big" />
    <bpmn:exclusiveGateway id="is_big" default="to_small">
      <bpmn:incoming>to_gateway</bpmn:incoming>
      <bpmn:outgoing>to_big</bpmn:outgoing><bpmn:outgoing>to_small</bpmn:outgoing>
    </bpmn:exclusiveGateway>
    <bpmn:sequenceFlow id="to_big" sourceRef="is_big" targetRef="mark_big">
      <bpmn:conditionExpression>y &gt; 10</bpmn:conditionExpression>
    </bpmn:sequenceFlow>
    <bpmn:sequenceFlow id="to_small" sourceRef="is_big" targetRef="mark_small" />
    <bpmn:scriptTask id="mark_big"><bpmn:incoming>to_big</bpmn:incoming><bpmn:outgoing>big_done</bpmn:outgoing>
      <bpmn:script>size = 'big'</bpmn:script></bpmn:scriptTask>
    <bpmn:scriptTask id="mark_small"><bpmn:incoming>to_small</bpmn:incoming><bpmn:outgoing>small_done</bpmn:outgoing>
      <bpmn:script>size = 'small'</bpmn:script></bpmn:scriptTask>
    <bpmn:sequenceFlow id="big_done" sourceRef="mark_big" targetRef="end" />
    <bpmn:sequenceFlow id="small_done" sourceRef="mark_small" targetRef="end" />
    <bpmn:endEvent id="end"><bpmn:incoming>big_done</bpmn:incoming><bpmn:incoming>small_done</bpmn:incoming></bpmn:endEvent>
  </bpmn:process>
</bpmn:definitions>""".encode()


def start_workflow(script: str, **data) -> BpmnWorkflow:
    parser = SpiffBpmnParser(validator=VALIDATOR)
    parser.add_bpmn_xml(etree.fromstring(process_xml(script)), filename="double.bpmn")
    workflow = BpmnWorkflow(parser.get_spec("double"), script_engine=RestrictedScriptEngine())
    for task in workflow.get_tasks(state=TaskState.READY):
        task.data.update(data)
    return workflow


@pytest.mark.parametrize("x, size", [(7, "big"), (3, "small")])
def test_workflow_runs_script_task_and_gateway_condition_in_the_restricted_engine(x, size):
    workflow = start_workflow("y = x * 2", x=x)
    workflow.do_engine_steps()
    assert workflow.is_completed()
    assert workflow.last_task.data == {"x": x, "y": 2 * x, "size": size}


def test_workflow_script_that_imports_os_fails_without_running(tmp_path):
    witness = tmp_path / "ran"
    workflow = start_workflow(f"marker = 1\n__import__('os').system('touch {witness}')", x=1)
    with pytest.raises(WorkflowTaskException):
        workflow.do_engine_steps()
    assert not witness.exists()
    (failed,) = workflow.get_tasks(state=TaskState.ERROR)
    assert "marker" not in failed.data
