"""Automatic diagram interchange (BPMN DI) for hand-written processes.

    new_bytes = layout_bpmn(old_bytes)      # adds (or replaces) every bpmndi:BPMNDiagram
    missing = has_complete_di(new_bytes)    # [] when every element bpmn-js draws has DI

Our executable processes are written by hand, without `bpmndi:BPMNDiagram`, so bpmn-js cannot draw
them (and bpmn-auto-layout ignores lanes). This module computes a layered, lane-aware layout:

- Columns: longest path over the sequence flows from the start events, after removing the back
  edges found by a depth-first search (return-for-revision loops). Boundary events sit on the
  bottom edge of their activity; their outgoing paths continue from the row below it. Nodes not
  reachable from a start get their own columns at the end.
- Rows: every lane is a horizontal band (lanes in declared order; nodes without a lane get a band
  of their own). A long flow reserves a free slot (a "dummy") in every column it crosses, so it
  never runs through a shape. The order inside a column is improved by barycentre sweeps; rows
  are then assigned so that flows run straight where they can (isotonic regression per column).
- Embedded sub-processes (event sub-processes and transactions too) are drawn collapsed and each
  gets its own `bpmndi:BPMNDiagram` (bpmn-js drills down into it); event sub-processes sit in a
  row below the main flow.
- Edges are orthogonal: out of the right side (gateways may leave from their top/bottom corner),
  into the left side; loops run in a channel above or below the lane; boundary-event flows leave
  from the event's bottom.
- A process with lanes needs a pool to be drawn: when it has no participant, a
  `bpmn:collaboration` with one `bpmn:participant` is added after the last process.

The document is edited as text: everything outside the added DI, the added namespace declarations
(appended to the root start tag's last line, so no line number changes) and the added
collaboration stays byte for byte as it was (comments, `spiffworkflow:` extensions, formatting).

SpiffWorkflow 3.2 orders the outputs of a node by the y coordinate of the targets' shapes (and
evaluates an exclusive gateway's conditions in that order). The layout keeps the document order
wherever the lanes allow it: targets of one node in the same lane are stacked in document order;
`order_changes()` lists the nodes whose order the lanes force to change.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable, Optional
from xml.sax.saxutils import quoteattr

from lxml import etree

from engine.errors import CleanauditError
from engine.xmlsafe import parse_bpmn_bytes

BPMN_NS = "http://www.omg.org/spec/BPMN/20100524/MODEL"
BPMNDI_NS = "http://www.omg.org/spec/BPMN/20100524/DI"
DC_NS = "http://www.omg.org/spec/DD/20100524/DC"
DI_NS = "http://www.omg.org/spec/DD/20100524/DI"

# ----------------------------------------------------------------------------- dimensions
TASK_W, TASK_H = 100, 80
EVENT_S = 36
GATEWAY_S = 50
DATA_W, DATA_H = 36, 50
ANNOTATION_W, ANNOTATION_H = 100, 30
ROW_H = 110             # one row of a lane band
COL_GAP = 60            # free space between the widest shapes of two neighbouring columns
MIN_COL_W = 110         # events and gateways: room for their labels (90 px)
HEADER = 30             # participant and lane header
CONTENT_PAD = 20        # between the last lane header and the first column
BAND_PAD = 0            # extra space above/below the rows of a band
TRACK = 10              # distance between two loop tracks in a channel
GAP_TRACK = 8           # distance between two vertical segments in one column gap
LABEL_W = 90
LABEL_LINE_H = 14
POOL_GAP = 40           # between two pools of a collaboration
ORIGIN_X, ORIGIN_Y = 160, 80

_TASKS = ("task", "userTask", "manualTask", "scriptTask", "serviceTask", "sendTask", "receiveTask",
          "businessRuleTask", "callActivity")
_CONTAINERS = ("subProcess", "transaction", "adHocSubProcess")
_EVENTS = ("startEvent", "endEvent", "intermediateCatchEvent", "intermediateThrowEvent",
           "boundaryEvent", "implicitThrowEvent")
_GATEWAYS = ("exclusiveGateway", "parallelGateway", "inclusiveGateway", "eventBasedGateway",
             "complexGateway")
FLOW_NODES = frozenset(_TASKS + _CONTAINERS + _EVENTS + _GATEWAYS)


class LayoutError(CleanauditError):
    """The document cannot be laid out (it is not BPMN, or its structure is unusable)."""


def _q(local: str, ns: str = BPMN_NS) -> str:
    return f"{{{ns}}}{local}"


def _local(el) -> str:
    tag = el.tag
    if not isinstance(tag, str) or not tag.startswith("{" + BPMN_NS + "}"):
        return ""
    return tag[len(BPMN_NS) + 2:]


def _is_el(el) -> bool:
    return isinstance(getattr(el, "tag", None), str)


def _children(el, *locals_: str):
    return [c for c in el if _is_el(c) and _local(c) in locals_]


def _refs(el, local: str) -> list[str]:
    """Text of child elements `bpmn:<local>` (sourceRef/targetRef/flowNodeRef) of `el`."""
    return [(c.text or "").strip() for c in el if _is_el(c) and _local(c) == local and (c.text or "").strip()]


def _is_event_subprocess(el) -> bool:
    return _local(el) in _CONTAINERS and (el.get("triggeredByEvent") or "").strip() == "true"


def _has_flow_content(container) -> bool:
    return any(_local(c) in FLOW_NODES for c in container if _is_el(c))


def _task_width(text: str) -> int:
    """100 px, or wider for long names: bpmn-js centres the name in the box, so a name of more
    than two lines runs into the task-type icon in the top left corner."""
    units = sum(2 if ord(ch) >= 0x2E80 else 1 for ch in text)   # half-width characters

    def lines(w: int) -> int:
        per_line = max(1, int((w - 10) // 14.5) * 2)
        return math.ceil(units / per_line)

    for w in (TASK_W, 120, 140, 160):
        if lines(w) <= 2:
            return w
    for w in (160, 180, 200):
        if lines(w) <= 3:
            return w
    return 200


def _size(el) -> tuple[int, int]:
    name = _local(el)
    if name in _EVENTS:
        return EVENT_S, EVENT_S
    if name in _GATEWAYS:
        return GATEWAY_S, GATEWAY_S
    if name in ("dataObjectReference", "dataStoreReference"):
        return (DATA_W, DATA_H) if name == "dataObjectReference" else (50, 50)
    if name == "textAnnotation":
        return ANNOTATION_W, ANNOTATION_H
    return _task_width((el.get("name") or "").strip()), TASK_H


def _text_width(text: str) -> float:
    width = 0.0
    for ch in text:
        width += 11.5 if ord(ch) >= 0x2E80 else (3.5 if ch in " il.,:;'|" else 6.5)
    return width


def _label_size(text: str, max_w: int = LABEL_W) -> tuple[int, int]:
    width = _text_width(text)
    lines = max(1, math.ceil(width / (max_w - 6)))
    for part in text.split("\n")[1:]:
        lines += 1
    w = max_w if lines > 1 else max(20, int(math.ceil(width)) + 4)
    return w, lines * LABEL_LINE_H


# ============================================================================= geometry

@dataclass
class Box:
    x: float
    y: float
    w: float
    h: float

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2

    @property
    def right(self) -> float:
        return self.x + self.w

    @property
    def bottom(self) -> float:
        return self.y + self.h


def _hits(p, q, box: Box, margin: float = 2) -> bool:
    """Does the orthogonal segment p-q run through the interior of box (shrunk by margin)?"""
    x0, y0 = min(p[0], q[0]), min(p[1], q[1])
    x1, y1 = max(p[0], q[0]), max(p[1], q[1])
    return (x1 > box.x + margin and x0 < box.right - margin and
            y1 > box.y + margin and y0 < box.bottom - margin)


def _simplify(points: list) -> list:
    pts = []
    for p in points:
        p = (int(round(p[0])), int(round(p[1])))
        if pts and pts[-1] == p:
            continue
        pts.append(p)
    changed = True
    while changed and len(pts) > 2:
        changed = False
        for i in range(1, len(pts) - 1):
            a, b, c = pts[i - 1], pts[i], pts[i + 1]
            if (a[0] == b[0] == c[0]) or (a[1] == b[1] == c[1]):
                # collinear: drop the middle point unless the path doubles back
                if (a[0] == b[0] == c[0] and (b[1] - a[1]) * (c[1] - b[1]) >= 0) or \
                        (a[1] == b[1] == c[1] and (b[0] - a[0]) * (c[0] - b[0]) >= 0):
                    del pts[i]
                    changed = True
                    break
    return pts


# ============================================================================= the graph of one container

@dataclass
class Item:
    """Something that occupies a slot of the grid: a flow node, a dummy of a long flow, the slot
    reserved below an activity for its boundary events' flows, a data object, an annotation."""
    key: str
    kind: str                       # node | dummy | slot | data | note | evsub
    el: object = None
    w: int = 0
    h: int = 0
    band: int = 0
    col: int = 0
    row: int = 0
    order: float = 0.0
    host: Optional[str] = None      # slot/data/note: the node it belongs to
    block: list = field(default_factory=list)   # node: its attached items (slots, data, notes)
    discovery: int = 0
    box: Optional[Box] = None


@dataclass
class Flow:
    id: str
    el: object
    source: str           # the element id (a boundary event for its flows)
    target: str
    src: str = ""         # the grid node of the source (the host for a boundary event)
    tgt: str = ""
    back: bool = False
    dummies: list = field(default_factory=list)
    points: list = field(default_factory=list)
    order: int = 0


@dataclass
class Drawing:
    """The laid-out content of one container, in its own coordinates."""
    shapes: list = field(default_factory=list)     # (element id, Box, extra attrs dict, label Box|None)
    edges: list = field(default_factory=list)      # (element id, points, label Box|None)
    bands: list = field(default_factory=list)      # (band key, y0, y1)
    width: float = 0
    height: float = 0
    order_changes: list = field(default_factory=list)


