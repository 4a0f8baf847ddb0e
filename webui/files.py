"""File uploads of task forms: checked (size, type, content), stored in the upload table, not in task data."""
from __future__ import annotations

import hashlib
import io
import mimetypes
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Optional

from flask import current_app, request, send_file
from sqlalchemy import delete, select

from engine import clock
from engine.forms import Message
from engine.models import Upload

from .access import get_engine

PLACEHOLDER = "0"

# What the first bytes of a file must be for its extension (types we can recognise).
SIGNATURES = {
    ".pdf": (b"%PDF-",),
    ".png": (b"\x89PNG\r\n\x1a\n",),
    ".jpg": (b"\xff\xd8\xff",),
    ".jpeg": (b"\xff\xd8\xff",),
    ".zip": (b"PK\x03\x04",),
    ".docx": (b"PK\x03\x04",),
    ".xlsx": (b"PK\x03\x04",),
    ".doc": (b"\xd0\xcf\x11\xe0",),
    ".xls": (b"\xd0\xcf\x11\xe0",),
}


@dataclass
class Pending:
    name: str                       # the field
    integer: bool                   # the schema wants the id as an integer
    filename: str = ""
    content: bytes = b""
    keep: Optional[str] = None      # an id already stored for this instance
    problem: Optional[Message] = None


@dataclass
class Stored:
    values: dict = field(default_factory=dict)
    ids: list[int] = field(default_factory=list)


def clean_filename(name: str) -> str:
    """The last path segment, without control characters; Chinese names are kept."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip().lstrip(".")
    return name[:200] or "file"


def _file_fields(form) -> list[tuple[str, dict, dict]]:
    out = []
    for name in (form.schema.get("properties") or {}):
        ui = form.ui(name)
        if ui.get("ui:widget") == "file":
            located = form.schema_at(name)
            out.append((name, located[1] if located else {}, ui))
    return out


def _limits(ui: dict) -> tuple[tuple[str, ...], int]:
    options = ui.get("ui:options") if isinstance(ui.get("ui:options"), dict) else {}
    accept = options.get("accept")
    extensions = tuple(e.lower() for e in accept) if isinstance(accept, list) and accept \
        else tuple(current_app.config["UPLOAD_EXTENSIONS"])
    limit = current_app.config["UPLOAD_MAX_BYTES"]
    if isinstance(options.get("maxBytes"), int):
        limit = min(limit, options["maxBytes"])
    return extensions, limit


def collect(view, data: dict) -> list[Pending]:
    """The file fields of the submission: new files read and checked, earlier ones verified."""
    pending = []
    for name, schema, ui in _file_fields(view.form):
        item = Pending(name=name, integer="integer" in str(schema.get("type")))
        upload = request.files.get(name)
        extensions, limit = _limits(ui)
        if upload is not None and upload.filename:
            item.filename = clean_filename(upload.filename)
            item.content = upload.stream.read(limit + 1)
            ext = ("." + item.filename.rsplit(".", 1)[-1].lower()) if "." in item.filename else ""
            if not item.content:
                item.problem = Message("文件为空", "the file is empty")
            elif len(item.content) > limit:
                mb = f"{limit / 1048576:.0f}"
                item.problem = Message(f"文件不得超过 {mb} MB", f"the file must not exceed {mb} MB")
            elif ext not in extensions:
                allowed = ", ".join(extensions)
                item.problem = Message(f"只接受以下类型：{allowed}，实际为 {ext or '无扩展名'}",
                                       f"only these types are accepted: {allowed}; got {ext or 'no extension'}")
            elif ext in SIGNATURES and not item.content.startswith(SIGNATURES[ext]):
                item.problem = Message(f"文件内容与扩展名 {ext} 不符", f"the content is not a {ext} file")
            pending.append(item)
            continue
        existing = str(data.get(name) or "").strip()
        if existing:
            if existing.isdigit() and _belongs(int(existing), view.instance.id):
                item.keep = existing
            else:
                item.problem = Message("引用的文件不存在", "the referenced file does not exist")
            pending.append(item)
        else:
            data.pop(name, None)
    return pending


def _belongs(upload_id: int, instance_id: int) -> bool:
    with get_engine().db.read() as session:
        upload = session.get(Upload, upload_id)
        return upload is not None and upload.instance_id == instance_id


def with_placeholders(data: dict, pending: list[Pending]) -> dict:
    out = dict(data)
    for item in pending:
        value = item.keep or PLACEHOLDER
        out[item.name] = int(value) if item.integer else value
    return out


def problems(pending: list[Pending]) -> dict:
    return {item.name: [item.problem] for item in pending if item.problem is not None}


def store(pending: list[Pending], view, username: str) -> Stored:
    """Store the new files (one transaction); returns the field values and the new ids."""
    stored = Stored()
    with get_engine().db.transaction() as session:
        for item in pending:
            if item.keep is not None:
                stored.values[item.name] = int(item.keep) if item.integer else item.keep
                continue
            content_type = mimetypes.guess_type(item.filename)[0] or "application/octet-stream"
            row = Upload(sha256=hashlib.sha256(item.content).hexdigest(), filename=item.filename,
                         content_type=content_type, size=len(item.content), content=item.content,
                         instance_id=view.instance.id, enterprise_id=view.instance.enterprise_id,
                         uploaded_by=username, created_at=clock.now())
            session.add(row)
            session.flush()
            stored.ids.append(row.id)
            stored.values[item.name] = row.id if item.integer else str(row.id)
    return stored


def discard(ids: list[int]) -> None:
    """Remove files stored for a completion that then failed (nothing else refers to them)."""
    if ids:
        with get_engine().db.transaction() as session:
            session.execute(delete(Upload).where(Upload.id.in_(ids)))


def describe(ids: list[Any], instance_id: int) -> dict[str, dict]:
    """id -> {filename, size} of the files of this instance that a page shows."""
    wanted = [int(i) for i in ids if str(i).isdigit()]
    if not wanted:
        return {}
    with get_engine().db.read() as session:
        rows = session.execute(select(Upload.id, Upload.filename, Upload.size).where(
            Upload.id.in_(wanted), Upload.instance_id == instance_id)).all()
    return {str(r.id): {"filename": r.filename, "size": r.size} for r in rows}


def send(upload: Upload):
    return send_file(io.BytesIO(upload.content), mimetype=upload.content_type, as_attachment=True,
                     download_name=upload.filename, max_age=0)
