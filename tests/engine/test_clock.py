"""The injectable clock: per-context fixed time, and SpiffWorkflow timers reading it."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.spiff.parser.process import SpiffBpmnParser
from SpiffWorkflow.util.task import TaskState

from engine import clock

SHANGHAI = ZoneInfo("Asia/Shanghai")

TIMER_BPMN = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
                  id="defs_wait_until" targetNamespace="http://bpmn.io/schema/bpmn">
  <bpmn:process id="wait_until" isExecutable="true">
    <bpmn:startEvent id="start">
      <bpmn:outgoing>flow_start</bpmn:outgoing>
    </bpmn:startEvent>
    <bpmn:sequenceFlow id="flow_start" sourceRef="start" targetRef="wait_2030" />
    <bpmn:intermediateCatchEvent id="wait_2030" name="Wait until 2030">
      <bpmn:incoming>flow_start</bpmn:incoming>
      <bpmn:outgoing>flow_end</bpmn:outgoing>
      <bpmn:timerEventDefinition id="timer_2030">
        <bpmn:timeDate>"2030-01-01T00:00:00+08:00"</bpmn:timeDate>
      </bpmn:timerEventDefinition>
    </bpmn:intermediateCatchEvent>
    <bpmn:sequenceFlow id="flow_end" sourceRef="wait_2030" targetRef="end" />
    <bpmn:endEvent id="end">
      <bpmn:incoming>flow_end</bpmn:incoming>
    </bpmn:endEvent>
  </bpmn:process>
</bpmn:definitions>
"""

TIMER_AT = datetime(2030, 1, 1, tzinfo=SHANGHAI)


@pytest.fixture(autouse=True)
def _real_time_between_tests():
    clock.reset()
    yield
    clock.reset()


def _timer_workflow() -> BpmnWorkflow:
    parser = SpiffBpmnParser()
    parser.add_bpmn_str(TIMER_BPMN.encode("utf-8"), filename="wait_until.bpmn")
    return BpmnWorkflow(parser.get_spec("wait_until"))


def _timer_task(workflow: BpmnWorkflow):
    return next(t for t in workflow.get_tasks() if t.task_spec.bpmn_id == "wait_2030")


def test_now_is_aware_utc_real_time_by_default():
    before = datetime.now(timezone.utc)
    current = clock.now()
    after = datetime.now(timezone.utc)
    assert current.tzinfo is not None and current.utcoffset() == timedelta(0)
    assert before <= current <= after
    assert not clock.is_fixed()


def test_use_clock_fixes_now_and_restores_it():
    fixed = datetime(2025, 1, 31, 9, 30, tzinfo=SHANGHAI)
    with clock.use_clock(fixed) as current:
        assert current == fixed
        assert clock.now() == fixed
        assert clock.now().utcoffset() == timedelta(0)
        assert clock.now() == clock.now()  # frozen, not running
        with clock.use_clock(fixed + timedelta(days=1)):
            assert clock.now() == fixed + timedelta(days=1)
        assert clock.now() == fixed
    assert not clock.is_fixed()
    assert abs(clock.now() - datetime.now(timezone.utc)) < timedelta(seconds=5)


def test_use_clock_is_per_thread_a_second_thread_sees_real_time():
    fixed = datetime(2001, 1, 1, tzinfo=timezone.utc)
    seen: dict[str, datetime] = {}
    with clock.use_clock(fixed):
        worker = threading.Thread(target=lambda: seen.setdefault("other", clock.now()))
        worker.start()
        worker.join()
        assert clock.now() == fixed
    assert seen["other"].year >= 2024
    assert abs(seen["other"] - datetime.now(timezone.utc)) < timedelta(seconds=5)


def test_set_now_advance_and_reset():
    clock.set_now(datetime(2025, 3, 1, tzinfo=timezone.utc))
    assert clock.now() == datetime(2025, 3, 1, tzinfo=timezone.utc)
    assert clock.advance(timedelta(days=31)) == datetime(2025, 4, 1, tzinfo=timezone.utc)
    assert clock.now() == datetime(2025, 4, 1, tzinfo=timezone.utc)
    clock.reset()
    assert not clock.is_fixed()
    with pytest.raises(ValueError, match="fixed clock"):
        clock.advance(timedelta(days=1))


@pytest.mark.parametrize("bad", [datetime(2025, 1, 1), "2025-01-01T00:00:00+08:00"], ids=["naive", "string"])
def test_naive_or_non_datetime_refused(bad):
    with pytest.raises(ValueError):
        clock.set_now(bad)
    with pytest.raises(ValueError):
        with clock.use_clock(bad):
            pass  # pragma: no cover


def test_install_is_idempotent_and_keeps_datetime_behaviour():
    from SpiffWorkflow.bpmn.specs.event_definitions import timer

    clock.install()
    clock.install()
    assert clock.installed()
    patched = timer.datetime
    assert patched is clock.ClockDatetime
    parsed = patched.fromisoformat("2030-01-01T00:00:00+08:00")
    assert type(parsed) is datetime
    assert isinstance(parsed, patched) and isinstance(datetime(2020, 1, 1), patched)
    assert timer.TimerEventDefinition.get_datetime("2030-01-01T00:00:00+08:00") == TIMER_AT
    with clock.use_clock(TIMER_AT):
        assert patched.now(timezone.utc) == TIMER_AT
        assert patched.now(SHANGHAI).isoformat() == "2030-01-01T00:00:00+08:00"


def test_spiff_timer_fires_only_after_the_clock_passes_its_time_date():
    clock.install()
    with clock.use_clock(datetime(2029, 12, 31, 23, 59, tzinfo=SHANGHAI)):
        workflow = _timer_workflow()
        workflow.do_engine_steps()
        workflow.refresh_timers()
        workflow.do_engine_steps()
        assert not workflow.is_completed()
        assert _timer_task(workflow).state == TaskState.WAITING

    # still before the timer on another day
    with clock.use_clock(datetime(2029, 12, 31, 15, 59, 59, tzinfo=timezone.utc)):
        workflow.refresh_timers()
        workflow.do_engine_steps()
        assert not workflow.is_completed()

    with clock.use_clock(TIMER_AT + timedelta(seconds=1)):
        workflow.refresh_timers()
        workflow.do_engine_steps()
        assert _timer_task(workflow).state == TaskState.COMPLETED
        assert workflow.is_completed()


def test_spiff_timer_does_not_fire_on_real_time_when_a_fixed_clock_says_before():
    clock.install()
    # Set the clock to long before the timer: even if the machine's clock were past 2030 the
    # workflow waits, which shows the timer reads our clock rather than the system time.
    with clock.use_clock(datetime(2000, 1, 1, tzinfo=timezone.utc)):
        workflow = _timer_workflow()
        workflow.do_engine_steps()
        workflow.refresh_timers()
        workflow.do_engine_steps()
        assert not workflow.is_completed()
