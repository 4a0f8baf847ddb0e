"""`cleanaudit init --demo`: demo organisations, one user per role (password `demo`), demo instances.

Demo instances are driven through the engine facade exactly as users would drive them, so the history
they leave verifies like any other (engine/demo_instances.py says what each user finds in the inbox).
Loading twice adds nothing: organisations and users are matched by credit code and user name, and the
instances are only started in a database that has none.
"""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Optional

from sqlalchemy import select

from . import clock
from .accounts import create_user, find_user
from .models import Organisation, User

DEMO_PASSWORD = "demo"
SHANGHAI = timezone(timedelta(hours=8))

# (key, kind, name, credit code, division, industry, central, legal representative, address, filing)
ORGANISATIONS = [
    ("ent-a", "enterprise", "乌鲁木齐天山化工有限公司", "91650102MA77A1B2CD", "650102", "C26", False,
     "王建国", "乌鲁木齐市天山区解放南路88号", "none", None),
    ("ent-b", "enterprise", "昌吉市宏达建材有限责任公司", "91652301MA78C3D4E6", "652301", "C30", False,
     "马晓东", "昌吉市北京南路156号", "none", None),
    ("ent-c", "enterprise", "新疆雪莲乳业股份有限公司", "91650104MA79E5F6GJ", "650104", "C14", False,
     "艾尔肯·吐尔逊", "乌鲁木齐市新市区北京北路321号", "none", None),
    ("agency-a", "agency", "新疆清源清洁生产技术咨询有限公司", "91650100MA7G8H9J0U", "650100", "M74", False,
     "李明", "乌鲁木齐市沙依巴克区友好北路12号", "filed", "新清审备〔2024〕第001号"),
    ("agency-b", "agency", "新疆绿洲环境工程咨询有限公司", "91650100MA7K1L2M3P", "650100", "M74", False,
     "张丽", "乌鲁木齐市水磨沟区南湖东路45号", "applying", None),
    # Listed with ent-a (ground 1): its emission disclosure is on the public pages.
    ("ent-d", "enterprise", "乌鲁木齐红山热力有限责任公司", "91650102MA7HD3QR5Q", "650102", "D44", False,
     "赵志刚", "乌鲁木齐市天山区新华南路210号", "none", None),
    # Enterprises on the lists still being decided (no user accounts; engine/demo_instances.py).
    ("tianshan-brewery", "enterprise", "乌鲁木齐天山酿造有限公司", "91650102MA7JT8WK2B", "650102", "C15", False,
     "周建华", "乌鲁木齐市天山区延安路566号", "none", None),
    ("midong-chemical", "enterprise", "新疆米东天宇化工有限公司", "91650109MA7CX6PN1D", "650109", "C26", False,
     "韩卫国", "乌鲁木齐市米东区化工工业园振兴路18号", "none", None),
    ("toutunhe-battery", "enterprise", "新疆天宏蓄电池有限公司", "91650106MA7FL2TB8J", "650106", "C38", False,
     "刘振宇", "乌鲁木齐市头屯河区嵩山街77号", "none", None),
    ("changji-plating", "enterprise", "昌吉市鑫盛金属表面处理有限公司", "91652301MA7BG5RY38", "652301", "C33", False,
     "杨光明", "昌吉市高新技术产业开发区园区路9号", "none", None),
]