class _Container:
    """Lays out the direct content of a process or sub-process."""

    def __init__(self, el, lane_of: dict, lane_order: list, inherit_lanes: bool):
        self.el = el
        self.lane_of = lane_of            # node id -> leaf lane id
        self.lane_order = lane_order      # leaf lane ids in band order (those to draw, even empty)
        self.inherit_lanes = inherit_lanes
        self.nodes: dict[str, Item] = {}
        self.boundary: dict[str, object] = {}       # boundary event id -> element
        self.boundary_of: dict[str, list] = {}      # host id -> boundary event ids
        self.evsubs: list = []
        self.flows: list[Flow] = []
        self.data: list = []                        # data object/store reference elements
        self.notes: list = []                       # text annotations
        self.assocs: list = []                      # (id, source id, target id, kind)
        self.items: dict[str, Item] = {}
        self.band_keys: list = []
        self._read()

    # ------------------------------------------------------------------ reading
    def _read(self) -> None:
        doc = 0
        for child in self.el:
            if not _is_el(child):
                continue
            name = _local(child)
            cid = child.get("id")
            if not cid:
                continue
            if name == "boundaryEvent" and child.get("attachedToRef"):
                self.boundary[cid] = child
            elif name in FLOW_NODES:
                if _is_event_subprocess(child):
                    self.evsubs.append(child)
                else:
                    w, h = _size(child)
                    self.nodes[cid] = Item(cid, "node", child, w, h, discovery=doc)
                    doc += 1
            elif name in ("dataObjectReference", "dataStoreReference"):
                self.data.append(child)
            elif name == "textAnnotation":
                self.notes.append(child)
        for bid, b in self.boundary.items():
            host = b.get("attachedToRef")
            if host in self.nodes:
                self.boundary_of.setdefault(host, []).append(bid)
        known = set(self.nodes) | {b for b in self.boundary if self.boundary[b].get("attachedToRef") in self.nodes}
        n = 0
        for child in self.el:
            if _is_el(child) and _local(child) == "sequenceFlow" and child.get("id"):
                s, t = child.get("sourceRef"), child.get("targetRef")
                if s in known and t in self.nodes:
                    f = Flow(child.get("id"), child, s, t, order=n)
                    f.src = self.boundary[s].get("attachedToRef") if s in self.boundary else s
                    f.tgt = t
                    self.flows.append(f)
                    n += 1
        # data associations (inside activities and events) and artifacts' associations
        data_ids = {d.get("id") for d in self.data}
        for node_id, owner in list(self.nodes.items()) + [(b, None) for b in self.boundary]:
            el = owner.el if owner is not None else self.boundary[node_id]
            for assoc in el:
                if not _is_el(assoc) or not assoc.get("id"):
                    continue
                if _local(assoc) == "dataInputAssociation":
                    for src in _refs(assoc, "sourceRef"):
                        if src in data_ids:
                            self.assocs.append((assoc.get("id"), src, node_id, "data"))
                            break
                elif _local(assoc) == "dataOutputAssociation":
                    for tgt in _refs(assoc, "targetRef"):
                        if tgt in data_ids:
                            self.assocs.append((assoc.get("id"), node_id, tgt, "data"))
                            break
        note_ids = {t.get("id") for t in self.notes}
        drawn_ids = set(self.nodes) | set(self.boundary) | data_ids | note_ids
        for child in self.el:
            if _is_el(child) and _local(child) == "association" and child.get("id"):
                s, t = child.get("sourceRef"), child.get("targetRef")
                if (s in note_ids) != (t in note_ids) and (s in drawn_ids) and (t in drawn_ids):
                    self.assocs.append((child.get("id"), s, t, "note"))
                elif s in drawn_ids and t in drawn_ids and s != t:
                    self.assocs.append((child.get("id"), s, t, "link"))

    # ------------------------------------------------------------------ bands
    def _bands(self) -> None:
        band_of: dict[str, object] = {}
        for nid in self.nodes:
            band_of[nid] = self.lane_of.get(nid)
        if self.inherit_lanes:
            # a node without a lane joins a neighbour's band (no lane is drawn in this plane)
            for _ in range(len(self.nodes)):
                changed = False
                for f in self.flows:
                    a, b = f.src, f.tgt
                    if band_of.get(b) is None and band_of.get(a) is not None:
                        band_of[b] = band_of[a]
                        changed = True
                    elif band_of.get(a) is None and band_of.get(b) is not None:
                        band_of[a] = band_of[b]
                        changed = True
                if not changed:
                    break
        keys: list = list(self.lane_order)
        if self.inherit_lanes:
            used = set(band_of.values()) | {self.lane_of.get(e.get("id")) for e in self.evsubs}
            keys = [k for k in keys if k in used]
        if any(v is None or v not in keys for v in band_of.values()):
            if self.inherit_lanes and keys:
                for nid, v in band_of.items():
                    if v not in keys:
                        band_of[nid] = keys[0]
            else:
                keys.insert(self._unassigned_position(band_of, keys), None)
        evsub_band = []
        for e in self.evsubs:
            lane = self.lane_of.get(e.get("id"))
            if lane is None or lane not in keys:
                evsub_band.append(e)
        if evsub_band:
            keys.append("#evsub")
        if not keys:
            keys = [None]
        self.band_keys = keys
        index = {k: i for i, k in enumerate(keys)}
        for nid, item in self.nodes.items():
            item.band = index.get(band_of[nid], index.get(None, 0))
        self.evsub_band = {}
        for e in self.evsubs:
            lane = self.lane_of.get(e.get("id"))
            self.evsub_band[e.get("id")] = index[lane] if lane in keys and lane is not None else index["#evsub"]

    def _unassigned_position(self, band_of: dict, keys: list) -> int:
        """Where the band of nodes without a lane goes: right below the lane most connected to it."""
        links = {k: 0 for k in keys}
        for f in self.flows:
            a, b = band_of.get(f.src), band_of.get(f.tgt)
            if a is None and b in links:
                links[b] += 1
            elif b is None and a in links:
                links[a] += 1
        if not keys or not any(links.values()):
            return len(keys)
        best = max(keys, key=lambda k: (links[k], -keys.index(k)))
        return keys.index(best) + 1

    # ------------------------------------------------------------------ columns
    def _columns(self) -> None:
        succ: dict[str, list] = {n: [] for n in self.nodes}
        preds: dict[str, list] = {n: [] for n in self.nodes}
        for f in self.flows:
            succ[f.src].append(f)
            preds[f.tgt].append(f)
        starts = [n for n, it in self.nodes.items() if _local(it.el) == "startEvent"]
        if not starts:
            starts = [n for n in self.nodes if not preds[n]]

        def reach(roots):
            seen, stack = set(), list(roots)
            while stack:
                n = stack.pop()
                if n in seen:
                    continue
                seen.add(n)
                stack.extend(f.tgt for f in succ[n])
            return seen

        reachable = reach(starts)
        order = list(self.nodes)               # document order
        groups = [([n for n in starts], [n for n in order if n in reachable])]
        rest = [n for n in order if n not in reachable]
        while rest:
            rest_set = set(rest)
            roots = [n for n in rest if not any(f.src in rest_set for f in preds[n])] or [rest[0]]
            got = reach(roots) & rest_set
            groups.append((roots, [n for n in rest if n in got]))
            rest = [n for n in rest if n not in got]

        discovery = 0
        offset = 0
        self.discovery = {}
        for roots, members in groups:
            member_set = set(members)
            # iterative DFS: back edges go to a node on the stack
            state: dict[str, int] = {}
            post: list[str] = []
            for root in roots + members:
                if root in state:
                    continue
                stack = [(root, iter(succ[root]))]
                state[root] = 1
                self.discovery[root] = discovery
                discovery += 1
                while stack:
                    node, it = stack[-1]
                    advanced = False
                    for f in it:
                        if f.tgt not in member_set:
                            continue
                        st = state.get(f.tgt)
                        if st == 1:
                            f.back = True
                        elif st is None:
                            state[f.tgt] = 1
                            self.discovery[f.tgt] = discovery
                            discovery += 1
                            stack.append((f.tgt, iter(succ[f.tgt])))
                            advanced = True
                            break
                    if not advanced:
                        state[node] = 2
                        post.append(node)
                        stack.pop()
            col: dict[str, int] = {}
            for n in reversed(post):      # topological order of the DAG without back edges
                col[n] = max([col[f.src] + 1 for f in preds[n] if not f.back and f.src in col] or [0])
            # sources that are not start events: right before their first successor
            for n in reversed(post):
                if preds[n] or _local(self.nodes[n].el) == "startEvent":
                    continue
                nxt = [col[f.tgt] for f in succ[n] if not f.back and f.tgt in col]
                if nxt:
                    col[n] = max(col[n], min(nxt) - 1)
            for n in members:
                self.nodes[n].col = col.get(n, 0) + offset
            offset = max([self.nodes[n].col for n in members] or [offset - 1]) + 1
        # self loops and flows within one column are drawn like back edges
        for f in self.flows:
            if not f.back and self.nodes[f.tgt].col <= self.nodes[f.src].col:
                f.back = True
        self.ncols = max([it.col for it in self.nodes.values()] or [-1]) + 1

    # ------------------------------------------------------------------ grid items
    def _items(self) -> None:
        items = self.items
        for nid, it in self.nodes.items():
            it.discovery = self.discovery.get(nid, 10 ** 6 + it.discovery)
            items[nid] = it
        # slots below activities for their boundary events' outgoing flows
        for host, bids in self.boundary_of.items():
            h = self.nodes[host]
            for bid in bids:
                if any(f.source == bid for f in self.flows):
                    slot = Item(f"#slot:{bid}", "slot", self.boundary[bid], 0, 0, band=h.band, col=h.col,
                                host=host, discovery=h.discovery)
                    items[slot.key] = slot
                    h.block.append(slot.key)
        # data objects and annotations below the node they are associated with
        anchored: dict[str, str] = {}
        for aid, s, t, kind in self.assocs:
            if kind == "link":
                continue
            if kind == "data":
                data_id, node_id = (s, t) if s not in self.nodes and s not in self.boundary else (t, s)
            else:
                note_ids = {n.get("id") for n in self.notes}
                data_id, node_id = (s, t) if s in note_ids else (t, s)
            node_id = self.boundary[node_id].get("attachedToRef") if node_id in self.boundary else node_id
            if node_id in self.nodes and data_id not in anchored:
                anchored[data_id] = node_id
        self.slots_of: dict[str, list] = {}       # data slot key -> its data objects/annotations
        loose = False
        for el in self.data + self.notes:
            did = el.get("id")
            w, h = _size(el)
            kind = "note" if _local(el) == "textAnnotation" else "data"
            host = anchored.get(did)
            if host is not None:
                # side by side in one slot below their node
                hn = self.nodes[host]
                slot_key = f"#data:{host}"
                if slot_key not in items:
                    items[slot_key] = Item(slot_key, "dataslot", None, 0, 0, band=hn.band, col=hn.col,
                                           host=host, discovery=hn.discovery)
                    hn.block.append(slot_key)
                    self.slots_of[slot_key] = []
                slot = items[slot_key]
                slot.w = slot.w + (24 if slot.w else 0) + w
                slot.h = max(slot.h, h)
                self.slots_of[slot_key].append(did)
                it = Item(did, kind, el, w, h, band=hn.band, col=hn.col, host=slot_key, discovery=hn.discovery)
            else:
                # not associated with a node: stacked in a column after the flow
                it = Item(did, kind, el, w, h, band=0, col=self.ncols, discovery=10 ** 7)
                loose = True
            items[did] = it
        if loose:
            self.ncols += 1
        # dummies for forward flows spanning more than one column
        for f in self.flows:
            if f.back:
                continue
            s, t = self.nodes[f.src], self.nodes[f.tgt]
            band = s.band
            for c in range(s.col + 1, t.col):
                d = Item(f"#dummy:{f.id}:{c}", "dummy", None, 0, 0, band=band, col=c,
                         discovery=s.discovery)
                items[d.key] = d
                f.dummies.append(d.key)
        # links between grid items of neighbouring columns (for ordering and rows)
        self.left: dict[str, list] = {k: [] for k in items}
        self.right: dict[str, list] = {k: [] for k in items}
        for f in self.flows:
            if f.back:
                continue
            first = f"#slot:{f.source}" if f.source in self.boundary and f"#slot:{f.source}" in items else f.src
            chain = [first] + f.dummies + [f.tgt]
            for a, b in zip(chain, chain[1:]):
                self.right[a].append(b)
                self.left[b].append(a)

    # ------------------------------------------------------------------ ordering
    def _blocks(self):
        """Column/band -> list of block heads (nodes and dummies; attached items follow their node)."""
        grid: dict[tuple, list] = {}
        for k, it in self.items.items():
            if it.kind in ("node", "dummy") or (it.kind in ("data", "note") and it.host is None):
                grid.setdefault((it.col, it.band), []).append(k)
        for key in grid:
            grid[key].sort(key=lambda k: (self.items[k].discovery, k))
        return grid

    def _members(self, head: str) -> list:
        return [head] + list(self.items[head].block)

    def _positions(self, grid) -> dict:
        pos = {}
        for (c, b), heads in grid.items():
            i = 0
            for h in heads:
                for m in self._members(h):
                    pos[m] = b * 10000 + i
                    i += 1
        return pos

    def _crossings(self, grid) -> int:
        pos = self._positions(grid)
        by_col: dict[int, list] = {}
        for a, outs in self.right.items():
            for b in outs:
                if self.items[a].col + 1 == self.items[b].col or self.items[a].col == self.items[b].col:
                    by_col.setdefault(self.items[a].col, []).append((pos[a], pos[b]))
        total = 0
        for segs in by_col.values():
            segs.sort()
            for i in range(len(segs)):
                for j in range(i + 1, len(segs)):
                    if (segs[i][0] - segs[j][0]) * (segs[i][1] - segs[j][1]) < 0:
                        total += 1
        return total

    def _order(self) -> None:
        """Barycentre sweeps over the columns; the branch-order constraints are applied to every
        column as it is sorted, and the ordering with the fewest crossings is kept."""
        grid = self._blocks()
        self.grid = grid
        self._keep_branch_order()
        cols = sorted({c for c, _ in grid})
        best = {k: list(v) for k, v in grid.items()}
        best_cross = self._crossings(grid)
        for sweep in range(8):
            forward = sweep % 2 == 0
            pos = self._positions(grid)
            for c in (cols if forward else list(reversed(cols))):
                for key in [k for k in grid if k[0] == c]:
                    heads = grid[key]
                    bary = {}
                    for h in heads:
                        ns = []
                        for m in self._members(h):
                            ns += self.left[m] if forward else self.right[m]
                        vals = [pos[n] for n in ns if n in pos]
                        bary[h] = (sum(vals) / len(vals)) if vals else None
                    # keep heads without neighbours where they are
                    known = sorted([h for h in heads if bary[h] is not None],
                                   key=lambda h: (bary[h], heads.index(h)))
                    it = iter(known)
                    grid[key] = [next(it) if bary[h] is not None else h for h in heads]
                    self._keep_branch_order(key)
                    i = 0
                    for h in grid[key]:
                        for m in self._members(h):
                            pos[m] = key[1] * 10000 + i
                            i += 1
            cross = self._crossings(grid)
            if cross < best_cross:
                best_cross = cross
                best = {k: list(v) for k, v in grid.items()}
        self.grid = best

    def _keep_branch_order(self, only=None) -> None:
        """The flows of one node keep their document order inside a column and band: SpiffWorkflow
        orders a node's outputs by the y coordinates of the targets (and tests an exclusive
        gateway's conditions in that order). A flow is represented by its first grid item after
        the source (its first dummy, or the target)."""
        outs: dict[str, list] = {}
        for f in self.flows:
            if not f.back and self._order_matters(f):
                outs.setdefault(f.source, []).append(f.dummies[0] if f.dummies else f.tgt)
        for source, firsts in outs.items():
            if len(firsts) < 2:
                continue
            for key, heads in self.grid.items():
                if only is not None and key != only:
                    continue
                mine = []
                for t in firsts:
                    if t in heads and t not in mine:
                        mine.append(t)
                if len(mine) < 2:
                    continue
                slots = sorted(heads.index(t) for t in mine)
                for i, t in zip(slots, mine):
                    heads[i] = t

    def _order_matters(self, f: Flow) -> bool:
        """Does SpiffWorkflow's order of this flow among its source's outputs change anything?
        Not for the default flow or a flow without condition of an exclusive/inclusive gateway."""
        el = self.nodes[f.source].el if f.source in self.nodes else self.boundary[f.source]
        if _local(el) in ("exclusiveGateway", "inclusiveGateway"):
            return f.id != el.get("default") and bool(_children(f.el, "conditionExpression"))
        return True

    # ------------------------------------------------------------------ rows
    def _rows(self) -> None:
        grid = self.grid
        cols = sorted({c for c, _ in grid})
        rows: dict[str, int] = {}
        for key, heads in grid.items():
            r = 0
            for h in heads:
                for m in self._members(h):
                    rows[m] = r
                    r += 1
        self.rows = rows

        def desired(head: str, use_left: bool, use_right: bool):
            vals = []
            for m in self._members(head):
                offset = self._members(head).index(m)
                ns = (self.left[m] if use_left else []) + (self.right[m] if use_right else [])
                for n in ns:
                    if self.items[n].band == self.items[head].band:
                        vals.append(rows[n] - offset)
            if not vals:
                return None
            vals.sort()
            return vals[(len(vals) - 1) // 2]

        passes = [(True, False), (False, True), (True, False), (False, True), (True, False)]
        for use_left, use_right in passes:
            seq = cols if use_left else list(reversed(cols))
            for c in seq:
                for key in [k for k in grid if k[0] == c]:
                    heads = grid[key]
                    sizes = [len(self._members(h)) for h in heads]
                    targets, weights = [], []
                    for h in heads:
                        d = desired(h, use_left, use_right)
                        if d is None:
                            d = desired(h, True, True)
                        if d is None:
                            targets.append(rows[h])
                            weights.append(0.01)
                        else:
                            targets.append(d)
                            weights.append(1.0)
                    new = _isotonic_rows(targets, weights, sizes)
                    for h, r in zip(heads, new):
                        for i, m in enumerate(self._members(h)):
                            rows[m] = r + i
        # compress: the top row of every band is 0
        for b in range(len(self.band_keys)):
            used = [r for k, r in rows.items() if self.items[k].band == b]
            if used:
                low = min(used)
                for k in rows:
                    if self.items[k].band == b:
                        rows[k] -= low
        for k, it in self.items.items():
            it.row = rows.get(k, 0)
        # event sub-processes: a row below the main flow of their band
        self.evsub_items = []
        for e in self.evsubs:
            eid = e.get("id")
            b = self.evsub_band[eid]
            used = [it.row for it in self.items.values() if it.band == b]
            base = (max(used) + 1) if used else 0
            col = sum(1 for x in self.evsub_items if x.band == b)
            it = Item(eid, "evsub", e, TASK_W, TASK_H, band=b, col=col, row=base)
            self.evsub_items.append(it)
        for it in self.evsub_items:
            self.items[it.key] = it
            self.left[it.key], self.right[it.key] = [], []
        if self.evsub_items:
            self.ncols = max(self.ncols, max(it.col for it in self.evsub_items) + 1)

    # ------------------------------------------------------------------ coordinates
    def _coordinates(self, channels: dict) -> None:
        ncols = max(self.ncols, 1)
        widths = [MIN_COL_W] * ncols
        widest = [0] * ncols
        for it in self.items.values():
            if it.kind in ("node", "data", "note", "evsub", "dataslot") and it.col < ncols:
                widths[it.col] = max(widths[it.col], it.w + COL_GAP)
                widest[it.col] = max(widest[it.col], it.w)
        # room for the names of flows after their source column
        extra = [0] * ncols
        for f in self.flows:
            text = (f.el.get("name") or "").strip()
            c = self.nodes[f.src].col
            if not text or f.back or c + 1 >= ncols:
                continue
            need = min(_label_size(text, 120)[0], 120) + 24
            free = (widths[c] - widest[c]) / 2 + (widths[c + 1] - widest[c + 1]) / 2
            extra[c] = max(extra[c], int(math.ceil(need - free)))
        self.col_x = []
        self.col_cx = []
        x = 0
        for w, e in zip(widths, extra):
            self.col_x.append(x)
            self.col_cx.append(x + w / 2)
            x += w + e
        self.col_w = [w + e for w, e in zip(widths, extra)]
        self.width = x
        nbands = len(self.band_keys)
        nrows = [1] * nbands
        for it in self.items.values():
            if not (it.kind in ("data", "note") and it.host is not None):
                nrows[it.band] = max(nrows[it.band], it.row + 1)
        self.band_y = []
        y = 0
        self.band_rows_top = []
        for b in range(nbands):
            top_ch = channels.get((b, "top"), 0)
            bottom_ch = channels.get((b, "bottom"), 0)
            y0 = y
            rows_top = y0 + BAND_PAD + top_ch
            y1 = rows_top + nrows[b] * ROW_H + bottom_ch + BAND_PAD
            self.band_y.append((y0, y1))
            self.band_rows_top.append(rows_top)
            y = y1
        self.height = y
        self.nrows = nrows
        for it in self.items.values():
            cx = self.col_cx[it.col] if it.col < ncols else 0
            cy = self.band_rows_top[it.band] + it.row * ROW_H + ROW_H / 2
            if it.kind in ("node", "data", "note", "evsub"):
                it.box = Box(int(round(cx - it.w / 2)), int(round(cy - it.h / 2)), it.w, it.h)
            else:
                it.box = Box(int(round(cx)), int(round(cy)), 0, 0)
        for slot_key, members in self.slots_of.items():
            slot = self.items[slot_key]
            x = slot.box.x - slot.w / 2
            for did in members:
                it = self.items[did]
                it.row = slot.row
                it.box = Box(int(round(x)), int(round(slot.box.y - it.h / 2)), it.w, it.h)
                x += it.w + 24
        # boundary events on the bottom edge of their host, from the right
        self.bboxes: dict[str, Box] = {}
        for host, bids in self.boundary_of.items():
            hb = self.nodes[host].box
            n = len(bids)
            for i, bid in enumerate(bids):
                # from the left: the centre keeps the markers, the right the drill-down icon
                cx = min(hb.x + 22 + i * 40, hb.right - EVENT_S / 2)
                self.bboxes[bid] = Box(int(round(cx - EVENT_S / 2)), int(round(hb.bottom - EVENT_S / 2)),
                                       EVENT_S, EVENT_S)

    def shape_box(self, eid: str) -> Optional[Box]:
        if eid in self.bboxes:
            return self.bboxes[eid]
        it = self.items.get(eid)
        return it.box if it is not None else None

    def _obstacles(self) -> list:
        boxes = []
        for k, it in self.items.items():
            if it.kind in ("node", "data", "note", "evsub"):
                boxes.append((k, it.box))
        for bid, box in self.bboxes.items():
            boxes.append((bid, box))
        return boxes

    def _path_cost(self, pts, exclude: set, boxes) -> float:
        hits = 0
        for p, q in zip(pts, pts[1:]):
            for k, box in boxes:
                if k in exclude:
                    continue
                if _hits(p, q, box):
                    hits += 1
        length = sum(abs(p[0] - q[0]) + abs(p[1] - q[1]) for p, q in zip(pts, pts[1:]))
        return hits * 100000 + (len(pts) - 2) * 200 + length

    def gap_x(self, c: int) -> float:
        """The x of the middle of the gap between column c and c + 1 (c may be -1)."""
        if c < 0:
            return self.col_x[0] if self.col_x else 0
        if c + 1 < len(self.col_x):
            return self.col_x[c + 1]
        return self.width

    # ------------------------------------------------------------------ loops
    def _plan_loops(self):
        """Choose, for every back edge, the channel (band, top/bottom) and how it leaves and enters."""
        self._coordinates({})
        boxes = self._obstacles()
        plans = []
        for f in self.flows:
            if not f.back:
                continue
            best = None
            for cand in self._loop_candidates(f, {}):
                pts, channel, exclude = cand["points"], cand["channel"], cand["exclude"]
                cost = self._path_cost(pts, exclude, boxes) + cand["penalty"]
                if best is None or cost < best[0]:
                    best = (cost, cand)
            plans.append((f, best[1]))
        # tracks in every channel: shorter loops nearer the rows
        channels: dict[tuple, list] = {}
        for f, cand in plans:
            channels.setdefault(cand["channel"], []).append((f, cand))
        tracks: dict[str, int] = {}
        sizes: dict[tuple, int] = {}
        for ch, entries in channels.items():
            entries.sort(key=lambda e: (e[1]["x1"] - e[1]["x0"], e[0].order))
            used: list[list] = []
            for f, cand in entries:
                for k, intervals in enumerate(used):
                    if all(cand["x1"] + 12 < a or cand["x0"] - 12 > b for a, b in intervals):
                        intervals.append((cand["x0"], cand["x1"]))
                        tracks[f.id] = k
                        break
                else:
                    used.append([(cand["x0"], cand["x1"])])
                    tracks[f.id] = len(used) - 1
            sizes[ch] = (len(used) + 1) * TRACK
        self.loop_plans = {f.id: cand for f, cand in plans}
        self.loop_tracks = tracks
        return sizes

    def _loop_candidates(self, f: Flow, channels: dict, track: int = 0):
        s_item, t_item = self.nodes[f.src], self.nodes[f.tgt]
        from_boundary = f.source in self.boundary
        sb = self.bboxes[f.source] if from_boundary else s_item.box
        tb = t_item.box
        bands = []
        for b, side in ((t_item.band, "bottom"), (t_item.band, "top"), (s_item.band, "bottom"), (s_item.band, "top")):
            if (b, side) not in bands:
                bands.append((b, side))
        out = []
        for b, side in bands:
            if from_boundary and side == "top" and b == s_item.band:
                continue
            y0, y1 = self.band_y[b]
            if side == "bottom":
                ych = self.band_rows_top[b] + self.nrows[b] * ROW_H + TRACK * (track + 1)
            else:
                ych = self.band_rows_top[b] - TRACK * (track + 1)
            exits = []
            if from_boundary:
                slot = self.items.get(f"#slot:{f.source}")
                sy = slot.box.cy if slot is not None else sb.bottom + 20
                if ych > sb.bottom:
                    exits.append(("direct", [(sb.cx, sb.bottom), (sb.cx, ych)]))
                gx = self.gap_x(s_item.col)
                exits.append(("gap", [(sb.cx, sb.bottom), (sb.cx, sy), (gx, sy), (gx, ych)]))
            else:
                if ych >= sb.bottom:
                    exits.append(("direct", [(sb.cx, sb.bottom), (sb.cx, ych)]))
                elif ych <= sb.y:
                    exits.append(("direct", [(sb.cx, sb.y), (sb.cx, ych)]))
                gx = self.gap_x(s_item.col)
                exits.append(("gap", [(sb.right, sb.cy), (gx, sb.cy), (gx, ych)]))
            entries = []
            if ych >= tb.bottom:
                entries.append(("direct", [(tb.cx, ych), (tb.cx, tb.bottom)]))
            elif ych <= tb.y:
                entries.append(("direct", [(tb.cx, ych), (tb.cx, tb.y)]))
            gx = self.gap_x(t_item.col - 1)
            entries.append(("gap", [(gx, ych), (gx, tb.cy), (tb.x, tb.cy)]))
            for ek, epts in exits:
                for nk, npts in entries:
                    pts = epts + npts
                    xs = [epts[-1][0], npts[0][0]]
                    penalty = (0 if side == "bottom" else 50) + (0 if b == t_item.band else 100)
                    penalty += (0 if ek == "direct" else 150) + (0 if nk == "direct" else 150)
                    out.append({"points": pts, "channel": (b, side), "exclude": {f.src, f.tgt, f.source},
                                "penalty": penalty, "x0": min(xs), "x1": max(xs), "exit": ek, "entry": nk})
        return out

    def _route_loop(self, f: Flow) -> list:
        plan = self.loop_plans[f.id]
        track = self.loop_tracks[f.id]
        for cand in self._loop_candidates(f, {}, track):
            if cand["channel"] == plan["channel"] and cand["exit"] == plan["exit"] and cand["entry"] == plan["entry"]:
                return cand["points"]
        return plan["points"]

    # ------------------------------------------------------------------ forward edges
    def _vertical_free(self, x, ya, yb, exclude: set, boxes) -> bool:
        return not any(_hits((x, ya), (x, yb), box) for k, box in boxes if k not in exclude)

    def _route_forward(self, f: Flow, boxes) -> list:
        s, t = self.nodes[f.src], self.nodes[f.tgt]
        sb, tb = s.box, t.box
        exclude = {f.src, f.tgt, f.source}
        stations = [(self.items[d].col, self.items[d].box.cy) for d in f.dummies] + [(t.col, tb.cy)]
        pts: list = []
        if f.source in self.boundary:
            bb = self.bboxes[f.source]
            slot = self.items.get(f"#slot:{f.source}")
            sy = slot.box.cy if slot is not None else bb.bottom + 20
            pts = [(bb.cx, bb.bottom), (bb.cx, sy)]
            cur_col, cur_y = s.col, sy
        else:
            y1 = stations[0][1]
            if y1 != sb.cy and _local(s.el) in _GATEWAYS:
                edge_y = sb.bottom if y1 > sb.cy else sb.y
                if self._vertical_free(sb.cx, edge_y, y1, exclude, boxes) and \
                        not self._horizontal_blocked(sb.cx, self.gap_x(s.col), y1, exclude, boxes):
                    pts = [(sb.cx, edge_y), (sb.cx, y1)]
                    cur_col, cur_y = s.col, y1
            if not pts:
                pts = [(sb.right, sb.cy)]
                cur_col, cur_y = s.col, sb.cy
        for i, (col, y) in enumerate(stations):
            last = i == len(stations) - 1
            if last and y != cur_y:
                # into a gateway from above/below when the way is free
                if _local(t.el) in _GATEWAYS or _local(t.el) in _EVENTS:
                    edge_y = tb.bottom if cur_y > tb.cy else tb.y
                    if not self._horizontal_blocked(self.col_x[t.col], tb.cx, cur_y, exclude, boxes) and \
                            self._vertical_free(tb.cx, cur_y, edge_y, exclude, boxes) and cur_col == col - 1:
                        pts += [(tb.cx, cur_y), (tb.cx, edge_y)]
                        return pts
            if y != cur_y:
                gx = self.gap_x(col - 1)
                pts += [(gx, cur_y), (gx, y)]
                cur_y = y
            cur_col = col
        pts.append((tb.x, tb.cy))
        return pts

    def _horizontal_blocked(self, xa, xb, y, exclude, boxes) -> bool:
        return any(_hits((xa, y), (xb, y), box) for k, box in boxes if k not in exclude)

    # ------------------------------------------------------------------ the whole thing
    def layout(self) -> Drawing:
        self._bands()
        self._columns()
        self._items()
        self._order()
        self._rows()
        sizes = self._plan_loops()
        self._coordinates(sizes)
        boxes = self._obstacles()
        for f in self.flows:
            f.points = self._route_loop(f) if f.back else self._route_forward(f, boxes)
        self._spread_gap_segments()
        return self._drawing()

    def _spread_gap_segments(self) -> None:
        """Vertical segments of different flows in the same column gap get their own x."""
        gaps = set(self.col_x[1:]) | {self.width, self.col_x[0] if self.col_x else 0}
        segs: dict[float, list] = {}
        for f in self.flows:
            pts = f.points
            for i in range(1, len(pts) - 2):
                p, q = pts[i], pts[i + 1]
                if p[0] == q[0] and p[0] in gaps:
                    if i == 1 and pts[0][1] == p[1]:
                        group = "s:" + f.source
                    elif i + 2 == len(pts) - 1 and pts[-1][1] == q[1]:
                        group = "t:" + f.tgt
                    else:
                        group = "f:" + f.id
                    segs.setdefault(p[0], []).append((min(p[1], q[1]), max(p[1], q[1]), group, f, i))
        offsets = [0, GAP_TRACK, -GAP_TRACK, 2 * GAP_TRACK, -2 * GAP_TRACK, 3 * GAP_TRACK, -3 * GAP_TRACK]
        for x, entries in segs.items():
            entries.sort(key=lambda e: (e[0], e[1], e[3].order))
            tracks: list[list] = []
            group_track: dict[str, int] = {}
            moves = []
            for y0, y1, group, f, i in entries:
                if group in group_track:
                    k = group_track[group]
                    tracks[k].append((y0, y1, group))
                else:
                    for k, occ in enumerate(tracks):
                        if all(y1 + 4 < a or y0 - 4 > b or g == group for a, b, g in occ):
                            occ.append((y0, y1, group))
                            break
                    else:
                        tracks.append([(y0, y1, group)])
                        k = len(tracks) - 1
                    group_track[group] = k
                moves.append((f, i, offsets[k % len(offsets)]))
            for f, i, off in moves:
                if off:
                    pts = f.points
                    pts[i] = (pts[i][0] + off, pts[i][1])
                    pts[i + 1] = (pts[i + 1][0] + off, pts[i + 1][1])

    def _drawing(self) -> Drawing:
        d = Drawing()
        d.width, d.height = self.width, self.height
        for b, key in enumerate(self.band_keys):
            d.bands.append((key, self.band_y[b][0], self.band_y[b][1]))
        edges = []
        for f in self.flows:
            edges.append((f.id, _simplify(f.points), f.el))
        for aid, s, t, kind in self.assocs:
            sbox, tbox = self.shape_box(s), self.shape_box(t)
            if sbox is not None and tbox is not None:
                edges.append((aid, _simplify(_connect(sbox, tbox)), None))
        segments = [(p, q) for _eid, pts, _el in edges for p, q in zip(pts, pts[1:])]
        obstacles = self._obstacles()
        for k, it in self.items.items():
            # bpmn-js puts a drill-down button below the right corner of a collapsed sub-process
            if it.kind in ("node", "evsub") and _local(it.el) in _CONTAINERS and _has_flow_content(it.el):
                obstacles.append(("#drilldown:" + k, Box(it.box.right - 12, it.box.bottom - 8, 26, 24)))
        placed: list[Box] = []
        for child in self.el:
            if not _is_el(child):
                continue
            cid = child.get("id")
            box = self.shape_box(cid) if cid else None
            if box is None:
                continue
            name = _local(child)
            extra = {}
            if name == "exclusiveGateway":
                extra["isMarkerVisible"] = "true"
            if name in _CONTAINERS:
                extra["isExpanded"] = "false"
            label = None
            text = (child.get("name") or "").strip()
            if text and (name in _EVENTS or name in _GATEWAYS or name in ("dataObjectReference",
                                                                          "dataStoreReference")):
                w, h = _label_size(text)
                label = _place_label(_shape_label_candidates(box, w, h), cid, segments, obstacles, placed)
                placed.append(label)
            d.shapes.append((cid, box, extra, label))
        for eid, pts, el in edges:
            label = None
            text = (el.get("name") or "").strip() if el is not None else ""
            if text:
                sizes = [_label_size(text, 120), _label_size(text, 64)]
                own = set(zip(pts, pts[1:]))
                others = [seg for seg in segments if seg not in own]
                shared = any(other_id != eid and len(other) > 1 and other[0] == pts[0] and
                             _same_direction(other, pts) for other_id, other, _el in edges)
                label = _place_label(_edge_label_candidates(pts, sizes, near_end=shared), None, others,
                                     obstacles, placed)
                placed.append(label)
            d.edges.append((eid, pts, label))
        d.order_changes = self._order_changes()
        return d

    def _order_changes(self) -> list:
        """Nodes whose outputs SpiffWorkflow 3.2 will order differently from the document: it sorts
        a node's outgoing flows by the y of their targets' shapes (a stable sort), and an exclusive
        gateway tests its conditions in that order. For exclusive and inclusive gateways only the
        flows with a condition count (the default flow is taken last anyway)."""
        outs: dict[str, list] = {}
        for f in self.flows:
            outs.setdefault(f.source, []).append(f)
        changes = []
        for source, flows in outs.items():
            flows = [f for f in flows if self._order_matters(f)]
            if len(flows) < 2:
                continue
            ys = [self.items[f.tgt].box.y for f in flows]
            by_y = sorted(range(len(flows)), key=lambda i: ys[i])
            if by_y != list(range(len(flows))):
                changes.append(source)
        return changes


def _shape_label_candidates(box: Box, w: int, h: int) -> list:
    """Label positions around an event, gateway or data object, best first."""
    cx = box.cx
    return [
        Box(int(round(cx - w / 2)), int(box.bottom + 5), w, h),          # below (bpmn-js default)
        Box(int(round(cx + 10)), int(box.bottom + 3), w, h),             # below, right of the centre
        Box(int(round(cx - 10 - w)), int(box.bottom + 3), w, h),         # below, left of the centre
        Box(int(round(cx - w / 2)), int(box.y - 5 - h), w, h),           # above
        Box(int(round(cx + 6)), int(box.y - 3 - h), w, h),               # above right
        Box(int(round(cx - 6 - w)), int(box.y - 3 - h), w, h),           # above left
        Box(int(box.right + 4), int(round(box.bottom - 2)), w, h),       # right, low
        Box(int(box.x - 4 - w), int(round(box.bottom - 2)), w, h),       # left, low
    ]


def _same_direction(a: list, b: list) -> bool:
    """Do two paths from one point leave in the same direction (sharing their first segment)?"""
    (ax, ay), (bx, by) = a[1], b[1]
    (x0, y0) = a[0]
    return (ax - x0 > 0) == (bx - x0 > 0) and (ay - y0 > 0) == (by - y0 > 0) and \
        (ax == x0) == (bx == x0)


def _edge_label_candidates(pts: list, sizes: list, near_end: bool = False) -> list:
    """Label positions along the first two and the last segment of a flow, best first; near its
    end first when the flow shares its first segment with a sibling."""
    out = []
    n = len(pts) - 1
    first = (n - 1, 0, 1) if n > 1 and near_end else (0, 1, n - 1)
    segs = [i for i in first if 0 <= i < n]
    for w, h in sizes:
        for i in dict.fromkeys(segs):
            p, q = pts[i], pts[i + 1]
            last = i == n - 1 and i > 0
            if p[1] == q[1]:                    # horizontal
                if last:
                    x = q[0] - 6 - w if q[0] > p[0] else q[0] + 6
                else:
                    x = p[0] + 6 if q[0] > p[0] else p[0] - 6 - w
                out.append(Box(x, p[1] - 3 - h, w, h))
                out.append(Box(x, p[1] + 3, w, h))
            else:                               # vertical
                y = p[1] + 4 if q[1] > p[1] else p[1] - 4 - h
                if last:
                    y = q[1] - 4 - h if q[1] > p[1] else q[1] + 4
                out.append(Box(p[0] + 5, y, w, h))
                out.append(Box(p[0] - 5 - w, y, w, h))
    return out or [Box(pts[0][0], pts[0][1], *sizes[0])]


def _rects_overlap(a: Box, b: Box) -> bool:
    return a.x < b.right and b.x < a.right and a.y < b.bottom and b.y < a.bottom


def _place_label(candidates: list, owner: Optional[str], segments: list, obstacles: list,
                 placed: list) -> Box:
    best, best_cost = candidates[0], None
    for i, cand in enumerate(candidates):
        cost = 0
        for p, q in segments:
            if _hits(p, q, cand, margin=-1):
                cost += 10
        for k, box in obstacles:
            if k != owner and _rects_overlap(cand, box):
                cost += 25
        for other in placed:
            if _rects_overlap(cand, other):
                cost += 20
        cost += i * 0.5
        if best_cost is None or cost < best_cost:
            best, best_cost = cand, cost
    return best


def _connect(a: Box, b: Box) -> list:
    """A simple orthogonal connection for associations (data objects, annotations)."""
    if b.y >= a.bottom:
        if a.x < b.cx < a.right:
            return [(b.cx, a.bottom), (b.cx, b.y)]
        return [(a.cx, a.bottom), (a.cx, b.cy), (b.x if b.x > a.cx else b.right, b.cy)]
    if a.y >= b.bottom:
        if b.x < a.cx < b.right:
            return [(a.cx, a.y), (a.cx, b.bottom)]
        return [(a.cx, a.y), (a.cx, b.cy), (b.x if b.x > a.cx else b.right, b.cy)]
    if b.x >= a.right:
        return [(a.right, a.cy), (b.x, b.cy)] if a.cy == b.cy else \
            [(a.right, a.cy), ((a.right + b.x) / 2, a.cy), ((a.right + b.x) / 2, b.cy), (b.x, b.cy)]
    return [(a.x, a.cy), ((a.x + b.right) / 2, a.cy), ((a.x + b.right) / 2, b.cy), (b.right, b.cy)]


def _isotonic_rows(targets: list, weights: list, sizes: list) -> list:
    """Rows r_i >= 0 with r_{i+1} >= r_i + sizes_i, as close (weighted L1) to targets as possible."""
    offsets = []
    acc = 0
    for s in sizes:
        offsets.append(acc)
        acc += s
    z = [t - o for t, o in zip(targets, offsets)]
    # pool adjacent violators with weighted medians
    blocks: list[list] = []          # [value, [(z, w), ...]]
    for zi, wi in zip(z, weights):
        blocks.append([zi, [(zi, wi)]])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            top = blocks.pop()
            blocks[-1][1].extend(top[1])
            blocks[-1][0] = _weighted_median(blocks[-1][1])
    out = []
    for value, members in blocks:
        out.extend([value] * len(members))
    rows = []
    floor = 0
    for v, o in zip(out, offsets):
        r = max(int(math.floor(v + o)), 0)
        r = max(r, floor)
        rows.append(r)
        floor = r + sizes[len(rows) - 1]
    return rows


def _weighted_median(pairs: list) -> float:
    pairs = sorted(pairs)
    total = sum(w for _, w in pairs)
    acc = 0.0
    for v, w in pairs:
        acc += w
        if acc >= total / 2:
            return v
    return pairs[-1][0]


# ============================================================================= document level

@dataclass
class _Span:
    name: str
    start: int
    start_end: int
    self_closing: bool = False
    end_start: int = -1
    end: int = -1


_NAME_RE = re.compile(r"[^\s/>]+")


def _scan(text: str) -> list[_Span]:
    """The elements of a well-formed document in document order, with their offsets in `text`."""
    spans: list[_Span] = []
    stack: list[_Span] = []
    i, n = 0, len(text)
    while True:
        j = text.find("<", i)
        if j < 0:
            break
        if text.startswith("<!--", j):
            i = text.index("-->", j + 4) + 3
        elif text.startswith("<![CDATA[", j):
            i = text.index("]]>", j + 9) + 3
        elif text.startswith("<?", j):
            i = text.index("?>", j + 2) + 2
        elif text.startswith("<!", j):
            i = text.index(">", j) + 1
        elif text.startswith("</", j):
            k = text.index(">", j)
            span = stack.pop()
            span.end_start, span.end = j, k + 1
            i = k + 1
        else:
            m = _NAME_RE.match(text, j + 1)
            k = m.end()
            quote = None
            while k < n:
                ch = text[k]
                if quote:
                    if ch == quote:
                        quote = None
                elif ch in "\"'":
                    quote = ch
                elif ch == ">":
                    break
                k += 1
            span = _Span(m.group(0), j, k + 1, self_closing=text[k - 1] == "/")
            spans.append(span)
            if span.self_closing:
                span.end_start = span.end = k + 1
            else:
                stack.append(span)
            i = k + 1
    return spans


class _Doc:
    """The text of a BPMN document, its lxml tree and the offsets of every element."""

    def __init__(self, text: str, filename: str):
        self.text = text
        self.filename = filename
        try:
            self.tree = parse_bpmn_bytes(text.encode("utf-8"), filename)
        except CleanauditError:
            raise
        self.root = self.tree.getroot()
        if self.root.tag != _q("definitions"):
            raise LayoutError(f"{filename}: the root element is not bpmn:definitions")
        self.elements = [el for el in self.root.iter() if _is_el(el)]
        spans = _scan(text)
        if len(spans) != len(self.elements):
            raise LayoutError(f"{filename}: could not locate the elements in the text")
        self.span = {}
        for el, sp in zip(self.elements, spans):
            if sp.name.split(":")[-1] != etree.QName(el).localname:
                raise LayoutError(f"{filename}: could not locate the elements in the text")
            self.span[el] = sp
        self.ids = {el.get("id") for el in self.elements if el.get("id")}
        self.by_id = {}
        for el in self.elements:
            if el.get("id") and el.get("id") not in self.by_id:
                self.by_id[el.get("id")] = el
        self.newline = "\r\n" if "\r\n" in text else "\n"
        self.indent = self._indent_unit()

    def _indent_unit(self) -> str:
        for child in self.root:
            sp = self.span.get(child) if _is_el(child) else None
            if sp is None:
                continue
            line_start = self.text.rfind("\n", 0, sp.start) + 1
            ws = self.text[line_start:sp.start]
            if ws and not ws.strip():
                return ws
            break
        return "  "

    def diagrams(self) -> list:
        return [c for c in self.root if _is_el(c) and c.tag == _q("BPMNDiagram", BPMNDI_NS)]


def _without_diagrams(text: str, filename: str) -> str:
    doc = _Doc(text, filename)
    cuts = []
    for d in doc.diagrams():
        sp = doc.span[d]
        start = sp.start
        while start > 0 and text[start - 1] in " \t\r\n":
            start -= 1
        cuts.append((start, sp.end))
    for start, end in sorted(cuts, reverse=True):
        text = text[:start] + text[end:]
    return text


class _Writer:
    def __init__(self, doc: _Doc):
        self.doc = doc
        self.used_ids = set(doc.ids)
        nsmap = doc.root.nsmap
        self.prefix = {}
        taken = set(k for k in nsmap if k)
        self.new_ns = []
        for uri, want in ((BPMNDI_NS, "bpmndi"), (DC_NS, "dc"), (DI_NS, "di")):
            have = [p for p, u in nsmap.items() if u == uri and p]
            if have:
                self.prefix[uri] = sorted(have)[0]
                continue
            name, k = want, 2
            while name in taken:
                name, k = f"{want}{k}", k + 1
            taken.add(name)
            self.prefix[uri] = name
            self.new_ns.append((name, uri))
        root_prefix = doc.root.prefix
        if doc.root.nsmap.get(root_prefix) == BPMN_NS:
            self.bpmn = root_prefix
        else:
            have = [p for p, u in nsmap.items() if u == BPMN_NS]
            self.bpmn = sorted(have, key=lambda p: (p is None, p or ""))[0] if have else None

    def new_id(self, base: str) -> str:
        cand, k = base, 2
        while cand in self.used_ids:
            cand, k = f"{base}_{k}", k + 1
        self.used_ids.add(cand)
        return cand

    def tag(self, uri: str, local: str) -> str:
        if uri == BPMN_NS:
            return f"{self.bpmn}:{local}" if self.bpmn else local
        return f"{self.prefix[uri]}:{local}"


def _num(v: float) -> str:
    return str(int(round(v)))


def _fmt_bounds(w: _Writer, box: Box) -> str:
    return (f'<{w.tag(DC_NS, "Bounds")} x="{_num(box.x)}" y="{_num(box.y)}" '
            f'width="{_num(box.w)}" height="{_num(box.h)}" />')


class _Plane:
    def __init__(self, element_id: str):
        self.element_id = element_id
        self.lines: list[tuple[int, str]] = []   # (depth inside the plane, text)

    def shape(self, w: _Writer, element_id: str, box: Box, extra: dict, label: Optional[Box]) -> None:
        attrs = "".join(f' {k}="{v}"' for k, v in extra.items())
        sid = w.new_id(f"{element_id}_di")
        self.lines.append((0, f'<{w.tag(BPMNDI_NS, "BPMNShape")} id="{sid}" bpmnElement="{element_id}"{attrs}>'))
        self.lines.append((1, _fmt_bounds(w, box)))
        if label is not None:
            self.lines.append((1, f'<{w.tag(BPMNDI_NS, "BPMNLabel")}>'))
            self.lines.append((2, _fmt_bounds(w, label)))
            self.lines.append((1, f'</{w.tag(BPMNDI_NS, "BPMNLabel")}>'))
        self.lines.append((0, f'</{w.tag(BPMNDI_NS, "BPMNShape")}>'))

    def edge(self, w: _Writer, element_id: str, points: list, label: Optional[Box]) -> None:
        eid = w.new_id(f"{element_id}_di")
        self.lines.append((0, f'<{w.tag(BPMNDI_NS, "BPMNEdge")} id="{eid}" bpmnElement="{element_id}">'))
        for x, y in points:
            self.lines.append((1, f'<{w.tag(DI_NS, "waypoint")} x="{_num(x)}" y="{_num(y)}" />'))
        if label is not None:
            self.lines.append((1, f'<{w.tag(BPMNDI_NS, "BPMNLabel")}>'))
            self.lines.append((2, _fmt_bounds(w, label)))
            self.lines.append((1, f'</{w.tag(BPMNDI_NS, "BPMNLabel")}>'))
        self.lines.append((0, f'</{w.tag(BPMNDI_NS, "BPMNEdge")}>'))

    def render(self, w: _Writer, base: str, unit: str, nl: str) -> str:
        did = w.new_id(f"{self.element_id}_diagram")
        pid = w.new_id(f"{self.element_id}_diagram_plane")
        out = [f'{base}<{w.tag(BPMNDI_NS, "BPMNDiagram")} id="{did}">',
               f'{base}{unit}<{w.tag(BPMNDI_NS, "BPMNPlane")} id="{pid}" bpmnElement="{self.element_id}">']
        for depth, text in self.lines:
            out.append(base + unit * (2 + depth) + text)
        out.append(f'{base}{unit}</{w.tag(BPMNDI_NS, "BPMNPlane")}>')
        out.append(f'{base}</{w.tag(BPMNDI_NS, "BPMNDiagram")}>')
        return nl.join(out)


def _lanes(container) -> tuple[list, dict, dict, int]:
    """(all lanes in order with their depth and leaf lanes, node -> leaf lane id, lane id -> leaves,
    max depth) of a container's laneSet(s)."""
    entries = []      # (lane el, depth)
    lane_of: dict[str, str] = {}
    leaves_of: dict[str, list] = {}

    def walk(lane_set, depth):
        leaves = []
        for lane in _children(lane_set, "lane"):
            lid = lane.get("id")
            if not lid:
                continue
            entries.append((lane, depth))
            sub = [ls for ls in _children(lane, "childLaneSet")]
            mine = []
            for ls in sub:
                mine += walk(ls, depth + 1)
            if not mine:
                mine = [lid]
            leaves_of[lid] = mine
            for ref in _refs(lane, "flowNodeRef"):
                # the deepest lane wins: children are walked first
                lane_of.setdefault(ref, mine[0])
            leaves += mine
        return leaves

    for lane_set in _children(container, "laneSet"):
        walk(lane_set, 0)
    depth = max([d for _, d in entries] or [-1]) + 1
    return entries, lane_of, leaves_of, depth


@dataclass
class _Pool:
    participant: Optional[str]       # participant id (None: a process drawn without a pool)
    process: Optional[object]        # the process element (None: a black-box pool)
    name: str = ""


def _plan_document(doc: _Doc):
    """Which processes to draw, in which pools, and what model elements to add."""
    root = doc.root
    processes = [c for c in root if _is_el(c) and c.tag == _q("process")]
    collaborations = [c for c in root if _is_el(c) and c.tag == _q("collaboration")]
    participant_of: dict[str, object] = {}
    for collab in collaborations:
        for part in _children(collab, "participant"):
            ref = part.get("processRef")
            if ref and ref not in participant_of:
                participant_of[ref] = part

    def executable(p):
        return (p.get("isExecutable") or "true").strip() == "true"

    # processes holding the ends of message flows are drawn too
    messaged = set()
    ends = {ref for collab in collaborations for mf in _children(collab, "messageFlow")
            for ref in (mf.get("sourceRef"), mf.get("targetRef")) if ref}
    if ends:
        for p in processes:
            if any(el.get("id") in ends for el in p.iter() if _is_el(el)):
                messaged.add(p.get("id"))
    drawn = [p for p in processes if executable(p) or p.get("id") in participant_of or p.get("id") in messaged]
    if not drawn and not collaborations:
        drawn = list(processes)
    needs_pool = any(_children(p, "laneSet") for p in drawn) or bool(collaborations)
    return processes, collaborations, participant_of, drawn, needs_pool


def _sub_containers(el) -> list:
    """Every embedded sub-process (any depth) with flow content, in document order."""
    out = []
    for child in el.iter():
        if child is el or not _is_el(child):
            continue
        if _local(child) in _CONTAINERS and child.get("id") and _has_flow_content(child):
            out.append(child)
    return out


def _leaf_order(entries, leaves_of) -> list:
    leaves = []
    for lane, _d in entries:
        for leaf in leaves_of[lane.get("id")]:
            if leaf not in leaves:
                leaves.append(leaf)
    return leaves


def _offset_drawing(plane: _Plane, w: _Writer, drawing: Drawing, dx: float, dy: float,
                    shapes_out: Optional[dict] = None) -> None:
    for eid, box, extra, label in drawing.shapes:
        b = Box(box.x + dx, box.y + dy, box.w, box.h)
        lb = Box(label.x + dx, label.y + dy, label.w, label.h) if label is not None else None
        plane.shape(w, eid, b, extra, lb)
        if shapes_out is not None:
            shapes_out[eid] = b
    for eid, pts, label in drawing.edges:
        moved = [(x + dx, y + dy) for x, y in pts]
        lb = Box(label.x + dx, label.y + dy, label.w, label.h) if label is not None else None
        plane.edge(w, eid, moved, lb)


@dataclass
class _PoolLayout:
    pool: "_Pool"
    drawing: Optional[Drawing] = None
    entries: list = field(default_factory=list)
    leaves_of: dict = field(default_factory=dict)
    depth: int = 0

    @property
    def width(self) -> float:
        if self.drawing is None:
            return 600
        return HEADER + self.depth * HEADER + CONTENT_PAD + self.drawing.width + CONTENT_PAD

    @property
    def height(self) -> float:
        return 100 if self.drawing is None else max(self.drawing.height, ROW_H)


def _pool_layout(pool: "_Pool") -> _PoolLayout:
    if pool.process is None:
        return _PoolLayout(pool)
    entries, lane_of, leaves_of, depth = _lanes(pool.process)
    drawing = _Container(pool.process, lane_of, _leaf_order(entries, leaves_of), inherit_lanes=False).layout()
    return _PoolLayout(pool, drawing, entries, leaves_of, depth)


def _draw_pool(plane: _Plane, w: _Writer, pl: _PoolLayout, x0: float, y0: float, width: float,
               shapes_out: dict) -> None:
    """Draw a pool (participant, its lanes and its process) at (x0, y0)."""
    box = Box(x0, y0, width, pl.height)
    plane.shape(w, pl.pool.participant, box, {"isHorizontal": "true"}, None)
    shapes_out[pl.pool.participant] = box
    if pl.drawing is None:
        return
    band_y = {key: (a, b) for key, a, b in pl.drawing.bands}
    for lane, d in pl.entries:
        ys = [band_y[leaf] for leaf in pl.leaves_of[lane.get("id")] if leaf in band_y]
        if not ys:
            continue
        lx = x0 + HEADER + d * HEADER
        top, bottom = min(a for a, _ in ys), max(b for _, b in ys)
        lb = Box(lx, y0 + top, x0 + width - lx, bottom - top)
        plane.shape(w, lane.get("id"), lb, {"isHorizontal": "true"}, None)
        shapes_out[lane.get("id")] = lb
    content_x = x0 + HEADER + pl.depth * HEADER + CONTENT_PAD
    _offset_drawing(plane, w, pl.drawing, content_x, y0, shapes_out)


def _message_flows(plane: _Plane, w: _Writer, collab, shapes: dict) -> None:
    """Message flows: vertical out of the source, along the gap between the pools, vertical in;
    flows crossing the same gap get their own track."""
    routes = []
    for mf in _children(collab, "messageFlow"):
        a, b = shapes.get(mf.get("sourceRef")), shapes.get(mf.get("targetRef"))
        if a is None or b is None or not mf.get("id"):
            continue
        routes.append((mf, a, b))
    gaps: dict[tuple, list] = {}
    for i, (mf, a, b) in enumerate(routes):
        if b.y >= a.bottom or a.y >= b.bottom:
            upper, lower = (a, b) if b.y >= a.bottom else (b, a)
            gaps.setdefault((upper.bottom, lower.y), []).append(i)
    track: dict[int, float] = {}
    for (y0, y1), members in gaps.items():
        n = len(members)
        step = min(8.0, (y1 - y0 - 8) / max(n, 1))
        for k, i in enumerate(members):
            track[i] = (y0 + y1) / 2 + (k - (n - 1) / 2) * step
    for i, (mf, a, b) in enumerate(routes):
        def x_of(box, other):
            return box.cx if box.w < 400 else (other.cx if other.w < 400 else box.cx)
        xa, xb = x_of(a, b), x_of(b, a)
        if b.y >= a.bottom:
            ym = track[i]
            pts = [(xa, a.bottom), (xa, ym), (xb, ym), (xb, b.y)]
        elif a.y >= b.bottom:
            ym = track[i]
            pts = [(xa, a.y), (xa, ym), (xb, ym), (xb, b.bottom)]
        else:
            pts = _connect(a, b)
        plane.edge(w, mf.get("id"), _simplify(pts), None)


def _sub_plane(w: _Writer, sub, lane_of_all: dict, lane_order: list) -> tuple[_Plane, list]:
    entries, own_lane_of, leaves_of, depth = _lanes(sub)
    plane = _Plane(sub.get("id"))
    if entries:
        cont = _Container(sub, own_lane_of, _leaf_order(entries, leaves_of), inherit_lanes=False)
        drawing = cont.layout()
        x0, y0 = ORIGIN_X, ORIGIN_Y
        content_x = x0 + depth * HEADER + CONTENT_PAD
        band_y = {key: (a, b) for key, a, b in drawing.bands}
        width = (content_x - x0) + drawing.width + CONTENT_PAD
        for lane, d in entries:
            ys = [band_y[leaf] for leaf in leaves_of[lane.get("id")] if leaf in band_y]
            if ys:
                lx = x0 + d * HEADER
                plane.shape(w, lane.get("id"),
                            Box(lx, y0 + min(a for a, _ in ys), x0 + width - lx,
                                max(b for _, b in ys) - min(a for a, _ in ys)), {"isHorizontal": "true"}, None)
        _offset_drawing(plane, w, drawing, content_x, y0)
    else:
        cont = _Container(sub, lane_of_all, lane_order, inherit_lanes=True)
        drawing = cont.layout()
        _offset_drawing(plane, w, drawing, ORIGIN_X, ORIGIN_Y)
    return plane, drawing.order_changes


def _all_lane_info(process) -> tuple[dict, list]:
    entries, lane_of, leaves_of, _ = _lanes(process)
    return lane_of, _leaf_order(entries, leaves_of)


@dataclass
class LayoutResult:
    xml: bytes
    order_changes: list       # ids of nodes whose outputs SpiffWorkflow orders differently now


def layout_document(xml: bytes, filename: str = "process.bpmn") -> LayoutResult:
    """Lay out every drawn process of `xml` (replacing existing DI); see the module docstring."""
    if isinstance(xml, str):
        raise LayoutError("layout_bpmn expects bytes")
    text = bytes(xml).decode("utf-8")
    text = _without_diagrams(text, filename)
    doc = _Doc(text, filename)
    w = _Writer(doc)
    processes, collaborations, participant_of, drawn, needs_pool = _plan_document(doc)
    if not drawn:
        raise LayoutError(f"{filename}: no process to lay out")
    nl, unit = doc.newline, doc.indent
    edits: list[tuple[int, int, str]] = []     # (position, length to delete, text)
    order_changes: list = []

    planes: list[_Plane] = []
    sub_planes: list[_Plane] = []
    if needs_pool:
        # pools: the participants of every collaboration (one diagram each); drawn processes
        # without a participant get one in the first collaboration (a new one if there is none)
        new_pools: list[_Pool] = []
        new_participants: list[str] = []
        for p in drawn:
            if p.get("id") in participant_of:
                continue
            pid = w.new_id(f"{p.get('id')}_participant")
            name = p.get("name") or p.get("id")
            new_participants.append(f'<{w.tag(BPMN_NS, "participant")} id="{pid}" name={quoteattr(name)} '
                                    f'processRef="{p.get("id")}" />')
            new_pools.append(_Pool(pid, p, name))
        plans = []
        by_id = {p.get("id"): p for p in processes}
        for i, collab in enumerate(collaborations):
            pools = [_Pool(part.get("id"), by_id.get(part.get("processRef")), part.get("name") or "")
                     for part in _children(collab, "participant") if part.get("id")]
            if i == 0:
                pools += new_pools
            plans.append((collab.get("id"), pools, collab))
        if collaborations and new_participants:
            collab = collaborations[0]
            sp = doc.span[collab]
            inner = unit * 2
            if sp.self_closing:
                slash = text.rindex("/", sp.start, sp.start_end)
                block = ">" + nl + nl.join(inner + line for line in new_participants) + nl + unit + \
                    f'</{w.tag(BPMN_NS, "collaboration")}>'
                edits.append((slash, sp.start_end - slash, block))
            else:
                pos = sp.end_start
                while pos > sp.start_end and text[pos - 1] in " \t\r\n":
                    pos -= 1
                edits.append((pos, 0, nl + nl.join(inner + line for line in new_participants)))
        if not collaborations:
            cid = w.new_id(f"{drawn[0].get('id')}_collaboration")
            block = [f'{unit}<{w.tag(BPMN_NS, "collaboration")} id="{cid}">']
            block += [unit * 2 + line for line in new_participants]
            block.append(f'{unit}</{w.tag(BPMN_NS, "collaboration")}>')
            edits.append((doc.span[processes[-1]].end, 0, nl + nl.join(block)))
            plans.append((cid, new_pools, None))
        done_subs: set = set()
        for plane_element, pools, collab in plans:
            main = _Plane(plane_element)
            shapes: dict[str, Box] = {}
            layouts = [_pool_layout(pool) for pool in pools]
            widest = max([pl.width for pl in layouts] or [600])
            y = ORIGIN_Y
            for pl in layouts:
                _draw_pool(main, w, pl, ORIGIN_X, y, widest, shapes)
                y += pl.height + POOL_GAP
                if pl.drawing is not None:
                    order_changes += pl.drawing.order_changes
            if collab is not None:
                _message_flows(main, w, collab, shapes)
            planes.append(main)
            for pool in pools:
                if pool.process is None or pool.process.get("id") in done_subs:
                    continue
                done_subs.add(pool.process.get("id"))
                lane_of_all, lane_order = _all_lane_info(pool.process)
                for sub in _sub_containers(pool.process):
                    plane, changes = _sub_plane(w, sub, lane_of_all, lane_order)
                    sub_planes.append(plane)
                    order_changes += changes
    else:
        for p in drawn:
            plane = _Plane(p.get("id"))
            cont = _Container(p, {}, [], inherit_lanes=False)
            drawing = cont.layout()
            order_changes += drawing.order_changes
            _offset_drawing(plane, w, drawing, ORIGIN_X, ORIGIN_Y)
            planes.append(plane)
            for sub in _sub_containers(p):
                plane, changes = _sub_plane(w, sub, {}, [])
                sub_planes.append(plane)
                order_changes += changes
    planes += sub_planes

    # the diagrams, before the root end tag
    root_span = doc.span[doc.root]
    pos = root_span.end_start
    while pos > root_span.start_end and text[pos - 1] in " \t\r\n":
        pos -= 1
    rendered = nl.join(plane.render(w, unit, unit, nl) for plane in planes)
    edits.append((pos, 0, nl + rendered))

    # namespace declarations: appended to the root start tag's last attribute (same line)
    if w.new_ns:
        end = root_span.start_end - 1
        if text[end - 1] == "/":
            end -= 1
        while text[end - 1] in " \t\r\n":
            end -= 1
        decl = "".join(f' xmlns:{p}="{uri}"' for p, uri in w.new_ns)
        edits.append((end, 0, decl))

    # from the end; at one position the edit made first ends up first
    for _i, (position, length, insert) in sorted(enumerate(edits), key=lambda e: (e[1][0], e[0]),
                                                 reverse=True):
        text = text[:position] + insert + text[position + length:]
    out = text.encode("utf-8")
    parse_bpmn_bytes(out, filename)        # still well-formed and safe
    return LayoutResult(out, sorted(set(order_changes)))


def layout_bpmn(xml: bytes, filename: str = "process.bpmn") -> bytes:
    """Return `xml` with diagram interchange for every executable process (existing DI replaced).

    Everything else stays as it was, byte for byte, except: namespace declarations for
    bpmndi/dc/di appended to the root start tag (same line), and a `bpmn:collaboration` (or new
    participants in the existing one) after the last process when a process with lanes has no
    pool. Raises `XmlRefused` for unsafe XML and `LayoutError` for documents it cannot lay out.
    """
    return layout_document(xml, filename).xml


# ============================================================================= checking

def _drawn_elements(doc: _Doc) -> list[str]:
    """Ids of the elements that need DI for bpmn-js to draw the document completely."""
    processes, collaborations, participant_of, drawn, needs_pool = _plan_document(doc)
    want: list[str] = []
    if collaborations:
        for collab in collaborations:
            for part in _children(collab, "participant"):
                if part.get("id"):
                    want.append(part.get("id"))
            # message flows between pools and the nodes drawn on the main plane (a flow to a node
            # inside a sub-process would cross planes: bpmn-js cannot draw it)
            main_ids = {part.get("id") for c in collaborations for part in _children(c, "participant")}
            for p in drawn:
                main_ids.update(c.get("id") for c in p if _is_el(c) and _local(c) in FLOW_NODES)
            for mf in _children(collab, "messageFlow"):
                if mf.get("id") and mf.get("sourceRef") in main_ids and mf.get("targetRef") in main_ids:
                    want.append(mf.get("id"))
    for p in drawn:
        for el in p.iter():
            if el is p or not _is_el(el) or not el.get("id"):
                continue
            name = _local(el)
            if name in FLOW_NODES or name in ("sequenceFlow", "lane", "dataObjectReference",
                                              "dataStoreReference", "textAnnotation", "association"):
                want.append(el.get("id"))
    return want


def has_complete_di(xml) -> list[str]:
    """The ids of elements bpmn-js would not draw for lack of DI ([] when the DI is complete):
    flow nodes, sequence flows, lanes, data object references, annotations, participants and
    message flows."""
    data = xml if isinstance(xml, (bytes, bytearray)) else str(xml).encode("utf-8")
    doc = _Doc(bytes(data).decode("utf-8"), "process.bpmn")
    have = set()
    for el in doc.root.iter(_q("BPMNShape", BPMNDI_NS), _q("BPMNEdge", BPMNDI_NS)):
        ref = el.get("bpmnElement")
        if ref:
            have.add(ref.split(":")[-1])
    missing = []
    for eid in _drawn_elements(doc):
        if eid in have:
            continue
        if eid in missing:
            continue
        missing.append(eid)
    return missing


def order_changes(xml: bytes) -> list[str]:
    """Ids of nodes whose outgoing flows SpiffWorkflow will order (by the targets' y) differently
    from the document order, once `xml` is laid out."""
    return layout_document(xml).order_changes


def strip_di(xml: bytes, filename: str = "process.bpmn") -> bytes:
    """`xml` without its bpmndi:BPMNDiagram elements (everything else byte for byte). SpiffWorkflow
    then orders every node's outputs in document order again."""
    return _without_diagrams(bytes(xml).decode("utf-8"), filename).encode("utf-8")


def has_any_di(xml) -> bool:
    """Does the document hold at least one bpmndi:BPMNDiagram?"""
    data = xml if isinstance(xml, (bytes, bytearray)) else str(xml).encode("utf-8")
    root = parse_bpmn_bytes(bytes(data), "process.bpmn").getroot()
    return any(_is_el(c) and c.tag == _q("BPMNDiagram", BPMNDI_NS) for c in root)


def _problem_keys(problems) -> list:
    return sorted((p.element_id or "", p.message, p.severity) for p in problems)


def layout_paths(paths: Iterable, *, check: bool = False, force: bool = False, forms_dir=None,
                 out=print) -> int:
    """`cleanaudit layout FILE... [--check] [--force]`; returns the exit code (0 or 1).

    Without flags: lays out, in place, every file without DI; a file with complete DI is left
    alone, a file with incomplete DI is refused (its DI may be hand-made). `force`: replaces the
    DI of every file. `check`: changes nothing and exits 1 when a file lacks complete DI.
    A layout is written only when it adds no validation problem (engine.validate).
    """
    import os
    import tempfile
    from collections import Counter
    from pathlib import Path

    from engine.xmlsafe import XmlRefused

    status = 0
    for name in paths:
        path = Path(name)
        try:
            data = path.read_bytes()
        except OSError as exc:
            out(f"{name}: cannot read the file: {exc.strerror or exc}")
            status = 1
            continue
        try:
            missing = has_complete_di(data)
            any_di = has_any_di(data)
        except (XmlRefused, LayoutError) as exc:
            out(f"{name}: {getattr(exc, 'message', None) or exc}")
            status = 1
            continue
        if check:
            if missing:
                shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
                out(f"{name}: no complete diagram: {len(missing)} element(s) without DI: {shown}")
                status = 1
            continue
        if any_di and not force:
            if missing:
                out(f"{name}: has an incomplete diagram ({len(missing)} element(s) without DI); "
                    f"--force replaces it")
                status = 1
            else:
                out(f"{name}: already has a diagram (--force replaces it)")
            continue
        try:
            result = layout_document(data, path.name)
        except (XmlRefused, LayoutError) as exc:
            out(f"{name}: {getattr(exc, 'message', None) or exc}")
            status = 1
            continue
        # the layout must not add a validation problem
        from engine.validate import validate_files
        before = validate_files([(path.name, data)], forms_dir=forms_dir)
        after = validate_files([(path.name, result.xml)], forms_dir=forms_dir)
        added = Counter(_problem_keys(after.problems)) - Counter(_problem_keys(before.problems))
        if added:
            for element_id, message, severity in sorted(added):
                out(f"{name}: {element_id or '-'}: the layout would add a problem: {message}")
            status = 1
            continue
        if result.xml != data:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(result.xml)
                os.chmod(tmp, path.stat().st_mode & 0o7777)
                os.replace(tmp, path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
        out(f"{name}: laid out")
        if result.order_changes:
            out(f"{name}: warning: SpiffWorkflow 3.2 orders a node's outputs by the y coordinate of their "
                f"targets; the lanes put the targets of {', '.join(result.order_changes)} out of document order")
    return status
