"""engine.forms: loading, domain formats, bilingual validation messages, coercion, file checks."""
from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import pytest
from werkzeug.datastructures import MultiDict

from engine.errors import InvalidFormData
from engine.forms import (
    FORMAT_CHECKER, Form, FormFileInvalid, FormNotFound, FormStore, UnsafeFormPath,
    cas_check_digit, check_schema_file, coerce, division_codes, is_valid_cas, is_valid_uscc,
    uscc_check_character, uscc_problem,
)

FORMS = Path(__file__).resolve().parents[1] / "data" / "forms"
DEMO = FORMS / "demo_process" / "emission_disclosure.schema.json"

# Known valid codes: the GB 32100-2015 example and a real Shanghai company's code.
KNOWN_USCC = ["91350100M000100Y43", "9131000071785090X1"]


def make_uscc(first17: str) -> str:
    return first17 + uscc_check_character(first17)


URUMQI_USCC = make_uscc("91650102MA7XYW123")   # Tianshan District, Urumqi


@pytest.fixture(scope="module")
def store() -> FormStore:
    return FormStore(FORMS)


@pytest.fixture(scope="module")
def form(store) -> Form:
    return store.load("demo_process", "emission_disclosure.schema.json")


def valid_data() -> dict:
    return {
        "enterprise_name": "新疆某某化工有限公司",
        "uscc": URUMQI_USCC,
        "legal_representative": "张三",
        "address": "乌鲁木齐市天山区某某路1号",
        "division_code": "650102",
        "media": "新疆日报",
        "disclosure_date": "2025-03-01",
        "reporting_year": 2024,
        "pollutants": [
            {"name": "化学需氧量", "medium": "water", "discharge_mode": "有组织连续排放",
             "concentration": 45.2, "unit": "mg/L", "standard_limit": 60,
             "annual_total_t": 12.5, "quota_t": 15, "exceeds": False, "over_quota": False},
            {"name": "二氧化硫", "medium": "air", "discharge_mode": "有组织连续排放",
             "concentration": 180, "unit": "mg/m³", "standard_limit": 200,
             "annual_total_t": 30.1, "quota_t": 28, "exceeds": False, "over_quota": True},
        ],
    }


def errors_of(form: Form, data: dict, lang: str) -> dict[str, list[str]]:
    with pytest.raises(InvalidFormData) as info:
        form.validate(data, lang=lang)
    return info.value.errors


# --------------------------------------------------------------------------- USCC

@pytest.mark.parametrize("code", KNOWN_USCC)
def test_known_uscc_codes_validate(code):
    assert uscc_check_character(code[:17]) == code[17]
    assert is_valid_uscc(code)
    assert FORMAT_CHECKER.conforms(code, "uscc")


def test_computed_uscc_codes_validate():
    for first17 in ["91650102MA7XYW123", "12650000000000000", "5265010000000000A", "Y1652301ABCDEFGH0"]:
        code = make_uscc(first17)
        assert len(code) == 18 and is_valid_uscc(code), code


def test_uscc_check_character_maps_31_to_0():
    # find a body whose weighted sum is a multiple of 31: check must be "0", never out of range
    body = "9165010200000000"
    for ch in "0123456789ABCDEFGHJKLMNPQRTUWXY":
        first17 = body + ch
        check = uscc_check_character(first17)
        assert check in "0123456789ABCDEFGHJKLMNPQRTUWXY"
    zero = [body + ch for ch in "0123456789ABCDEFGHJKLMNPQRTUWXY"
            if uscc_check_character(body + ch) == "0"]
    assert len(zero) == 1


def test_uscc_problems():
    good = KNOWN_USCC[0]
    assert uscc_problem(good) is None
    wrong_check = good[:17] + ("4" if good[17] != "4" else "5")
    assert not is_valid_uscc(wrong_check)
    assert "校验码" in uscc_problem(wrong_check).zh
    assert "check character" in uscc_problem(wrong_check).en
    assert not is_valid_uscc(good[:17])
    assert not is_valid_uscc(good.lower())
    problem = uscc_problem("91350100I000100Y43")        # I is not in the charset
    assert problem and "I" in problem.zh and "I" in problem.en
    problem = uscc_problem("9135A100M000100Y43")        # characters 3-8 not digits
    assert problem and "3" in problem.zh and "division" in problem.en
    with pytest.raises(ValueError):
        uscc_check_character("123")


