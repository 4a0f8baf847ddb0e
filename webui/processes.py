"""Process owners: processes and their versions, diffs, downloads, and the web modeler (role process_owner).

Saving in the modeler (or uploading a .bpmn made elsewhere) validates the XML and deploys it as a new
version (`Engine.deploy_files`); on errors nothing is deployed and the problems come back with the
ids of the offending elements, which the modeler highlights. Identical XML is the same version.
Running instances stay on the version they started with.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Optional

from flask import (Blueprint, Response, abort, current_app, flash, jsonify, redirect, render_template,
                   request, url_for)
from flask_babel import gettext as _
from flask_login import current_user
from flask_wtf.csrf import generate_csrf

from engine import inspect
from engine.authz import ROLES
from engine.errors import InvalidProcess, ProcessNotFound
from engine.validate import ERROR, Problem

from .access import get_engine
from .versions import diff_rows, normalised, skeleton_xml

bp = Blueprint("processes", __name__, url_prefix="/processes")

PROCESS_ID = re.compile(r"^[a-z][a-z0-9_]{1,62}$")
MAX_BPMN_BYTES = 4 * 1024 * 1024


@bp.before_request
def only_process_owners():
    if not current_user.is_authenticated:
        return current_app.login_manager.unauthorized()
    if not current_user.has_role("process_owner"):
        abort(403)


@bp.route("/")
def index():
    groups: dict[str, list] = {}
    for version in inspect.process_versions(get_engine()):
        groups.setdefault(version.process_id, []).append(version)
    return render_template("processes/index.html", groups=sorted(groups.items()))


@bp.route("/<process_id>")
def show(process_id: str):
    engine = get_engine()
    versions = inspect.process_versions(engine, process_id)
    numbers = [v.version_no for v in versions]
    old_no = request.args.get("from", type=int)
    new_no = request.args.get("to", type=int)
    if old_no is None and new_no is None and len(numbers) > 1:
        old_no, new_no = numbers[1], numbers[0]
    raw = request.args.get("raw") == "1"
    diff, truncated = None, False
    if old_no in numbers and new_no in numbers:
        texts = [inspect.version_xml(engine, process_id, n)[1] for n in (old_no, new_no)]
        diff, truncated = diff_rows(*(texts if raw else [normalised(t) for t in texts]))
    return render_template("processes/process.html", process_id=process_id, versions=versions,
                           old_no=old_no, new_no=new_no, diff=diff, truncated=truncated, raw=raw)


@bp.route("/<process_id>/versions/<int:version_no>.bpmn")
def download(process_id: str, version_no: int):
    number, xml = inspect.version_xml(get_engine(), process_id, version_no)
    return Response(xml.encode("utf-8"), mimetype="application/xml", headers={
        "Content-Disposition": f'attachment; filename="{process_id}-v{number}.bpmn"'})


# ---------------------------------------------------------------------- deploying
@dataclass
class Outcome:
    process_id: Optional[str] = None
    version_no: Optional[int] = None
    created: bool = False
    errors: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def _problem(filename: str, message: str) -> Problem:
    return Problem(filename, None, None, message, ERROR)


def deploy(xml: bytes, filename: str, *, expect: Optional[str] = None, new: bool = False) -> Outcome:
    """Validate and deploy one BPMN file as the current user; nothing is deployed on an error."""
    engine = get_engine()
    report = engine.validate_files([(filename, xml)])
    outcome = Outcome(errors=list(report.errors), warnings=list(report.warnings))
    if outcome.errors:
        return outcome
    target = expect or (report.process_ids[0] if report.process_ids else None)
    if target is None or target not in report.process_ids:
        outcome.errors.append(_problem(filename, _("文件中没有可执行的流程 %(id)s（文件中的流程：%(ids)s）。",
                                                   id=target or "—", ids=", ".join(report.process_ids) or "—")))
        return outcome
    try:
        latest = inspect.version_xml(engine, target)[0]
    except ProcessNotFound:
        latest = 0
    if new and latest:
        outcome.errors.append(_problem(filename, _("流程 %(id)s 已存在，请在该流程的页面中修改。", id=target)))
        return outcome
    try:
        versions = engine.deploy_files([(filename, xml)], deployed_by=current_user.username)
    except InvalidProcess as exc:  # changed meanwhile (a process it calls, a form file)
        outcome.errors = list(exc.problems)
        return outcome
    version = next(v for v in versions if v.process_id == target)
    outcome.process_id, outcome.version_no = target, version.version_no
    outcome.created = version.version_no > latest
    return outcome


def _problem_json(problem) -> dict:
    return {"file": problem.file, "line": problem.line if isinstance(problem.line, int) else None,
            "element_id": problem.element_id, "message": problem.message, "severity": problem.severity,
            "text": str(problem)}


def _message(outcome: Outcome) -> str:
    if not outcome.ok:
        return _("未部署：发现 %(n)d 个错误，请修改后重新保存。", n=len(outcome.errors))
    if outcome.created:
        return _("已部署为第 %(n)d 版。正在办理的实例仍按原版本办理。", n=outcome.version_no)
    return _("内容与第 %(n)d 版相同，未生成新版本。", n=outcome.version_no)


def _wants_json() -> bool:
    return request.headers.get("Accept", "").startswith("application/json")


def _respond(outcome: Outcome, xml: bytes, page: dict):
    """JSON for the modeler's fetch; otherwise the modeler page again (422) or a redirect."""
    if _wants_json():
        body = {"ok": outcome.ok, "created": outcome.created, "process_id": outcome.process_id,
                "version_no": outcome.version_no, "message": _message(outcome),
                "version_label": _("当前第 %(n)d 版", n=outcome.version_no) if outcome.ok else None,
                "errors": [_problem_json(p) for p in outcome.errors],
                "warnings": [_problem_json(p) for p in outcome.warnings],
                "url": url_for(".show", process_id=outcome.process_id) if outcome.ok else None}
        return jsonify(body), (201 if outcome.created else 200) if outcome.ok else 422
    if not outcome.ok:
        return _modeler(xml.decode("utf-8", "replace"), outcome=outcome, status=422, **page)
    flash(_message(outcome), "success")
    if outcome.warnings:
        flash(_("部署时有 %(n)d 条提示，在建模器中保存时会逐条列出。", n=len(outcome.warnings)), "info")
    return redirect(url_for(".show", process_id=outcome.process_id))


