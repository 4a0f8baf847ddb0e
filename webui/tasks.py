"""The task page: the form of a user task, its instructions and earlier data; completing it."""
from __future__ import annotations

import copy
import json
import re
from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup, escape
from sqlalchemy import select

from engine import choices, confidential
from engine.errors import InvalidFormData, StaleInstance
from engine.models import HumanTask, Upload

from . import files
from .access import get_engine
from .dataview import earlier_items, record_panels, referenced_record_ids
from .display import division_choices, flash_text, local_date, to_local, value_label
from .formview import FormView, split_lists
from .i18n import lang

bp = Blueprint("tasks", __name__)

_instructions_env = SandboxedEnvironment(autoescape=False)


_BARE_KEY = re.compile(r"(?<![A-Za-z0-9_])[a-z][a-z0-9_]*(?![A-Za-z0-9_])")


def _bare_value(value) -> str | None:
    """A data value as instructions show it in place of its key; None to leave the key as written."""
    if isinstance(value, bool):
        return value_label("", value)
    if isinstance(value, (int, float)):
        return value_label("", value)
    if isinstance(value, str) and value.strip():
        if re.match(r"^\d{4}-\d{2}-\d{2}T", value) and to_local(value) is not None:
            return local_date(value)
        return value.strip()
    if isinstance(value, list) and value and all(isinstance(v, (str, int, float)) and v != "" for v in value):
        return "、".join(value_label("", v) for v in value)
    return None


def render_instructions(text: str, data: dict) -> Markup:
    """The BPMN instructions as plain text; `{{ var }}` and `{% if %}` use the task data (sandboxed).

    Processes also name data keys bare ("（记录 application_record_id）", "enterprise_name 的表彰推荐"):
    a bare key of the task data with a simple value is replaced by that value.
    """
    if not text:
        return Markup("")
    try:
        rendered = _instructions_env.from_string(text).render(**data)
    except Exception:  # instructions must never hide the task; show them as written
        rendered = text

    def bare(match) -> str:
        key = match.group(0)
        shown = _bare_value(data.get(key)) if key in data else None
        return shown if shown is not None else key
    rendered = _BARE_KEY.sub(bare, rendered)
    return Markup("<br>").join(escape(line) for line in rendered.strip().splitlines())


# Why a task came back (set by the process's scripts, e.g. disclosure_return_reason): shown with the
# instructions, since the person who must act on it needs it first.
_REASON_KEY = re.compile(r"(?:^|_)(return|revision|change)_reason$")
_REASON_LABELS = {"return": _l("退回理由"), "revision": _l("修改要求"), "change": _l("更换原因")}


def return_reasons(view, instructions: str) -> tuple[list[tuple[str, str]], set[str]]:
    """[(label, text)] of the reasons in the task data (not the current form's own fields, nor a text the
    instructions already show), and every reason key (left out of the earlier data)."""
    own = set((view.form.schema.get("properties") or {}).keys()) if view.form is not None else set()
    shown, keys = [], set()
    for key, value in view.data.items():
        match = _REASON_KEY.search(str(key))
        if not match or key in own:
            continue
        keys.add(key)
        if isinstance(value, str) and value.strip() and value.strip() not in instructions:
            shown.append((str(_REASON_LABELS[match.group(1)]), value.strip()))
    return shown, keys


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _form_values(view, data: dict) -> dict:
    if view.form is None:
        return {}
    names = (view.form.schema.get("properties") or {}).keys()
    return {k: data[k] for k in names if k in data}


class Organisations:
    """Option lists of ui:widget "organisation" fields for this user (engine/choices.py)."""

    def __init__(self, engine, user, language: str):
        self.engine, self.user, self.language = engine, user, language

    def options(self, option_filter: str) -> list[tuple[int, str]]:
        try:
            return choices.organisation_options(self.engine, self.user, option_filter, self.language)
        except ValueError:          # an unknown filter: the form validator reports it; type the number
            return []

    def label(self, value) -> str | None:
        return choices.organisation_label(self.engine, value, self.language)


def _own_record(user, record) -> bool:
    """A record of the user's own submission: about their enterprise, their agency or themselves."""
    data = record.data or {}
    if confidential.is_own_enterprise(user, record.enterprise_id or data.get("enterprise_id")):
        return True
    if user.has_role("consultancy") and user.organisation_id is not None \
            and str(data.get("agency_id", "")) == str(user.organisation_id):
        return True
    return bool(data.get("username")) and data.get("username") == user.username


def prefill_from_own_records(view, values: dict, records: list, user) -> dict:
    """Form fields without a value take the user's own earlier submission kept in a record of this
    instance (task data keeps only its id): a returned disclosure comes back filled in, to correct."""
    if view.form is None:
        return values
    names = list((view.form.schema.get("properties") or {}).keys())
    filled = dict(values)
    for record in sorted(records, key=lambda r: r.id, reverse=True):
        if not record.allowed or record.instance_id != view.instance.id or not _own_record(user, record):
            continue
        for name in names:
            if name not in filled and record.data.get(name) not in (None, "", [], {}):
                filled[name] = copy.deepcopy(record.data[name])
    return filled


