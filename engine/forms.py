"""Form loading and server-side validation (jsonschema + domain formats).

Valid data is recognised by a validator compiled from the form by jsonschema-rs (with the format
checkers below); data it does not accept is checked and described by jsonschema, which decides.

Forms are data, one directory per process::

    forms/<process_id>/<task_id>.schema.json     JSON Schema draft 2020-12, Chinese ``title``s
    forms/<process_id>/<task_id>.uischema.json   optional: ``ui:order``, per-field ``ui:widget``
    forms/<process_id>/<task_id>.en.json         optional: JSON pointer into the schema -> English

Public API:

- :class:`FormStore` -- ``load(process_id, filename)`` with the BPMN ``formJsonSchemaFilename``
  rules, path-traversal refusal and an mtime cache.
- :class:`Form` -- ``schema``, ``uischema``, ``english``, ``path``, ``title(lang)``,
  ``label(pointer_or_field_path, lang)``, ``text(pointer, lang)``, ``field_order()``,
  ``check(data)`` (messages, no exception), ``validate(data, lang)`` (raises
  :class:`engine.errors.InvalidFormData`), ``coerce(raw)``.
- :func:`coerce` -- HTML form strings -> typed data by the schema.
- :func:`check_schema_file` -- problems of a form file, for the BPMN validator.
- :data:`FORMAT_CHECKER` -- jsonschema FormatChecker with ``uscc``, ``division-code``, ``date``,
  ``date-time``, ``cas``, ``amount``; plus :func:`uscc_check_character`, :func:`is_valid_uscc`,
  :func:`uscc_problem`, :func:`cas_check_digit`, :func:`is_valid_cas`, :func:`division_codes`.

This module never imports Flask.
"""
from __future__ import annotations

import csv
import datetime as _dt
import functools
import json
import math
import re
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import jsonschema_rs
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError, ValidationError

from engine.errors import CleanauditError, InvalidFormData

__all__ = [
    "FORMAT_CHECKER", "Form", "FormStore", "FormError", "FormNotFound", "FormFileInvalid",
    "UnsafeFormPath", "FormatProblem", "Message", "check_schema_file", "coerce",
    "uscc_check_character", "is_valid_uscc", "uscc_problem", "cas_check_digit", "is_valid_cas",
    "division_codes", "UI_WIDGETS", "ORGANISATION_FILTERS", "LANGS",
]

LANGS = ("zh", "en")
UI_WIDGETS = frozenset({"textarea", "date", "select", "radio", "file", "hidden", "checkbox",
                        "text", "number", "datetime", "organisation"})
# ui:widget "organisation" (an integer organisation id drawn as a select) lists the organisations of
# ``ui:options.filter`` (engine/choices.py); the process still checks the value on submit.
ORGANISATION_FILTERS = frozenset({"filed_agencies", "enterprises_in_jurisdiction"})
DIVISIONS_CSV = Path(__file__).resolve().parent / "data" / "xinjiang-divisions.csv"
CHINA_OFFSET = "+08:00"   # Asia/Shanghai has no DST


# --------------------------------------------------------------------------- errors

class FormError(CleanauditError):
    """A form file cannot be used (missing, unsafe name, broken)."""


class FormNotFound(FormError):
    def __init__(self, path: Path | str):
        self.path = Path(path)
        super().__init__(f"form file not found: {path}")


class UnsafeFormPath(FormError, ValueError):
    """A process id or form filename that would leave the forms directory."""

    def __init__(self, value: str, reason: str):
        self.value = value
        self.reason = reason
        super().__init__(f"refused form path {value!r}: {reason}")


class FormFileInvalid(FormError):
    """A form file that exists but is not usable; ``problems`` lists why."""

    def __init__(self, path: Path | str, problems: Iterable[str]):
        self.path = Path(path)
        self.problems = list(problems)
        super().__init__("\n".join(self.problems) or f"invalid form file {path}")


# --------------------------------------------------------------------------- messages

@dataclass(frozen=True)
class Message:
    """One validation message in both languages, with the field label kept apart."""

    zh: str
    en: str
    label_zh: str = ""
    label_en: str = ""

    def text(self, lang: str = "zh", with_label: bool = True) -> str:
        if lang == "en":
            return f"{self.label_en}: {self.en}" if with_label and self.label_en else self.en
        return f"{self.label_zh}：{self.zh}" if with_label and self.label_zh else self.zh

    def __str__(self) -> str:
        return self.text("zh")


class FormatProblem(Exception):
    """Raised by a format check: why the value is wrong, in Chinese and English."""

    def __init__(self, zh: str, en: str):
        self.zh = zh
        self.en = en
        super().__init__(en)


def _show(value: Any, lang: str) -> str:
    """A submitted value as shown inside a message (quoted, truncated)."""
    if isinstance(value, bool):
        return ("是" if value else "否") if lang == "zh" else ("true" if value else "false")
    if value is None:
        return "空值" if lang == "zh" else "null"
    if isinstance(value, (int, float)):
        return _num(value)
    if isinstance(value, str):
        s = value if len(value) <= 40 else value[:39] + "…"
        return f"“{s}”" if lang == "zh" else f'"{s}"'
    s = json.dumps(value, ensure_ascii=False, default=str)
    return s if len(s) <= 40 else s[:39] + "…"


def _num(x: Any) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return str(x)


# --------------------------------------------------------------------------- domain formats

USCC_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def uscc_check_character(first17: str) -> str:
    """GB 32100-2015 check character (18th) for the first 17 characters of a USCC."""
    if len(first17) != 17:
        raise ValueError(f"need the first 17 characters, got {len(first17)}")
    total = 0
    for ch, weight in zip(first17, USCC_WEIGHTS):
        idx = USCC_CHARSET.find(ch)
        if idx < 0:
            raise ValueError(f"character {ch!r} is not allowed in a unified social credit code")
        total += idx * weight
    check = 31 - total % 31
    return USCC_CHARSET[0 if check == 31 else check]


