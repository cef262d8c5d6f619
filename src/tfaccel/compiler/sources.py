"""SavedModel directories as trace sources: open a signature, make example inputs for it.

Why a module of its own: the CLI (``tfaccel trace|analyze|bench``) and the legacy
``tfaccel.saved_model.compile`` both start from a SavedModel a user already has, and both must say
clearly what is wrong with it (a missing directory, a directory that is not a SavedModel, a corrupted
``saved_model.pb``, an unknown signature) before any tracing starts. A signature is traced as the
function it is: called with keywords (``fn(**inputs)``), returning a dict, so the traced SavedModel keeps
the original signature's input and output names.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from tfaccel.errors import SourceError

__all__ = ["Signature", "example_inputs", "open_signature", "read_npz"]

DEFAULT_SIGNATURE = "serving_default"
#: how a user gives real example values, from the command line or the legacy Python API
_GIVE_VALUES = "tfaccel --inputs FILE.npz; model_feed_dict= or model_shape_feed_dict= in saved_model.compile"
_PROTO_FILES = ("saved_model.pb", "saved_model.pbtxt")


@dataclass(frozen=True)
class Signature:
    """One signature of a loaded SavedModel: its function and its named inputs, in a stable order."""

    path: str
    name: str
    function: Any  # the restored ConcreteFunction, called as function(**inputs)
    inputs: dict[str, tf.TensorSpec]
    outputs: dict[str, tf.TensorSpec]
    loaded: Any  # the restored object: keeps the function's variables alive

    def describe(self) -> str:
        """``name(input: dtype[shape], ...)`` with ``?`` for unknown dimensions."""
        args = ", ".join(f"{k}: {_spec_text(s)}" for k, s in self.inputs.items())
        return f"{self.name}({args})"


def _spec_text(spec: tf.TensorSpec) -> str:
    dims = "?" if spec.shape.rank is None else ",".join("?" if d is None else str(d) for d in spec.shape)
    return f"{spec.dtype.name}[{dims}]"


def check_savedmodel_dir(path: str) -> None:
    """Raise :class:`SourceError` unless ``path`` is a directory holding a SavedModel proto."""
    if not os.path.exists(path):
        raise SourceError(f"{path!r} does not exist; give the directory of a SavedModel")
    if not os.path.isdir(path):
        raise SourceError(f"{path!r} is a file, not a directory; give the directory of a SavedModel")
    if not any(os.path.isfile(os.path.join(path, name)) for name in _PROTO_FILES):
        raise SourceError(
            f"{path!r} is not a SavedModel directory: it has no saved_model.pb (save a model with "
            "tf.saved_model.save(model, path) or model.export(path))"
        )


def open_signature(path: str | os.PathLike[str], signature: str | None = None, tags: Any = None) -> Signature:
    """Load the SavedModel at ``path`` and return its ``signature`` (default: ``serving_default``, or the
    only signature there is).

    Example::

        sig = open_signature("resnet_savedmodel")
        model = tfaccel.trace(sig.function, example_inputs(sig, batch_size=4))
    """
    path = os.fspath(path)
    check_savedmodel_dir(path)
    try:
        loaded = tf.saved_model.load(path, tags=tags)
    except Exception as err:  # protobuf DecodeError, OSError, TF's own errors: all mean "cannot load"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SourceError(
            f"{path!r} could not be loaded as a SavedModel ({type(err).__name__}: {first[:300]}); "
            "is saved_model.pb complete and written by TensorFlow 2?"
        ) from err
    signatures = dict(getattr(loaded, "signatures", {}) or {})
    if not signatures:
        raise SourceError(
            f"{path!r} has no signatures to trace; save it with "
            "tf.saved_model.save(model, path, signatures=...) or trace the model object with tfaccel.trace"
        )
    if signature is None:
        signature = DEFAULT_SIGNATURE if DEFAULT_SIGNATURE in signatures else None
        if signature is None and len(signatures) == 1:
            signature = next(iter(signatures))
        if signature is None:
            raise SourceError(
                f"{path!r} has no {DEFAULT_SIGNATURE!r} signature; pick one (tfaccel --signature, "
                "signature_def_key= in saved_model.compile) "
                f"(it has: {', '.join(sorted(signatures))})"
            )
    if signature not in signatures:
        raise SourceError(f"{path!r} has no signature {signature!r}; it has: {', '.join(sorted(signatures))}")
    function = signatures[signature]
    args, kwargs = function.structured_input_signature
    if args:
        raise SourceError(f"signature {signature!r} of {path!r} takes positional inputs; tfaccel needs names")
    inputs = {name: kwargs[name] for name in sorted(kwargs)}
    outputs = dict(function.structured_outputs)
    return Signature(path, signature, function, inputs, outputs, loaded)


def read_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file, by name (``numpy.savez(path, input_name=array, ...)``)."""
    path = os.fspath(path)
    advice = "write one with numpy.savez(path, input_name=array, ...)"
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise SourceError(f"{path!r} could not be read as an .npz file ({err}); {advice}") from err
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise SourceError(f"{path!r} holds one array (an .npy), not named arrays; {advice}")
    try:
        with data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise SourceError(f"{path!r} could not be read as an .npz file ({err}); {advice}") from err


