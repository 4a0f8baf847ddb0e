"""engine.layout: diagram interchange (BPMN DI) for hand-written processes, and `cleanaudit layout`.

Hand-written fixtures (lanes, a loop back, a boundary timer, an event sub-process, a call activity,
an embedded sub-process, a data object) get complete, well-formed DI; every file in processes/
gets complete DI without a new validation problem; the result is rendered by bpmn-js in Chromium
(@pytest.mark.browser; screenshots in test-artifacts/screenshots/layout-*.png).
"""
from __future__ import annotations

import difflib
import functools
import os
import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from http.server import HTTPServer, SimpleHTTPRequestHandler
from pathlib import Path

import pytest
from lxml import etree

from engine.layout import (BPMN_NS, BPMNDI_NS, DC_NS, DI_NS, has_any_di, has_complete_di, layout_bpmn,
                           layout_document, strip_di)
from engine.validate import validate_files

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = sorted((ROOT / "processes").glob("*.bpmn"))
MIWG = sorted((ROOT / "tests" / "data" / "miwg").glob("*.bpmn"))
FORMS = ROOT / "forms"
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
BPMN_DIST = ROOT / "webui" / "node_modules" / "bpmn-js" / "dist"
NS = {"bpmn": BPMN_NS, "bpmndi": BPMNDI_NS, "dc": DC_NS, "di": DI_NS}
FLOW_NODES = ("task", "userTask", "manualTask", "scriptTask", "serviceTask", "sendTask", "receiveTask",
              "businessRuleTask", "callActivity", "subProcess", "transaction", "adHocSubProcess",
              "startEvent", "endEvent", "intermediateCatchEvent", "intermediateThrowEvent", "boundaryEvent",
              "exclusiveGateway", "parallelGateway", "inclusiveGateway", "eventBasedGateway", "complexGateway")

# --------------------------------------------------------------------------- fixtures