def render_task(view, values: dict, messages: dict | None = None, *, prefill: bool = False):
    engine = get_engine()
    language = lang()
    user = current_user.model
    # The page shows the instance's earlier data: a look by anyone but the enterprise's own users is
    # recorded (Art. 20, 30), and so are looks at the confidential records the data refers to.
    page_view_recorded = confidential.record_task_page_view(engine, user, view.task)
    record_views = confidential.read_records(engine, user, referenced_record_ids(view.data))
    if prefill:
        values = prefill_from_own_records(view, values, record_views, user)
    records = record_panels(engine, view.task.form_process_id, record_views, view.form, language)
    form_view = FormView(view.form, language, values, messages,
                         choices={"division-code": division_choices(language)},
                         organisations=Organisations(engine, user, language)) if view.form is not None else None
    fields = form_view.fields() if form_view else []
    file_ids = [f.value for f in fields if getattr(f, "widget", "") == "file" and f.value]
    instructions = render_instructions(view.instructions, view.data)
    reasons, reason_keys = return_reasons(view, str(instructions))
    earlier = earlier_items(engine, view.task.form_process_id,
                            {k: v for k, v in view.data.items() if k not in reason_keys}, view.form, language)
    # what a record on the page shows anyway is not repeated in the earlier data
    in_records = {(k, _canonical(v)) for r in record_views if r.allowed for k, v in (r.data or {}).items()}
    earlier = [item for item in earlier if (item.key, _canonical(view.data.get(item.key))) not in in_records]
    file_ids += [item.file_id for item in earlier if item.kind == "file"]
    file_ids += [file_id for panel in records for file_id in panel.file_ids]
    ack_errors = []
    if view.form is None and messages:
        ack_errors = [m.text(language, with_label=False) if hasattr(m, "text") else str(m)
                      for m in messages.get("confirmed", [])]
    return render_template(
        "task.html", view=view, task=view.task, form=view.form, fields=fields,
        form_title=view.form.title(language) if view.form else "",
        form_description=view.form.description(language) if view.form else "",
        summary=form_view.summary() if form_view else [],
        has_errors=bool(messages), ack_errors=ack_errors,
        multipart=any(getattr(f, "widget", "") == "file" for f in fields),
        instructions=instructions, reasons=reasons,
        earlier=earlier, records=records, page_view_recorded=page_view_recorded,
        uploads=files.describe(file_ids, view.instance.id))


@bp.route("/tasks/<task_id>")
@login_required
def show(task_id: str):
    view = get_engine().task_view(current_user.model, task_id)
    if view.task.status != "open":
        return render_template("task_closed.html", task=view.task), 200
    return render_task(view, _form_values(view, view.data), prefill=True)


@bp.route("/tasks/<task_id>", methods=["POST"])
@login_required
def complete(task_id: str):
    engine = get_engine()
    user = current_user.model
    view = engine.task_view(user, task_id)
    if view.task.status != "open":
        who = view.task.completed_by or ""
        raise StaleInstance(view.task.instance_id, f"task already {view.task.status} {who}".strip())
    if view.form is None:
        data = {"confirmed": request.form.get("confirmed", "")}
        g.rerender_invalid = lambda exc: render_task(view, {}, _messages(exc))
        engine.complete(user, task_id, data, lang=lang())
        flash(flash_text(_("已办理：%(title)s"), title=view.task.title), "success")
        return redirect(url_for("inbox.index"))

    data = view.form.coerce(split_lists(view.form, request.form))
    action = request.form.get("_action", "")
    if action.startswith("add:"):
        # adding a row without JavaScript: show the form again, one row longer, nothing saved
        _add_row(data, action[4:])
        return render_task(view, data)

    g.rerender_invalid = lambda exc: render_task(view, data, _messages(exc))
    pending = files.collect(view, data)                # checks the files, stores nothing yet
    problems = view.form.check(files.with_placeholders(data, pending))
    problems.update(files.problems(pending))
    if problems:
        raise _invalid(problems)
    stored = files.store(pending, view, user.username)
    data.update(stored.values)
    try:
        engine.complete(user, task_id, data, lang=lang())
    except Exception:
        files.discard(stored.ids)
        raise
    flash(flash_text(_("已提交：%(title)s"), title=view.task.title), "success")
    return redirect(url_for("inbox.index"))


def _add_row(data: dict, name: str) -> None:
    """One more row in the rows named `name` (`entries`, or nested `entries-0-evidence`)."""
    parts = name.split("-")
    node: Any = data
    for i in range(0, len(parts) - 1, 2):          # outer-<i>-... : walk to the row holding the rows
        if not isinstance(node, dict) or not parts[i + 1].isdigit():
            return
        rows = node.get(parts[i])
        if not isinstance(rows, list):
            rows = node[parts[i]] = []
        index = int(parts[i + 1])
        while len(rows) <= index:
            rows.append({})
        if not isinstance(rows[index], dict):
            return
        node = rows[index]
    last = parts[-1] if len(parts) % 2 else None
    if last is None or not isinstance(node, dict):
        return
    rows = node.get(last) if isinstance(node.get(last), list) else []
    node[last] = rows + [{}]


def _messages(exc: InvalidFormData) -> dict:
    return getattr(exc, "messages", None) or exc.errors


def _invalid(problems: dict) -> InvalidFormData:
    exc = InvalidFormData({k: [m.text("zh") for m in v] for k, v in problems.items()})
    exc.messages = problems
    return exc


@bp.route("/files/<int:upload_id>")
@login_required
def download(upload_id: int):
    engine = get_engine()
    user = current_user.model
    with engine.db.read() as session:
        upload = session.get(Upload, upload_id)
        if upload is None:
            abort(404)
        allowed = upload.uploaded_by == user.username or user.has_role("administrator")
        if not allowed and upload.instance_id is not None:
            rows = session.scalars(select(HumanTask).where(
                HumanTask.instance_id == upload.instance_id, HumanTask.status == "open"))
            allowed = any(engine.may_act(user, row) for row in rows)
    if not allowed:
        abort(403)
    return files.send(upload)