def uscc_problem(code: Any) -> FormatProblem | None:
    """Why ``code`` is not a valid unified social credit code, or None when it is."""
    if not isinstance(code, str):
        return FormatProblem(f"应为文本，实际为 {_show(code, 'zh')}",
                             f"must be text, got {_show(code, 'en')}")
    if len(code) != 18:
        return FormatProblem(f"应为18位，实际为{len(code)}位",
                             f"must be 18 characters, got {len(code)}")
    bad = sorted({c for c in code if c not in USCC_CHARSET}, key=code.index)
    if bad:
        hint_zh = "（字母须大写，不使用 I、O、Z、S、V）"
        hint_en = " (capital letters only; I, O, Z, S, V are not used)"
        return FormatProblem(
            f"含有不允许的字符 {'、'.join(bad)}{hint_zh}，实际为 {_show(code, 'zh')}",
            f"contains characters not allowed: {', '.join(bad)}{hint_en}; got {_show(code, 'en')}")
    if not code[2:8].isdigit() or not code[2:8].isascii():
        return FormatProblem(
            f"第3至8位应为6位数字的行政区划代码，实际为 {_show(code[2:8], 'zh')}",
            f"characters 3-8 must be a six-digit division code, got {_show(code[2:8], 'en')}")
    if uscc_check_character(code[:17]) != code[17]:
        return FormatProblem(
            f"校验码不符，请核对是否有字符输入错误（输入为 {_show(code, 'zh')}）",
            f"the check character does not match; check the code for typos (got {_show(code, 'en')})")
    return None


def is_valid_uscc(code: Any) -> bool:
    return uscc_problem(code) is None


def cas_check_digit(body: str) -> int:
    """CAS check digit for the digits before it (e.g. '773218' for water 7732-18-5)."""
    digits = body.replace("-", "")
    if not digits.isdigit() or not digits.isascii():
        raise ValueError(f"not CAS digits: {body!r}")
    return sum(int(d) * i for i, d in enumerate(reversed(digits), start=1)) % 10


_CAS_RE = re.compile(r"^(\d{2,7})-(\d{2})-(\d)$", re.ASCII)


