"""Checking the administration forms: field values and messages (field -> [text])."""
from __future__ import annotations

import re

from flask_babel import gettext as _
from sqlalchemy import select

from engine.authz import ROLES
from engine.forms import uscc_problem
from engine.models import Division, Organisation, User

from .i18n import lang

USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MIN_PASSWORD = 8
ORG_KINDS = ("enterprise", "agency")
FILING_STATUSES = ("none", "applying", "filed", "revoked")


def user_form(session, form, creating: bool) -> tuple[dict, dict]:
    """Checked user fields and messages (field -> [text])."""
    errors: dict[str, list[str]] = {}
    values = {
        "username": form.get("username", "").strip(),
        "display_name": form.get("display_name", "").strip()[:200],
        "roles": [r for r in form.getlist("roles") if r],
        "jurisdiction_code": form.get("jurisdiction_code", "").strip() or None,
        "organisation_id": form.get("organisation_id", "").strip() or None,
        "active": form.get("active") == "on",
        "password": form.get("password", ""),
    }
    if creating and not USERNAME.match(values["username"]):
        errors["username"] = [_("用户名须为1至64位字母、数字、点、下划线或连字符，以字母或数字开头。")]
    elif creating and session.scalar(select(User).where(User.username == values["username"])):
        errors["username"] = [_("用户名已存在。")]
    unknown = [r for r in values["roles"] if r not in ROLES]
    if unknown:
        errors["roles"] = [_("未知角色：%(roles)s", roles=", ".join(unknown))]
    if values["jurisdiction_code"] and session.get(Division, values["jurisdiction_code"]) is None:
        errors["jurisdiction_code"] = [_("未知的行政区划代码：%(code)s", code=values["jurisdiction_code"])]
    if values["organisation_id"] is not None:
        if not values["organisation_id"].isdigit() or session.get(Organisation, int(values["organisation_id"])) is None:
            errors["organisation_id"] = [_("未知的单位。")]
        else:
            values["organisation_id"] = int(values["organisation_id"])
    if creating and len(values["password"]) < MIN_PASSWORD:
        errors["password"] = [_("密码至少 %(n)d 位。", n=MIN_PASSWORD)]
    return values, errors


def organisation_form(session, form, current_id=None) -> tuple[dict, dict]:
    errors: dict[str, list[str]] = {}
    values = {
        "kind": form.get("kind", ""), "name": form.get("name", "").strip()[:200],
        "credit_code": form.get("credit_code", "").strip().upper(),
        "division_code": form.get("division_code", "").strip(),
        "industry_code": form.get("industry_code", "").strip()[:8] or None,
        "is_central": form.get("is_central") == "on",
        "legal_representative": form.get("legal_representative", "").strip()[:100] or None,
        "address": form.get("address", "").strip()[:300] or None,
        "contact": form.get("contact", "").strip()[:200] or None,
        "filing_status": form.get("filing_status", "none"),
        "filing_number": form.get("filing_number", "").strip()[:40] or None,
    }
    if values["kind"] not in ORG_KINDS:
        errors["kind"] = [_("请选择单位类型。")]
    if not values["name"]:
        errors["name"] = [_("必填")]
    problem = uscc_problem(values["credit_code"])
    if problem is not None:
        errors["credit_code"] = [problem.en if lang() == "en" else problem.zh]
    else:
        other = session.scalar(select(Organisation).where(Organisation.credit_code == values["credit_code"]))
        if other is not None and other.id != current_id:
            errors["credit_code"] = [_("该统一社会信用代码已登记：%(name)s", name=other.name)]
    if session.get(Division, values["division_code"]) is None:
        errors["division_code"] = [_("请选择所在地行政区划。")]
    if values["filing_status"] not in FILING_STATUSES:
        errors["filing_status"] = [_("未知的备案状态。")]
    if values["kind"] == "enterprise":
        values["filing_status"], values["filing_number"] = "none", None
    elif values["filing_status"] == "filed" and not values["filing_number"]:
        errors["filing_number"] = [_("已备案的机构须填写备案编号。")]
    return values, errors
