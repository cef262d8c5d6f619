"""Ray: a callable class for Ray Data's ``map_batches`` and a Ray Serve deployment, for a saved traced model.

Needs ``pip install 'tfaccel[ray]'`` on the driver and on every worker. Each worker process imports
tfaccel, which registers (building once per machine, into ``$TFACCEL_CACHE_DIR``) the OpenVINO op
library an openvino-traced model needs; a model traced with ``--backend=xla`` needs TensorFlow alone.

Batch inference::

    from tfaccel.scaleout.ray import TracedModelPredictor

    scores = ds.map_batches(
        TracedModelPredictor, fn_constructor_args=("traced_dir",), batch_size=64,
        compute=ray.data.ActorPoolStrategy(size=2),
    )

Serving (TF Serving's REST JSON body, Ray Serve batching requests together by rows)::

    from ray import serve
    from tfaccel.scaleout.ray import serve_app

    serve.run(serve_app("traced_dir", max_batch_size=32), route_prefix="/predict")

Why a class and not a function: Ray builds one instance per actor and calls it per batch, so the model
loads (and its subgraphs compile) once per worker, not once per batch.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from ray import serve

from tfaccel.errors import InputTypeError, InputValueError
from tfaccel.scaleout.predictor import BatchPredictor

__all__ = ["TracedModelPredictor", "TracedModelServer", "serve_app"]


class TracedModelPredictor:
    """For ``Dataset.map_batches``: scores each batch with the traced SavedModel at ``path``.

    ``columns`` maps the model's input names to the batch's column names where they differ (default: the
    same names). ``keep`` lists batch columns copied into the result next to the outputs (an id column,
    say); the result has one column per model output, named as in the serving signature. Batches may have
    any number of rows and come as numpy dicts or pandas frames.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        columns: Mapping[str, str] | None = None,
        keep: Sequence[str] = (),
        max_rows: int | None = None,
    ) -> None:
        self.predictor = BatchPredictor(path, max_rows=max_rows)
        self.columns = dict(columns or {})
        unknown = sorted(set(self.columns) - set(self.predictor.input_names))
        if unknown:
            raise ValueError(
                f"columns names {unknown}, which are not inputs of the model ({self.predictor.input_names})"
            )
        self.keep = tuple(keep)
        clash = sorted(set(self.keep) & set(self.predictor.output_names))
        if clash:
            raise ValueError(
                f"keep names {clash}, which are also output names of the model; rename the column"
            )

    def __call__(self, batch: Any) -> dict[str, np.ndarray]:
        table = _columns(batch)
        inputs = {name: table.get(self.columns.get(name, name)) for name in self.predictor.input_names}
        missing = [self.columns.get(n, n) for n, v in inputs.items() if v is None]
        if missing:
            raise ValueError(
                f"the batch has no column {missing[0]!r}; it has {sorted(table)}. Pass "
                f"columns={{input: column}} to map the model's inputs {list(self.predictor.input_names)}"
            )
        result = self.predictor.predict(inputs)
        for name in self.keep:
            if name not in table:
                raise ValueError(f"keep names {name!r}, which the batch does not have ({sorted(table)})")
            result[name] = np.asarray(table[name])
        return result


def _columns(batch: Any) -> dict[str, Any]:
    """A numpy-dict or pandas batch as name -> column values."""
    if isinstance(batch, Mapping):
        return dict(batch)
    if hasattr(batch, "column_names") and hasattr(batch, "column"):  # a pyarrow Table
        return {name: batch.column(name).to_numpy(zero_copy_only=False) for name in batch.column_names}
    if hasattr(batch, "columns") and hasattr(batch, "__getitem__"):  # a pandas DataFrame
        return {str(name): batch[name].to_numpy() for name in batch.columns}
    raise TypeError(f"a batch must be a dict of arrays or a pandas DataFrame, got {type(batch).__name__}")