LANES = """<?xml version="1.0" encoding="UTF-8"?>
<!-- Layout fixture: two lanes, a return-for-revision loop, a boundary timer with its own path,
     an event sub-process, an embedded sub-process, a call activity and a data object. -->
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
                  xmlns:spiffworkflow="http://spiffworkflow.org/bpmn/schema/1.0/core"
                  id="layout_lanes_definitions"
                  targetNamespace="http://cleanaudit.example/bpmn/layout_lanes">
  <bpmn:message id="layout_ping" name="layout_ping" />
  <bpmn:process id="layout_lanes" name="版面测试：泳道" isExecutable="true">
    <bpmn:documentation>Art. 1: a fixture for engine.layout.</bpmn:documentation>
    <bpmn:laneSet id="layout_lanes_lanes">
      <bpmn:lane id="lane_enterprise" name="enterprise">
        <bpmn:flowNodeRef>start</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>merge_revision</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>submit_report</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>report_overdue</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>remind</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>reminded</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>run_stages</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>archive</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>done</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>ping_start</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>note_ping</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>ping_done</bpmn:flowNodeRef>
      </bpmn:lane>
      <bpmn:lane id="lane_local_epb" name="local_epb">
        <bpmn:flowNodeRef>review_report</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>review_route</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>archive_start</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>file_report</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>archive_done</bpmn:flowNodeRef>
      </bpmn:lane>
    </bpmn:laneSet>
    <bpmn:dataObject id="report_state" name="报告状态" />
    <bpmn:dataObjectReference id="report_state_ref" name="report_state" dataObjectRef="report_state" />

    <bpmn:startEvent id="start" name="开始">
      <bpmn:outgoing>flow_start</bpmn:outgoing>
    </bpmn:startEvent>
    <bpmn:sequenceFlow id="flow_start" sourceRef="start" targetRef="merge_revision" />
    <bpmn:exclusiveGateway id="merge_revision" name="">
      <bpmn:incoming>flow_start</bpmn:incoming>
      <bpmn:incoming>flow_returned</bpmn:incoming>
      <bpmn:outgoing>flow_to_submit</bpmn:outgoing>
    </bpmn:exclusiveGateway>
    <bpmn:sequenceFlow id="flow_to_submit" sourceRef="merge_revision" targetRef="submit_report" />
    <!-- the enterprise submits (a comment that must survive the layout) -->
    <bpmn:userTask id="submit_report" name="报送审核报告">
      <bpmn:documentation>Art. 16: the report.</bpmn:documentation>
      <bpmn:extensionElements>
        <spiffworkflow:properties>
          <spiffworkflow:property name="article" value="Art. 16" />
        </spiffworkflow:properties>
        <spiffworkflow:instructionsForEndUser>请报送报告。</spiffworkflow:instructionsForEndUser>
      </bpmn:extensionElements>
      <bpmn:incoming>flow_to_submit</bpmn:incoming>
      <bpmn:outgoing>flow_submitted</bpmn:outgoing>
      <bpmn:dataOutputAssociation id="submit_report_state">
        <bpmn:targetRef>report_state_ref</bpmn:targetRef>
      </bpmn:dataOutputAssociation>
    </bpmn:userTask>
    <bpmn:boundaryEvent id="report_overdue" name="报送期满" cancelActivity="false" attachedToRef="submit_report">
      <bpmn:outgoing>flow_overdue</bpmn:outgoing>
      <bpmn:timerEventDefinition id="report_overdue_timer">
        <bpmn:timeDate>report_due</bpmn:timeDate>
      </bpmn:timerEventDefinition>
    </bpmn:boundaryEvent>
    <bpmn:sequenceFlow id="flow_overdue" sourceRef="report_overdue" targetRef="remind" />
    <bpmn:scriptTask id="remind" name="提醒企业" scriptFormat="python">
      <bpmn:documentation>Art. 16: a reminder.</bpmn:documentation>
      <bpmn:incoming>flow_overdue</bpmn:incoming>
      <bpmn:outgoing>flow_reminded</bpmn:outgoing>
      <bpmn:script>reminded = True</bpmn:script>
    </bpmn:scriptTask>
    <bpmn:sequenceFlow id="flow_reminded" sourceRef="remind" targetRef="reminded" />
    <bpmn:endEvent id="reminded" name="已提醒">
      <bpmn:incoming>flow_reminded</bpmn:incoming>
    </bpmn:endEvent>
    <bpmn:sequenceFlow id="flow_submitted" sourceRef="submit_report" targetRef="review_report" />
    <bpmn:userTask id="review_report" name="审查审核报告">
      <bpmn:documentation>Art. 16: the review.</bpmn:documentation>
      <bpmn:incoming>flow_submitted</bpmn:incoming>
      <bpmn:outgoing>flow_reviewed</bpmn:outgoing>
    </bpmn:userTask>
    <bpmn:sequenceFlow id="flow_reviewed" sourceRef="review_report" targetRef="review_route" />
    <bpmn:exclusiveGateway id="review_route" name="报告是否通过？" default="flow_accepted">
      <bpmn:incoming>flow_reviewed</bpmn:incoming>
      <bpmn:outgoing>flow_returned</bpmn:outgoing>
      <bpmn:outgoing>flow_accepted</bpmn:outgoing>
      <bpmn:outgoing>flow_to_archive</bpmn:outgoing>
    </bpmn:exclusiveGateway>
    <bpmn:sequenceFlow id="flow_returned" name="退回" sourceRef="review_route" targetRef="merge_revision">
      <bpmn:conditionExpression>report_returned</bpmn:conditionExpression>
    </bpmn:sequenceFlow>
    <bpmn:sequenceFlow id="flow_to_archive" name="归档" sourceRef="review_route" targetRef="archive">
      <bpmn:conditionExpression>report_archived</bpmn:conditionExpression>
    </bpmn:sequenceFlow>
    <bpmn:sequenceFlow id="flow_accepted" name="通过" sourceRef="review_route" targetRef="run_stages" />
    <bpmn:callActivity id="run_stages" name="清洁生产审核（六个阶段）" calledElement="audit_stages">
      <bpmn:documentation>Art. 13: the six stages.</bpmn:documentation>
      <bpmn:incoming>flow_accepted</bpmn:incoming>
      <bpmn:outgoing>flow_stages_done</bpmn:outgoing>
    </bpmn:callActivity>
    <bpmn:sequenceFlow id="flow_stages_done" sourceRef="run_stages" targetRef="done" />
    <bpmn:subProcess id="archive" name="归档">
      <bpmn:documentation>Art. 20: keep the report.</bpmn:documentation>
      <bpmn:incoming>flow_to_archive</bpmn:incoming>
      <bpmn:outgoing>flow_archived</bpmn:outgoing>
      <bpmn:startEvent id="archive_start">
        <bpmn:outgoing>flow_archive_start</bpmn:outgoing>
      </bpmn:startEvent>
      <bpmn:sequenceFlow id="flow_archive_start" sourceRef="archive_start" targetRef="file_report" />
      <bpmn:scriptTask id="file_report" name="存档" scriptFormat="python">
        <bpmn:documentation>Art. 20: file it.</bpmn:documentation>
        <bpmn:incoming>flow_archive_start</bpmn:incoming>
        <bpmn:outgoing>flow_filed</bpmn:outgoing>
        <bpmn:script>filed = True</bpmn:script>
      </bpmn:scriptTask>
      <bpmn:sequenceFlow id="flow_filed" sourceRef="file_report" targetRef="archive_done" />
      <bpmn:endEvent id="archive_done">
        <bpmn:incoming>flow_filed</bpmn:incoming>
      </bpmn:endEvent>
    </bpmn:subProcess>
    <bpmn:sequenceFlow id="flow_archived" sourceRef="archive" targetRef="done" />
    <bpmn:endEvent id="done" name="完成">
      <bpmn:incoming>flow_stages_done</bpmn:incoming>
      <bpmn:incoming>flow_archived</bpmn:incoming>
    </bpmn:endEvent>

    <bpmn:subProcess id="on_ping" name="收到提醒" triggeredByEvent="true">
      <bpmn:startEvent id="ping_start" name="提醒" isInterrupting="false">
        <bpmn:outgoing>flow_ping</bpmn:outgoing>
        <bpmn:messageEventDefinition id="ping_start_message" messageRef="layout_ping" />
      </bpmn:startEvent>
      <bpmn:sequenceFlow id="flow_ping" sourceRef="ping_start" targetRef="note_ping" />
      <bpmn:scriptTask id="note_ping" name="记录提醒" scriptFormat="python">
        <bpmn:documentation>Art. 1: note it.</bpmn:documentation>
        <bpmn:incoming>flow_ping</bpmn:incoming>
        <bpmn:outgoing>flow_ping_noted</bpmn:outgoing>
        <bpmn:script>pinged = True</bpmn:script>
      </bpmn:scriptTask>
      <bpmn:sequenceFlow id="flow_ping_noted" sourceRef="note_ping" targetRef="ping_done" />
      <bpmn:endEvent id="ping_done">
        <bpmn:incoming>flow_ping_noted</bpmn:incoming>
      </bpmn:endEvent>
    </bpmn:subProcess>
  </bpmn:process>
</bpmn:definitions>
"""