# --------------------------------------------------------------------------- other formats

def test_cas_format():
    assert cas_check_digit("773218") == 5                 # water 7732-18-5
    for good in ["7732-18-5", "64-17-5", "7647-01-0", "50-00-0"]:
        assert is_valid_cas(good), good
        assert FORMAT_CHECKER.conforms(good, "cas")
    for bad in ["7732-18-4", "7732185", "1-23-4", "64-17-X"]:
        assert not is_valid_cas(bad), bad
        assert not FORMAT_CHECKER.conforms(bad, "cas")


def test_division_date_amount_formats():
    assert "650000" in division_codes() and "650102" in division_codes()
    assert FORMAT_CHECKER.conforms("652301", "division-code")
    assert not FORMAT_CHECKER.conforms("659999", "division-code")
    assert not FORMAT_CHECKER.conforms("350100", "division-code")
    assert not FORMAT_CHECKER.conforms("65010", "division-code")
    assert FORMAT_CHECKER.conforms("2024-02-29", "date")
    for bad in ["2023-02-29", "2025/03/01", "20250301", "2025-3-1"]:
        assert not FORMAT_CHECKER.conforms(bad, "date"), bad
    assert FORMAT_CHECKER.conforms("2025-03-31T23:59:59+08:00", "date-time")
    assert FORMAT_CHECKER.conforms("2025-03-31T15:59:59Z", "date-time")
    for bad in ["2025-03-31T23:59:59", "2025-03-31", "2025-02-30T10:00:00+08:00"]:
        assert not FORMAT_CHECKER.conforms(bad, "date-time"), bad
    assert FORMAT_CHECKER.conforms("12.50", "amount")
    assert FORMAT_CHECKER.conforms("0", "amount")
    for bad in ["-1", "1,000", "abc", ""]:
        assert not FORMAT_CHECKER.conforms(bad, "amount"), bad


# --------------------------------------------------------------------------- loading

def test_load_form_labels_and_ui(form, store):
    assert form.path == DEMO
    assert form.title("zh") == "主要污染物排放情况公布"
    assert form.title("en") == "Disclosure of main pollutant emissions"
    assert "第十条" in form.description("zh") and "Art. 10" in form.description("en")
    assert form.label("/properties/uscc/title", "zh") == "统一社会信用代码"
    assert form.label("/properties/uscc", "en") == "Unified social credit code"
    assert form.label("uscc", "en") == "Unified social credit code"
    assert form.label("pollutants/1/concentration", "zh") == "主要污染物排放情况 第2行 排放浓度"
    assert form.label("pollutants/1/concentration", "en") == "Main pollutants, row 2, Concentration"
    assert form.field_order()[:3] == ["enterprise_name", "uscc", "legal_representative"]
    assert set(form.field_order()) == set(form.schema["properties"])
    assert form.ui("remarks") == {"ui:widget": "textarea"}
    assert form.ui("pollutants/0/medium") == {"ui:widget": "select"}
    assert store.load("demo_process", "emission_disclosure.schema.json") is form   # cached


def test_filename_with_slash_is_relative_to_forms_dir(store, form):
    other = store.load("another_process", "demo_process/emission_disclosure.schema.json")
    assert other.path == DEMO
    assert other.schema == form.schema


@pytest.mark.parametrize("filename", [
    "../demo_process/emission_disclosure.schema.json",
    "demo_process/../../secret.schema.json",
    "/etc/passwd",
    "..",
    "sub//x.schema.json",
    "./emission_disclosure.schema.json",
    "..\\x.schema.json",
    "",
])
def test_path_traversal_is_refused(store, filename):
    with pytest.raises(UnsafeFormPath) as info:
        store.load("demo_process", filename)
    assert "refused" in str(info.value)


@pytest.mark.parametrize("process_id", ["..", "../x", "a/b", "", "/abs"])
def test_bad_process_id_is_refused(store, process_id):
    with pytest.raises(UnsafeFormPath):
        store.load(process_id, "emission_disclosure.schema.json")


def test_symlink_out_of_forms_dir_is_refused(tmp_path):
    forms = tmp_path / "forms" / "p"
    forms.mkdir(parents=True)
    outside = tmp_path / "outside.schema.json"
    outside.write_text('{"type": "object"}', encoding="utf-8")
    os.symlink(outside, forms / "x.schema.json")
    with pytest.raises(UnsafeFormPath):
        FormStore(tmp_path / "forms").load("p", "x.schema.json")