@serve.deployment
class TracedModelServer:
    """A Ray Serve deployment of the traced SavedModel at ``path``.

    Over HTTP it takes TF Serving's REST predict body (``{"instances": ...}`` or ``{"inputs": ...}``) and
    answers as TF Serving does; a handle call ``predict({name: array})`` returns ``{output: array}``.
    Requests are checked one by one, then batched together by Ray Serve up to ``max_batch_size`` rows
    (waiting at most ``batch_wait_timeout_s`` for more), so one bad request never fails its batch-mates. A
    model that takes its traced batch only is never batched across requests (its rows may mix): each
    request must send exactly that batch.
    """

    def __init__(self, path: str, max_batch_size: int = 32, batch_wait_timeout_s: float = 0.005) -> None:
        import tensorflow as tf

        self.predictor = BatchPredictor(path)
        fixed = self.predictor.columns.fixed_batch
        if max_batch_size < max(1, fixed or 1):
            raise ValueError(
                f"max_batch_size is {max_batch_size}; it must be at least 1"
                + (f" and at least the model's batch ({fixed})" if fixed else "")
            )
        self.max_batch_size = max_batch_size
        self.specs = {
            c.name: tf.TensorSpec((None, *c.row_shape), tf.as_dtype(c.dtype), name=c.name)
            for c in self.predictor.columns.inputs
        }
        batched: Any = self._batched  # serve.batch's wrapper carries the setters; its type says otherwise
        batched.set_max_batch_size(max_batch_size)
        batched.set_batch_wait_timeout_s(batch_wait_timeout_s)

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import Response

        from tfaccel.serving.errors import ServingError
        from tfaccel.serving.tensors import PredictRequest

        try:
            parsed = PredictRequest.parse(await request.body())
            outputs = await self.predict(parsed.inputs(self.specs))
            text = parsed.answer(outputs)
        except ServingError as err:
            return Response(_error(err.message), status_code=err.http_status, media_type="application/json")
        except (InputValueError, InputTypeError) as err:  # the predictor's checks of this request
            return Response(_error(str(err)), status_code=400, media_type="application/json")
        return Response(text, media_type="application/json")

    async def predict(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Score one request (name -> array, rows first), batched with the requests arriving with it."""
        checked = self.predictor.check(inputs)
        rows = _rows(checked)
        fixed = self.predictor.columns.fixed_batch
        if fixed is not None and rows != fixed:  # refused here, alone, not inside a batch of others
            self.predictor.predict(checked)  # raises the predictor's error, with the model's reason
        if rows > self.max_batch_size:  # more rows than one batch: runs alone (the queue would refuse it)
            loop = asyncio.get_running_loop()
            (alone,) = await loop.run_in_executor(None, self._run, [checked])
            return _result(alone)
        return _result(await self._batched(checked))

    @serve.batch(
        max_batch_size=32,
        batch_wait_timeout_s=0.005,
        batch_size_fn=lambda items: sum(_rows(i) for i in items),
    )
    async def _batched(self, items: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray] | Exception]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._run, items)

    def _run(self, items: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray] | Exception]:
        # requests whose rows have the same shapes run as one batch; any other shape runs on its own, and
        # so does every request to a model that takes its traced batch only (its rows may mix)
        fixed = self.predictor.columns.fixed_batch is not None
        groups: dict[tuple[Any, ...], list[int]] = {}
        for index, item in enumerate(items):
            key = (
                (index,) if fixed else tuple((name, value.shape[1:]) for name, value in sorted(item.items()))
            )
            groups.setdefault(key, []).append(index)
        results: list[dict[str, np.ndarray] | Exception] = [{} for _ in items]
        for indices in groups.values():
            merged = {name: np.concatenate([items[i][name] for i in indices]) for name in items[indices[0]]}
            try:
                outputs = self.predictor.predict(merged)
            except Exception as err:  # this group's requests get the error; other groups still run
                for i in indices:
                    results[i] = err
                continue
            start = 0
            for i in indices:
                rows = _rows(items[i])
                results[i] = {name: value[start : start + rows] for name, value in outputs.items()}
                start += rows
        return results


def _result(value: dict[str, np.ndarray] | Exception) -> dict[str, np.ndarray]:
    if isinstance(value, Exception):
        raise value
    return value


def _rows(item: Mapping[str, np.ndarray]) -> int:
    return len(next(iter(item.values()))) if item else 0


def _error(message: str) -> str:
    import json

    return json.dumps({"error": message}, ensure_ascii=False)


def serve_app(
    path: str | os.PathLike[str],
    max_batch_size: int = 32,
    batch_wait_timeout_s: float = 0.005,
    **options: Any,
) -> Any:
    """The Ray Serve application for ``serve.run``: :class:`TracedModelServer` bound to ``path``;
    ``options`` go to ``Deployment.options`` (``num_replicas``, ``ray_actor_options``, ``name`` ...).
    """
    # Serve hands a replica at most max_ongoing_requests at once (5 by default): fewer than a batch
    options.setdefault("max_ongoing_requests", max(2 * max_batch_size, 5))
    deployment: Any = TracedModelServer  # a serve.Deployment (the decorator's type is lost on the class)
    deployment = deployment.options(**options)
    return deployment.bind(os.fspath(path), max_batch_size, batch_wait_timeout_s)
