"""Read-only views of data: earlier task data labelled by the process's forms, and published records."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

from .display import HIDDEN_KEYS, KEY_LABELS, key_label, value_label


@dataclass
class Item:
    key: str
    label: str
    kind: str = "text"                  # text | table | list | file
    text: str = ""
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    values: list[str] = field(default_factory=list)
    file_id: Optional[str] = None


def process_forms(engine, process_id: str, current_form=None) -> dict[str, Any]:
    """Top-level field name -> the Form of this process that asks for it (first file wins).

    Looks in forms/<process_id>/ and in the folder of the current form (a form named with a
    folder, e.g. `mandatory_audit/publish_emissions.schema.json`, may live elsewhere).
    """
    root = engine.forms.forms_dir
    folders = [root / process_id]
    if current_form is not None and getattr(current_form, "path", None) is not None:
        folders.append(current_form.path.parent)
    found: dict[str, Any] = {}
    seen = set()
    for folder in folders:
        if not folder.is_dir() or folder.resolve() in seen:
            continue
        seen.add(folder.resolve())
        for path in sorted(folder.glob("*.schema.json")):
            try:
                form = engine.forms.load(folder.name, path.name)
            except Exception:  # a broken form file must not hide the task; the validator reports it
                continue
            for name in (form.schema.get("properties") or {}):
                found.setdefault(name, form)
    return found


def _option_text(form, path: str, value: Any, lang: str) -> str:
    if isinstance(value, (list, dict)):
        return _nested_text(form, path, value, lang)
    located = form.schema_at(path)
    if located and not isinstance(value, (dict, list)):
        pointer, schema = located
        for keyword in ("oneOf", "anyOf"):
            for i, branch in enumerate(schema.get(keyword) or []):
                if isinstance(branch, dict) and branch.get("const") == value:
                    return form.text(f"{pointer}/{keyword}/{i}/title", lang) or str(value)
    key = path.rsplit("/", 1)[-1]
    return value_label(key, value)


def _nested_text(form, path: str, value: Any, lang: str) -> str:
    """A list or object inside a table cell, as one line: "name: value, ...; next row"."""
    rows_sep, fields_sep, colon = ("; ", ", ", ": ") if lang == "en" else ("；", "，", "：")
    if isinstance(value, list):
        return rows_sep.join(_option_text(form, f"{path}/0", v, lang) for v in value if v not in (None, ""))
    return fields_sep.join(f"{_pointer_label(form, f'{path}/{k}', k, lang)}{colon}{_option_text(form, f'{path}/{k}', v, lang)}"
                           for k, v in value.items() if k not in HIDDEN_KEYS and v not in (None, "", [], {}))


def _pointer_label(form, path: str, fallback: str, lang: str) -> str:
    located = form.schema_at(path)
    return form.label(located[0], lang) if located else fallback


def _is_file(form, path: str) -> bool:
    return form.ui(path).get("ui:widget") == "file"


def form_item(form, key: str, value: Any, lang: str) -> Item:
    """One earlier value, labelled and formatted by the form that asked for it."""
    label = form.label(key, lang)
    if _is_file(form, key):
        return Item(key, label, kind="file", file_id=str(value))
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        located = form.schema_at(f"{key}/0")
        present = {k for v in value for k, x in v.items() if x not in (None, "", [], {}) and k not in HIDDEN_KEYS}
        columns = list((located[1].get("properties") or {}).keys()) if located else []
        columns = [c for c in columns if c in present] + sorted(present - set(columns))
        return Item(key, label, kind="table",
                    columns=[_pointer_label(form, f"{key}/0/{c}", c, lang) for c in columns],
                    rows=[[_option_text(form, f"{key}/0/{c}", row.get(c), lang) for c in columns]
                          for row in value])
    if isinstance(value, list):
        return Item(key, label, kind="list",
                    values=[_option_text(form, f"{key}/0", v, lang) for v in value])
    if isinstance(value, dict):
        return Item(key, label, text="; ".join(
            f"{_pointer_label(form, f'{key}/{k}', k, lang)}: {_option_text(form, f'{key}/{k}', v, lang)}"
            for k, v in value.items()))
    return Item(key, label, text=_option_text(form, key, value, lang))


def generic_item(key: str, value: Any) -> Item:
    """A value of a published record, labelled by the labels of known keys."""
    label = key_label(key)
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        columns = []
        for row in value:
            columns.extend(k for k in row if k not in columns and k not in HIDDEN_KEYS)
        return Item(key, label, kind="table", columns=[key_label(c) for c in columns],
                    rows=[[value_label(c, row.get(c)) for c in columns] for row in value])
    if isinstance(value, list):
        return Item(key, label, kind="list", values=[value_label(key, v) for v in value])
    if isinstance(value, dict):
        return Item(key, label, text="; ".join(f"{key_label(k)}: {value_label(k, v)}"
                                               for k, v in value.items()))
    return Item(key, label, text=value_label(key, value))


def earlier_items(engine, process_id: str, data: dict, current_form, lang: str) -> list[Item]:
    """The task data a user sees read-only: values asked by this process's forms, known keys."""
    forms = process_forms(engine, process_id, current_form)
    current = set((current_form.schema.get("properties") or {}).keys()) if current_form else set()
    items = []
    for key, value in data.items():
        if key in current or key in HIDDEN_KEYS or key.startswith("_") or value in (None, "", []):
            continue
        if key in forms:
            items.append(form_item(forms[key], key, value, lang))
        elif key in KEY_LABELS:
            items.append(generic_item(key, value))
    return items