def test_missing_form_raises_form_not_found(store):
    with pytest.raises(FormNotFound):
        store.load("demo_process", "nope.schema.json")


def test_cache_reloads_on_change(tmp_path):
    d = tmp_path / "p"
    d.mkdir()
    f = d / "t.schema.json"
    f.write_text(json.dumps({"title": "甲", "type": "object"}), encoding="utf-8")
    s = FormStore(tmp_path, recheck_seconds=0)  # (the default looks for changes once a second)
    first = s.load("p", "t.schema.json")
    assert s.load("p", "t.schema.json") is first
    f.write_text(json.dumps({"title": "乙乙", "type": "object"}), encoding="utf-8")
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    second = s.load("p", "t.schema.json")
    assert second is not first and second.title() == "乙乙"
    (d / "t.en.json").write_text(json.dumps({"/title": "B"}), encoding="utf-8")
    assert s.load("p", "t.schema.json").title("en") == "B"


def test_a_changed_form_is_picked_up_within_a_second(tmp_path, monkeypatch):
    import time
    d = tmp_path / "p"
    d.mkdir()
    f = d / "t.schema.json"
    f.write_text(json.dumps({"title": "甲", "type": "object"}), encoding="utf-8")
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    s = FormStore(tmp_path)
    assert s.load("p", "t.schema.json").title() == "甲"
    f.write_text(json.dumps({"title": "乙乙", "type": "object"}), encoding="utf-8")
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    now[0] += 0.5
    assert s.load("p", "t.schema.json").title() == "甲"  # not looked at again yet
    now[0] += 0.6
    assert s.load("p", "t.schema.json").title() == "乙乙"


def test_loading_a_broken_form_raises(tmp_path):
    d = tmp_path / "p"
    d.mkdir()
    (d / "t.schema.json").write_text('{"type": "objekt"}', encoding="utf-8")
    with pytest.raises(FormFileInvalid) as info:
        FormStore(tmp_path).load("p", "t.schema.json")
    assert info.value.problems


# --------------------------------------------------------------------------- validation

def test_valid_data_passes(form):
    data = valid_data()
    assert form.validate(data) is data
    assert form.check(data) == {}


def test_missing_required_field(form):
    data = valid_data()
    del data["legal_representative"]
    assert errors_of(form, data, "zh") == {"legal_representative": ["法定代表人：必填"]}
    assert errors_of(form, data, "en") == {"legal_representative": ["Legal representative: required"]}


def test_missing_field_in_a_row(form):
    data = valid_data()
    del data["pollutants"][0]["name"]
    assert errors_of(form, data, "en") == {"pollutants/0/name": ["Main pollutants, row 1, Pollutant: required"]}


def test_uscc_wrong_length(form):
    data = valid_data()
    data["uscc"] = URUMQI_USCC[:17]
    zh = errors_of(form, data, "zh")
    en = errors_of(form, data, "en")
    assert list(zh) == ["uscc"]
    assert zh["uscc"] == ["统一社会信用代码：应为18位，实际为17位"]
    assert en["uscc"] == ["Unified social credit code: must be 18 characters, got 17"]


def test_uscc_wrong_check_character(form):
    data = valid_data()
    last = URUMQI_USCC[17]
    data["uscc"] = URUMQI_USCC[:17] + ("0" if last != "0" else "1")
    zh = errors_of(form, data, "zh")
    en = errors_of(form, data, "en")
    assert list(zh) == ["uscc"]
    assert zh["uscc"][0].startswith("统一社会信用代码：") and "校验码" in zh["uscc"][0]
    assert data["uscc"] in zh["uscc"][0]
    assert en["uscc"][0].startswith("Unified social credit code: ") and "check character" in en["uscc"][0]


def test_uscc_from_outside_xinjiang_is_accepted(form):
    data = valid_data()
    data["uscc"] = KNOWN_USCC[1]
    form.validate(data)


def test_unknown_division_code(form):
    data = valid_data()
    data["division_code"] = "659999"
    zh = errors_of(form, data, "zh")
    en = errors_of(form, data, "en")
    assert list(zh) == ["division_code"]
    assert zh["division_code"][0].startswith("所在地行政区划代码：") and "659999" in zh["division_code"][0]
    assert en["division_code"][0].startswith("Administrative division code: ")
    assert "659999" in en["division_code"][0]


