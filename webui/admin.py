"""Administration: users, organisations, the holiday calendar, incidents and undelivered messages."""
from __future__ import annotations

import json
from datetime import date

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import func, select

from engine import clock
from engine.accounts import AccountError, create_user, hash_password
from engine.authz import ROLES
from engine.models import CalendarDay, Division, Instance, Organisation, UndeliveredMessage, User

from .access import get_engine, roles_required
from .adminforms import FILING_STATUSES, MIN_PASSWORD, ORG_KINDS, organisation_form, user_form
from .display import flash_text

bp = Blueprint("admin", __name__, url_prefix="/admin")

@bp.before_request
@roles_required("administrator")
def only_administrators():
    """Every page here is for administrators only."""


def _choices(session) -> dict:
    return {
        "roles": ROLES,
        "divisions": list(session.scalars(select(Division).order_by(Division.code))),
        "organisations": list(session.scalars(select(Organisation).order_by(Organisation.kind, Organisation.name))),
    }


@bp.route("/", strict_slashes=False)
def index():
    with get_engine().db.read() as session:
        counts = {
            "users": session.scalar(select(func.count()).select_from(User)),
            "organisations": session.scalar(select(func.count()).select_from(Organisation)),
            "incidents": session.scalar(select(func.count()).select_from(Instance).where(Instance.status == "incident")),
            "calendar": session.scalar(select(func.count()).select_from(CalendarDay)),
            "messages": session.scalar(select(func.count()).select_from(UndeliveredMessage).where(
                UndeliveredMessage.resolved_at.is_(None))),
        }
    return render_template("admin/index.html", counts=counts)


# ---------------------------------------------------------------------- users
@bp.route("/users", methods=["GET", "POST"])
def users():
    engine = get_engine()
    values, errors = {"active": True, "roles": []}, {}
    if request.method == "POST":
        with engine.db.transaction() as session:
            values, errors = user_form(session, request.form, creating=True)
            if not errors:
                try:
                    create_user(session, values["username"], values["password"], values["roles"],
                                display_name=values["display_name"],
                                jurisdiction_code=values["jurisdiction_code"],
                                organisation_id=values["organisation_id"])
                except AccountError as exc:
                    errors["username"] = [str(exc)]
        if not errors:
            flash(flash_text(_("已创建用户 %(name)s。"), name=values["username"]), "success")
            return redirect(url_for("admin.users"))
    with engine.db.read() as session:
        rows = list(session.scalars(select(User).order_by(User.username)))
        choices = _choices(session)
    return render_template("admin/users.html", users=rows, values=values, errors=errors,
                           **choices), (422 if errors else 200)


@bp.route("/users/<int:user_id>", methods=["GET", "POST"])
def user(user_id: int):
    engine = get_engine()
    errors: dict = {}
    with engine.db.transaction() as session:
        row = session.get(User, user_id)
        if row is None:
            abort(404)
        values = {"username": row.username, "display_name": row.display_name, "roles": list(row.roles or []),
                  "jurisdiction_code": row.jurisdiction_code, "organisation_id": row.organisation_id,
                  "active": row.active}
        if request.method == "POST":
            values, errors = user_form(session, request.form, creating=False)
            values["username"] = row.username
            if row.id == current_user.model.id and ("administrator" not in values["roles"] or not values["active"]):
                errors["roles"] = [_("不能停用自己的账户或取消自己的管理员角色。")]
            if not errors:
                row.display_name = values["display_name"] or row.username
                row.roles = values["roles"]
                row.jurisdiction_code = values["jurisdiction_code"]
                row.organisation_id = values["organisation_id"]
                row.active = values["active"]
        choices = _choices(session)
    if request.method == "POST" and not errors:
        flash(flash_text(_("已保存用户 %(name)s。"), name=values["username"]), "success")
        return redirect(url_for("admin.user", user_id=user_id))
    return render_template("admin/user.html", user_id=user_id, values=values, errors=errors,
                           **choices), (422 if errors else 200)


