"""The task page: the form of a user task, its instructions and earlier data; completing it."""
from __future__ import annotations

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup, escape
from sqlalchemy import select

from engine.errors import InvalidFormData, StaleInstance
from engine.models import HumanTask, Upload

from . import files
from .access import get_engine
from .dataview import earlier_items
from .display import division_choices, flash_text
from .formview import FormView, split_lists
from .i18n import lang

bp = Blueprint("tasks", __name__)

_instructions_env = SandboxedEnvironment(autoescape=False)


def render_instructions(text: str, data: dict) -> Markup:
    """The BPMN instructions as plain text; `{{ var }}` and `{% if %}` use the task data (sandboxed)."""
    if not text:
        return Markup("")
    try:
        rendered = _instructions_env.from_string(text).render(**data)
    except Exception:  # instructions must never hide the task; show them as written
        rendered = text
    return Markup("<br>").join(escape(line) for line in rendered.strip().splitlines())


def _form_values(view, data: dict) -> dict:
    if view.form is None:
        return {}
    names = (view.form.schema.get("properties") or {}).keys()
    return {k: data[k] for k in names if k in data}


def render_task(view, values: dict, messages: dict | None = None):
    engine = get_engine()
    language = lang()
    form_view = FormView(view.form, language, values, messages,
                         choices={"division-code": division_choices(language)}) if view.form is not None else None
    fields = form_view.fields() if form_view else []
    file_ids = [f.value for f in fields if getattr(f, "widget", "") == "file" and f.value]
    earlier = earlier_items(engine, view.task.form_process_id, view.data, view.form, language)
    file_ids += [item.file_id for item in earlier if item.kind == "file"]
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
        instructions=render_instructions(view.instructions, view.data),
        earlier=earlier, uploads=files.describe(file_ids, view.instance.id))


@bp.route("/tasks/<task_id>")
@login_required
def show(task_id: str):
    view = get_engine().task_view(current_user.model, task_id)
    if view.task.status != "open":
        return render_template("task_closed.html", task=view.task), 200
    return render_task(view, _form_values(view, view.data))


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
        name = action[4:]
        rows = data.get(name) if isinstance(data.get(name), list) else []
        data[name] = rows + [{}]
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
