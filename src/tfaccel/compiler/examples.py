"""The user's inputs as data: how ``example_inputs`` map onto ``func``, split once, packed back the same way.

Why one module: the reference's calling convention (a Tensor or a list is one argument ``func(x)``, a tuple
is spread ``func(*x)``, a dict is passed as keywords ``func(**x)``) used to be re-derived wherever inputs
were split, cut into micro-batches or packed for a call. :class:`Examples` is the user's
``example_inputs`` split once into leaves with the paths a user would write; :class:`InputLayout` is the
calling convention a traced model keeps (saved with it) to split a call's arguments and pack flat tensors
back. Nothing else in tfaccel tells the conventions apart, so supporting nested inputs means changing
these two types and no caller.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from tfaccel.errors import InputTypeError, InputValueError, OptionsError

__all__ = ["Convention", "Examples", "InputLayout", "InputSpec"]


class Convention(enum.Enum):
    """How the user's ``example_inputs`` map onto ``func``'s parameters."""

    TENSOR = "tensor"  # func(x)
    LIST = "list"  # func([a, b])
    TUPLE = "tuple"  # func(*x)
    DICT = "dict"  # func(**x)

    def call_form(self, callee: str = "func") -> str:
        """How a call with this convention reads, e.g. ``"a tuple spread, func(*x)"``."""
        return {
            Convention.TENSOR: f"one tensor, {callee}(x)",
            Convention.LIST: f"one list, {callee}([a, b])",
            Convention.TUPLE: f"a tuple spread, {callee}(*x)",
            Convention.DICT: f"a dict as keywords, {callee}(**x)",
        }[self]


@dataclass(frozen=True)
class InputSpec:
    """One flat input: the signature name, dtype name and exact traced shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    def tensor_spec(self, dynamic_batch: bool = False) -> tf.TensorSpec:
        """The signature's spec; with ``dynamic_batch`` dim 0 is left unknown."""
        shape = (None, *self.shape[1:]) if dynamic_batch and self.shape else self.shape
        return tf.TensorSpec(shape, tf.as_dtype(self.dtype), name=self.name)