def test_negative_concentration_in_row_two(form):
    data = valid_data()
    data["pollutants"][1]["concentration"] = -3.5
    zh = errors_of(form, data, "zh")
    en = errors_of(form, data, "en")
    assert list(zh) == ["pollutants/1/concentration"]
    assert zh["pollutants/1/concentration"] == ["主要污染物排放情况 第2行 排放浓度：不得小于 0，实际为 -3.5"]
    assert en["pollutants/1/concentration"] == ["Main pollutants, row 2, Concentration: must be at least 0, got -3.5"]


@pytest.mark.parametrize("bad", ["2025/03/01", "01-03-2025", "2025-3-1"])
def test_bad_date(form, bad):
    data = valid_data()
    data["disclosure_date"] = bad
    zh = errors_of(form, data, "zh")
    en = errors_of(form, data, "en")
    assert list(zh) == ["disclosure_date"]
    assert zh["disclosure_date"][0].startswith("公布日期：日期格式应为 YYYY-MM-DD")
    assert bad in zh["disclosure_date"][0]
    assert en["disclosure_date"][0].startswith("Date of publication: date must be in the form YYYY-MM-DD")


def test_impossible_date(form):
    data = valid_data()
    data["disclosure_date"] = "2025-02-30"
    assert "不是有效的日期" in errors_of(form, data, "zh")["disclosure_date"][0]


def test_medium_option_labels(form):
    data = valid_data()
    data["pollutants"][0]["medium"] = "soil"
    zh = errors_of(form, data, "zh")["pollutants/0/medium"][0]
    en = errors_of(form, data, "en")["pollutants/0/medium"][0]
    assert "废水、废气、固体废物" in zh and "soil" in zh
    assert "waste water, waste gas, solid waste" in en and "soil" in en


def test_several_errors_and_unknown_fields(form):
    data = valid_data()
    data["csrf_token"] = "x"
    data["pollutants"] = []
    data["reporting_year"] = "2024"
    errors = errors_of(form, data, "zh")
    assert errors[""] == ["不允许的字段：csrf_token"]
    assert errors["pollutants"] == ["主要污染物排放情况：至少需要1行，实际为0行"]
    assert errors["reporting_year"] == ["数据年度：应为整数，实际为 “2024”"]


def test_invalid_form_data_carries_both_languages(form):
    data = valid_data()
    del data["address"]
    with pytest.raises(InvalidFormData) as info:
        form.validate(data)
    exc = info.value
    assert exc.errors == {"address": ["企业所在地址：必填"]}
    assert exc.translations["en"] == {"address": ["Address: required"]}
    msg = exc.messages["address"][0]
    assert msg.text("zh", with_label=False) == "必填" and msg.label_en == "Address"


# --------------------------------------------------------------------------- coercion

def flat_submission() -> MultiDict:
    return MultiDict([
        ("csrf_token", "abc"),
        ("enterprise_name", " 新疆某某化工有限公司 "),
        ("uscc", URUMQI_USCC.lower()),
        ("legal_representative", "张三"),
        ("address", "乌鲁木齐市天山区某某路1号"),
        ("division_code", "650102"),
        ("media", "新疆日报"),
        ("disclosure_date", "2025-03-01"),
        ("reporting_year", "2024"),
        ("remarks", ""),
        # rows arrive out of order and with a gap; row 5 is an empty template row
        ("pollutants-1-name", "二氧化硫"),
        ("pollutants-1-medium", "air"),
        ("pollutants-1-discharge_mode", "有组织连续排放"),
        ("pollutants-1-concentration", "180"),
        ("pollutants-1-unit", "mg/m³"),
        ("pollutants-1-annual_total_t", "30.1"),
        ("pollutants-1-exceeds", "false"),
        ("pollutants-1-exceeds", "on"),
        ("pollutants-1-over_quota", "true"),
        ("pollutants-0-name", "化学需氧量"),
        ("pollutants-0-medium", "water"),
        ("pollutants-0-discharge_mode", "有组织连续排放"),
        ("pollutants-0-concentration", "12.5"),
        ("pollutants-0-unit", "mg/L"),
        ("pollutants-0-standard_limit", ""),
        ("pollutants-0-annual_total_t", "１２．５"),
        ("pollutants-5-name", ""),
        ("pollutants-5-concentration", ""),
    ])


