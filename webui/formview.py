"""A task form as the templates draw it: fields from the JSON Schema and ui-schema, values, messages.

HTML names follow engine.forms.coerce: `field`, `group-field`, `rows-<i>-column`, `list-<i>`,
and rows inside a row `rows-<i>-inner-<j>-column`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

from .display import to_local

ROW_TEMPLATE_INDEX = "__index__"


@dataclass
class Field:
    name: str                      # the HTML name
    path: str                      # the field path of engine error messages
    label: str
    widget: str                    # text, textarea, number, date, datetime, select, radio, checkbox, file, hidden
    description: str = ""
    required: bool = False
    value: Any = None
    options: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    accept: str = ""
    max_length: Optional[int] = None

    @property
    def kind(self) -> str:
        return "field"


@dataclass
class Rows:
    """A repeating group (array of objects, or of single values) with add/remove."""

    name: str
    path: str
    label: str
    description: str
    required: bool
    columns: list[Field]           # header labels, widgets and the template row (index __index__)
    rows: list[list[Field]]
    errors: list[str] = field(default_factory=list)
    min_items: int = 0
    max_items: Optional[int] = None
    scalar: bool = False
    placeholder: str = ROW_TEMPLATE_INDEX   # the index of the template row (__index1__ when nested)
    depth: int = 0                          # 1 for rows inside a row, ...

    @property
    def kind(self) -> str:
        return "rows"

    @property
    def header(self) -> list:
        """The columns drawn in the table; nested rows are drawn under their row."""
        return [c for c in self.columns if c.kind == "field"]


@dataclass
class Group:
    """A nested object drawn as a fieldset."""

    name: str
    path: str
    label: str
    description: str
    fields: list[Field]
    errors: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return "group"


def _types(schema: dict) -> set[str]:
    t = schema.get("type")
    if isinstance(t, str):
        return {t}
    if isinstance(t, list):
        return set(t)
    if "properties" in schema:
        return {"object"}
    if "items" in schema:
        return {"array"}
    return set()


class FormView:
    """Builds the drawable fields of an engine.forms.Form in one language."""

    def __init__(self, form, lang: str, values: Optional[dict] = None, messages: Optional[dict] = None,
                 choices: Optional[dict] = None, organisations=None):
        self.form = form
        self.lang = lang
        self.values = values or {}
        self.messages = messages or {}
        # options for string formats that have a known list of values, e.g. "division-code"
        self.choices = choices or {}
        # ui:widget "organisation": an object with options(filter) -> [(id, label)] and label(id)
        self.organisations = organisations
        self._organisation_lists: dict[str, list[tuple[str, str]]] = {}
        self.used_paths: set[str] = set()

    # ---- texts
    def _errors(self, path: str) -> list[str]:
        found = self.messages.get(path) or []
        if found:
            self.used_paths.add(path)
        return [m.text(self.lang, with_label=False) if hasattr(m, "text") else str(m) for m in found]

    def _label(self, pointer: str, fallback: str) -> str:
        return self.form.label(pointer, self.lang) if pointer is not None else fallback

    def _description(self, pointer: str) -> str:
        return self.form.text(pointer + "/description", self.lang) or ""

    def _options(self, pointer: str, schema: dict) -> list[tuple[str, str]]:
        for keyword in ("oneOf", "anyOf"):
            branches = schema.get(keyword)
            if isinstance(branches, list) and branches and all(
                    isinstance(b, dict) and "const" in b for b in branches):
                return [(_as_text(b["const"]),
                         self.form.text(f"{pointer}/{keyword}/{i}/title", self.lang) or _as_text(b["const"]))
                        for i, b in enumerate(branches)]
        if isinstance(schema.get("enum"), list):
            return [(_as_text(v), _as_text(v)) for v in schema["enum"]]
        return []

    # ---- fields
    def fields(self) -> list:
        required = set(self.form.schema.get("required") or [])
        out = []
        for name in self.form.field_order():
            found = self.form.schema_at(name)
            if not found:
                continue
            pointer, schema = found
            types = _types(schema)
            if "array" in types and self._item_options(name):
                out.append(self._scalar(name, name, pointer, schema, name in required,
                                        self.values.get(name), [name]))
            elif "array" in types:
                out.append(self._rows(name, pointer, schema, name in required))
            elif "object" in types:
                out.append(self._group(name, pointer, schema))
            else:
                out.append(self._scalar(name, name, pointer, schema, name in required,
                                        self.values.get(name), [name]))
        return out

    def _item_options(self, path: str) -> list[tuple[str, str]]:
        found = self.form.schema_at(re.sub(r"(^|/)__index__(/|$)", r"\g<1>0\2", path) + "/0")
        return self._options(found[0], found[1]) if found else []

    def summary(self) -> list[tuple[str, str]]:
        """Every message with its label, and the id of the field it belongs to ('' if none shows it)."""
        out = []
        for path, messages in self.messages.items():
            anchor = "f-" + path.replace("/", "-") if path in self.used_paths else ""
            out.extend((anchor, m.text(self.lang) if hasattr(m, "text") else str(m)) for m in messages)
        return out

    def _scalar(self, html_name: str, path: str, pointer: str, schema: dict, required: bool,
                value: Any, ui_path: list) -> Field:
        ui = self.form.ui(ui_path)
        widget = ui.get("ui:widget")
        types = _types(schema)
        options = self._options(pointer, schema)
        fmt = schema.get("format")
        if not options and fmt in self.choices and widget not in ("hidden", "file"):
            options = list(self.choices[fmt])
        if widget == "organisation" and self.organisations is not None and "array" not in types:
            options = self._organisation_options(ui, value)   # none listed: a number box below
        if widget == "organisation" and options:
            pass
        elif "array" in types:
            # a list of values: checkboxes when the values are known, else typed comma-separated
            options = self._item_options(path)
            widget = "checkboxes" if options else "list"
            value = [_as_text(v) for v in value] if isinstance(value, list) else []
        elif widget in ("hidden", "file"):
            pass
        elif options:
            widget = "radio" if widget == "radio" else "select"
        elif "boolean" in types:
            if widget in ("radio", "select"):
                options = [("true", self._yes()), ("false", self._no())]
            else:
                widget = "checkbox"
        elif fmt == "date" or widget == "date":
            widget = "date"
        elif fmt == "date-time" or widget == "datetime":
            widget = "datetime"
            local = to_local(value) if isinstance(value, str) else None
            value = local.strftime("%Y-%m-%dT%H:%M") if local else value
        elif types & {"integer", "number"}:
            widget = "number"
        elif widget == "textarea" or (schema.get("maxLength") or 0) > 300:
            widget = "textarea"
        else:
            widget = "text"
        options_ui = ui.get("ui:options") or {}
        accept = options_ui.get("accept") if isinstance(options_ui, dict) else None
        return Field(name=html_name, path=path, label=self._label(pointer, html_name), widget=widget,
                     description=self._description(pointer), required=required,
                     value=_as_input(value, widget), options=options, errors=self._errors(path),
                     accept=",".join(accept) if isinstance(accept, list) else (accept or ""),
                     max_length=schema.get("maxLength"))

    def _organisation_options(self, ui: dict, value: Any) -> list[tuple[str, str]]:
        """The organisations of the field's ui:options.filter; a current value not listed stays choosable."""
        options_ui = ui.get("ui:options") if isinstance(ui.get("ui:options"), dict) else {}
        chosen = str(options_ui.get("filter") or "")
        if chosen not in self._organisation_lists:
            self._organisation_lists[chosen] = [(_as_text(v), text) for v, text in self.organisations.options(chosen)]
        options = list(self._organisation_lists[chosen])
        current = _as_text(value)
        if current and current not in {v for v, _ in options}:
            options.append((current, self.organisations.label(value) or current))
        return options

    def _yes(self) -> str:
        return "Yes" if self.lang == "en" else "是"

    def _no(self) -> str:
        return "No" if self.lang == "en" else "否"

    def _group(self, name: str, pointer: str, schema: dict) -> Group:
        values = self.values.get(name) if isinstance(self.values.get(name), dict) else {}
        required = set(schema.get("required") or [])
        subfields = []
        for sub in (schema.get("properties") or {}):
            found = self.form.schema_at(f"{name}/{sub}")
            if found:
                subfields.append(self._scalar(f"{name}-{sub}", f"{name}/{sub}", found[0], found[1],
                                              sub in required, values.get(sub), [name, sub]))
        return Group(name=name, path=name, label=self._label(pointer, name),
                     description=self._description(pointer), fields=subfields, errors=self._errors(name))

    def _rows(self, name: str, pointer: str, schema: dict, required: bool) -> Rows:
        return self._rows_at(name, name, name, pointer, schema, required, self.values.get(name), 0)

    def _rows_at(self, html_name: str, path: str, schema_path: str, pointer: str, schema: dict,
                 required: bool, values: Any, depth: int) -> Rows:
        """Rows of an array at ``path`` (HTML name ``html_name``); ``schema_path`` has 0 for every row index.

        An array of objects inside a row is drawn as nested rows (depth 1, ...): its HTML names are
        ``outer-<i>-inner-<j>-field``, its template row index ``__index<depth>__``; it shows the rows
        there are plus one empty row (dropped on submit when left empty), so it works without JS.
        """
        found = self.form.schema_at(f"{schema_path}/0")
        item_pointer, items = found if found else ("", {})
        values = values if isinstance(values, list) else []
        min_items = int(schema.get("minItems") or 0)
        max_items = schema.get("maxItems")
        if depth == 0:
            count = len(values) or max(1, min_items)
        else:
            count = max(len(values) + 1, min_items, 1)
            if isinstance(max_items, int) and max_items >= len(values):
                count = min(count, max(max_items, 1))
        scalar = "object" not in _types(items)
        placeholder = ROW_TEMPLATE_INDEX if depth == 0 else f"__index{depth}__"
        ui_base = _split_ui(schema_path)

        def row(index) -> list:
            value = values[index] if isinstance(index, int) and index < len(values) else None
            if scalar:
                return [self._scalar(f"{html_name}-{index}", f"{path}/{index}", item_pointer, items, True,
                                     value, ui_base + [0])]
            value = value if isinstance(value, dict) else {}
            cells: list = []
            item_required = set(items.get("required") or [])
            order = self.form.ui(ui_base + [0]).get("ui:order")
            columns = list((items.get("properties") or {}).keys())
            if isinstance(order, list):
                columns = [c for c in order if c in columns] + [c for c in columns if c not in order]
            for column in columns:
                cell = self.form.schema_at(f"{schema_path}/0/{column}")
                if not cell:
                    continue
                cell_types = _types(cell[1])
                if ("array" in cell_types and not self._item_options(f"{schema_path}/0/{column}")
                        and "object" in _types(self._item_schema(f"{schema_path}/0/{column}"))):
                    cells.append(self._rows_at(f"{html_name}-{index}-{column}", f"{path}/{index}/{column}",
                                               f"{schema_path}/0/{column}", cell[0], cell[1],
                                               column in item_required, value.get(column), depth + 1))
                    continue
                cells.append(self._scalar(f"{html_name}-{index}-{column}", f"{path}/{index}/{column}",
                                          cell[0], cell[1], column in item_required,
                                          value.get(column), ui_base + [0, column]))
            return cells

        rows = [row(i) for i in range(count)]
        # messages of rows beyond those drawn (e.g. a removed row) stay in the summary
        return Rows(name=html_name, path=path, label=self._label(pointer, html_name),
                    description=self._description(pointer), required=required,
                    columns=row(placeholder), rows=rows, errors=self._errors(path),
                    min_items=min_items, max_items=max_items, scalar=scalar,
                    placeholder=placeholder, depth=depth)

    def _item_schema(self, schema_path: str) -> dict:
        found = self.form.schema_at(f"{schema_path}/0")
        return found[1] if found else {}


