"""An instance's history as a timeline: one row per event, labelled and translated; and as CSV.

Submitted data (task data, start data, message payloads, data patches) is confidential (Art. 20):
it is shown only when `show_data` is true (engine.confidential decided so); otherwise the row says
that it is withheld.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from engine.models import Upload, User

from .dataview import Item, form_item, generic_item, process_forms
from .display import HIDDEN_KEYS, to_local

KIND_LABELS = {
    "started": _l("流程发起"),
    "task_completed": _l("办理完成"),
    "timer_fired": _l("定时器到期"),
    "message_sent": _l("发出消息"),
    "message_received": _l("收到消息"),
    "message_undelivered": _l("消息未送达"),
    "incident": _l("故障"),
    "retried": _l("故障后重试"),
    "confidential_viewed": _l("查阅保密信息"),
    "access_refused": _l("拒绝查阅"),
    "cancelled": _l("已撤销"),
    "completed": _l("流程办结"),
    "data_changed": _l("数据更正"),
    "deployed": _l("部署"),
}

# engine.confidential.decide's reasons, as the timeline shows them
REASONS = {
    "auditor": _l("审计员"),
    "regional authority": _l("自治区主管部门"),
    "the enterprise itself": _l("企业本身"),
    "local authority over the enterprise": _l("对企业有管辖权的地县主管部门"),
    "national authority (central enterprise, Art. 16)": _l("国家主管部门（中央企业，第十六条）"),
    "the person the record is about": _l("记录所涉本人"),
    "the commissioned audit agency": _l("受委托的审核咨询服务机构"),
    "expert drawn for the review": _l("抽取的评审专家"),
    "inactive or unknown user": _l("用户已停用或不存在"),
    "not the enterprise, its agency, an authority over it or a drawn expert (Art. 20)":
        _l("既非企业本身、其审核机构、主管部门，也非抽取的专家（第二十条）"),
}

ACTORS = {"engine": _l("系统"), "timer": _l("定时器")}

# keys of start data and message payloads that no form asks for (display.KEY_LABELS has the others)
KEY_LABELS = {
    "grounds": _l("列入依据"),
    "is_central": _l("中央企业"),
    "source_instance_id": _l("来源实例"),
    "conduct": _l("违法行为"),
    "conduct_date": _l("行为发生日期"),
    "deadline": _l("期限"),
    "authority": _l("主管部门"),
    "starter_roles": _l("发起人角色"),
    "starter_jurisdiction_code": _l("发起人行政区划"),
}
HIDDEN = HIDDEN_KEYS | {"starter_organisation_id"}

# event data keys that hold confidential data, by kind
DATA_KEYS = {"started": "data", "task_completed": "data", "message_sent": "payload",
             "message_received": "payload", "retried": "data_patch", "data_changed": "data"}


@dataclass
class Fact:
    label: str
    value: str
    data: bool = True          # a value from the data (marked translate="no")
    instance_id: Optional[int] = None


@dataclass
class Row:
    seq: int
    at: Optional[datetime]
    actor: str
    actor_name: str
    kind: str
    kind_label: str
    task: str
    bpmn_id: str
    facts: list[Fact] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)
    withheld: bool = False
    hash: str = ""


def local_seconds(value: Any) -> str:
    local = to_local(value)
    return local.strftime("%Y-%m-%d %H:%M:%S") if local else ""


def diagram_id(bpmn_id: Optional[str]) -> str:
    """The BPMN id of an event's task ("review [child]" of a multi-instance task -> "review")."""
    return (bpmn_id or "").split(" [", 1)[0]