def test_coerce_builds_rows_and_numbers(form):
    data = form.coerce(flat_submission())
    assert data == coerce(form, flat_submission())
    assert "csrf_token" not in data and "remarks" not in data
    assert data["enterprise_name"] == "新疆某某化工有限公司"
    assert data["uscc"] == URUMQI_USCC
    assert data["reporting_year"] == 2024
    rows = data["pollutants"]
    assert [r["name"] for r in rows] == ["化学需氧量", "二氧化硫"]
    assert rows[0]["concentration"] == 12.5 and isinstance(rows[0]["concentration"], float)
    assert rows[0]["annual_total_t"] == 12.5
    assert "standard_limit" not in rows[0]
    assert rows[0]["exceeds"] is False                 # unchecked checkbox
    assert "over_quota" not in rows[0]                 # radio left unanswered: not guessed
    assert rows[1]["concentration"] == 180
    assert rows[1]["exceeds"] is True and rows[1]["over_quota"] is True
    assert form.validate(data) is data


def test_coerce_failures_become_validation_messages(form):
    raw = flat_submission()
    raw["pollutants-1-concentration"] = "abc"
    raw["reporting_year"] = "2024.5"
    raw["legal_representative"] = "   "
    data = form.coerce(raw)
    assert data["pollutants"][1]["concentration"] == "abc"
    zh = errors_of(form, data, "zh")
    assert zh["pollutants/1/concentration"] == ["主要污染物排放情况 第2行 排放浓度：应为数字，实际为 “abc”"]
    assert zh["reporting_year"] == ["数据年度：应为整数，实际为 2024.5"]
    assert zh["legal_representative"] == ["法定代表人：必填"]
    en = errors_of(form, data, "en")
    assert en["pollutants/1/concentration"] == ['Main pollutants, row 2, Concentration: must be a number, got "abc"']


def test_coerce_plain_dict_and_structured_values(form):
    data = form.coerce({"reporting_year": "2023", "pollutants": valid_data()["pollutants"],
                        "disclosure_date": "2025-03-01"})
    assert data["reporting_year"] == 2023
    assert data["pollutants"] == valid_data()["pollutants"]
    assert form.coerce({"reporting_year": "nan"})["reporting_year"] == "nan"


def test_coerce_datetime_local_and_scalar_arrays():
    schema = {"type": "object", "properties": {
        "at": {"type": "string", "format": "date-time"},
        "tags": {"type": "array", "items": {"type": "integer"}},
        "contact": {"type": "object", "properties": {"phone": {"type": "string"},
                                                     "ext": {"type": "integer"}}},
    }}
    f = Form(schema)
    data = f.coerce(MultiDict([("at", "2025-03-31T23:59"), ("tags", "1"), ("tags", "2"),
                               ("tags", ""), ("contact-phone", "0991-1234567"), ("contact-ext", "12")]))
    assert data == {"at": "2025-03-31T23:59:00+08:00", "tags": [1, 2],
                    "contact": {"phone": "0991-1234567", "ext": 12}}
    f.validate(data)


# --------------------------------------------------------------------------- check_schema_file

def test_check_schema_file_accepts_the_fixture():
    assert check_schema_file(DEMO) == []


def test_check_schema_file_missing(tmp_path):
    problems = check_schema_file(tmp_path / "nope.schema.json")
    assert len(problems) == 1 and "not found" in problems[0]


def test_check_schema_file_not_json(tmp_path):
    f = tmp_path / "t.schema.json"
    f.write_text('{\n  "type": "object",\n  "title": "x",,\n}\n', encoding="utf-8")
    problems = check_schema_file(f)
    assert len(problems) == 1
    assert "not valid JSON" in problems[0] and "line 3" in problems[0] and "column" in problems[0]


def test_check_schema_file_invalid_schema(tmp_path):
    f = tmp_path / "t.schema.json"
    f.write_text(json.dumps({"type": "object", "properties": {
        "a": {"type": "strin"}, "b": {"minimum": "zero"}}}), encoding="utf-8")
    problems = check_schema_file(f)
    assert problems and all("not a valid JSON Schema" in p for p in problems)
    assert any("/properties/a/type" in p for p in problems)