PLAIN = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" id="layout_plain_definitions"
                  targetNamespace="http://cleanaudit.example/bpmn/layout_plain">
  <bpmn:process id="layout_plain" name="no lanes" isExecutable="true">
    <bpmn:startEvent id="p_start"><bpmn:outgoing>p1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:sequenceFlow id="p1" sourceRef="p_start" targetRef="p_split" />
    <bpmn:parallelGateway id="p_split"><bpmn:incoming>p1</bpmn:incoming>
      <bpmn:outgoing>p2</bpmn:outgoing><bpmn:outgoing>p3</bpmn:outgoing></bpmn:parallelGateway>
    <bpmn:sequenceFlow id="p2" sourceRef="p_split" targetRef="p_a" />
    <bpmn:sequenceFlow id="p3" sourceRef="p_split" targetRef="p_join" />
    <bpmn:scriptTask id="p_a" name="a" scriptFormat="python"><bpmn:incoming>p2</bpmn:incoming>
      <bpmn:outgoing>p4</bpmn:outgoing><bpmn:script>a = 1</bpmn:script></bpmn:scriptTask>
    <bpmn:sequenceFlow id="p4" sourceRef="p_a" targetRef="p_b" />
    <bpmn:scriptTask id="p_b" name="b" scriptFormat="python"><bpmn:incoming>p4</bpmn:incoming>
      <bpmn:outgoing>p5</bpmn:outgoing><bpmn:script>b = 1</bpmn:script></bpmn:scriptTask>
    <bpmn:sequenceFlow id="p5" sourceRef="p_b" targetRef="p_join" />
    <bpmn:parallelGateway id="p_join"><bpmn:incoming>p3</bpmn:incoming><bpmn:incoming>p5</bpmn:incoming>
      <bpmn:outgoing>p6</bpmn:outgoing></bpmn:parallelGateway>
    <bpmn:sequenceFlow id="p6" sourceRef="p_join" targetRef="p_end" />
    <bpmn:endEvent id="p_end"><bpmn:incoming>p6</bpmn:incoming></bpmn:endEvent>
  </bpmn:process>