def is_valid_cas(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    m = _CAS_RE.match(value)
    return bool(m) and cas_check_digit(m.group(1) + m.group(2)) == int(m.group(3))


@functools.lru_cache(maxsize=1)
def _divisions() -> dict[str, dict[str, str]]:
    with DIVISIONS_CSV.open(encoding="utf-8", newline="") as fh:
        return {row["code"].strip(): row for row in csv.DictReader(fh)}


def division_codes() -> frozenset[str]:
    """The six-digit GB/T 2260 codes listed in ``engine/data/xinjiang-divisions.csv``."""
    return frozenset(_divisions())


FORMAT_CHECKER = FormatChecker()
FORMAT_CHECKER.checkers = dict(Draft202012Validator.FORMAT_CHECKER.checkers)


@FORMAT_CHECKER.checks("uscc", raises=FormatProblem)
def _check_uscc(instance: Any) -> bool:
    if not isinstance(instance, str):
        return True
    problem = uscc_problem(instance)
    if problem:
        raise problem
    return True


@FORMAT_CHECKER.checks("division-code", raises=FormatProblem)
def _check_division(instance: Any) -> bool:
    if not isinstance(instance, str):
        return True
    if not (len(instance) == 6 and instance.isdigit() and instance.isascii()):
        raise FormatProblem(f"应为6位数字的行政区划代码，实际为 {_show(instance, 'zh')}",
                            f"must be a six-digit division code, got {_show(instance, 'en')}")
    if instance not in _divisions():
        raise FormatProblem(f"不是已登记的新疆行政区划代码：{_show(instance, 'zh')}",
                            f"not a listed Xinjiang division code: {_show(instance, 'en')}")
    return True


_DATE_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$", re.ASCII)
_DATETIME_RE = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$", re.ASCII)


@FORMAT_CHECKER.checks("date", raises=FormatProblem)
def _check_date(instance: Any) -> bool:
    if not isinstance(instance, str):
        return True
    if not _DATE_RE.match(instance):
        raise FormatProblem(f"日期格式应为 YYYY-MM-DD，实际为 {_show(instance, 'zh')}",
                            f"date must be in the form YYYY-MM-DD, got {_show(instance, 'en')}")
    try:
        _dt.date.fromisoformat(instance)
    except ValueError:
        raise FormatProblem(f"不是有效的日期：{_show(instance, 'zh')}",
                            f"not a real date: {_show(instance, 'en')}") from None
    return True


@FORMAT_CHECKER.checks("date-time", raises=FormatProblem)
def _check_datetime(instance: Any) -> bool:
    if not isinstance(instance, str):
        return True
    m = _DATETIME_RE.match(instance)
    ok = bool(m)
    if m:
        try:
            _dt.date.fromisoformat(m.group(1))
            hh, mm, ss = int(m.group(2)), int(m.group(3)), int(m.group(4))
            ok = hh < 24 and mm < 60 and ss < 61
            tz = m.group(6)
            if tz not in ("Z", "z"):
                ok = ok and int(tz[1:3]) < 24 and int(tz[4:6]) < 60
        except ValueError:
            ok = False
    if not ok:
        raise FormatProblem(
            f"日期时间格式应为 YYYY-MM-DDTHH:MM:SS+08:00，实际为 {_show(instance, 'zh')}",
            f"date-time must be in the form YYYY-MM-DDTHH:MM:SS+08:00, got {_show(instance, 'en')}")
    return True


@FORMAT_CHECKER.checks("cas", raises=FormatProblem)
def _check_cas(instance: Any) -> bool:
    if not isinstance(instance, str):
        return True
    m = _CAS_RE.match(instance)
    if not m:
        raise FormatProblem(f"CAS 号格式应为 NNNNNNN-NN-N，实际为 {_show(instance, 'zh')}",
                            f"a CAS number must look like NNNNNNN-NN-N, got {_show(instance, 'en')}")
    if cas_check_digit(m.group(1) + m.group(2)) != int(m.group(3)):
        raise FormatProblem(f"CAS 号校验位不符，请核对（输入为 {_show(instance, 'zh')}）",
                            f"the CAS check digit does not match (got {_show(instance, 'en')})")
    return True


_AMOUNT_RE = re.compile(r"^\d+(\.\d+)?$", re.ASCII)


@FORMAT_CHECKER.checks("amount", raises=FormatProblem)
def _check_amount(instance: Any) -> bool:
    if not isinstance(instance, str):
        return True
    if not _AMOUNT_RE.match(instance):
        raise FormatProblem(f"应为非负数（如 12.5），实际为 {_show(instance, 'zh')}",
                            f"must be a non-negative decimal number (e.g. 12.5), got {_show(instance, 'en')}")
    return True


KNOWN_FORMATS = frozenset(FORMAT_CHECKER.checkers)


# --------------------------------------------------------------------------- schema helpers

def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _resolve_pointer(doc: Any, pointer: str) -> Any:
    """The node at a JSON pointer ('' or '/a/0/b'); KeyError when absent."""
    if pointer in ("", "#"):
        return doc
    if pointer.startswith("#"):
        pointer = pointer[1:]
    if not pointer.startswith("/"):
        raise KeyError(pointer)
    node = doc
    for raw in pointer[1:].split("/"):
        token = _unescape(raw)
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise KeyError(pointer)
    return node


def _follow_refs(root: dict, pointer: str, node: Any) -> tuple[str, Any]:
    """Follow local ``$ref``s from ``node`` (at ``pointer``); returns the target and its pointer."""
    seen = set()
    while isinstance(node, dict) and isinstance(node.get("$ref"), str) \
            and node["$ref"].startswith("#") and node["$ref"] not in seen:
        seen.add(node["$ref"])
        try:
            target = _resolve_pointer(root, node["$ref"])
        except KeyError:
            break
        pointer, node = node["$ref"][1:], target
    return pointer, node


def _types(schema: Any) -> set[str]:
    if not isinstance(schema, dict):
        return set()
    t = schema.get("type")
    if isinstance(t, str):
        return {t}
    if isinstance(t, list):
        return {x for x in t if isinstance(x, str)}
    if "properties" in schema:
        return {"object"}
    if "items" in schema or "prefixItems" in schema:
        return {"array"}
    return set()


def _branches(schema: dict) -> list[tuple[str, Any]]:
    """(relative pointer, subschema) of the combinator branches of a schema."""
    out: list[tuple[str, Any]] = []
    for kw in ("allOf", "anyOf", "oneOf"):
        for i, sub in enumerate(schema.get(kw) or []):
            out.append((f"/{kw}/{i}", sub))
    for kw in ("then", "else"):
        if isinstance(schema.get(kw), dict):
            out.append((f"/{kw}", schema[kw]))
    return out


def _child(root: dict, pointer: str, schema: Any, key: str | int) -> tuple[str, Any] | None:
    """Schema pointer and subschema for one step (property name or array index) of a path."""
    pointer, schema = _follow_refs(root, pointer, schema)
    if not isinstance(schema, dict):
        return None
    if isinstance(key, int) or (isinstance(key, str) and key.isdigit() and "array" in _types(schema)):
        idx = int(key)
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list) and idx < len(prefix):
            return _follow_refs(root, f"{pointer}/prefixItems/{idx}", prefix[idx])
        if isinstance(schema.get("items"), dict):
            return _follow_refs(root, f"{pointer}/items", schema["items"])
        return None
    props = schema.get("properties")
    if isinstance(props, dict) and key in props:
        return _follow_refs(root, f"{pointer}/properties/{_escape(key)}", props[key])
    for rel, sub in _branches(schema):
        found = _child(root, pointer + rel, sub, key)
        if found:
            return found
    return None


def _iter_subschemas(schema: Any, pointer: str = ""):
    """Every (pointer, subschema) of a schema, following the keywords that hold schemas."""
    if not isinstance(schema, dict):
        return
    yield pointer, schema
    for kw in ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas"):
        value = schema.get(kw)
        if isinstance(value, dict):
            for name, sub in value.items():
                yield from _iter_subschemas(sub, f"{pointer}/{kw}/{_escape(name)}")
    for kw in ("items", "additionalProperties", "contains", "not", "if", "then", "else",
               "propertyNames", "unevaluatedItems", "unevaluatedProperties", "additionalItems"):
        if isinstance(schema.get(kw), dict):
            yield from _iter_subschemas(schema[kw], f"{pointer}/{kw}")
    for kw in ("allOf", "anyOf", "oneOf", "prefixItems"):
        value = schema.get(kw)
        if isinstance(value, list):
            for i, sub in enumerate(value):
                yield from _iter_subschemas(sub, f"{pointer}/{kw}/{i}")


def _split_path(path: str | Iterable) -> list[str | int]:
    if isinstance(path, str):
        return [int(p) if p.isdigit() else p for p in path.split("/") if p != ""]
    return list(path)


def _format_function(name: str):
    def conforms(instance: Any) -> bool:
        try:
            return FORMAT_CHECKER.conforms(instance, name)
        except Exception:  # noqa: BLE001 - jsonschema decides (and describes) what this refuses
            return False
    return conforms