@bp.route("/users/<int:user_id>/password", methods=["POST"])
def reset_password(user_id: int):
    password = request.form.get("password", "")
    if len(password) < MIN_PASSWORD:
        flash(_("密码至少 %(n)d 位，未修改。", n=MIN_PASSWORD), "error")
        return redirect(url_for("admin.user", user_id=user_id))
    with get_engine().db.transaction() as session:
        row = session.get(User, user_id)
        if row is None:
            abort(404)
        row.password_hash = hash_password(password)
        name = row.username
    flash(flash_text(_("已重置 %(name)s 的密码；该用户的现有会话已失效。"), name=name), "success")
    return redirect(url_for("admin.user", user_id=user_id))


# ---------------------------------------------------------------------- organisations
@bp.route("/organisations", methods=["GET", "POST"])
def organisations():
    engine = get_engine()
    values, errors = {"kind": "enterprise", "filing_status": "none"}, {}
    if request.method == "POST":
        with engine.db.transaction() as session:
            values, errors = organisation_form(session, request.form)
            if not errors:
                org = Organisation(**values)
                if org.filing_status == "filed":
                    org.filed_at = clock.now()
                session.add(org)
        if not errors:
            flash(flash_text(_("已登记单位 %(name)s。"), name=values["name"]), "success")
            return redirect(url_for("admin.organisations"))
    kind = request.args.get("kind")
    with engine.db.read() as session:
        query = select(Organisation).order_by(Organisation.kind, Organisation.name)
        if kind in ORG_KINDS:
            query = query.where(Organisation.kind == kind)
        rows = list(session.scalars(query))
        divisions = list(session.scalars(select(Division).order_by(Division.code)))
    return render_template("admin/organisations.html", organisations=rows, values=values, errors=errors,
                           divisions=divisions, kind=kind, statuses=FILING_STATUSES), (422 if errors else 200)


@bp.route("/organisations/<int:org_id>", methods=["GET", "POST"])
def organisation(org_id: int):
    engine = get_engine()
    errors: dict = {}
    with engine.db.transaction() as session:
        org = session.get(Organisation, org_id)
        if org is None:
            abort(404)
        values = {c: getattr(org, c) for c in ("kind", "name", "credit_code", "division_code", "industry_code",
                                               "is_central", "legal_representative", "address", "contact",
                                               "filing_status", "filing_number")}
        if request.method == "POST":
            values, errors = organisation_form(session, request.form, current_id=org.id)
            if not errors:
                if values["filing_status"] == "filed" and org.filing_status != "filed":
                    org.filed_at = clock.now()
                for key, value in values.items():
                    setattr(org, key, value)
        divisions = list(session.scalars(select(Division).order_by(Division.code)))
    if request.method == "POST" and not errors:
        flash(flash_text(_("已保存单位 %(name)s。"), name=values["name"]), "success")
        return redirect(url_for("admin.organisation", org_id=org_id))
    return render_template("admin/organisation.html", org_id=org_id, values=values, errors=errors,
                           divisions=divisions, statuses=FILING_STATUSES), (422 if errors else 200)


# ---------------------------------------------------------------------- calendar
@bp.route("/calendar", methods=["GET", "POST"])
def calendar():
    engine = get_engine()
    year_arg = request.values.get("year", "")
    year = int(year_arg) if year_arg.isdigit() and 2000 <= int(year_arg) <= 2100 else clock.now().year
    errors: dict = {}
    values = {"day": "", "kind": "holiday", "name": ""}
    if request.method == "POST":
        values = {"day": request.form.get("day", ""), "kind": request.form.get("kind", ""),
                  "name": request.form.get("name", "").strip()[:100]}
        try:
            day = date.fromisoformat(values["day"])
        except ValueError:
            errors["day"] = [_("日期格式应为 YYYY-MM-DD。")]
        if values["kind"] not in ("holiday", "workday"):
            errors["kind"] = [_("请选择类型。")]
        if not errors:
            with engine.db.transaction() as session:
                row = session.get(CalendarDay, day)
                if row is None:
                    session.add(CalendarDay(day=day, kind=values["kind"], name=values["name"]))
                else:
                    row.kind, row.name = values["kind"], values["name"]
            engine.invalidate_calendar()
            flash(_("已保存 %(day)s。新的期限按修改后的日历计算。", day=day.isoformat()), "success")
            return redirect(url_for("admin.calendar", year=day.year))
    with engine.db.read() as session:
        days = list(session.scalars(select(CalendarDay).where(
            CalendarDay.day >= date(year, 1, 1), CalendarDay.day <= date(year, 12, 31)).order_by(CalendarDay.day)))
        years = sorted({d.year for d in session.scalars(select(CalendarDay.day))} | {year})
    return render_template("admin/calendar.html", days=days, year=year, years=years, values=values,
                           errors=errors), (422 if errors else 200)