</bpmn:definitions>
"""

# a process that already has a pool: the participant is reused, nothing is added to the model
POOLED = LANES.replace("layout_lanes", "layout_pooled").replace(
    '  <bpmn:message id="layout_ping"',
    '  <bpmn:collaboration id="pooled_collaboration">\n'
    '    <bpmn:participant id="pooled_participant" name="Pool" processRef="layout_pooled" />\n'
    '  </bpmn:collaboration>\n  <bpmn:message id="layout_ping"')

FIXTURES = {"layout_lanes": LANES, "layout_plain": PLAIN, "layout_pooled": POOLED}


# --------------------------------------------------------------------------- helpers

class Bounds:
    def __init__(self, el):
        self.x, self.y = float(el.get("x")), float(el.get("y"))
        self.w, self.h = float(el.get("width")), float(el.get("height"))
        self.right, self.bottom = self.x + self.w, self.y + self.h

    def contains(self, other: "Bounds") -> bool:
        return (self.x <= other.x and self.y <= other.y and other.right <= self.right
                and other.bottom <= self.bottom)

    def overlaps(self, other: "Bounds") -> bool:
        return self.x < other.right and other.x < self.right and self.y < other.bottom and other.y < self.bottom

    def on_border(self, x: float, y: float, tol: float = 1.0) -> bool:
        inside = self.x - tol <= x <= self.right + tol and self.y - tol <= y <= self.bottom + tol
        edge = min(abs(x - self.x), abs(x - self.right), abs(y - self.y), abs(y - self.bottom)) <= tol
        return inside and edge


def planes(xml: bytes) -> dict:
    """plane element id -> {"shapes": {id: Bounds}, "edges": {id: [(x, y)]}, "shape_els": {...}}"""
    root = etree.fromstring(xml)
    out = {}
    for plane in root.iterfind(".//bpmndi:BPMNPlane", NS):
        shapes, edges, els = {}, {}, {}
        for shape in plane.iterfind("bpmndi:BPMNShape", NS):
            shapes[shape.get("bpmnElement")] = Bounds(shape.find("dc:Bounds", NS))
            els[shape.get("bpmnElement")] = shape
        for edge in plane.iterfind("bpmndi:BPMNEdge", NS):
            edges[edge.get("bpmnElement")] = [(float(w.get("x")), float(w.get("y")))
                                              for w in edge.iterfind("di:waypoint", NS)]
        out[plane.get("bpmnElement")] = {"shapes": shapes, "edges": edges, "shape_els": els}
    return out


def model(xml: bytes):
    root = etree.fromstring(xml)
    nodes = {el.get("id"): el for el in root.iter() if isinstance(el.tag, str)
             and el.tag.startswith("{" + BPMN_NS + "}") and etree.QName(el).localname in FLOW_NODES}
    flows = {el.get("id"): el for el in root.iter(f"{{{BPMN_NS}}}sequenceFlow")}
    return root, nodes, flows


def spiff_specs(name: str, xml: bytes) -> dict:
    """(spec name, task spec name) -> (outputs, conditional outputs in test order, default) as
    SpiffWorkflow 3.2 builds them, for every executable process and its sub-processes."""
    report = validate_files([(name, xml)], forms_dir=None)
    out = {}
    for pid in report.process_ids:
        specs = {pid: report.parser.get_spec(pid)}
        try:
            specs.update(report.parser.get_subprocess_specs(pid))
        except Exception:       # a call activity to a process not in this file
            pass
        for spec_name, spec in specs.items():
            for task_name, task_spec in spec.task_specs.items():
                conds = [target for cond, target in getattr(task_spec, "cond_task_specs", []) if cond is not None]
                out[(spec_name, task_name)] = ([o.name for o in task_spec.outputs], conds,
                                               getattr(task_spec, "default_task_spec", None))
    return out


def problem_keys(report) -> Counter:
    return Counter((p.element_id, p.message, p.severity) for p in report.problems)


def check_geometry(xml: bytes) -> None:
    """Every flow node one shape, every sequence flow one edge, shapes inside their lanes and the
    lanes inside the pool, no overlapping shapes in a plane, waypoints on the shapes' borders."""
    root, nodes, flows = model(xml)
    di = planes(xml)
    shape_count = Counter(sid for p in di.values() for sid in p["shapes"])
    edge_count = Counter(eid for p in di.values() for eid in p["edges"])
    for nid in nodes:
        assert shape_count[nid] == 1, f"{nid}: {shape_count[nid]} shapes"
    for fid in flows:
        assert edge_count[fid] == 1, f"{fid}: {edge_count[fid]} edges"
    lanes = {lane.get("id"): lane for lane in root.iter(f"{{{BPMN_NS}}}lane")}
    participants = {p.get("processRef"): p.get("id") for p in root.iter(f"{{{BPMN_NS}}}participant")}
    for plane_id, plane in di.items():
        shapes = plane["shapes"]
        # lanes inside their pool, nodes inside their lane
        for lane_id, lane in lanes.items():
            if lane_id not in shapes:
                continue
            process = next(p for p in root.iter(f"{{{BPMN_NS}}}process") if lane in p.iter())
            pool = shapes[participants[process.get("id")]]
            assert pool.contains(shapes[lane_id]), f"lane {lane_id} is not inside its pool"
            for ref in lane.iterfind("bpmn:flowNodeRef", NS):
                if ref.text in shapes:
                    assert shapes[lane_id].contains(shapes[ref.text]), f"{ref.text} is not inside {lane_id}"
        # no two flow-node/data shapes overlap (a boundary event sits on its host's border)
        drawn = [sid for sid in shapes if sid in nodes or sid.endswith("_ref") or sid in
                 {el.get("id") for el in root.iter(f"{{{BPMN_NS}}}dataObjectReference")}]
        for i, a in enumerate(drawn):
            for b in drawn[i + 1:]:
                if nodes.get(a) is not None and nodes[a].get("attachedToRef") == b:
                    continue
                if nodes.get(b) is not None and nodes[b].get("attachedToRef") == a:
                    continue
                assert not shapes[a].overlaps(shapes[b]), f"{a} overlaps {b} in {plane_id}"
        # waypoints: at least two, orthogonal, first and last on the source and target borders
        for fid, points in plane["edges"].items():
            if fid not in flows:
                continue
            assert len(points) >= 2
            for (x1, y1), (x2, y2) in zip(points, points[1:]):
                assert x1 == x2 or y1 == y2, f"{fid} is not orthogonal"
            src, tgt = shapes[flows[fid].get("sourceRef")], shapes[flows[fid].get("targetRef")]
            assert src.on_border(*points[0]), f"{fid} does not start on its source"
            assert tgt.on_border(*points[-1]), f"{fid} does not end on its target"