def test_check_schema_file_unknown_format_and_bad_ref(tmp_path):
    f = tmp_path / "t.schema.json"
    f.write_text(json.dumps({"type": "object", "properties": {
        "format": {"type": "string", "format": "ucss"},          # a property *named* format
        "x": {"$ref": "#/$defs/missing"},
        "y": {"$ref": "https://example.org/s.json"},
    }}), encoding="utf-8")
    problems = check_schema_file(f)
    assert any("unknown format 'ucss'" in p and "/properties/format" in p for p in problems)
    assert any("points nowhere" in p for p in problems)
    assert any("only local $ref" in p for p in problems)
    assert len(problems) == 3


def test_check_schema_file_wrong_draft(tmp_path):
    f = tmp_path / "t.schema.json"
    f.write_text(json.dumps({"$schema": "http://json-schema.org/draft-07/schema#",
                             "type": "object"}), encoding="utf-8")
    assert any("2020-12" in p for p in check_schema_file(f))


def test_check_schema_file_checks_siblings(tmp_path):
    d = tmp_path / "p"
    shutil.copytree(DEMO.parent, d)
    f = d / DEMO.name
    assert check_schema_file(f) == []
    english = json.loads((d / "emission_disclosure.en.json").read_text(encoding="utf-8"))
    english["/properties/gone/title"] = "Gone"
    (d / "emission_disclosure.en.json").write_text(json.dumps(english), encoding="utf-8")
    ui = json.loads((d / "emission_disclosure.uischema.json").read_text(encoding="utf-8"))
    ui["ui:order"].append("nothing")
    ui["remarks"] = {"ui:widget": "wysiwyg"}
    (d / "emission_disclosure.uischema.json").write_text(json.dumps(ui), encoding="utf-8")
    problems = check_schema_file(f)
    assert any("/properties/gone/title" in p for p in problems)
    assert any("'nothing'" in p for p in problems)
    assert any("'wysiwyg'" in p for p in problems)
    (d / "emission_disclosure.en.json").write_text("{oops", encoding="utf-8")
    assert any("not valid JSON" in p and "line 1" in p for p in check_schema_file(f))


def test_schema_without_english_falls_back_to_chinese():
    schema = copy.deepcopy(json.loads(DEMO.read_text(encoding="utf-8")))
    f = Form(schema)
    assert f.title("en") == "主要污染物排放情况公布"
    data = valid_data()
    del data["media"]
    with pytest.raises(InvalidFormData) as info:
        f.validate(data, lang="en")
    assert info.value.errors == {"media": ["公布媒体: required"]}


def test_an_optional_table_left_empty_is_not_given():
    """Empty rows of an optional table (minItems 2) are no table at all; of a required one, no rows."""
    store = FormStore(Path(__file__).resolve().parents[2] / "forms")
    commission = store.load("mandatory_audit", "commission_agency.schema.json")
    raw = MultiDict([("audit_mode", "agency"), ("agency_id", "4"), ("contract_no", "HT-1"),
                     ("contract_date", "2026-11-29"), ("self_audit_team-0-name", ""),
                     ("self_audit_team-0-post", ""), ("self_audit_team-1-name", "")])
    data = commission.coerce(raw)
    assert "self_audit_team" not in data and commission.check(data) == {}
    disclosure = store.load("mandatory_audit", "publish_emissions.schema.json")
    assert disclosure.coerce(MultiDict([("pollutants-0-name", "")]))["pollutants"] == []


