"""The role inbox: open tasks this user may act on, filters, paging and Start buttons."""
from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from sqlalchemy import select

from engine.models import HumanTask, Organisation

from .access import get_engine
from .display import flash_text, process_name, process_names

bp = Blueprint("inbox", __name__)


def _inbox_process_ids(user) -> list[str]:
    """Processes that have open tasks for this user (choices of the process filter)."""
    with get_engine().db.read() as session:
        return sorted(set(session.scalars(select(HumanTask.process_id).where(
            HumanTask.status == "open", HumanTask.lane.in_(list(user.roles or [])),
            HumanTask.scope.in_(user.scope_keys())))))


def start_data(user) -> dict:
    """What a new instance knows about the user who starts it (see docs/architecture.md scopes)."""
    data: dict = {"started_by": user.username}
    if user.jurisdiction_code:
        data["jurisdiction_code"] = user.jurisdiction_code
    if user.organisation_id is not None:
        with get_engine().db.read() as session:
            org = session.get(Organisation, user.organisation_id)
        if org is not None:
            # the starting organisation, so that forms asking for these start filled in
            data.update(credit_code=org.credit_code, division_code=org.division_code)
            data.update({k: v for k, v in (("legal_representative", org.legal_representative),
                                           ("address", org.address)) if v})
        if org is not None and org.kind == "enterprise":
            data.update(enterprise_id=org.id, enterprise_name=org.name, jurisdiction_code=org.division_code)
        elif org is not None:
            data.update(agency_id=org.id, agency_name=org.name, agency_credit_code=org.credit_code)
    return data


@bp.route("/")
@login_required
def index():
    engine = get_engine()
    user = current_user.model
    process_id = request.args.get("process") or None
    overdue = request.args.get("overdue") == "1"
    page_no = request.args.get("page", "1")
    page_no = int(page_no) if page_no.isdigit() and int(page_no) > 0 else 1
    page = engine.inbox(user, process_id=process_id, overdue=overdue, page=page_no,
                        per_page=current_app.config["INBOX_PER_PAGE"])
    startable = engine.startable_processes(user)
    names = process_names()
    pager_args = {k: v for k, v in (("process", process_id), ("overdue", "1" if overdue else None)) if v}
    return render_template("inbox.html", page=page, process_id=process_id, overdue=overdue,
                           pager_args=pager_args,
                           filter_processes=[(p, names.get(p, p)) for p in _inbox_process_ids(user)],
                           startable=[(p, names.get(p, p)) for p in startable])


@bp.route("/start/<process_id>", methods=["POST"])
@login_required
def start(process_id: str):
    engine = get_engine()
    user = current_user.model
    if process_id not in engine.startable_processes(user):
        return render_template("error.html", status=403, title=_("无权发起"),
                               explanation=_("您的角色不能发起此流程。"), detail=""), 403
    instance_id = engine.start(process_id, actor=user, data=start_data(user))
    if engine.instance(instance_id).status == "incident":
        flash(flash_text(_("已发起：%(name)s，但自动处理步骤出错，已转系统管理员处理（实例 %(id)d）。"),
                         name=process_name(process_id), id=instance_id), "error")
        return redirect(url_for("inbox.index"))
    flash(flash_text(_("已发起：%(name)s"), name=process_name(process_id)), "success")
    with engine.db.read() as session:
        first = session.scalars(select(HumanTask).where(
            HumanTask.instance_id == instance_id, HumanTask.status == "open")).all()
    mine = [row for row in first if engine.may_act(user, row)]
    if mine:
        return redirect(url_for("tasks.show", task_id=mine[0].id))
    flash(_("下一步无需您办理。"), "info")
    return redirect(url_for("inbox.index"))
