"""Public disclosure (no login): what the Measures publish, and nothing confidential."""
from __future__ import annotations

from flask import Blueprint, abort, current_app, render_template, request
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select

from engine.models import Division, Organisation, Record

from .access import get_engine
from .dataview import all_forms, record_data_items, record_items
from .i18n import lang

bp = Blueprint("public", __name__, url_prefix="/public")

# slug -> (record kind, title, article, what the Measures say is published)
SECTIONS = {
    "lists": ("mandatory_list", _l("强制性清洁生产审核企业名单"), "Art. 9",
              _l("按年度、分批公布的实施强制性清洁生产审核的企业名单。")),
    "emissions": ("emission_disclosure", _l("企业主要污染物排放情况"), "Art. 10",
                  _l("列入名单的企业在名单公布后一个月内公布的主要污染物排放情况。")),
    "agencies": (None, _l("已备案的清洁生产审核咨询服务机构"), "Art. 19",
                 _l("经自治区发展改革、经贸、环保部门联合审查备案的咨询服务机构。")),
    "reviews": ("review_result", _l("自愿性清洁生产审核评审结果"), "Art. 17",
                _l("组织专家对自愿审核报告进行审定的结果。")),
    "commendations": ("commendation", _l("清洁生产表彰"), "Art. 22",
                      _l("对清洁生产审核成效显著的企业的表彰。")),
    "named": ("agency_named", _l("违规咨询服务机构名单"), "Art. 29",
              _l("未按规定内容和程序开展审核、弄虚作假的咨询服务机构。")),
    "penalties": ("penalty_decision", _l("行政处罚决定"), "Art. 28",
                  _l("依法公开的对企业的行政处罚决定。")),
}


def visible():
    """Records anyone may read: published and not confidential."""
    return (Record.public.is_(True)) & (Record.confidential.is_(False))


def _page() -> int:
    raw = request.args.get("page", "1")
    return int(raw) if raw.isdigit() and int(raw) > 0 else 1


@bp.route("/", strict_slashes=False)
def index():
    with get_engine().db.read() as session:
        counts = dict(session.execute(select(Record.kind, func.count()).where(visible())
                                      .group_by(Record.kind)).all())
        agencies = session.scalar(select(func.count()).select_from(Organisation).where(
            Organisation.kind == "agency", Organisation.filing_status == "filed")) or 0
    sections = [(slug, title, article, about,
                 agencies if kind is None else counts.get(kind, 0))
                for slug, (kind, title, article, about) in SECTIONS.items()]
    return render_template("public/index.html", sections=sections)


@bp.route("/lists")
def lists():
    """Mandatory audit lists by year and batch (Art. 9)."""
    year = request.args.get("year", "")
    with get_engine().db.read() as session:
        rows = list(session.scalars(select(Record).where(visible(), Record.kind == "mandatory_list")
                                    .order_by(Record.created_at.desc()).limit(1000)))
    keyed = [(_year_and_batch(r), r) for r in rows]
    years = sorted({y for (y, _), _ in keyed}, reverse=True)
    if year:
        keyed = [(key, r) for key, r in keyed if key[0] == year]
    groups: dict[tuple, list] = {}
    for key, row in keyed:
        groups.setdefault(key, []).append(row)
    ordered = sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1].zfill(4)), reverse=True)
    return render_template("public/lists.html", section=SECTIONS["lists"], groups=ordered,
                           years=years, year=year, items=record_items, list_entries=list_entries)


def _year_and_batch(row: Record) -> tuple[str, str]:
    """(year, batch) of a published list: data `year` and `batch`, or a batch named "2026-1"
    (mandatory_listing), or the publication date."""
    data = row.data or {}
    batch = str(data.get("batch") or "1")
    year = str(data.get("year") or "")
    if not year and len(batch) > 5 and batch[:4].isdigit() and batch[4] == "-":
        year = batch[:4]
    if not year:
        published = str(data.get("published_on") or "")
        year = published[:4] if published[:4].isdigit() else str(row.created_at.year)
    if batch.startswith(year + "-"):
        batch = batch[len(year) + 1:]
    return year, batch


def list_entries(data: dict) -> list:
    """The enterprises of a published list: `enterprises` ({name, credit_code, ground}) or the
    `entries` of mandatory_listing ({enterprise_name, credit_code, division_code})."""
    return list((data or {}).get("enterprises") or (data or {}).get("entries") or [])


@bp.route("/agencies")
def agencies():
    """Registry of filed audit agencies (Art. 19), from the organisations' filing status."""
    with get_engine().db.read() as session:
        rows = session.execute(select(Organisation, Division).join(
            Division, Division.code == Organisation.division_code, isouter=True).where(
            Organisation.kind == "agency", Organisation.filing_status == "filed")
            .order_by(Organisation.filing_number, Organisation.name)).all()
    return render_template("public/agencies.html", section=SECTIONS["agencies"], rows=rows)


@bp.route("/<slug>")
def section(slug: str):
    if slug not in SECTIONS or SECTIONS[slug][0] is None or slug == "lists":
        abort(404)
    kind = SECTIONS[slug][0]
    per_page = current_app.config["PUBLIC_PER_PAGE"]
    page = _page()
    query = select(Record).where(visible(), Record.kind == kind)
    with get_engine().db.read() as session:
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = list(session.scalars(query.order_by(Record.created_at.desc())
                                    .offset((page - 1) * per_page).limit(per_page)))
    pages = max(1, -(-total // per_page))
    return render_template("public/section.html", slug=slug, section=SECTIONS[slug], records=rows,
                           page=page, pages=pages, total=total)


@bp.route("/records/<int:record_id>")
def record(record_id: int):
    with get_engine().db.read() as session:
        row = session.scalar(select(Record).where(Record.id == record_id, visible()))
    if row is None:
        abort(404)
    slug = next((s for s, (kind, *_rest) in SECTIONS.items() if kind == row.kind), None)
    # labelled by the forms that asked for the values (option titles, not codes), as on task pages
    items = record_data_items(row.data, all_forms(get_engine()), lang())
    return render_template("public/record.html", record=row, slug=slug, current_section=slug,
                           section=SECTIONS.get(slug) if slug else None, items=items)
