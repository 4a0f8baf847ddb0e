"""Every form of forms/ can be drawn by the web UI, in Chinese and in English, without a gap."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORMS = sorted((ROOT / "forms").glob("*/*.schema.json"))
CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]")
DIVISIONS = {"division-code": [("650102", "650102")]}


def _texts(fields):
    for field in fields:
        yield field.label
        yield getattr(field, "description", "")
        yield from (text for _, text in getattr(field, "options", []))
        yield from _texts(getattr(field, "columns", []) or getattr(field, "fields", []))


@pytest.mark.parametrize("path", FORMS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_form_is_drawn_in_both_languages(path):
    from engine.forms import FormStore
    from webui.formview import FormView
    form = FormStore(ROOT / "forms").load(path.parent.name, path.name)
    for lang in ("zh", "en"):
        FormView(form, lang, {}, {}, choices=DIVISIONS).fields()
    english = [form.title("en"), form.description("en"),
               *_texts(FormView(form, "en", {}, {}, choices=DIVISIONS).fields())]
    untranslated = [text for text in english if text and CJK.search(text)]
    assert not untranslated, f"{path.name}: add these to its .en.json: {untranslated[:6]}"
