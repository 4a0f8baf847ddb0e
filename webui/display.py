"""How values look: dates in Asia/Shanghai, due badges, process names, labels of known data keys."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any, Optional

from flask import Flask, g
from markupsafe import Markup
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select

from engine import clock

SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")  # no daylight saving since 1991
SOON = timedelta(days=7)

# Labels of data keys that appear in published records and task data across processes.
KEY_LABELS = {
    "enterprise_name": _l("企业名称"),
    "enterprise": _l("企业"),
    "name": _l("名称"),
    "credit_code": _l("统一社会信用代码"),
    "uscc": _l("统一社会信用代码"),
    "legal_representative": _l("法定代表人"),
    "address": _l("地址"),
    "division_code": _l("行政区划代码"),
    "media": _l("公布媒体"),
    "disclosure_date": _l("公布日期"),
    "published_on": _l("名单公布日期"),
    "pollutants": _l("主要污染物排放情况"),
    "medium": _l("排放介质"),
    "discharge_mode": _l("排放方式"),
    "concentration": _l("排放浓度"),
    "unit": _l("单位"),
    "standard_limit": _l("执行标准限值"),
    "annual_total_t": _l("年排放总量（吨）"),
    "quota_t": _l("总量控制指标（吨）"),
    "exceeds": _l("是否超标"),
    "over_quota": _l("是否超总量"),
    "year": _l("年度"),
    "batch": _l("批次"),
    "ground": _l("列入依据"),
    "enterprises": _l("企业名单"),
    "decision": _l("结论"),
    "result": _l("结果"),
    "reason": _l("理由"),
    "return_reason": _l("退回理由"),
    "remarks": _l("备注"),
    "agency_name": _l("审核咨询服务机构"),
    "filing_number": _l("备案编号"),
    "penalty": _l("处罚内容"),
    "legal_basis": _l("法律依据"),
    "decision_number": _l("决定书文号"),
    "decision_date": _l("决定日期"),
    "title": _l("标题"),
    "summary": _l("摘要"),
    "article": _l("依据"),
}

VALUE_LABELS = {
    ("medium", "water"): _l("废水"),
    ("medium", "air"): _l("废气"),
    ("medium", "solid"): _l("固体废物"),
    ("ground", "1"): _l("超标或超总量排放（第八条第一项）"),
    ("ground", "2"): _l("使用或排放有毒有害物质（第八条第二项）"),
}

FILING_LABELS = {
    "none": _l("未备案"),
    "applying": _l("申请备案中"),
    "filed": _l("已备案"),
    "revoked": _l("已撤销备案"),
}

WEEKDAYS = (_l("星期一"), _l("星期二"), _l("星期三"), _l("星期四"), _l("星期五"), _l("星期六"), _l("星期日"))

HIDDEN_KEYS = {"enterprise_id", "agency_id", "instance_id", "csrf_token", "jurisdiction_code", "started_by"}


def key_label(key: str) -> str:
    label = KEY_LABELS.get(key)
    return str(label) if label is not None else key


def value_label(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return _("是") if value else _("否")
    if value is None:
        return ""
    label = VALUE_LABELS.get((key, str(value)))
    if label is not None:
        return str(label)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def flash_text(message: str, **data) -> Markup:
    """A translated message whose data values are marked as data (translate="no"), escaped."""
    marked = {k: v if isinstance(v, (int, float)) else Markup('<span translate="no">{}</span>').format(v)
              for k, v in data.items()}
    return Markup(message) % marked


def filing_label(status: str) -> str:
    label = FILING_LABELS.get(status)
    return str(label) if label is not None else status


def weekday(day: date) -> str:
    return str(WEEKDAYS[day.weekday()])


def to_local(value: Any) -> Optional[datetime]:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(SHANGHAI)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=SHANGHAI)
    return None


def local_date(value: Any) -> str:
    local = to_local(value)
    return local.strftime("%Y-%m-%d") if local else ""


def local_datetime(value: Any) -> str:
    local = to_local(value)
    return local.strftime("%Y-%m-%d %H:%M") if local else ""


def due_state(due_at: Optional[datetime]) -> Optional[str]:
    """'overdue', 'soon' (within 7 days) or None."""
    if due_at is None:
        return None
    now = clock.now()
    if due_at < now:
        return "overdue"
    if due_at - now <= SOON:
        return "soon"
    return None


def division_choices(lang: str) -> list[tuple[str, str]]:
    """(code, "code name") of every division, for fields of format "division-code"."""
    from flask import current_app
    cache = current_app.extensions.setdefault("webui_division_choices", {})
    if lang not in cache:
        from engine.models import Division
        from .access import get_engine
        with get_engine().db.read() as session:
            rows = session.scalars(select(Division).order_by(Division.code)).all()
            cache[lang] = [(d.code, f"{d.code} {d.name_en if lang == 'en' else d.name_zh}") for d in rows]
    return cache[lang]


def process_names() -> dict[str, str]:
    """process id -> name of its newest deployed version, once per request."""
    if "process_names" not in g:
        from engine.models import ProcessVersion
        from .access import get_engine
        newest = select(ProcessVersion.process_id, func.max(ProcessVersion.version_no).label("n")) \
            .group_by(ProcessVersion.process_id).subquery()
        with get_engine().db.read() as session:
            rows = session.execute(select(ProcessVersion.process_id, ProcessVersion.name).join(
                newest, (ProcessVersion.process_id == newest.c.process_id)
                & (ProcessVersion.version_no == newest.c.n)))
            g.process_names = {pid: (name or pid) for pid, name in rows}
    return g.process_names


def process_name(process_id: str) -> str:
    return process_names().get(process_id, process_id)


def init_app(app: Flask) -> None:
    app.jinja_env.filters.update(local_date=local_date, local_datetime=local_datetime,
                                 key_label=key_label, process_name=process_name)
    app.jinja_env.globals.update(due_state=due_state, value_label=value_label, key_label=key_label,
                                 hidden_keys=HIDDEN_KEYS, now=clock.now, filing_label=filing_label,
                                 weekday=weekday)