def test_coerce_rebuilds_rows_inside_rows():
    """`outer-<i>-inner-<j>-field` keys (propose_list: entries -> evidence / substances), recursively;
    empty rows at either level are dropped, values typed by the inner schema."""
    root = Path(__file__).resolve().parents[2] / "forms"
    form = FormStore(root).load("mandatory_listing", "propose_list.schema.json")
    raw = MultiDict([
        ("listing_ground", "exceeding"), ("entries-0-enterprise_id", "7"),
        ("entries-0-enterprise_name", "甲公司"), ("entries-0-credit_code", "91650102ma77a1b2cd"),
        ("entries-0-evidence-0-basis", "over_standard"), ("entries-0-evidence-0-pollutant", "COD"),
        ("entries-0-evidence-0-measured_value", "１２０.5"), ("entries-0-evidence-0-limit_value", "100"),
        ("entries-0-evidence-1-pollutant", ""), ("entries-0-evidence-1-measured_value", " "),  # the empty row
        ("entries-0-evidence-2-pollutant", "氨氮"), ("entries-0-evidence-2-measured_value", "x"),
        ("entries-0-substances-0-name", ""),                                   # untouched empty table
        ("entries-0-substances-0-hazards", ""),
        ("entries-1-enterprise_name", "乙公司"),
        ("entries-1-substances-0-name", "镉"), ("entries-1-substances-0-hazards", "highly_toxic"),
        ("entries-1-substances-0-hazards", "carcinogenic"), ("entries-1-substances-0-annual_quantity_t", "1.5"),
        ("entries-2-enterprise_name", ""), ("entries-2-evidence-0-pollutant", ""),   # an empty outer row
    ])
    data = coerce(form, raw)
    assert data["entries"] == [
        {"enterprise_id": 7, "enterprise_name": "甲公司", "credit_code": "91650102MA77A1B2CD",
         "evidence": [{"basis": "over_standard", "pollutant": "COD", "measured_value": 120.5, "limit_value": 100},
                      {"pollutant": "氨氮", "measured_value": "x"}]},
        {"enterprise_name": "乙公司",
         "substances": [{"name": "镉", "hazards": ["highly_toxic", "carcinogenic"], "annual_quantity_t": 1.5}]},
    ]
    # a value that does not convert is reported at its nested field
    problems = form.check(data)
    assert "entries/0/evidence/1/measured_value" in problems
    assert "entries/0/evidence/1/medium" in problems and "entries/1/credit_code" in problems


# --------------------------------------------------------------------------- the compiled validator
PROJECT_FORMS = Path(__file__).resolve().parents[2] / "forms"
_ODD_VALUES = [None, 0, -1, 1.5, True, "", "x" * 5000, "2024-02-30", "650102\n", "１２３", [], {}, [None], {"x": 1}]


def _samples(form: Form):
    """Data for a form: generated data, then each field (and each field of the first row of a
    list) replaced by odd values, removed, or joined by an unknown field."""
    from engine.bench import FormDataGenerator
    base = FormDataGenerator()._value(form.schema, form.schema, "")
    yield base
    yield {}
    if not isinstance(base, dict):
        return
    for key, value in base.items():
        for odd in _ODD_VALUES:
            yield {**base, key: odd}
        yield {k: v for k, v in base.items() if k != key}
        if isinstance(value, list) and value and isinstance(value[0], dict):
            for inner in value[0]:
                for odd in _ODD_VALUES:
                    yield {**base, key: [{**value[0], inner: odd}] + value[1:]}
    yield {**base, "unknown_field": 1}


def test_compiled_validator_agrees_with_jsonschema_on_every_project_form():
    """Form.check answers "valid" from jsonschema-rs only where jsonschema agrees: on every form of
    every process, over generated and broken data, it gives exactly jsonschema's problems."""
    store = FormStore(PROJECT_FORMS)
    schemas = sorted(PROJECT_FORMS.glob("*/*.schema.json"))
    assert len(schemas) > 50
    fast_valid = slow_invalid = 0
    for path in schemas:
        form = store.load(path.parent.name, path.name)
        assert form._fast is not None, f"{path}: jsonschema-rs could not compile the schema"
        reference = copy.copy(form)
        reference._fast = None  # jsonschema alone
        for sample in _samples(form):
            expected = reference.check(sample)
            assert form.check(sample) == expected, (path.name, sample)
            if form._fast.is_valid(sample):
                fast_valid += 1
                assert expected == {}, (path.name, sample)
            else:
                slow_invalid += 1
    assert fast_valid > 100 and slow_invalid > 1000, (fast_valid, slow_invalid)


def test_every_format_passes_values_that_are_not_text():
    """jsonschema-rs applies formats to strings only; the compiled validator relies on
    FORMAT_CHECKER's functions doing the same (else it would accept what jsonschema refuses)."""
    for name in FORMAT_CHECKER.checkers:
        for value in (0, 1.5, True, None, [], {}, ["x"], {"a": "b"}):
            assert FORMAT_CHECKER.conforms(value, name), (name, value)


def test_a_value_the_compiled_validator_cannot_read_is_checked_by_jsonschema(form):
    """jsonschema-rs refuses Python values that are not JSON (a date, a set): jsonschema describes them."""
    import datetime
    for odd in (datetime.date(2025, 3, 1), {"新疆日报"}):
        data = valid_data()
        data["media"] = odd
        with pytest.raises(ValueError):
            form._fast.is_valid(data)
        problems = form.check(data)
        assert list(problems) == ["media"]
        assert "文本" in problems["media"][0].zh
