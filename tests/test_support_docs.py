"""``docs/supported-ops.md`` is generated from the backends' own support queries and must be current."""

from __future__ import annotations

from pathlib import Path

from tfaccel.backends.openvino import conversion_rules
from tfaccel.tools.support_docs import generate

DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "supported-ops.md"


def test_supported_ops_doc_is_current() -> None:
    expected = generate()
    current = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.exists() else ""
    assert current == expected, (
        f"{DOC_PATH} is stale (TensorFlow or OpenVINO changed what they support, or the generator "
        "changed): run `python -m tfaccel.tools.support_docs --write` and commit the result"
    )


def test_the_doc_agrees_with_the_backends_on_known_ops() -> None:
    rows = {
        line.split("|")[1].strip(" `"): [cell.strip() for cell in line.split("|")[2:5]]
        for line in DOC_PATH.read_text(encoding="utf-8").splitlines()
        if line.startswith("| `")
    }
    assert "f32" in rows["MatMul"][0] and "f32" in rows["MatMul"][1]  # both backends
    assert rows["DepthwiseConv2dNative"][2].startswith("xla: XLA:CPU runs depthwise")
    assert "Placeholder" not in rows and "Const" not in rows  # never placed
    assert "StringSplitV2" not in rows  # no backend takes it
    assert "f64" not in rows["Add"][1]  # openvino does not compute float64 exactly


def test_the_doc_states_openvinos_numeric_rules() -> None:
    """The op-by-op deviations tests/test_op_conformance.py measures show in the table (issue 16)."""
    rows = {
        line.split("|")[1].strip(" `"): [cell.strip() for cell in line.split("|")[2:5]]
        for line in DOC_PATH.read_text(encoding="utf-8").splitlines()
        if line.startswith("| `")
    }
    ov = {op: set(row[1].split(", ")) for op, row in rows.items()}
    assert "f32" not in ov["FloorMod"] and "u8" not in ov["FloorMod"]
    assert "values computed from shapes (OpenVINO divides them through float32)" in rows["FloorDiv"][2]
    assert "f32" not in ov["ArgMax"] and "i32" in ov["ArgMax"]
    assert not {"i8", "u8"} & ov["Mul"] and {"i16", "i32", "f32"} <= ov["Mul"]
    assert "NaN kept as in TF" in rows["Relu"][2] and "NaN kept as in TF" in rows["Maximum"][2]
    assert "through float32" in rows["Sum"][2]
    text = DOC_PATH.read_text(encoding="utf-8")
    assert "computes these dtypes in 32 bits" in text and "saturates where TF wraps" in text


def test_conversion_rules_ask_the_frontend() -> None:
    verdict = conversion_rules(["Relu", "Conv2D", "StringSplitV2", "Zeta"])
    assert verdict["Relu"] is None and verdict["Conv2D"] is None  # Conv2D: a rule, despite probe attrs
    assert verdict["StringSplitV2"] == verdict["Zeta"] == "no conversion rule"