def edges_through_shapes(xml: bytes) -> list:
    """(edge id, shape id) for every edge segment running through a shape other than its ends."""
    root, nodes, flows = model(xml)
    ends = {fid: {f.get("sourceRef"), f.get("targetRef")} for fid, f in flows.items()}
    for fid, flow in flows.items():    # a boundary event's host is an end too
        for end in list(ends[fid]):
            if nodes.get(end) is not None and nodes[end].get("attachedToRef"):
                ends[fid].add(nodes[end].get("attachedToRef"))
    found = []
    for plane in planes(xml).values():
        for fid, points in plane["edges"].items():
            if fid not in flows:
                continue
            for (x1, y1), (x2, y2) in zip(points, points[1:]):
                for sid, b in plane["shapes"].items():
                    if sid not in nodes or sid in ends[fid]:
                        continue
                    if min(x1, x2) < b.right - 2 and max(x1, x2) > b.x + 2 and \
                            min(y1, y2) < b.bottom - 2 and max(y1, y2) > b.y + 2:
                        found.append((fid, sid))
    return found


# --------------------------------------------------------------------------- fixtures: geometry

@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_a_fixture_gets_complete_well_formed_di(name):
    xml = FIXTURES[name].encode()
    assert has_complete_di(xml) and not has_any_di(xml)
    out = layout_bpmn(xml)
    assert has_complete_di(out) == []
    check_geometry(out)


def test_lanes_get_a_pool_and_sub_processes_get_their_own_collapsed_diagram():
    out = layout_bpmn(LANES.encode())
    root = etree.fromstring(out)
    (collab,) = root.iterfind("bpmn:collaboration", NS)
    (participant,) = collab.iterfind("bpmn:participant", NS)
    assert participant.get("processRef") == "layout_lanes"
    assert participant.get("name") == "版面测试：泳道"
    di = planes(out)
    assert list(di) == [collab.get("id"), "archive", "on_ping"]       # the pool first: bpmn-js opens it
    main = di[collab.get("id")]
    assert main["shape_els"]["archive"].get("isExpanded") == "false"
    assert main["shape_els"]["on_ping"].get("isExpanded") == "false"
    assert main["shape_els"]["review_route"].get("isMarkerVisible") == "true"
    assert set(di["archive"]["shapes"]) == {"archive_start", "file_report", "archive_done"}
    assert set(di["on_ping"]["shapes"]) == {"ping_start", "note_ping", "ping_done"}
    shapes = main["shapes"]
    # the event sub-process sits below the main flow; the boundary timer on its task's bottom edge
    assert shapes["on_ping"].y >= max(shapes[n].bottom for n in ("start", "submit_report", "run_stages"))
    timer, task = shapes["report_overdue"], shapes["submit_report"]
    assert task.x <= timer.x and timer.right <= task.right and timer.y < task.bottom < timer.bottom
    # its path continues from the row below, in later columns
    assert shapes["remind"].y >= task.bottom and shapes["remind"].x > task.right
    assert main["edges"]["flow_overdue"][0] == (timer.x + timer.w / 2, timer.bottom)
    # columns follow the flow; the loop back runs above or below the nodes, not through them
    xs = [shapes[n].x for n in ("start", "merge_revision", "submit_report", "review_report", "review_route")]
    assert xs == sorted(xs) and len(set(xs)) == len(xs)
    loop = main["edges"]["flow_returned"]
    assert loop[0][1] != loop[-1][1] or len(loop) > 2                      # not straight through
    assert edges_through_shapes(out) == []
    # labels for events and gateways with a name, below or beside their shape
    label = main["shape_els"]["review_route"].find("bpmndi:BPMNLabel/dc:Bounds", NS)
    assert label is not None
    # the data object sits next to its task and the association is drawn
    assert "report_state_ref" in shapes and "submit_report_state" in main["edges"]