@dataclass(frozen=True)
class InputLayout:
    """The user's input structure, as data: convention, flat specs and (for dicts) the keys."""

    convention: Convention
    specs: tuple[InputSpec, ...]
    keys: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "convention": self.convention.value,
            "keys": list(self.keys),
            "specs": [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape)} for s in self.specs],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InputLayout:
        specs = tuple(InputSpec(s["name"], s["dtype"], tuple(s["shape"])) for s in data["specs"])
        return cls(Convention(data["convention"]), specs, tuple(data["keys"]))

    def where(self, index: int) -> str:
        """How a user would name flat input ``index`` (``example_inputs[1]``, ``example_inputs['ids']``)."""
        return _path(self.convention, self.keys, index)

    def keras_structure(self, flat: Sequence[Any]) -> Any:
        """The single structure a Keras ``call(inputs)`` receives for these flat inputs."""
        if self.convention is Convention.TENSOR:
            return flat[0]
        if self.convention is Convention.LIST:
            return list(flat)
        if self.convention is Convention.TUPLE:
            return tuple(flat)
        return dict(zip(self.keys, flat, strict=True))

    def flatten_keras(self, structure: Any) -> list[Any]:
        """Inverse of :meth:`keras_structure`."""
        if self.convention is Convention.TENSOR:
            return [structure]
        if self.convention is Convention.DICT:
            return [structure[k] for k in self.keys]
        return list(structure)

    def split_call(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Any]:
        """The leaves of a call ``model(*args, **kwargs)`` in flat order, or a clear error when the call
        does not follow the convention the model was traced with.
        """
        n = len(self.specs)
        conv = self.convention
        if conv is Convention.DICT:
            if args and not kwargs and len(args) == 1 and isinstance(args[0], Mapping):
                kwargs, args = args[0], ()
            if args:
                raise InputTypeError(
                    f"this model was traced with a dict of inputs: call it as model(**inputs) with keys "
                    f"{list(self.keys)}; got {len(args)} positional argument(s)"
                )
            missing = [k for k in self.keys if k not in kwargs]
            extra = [k for k in kwargs if k not in self.keys]
            if missing or extra:
                raise InputValueError(
                    f"inputs do not match the traced keys {list(self.keys)}: "
                    + ", ".join(
                        p
                        for p in (
                            f"missing {missing}" if missing else "",
                            f"unexpected {extra}" if extra else "",
                        )
                        if p
                    )
                )
            leaves = [kwargs[k] for k in self.keys]
        else:
            if kwargs:
                raise InputTypeError(
                    f"unexpected keyword argument(s) {sorted(kwargs)}: this model was traced with "
                    f"{conv.call_form('model')} and takes no keywords"
                )
            if conv is Convention.TENSOR:
                if len(args) != 1:
                    raise InputTypeError(f"this model takes one tensor, model(x); got {len(args)} arguments")
                leaves = [args[0]]
            elif conv is Convention.LIST:
                if len(args) != 1 or not isinstance(args[0], (list, tuple)):
                    raise InputTypeError(f"this model takes one list of {n} tensors, model([...])")
                leaves = list(args[0])
            else:
                leaves = list(args)
            if len(leaves) != n:
                raise InputTypeError(
                    f"this model takes {n} input tensor(s) ({conv.call_form('model')}); got {len(leaves)}"
                )
        return leaves

    def pack(self, flat: Sequence[Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Rebuild ``(args, kwargs)`` for ``func`` from flat tensors."""
        if self.convention is Convention.TENSOR:
            return (flat[0],), {}
        if self.convention is Convention.LIST:
            return (list(flat),), {}
        if self.convention is Convention.TUPLE:
            return tuple(flat), {}
        return (), dict(zip(self.keys, flat, strict=True))


def _path(convention: Convention, keys: Sequence[Any], index: int, root: str = "example_inputs") -> str:
    """How a user names leaf ``index``: ``example_inputs``, ``example_inputs[1]``, ``...["ids"]``."""
    if convention is Convention.TENSOR:
        return root
    if convention is Convention.DICT:
        return f"{root}[{keys[index]!r}]"
    return f"{root}[{index}]"


@dataclass(frozen=True)
class Examples:
    """The user's ``example_inputs``, split once: the convention, the dict keys and the leaves in order.

    Leaves are kept as the user gave them (tensors, numpy arrays, or anything else, which capture then
    refuses with the leaf's path).
    """

    convention: Convention
    keys: tuple[Any, ...]
    leaves: tuple[Any, ...]
    #: the type name of the user's structure (``dict``, ``tuple``, ...), for error messages
    container: str = "Tensor"

    @classmethod
    def of(cls, example_inputs: Any) -> Examples:
        """Split ``example_inputs`` (an :class:`Examples` is returned as is)."""
        if isinstance(example_inputs, Examples):
            return example_inputs
        if isinstance(example_inputs, Mapping):
            keys = tuple(example_inputs)
            leaves = tuple(example_inputs[k] for k in keys)
            return cls(Convention.DICT, keys, leaves, type(example_inputs).__name__)
        if isinstance(example_inputs, tuple):
            return cls(Convention.TUPLE, (), example_inputs, type(example_inputs).__name__)
        if isinstance(example_inputs, list):
            return cls(Convention.LIST, (), tuple(example_inputs), type(example_inputs).__name__)
        return cls(Convention.TENSOR, (), (example_inputs,), type(example_inputs).__name__)

    @property
    def paths(self) -> tuple[str, ...]:
        """Each leaf's path as the user would write it (``example_inputs['ids']``), for error messages."""
        return tuple(_path(self.convention, self.keys, i) for i in range(len(self.leaves)))

    def first_rows(self, rows: int) -> Examples:
        """The same examples cut to their first ``rows`` rows (a micro-batch)."""
        cut = tuple(leaf[:rows] for leaf in self.leaves)
        return Examples(self.convention, self.keys, cut, self.container)

    def batch_sizes(self) -> list[int]:
        """Dim 0 of every leaf (0 for a scalar), in order."""
        return [int(np.shape(leaf)[0]) if np.ndim(leaf) else 0 for leaf in self.leaves]

    def micro_batch(self, stages: int) -> tuple[int, Examples]:
        """``(B, examples cut to ceil(B / stages) rows)`` for ``--neuroncore-pipeline-cores``.

        The compiled stages run on micro-batches, so they are traced on one; the model still takes
        batch ``B``.
        """
        if not self.leaves:
            return 0, self  # capture says what is wrong with an empty structure
        sizes = set(self.batch_sizes())
        if len(sizes) != 1 or 0 in sizes:
            raise OptionsError(
                f"--neuroncore-pipeline-cores={stages}: every example input needs the same batch size "
                f"(dim 0) to be cut into micro-batches; got batch sizes {sorted(sizes)}"
            )
        batch = sizes.pop()
        return batch, self.first_rows(-(-batch // stages))

    def tensors(self, layout: InputLayout) -> list[tf.Tensor]:
        """The leaves as tensors of the dtypes ``layout`` (captured from these examples) recorded."""
        return [
            tf.convert_to_tensor(leaf, dtype=tf.as_dtype(spec.dtype))
            for leaf, spec in zip(self.leaves, layout.specs, strict=True)
        ]