def _fast_validator(schema: dict):
    """A compiled validator of the schema (jsonschema-rs), or None if it cannot take the schema.

    Its formats are FORMAT_CHECKER's functions (which pass every non-string value, as jsonschema-rs
    does), so it accepts nothing that jsonschema refuses; formats FORMAT_CHECKER does not know are
    checked by its own rules or not at all (stricter or equal: jsonschema has the last word).
    """
    try:
        return jsonschema_rs.Draft202012Validator(
            schema, formats={name: _format_function(name) for name in FORMAT_CHECKER.checkers},
            validate_formats=True)
    except Exception:  # noqa: BLE001 - e.g. a pattern its regex engine does not support
        return None


def _join_path(parts: Iterable) -> str:
    return "/".join(str(p) for p in parts)


_TYPE_NAMES = {
    "string": ("文本", "text"), "number": ("数字", "a number"),
    "integer": ("整数", "a whole number"), "boolean": ("是或否", "true or false"),
    "array": ("列表", "a list"), "object": ("对象", "an object"), "null": ("空值", "null"),
}


# --------------------------------------------------------------------------- Form

class Form:
    """One loaded form: schema, UI hints, English labels; validation and coercion."""

    def __init__(self, schema: dict, uischema: dict | None = None,
                 english: dict | None = None, path: Path | str | None = None):
        self.schema = schema
        self.uischema = uischema or {}
        self.english = english or {}
        self.path = Path(path) if path is not None else None
        self._validator = Draft202012Validator(schema, format_checker=FORMAT_CHECKER)
        self._fast = _fast_validator(schema)
        # id(subschema) -> its pointer in the file; jsonschema leaves "$ref" out of error paths,
        # so a failing subschema is located by identity
        self._pointers = {id(sub): ptr for ptr, sub in _iter_subschemas(schema)}

    def __repr__(self) -> str:
        return f"<Form {self.path or self.schema.get('title')!s}>"

    # ---- texts
    def text(self, pointer: str, lang: str = "zh") -> str | None:
        """The schema string at ``pointer`` (e.g. '/description'), or its English override."""
        if lang == "en" and isinstance(self.english.get(pointer), str):
            return self.english[pointer]
        try:
            value = _resolve_pointer(self.schema, pointer)
        except KeyError:
            return None
        return value if isinstance(value, str) else None

    def title(self, lang: str = "zh") -> str:
        return self.text("/title", lang) or (self.path.name if self.path else "")

    def description(self, lang: str = "zh") -> str:
        return self.text("/description", lang) or ""

    def schema_at(self, field_path: str | Iterable) -> tuple[str, dict] | None:
        """(schema pointer, subschema) describing a field path such as 'pollutants/1/name'."""
        pointer, node = _follow_refs(self.schema, "", self.schema)
        for key in _split_path(field_path):
            found = _child(self.schema, pointer, node, key)
            if not found:
                return None
            pointer, node = found
        return pointer, node

    def label(self, pointer: str, lang: str = "zh") -> str:
        """The label of a field.

        ``pointer`` is either a schema pointer (``/properties/name`` or ``/properties/name/title``)
        or a field path as used in error keys (``name``, ``pollutants/1/concentration``; rows
        are named "第2行" / "row 2"). Falls back to the Chinese title, then to the field name.
        """
        if pointer.startswith("/") or pointer == "":
            ptr = pointer if pointer.endswith("/title") else pointer.rstrip("/") + "/title"
            found = self.text(ptr, lang) or self.text(ptr, "zh")
            if found:
                return found
            tokens = [t for t in pointer.split("/") if t and t != "title"]
            return _unescape(tokens[-1]) if tokens else self.title(lang)
        return self._path_label(_split_path(pointer), lang)

    def _path_label(self, parts: list, lang: str) -> str:
        if not parts:
            return ""
        pieces: list[str] = []
        pointer, node = _follow_refs(self.schema, "", self.schema)
        resolvable = True
        for key in parts:
            found = _child(self.schema, pointer, node, key) if resolvable else None
            if found:
                pointer, node = found
            else:
                resolvable = False
            if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
                n = int(key) + 1
                pieces.append(f"第{n}行" if lang == "zh" else f"row {n}")
            elif found:
                pieces.append(self.text(pointer + "/title", lang)
                              or self.text(pointer + "/title", "zh") or str(key))
            else:
                pieces.append(str(key))
        return (" " if lang == "zh" else ", ").join(pieces)

    def field_order(self) -> list[str]:
        """Top-level property names in ``ui:order`` order ('*' stands for the rest)."""
        props = list((self.schema.get("properties") or {}).keys())
        order = self.uischema.get("ui:order")
        if not isinstance(order, list):
            return props
        listed = [p for p in order if p in props]
        rest = [p for p in props if p not in listed]
        out: list[str] = []
        for p in order:
            if p == "*":
                out.extend(rest)
                rest = []
            elif p in props and p not in out:
                out.append(p)
        return out + rest

    def ui(self, field_path: str | Iterable) -> dict:
        """The uischema entry of a field (RJSF nesting: {"pollutants": {"items": {...}}})."""
        node: Any = self.uischema
        for key in _split_path(field_path):
            if not isinstance(node, dict):
                return {}
            node = node.get("items", {}) if isinstance(key, int) else node.get(key, {})
        return node if isinstance(node, dict) else {}

    # ---- validation
    def check(self, data: Any) -> dict[str, list[Message]]:
        """All problems of ``data``: field path -> messages (empty dict = valid).

        Valid data is recognised by the compiled validator (jsonschema-rs, ~50 times faster);
        anything it does not accept is checked again by jsonschema, whose verdict and messages
        count. (It is never more lenient than jsonschema here: formats are jsonschema's own
        checkers, see _fast_validator; the tests compare both on every form.)
        """
        fast = self._fast
        if fast is not None:
            try:
                if fast.is_valid(data):
                    return {}
            except Exception:  # noqa: BLE001 - a value it cannot read (a lone surrogate, a huge integer)
                pass
        out: dict[str, list[Message]] = {}

        def add(path_parts: list, zh: str, en: str) -> None:
            key = _join_path(path_parts)
            msg = Message(zh, en, self._path_label(path_parts, "zh"),
                          self._path_label(path_parts, "en"))
            bucket = out.setdefault(key, [])
            if msg not in bucket:
                bucket.append(msg)

        errors = sorted(self._validator.iter_errors(data),
                        key=lambda e: [str(p) for p in e.absolute_path])
        for error in errors:
            self._describe(error, add)
        return out

    def validate(self, data: Any, lang: str = "zh") -> Any:
        """Return ``data`` unchanged when valid; else raise InvalidFormData (messages in ``lang``).

        The raised error also carries ``translations`` ({"zh": errors, "en": errors}) and
        ``messages`` (field path -> list of :class:`Message`).
        """
        problems = self.check(data)
        if not problems:
            return data
        exc = InvalidFormData({k: [m.text(lang) for m in v] for k, v in problems.items()})
        exc.translations = {lg: {k: [m.text(lg) for m in v] for k, v in problems.items()}
                            for lg in LANGS}
        exc.messages = problems
        raise exc

    def coerce(self, raw: Mapping) -> dict:
        return coerce(self, raw)

    def _option_titles(self, error: ValidationError, branches: list, lang: str) -> list[str]:
        base = self._pointers.get(id(error.schema))
        if base is None:
            base = _schema_pointer(self.schema, error)
        titles = []
        for i, branch in enumerate(branches):
            title = None
            if base is not None:
                title = self.text(f"{base}/{error.validator}/{i}/title", lang)
            if title is None and isinstance(branch, dict):
                title = branch.get("title")
            titles.append(title if title is not None else _show(branch.get("const"), lang))
        return titles

    def _describe(self, error: ValidationError, add) -> None:
        path = list(error.absolute_path)
        kw = error.validator
        value = error.instance
        sch = error.schema if isinstance(error.schema, dict) else {}
        v = error.validator_value

        def got(lang):
            return _show(value, lang)

        if kw == "required":
            if isinstance(value, dict):
                for prop in v:
                    if prop not in value:
                        add(path + [prop], "必填", "required")
            return
        if kw == "dependentRequired":
            if isinstance(value, dict):
                for trigger, deps in v.items():
                    if trigger in value:
                        for dep in deps:
                            if dep not in value:
                                add(path + [dep], "必填", "required")
            return
        if kw in ("additionalProperties", "unevaluatedProperties") and isinstance(value, dict):
            known = set((sch.get("properties") or {}).keys())
            patterns = list((sch.get("patternProperties") or {}).keys())
            extra = [k for k in value if k not in known
                     and not any(re.search(p, k) for p in patterns)]
            if extra:
                add(path, f"不允许的字段：{'、'.join(extra)}",
                    f"fields not allowed: {', '.join(extra)}")
                return
        if kw == "format" and isinstance(error.cause, FormatProblem):
            add(path, error.cause.zh, error.cause.en)
            return
        if kw == "format":
            add(path, f"格式应为 {v}，实际为 {got('zh')}", f"must be in {v} format, got {got('en')}")
            return
        if kw == "type":
            wanted = [v] if isinstance(v, str) else list(v)
            zh = "或".join(_TYPE_NAMES.get(t, (t, t))[0] for t in wanted)
            en = " or ".join(_TYPE_NAMES.get(t, (t, t))[1] for t in wanted)
            add(path, f"应为{zh}，实际为 {got('zh')}", f"must be {en}, got {got('en')}")
            return
        bounds = {
            "minimum": ("不得小于 {m}", "must be at least {m}"),
            "maximum": ("不得大于 {m}", "must be at most {m}"),
            "exclusiveMinimum": ("应大于 {m}", "must be greater than {m}"),
            "exclusiveMaximum": ("应小于 {m}", "must be less than {m}"),
            "multipleOf": ("应为 {m} 的整数倍", "must be a multiple of {m}"),
        }
        if kw in bounds:
            zh, en = bounds[kw]
            add(path, zh.format(m=_num(v)) + f"，实际为 {got('zh')}",
                en.format(m=_num(v)) + f", got {got('en')}")
            return
        if kw in ("minLength", "maxLength") and isinstance(value, str):
            n = len(value)
            if kw == "minLength" and n == 0:
                add(path, "不能为空", "must not be empty")
            elif kw == "minLength":
                add(path, f"至少应有{v}个字符，实际为{n}个",
                    f"must be at least {v} characters long, got {n}")
            else:
                add(path, f"最多{v}个字符，实际为{n}个", f"must be at most {v} characters long, got {n}")
            return
        if kw in ("minItems", "maxItems") and isinstance(value, list):
            n = len(value)
            if kw == "minItems":
                add(path, f"至少需要{v}行，实际为{n}行", f"needs at least {v} row(s), got {n}")
            else:
                add(path, f"最多{v}行，实际为{n}行", f"allows at most {v} row(s), got {n}")
            return
        if kw == "uniqueItems":
            add(path, "各行不得重复", "rows must not repeat")
            return
        if kw == "pattern":
            add(path, f"格式不正确（应符合 {v}），实际为 {got('zh')}",
                f"does not match the pattern {v}, got {got('en')}")
            return
        if kw == "enum":
            add(path, f"应为以下之一：{'、'.join(_show(x, 'zh') for x in v)}，实际为 {got('zh')}",
                f"must be one of: {', '.join(_show(x, 'en') for x in v)}; got {got('en')}")
            return
        if kw == "const":
            add(path, f"应为 {_show(v, 'zh')}，实际为 {got('zh')}",
                f"must be {_show(v, 'en')}, got {got('en')}")
            return
        if kw in ("oneOf", "anyOf") and isinstance(v, list):
            if v and all(isinstance(b, dict) and "const" in b for b in v):
                add(path,
                    f"应为以下之一：{'、'.join(self._option_titles(error, v, 'zh'))}，实际为 {got('zh')}",
                    f"must be one of: {', '.join(self._option_titles(error, v, 'en'))}; got {got('en')}")
            else:
                add(path, f"不符合任何允许的形式，实际为 {got('zh')}",
                    f"does not match any allowed form, got {got('en')}")
            return
        if kw == "not":
            add(path, f"不允许的值：{got('zh')}", f"value not allowed: {got('en')}")
            return
        if kw is None or v is False:
            add(path, "不允许此字段", "not allowed here")
            return
        add(path, f"无效：{error.message}", error.message)