def test_a_process_without_lanes_is_drawn_on_its_own_plane_without_a_pool():
    out = layout_bpmn(PLAIN.encode())
    root = etree.fromstring(out)
    assert root.find("bpmn:collaboration", NS) is None
    assert list(planes(out)) == ["layout_plain"]
    shapes = planes(out)["layout_plain"]["shapes"]
    # the short branch of the parallel split gets a free corridor: it does not run through p_a/p_b
    edge = planes(out)["layout_plain"]["edges"]["p3"]
    for (x1, y1), (x2, y2) in zip(edge, edge[1:]):
        for task in ("p_a", "p_b"):
            b = shapes[task]
            assert not (min(x1, x2) < b.right and max(x1, x2) > b.x and min(y1, y2) < b.bottom
                        and max(y1, y2) > b.y), f"p3 runs through {task}"


def test_an_existing_participant_is_reused_and_the_model_is_untouched():
    out = layout_bpmn(POOLED.encode())
    root = etree.fromstring(out)
    assert len(root.findall("bpmn:collaboration", NS)) == 1
    assert len(root.findall(".//bpmn:participant", NS)) == 1
    assert list(planes(out))[0] == "pooled_collaboration"
    assert "pooled_participant" in planes(out)["pooled_collaboration"]["shapes"]


# --------------------------------------------------------------------------- fixtures: text and semantics

@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_everything_but_the_di_stays_byte_for_byte(name):
    original = FIXTURES[name]
    out = layout_bpmn(original.encode()).decode()
    a, b = original.splitlines(keepends=True), out.splitlines(keepends=True)
    ops = [op for op in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes() if op[0] != "equal"]
    # only insertions, plus the root start tag's last line gaining the namespace declarations
    for tag, i1, i2, j1, j2 in ops:
        if tag == "insert":
            continue
        assert tag == "replace" and i2 - i1 == 1 and j2 - j1 == 1, (tag, a[i1:i2], b[j1:j2])
        assert b[j1].startswith(a[i1].rstrip("\n").rstrip(">")) and "xmlns:bpmndi=" in b[j1]
    assert "a comment that must survive the layout" in out or name == "layout_plain"
    assert len(a) == len(b) - sum(j2 - j1 for tag, _i1, _i2, j1, j2 in ops if tag == "insert")


def spiff_changes(name: str, xml: bytes, laid: bytes) -> set:
    """Parse before and after the layout as the engine does: the same task specs with the same
    outputs, conditions and defaults; returns the task specs whose outputs are ordered (or whose
    conditions are tested) in another order (plain SpiffWorkflow would sort them by the y
    coordinate of the target shapes; the engine's parser keeps document order)."""
    before, after = spiff_specs(name, xml), spiff_specs(name, laid)
    assert before and before.keys() == after.keys()
    changed = set()
    for key, (outputs, conds, default) in before.items():
        outputs2, conds2, default2 = after[key]
        assert sorted(outputs) == sorted(outputs2) and sorted(conds) == sorted(conds2) and default == default2
        if conds != conds2 or (not conds and not default and outputs != outputs2):
            changed.add(key[1])
    return changed


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_spiffworkflow_reads_the_same_process(name):
    xml = FIXTURES[name].encode()
    result = layout_document(xml, f"{name}.bpmn")
    # The layout may have to draw targets in another vertical order than the document (here the
    # return-for-revision loop's target and the archive task share a row) and says so; the engine's
    # parser keeps document order whatever the drawing, so gateways test conditions as written.
    assert set(result.order_changes) <= {"review_route"}
    assert spiff_changes(f"{name}.bpmn", xml, result.xml) == set()


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_layout_is_deterministic_and_force_reproduces_the_same_bytes(name):
    xml = FIXTURES[name].encode()
    first = layout_bpmn(xml)
    assert layout_bpmn(xml) == first
    assert layout_bpmn(first) == first          # replacing the DI gives the same bytes
    bare = strip_di(first)
    assert b"BPMNDiagram" not in bare and layout_bpmn(bare) == first