def _posted_xml() -> bytes:
    xml = request.form.get("xml", "")
    if not xml.strip():
        abort(400)
    data = xml.encode("utf-8")
    if len(data) > MAX_BPMN_BYTES:
        abort(413)
    return data


def _forms_of(process_id: Optional[str]) -> list[str]:
    if not process_id or not PROCESS_ID.match(process_id):
        return []
    folder = get_engine().forms.forms_dir / process_id
    return sorted(p.name for p in folder.glob("*.schema.json")) if folder.is_dir() else []


def _modeler(xml: str, *, process_id: Optional[str], save_url: str, heading: str,
             outcome: Optional[Outcome] = None, status: int = 200, new: bool = False,
             version_no: Optional[int] = None):
    outcome = outcome or Outcome()
    config = {
        "xml": xml, "saveUrl": save_url, "csrfToken": generate_csrf(),
        "descriptorUrl": url_for("static", filename="spiffworkflow-moddle.json"),
        "errors": [_problem_json(p) for p in outcome.errors],
        "warnings": [_problem_json(p) for p in outcome.warnings],
        "message": _message(outcome) if outcome.errors else "",
    }
    return render_template("processes/edit.html", config=config, process_id=process_id, heading=heading,
                           forms=_forms_of(process_id), roles=ROLES, outcome=outcome, new=new,
                           version_no=version_no), status


@bp.route("/<process_id>/edit", methods=["GET", "POST"])
def edit(process_id: str):
    engine = get_engine()
    number, xml = inspect.version_xml(engine, process_id)
    page = {"process_id": process_id, "save_url": url_for(".edit", process_id=process_id),
            "heading": _("修改流程"), "version_no": number}
    if request.method == "GET":
        return _modeler(xml, **page)
    data = _posted_xml()
    return _respond(deploy(data, f"{process_id}.bpmn", expect=process_id), data, page)


@bp.route("/new", methods=["GET", "POST"])
def new():
    process_id = (request.values.get("process_id") or "").strip()
    name = (request.values.get("name") or "").strip()
    page = {"process_id": process_id or None, "save_url": url_for(".new", process_id=process_id, name=name),
            "heading": _("新建流程"), "new": True}
    if request.method == "POST" and "xml" in request.form:
        data = _posted_xml()
        return _respond(deploy(data, f"{process_id or 'process'}.bpmn", expect=process_id or None, new=True),
                        data, page)
    problems = []
    if process_id and not PROCESS_ID.match(process_id):
        problems.append(_("流程标识须以小写字母开头，只含小写字母、数字和下划线（2–63 个字符）。"))
    elif process_id:
        try:
            inspect.version_xml(get_engine(), process_id)
            problems.append(_("流程 %(id)s 已存在，请在该流程的页面中修改。", id=process_id))
        except ProcessNotFound:
            pass
    if process_id and not name:
        problems.append(_("请填写流程名称。"))
    if not process_id or problems:
        return render_template("processes/new.html", process_id=process_id, name=name,
                               problems=problems), 422 if problems else 200
    return _modeler(skeleton_xml(process_id, name).decode("utf-8"), **page)


@bp.route("/upload", methods=["POST"])
def upload():
    """A .bpmn file made in another modeler (or the XML of the modeler page shown after a failed upload)."""
    upload_file = request.files.get("file")
    if upload_file is not None and upload_file.filename:
        filename = upload_file.filename
        data = upload_file.read(MAX_BPMN_BYTES + 1)
        if len(data) > MAX_BPMN_BYTES:
            abort(413)
    elif "xml" in request.form:
        filename, data = request.args.get("filename") or "upload.bpmn", _posted_xml()
    else:
        filename, data = "", b""
    filename = PurePosixPath(filename.replace("\\", "/")).name
    if not filename.lower().endswith(".bpmn") or not data.strip():
        flash(_("请选择一个 .bpmn 文件。"), "error")
        return redirect(url_for(".index"))
    page = {"process_id": None, "save_url": url_for(".upload", filename=filename),
            "heading": _("上传的流程文件：%(name)s", name=filename)}
    return _respond(deploy(data, filename), data, page)
