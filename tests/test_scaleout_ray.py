"""Ray Data's map_batches and Ray Serve on a real local Ray cluster, every row checked against the original.

The cluster starts once for the module (about 10 s); its workers are fresh processes that import tfaccel
and load the saved model themselves, as on a real cluster.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from conftest import ATOL, RTOL, free_ports
from scaleout_models import MIXING_BATCH, rows_data, rows_expected, save_models

ray = pytest.importorskip("ray")

BACKENDS = ["openvino", "xla"]


@pytest.fixture(scope="module")
def cluster():
    env = {"TF_CPP_MIN_LOG_LEVEL": "3", "TFACCEL_CACHE_DIR": os.environ.get("TFACCEL_CACHE_DIR", "")}
    # Serve kills its HTTP proxy when the proxy is not ready within 5 s (health checks: 10 s); on a machine
    # with every core busy (as the suite is also run) starting it takes longer. The cluster's processes
    # inherit these from this process.
    for name, seconds in (
        ("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "120"),
        ("RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S", "60"),
    ):
        os.environ.setdefault(name, seconds)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {k: v for k, v in env.items() if v}},
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    from ray import serve

    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def serve_port(cluster):
    from ray import serve

    (port,) = free_ports(1)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    return port


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray-models")
    return {backend: save_models(root, backend) for backend in BACKENDS}


def _check_rows(rows: list[dict], data: dict[str, np.ndarray]) -> None:
    expected = rows_expected(data)
    assert sorted(int(r["id"]) for r in rows) == list(range(len(data["ids"]))), "every row once"
    for row in rows:
        i = int(row["id"])
        np.testing.assert_allclose(row["scores"], expected["scores"][i], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(row["total"], expected["total"][i], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_map_batches_scores_every_row_on_workers(cluster, saved, backend):
    from tfaccel.scaleout.ray import TracedModelPredictor

    n = 53  # batches of 8: the last one holds 5 rows
    data = rows_data(n, seed=11)
    items = [{"id": i, "features": data["features"][i], "ids": int(data["ids"][i])} for i in range(n)]
    ds = ray.data.from_items(items, override_num_blocks=3)
    scored = ds.map_batches(
        TracedModelPredictor,
        fn_constructor_args=(saved[backend].rows,),
        fn_constructor_kwargs={"keep": ["id"]},
        batch_size=8,
        compute=ray.data.ActorPoolStrategy(size=2),
        batch_format="numpy",
    )
    rows = scored.take_all()
    assert set(rows[0]) == {"id", "scores", "total"}
    _check_rows(rows, data)


def test_map_batches_with_pandas_batches_and_renamed_columns(cluster, saved):
    from tfaccel.scaleout.ray import TracedModelPredictor

    n = 20
    data = rows_data(n, seed=12)
    items = [{"id": i, "x": data["features"][i], "token": int(data["ids"][i])} for i in range(n)]
    scored = ray.data.from_items(items).map_batches(
        TracedModelPredictor,
        fn_constructor_args=(saved["openvino"].rows,),
        fn_constructor_kwargs={"keep": ["id"], "columns": {"features": "x", "ids": "token"}},
        batch_size=6,
        compute=ray.data.ActorPoolStrategy(size=1),
        batch_format="pandas",
    )
    _check_rows(scored.take_all(), data)


def test_a_fixed_batch_model_on_uneven_batches_fails_the_job_with_the_reason(cluster, saved):
    from tfaccel.scaleout.ray import TracedModelPredictor

    items = [{"x": np.ones(6, np.float32)} for _ in range(MIXING_BATCH + 1)]
    scored = ray.data.from_items(items).map_batches(
        TracedModelPredictor,
        fn_constructor_args=(saved["xla"].mixing,),
        batch_size=MIXING_BATCH,
        compute=ray.data.ActorPoolStrategy(size=1),
        batch_format="numpy",
    )
    with pytest.raises(Exception, match=rf"exactly {MIXING_BATCH} rows"):
        scored.take_all()


def _post(url: str, body: object) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.parametrize("backend", BACKENDS)
def test_serve_batches_concurrent_requests_and_answers_each_as_tf_serving_does(serve_port, saved, backend):
    from ray import serve

    from tfaccel.scaleout.ray import serve_app

    port = serve_port
    try:
        handle = serve.run(
            serve_app(saved[backend].rows, max_batch_size=16, batch_wait_timeout_s=0.05),
            name=f"rows-{backend}",
            route_prefix="/rows",
        )
        url = f"http://127.0.0.1:{port}/rows"
        clients = 8
        data = [rows_data(2 + i % 3, seed=100 + i) for i in range(clients)]
        answers: list[tuple[int, dict] | None] = [None] * clients

        def ask(i: int) -> None:
            instances = [
                {"features": data[i]["features"][r].tolist(), "ids": int(data[i]["ids"][r])}
                for r in range(len(data[i]["ids"]))
            ]
            answers[i] = _post(url, {"instances": instances})

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        bad = _post(url, {"instances": [{"features": [1.0] * 6}]})  # no ids: refused alone
        for thread in threads:
            thread.join(120)
        for i, answer in enumerate(answers):
            assert answer is not None and answer[0] == 200, answer
            expected = rows_expected(data[i])
            predictions = answer[1]["predictions"]
            assert len(predictions) == len(data[i]["ids"])
            for r, row in enumerate(predictions):
                np.testing.assert_allclose(row["scores"], expected["scores"][r], rtol=RTOL, atol=ATOL)
                np.testing.assert_allclose(row["total"], expected["total"][r], rtol=RTOL, atol=ATOL)
        assert bad[0] == 400 and "ids" in bad[1]["error"], bad
        # the columnar format, and a handle call with arrays
        one = rows_data(3, seed=9)
        status, body = _post(url, {"inputs": {k: v.tolist() for k, v in one.items()}})
        assert status == 200
        np.testing.assert_allclose(
            body["outputs"]["total"], rows_expected(one)["total"], rtol=RTOL, atol=ATOL
        )
        got = handle.predict.remote(one).result()
        np.testing.assert_allclose(got["scores"], rows_expected(one)["scores"], rtol=RTOL, atol=ATOL)
    finally:
        serve.delete(f"rows-{backend}")


def test_serve_never_merges_requests_to_a_fixed_batch_model(serve_port, saved):
    from ray import serve

    from scaleout_models import mixing_model
    from tfaccel.scaleout.ray import serve_app

    serve.run(serve_app(saved["openvino"].mixing, max_batch_size=16), name="mixing", route_prefix="/mixing")
    try:
        url = f"http://127.0.0.1:{serve_port}/mixing"
        xs = [np.random.default_rng(i).normal(size=(MIXING_BATCH, 6)).astype(np.float32) for i in range(4)]
        answers: list[tuple[int, dict] | None] = [None] * len(xs)

        def ask(i: int) -> None:
            answers[i] = _post(url, {"inputs": xs[i].tolist()})

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(xs))]
        for thread in threads:
            thread.start()
        short = _post(url, {"inputs": xs[0][:3].tolist()})
        for thread in threads:
            thread.join(120)
        for x, answer in zip(xs, answers, strict=True):
            assert answer is not None and answer[0] == 200, answer
            # each request's rows centred on their own mean: merged requests would share one mean
            np.testing.assert_allclose(answer[1]["outputs"], mixing_model(x).numpy(), rtol=RTOL, atol=ATOL)
        assert short[0] == 400 and f"exactly {MIXING_BATCH} rows" in short[1]["error"], short
    finally:
        serve.delete("mixing")
