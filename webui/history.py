"""Instance history: search (/instances), one instance's diagram and timeline, the timeline as CSV.

Auditors and administrators see every instance of their jurisdiction, read-only; everyone else the
instances where they have or had a task (engine.inspect). The submitted data in a timeline is
shown to those engine.confidential allows, and each such view by anyone but the enterprise itself
is recorded in the instance's history (Art. 20, 30).
"""
from __future__ import annotations

import re
from datetime import datetime, time
from typing import Optional

from flask import Blueprint, Response, abort, current_app, render_template, request
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required

from engine import confidential, inspect
from engine.models import Organisation

from .access import get_engine
from .display import SHANGHAI, division_choices, process_names
from .i18n import lang
from .timeline import Timeline, to_csv

bp = Blueprint("history", __name__)

STATUS_LABELS = {
    "running": _l("办理中"),
    "completed": _l("已办结"),
    "incident": _l("故障"),
    "cancelled": _l("已撤销"),
}
MARKERS = ("completed", "active", "failed", "cancelled")
_DIVISION = re.compile(r"^\d{6}$")


def _day(value: Optional[str], end: bool = False) -> tuple[Optional[datetime], bool]:
    """(start or end of that day in Asia/Shanghai, whether the value was valid)."""
    if not value:
        return None, True
    try:
        day = datetime.strptime(value.strip(), "%Y-%m-%d").date()
    except ValueError:
        return None, False
    return datetime.combine(day, time.max if end else time.min, tzinfo=SHANGHAI), True


def _page_number() -> int:
    raw = request.args.get("page", "1")
    return int(raw) if raw.isdigit() and int(raw) > 0 else 1


@bp.route("/instances")
@login_required
def index():
    args = request.args
    started_from, from_ok = _day(args.get("from"))
    started_to, to_ok = _day(args.get("to"), end=True)
    filters = {
        "process_id": args.get("process") or None,
        "status": args.get("status") if args.get("status") in STATUS_LABELS else None,
        "enterprise": (args.get("enterprise") or "").strip()[:100] or None,
        "jurisdiction": args.get("jurisdiction") if _DIVISION.match(args.get("jurisdiction") or "") else None,
        "started_from": started_from,
        "started_to": started_to,
    }
    page = inspect.search_instances(get_engine(), current_user.model, page=_page_number(),
                                    per_page=current_app.config["INBOX_PER_PAGE"], **filters)
    form = {key: args.get(key, "") for key in ("process", "status", "enterprise", "jurisdiction", "from", "to")}
    pager_args = {key: value for key, value in form.items() if value}
    names = process_names()
    return render_template("history/instances.html", page=page, form=form, pager_args=pager_args,
                           bad_dates=[k for k, ok in (("from", from_ok), ("to", to_ok)) if not ok],
                           processes=sorted(names.items(), key=lambda item: item[0]),
                           statuses=STATUS_LABELS, divisions=division_choices(lang()),
                           overseer=any(current_user.has_role(r) for r in inspect.OVERSEERS))


def _visible_instance(instance_id: int):
    """The instance row (404 unknown), if this user may see it (403 otherwise)."""
    engine = get_engine()
    instance = engine.instance(instance_id)
    if not inspect.may_view_instance(engine, current_user.model, instance_id):
        abort(403)
    return instance


def _timeline(instance, what: str):
    engine = get_engine()
    decision = confidential.view_instance_history(engine, current_user.model, instance.id, what)
    rows = Timeline(engine, instance, decision.allowed, lang()).rows(engine.history(instance.id))
    return rows, decision


@bp.route("/instances/<int:instance_id>")
@login_required
def show(instance_id: int):
    engine = get_engine()
    instance = _visible_instance(instance_id)
    rows, decision = _timeline(instance, "history")
    diagram = inspect.instance_diagram(engine, current_user.model, instance_id)
    breaks = inspect.chain_status(engine, instance_id)
    enterprise = None
    if instance.enterprise_id:
        with engine.db.read() as session:
            org = session.get(Organisation, instance.enterprise_id)
            enterprise = org.name if org is not None else None
    diagram_data = {state: getattr(diagram, state) for state in MARKERS}
    diagram_data.update(xml=diagram.xml, flows=diagram.flows)
    return render_template("history/instance.html", instance=instance, rows=rows, decision=decision,
                           diagram=diagram, diagram_data=diagram_data, breaks=breaks, enterprise=enterprise,
                           statuses=STATUS_LABELS)


@bp.route("/instances/<int:instance_id>/history.csv")
@login_required
def export(instance_id: int):
    instance = _visible_instance(instance_id)
    rows, _decision = _timeline(instance, "history (CSV export)")
    return Response(to_csv(rows), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="instance-{instance_id}-history.csv"'})