def _schema_pointer(root: dict, error: ValidationError) -> str | None:
    """Pointer (in the form file) of the subschema that failed, following local ``$ref``s."""
    pointer, node = "", root
    for token in list(error.absolute_schema_path)[:-1]:
        if token == "$ref" and isinstance(node, dict) and isinstance(node.get("$ref"), str):
            ref = node["$ref"]
            if not ref.startswith("#"):
                return None
            try:
                node = _resolve_pointer(root, ref)
            except KeyError:
                return None
            pointer = ref[1:]
            continue
        if isinstance(node, dict) and token not in node:
            pointer, node = _follow_refs(root, pointer, node)   # jsonschema omits "$ref"
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and isinstance(token, int) and token < len(node):
            node = node[token]
        else:
            return None
        pointer += "/" + _escape(str(token))
    return pointer


# --------------------------------------------------------------------------- coercion

_TRUE = {"true", "on", "1", "yes", "y", "是", "checked"}
_FALSE = {"false", "off", "0", "no", "n", "否", ""}
_INT_RE = re.compile(r"^[+-]?\d+$", re.ASCII)
_NUM_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$", re.ASCII)
_LOCAL_DT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$", re.ASCII)


def _values(raw: Mapping) -> dict[str, list]:
    """A request form (dict or MultiDict) as key -> list of values."""
    out: dict[str, list] = {}
    getlist = getattr(raw, "getlist", None)
    for key in raw.keys():
        if callable(getlist):
            vals = list(getlist(key))
        else:
            val = raw[key]
            if isinstance(val, (list, tuple)) and all(isinstance(x, str) for x in val):
                vals = list(val)          # repeated form values
            else:
                vals = [val]              # one value, possibly already structured (JSON)
        out[str(key)] = vals
    return out


