"""``trace()`` returns a typed model (issue 17 item 5): type checkers see ``tfaccel.TracedModel``.

Why: the model's class is a Keras model defined at run time for the Keras in use, so it was typed ``Any``
and a user's type checker caught nothing (``model.on_neuron_ratio`` misspelt, a ratio used as a string).
The package ships ``py.typed``; the protocol ``tfaccel.runtime.model.TracedModel`` names what the model
has, and the models ``trace`` and ``load`` return satisfy it at run time too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import tensorflow as tf

import tfaccel
from conftest import SRC
from tfaccel.compiler.report import PlacementReport


@tf.function
def _f(x: tf.Tensor) -> tf.Tensor:
    return tf.nn.relu(x * 2.0)


def test_trace_is_annotated_with_the_model_protocol() -> None:
    assert typing.get_type_hints(tfaccel.trace)["return"] is tfaccel.TracedModel


def test_the_traced_and_the_loaded_model_are_traced_models(tmp_path: Path) -> None:
    traced = tfaccel.trace(_f, tf.ones([2, 3]), backend="xla")
    assert type(traced).__name__ == "TracedModel"  # the name users and Keras' metadata see, unchanged
    assert isinstance(traced, tfaccel.TracedModel)
    assert isinstance(traced.on_neuron_ratio, float) and isinstance(traced.placement_report, PlacementReport)
    traced.save(tmp_path / "m")
    loaded = tfaccel.load(tmp_path / "m")
    assert isinstance(loaded, tfaccel.TracedModel)
    assert not isinstance(tf.keras.Sequential(), tfaccel.TracedModel)  # a plain Keras model is not one


def test_a_type_checker_sees_the_model_type(tmp_path: Path) -> None:
    user = tmp_path / "user.py"
    user.write_text(
        textwrap.dedent(
            """
            import tensorflow as tf
            import tfaccel

            model = tfaccel.trace(tf.function(lambda x: x + 1), tf.ones([2]))
            reveal_type(model)
            reveal_type(model.on_neuron_ratio)
            ratio: str = model.on_neuron_ratio
            model.save(3)
            """
        )
    )
    mypy = [sys.executable, "-m", "mypy", "--strict", "--ignore-missing-imports"]
    proc = subprocess.run(
        [*mypy, "--cache-dir", str(tmp_path / "cache"), str(user)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "MYPYPATH": SRC},
    )
    out = proc.stdout
    assert 'Revealed type is "tfaccel.runtime.model.TracedModel"' in out, out
    assert 'Revealed type is "builtins.float"' in out or 'Revealed type is "float"' in out, out
    assert 'expression has type "float", variable has type "str"' in out, out
    assert 'Argument 1 to "save" of "TracedModel" has incompatible type "int"' in out, out
    assert proc.returncode == 1 and out.count("error:") == 2, out
