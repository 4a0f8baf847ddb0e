"""Option lists of form fields that name an organisation (uischema ``"ui:widget": "organisation"``).

A form field such as ``agency_id`` or ``enterprise_id`` holds an organisation id; its uischema entry
names the list the user chooses from in ``ui:options.filter`` (engine.forms.ORGANISATION_FILTERS):

- ``filed_agencies``: audit agencies whose filing is in force (Art. 19: only filed agencies audit);
- ``enterprises_in_jurisdiction``: enterprises whose division lies in the user's jurisdiction (a
  county its own code, a prefecture 6501xx, the region 65xxxx; the national role the central
  enterprises; an enterprise user only itself).

A list is a convenience for choosing, never the rule: the processes check the value on submit
(is_filed_agency, organisation_info). Flask-free; the web UI draws the list as a select.
"""
from __future__ import annotations

from typing import Optional

from sqlalchemy import select

from .authz import NATIONAL_CODE
from .forms import ORGANISATION_FILTERS
from .inspect import jurisdiction_prefix
from .models import Organisation, User


def organisation_options(engine, user: Optional[User], option_filter: str, lang: str = "zh") -> list[tuple[int, str]]:
    """(organisation id, "name（code）") of the organisations the filter lists for this user, by name."""
    if option_filter not in ORGANISATION_FILTERS:
        raise ValueError(f"unknown organisation filter {option_filter!r}")
    query = select(Organisation)
    if option_filter == "filed_agencies":
        query = query.where(Organisation.kind == "agency", Organisation.filing_status == "filed")
    else:
        query = query.where(Organisation.kind == "enterprise")
        code = getattr(user, "jurisdiction_code", None)
        if user is None:
            return []
        if "enterprise" in (user.roles or []) and user.organisation_id is not None:
            query = query.where(Organisation.id == user.organisation_id)
        elif code == NATIONAL_CODE:
            query = query.where(Organisation.is_central.is_(True))
        elif jurisdiction_prefix(code):
            query = query.where(Organisation.division_code.like(f"{jurisdiction_prefix(code)}%"))
        else:
            return []
    with engine.db.read() as session:
        rows = session.scalars(query.order_by(Organisation.name, Organisation.id)).all()
        return [(org.id, option_label(org, lang)) for org in rows]


def organisation_label(engine, org_id, lang: str = "zh") -> Optional[str]:
    """The option label of one organisation (for a value that is not in the list any more)."""
    try:
        org_id = int(org_id)
    except (TypeError, ValueError):
        return None
    with engine.db.read() as session:
        org = session.get(Organisation, org_id)
        return option_label(org, lang) if org is not None else None


def option_label(org: Organisation, lang: str = "zh") -> str:
    code = org.filing_number if org.kind == "agency" and org.filing_number else org.credit_code
    if not code:
        return org.name
    return f"{org.name} ({code})" if lang == "en" else f"{org.name}（{code}）"
