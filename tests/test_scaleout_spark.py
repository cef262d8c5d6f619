"""Spark's predict_batch_udf on a real local[2] Spark, every row checked against the original.

One SparkSession for the module (a JVM, about 10 s); its Python workers are fresh processes that import
tfaccel and load the saved model once each, as on executors.
"""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pytest

from conftest import ATOL, RTOL
from scaleout_models import MIXING_BATCH, rows_data, rows_expected, save_models

pyspark = pytest.importorskip("pyspark")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("Spark needs Java (17 or later) on PATH or JAVA_HOME", allow_module_level=True)

BACKENDS = ["openvino", "xla"]


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[2]")
        .appName("tfaccel-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.executorEnv.TF_CPP_MIN_LOG_LEVEL", "3")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("spark-models")
    return {backend: save_models(root, backend) for backend in BACKENDS}


def _frame(spark, n: int, seed: int):
    data = rows_data(n, seed=seed)
    rows = [(i, data["features"][i].tolist(), int(data["ids"][i])) for i in range(n)]
    schema = "id long, features array<float>, ids int"
    return spark.createDataFrame(rows, schema).repartition(2), data


@pytest.mark.parametrize("backend", BACKENDS)
def test_udf_scores_every_row_on_executors(spark, saved, backend):
    from tfaccel.scaleout.spark import predict_batch_udf

    df, data = _frame(spark, 45, seed=21)
    score = predict_batch_udf(saved[backend].rows, batch_size=8)  # partitions end in a short batch
    rows = df.withColumn("out", score("features", "ids")).select("id", "out").collect()
    expected = rows_expected(data)
    assert sorted(r["id"] for r in rows) == list(range(45)), "every row once"
    for row in rows:
        i = row["id"]
        np.testing.assert_allclose(row["out"]["scores"], expected["scores"][i], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(row["out"]["total"], expected["total"][i], rtol=RTOL, atol=ATOL)


def test_the_return_type_comes_from_the_saved_model(saved):
    from pyspark.sql import types as T

    from tfaccel.scaleout.predictor import describe
    from tfaccel.scaleout.spark import spark_type

    columns = describe(saved["xla"].rows)
    assert [spark_type(c) for c in columns.outputs] == [
        T.ArrayType(T.FloatType()),
        T.FloatType(),
    ]


def test_a_fixed_batch_model_scores_whole_batches_and_refuses_a_short_one(spark, saved):
    from tfaccel.scaleout.spark import predict_batch_udf

    path = saved["openvino"].mixing
    with pytest.raises(ValueError, match=rf"exactly {MIXING_BATCH} rows.*batch_size must be {MIXING_BATCH}"):
        predict_batch_udf(path, batch_size=MIXING_BATCH + 1)
    score = predict_batch_udf(path)  # batch_size: the model's own
    rows = [(i, [float(i)] * 6) for i in range(MIXING_BATCH + 1)]
    df = spark.createDataFrame(rows, "id long, x array<float>").coalesce(1)
    with pytest.raises(Exception, match=rf"exactly {MIXING_BATCH} rows"):
        df.withColumn("out", score("x")).collect()