def test_missing_di_is_listed_by_element_id():
    xml = LANES.encode()
    missing = has_complete_di(xml)
    _root, nodes, flows = model(xml)
    assert set(nodes) | set(flows) | {"lane_enterprise", "lane_local_epb"} <= set(missing)
    laid = layout_bpmn(xml).decode()
    damaged = re.sub(r'\s*<bpmndi:BPMNShape id="remind_di".*?</bpmndi:BPMNShape>', "", laid, flags=re.S)
    assert has_complete_di(damaged.encode()) == ["remind"]


def test_crlf_and_tab_indented_files_keep_their_style():
    xml = PLAIN.replace("  ", "\t").replace("\n", "\r\n").encode()
    out = layout_bpmn(xml)
    assert b"\r\n\t<bpmndi:BPMNDiagram" in out and b"\n<" not in out.replace(b"\r\n", b"")
    assert has_complete_di(out) == []


# --------------------------------------------------------------------------- the real processes

@pytest.mark.parametrize("path", PROCESSES, ids=[p.name for p in PROCESSES])
def test_every_process_gets_complete_di_without_a_new_problem(path):
    xml = path.read_bytes()
    result = layout_document(xml, path.name)
    assert has_complete_di(result.xml) == []
    check_geometry(result.xml)
    assert edges_through_shapes(result.xml) == []
    before = validate_files([(path.name, xml)], forms_dir=FORMS)
    after = validate_files([(path.name, result.xml)], forms_dir=FORMS)
    added = problem_keys(after) - problem_keys(before)
    assert not added, added
    # The engine builds the same task specs in document order, with or without the drawing
    assert spiff_changes(path.name, strip_di(xml), result.xml) == set()
    assert layout_bpmn(result.xml, path.name) == result.xml


@pytest.mark.parametrize("path", MIWG, ids=[p.name for p in MIWG])
def test_the_miwg_reference_models_can_be_laid_out_again(path):
    out = layout_bpmn(path.read_bytes(), path.name)
    assert has_complete_di(out) == []
    assert layout_bpmn(out, path.name) == out


# --------------------------------------------------------------------------- the command line

def cleanaudit(*args):
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def test_cli_layout_check_and_force(tmp_path):
    lanes, plain = tmp_path / "layout_lanes.bpmn", tmp_path / "layout_plain.bpmn"
    lanes.write_text(LANES, encoding="utf-8")
    plain.write_text(PLAIN, encoding="utf-8")
    result = cleanaudit("layout", "--check", str(lanes), str(plain))
    assert result.returncode == 1
    assert f"{lanes}: no complete diagram" in result.stdout and f"{plain}: no complete diagram" in result.stdout
    assert lanes.read_text(encoding="utf-8") == LANES                      # --check changes nothing

    result = cleanaudit("layout", str(lanes), str(plain))
    assert result.returncode == 0, result.stdout + result.stderr
    laid = lanes.read_bytes()
    assert laid == layout_bpmn(LANES.encode(), "layout_lanes.bpmn")
    assert cleanaudit("layout", "--check", str(lanes), str(plain)).returncode == 0

    result = cleanaudit("layout", str(lanes))                               # has DI: left alone
    assert result.returncode == 0 and "already has a diagram" in result.stdout
    assert cleanaudit("layout", "--force", str(lanes)).returncode == 0
    assert lanes.read_bytes() == laid                                       # --force: same bytes

    damaged = re.sub(r'\s*<bpmndi:BPMNShape id="remind_di".*?</bpmndi:BPMNShape>', "", laid.decode(), flags=re.S)
    lanes.write_text(damaged, encoding="utf-8")
    result = cleanaudit("layout", str(lanes))
    assert result.returncode == 1 and "incomplete diagram" in result.stdout
    assert lanes.read_text(encoding="utf-8") == damaged
    assert cleanaudit("layout", "--force", str(lanes)).returncode == 0
    assert lanes.read_bytes() == laid


def test_cli_layout_refuses_unsafe_or_missing_files(tmp_path):
    bomb = tmp_path / "bomb.bpmn"
    bomb.write_text('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "a">]><x>&a;</x>')
    result = cleanaudit("layout", str(bomb), str(tmp_path / "missing.bpmn"))
    assert result.returncode == 1
    assert "DOCTYPE" in result.stdout and "missing.bpmn: cannot read" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