def record_items(data: dict) -> list[Item]:
    return [generic_item(k, v) for k, v in (data or {}).items()
            if k not in HIDDEN_KEYS and v not in (None, "", [])]


# ---------------------------------------------------------------- records referenced by task data
RECORD_KEY = re.compile(r"_record_ids?$")


def referenced_record_ids(data: dict) -> list[int]:
    """Ids of the records the task data refers to (`*_record_id` and `*_record_ids` keys), in data order."""
    ids: list[int] = []
    for key, value in (data or {}).items():
        if str(key).startswith("_") or not RECORD_KEY.search(str(key)):
            continue
        for one in value if isinstance(value, list) else [value]:
            if isinstance(one, bool) or one in (None, ""):
                continue
            if (isinstance(one, int) or (isinstance(one, str) and one.isdigit())) and int(one) not in ids:
                ids.append(int(one))
    return ids


@dataclass
class RecordPanel:
    """A record shown on a task page: its title and its data as labelled items."""

    id: int
    allowed: bool
    title: str = ""
    kind: str = ""
    public: bool = False
    confidential: bool = False
    recorded: bool = False            # this look was written to the history (Art. 20, 30)
    created_at: Any = None
    items: list[Item] = field(default_factory=list)

    @property
    def file_ids(self) -> list[str]:
        return [item.file_id for item in self.items if item.kind == "file" and item.file_id]


def all_forms(engine) -> dict[str, Any]:
    """Top-level field name -> a Form that asks for it, over every process's forms (folders by name)."""
    root = engine.forms.forms_dir
    found: dict[str, Any] = {}
    if not root.is_dir():
        return found
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for name, form in process_forms(engine, folder.name).items():
            found.setdefault(name, form)
    return found


def record_data_items(data: dict, forms: dict, lang: str) -> list[Item]:
    """A record's data labelled by the forms that asked for its keys; known keys; then the rest as named."""
    from .i18n import article_label
    items = []
    for key, value in (data or {}).items():
        if key in HIDDEN_KEYS or key.startswith("_") or RECORD_KEY.search(key) or value in (None, "", [], {}):
            continue
        if key == "article" and isinstance(value, str):
            items.append(Item(key, key_label(key), text=article_label(value)))
        elif key in forms:
            items.append(form_item(forms[key], key, value, lang))
        else:
            items.append(generic_item(key, value))
    return items


def record_panels(engine, process_id: str, records: list, current_form, lang: str) -> list[RecordPanel]:
    """engine.confidential.RecordView rows as panels; the process's own forms label first, then any form."""
    if not records:
        return []
    forms = dict(process_forms(engine, process_id, current_form))
    for name, form in all_forms(engine).items():
        forms.setdefault(name, form)
    panels = []
    for record in records:
        if not record.allowed:
            panels.append(RecordPanel(id=record.id, allowed=False))
            continue
        panels.append(RecordPanel(id=record.id, allowed=True, title=record.title, kind=record.kind,
                                  public=record.public, confidential=record.confidential,
                                  recorded=getattr(record, "recorded", False), created_at=record.created_at,
                                  items=record_data_items(record.data, forms, lang)))
    return panels
