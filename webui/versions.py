"""Helpers of the process pages: the diff of two versions' XML, the skeleton of a new process."""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Optional
from xml.sax.saxutils import escape, quoteattr

from lxml import etree

from engine.layout import layout_bpmn
from engine.xmlsafe import parse_bpmn_bytes

MAX_DIFF_ROWS = 4000
BPMNDI_NS = "http://www.omg.org/spec/BPMN/20100524/DI"
_HUNK = re.compile(r"^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@")


@dataclass
class DiffRow:
    kind: str                 # hunk | context | added | removed
    old_no: Optional[int]
    new_no: Optional[int]
    text: str


def diff_rows(old: str, new: str, context: int = 3) -> tuple[list[DiffRow], bool]:
    """difflib's unified diff of two XML texts as table rows (with line numbers); (rows, truncated)."""
    rows: list[DiffRow] = []
    old_no = new_no = 0
    lines = difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=context)
    for line in lines:
        if line.startswith(("---", "+++")) and not rows:
            continue
        match = _HUNK.match(line)
        if match:
            old_no, new_no = int(match.group(1)), int(match.group(2))
            rows.append(DiffRow("hunk", None, None, line))
        elif line.startswith("+"):
            rows.append(DiffRow("added", None, new_no, line[1:]))
            new_no += 1
        elif line.startswith("-"):
            rows.append(DiffRow("removed", old_no, None, line[1:]))
            old_no += 1
        else:
            rows.append(DiffRow("context", old_no, new_no, line[1:]))
            old_no += 1
            new_no += 1
        if len(rows) >= MAX_DIFF_ROWS:
            return rows, True
    return rows, False


def normalised(xml: str) -> str:
    """The XML without comments, attributes sorted, diagram shapes in id order, one element per line:
    a modeler that re-formats the whole file (bpmn-js does) then differs from a hand-written file only
    where the content does. (The order of BPMNShape/BPMNEdge elements means nothing.)"""
    tree = parse_bpmn_bytes(xml.encode("utf-8"), "version.bpmn")
    top = {prefix: uri for prefix, uri in tree.getroot().nsmap.items() if prefix}
    canonical = etree.tostring(tree, method="c14n2", with_comments=False, strip_text=True)
    root = etree.fromstring(canonical, etree.XMLParser(remove_blank_text=True, resolve_entities=False,
                                                          no_network=True))
    etree.cleanup_namespaces(root, top_nsmap=top)
    for plane in root.iter(f"{{{BPMNDI_NS}}}BPMNPlane"):
        plane[:] = sorted(plane, key=lambda el: (str(el.get("bpmnElement")), str(el.get("id"))))
    etree.indent(root, space="  ")
    return etree.tostring(root, encoding="unicode")


def skeleton_xml(process_id: str, name: str) -> bytes:
    """A new executable process (start, one user task of the enterprise, end) with its diagram."""
    pid = escape(process_id)
    xml = f"""<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
                  xmlns:spiffworkflow="http://spiffworkflow.org/bpmn/schema/1.0/core"
                  id="{pid}_definitions" targetNamespace="http://cleanaudit.example/bpmn/{pid}">
  <bpmn:process id="{pid}" name={quoteattr(name)} isExecutable="true">
    <bpmn:documentation>Art. ?: what this process does.</bpmn:documentation>
    <bpmn:laneSet id="{pid}_lanes">
      <bpmn:lane id="lane_enterprise" name="enterprise">
        <bpmn:flowNodeRef>start</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>first_task</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>done</bpmn:flowNodeRef>
      </bpmn:lane>
    </bpmn:laneSet>
    <bpmn:startEvent id="start" name="开始">
      <bpmn:documentation>Art. ?: when the process starts.</bpmn:documentation>
      <bpmn:outgoing>flow_start</bpmn:outgoing>
    </bpmn:startEvent>
    <bpmn:userTask id="first_task" name="第一项任务">
      <bpmn:documentation>Art. ?: what the enterprise does.</bpmn:documentation>
      <bpmn:extensionElements>
        <spiffworkflow:properties>
          <spiffworkflow:property name="article" value="Art. 1" />
        </spiffworkflow:properties>
      </bpmn:extensionElements>
      <bpmn:incoming>flow_start</bpmn:incoming>
      <bpmn:outgoing>flow_done</bpmn:outgoing>
    </bpmn:userTask>
    <bpmn:endEvent id="done" name="办结">
      <bpmn:documentation>Art. ?: done.</bpmn:documentation>
      <bpmn:incoming>flow_done</bpmn:incoming>
    </bpmn:endEvent>
    <bpmn:sequenceFlow id="flow_start" sourceRef="start" targetRef="first_task" />
    <bpmn:sequenceFlow id="flow_done" sourceRef="first_task" targetRef="done" />
  </bpmn:process>
</bpmn:definitions>
"""
    return layout_bpmn(xml.encode("utf-8"), f"{process_id}.bpmn")
