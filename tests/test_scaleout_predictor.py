"""The engine-neutral batch predictor: any batch size, the engines' dtypes, fixed-batch models, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import ATOL, RTOL
from scaleout_models import MIXING_BATCH, mixing_model, rows_data, rows_expected, save_models
from tfaccel.errors import ExportError, InputTypeError, InputValueError
from tfaccel.scaleout.predictor import BatchPredictor, describe

BACKENDS = ["openvino", "xla"]


@pytest.fixture(scope="module", params=BACKENDS)
def saved(request, tmp_path_factory):
    return save_models(tmp_path_factory.mktemp(f"predictor-{request.param}"), request.param)


@pytest.fixture(scope="module")
def rows_predictor(saved):
    return BatchPredictor(saved.rows)


def _check(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(expected)
    for name, value in expected.items():
        assert got[name].shape == value.shape, name
        np.testing.assert_allclose(got[name], value, rtol=RTOL, atol=ATOL, err_msg=name)


def test_describe_reads_names_dtypes_and_row_shapes_without_loading(saved):
    columns = describe(saved.rows)
    assert [(c.name, c.dtype.name, c.row_shape) for c in columns.inputs] == [
        ("features", "float32", (6,)),
        ("ids", "int32", ()),
    ]
    assert [(c.name, c.dtype.name, c.row_shape) for c in columns.outputs] == [
        ("scores", "float32", (3,)),
        ("total", "float32", ()),
    ]
    assert columns.fixed_batch is None
    mixing = describe(saved.mixing)
    assert mixing.fixed_batch == MIXING_BATCH
    assert "rows" in mixing.fixed_why  # the batch analysis' reason: the model mixes rows


@pytest.mark.parametrize("rows", [1, 2, 3, 7, 64])
def test_any_batch_size_gives_the_original_answers(rows_predictor, rows):
    data = rows_data(rows, seed=rows)
    _check(rows_predictor.predict(data), rows_expected(data))


def test_max_rows_splits_a_batch_into_calls_with_the_same_answers(saved):
    data = rows_data(10, seed=3)
    _check(BatchPredictor(saved.rows, max_rows=3).predict(data), rows_expected(data))


def test_engine_dtypes_convert_when_no_value_changes(rows_predictor):
    data = rows_data(5, seed=4)
    wide = {"features": data["features"].astype(np.float64), "ids": data["ids"].astype(np.int64)}
    _check(rows_predictor.predict(wide), rows_expected(data))
    # a pandas/Arrow tensor column: an object array of per-row arrays
    rows = np.empty(5, dtype=object)
    for i in range(5):
        rows[i] = data["features"][i].astype(np.float64)
    _check(rows_predictor.predict({"features": rows, "ids": data["ids"]}), rows_expected(data))


def test_extra_columns_are_ignored(rows_predictor):
    data = rows_data(4, seed=5)
    _check(rows_predictor.predict({**data, "id": np.arange(4)}), rows_expected(data))


def test_an_empty_batch_gives_empty_outputs(rows_predictor):
    out = rows_predictor.predict(rows_data(0))
    assert out["scores"].shape == (0, 3) and out["total"].shape == (0,)


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (
            lambda d: {"features": d["features"]},
            InputValueError,
            r"no column 'ids'.*takes \['features', 'ids'\]",
        ),
        (
            lambda d: {**d, "ids": d["ids"].astype(np.int64) + 2**40},
            InputValueError,
            r"column 'ids' has values outside int32's range",
        ),
        (
            lambda d: {**d, "ids": d["ids"].astype(np.float32)},
            InputTypeError,
            r"column 'ids' is float32.*int32",
        ),
        (
            lambda d: {**d, "features": d["features"][:, :5]},
            InputValueError,
            r"column 'features' has shape \[4, 5\]",
        ),
        (lambda d: {**d, "ids": d["ids"][:3]}, InputValueError, r"different numbers of rows"),
        # a round trip int64 -> int32 -> int64 would not catch a wrap that comes back the same way
        (lambda d: {**d, "ids": np.full(4, 2**32 - 1, np.uint32)}, InputValueError, r"outside int32's range"),
    ],
    ids=["missing", "overflow", "float-for-int", "row-shape", "rows-disagree", "sign-wrap"],
)
def test_bad_columns_are_refused_with_the_column_named(rows_predictor, change, error, message):
    with pytest.raises(error, match=message):
        rows_predictor.predict(change(rows_data(4)))


def test_a_fixed_batch_model_takes_exactly_its_batch_and_refuses_others_with_the_reason(saved):
    predictor = BatchPredictor(saved.mixing)
    x = np.random.default_rng(6).normal(size=(MIXING_BATCH, 6)).astype(np.float32)
    got = predictor.predict({"x": x})
    (name,) = got
    np.testing.assert_allclose(got[name], mixing_model(x).numpy(), rtol=RTOL, atol=ATOL)
    # padding 3 rows to 4, or running 8 as two calls, would give other answers than the original on these
    # rows: refused, with the batch analysis' reason and what to do
    for rows in (MIXING_BATCH - 1, 2 * MIXING_BATCH):
        with pytest.raises(
            InputValueError, match=rf"exactly {MIXING_BATCH} rows: .*rows.*dynamic_batch_size"
        ):
            predictor.predict({"x": np.ones((rows, 6), np.float32)})


def test_a_directory_that_is_not_a_traced_model_is_refused(tmp_path, saved):
    with pytest.raises(ExportError, match="not saved by tfaccel"):
        describe(tmp_path)
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(saved.rows, broken)
    (broken / "saved_model.pb").write_bytes(b"\x00garbage")
    with pytest.raises(ExportError, match="no readable serving_default signature"):
        describe(broken)
