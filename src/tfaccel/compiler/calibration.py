"""Calibration inputs for ``--quantize=int8``: checked against ``example_inputs`` before anything is traced.

Why separate from the quantize stage: the check runs when a trace starts (a bad sample is the user's error,
reported before minutes of compiling), the stage after placement; and the split of the samples into those
that calibrate and those held out for the accuracy check is one rule both sides state.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from typing import Any

import numpy as np

from tfaccel.compiler.examples import Examples
from tfaccel.errors import InputTypeError, InputValueError, OptionsError

__all__ = ["MIN_CALIBRATION_INPUTS", "calibration_examples", "held_out_count"]

#: at least one input calibrates and one is held out for the accuracy check
MIN_CALIBRATION_INPUTS = 2


def held_out_count(total: int) -> int:
    """How many of ``total`` calibration inputs are held out: the last fifth, at least one."""
    return max(1, total // 5)


def calibration_examples(
    calibration_inputs: Iterable[Any] | None, examples: Examples, quantize: str, dynamic_batch: bool
) -> tuple[Examples, ...]:
    """The user's ``calibration_inputs`` checked against ``example_inputs`` (structure, dtypes, shapes; any
    batch with ``--dynamic-batch-size``); an :class:`OptionsError` names the input and what to do.
    """
    if quantize == "none":
        if calibration_inputs is not None:
            raise OptionsError(
                "calibration_inputs were given but --quantize is none; pass quantize='int8' (or "
                "--quantize=int8) to quantize with them, or leave calibration_inputs out"
            )
        return ()
    if importlib.util.find_spec("nncf") is None:
        raise OptionsError(
            f"--quantize={quantize} needs NNCF, the OpenVINO project's quantizer, which is not installed: "
            "pip install 'tfaccel[quantize]' (or pip install nncf)"
        )
    if calibration_inputs is None:
        raise OptionsError(
            f"--quantize={quantize} needs calibration data: pass calibration_inputs=[...] to trace (an "
            "iterable of inputs shaped like example_inputs, e.g. 100 real samples; the CLI takes "
            "--calibration-inputs FILE.npz), so that int8 ranges come from data the model will see"
        )
    if isinstance(calibration_inputs, (str, bytes, np.ndarray)) or not isinstance(
        calibration_inputs, Iterable
    ):
        raise OptionsError(
            "calibration_inputs must be an iterable (a list, a generator) of inputs each shaped like "
            f"example_inputs, got {type(calibration_inputs).__name__}"
        )
    samples = []
    for index, sample in enumerate(calibration_inputs):
        where = f"calibration_inputs[{index}]"
        leaves: list[Any] = []
        try:  # built like example_inputs (dict keys in any order), else an error naming the place
            examples.tree.collect(sample, where, leaves)
        except (InputTypeError, InputValueError) as err:
            raise OptionsError(f"{err}; each calibration input must be built like example_inputs") from err
        given = Examples(examples.tree, tuple(leaves), examples.container)
        for path, want, got in zip(examples.paths, examples.leaves, given.leaves, strict=True):
            leaf = path.replace("example_inputs", where, 1)
            want_shape, got_shape = np.shape(want), np.shape(got)
            want_dtype, got_dtype = _dtype(want), _dtype(got)
            if got_dtype != want_dtype:
                raise OptionsError(f"{leaf} is {got_dtype}, the example input {want_dtype}")
            same = got_shape[1:] == want_shape[1:] if dynamic_batch else got_shape == want_shape
            if len(got_shape) != len(want_shape) or not same:
                batch = " (any batch: --dynamic-batch-size)" if dynamic_batch else ""
                raise OptionsError(
                    f"{leaf} has shape {list(got_shape)}, the example input {list(want_shape)}{batch}"
                )
        samples.append(given)
    if len(samples) < MIN_CALIBRATION_INPUTS:
        raise OptionsError(
            f"--quantize={quantize} needs at least {MIN_CALIBRATION_INPUTS} calibration inputs (one is held "
            f"out to check the int8 answers), got {len(samples)}; a hundred or so real samples calibrate well"
        )
    return tuple(samples)


def _dtype(value: Any) -> str:
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return str(np.asarray(value).dtype)
    return str(getattr(dtype, "name", dtype))