def _split_ui(schema_path: str) -> list:
    return [int(p) if p.isdigit() else p for p in schema_path.split("/") if p]


LIST_SEPARATORS = re.compile(r"[,，、;；\s]+")


def split_lists(form, raw):
    """The submission with typed lists ("a, b") split into repeated values, as coerce expects them."""
    from werkzeug.datastructures import MultiDict
    out = MultiDict()
    for key, values in raw.lists():
        located = form.schema_at(key.replace("-", "/")) if "-" in key or key in (form.schema.get("properties") or {}) else None
        schema = located[1] if located else {}
        items = schema.get("items") if isinstance(schema, dict) else None
        is_typed_list = ("array" in _types(schema) and isinstance(items, dict)
                         and "object" not in _types(items) and len(values) == 1
                         and not any(k in items for k in ("enum", "oneOf", "anyOf", "const")))
        if is_typed_list:
            for part in LIST_SEPARATORS.split(values[0].strip()):
                if part:
                    out.add(key, part)
        else:
            for value in values:
                out.add(key, value)
    return out


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


def _as_input(value: Any, widget: str) -> Any:
    if widget == "checkboxes":
        return value
    if widget == "list":
        return ", ".join(value)
    if widget == "checkbox":
        return bool(value) if isinstance(value, bool) else str(value).lower() in ("true", "on", "1")
    return _as_text(value)