# (username, display name, roles, jurisdiction, organisation key)
USERS = [
    ("admin", "系统管理员", ["administrator", "process_owner"], "650000", None),
    ("auditor", "审计监督员", ["auditor"], "650000", None),
    ("epb-650102", "天山区环境保护局", ["local_epb"], "650102", None),
    ("epb-650100", "乌鲁木齐市环境保护局", ["local_epb"], "650100", None),
    ("drc-650100", "乌鲁木齐市发展和改革委员会", ["local_drc"], "650100", None),
    ("etc-650100", "乌鲁木齐市经济贸易委员会", ["local_etc"], "650100", None),
    ("epb-652300", "昌吉回族自治州环境保护局", ["local_epb"], "652300", None),
    ("drc-652300", "昌吉回族自治州发展和改革委员会", ["local_drc"], "652300", None),
    ("etc-652300", "昌吉回族自治州经济贸易委员会", ["local_etc"], "652300", None),
    ("epb-650000", "自治区环境保护局", ["regional_epb"], "650000", None),
    ("drc-650000", "自治区发展和改革委员会", ["regional_drc"], "650000", None),
    ("etc-650000", "自治区经济贸易委员会", ["regional_etc"], "650000", None),
    ("ent-a", "乌鲁木齐天山化工有限公司", ["enterprise"], None, "ent-a"),
    ("ent-b", "昌吉市宏达建材有限责任公司", ["enterprise"], None, "ent-b"),
    ("ent-c", "新疆雪莲乳业股份有限公司", ["enterprise"], None, "ent-c"),
    ("ent-d", "乌鲁木齐红山热力有限责任公司", ["enterprise"], None, "ent-d"),
    ("agency-a", "新疆清源清洁生产技术咨询有限公司", ["consultancy"], None, "agency-a"),
    ("agency-b", "新疆绿洲环境工程咨询有限公司", ["consultancy"], None, "agency-b"),
    ("expert-1", "周文华（教授级高工）", ["expert"], "650000", None),
    ("expert-2", "古丽娜·阿不都（高级工程师）", ["expert"], "650000", None),
    # The rest of engine.experts.DEMO_POOL: expert-4 works for agency-a, expert-5 is in Changji's pool.
    ("expert-3", "陈建平（高级工程师）", ["expert"], "650000", None),
    ("expert-4", "马立新（工程师）", ["expert"], "650000", None),
    ("expert-5", "李卫东（副教授）", ["expert"], "650000", None),
]


def load_demo(engine) -> list[str]:
    """Create demo organisations, users and instances (idempotent); returns the lines to print."""
    lines = []
    orgs = _organisations(engine)
    users = _users(engine, orgs)
    lines.append(f"demo organisations: {len(orgs)}; demo users: {len(users)} (password '{DEMO_PASSWORD}')")
    with engine.db.read() as session:
        from .models import Instance
        has_instances = session.scalar(select(Instance.id).limit(1)) is not None
    if not has_instances:
        from .demo_instances import start_demo_instances
        lines.extend(start_demo_instances(engine, orgs, users))
    lines.append("")
    lines.append("Demo accounts (password: demo; open = tasks in the inbox):")
    for username, display, roles, jurisdiction, _ in USERS:
        lines.append(f"  {username:<12} {', '.join(roles):<30} open {engine.inbox_count(users[username]):>2}  {display}")
    return lines


def _organisations(engine) -> dict[str, int]:
    ids = {}
    with engine.db.transaction() as session:
        for key, kind, name, code, division, industry, central, legal, address, filing, number in ORGANISATIONS:
            org = session.scalar(select(Organisation).where(Organisation.credit_code == code))
            if org is None:
                org = Organisation(kind=kind, name=name, credit_code=code, division_code=division,
                                   industry_code=industry, is_central=central, legal_representative=legal,
                                   address=address, filing_status=filing, filing_number=number,
                                   filed_at=(datetime(2024, 3, 15, 10, tzinfo=SHANGHAI) if filing == "filed" else None))
                session.add(org)
                session.flush()
            ids[key] = org.id
    return ids


def _users(engine, orgs: dict[str, int]) -> dict[str, User]:
    users = {}
    with engine.db.transaction() as session:
        for username, display, roles, jurisdiction, org_key in USERS:
            user = find_user(session, username)
            if user is None:
                user = create_user(session, username, DEMO_PASSWORD, roles, display_name=display,
                                   jurisdiction_code=jurisdiction,
                                   organisation_id=orgs[org_key] if org_key else None)
            users[username] = user
    return users