@bp.route("/calendar/<day>/delete", methods=["POST"])
def calendar_delete(day: str):
    engine = get_engine()
    try:
        when = date.fromisoformat(day)
    except ValueError:
        abort(404)
    with engine.db.transaction() as session:
        row = session.get(CalendarDay, when)
        if row is None:
            abort(404)
        session.delete(row)
    engine.invalidate_calendar()
    flash(_("已删除 %(day)s。", day=when.isoformat()), "success")
    return redirect(url_for("admin.calendar", year=when.year))


# ---------------------------------------------------------------------- incidents and messages
@bp.route("/incidents")
def incidents():
    with get_engine().db.read() as session:
        rows = list(session.scalars(select(Instance).where(Instance.status == "incident")
                                    .order_by(Instance.updated_at.desc()).limit(500)))
    return render_template("admin/incidents.html", incidents=rows)


@bp.route("/incidents/<int:instance_id>/retry", methods=["POST"])
def retry(instance_id: int):
    patch_text = request.form.get("data_patch", "").strip()
    patch = None
    if patch_text:
        try:
            patch = json.loads(patch_text)
        except json.JSONDecodeError as exc:
            flash(_("数据修正不是有效的 JSON（第 %(line)d 行第 %(col)d 列）：未重试。",
                    line=exc.lineno, col=exc.colno), "error")
            return redirect(url_for("admin.incidents"))
        if not isinstance(patch, dict):
            flash(_("数据修正须为 JSON 对象，如 {\"divisor\": 2}：未重试。"), "error")
            return redirect(url_for("admin.incidents"))
    result = get_engine().retry(current_user.model, instance_id, patch)
    if result.status == "incident":
        flash(flash_text(_("实例 %(id)d 重试后仍然出错：%(error)s"), id=instance_id,
                         error=result.incident or ""), "error")
    else:
        flash(_("实例 %(id)d 已恢复运行。", id=instance_id), "success")
    return redirect(url_for("admin.incidents"))


@bp.route("/messages")
def messages():
    show_all = request.args.get("all") == "1"
    with get_engine().db.read() as session:
        query = select(UndeliveredMessage).order_by(UndeliveredMessage.created_at.desc()).limit(500)
        if not show_all:
            query = query.where(UndeliveredMessage.resolved_at.is_(None))
        rows = list(session.scalars(query))
    return render_template("admin/messages.html", messages=rows, show_all=show_all)


@bp.route("/messages/<int:message_id>/<action>", methods=["POST"])
def message_action(message_id: int, action: str):
    engine = get_engine()
    if action not in ("redeliver", "resolve"):
        abort(404)
    with engine.db.read() as session:
        row = session.get(UndeliveredMessage, message_id)
        if row is None or row.resolved_at is not None:
            abort(404)
        name, payload, correlations = row.name, dict(row.payload or {}), dict(row.correlations or {})
    target = None
    if action == "redeliver":
        target = engine.send_message(name, payload, correlations, actor=current_user.model.username)
    with engine.db.transaction() as session:
        row = session.get(UndeliveredMessage, message_id)
        if action == "resolve" or target is not None:
            row.resolved_at = clock.now()
        if target is not None:
            # the engine kept no new copy: the message reached an instance
            row.reason = f"{row.reason}\nredelivered to instance {target} by {current_user.model.username}".strip()
        elif action == "redeliver":
            # the engine stored a fresh undelivered copy; keep only that one open
            row.resolved_at = clock.now()
            row.reason = f"{row.reason}\nredelivery failed; kept as a new entry".strip()
    if action == "resolve":
        flash(_("已标记为已处理。"), "success")
    elif target is not None:
        flash(_("消息已送达实例 %(id)d。", id=target), "success")
    else:
        flash(_("仍无实例接收此消息，已重新登记。"), "error")
    return redirect(url_for("admin.messages"))
