"""The placement report is typed and its JSON is the saved models' format: it round-trips to an equal object,
older files still load, and a record of the wrong shape is refused with an error that names it.

The JSON is what ``assets.extra/tfaccel.json`` holds, a file anyone can edit, so ``from_json`` is tested
on edited records (unit level) and through ``tfaccel.load``/``tfaccel.load_report`` (a saved model).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

import tfaccel
from tfaccel.compiler.placement import Decision, Placement, Reason
from tfaccel.compiler.report import DecisionRow, PlacementReport, SubgraphSummary
from tfaccel.compiler.selection import Measurement
from tfaccel.errors import ExportError


def _report() -> PlacementReport:
    decisions = {
        "x": Decision("x", "Placeholder", Placement.RUNTIME, Reason.STRUCTURAL, "graph input"),
        "mm": Decision("mm", "MatMul", Placement.ACCELERATOR, Reason.MEASURED, "sg: faster", "xla"),
        "txt": Decision("txt", "AsString", Placement.RUNTIME, Reason.DTYPE, "its output dtype string"),
        "relu": Decision("relu", "Relu", Placement.RUNTIME, Reason.SLOWER, "sg_1: not faster"),
    }
    return PlacementReport.build(
        "xla",
        decisions,
        [SubgraphSummary("tfaccel_sg_0", "xla", ("mm",), 1, 1, 1)],
        {"x": False, "mm": True, "txt": True, "relu": True},
        ["a fallback sentence"],
        options="--backend=xla",
        placement="profile",
        measurements=[
            Measurement("tfaccel_sg_0", 1, {"tf": 2.0, "xla": 1.0}, {}, "xla", "faster", 9),
            Measurement("tfaccel_sg_1", 1, {"tf": 1.0}, {"xla": "refused"}, None, "not faster", 9),
        ],
        profile_seconds=1.5,
    )


def test_build_gives_typed_rows_and_counts():
    report = _report()
    assert all(isinstance(r, DecisionRow) for r in report.decisions)
    rows = {r.node: r for r in report.decisions}
    assert rows["mm"].placement is Placement.ACCELERATOR and rows["mm"].subgraph == "tfaccel_sg_0"
    assert rows["txt"].placement is Placement.RUNTIME and rows["txt"].reason is Reason.DTYPE
    assert (report.accelerated_ops, report.total_ops) == (1, 3)
    assert report.placement == "profile" and report.profile_seconds == 1.5
    assert [m.chosen for m in report.measurements] == ["xla", None]


def test_summary_and_html_page_list_the_same_kept_groups_largest_first():
    """One grouping (``kept_groups``) feeds both views, so they cannot disagree about what stayed on TF."""
    decisions = {
        f"s{i}": Decision(f"s{i}", "AsString", Placement.RUNTIME, Reason.DTYPE, "string") for i in range(3)
    }
    decisions.update(
        {
            "u": Decision("u", "Unique", Placement.RUNTIME, Reason.UNKNOWN_SHAPE, "data-dependent shape"),
            "mm": Decision("mm", "MatMul", Placement.ACCELERATOR, Reason.SUPPORTED, "", "xla"),
            "mm2": Decision("mm2", "MatMul", Placement.ACCELERATOR, Reason.SUPPORTED, "", "xla"),
        }
    )
    report = PlacementReport.build(
        "xla",
        decisions,
        [SubgraphSummary("tfaccel_sg_0", "xla", ("mm", "mm2"), 2, 1, 1)],
        dict.fromkeys(decisions, True),
        [],
        options="--backend=xla",
        placement="static",
    )
    groups = report.kept_groups()
    assert [(g.op, g.reason, g.nodes) for g in groups] == [
        ("AsString", Reason.DTYPE, ("s0", "s1", "s2")),
        ("Unique", Reason.UNKNOWN_SHAPE, ("u",)),
    ]
    assert report.op_types() == {"tfaccel_sg_0": {"MatMul": 2}}
    lines: list[str] = []
    report.render(lines.append)
    text = "\n".join(lines)
    assert "ops kept on the TensorFlow runtime: 4" in text
    assert text.index("AsString") < text.index("Unique")
    page = report.to_html()
    assert "Kept on TensorFlow (4 ops)" in page and "MatMul &times;2" in page
    assert page.index(">AsString<") < page.index(">Unique<")
    assert ">unknown_shape<" in page and ">dtype<" in page


def test_the_report_round_trips_through_json_to_an_equal_typed_object():
    report = _report()
    data = json.loads(json.dumps(report.to_json()))
    again = PlacementReport.from_json(data)
    assert again == report
    assert again.to_json() == report.to_json()


def test_the_json_format_is_the_saved_models_format():
    """The exact keys and values a saved ``tfaccel.json`` holds (a change here breaks saved models)."""
    data = _report().to_json()
    assert list(data) == [
        "backend",
        "on_neuron_ratio",
        "accelerated_ops",
        "total_ops",
        "subgraphs",
        "nodes",
        "fallbacks",
        "options",
        "placement",
        "measurements",
        "profile_seconds",
        "guard",  # added with the whole-model check (absent in older files, read as None)
        "batch",  # added with automatic dynamic batch (absent in older files, read as "")
    ]
    assert data["guard"] is None and data["batch"] == ""
    assert data["nodes"][1] == {
        "node": "mm",
        "op": "MatMul",
        "placement": "accelerator",
        "reason": "measured",
        "detail": "sg: faster",
        "subgraph": "tfaccel_sg_0",
        "counted": True,
    }
    assert data["nodes"][2]["placement"] == "runtime" and data["nodes"][2]["subgraph"] is None
    assert data["subgraphs"] == [
        {"name": "tfaccel_sg_0", "backend": "xla", "nodes": ["mm"], "op_count": 1, "inputs": 1, "outputs": 1}
    ]
    assert data["measurements"][1] == {
        "subgraph": "tfaccel_sg_1",
        "ops": 1,
        "times_ms": {"tf": 1.0},
        "failed": {"xla": "refused"},
        "chosen": None,
        "why": "not faster",
        "runs": 9,
        "estimates": {},  # each variant's lower quartile and interval (empty: written by hand here)
        "source": "measured",
    }
    assert data["on_neuron_ratio"] == pytest.approx(1 / 3)


def test_a_report_saved_by_the_first_tfaccel_still_loads():
    """The first format had no options, placement or measurements (and a measurement, at first, only
    its subgraph, ops and times)."""
    data = _report().to_json()
    for key in ("fallbacks", "options", "placement", "measurements", "profile_seconds"):
        del data[key]
    old = PlacementReport.from_json(data)
    assert (old.fallbacks, old.options, old.placement, old.measurements) == ((), "", "static", ())
    assert old.decisions == _report().decisions
    sparse = Measurement.from_json({"subgraph": "s", "ops": 2, "times_ms": {"tf": 1}})
    assert sparse == Measurement("s", 2, {"tf": 1})


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]

    def edit(data: dict[str, Any]) -> None:
        target: Any = data
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return edit


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def edit(data: dict[str, Any]) -> None:
        target: Any = data
        for key in parents:
            target = target[int(key) if key.isdigit() else key]
        del target[last]

    return edit


#: (id, edit of the JSON, error type, what the message must say)
BAD_RECORDS: list[tuple[str, Callable[[dict[str, Any]], None], type[Exception], str]] = [
    ("row_a_string", _set("nodes.1", "mm"), TypeError, r"report.nodes\[1\] must be a JSON object, got str"),
    ("op_an_int", _set("nodes.1.op", 5), TypeError, r"report.nodes\[1\].op must be a string, got int 5"),
    ("row_lacks_op", _drop("nodes.1.op"), ValueError, r"report.nodes\[1\] lacks 'op'"),
    ("unknown_reason", _set("nodes.2.reason", "magic"), ValueError, r"nodes\[2\].reason is 'magic', not"),
    ("counted_a_string", _set("nodes.0.counted", "no"), TypeError, r"nodes\[0\].counted must be true or"),
    (
        "placement_disagrees",
        _set("nodes.1.placement", "runtime"),
        ValueError,
        r"nodes\[1\].placement is 'runtime' but its subgraph is 'tfaccel_sg_0'",
    ),
    ("nodes_a_map", _set("nodes", {}), TypeError, r"report.nodes must be a JSON array, got dict"),
    ("count_a_bool", _set("total_ops", True), TypeError, r"report.total_ops must be an integer, got bool"),
    ("sub_nodes_ints", _set("subgraphs.0.nodes", [1]), TypeError, r"subgraphs\[0\].nodes\[0\] must be a str"),
    ("time_a_string", _set("measurements.0.times_ms.tf", "2"), TypeError, r"times_ms\['tf'\] must be a num"),
    ("chosen_an_int", _set("measurements.1.chosen", 0), TypeError, r"measurements\[1\].chosen must be a str"),
    ("fallback_a_map", _set("fallbacks", [{}]), TypeError, r"report.fallbacks\[0\] must be a string"),
    ("seconds_a_string", _set("profile_seconds", "1"), TypeError, r"report.profile_seconds must be a number"),
]


@pytest.mark.parametrize("edit,error,pattern", [pytest.param(*c[1:], id=c[0]) for c in BAD_RECORDS])
def test_a_record_of_the_wrong_shape_is_refused_with_its_place(edit, error, pattern):
    data = json.loads(json.dumps(_report().to_json()))
    edit(data)
    with pytest.raises(error, match=pattern):
        PlacementReport.from_json(data)
    with pytest.raises(TypeError, match=r"report must be a JSON object, got list"):
        PlacementReport.from_json([data])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "traced"
    w = tf.constant(np.random.default_rng(0).standard_normal((4, 4)), tf.float32)
    traced = tfaccel.trace(lambda x: tf.tanh(tf.matmul(x, w)), tf.random.uniform([2, 4]), backend="xla")
    traced.save(str(path))
    return traced, path


def test_a_saved_model_gives_back_the_report_it_was_traced_with(saved):
    traced, path = saved
    assert tfaccel.load_report(path) == traced.placement_report
    assert tfaccel.load(path).placement_report == traced.placement_report


def test_a_row_of_the_wrong_shape_in_tfaccel_json_is_a_clear_export_error(saved, tmp_path):
    _, path = saved
    copy_dir = tmp_path / "edited"
    shutil.copytree(path, copy_dir)
    meta_file = copy_dir / "assets.extra" / "tfaccel.json"
    meta = json.loads(meta_file.read_text())
    meta["report"]["nodes"][0]["op"] = ["MatMul"]
    meta_file.write_text(json.dumps(meta))
    said = r"tfaccel.json is malformed \(TypeError: report.nodes\[0\].op must be a string, got list"
    with pytest.raises(ExportError, match=said + r".*save the traced model again"):
        tfaccel.load_report(copy_dir)
    with pytest.raises(ExportError, match=said):
        tfaccel.load(copy_dir)
