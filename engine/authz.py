"""Who may act on a task: the lane must be one of the user's roles and the task's scope one of the user's keys."""
from __future__ import annotations

from typing import Iterable, Optional

REGION_CODE = "650000"
NATIONAL_CODE = "000000"

# The actors of the Measures (regulation README, "Roles") and the application's own roles.
ACTOR_ROLES = (
    "enterprise", "consultancy",
    "local_epb", "local_drc", "local_etc",
    "regional_epb", "regional_drc", "regional_etc",
    "expert", "national",
)
APP_ROLES = ("administrator", "process_owner", "auditor")
ROLES = ACTOR_ROLES + APP_ROLES


def jurisdiction(code) -> str:
    """Scope key of a jurisdiction (a six-digit GB/T 2260 code)."""
    return f"j:{code}"


def organisation(org_id) -> str:
    """Scope key of an organisation (enterprise or audit agency id)."""
    return f"o:{org_id}"


def user(username) -> str:
    """Scope key of one named user."""
    return f"u:{username}"


def default_scope_expression(lane: str) -> str:
    """The scope expression used when a user task has no `scope` property (docs/architecture.md)."""
    if lane == "enterprise":
        return "organisation(enterprise_id)"
    if lane == "consultancy":
        return "organisation(agency_id)"
    if lane.startswith("local_"):
        return "jurisdiction(jurisdiction_code)"
    if lane == "expert":
        return "user(expert)"
    if lane == "national":
        return f"jurisdiction('{NATIONAL_CODE}')"
    return f"jurisdiction('{REGION_CODE}')"


def scope_keys(username: str, jurisdiction_code: Optional[str], organisation_id: Optional[int]) -> list[str]:
    """Every scope key a user matches."""
    keys = [user(username)]
    if jurisdiction_code:
        keys.append(jurisdiction(jurisdiction_code))
    if organisation_id is not None:
        keys.append(organisation(organisation_id))
    return keys


def may_act(roles: Iterable[str], keys: Iterable[str], lane: str, scope: str) -> bool:
    """True when the lane is one of the roles and the scope one of the keys."""
    return lane in set(roles) and scope in set(keys)