# --------------------------------------------------------------------------- rendering in Chromium

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAGE = """<!doctype html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="assets/diagram-js.css"><link rel="stylesheet" href="assets/bpmn-js.css">
<link rel="stylesheet" href="assets/bpmn-font/css/bpmn.css">
<style>html, body, #canvas { margin: 0; width: 100%; height: 100%; background: white; }</style></head>
<body><div id="canvas"></div>
<script src="bpmn-navigated-viewer.production.min.js"></script>
<script>
window.viewer = new BpmnJS({container: "#canvas"});
window.importDiagram = async function (xml) {
  try {
    const result = await viewer.importXML(xml);
    return {warnings: result.warnings.map(w => w.message)};
  } catch (err) {
    return {error: String(err), warnings: (err.warnings || []).map(w => w.message)};
  }
};
window.elementIds = () => viewer.get("elementRegistry").getAll().map(e => e.id);
window.rootIds = () => viewer.get("canvas").getRootElements().map(r => r.id);
window.showRoot = function (id) {
  const canvas = viewer.get("canvas");
  canvas.setRootElement(canvas.findRoot(id));
  const box = canvas.getActiveLayer().getBBox();
  return [box.x, box.y, box.width, box.height];
};
window.fit = function (b) {
  viewer.get("canvas").viewbox({x: b[0] - 40, y: b[1] - 90, width: b[2] + 80, height: b[3] + 130});
};
</script></body></html>
"""


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def bpmn_page(tmp_path_factory):
    """A page with bpmn-js's navigated viewer, served from a temp dir on a free loopback port."""
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    script = BPMN_DIST / "bpmn-navigated-viewer.production.min.js"
    if not script.exists():
        subprocess.run(["make", "node"], cwd=ROOT, check=False, capture_output=True, timeout=600)
    if not script.exists():
        message = f"{script} is missing (run `make node`)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    site = tmp_path_factory.mktemp("bpmn-site")
    shutil.copy(script, site / script.name)
    shutil.copytree(BPMN_DIST / "assets", site / "assets")
    (site / "index.html").write_text(PAGE, encoding="utf-8")
    server = HTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, name="bpmn-site", daemon=True)
    thread.start()
    from playwright.sync_api import sync_playwright
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(30000)
            page.goto(f"http://127.0.0.1:{server.server_port}/index.html")
            page.wait_for_function("() => window.BpmnJS !== undefined")
            yield page
            browser.close()
    finally:
        server.shutdown()
        thread.join(timeout=10)


def _render(page, name: str, xml: bytes) -> None:
    page.set_viewport_size({"width": 1600, "height": 1000})
    result = page.evaluate("xml => importDiagram(xml)", xml.decode("utf-8"))
    assert "error" not in result, result
    # bpmn-js also reports references it cannot resolve in the model itself (SpiffWorkflow's
    # multi-instance variables, for instance): those do not concern the DI
    di_ids = set(re.findall(rb'bpmnElement="([^"]+)"', xml))
    for warning in result["warnings"]:
        ref = re.fullmatch(r"unresolved reference <(.+)>", warning)
        assert ref is not None and ref.group(1).encode() not in di_ids, warning
    _root, nodes, _flows = model(xml)
    registered = set(page.evaluate("() => elementIds()"))
    missing = set(nodes) - registered
    assert not missing, f"not drawn: {sorted(missing)}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for root_id in page.evaluate("() => rootIds()"):
        box = page.evaluate("id => showRoot(id)", root_id)
        width = int(min(max(box[2] + 80, 400), 8000))
        height = int(min(max(box[3] + 130, 300), 4000))
        page.set_viewport_size({"width": width, "height": height})
        page.evaluate("b => fit(b)", box)
        suffix = "" if not root_id.endswith("_plane") else "--" + root_id[: -len("_plane")]
        page.screenshot(path=str(SCREENSHOTS / f"layout-{name}{suffix}.png"))


@pytest.mark.browser
@pytest.mark.parametrize("path", PROCESSES, ids=[p.name for p in PROCESSES])
def test_bpmn_js_draws_every_laid_out_process(bpmn_page, path):
    _render(bpmn_page, path.stem, layout_bpmn(path.read_bytes(), path.name))


@pytest.mark.browser
@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_bpmn_js_draws_the_fixtures(bpmn_page, name):
    _render(bpmn_page, name, layout_bpmn(FIXTURES[name].encode()))


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[2] / "processes").glob("*.bpmn")),
                         ids=lambda p: p.name)
def test_every_shipped_process_carries_its_diagram_so_the_viewer_can_draw_it(path):
    assert has_complete_di(path.read_bytes()) == []