def _consts(schema: dict) -> list:
    for kw in ("oneOf", "anyOf"):
        branches = schema.get(kw)
        if isinstance(branches, list) and branches and all(
                isinstance(b, dict) and "const" in b for b in branches):
            return [b["const"] for b in branches]
    if isinstance(schema.get("enum"), list):
        return list(schema["enum"])
    if "const" in schema:
        return [schema["const"]]
    return []


def _coerce_scalar(form: Form, schema: Any, value: Any, ui: dict) -> Any:
    """One submitted value by its schema; returns the raw value when it cannot convert."""
    if not isinstance(value, str):
        return value
    _, schema = _follow_refs(form.schema, "", schema)
    schema = schema if isinstance(schema, dict) else {}
    types = _types(schema)
    if not types:
        consts = _consts(schema)
        types = {"integer" if isinstance(c, int) and not isinstance(c, bool) else
                 "number" if isinstance(c, float) else
                 "boolean" if isinstance(c, bool) else "string" for c in consts}
    text = value.strip()
    if "boolean" in types and not types & {"string"}:
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        return value
    if types & {"integer", "number"} and not types & {"string"}:
        norm = unicodedata.normalize("NFKC", text).strip()
        if "integer" in types and _INT_RE.match(norm):
            return int(norm)
        if _NUM_RE.match(norm):
            number = float(norm)
            if not math.isfinite(number):
                return value
            if "integer" in types and number.is_integer() and "number" not in types:
                return int(number)
            return int(number) if _INT_RE.match(norm) else number
        return value
    fmt = schema.get("format")
    if fmt == "uscc":
        return text.upper()
    if fmt == "date-time" and _LOCAL_DT_RE.match(text):
        # <input type="datetime-local"> sends no seconds and no offset: local time is UTC+8.
        text = text.replace(" ", "T")
        if len(text) == 16:
            text += ":00"
        return text + CHINA_OFFSET
    return text


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _coerce_object(form: Form, schema: Any, flat: dict[str, list], ui_path: list) -> dict:
    _, schema = _follow_refs(form.schema, "", schema)
    out: dict[str, Any] = {}
    if not isinstance(schema, dict):
        return out
    props: dict[str, Any] = dict(schema.get("properties") or {})
    for _, branch in _branches(schema):          # properties declared in allOf / then / else
        _, branch = _follow_refs(form.schema, "", branch)
        if isinstance(branch, dict):
            for name, sub in (branch.get("properties") or {}).items():
                props.setdefault(name, sub)
    for name, sub in props.items():
        _, sub = _follow_refs(form.schema, "", sub)
        sub = sub if isinstance(sub, dict) else {}
        types = _types(sub)
        ui = form.ui(ui_path + [name])
        direct = flat.get(name)
        if direct and len(direct) == 1 and not isinstance(direct[0], str):
            out[name] = direct[0]                      # already structured (JSON submission)
            continue
        if "object" in types and not types & {"string"}:
            prefix = name + "-"
            nested = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
            if nested:
                obj = _coerce_object(form, sub, nested, ui_path + [name])
                if obj:
                    out[name] = obj
            continue
        if "array" in types:
            items = sub.get("items")
            _, items = _follow_refs(form.schema, "", items)
            if "object" in _types(items):
                rows: dict[int, dict[str, list]] = {}
                pat = re.compile(rf"^{re.escape(name)}-(\d+)-(.+)$")
                for key, vals in flat.items():
                    m = pat.match(key)
                    if m:
                        rows.setdefault(int(m.group(1)), {})[m.group(2)] = vals
                built = []
                for idx in sorted(rows):
                    if all(all(_is_blank(x) for x in vals) for vals in rows[idx].values()):
                        continue                          # an empty template row
                    built.append(_coerce_object(form, items, rows[idx], ui_path + [name, 0]))
                if built:
                    out[name] = built
                elif (rows or direct is not None) and name in set(schema.get("required") or []):
                    out[name] = []                        # "at least one row" rather than "required"
                # an optional table left empty is not given: its minItems applies only when it is
                # (e.g. the self-audit team of a commissioning that names an agency)
            else:
                vals = list(direct or [])
                pat = re.compile(rf"^{re.escape(name)}-(\d+)$")
                indexed = sorted((int(m.group(1)), v) for k, v in flat.items()
                                 if (m := pat.match(k)))
                for _, v in indexed:
                    vals.extend(v)
                vals = [_coerce_scalar(form, items, x, ui) for x in vals if not _is_blank(x)]
                if vals or direct is not None or indexed:
                    out[name] = vals
            continue
        if "boolean" in types and not types & {"string", "number", "integer"}:
            present = [x for x in (direct or []) if not _is_blank(x)]
            if not present:
                if ui.get("ui:widget") not in ("radio", "select"):
                    out[name] = False                  # an unchecked checkbox sends nothing
                continue
            # a hidden "false" followed by a checkbox "on" means checked
            lowered = [str(x).strip().lower() for x in present]
            if any(x in _TRUE for x in lowered):
                out[name] = True
            elif all(x in _FALSE for x in lowered):
                out[name] = False
            else:
                out[name] = present[-1]
            continue
        value = direct[0] if direct else None
        if _is_blank(value):
            continue
        out[name] = _coerce_scalar(form, sub, value, ui)
    return out