class Timeline:
    """Builds the rows of one instance's history for one reader."""

    def __init__(self, engine, instance, show_data: bool, lang: str):
        self.engine = engine
        self.instance = instance
        self.show_data = show_data
        self.lang = lang
        self._forms: Optional[dict] = None

    def forms(self) -> dict:
        if self._forms is None:
            found: dict = {}
            for process_id in [self.instance.process_id, *sorted(self.instance.called_versions or {})]:
                for key, form in process_forms(self.engine, process_id).items():
                    found.setdefault(key, form)
            self._forms = found
        return self._forms

    def rows(self, events: list) -> list[Row]:
        names = self._actor_names({e.actor for e in events} | {
            (e.data or {}).get("user") for e in events if e.kind in ("confidential_viewed", "access_refused")})
        rows = [self._row(event, names) for event in events]
        self._name_files(rows)
        return rows

    def _actor_names(self, usernames: set) -> dict[str, str]:
        usernames = {u for u in usernames if u}
        with self.engine.db.read() as session:
            found = session.execute(select(User.username, User.display_name)
                                    .where(User.username.in_(usernames))).all()
        names = {username: (display or username) for username, display in found}
        for actor, label in ACTORS.items():
            names.setdefault(actor, str(label))
        return names

    def _row(self, event, names: dict) -> Row:
        data = dict(event.data or {})
        kind = event.kind
        row = Row(event.seq, event.at, event.actor, names.get(event.actor, event.actor), kind,
                  str(KIND_LABELS.get(kind, kind)), str(data.get("title") or ""), diagram_id(event.bpmn_id),
                  hash=event.hash)
        if kind == "started":
            row.facts.append(Fact(_("版本"), str(data.get("version", "")), data=False))
        elif kind == "timer_fired":
            row.facts.append(Fact(_("定时器"), str(data.get("timer") or "")))
            row.facts.append(Fact(_("到期时间"), local_seconds(data.get("due")) or str(data.get("due") or "")))
        elif kind in ("message_sent", "message_received", "message_undelivered"):
            row.facts.append(Fact(_("消息"), str(data.get("message") or "")))
            if data.get("from_instance"):
                row.facts.append(Fact(_("来自实例"), str(data["from_instance"]),
                                      instance_id=int(data["from_instance"])))
        elif kind == "incident":
            row.facts.append(Fact(_("错误信息"), str(data.get("error") or "")))
        elif kind == "retried":
            row.facts.append(Fact(_("原错误"), str(data.get("previous_error") or "")))
        elif kind in ("confidential_viewed", "access_refused"):
            viewer = data.get("user") or event.actor
            row.facts.append(Fact(_("查阅人"), names.get(viewer, viewer)))
            row.facts.append(Fact(_("查阅内容"), str(data.get("what") or "")))
            reason = data.get("reason") or ""
            label = REASONS.get(reason)
            row.facts.append(Fact(_("查阅依据"), str(label) if label is not None else reason, data=label is None))
        key = DATA_KEYS.get(kind)
        payload = data.get(key) if key else None
        if key is None and kind not in KIND_LABELS:
            payload = data           # an event kind this page does not know: its data, as data
        if isinstance(payload, dict) and payload:
            if self.show_data:
                row.items = self._items(payload)
            else:
                row.withheld = True
        return row

    def _items(self, payload: dict) -> list[Item]:
        forms = self.forms()
        items = []
        for key, value in payload.items():
            if key in HIDDEN or str(key).startswith("_") or value in (None, "", [], {}):
                continue
            try:
                item = form_item(forms[key], key, value, self.lang) if key in forms else generic_item(key, value)
            except Exception:  # a form changed since: show the value as it was stored
                item = generic_item(key, value)
            if item.label == key and key in KEY_LABELS:
                item.label = str(KEY_LABELS[key])
            items.append(item)
        return items

    def _name_files(self, rows: list[Row]) -> None:
        ids = {int(i.file_id) for r in rows for i in r.items if i.kind == "file" and str(i.file_id).isdigit()}
        if not ids:
            return
        with self.engine.db.read() as session:
            names = dict(session.execute(select(Upload.id, Upload.filename).where(Upload.id.in_(ids))).all())
        for row in rows:
            for item in row.items:
                if item.kind == "file":
                    name = names.get(int(item.file_id)) if str(item.file_id).isdigit() else None
                    item.kind, item.text = "text", name or f"#{item.file_id}"


def item_text(item: Item) -> str:
    """An item as one line of text (the CSV export)."""
    if item.kind == "table":
        return " | ".join("; ".join(f"{c}: {v}" for c, v in zip(item.columns, cells) if v not in ("", None))
                          for cells in item.rows)
    if item.kind == "list":
        return ", ".join(item.values)
    return item.text


def _cell(value: Any) -> Any:
    """A cell Excel will not run as a formula (submitted text may start with = + - @)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def to_csv(rows: list[Row]) -> bytes:
    """The timeline as CSV: UTF-8 with a byte order mark, so that Excel opens Chinese text correctly."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([_("序号"), _("时间（北京时间）"), _("办理人"), _("用户名"), _("事件"), _("事件代码"),
                     _("任务"), _("任务标识"), _("内容"), _("哈希")])
    for row in rows:
        parts = [f"{f.label}: {f.value}" for f in row.facts if f.value]
        parts += [f"{i.label}: {item_text(i)}" for i in row.items]
        if row.withheld:
            parts.append(_("提交的数据保密，未显示（第二十条）"))
        writer.writerow([_cell(v) for v in (row.seq, local_seconds(row.at), row.actor_name, row.actor,
                                             row.kind_label, row.kind, row.task, row.bpmn_id, "\n".join(parts),
                                             row.hash)])
    return "\ufeff".encode("utf-8") + buffer.getvalue().encode("utf-8")
