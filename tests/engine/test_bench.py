"""`cleanaudit bench` runs and reports every figure (at tiny sizes: this checks that it works, not how fast)."""
from __future__ import annotations

import io
import json

import pytest

from engine import bench

TINY = {"floor_updates": 5, "floor_instances": 2, "warmup_instances": 1, "instances": 2,
        "http_instances": 1, "inbox_rows": 300, "inbox_user_rows": 20, "inbox_queries": 3,
        "tick_waiting": 50, "tick_due": 5, "tick_idle_runs": 2, "loop_rounds": [2, 4, 8],
        "save_repeats": 1}


def run(sizes: dict) -> tuple[int, list[str], dict]:
    out = io.StringIO()
    code = bench.main(quick=True, sizes=sizes, out=out)
    lines = out.getvalue().strip().splitlines()
    return code, lines, json.loads(lines[-1])


@pytest.mark.parametrize("process", ["approval", "auto"])
def test_the_benchmark_prints_a_table_and_every_figure_as_the_last_line(process):
    code, lines, summary = run({**TINY, "process": process})
    assert code == 0
    for key in bench.KEYS:
        assert key in summary, key
        assert isinstance(summary[key], (int, float)), (key, summary[key])
    assert summary["mode"] == "quick"
    if process == "approval":
        assert summary["process"] == "approval"
    assert set(summary["targets"]) == {key for key, _, _ in bench.TARGETS}
    assert all(isinstance(v["holds"], bool) for v in summary["targets"].values())
    table = "\n".join(lines[:-1])
    for key in bench.KEYS:
        assert key in table
    assert summary["complete_ratio"] == pytest.approx(
        summary["complete_ms_p50"] / (summary["floor_engine_ms"] + summary["floor_update_ms"]), rel=0.01)


def test_sizes_come_from_the_environment(monkeypatch):
    monkeypatch.setenv(bench.SIZES_ENV, json.dumps({"instances": 7}))
    assert bench.resolve_sizes(True, None)["instances"] == 7
    assert bench.resolve_sizes(False, {"instances": 3})["instances"] == 3
    assert bench.resolve_sizes(True, None)["inbox_rows"] == 100_000


def test_form_data_is_generated_from_the_schema():
    from engine.forms import Form
    form = Form({"type": "object", "required": ["mode", "count", "code", "when", "rows"],
                 "properties": {
                     "mode": {"type": "string", "oneOf": [{"const": "a"}, {"const": "b"}]},
                     "count": {"type": "integer", "minimum": 3},
                     "code": {"type": "string", "format": "uscc"},
                     "when": {"type": "string", "format": "date"},
                     "rows": {"type": "array", "minItems": 2, "items": {
                         "type": "object", "required": ["cas"], "properties": {"cas": {"type": "string",
                                                                                        "format": "cas"}}}},
                     "note": {"type": "string"}},
                 "allOf": [{"if": {"properties": {"mode": {"const": "a"}}}, "then": {"required": ["note"]}}]})
    data = bench.FormDataGenerator().generate(form)
    assert data["mode"] == "a" and data["count"] == 3 and len(data["rows"]) == 2 and data["note"]
    assert form.check(data) == {}
    assert dict(bench.form_fields({"a": 1, "rows": [{"x": True}], "tags": ["p", "q"]})) == {
        "a": "1", "rows-0-x": "true", "tags": "q"}