def coerce(form: Form, raw: Mapping) -> dict:
    """Typed data from an HTML form submission (a dict or a werkzeug MultiDict).

    - values are converted by the schema type (integer / number / boolean), full-width digits
      accepted; a value that does not convert is kept as given so that ``validate`` reports it;
    - arrays of objects are rebuilt from ``name-<i>-field`` keys in index order, rows whose
      values are all empty are dropped; arrays of scalars from repeated keys or ``name-<i>``;
      rows inside rows likewise, recursively: ``entries-0-evidence-1-pollutant``;
    - nested objects from ``name-field`` keys;
    - empty strings are dropped (so a missing required field reads "必填"), strings stripped;
    - a boolean field without a value is False unless its widget is ``radio`` or ``select``;
    - ``format: uscc`` is upper-cased; ``format: date-time`` without offset gets ``+08:00``;
    - keys that are not in the schema (``csrf_token``, buttons) are left out.
    """
    return _coerce_object(form, form.schema, _values(raw), [])


# --------------------------------------------------------------------------- file checks

def _read_json(path: Path) -> tuple[Any, str | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return None, f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"
    except OSError as exc:
        return None, f"{path}: cannot be read ({exc.strerror or exc})"
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"


def _sibling(path: Path, suffix: str) -> Path | None:
    name = path.name
    if not name.endswith(".schema.json"):
        return None
    return path.with_name(name[: -len(".schema.json")] + suffix)


def _schema_problems(path: Path, schema: Any) -> list[str]:
    problems: list[str] = []
    if not isinstance(schema, dict):
        return [f"{path}: a form schema must be a JSON object, got {type(schema).__name__}"]
    declared = schema.get("$schema")
    if declared is not None and declared.rstrip("#") not in (
            "https://json-schema.org/draft/2020-12/schema",):
        problems.append(f"{path}: $schema must be https://json-schema.org/draft/2020-12/schema,"
                        f" got {declared!r}")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError:
        meta = Draft202012Validator(Draft202012Validator.META_SCHEMA)
        for err in sorted(meta.iter_errors(schema), key=lambda e: list(map(str, e.path))):
            where = "".join("/" + _escape(str(p)) for p in err.absolute_path) or "/"
            problems.append(f"{path}: not a valid JSON Schema at {where}: {err.message}")
        return problems
    for pointer, sub in _iter_subschemas(schema):
        fmt = sub.get("format")
        if isinstance(fmt, str) and fmt not in KNOWN_FORMATS:
            problems.append(f"{path}: unknown format {fmt!r} at {pointer or '/'}"
                            f" (known: {', '.join(sorted(KNOWN_FORMATS))})")
        ref = sub.get("$ref")
        if isinstance(ref, str):
            if not ref.startswith("#"):
                problems.append(f"{path}: only local $ref ('#/...') is supported, got {ref!r}"
                                f" at {pointer or '/'}")
            else:
                try:
                    _resolve_pointer(schema, ref)
                except KeyError:
                    problems.append(f"{path}: $ref {ref!r} at {pointer or '/'} points nowhere")
    return problems


def _ui_problems(path: Path, ui: Any, schema: dict) -> list[str]:
    if not isinstance(ui, dict):
        return [f"{path}: a uischema must be a JSON object"]
    problems = []
    props = set((schema.get("properties") or {}).keys())
    order = ui.get("ui:order")
    if order is not None:
        if not isinstance(order, list) or not all(isinstance(x, str) for x in order):
            problems.append(f"{path}: ui:order must be a list of field names")
        else:
            for name in order:
                if name != "*" and name not in props:
                    problems.append(f"{path}: ui:order names {name!r}, which the schema lacks")

    def walk(node: Any, where: str) -> None:
        if not isinstance(node, dict):
            return
        widget = node.get("ui:widget")
        if widget is not None and widget not in UI_WIDGETS:
            problems.append(f"{path}: unknown ui:widget {widget!r} at {where or '/'}"
                            f" (known: {', '.join(sorted(UI_WIDGETS))})")
        if widget == "organisation":
            options = node.get("ui:options")
            chosen = options.get("filter") if isinstance(options, dict) else None
            if chosen not in ORGANISATION_FILTERS:
                problems.append(f"{path}: ui:widget 'organisation' at {where or '/'} needs ui:options.filter,"
                                f" one of {', '.join(sorted(ORGANISATION_FILTERS))} (got {chosen!r})")
        for key, sub in node.items():
            if not key.startswith("ui:"):
                walk(sub, f"{where}/{key}")

    walk(ui, "")
    return problems


def _english_problems(path: Path, english: Any, schema: dict) -> list[str]:
    if not isinstance(english, dict):
        return [f"{path}: English labels must be a JSON object of pointer -> text"]
    problems = []
    for pointer, text in english.items():
        if not isinstance(text, str):
            problems.append(f"{path}: {pointer}: the English text must be a string")
            continue
        try:
            target = _resolve_pointer(schema, pointer)
        except KeyError:
            problems.append(f"{path}: {pointer} does not point into the schema")
            continue
        if not isinstance(target, str):
            problems.append(f"{path}: {pointer} points at a {type(target).__name__},"
                            " not a text (use .../title or .../description)")
    return problems


def check_schema_file(path: Path | str) -> list[str]:
    """Problems with a form file (and its .uischema.json / .en.json siblings); [] = fine.

    Checks: the file exists; it is JSON (line/column given otherwise); it is a valid draft
    2020-12 JSON Schema; every ``format`` is known to :data:`FORMAT_CHECKER`; ``$ref``s are local
    and resolve; the uischema and English files, when present, parse and refer to things the
    schema has.
    """
    path = Path(path)
    if not path.is_file():
        return [f"form file not found: {path}"]
    schema, problem = _read_json(path)
    if problem:
        return [problem]
    problems = _schema_problems(path, schema)
    if problems:
        return problems
    for suffix, checker in ((".uischema.json", _ui_problems), (".en.json", _english_problems)):
        sib = _sibling(path, suffix)
        if sib is not None and sib.is_file():
            data, problem = _read_json(sib)
            problems.extend([problem] if problem else checker(sib, data, schema))
    return problems


# --------------------------------------------------------------------------- store

_PROCESS_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _safe_relative(value: str, what: str) -> list[str]:
    if not isinstance(value, str) or not value:
        raise UnsafeFormPath(str(value), f"empty {what}")
    if "\x00" in value or "\\" in value:
        raise UnsafeFormPath(value, f"{what} must not contain NUL or backslashes")
    if value.startswith("/") or re.match(r"^[A-Za-z]:", value):
        raise UnsafeFormPath(value, f"{what} must be relative, not absolute")
    parts = value.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise UnsafeFormPath(value, f"{what} must not contain '..', '.' or empty segments")
    return parts


class FormStore:
    """Loads forms from ``forms_dir`` (``forms/``), caching each by path and modification time."""

    # Shared by every store in the process: checking a schema against the meta-schema costs ~75 ms.
    _cache: dict[Path, tuple[tuple, Form]] = {}
    _lock = threading.Lock()

    def __init__(self, forms_dir: Path | str, recheck_seconds: float = 1.0):
        self.forms_dir = Path(forms_dir)
        self.recheck_seconds = recheck_seconds

    def resolve(self, process_id: str, filename: str) -> Path:
        """The file a ``formJsonSchemaFilename`` names; raises UnsafeFormPath when unsafe."""
        if not isinstance(process_id, str) or not _PROCESS_ID_RE.match(process_id) \
                or process_id in (".", ".."):
            raise UnsafeFormPath(str(process_id), "not a valid process id")
        parts = _safe_relative(filename, "form filename")
        base = self.forms_dir if "/" in filename else self.forms_dir / process_id
        path = base.joinpath(*parts)
        root = self.forms_dir.resolve()
        real = path.resolve()
        if real != root and root not in real.parents:
            raise UnsafeFormPath(filename, "resolves outside the forms directory")
        return path

    # A form file is checked for changes (three stats) at most once a second (recheck_seconds) per
    # process: a task completion loads its form, and the checks cost more than the rest of the look-up.
    _resolved: dict = {}
    _checked: dict = {}

    def load(self, process_id: str, filename: str) -> Form:
        import time
        where = (self.forms_dir, process_id, filename)
        path = self._resolved.get(where)
        if path is None:
            path = self.resolve(process_id, filename)
            self._resolved[where] = path
        now = time.monotonic()
        checked = self._checked.get(path)
        if checked is not None and now - checked[0] < self.recheck_seconds:
            return checked[1]
        form = self._load_checked(path)
        self._checked[path] = (now, form)
        return form

    def _load_checked(self, path: Path) -> Form:
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise FormNotFound(path) from None
        siblings = [_sibling(path, ".uischema.json"), _sibling(path, ".en.json")]
        key = (stat.st_mtime_ns, stat.st_size) + tuple(
            (s.stat().st_mtime_ns, s.stat().st_size) if s is not None and s.is_file() else None
            for s in siblings)
        with self._lock:
            hit = self._cache.get(path)
            if hit and hit[0] == key:
                return hit[1]
        form = self._read(path, siblings)
        with self._lock:
            self._cache[path] = (key, form)
        return form

    @staticmethod
    def _read(path: Path, siblings: list[Path | None]) -> Form:
        schema, problem = _read_json(path)
        if problem:
            raise FormFileInvalid(path, [problem])
        problems = _schema_problems(path, schema)
        if problems:
            raise FormFileInvalid(path, problems)
        loaded: list[dict] = []
        for sib in siblings:
            if sib is None or not sib.is_file():
                loaded.append({})
                continue
            data, problem = _read_json(sib)
            if problem or not isinstance(data, dict):
                raise FormFileInvalid(sib, [problem or f"{sib}: must be a JSON object"])
            loaded.append(data)
        return Form(schema, loaded[0], loaded[1], path)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
            self._checked.clear()
            self._resolved.clear()