def example_inputs(
    sig: Signature,
    batch_size: int | None = None,
    arrays: Mapping[str, np.ndarray] | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Example inputs for ``sig``, by input name.

    ``arrays`` (e.g. from :func:`read_npz`) are used as given and must match the signature. Otherwise each
    input is made from its spec: an unknown first dimension becomes ``batch_size`` (default 1), and
    ``shapes`` gives whole shapes for inputs with other unknown dimensions. Floats are uniform in [0, 1);
    integers are zeros (a safe index into any embedding) and booleans False.
    """
    if arrays is not None:
        if batch_size is not None or shapes is not None:
            raise SourceError(
                "example arrays were given, so a batch size or shapes cannot apply: the arrays' own shapes "
                "are traced (drop one of the two)"
            )
        return _checked_arrays(sig, arrays)
    if batch_size is not None and batch_size < 1:
        raise SourceError(f"batch size must be >= 1, got {batch_size}")
    fillable = [n for n, s in sig.inputs.items() if s.shape.rank and s.shape[0] is None]
    if batch_size is not None and sig.inputs and not fillable:
        fixed = ", ".join(f"{n}: {_spec_text(s)}" for n, s in sig.inputs.items())
        raise SourceError(
            f"batch size {batch_size} cannot apply: no input of signature {sig.name!r} has an unknown "
            f"first dimension ({fixed}); leave it out"
        )
    rng = np.random.default_rng(seed)
    made: dict[str, np.ndarray] = {}
    for name, spec in sig.inputs.items():
        shape = _concrete_shape(sig, name, spec, batch_size, (shapes or {}).get(name))
        dtype = spec.dtype
        if dtype == tf.string:
            raise SourceError(
                f"input {name!r} of signature {sig.name!r} is a string tensor; give example values "
                f"({_GIVE_VALUES})"
            )
        if dtype.is_floating:
            made[name] = rng.random(shape).astype(dtype.as_numpy_dtype)
        elif dtype.is_integer or dtype.is_bool:
            made[name] = np.zeros(shape, dtype=dtype.as_numpy_dtype)
        else:
            raise SourceError(
                f"input {name!r} of signature {sig.name!r} has dtype {dtype.name}; give example values "
                f"({_GIVE_VALUES})"
            )
    return made


def _concrete_shape(
    sig: Signature, name: str, spec: tf.TensorSpec, batch_size: int | None, given: Sequence[int] | None
) -> tuple[int, ...]:
    if given is not None:
        shape = tuple(int(d) for d in given)
        if not spec.shape.is_compatible_with(shape):
            raise SourceError(f"shape {list(shape)} for input {name!r} does not fit {_spec_text(spec)}")
        return shape
    if spec.shape.rank is None:
        raise SourceError(
            f"input {name!r} of signature {sig.name!r} has an unknown rank; give example values "
            f"({_GIVE_VALUES})"
        )
    dims = list(spec.shape.as_list())
    if dims and dims[0] is None:
        dims[0] = batch_size or 1
    unknown = [i for i, d in enumerate(dims) if d is None]
    if unknown:
        raise SourceError(
            f"input {name!r} of signature {sig.name!r} is {_spec_text(spec)}: dimension {unknown[0]} is "
            "unknown and only the first (batch) dimension can be filled in; give a "
            f"shape or example values ({_GIVE_VALUES})"
        )
    return tuple(int(d) for d in dims)


def _checked_arrays(sig: Signature, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    missing = [k for k in sig.inputs if k not in arrays]
    extra = [k for k in arrays if k not in sig.inputs]
    if missing or extra:
        raise SourceError(
            f"the example arrays do not match signature {sig.describe()}: "
            + "; ".join(
                part
                for part in (
                    f"missing {', '.join(missing)}" if missing else "",
                    f"unexpected {', '.join(extra)}" if extra else "",
                )
                if part
            )
        )
    out: dict[str, np.ndarray] = {}
    for name, spec in sig.inputs.items():
        value = np.asarray(arrays[name])
        if value.dtype != spec.dtype.as_numpy_dtype and not (
            spec.dtype == tf.string and value.dtype.kind in "SUO"
        ):
            raise SourceError(
                f"example array {name!r} is {value.dtype} but the signature wants {spec.dtype.name}"
            )
        if not spec.shape.is_compatible_with(value.shape):
            raise SourceError(
                f"example array {name!r} has shape {list(value.shape)}, which does not fit {_spec_text(spec)}"
            )
        out[name] = value
    return out
