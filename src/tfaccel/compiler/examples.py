"""The user's inputs as data: how ``example_inputs`` map onto ``func``, split once, packed back the same way.

Why one module: the reference's calling convention (a Tensor or a list is one argument ``func(x)``, a tuple
is spread ``func(*x)``, a dict is passed as keywords ``func(**x)``) used to be re-derived wherever inputs
were split, cut into micro-batches or packed for a call. :class:`Examples` is the user's
``example_inputs`` split once into leaves with the paths a user would write; :class:`InputLayout` is the
calling convention a traced model keeps (saved with it) to split a call's arguments and pack flat tensors
back. Nothing else in tfaccel tells the conventions apart.

Inside the convention's container any ``tf.nest``-like structure of lists, tuples and dicts is allowed
(``trace(f, ([a, b], c))`` calls ``f([a, b], c)``). The graph, the signature and every stage after capture
still see one flat list of tensors (depth first, dicts in their own key order); a :class:`Tree` (the
structure without the tensors) is what packs them back and checks a call's structure, and it is saved
with the model as JSON, so a reloaded model checks the same structure.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import tensorflow as tf

from tfaccel.errors import CaptureTypeError, CaptureValueError, InputTypeError, InputValueError, OptionsError

__all__ = ["MAX_DEPTH", "Convention", "Examples", "InputLayout", "InputSpec", "Tree"]

#: how deep inputs may nest: deeper is a mistake (a list holding itself, an edited metadata file), not a model
MAX_DEPTH = 32


class Convention(enum.Enum):
    """How the user's ``example_inputs`` map onto ``func``'s parameters (and, in a :class:`Tree`, what a
    node is: ``TENSOR`` a leaf, the others a container).
    """

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


#: one step of a leaf's path: a position in a list or tuple, or a dict key
Step = int | str


@dataclass(frozen=True)
class Tree:
    """The user's input structure without the tensors: a leaf (``TENSOR``), or a list, tuple or dict of trees.

    Leaves are numbered depth first, a dict's children in the order of ``keys`` (the user's order, not
    sorted): leaf ``i`` is flat input ``i``.
    """

    kind: Convention
    children: tuple[Tree, ...] = ()
    #: a dict's keys, one per child
    keys: tuple[str, ...] = ()

    @classmethod
    def flat(cls, convention: Convention, count: int, keys: Sequence[str] = ()) -> Tree:
        """The convention's container holding ``count`` tensors (what every model was before nesting)."""
        if convention is Convention.TENSOR:
            return cls(Convention.TENSOR)
        if convention is Convention.DICT and len(keys) != count:
            raise ValueError(f"a dict of {count} tensors needs {count} keys, got {list(keys)}")
        leaves = tuple(cls(Convention.TENSOR) for _ in range(count))
        return cls(convention, leaves, tuple(keys) if convention is Convention.DICT else ())

    @property
    def is_leaf(self) -> bool:
        return self.kind is Convention.TENSOR

    @property
    def nested(self) -> bool:
        """True when some child is itself a container (the structure is not one of the flat conventions)."""
        return any(not child.is_leaf for child in self.children)

    @property
    def has_dict(self) -> bool:
        return self.kind is Convention.DICT or any(child.has_dict for child in self.children)

    @cached_property
    def leaf_paths(self) -> tuple[tuple[Step, ...], ...]:
        """Each leaf's path from this node, in flat order: ``(0, 1)`` for ``x[0][1]``, ``("ids", 0)``."""
        if self.is_leaf:
            return ((),)
        steps: Sequence[Step] = self.keys if self.kind is Convention.DICT else range(len(self.children))
        return tuple(
            (step, *path)
            for step, child in zip(steps, self.children, strict=True)
            for path in child.leaf_paths
        )

    def describe(self) -> str:
        """The structure as a user would write it, tensors as ``x``: ``([x, x], x)``, ``{'ids': [x, x]}``."""
        if self.is_leaf:
            return "x"
        if self.kind is Convention.DICT:
            inner = ", ".join(f"{k!r}: {c.describe()}" for k, c in zip(self.keys, self.children, strict=True))
            return "{" + inner + "}"
        inner = ", ".join(c.describe() for c in self.children)
        if self.kind is Convention.TUPLE:
            return f"({inner},)" if len(self.children) == 1 else f"({inner})"
        return f"[{inner}]"

    def build(self, leaves: Iterator[Any]) -> Any:
        """The structure holding the next leaves of ``leaves``."""
        if self.is_leaf:
            return next(leaves)
        if self.kind is Convention.DICT:
            return {key: child.build(leaves) for key, child in zip(self.keys, self.children, strict=True)}
        items = [child.build(leaves) for child in self.children]
        return tuple(items) if self.kind is Convention.TUPLE else items

    def flatten(self, structure: Any) -> list[Any]:
        """The leaves of ``structure`` (built like this tree, a list maybe a tuple) in flat order."""
        if self.is_leaf:
            return [structure]
        if self.kind is Convention.DICT:
            return [
                leaf
                for key, child in zip(self.keys, self.children, strict=True)
                for leaf in child.flatten(structure[key])
            ]
        return [leaf for i, child in enumerate(self.children) for leaf in child.flatten(structure[i])]

    def collect(self, value: Any, where: str, out: list[Any]) -> None:
        """Append the leaves of a call's ``value`` to ``out``, or raise a clear error naming ``where`` (the
        path, e.g. ``inputs[0][1]``) when ``value`` is not built like this tree. A leaf is taken as is: the
        model's input check names a non-tensor leaf with its path.
        """
        if self.is_leaf:
            out.append(value)
            return
        if self.kind is Convention.DICT:
            if not isinstance(value, Mapping):
                raise InputTypeError(
                    f"{where} must be a dict with the keys {list(self.keys)}, as the model was traced "
                    f"({self.describe()}); got {_what(value)}"
                )
            _check_keys(f"{where} does not", self.keys, value)
            for key, child in zip(self.keys, self.children, strict=True):
                child.collect(value[key], f"{where}[{key!r}]", out)
            return
        if not isinstance(value, (list, tuple)):
            raise InputTypeError(
                f"{where} must be a {self.kind.value} of {len(self.children)}, as the model was traced "
                f"({self.describe()}); got {_what(value)}"
            )
        if len(value) != len(self.children):
            raise InputTypeError(
                f"{where} has {len(value)} item(s) but the model was traced with {len(self.children)}: "
                f"{self.describe()}"
            )
        for i, (child, item) in enumerate(zip(self.children, value, strict=True)):
            child.collect(item, f"{where}[{i}]", out)

    def to_json(self) -> dict[str, Any]:
        if self.is_leaf:
            return {"kind": self.kind.value}
        data: dict[str, Any] = {"kind": self.kind.value, "items": [c.to_json() for c in self.children]}
        if self.kind is Convention.DICT:
            data["keys"] = list(self.keys)
        return data

    @classmethod
    def from_json(cls, data: Any, depth: int = 0) -> Tree:
        """Rebuild a tree saved by :meth:`to_json`; a ``TypeError``/``ValueError`` saying what is wrong for
        anything else (the metadata file is untrusted: edited or damaged files must not load).
        """
        if depth > MAX_DEPTH:
            raise ValueError(f"the input tree nests deeper than {MAX_DEPTH} levels")
        if not isinstance(data, Mapping):
            raise TypeError(f"an input tree node must be an object, got {type(data).__name__}")
        kind = Convention(data.get("kind"))
        want = {"kind"} if kind is Convention.TENSOR else {"kind", "items"}
        if kind is Convention.DICT:
            want = want | {"keys"}
        if set(data) != want:
            raise ValueError(
                f"a {kind.value} node of the input tree must have the fields {sorted(want)}, "
                f"got {sorted(data)}"
            )
        if kind is Convention.TENSOR:
            return cls(kind)
        items = data["items"]
        if not isinstance(items, list):
            raise TypeError(f"the items of a {kind.value} node must be a list, got {type(items).__name__}")
        children = tuple(cls.from_json(item, depth + 1) for item in items)
        if kind is not Convention.DICT:
            return cls(kind, children)
        keys = data["keys"]
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise TypeError(f"the keys of a dict node must be a list of strings, got {keys!r:.80}")
        if len(keys) != len(children) or len(set(keys)) != len(keys):
            raise ValueError(
                f"a dict node needs one distinct key per item: {len(children)} items, keys {keys!r:.80}"
            )
        return cls(kind, children, tuple(keys))


def _what(value: Any) -> str:
    """How an error names what a caller passed: ``EagerTensor of shape (2, 4)``, ``list of 3``."""
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__} of {len(value)}"
    if isinstance(value, Mapping):
        return f"dict with the keys {list(value)}"
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"{type(value).__name__} of shape {shape}"
    return type(value).__name__


def _check_keys(subject: str, keys: Sequence[str], given: Mapping[Any, Any]) -> None:
    """An :class:`InputValueError` (``subject``, then "match the traced keys") unless ``given`` has
    ``keys``.
    """
    missing = [k for k in keys if k not in given]
    extra = [k for k in given if k not in keys]
    if missing or extra:
        problems = [f"missing {missing}" if missing else "", f"unexpected {extra}" if extra else ""]
        raise InputValueError(
            f"{subject} match the traced keys {list(keys)}: " + ", ".join(p for p in problems if p)
        )


def _format(root: str, path: Sequence[Step]) -> str:
    """``root`` and ``path`` as a user writes it: ``example_inputs[0]['ids']``."""
    return root + "".join(f"[{step!r}]" for step in path)


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
    """The user's input structure, as data: convention, flat specs, (for dicts) the keys, and the tree.

    ``nesting`` is the structure when it is nested and ``None`` when it is one of the flat conventions
    (the convention's container of tensors), so a flat model saves the same JSON as before nesting existed
    and a model saved then loads as flat; :attr:`tree` is the structure either way.
    """

    convention: Convention
    specs: tuple[InputSpec, ...]
    keys: tuple[str, ...] = ()
    nesting: Tree | None = None

    def __post_init__(self) -> None:
        tree = self.nesting if self.nesting is not None else self._flat()
        if tree.kind is not self.convention:
            raise ValueError(
                f"the input tree is a {tree.kind.value} but the convention is {self.convention.value}"
            )
        if self.keys != (tree.keys if tree.kind is Convention.DICT else ()):
            raise ValueError(f"the keys {list(self.keys)} do not match the input tree's {list(tree.keys)}")
        if len(tree.leaf_paths) != len(self.specs):
            raise ValueError(
                f"the input tree has {len(tree.leaf_paths)} tensors but there are {len(self.specs)} "
                "input specs"
            )
        if self.nesting is not None and not self.nesting.nested:
            object.__setattr__(self, "nesting", None)  # one form for a flat structure (equality, JSON)

    @cached_property
    def tree(self) -> Tree:
        """The whole structure (a flat one when not nested)."""
        return self.nesting if self.nesting is not None else self._flat()

    def _flat(self) -> Tree:
        return Tree.flat(self.convention, len(self.specs), self.keys)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "convention": self.convention.value,
            "keys": list(self.keys),
            "specs": [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape)} for s in self.specs],
        }
        if self.nesting is not None:
            data["tree"] = self.nesting.to_json()
        return data

    @classmethod
    def from_json(cls, data: Any) -> InputLayout:
        """Rebuild a saved layout (``tree`` absent: a flat one, as every model saved before nesting); a
        ``TypeError``/``ValueError`` for anything malformed.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"the layout must be an object, got {type(data).__name__}")
        specs = tuple(InputSpec(s["name"], s["dtype"], tuple(s["shape"])) for s in data["specs"])
        keys = data["keys"]
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise TypeError(f"the layout's keys must be a list of strings, got {keys!r:.80}")
        tree = Tree.from_json(data["tree"]) if "tree" in data else None
        return cls(Convention(data["convention"]), specs, tuple(keys), tree)

    def where(self, index: int, root: str = "example_inputs") -> str:
        """How a user names flat input ``index``: ``example_inputs[1]``, ``example_inputs['ids'][0]``."""
        return _format(root, self.tree.leaf_paths[index])

    def keras_structure(self, flat: Sequence[Any]) -> Any:
        """The single structure a Keras ``call(inputs)`` receives for these flat inputs."""
        return self.tree.build(iter(flat))

    def flatten_keras(self, structure: Any) -> list[Any]:
        """Inverse of :meth:`keras_structure`."""
        return self.tree.flatten(structure)

    def split_call(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Any]:
        """The leaves of a call ``model(*args, **kwargs)`` in flat order, or a clear error (naming the path,
        e.g. ``inputs[0][1]``) when the call does not follow the structure the model was traced with.
        """
        tree, conv = self.tree, self.convention
        leaves: list[Any] = []
        if conv is Convention.DICT:
            if args and not kwargs and len(args) == 1 and isinstance(args[0], Mapping):
                kwargs, args = args[0], ()
            if args:
                raise InputTypeError(
                    f"this model was traced with a dict of inputs: call it as model(**inputs) with keys "
                    f"{list(self.keys)}; got {len(args)} positional argument(s)"
                )
            _check_keys("inputs do not", self.keys, kwargs)
            for key, child in zip(tree.keys, tree.children, strict=True):
                child.collect(kwargs[key], f"inputs[{key!r}]", leaves)
            return leaves
        if kwargs:
            raise InputTypeError(
                f"unexpected keyword argument(s) {sorted(kwargs)}: this model was traced with "
                f"{conv.call_form('model')} and takes no keywords"
            )
        if conv is Convention.TENSOR:
            if len(args) != 1:
                raise InputTypeError(f"this model takes one tensor, model(x); got {len(args)} arguments")
            return [args[0]]
        count = len(tree.children)
        if conv is Convention.LIST:
            if len(args) != 1 or not isinstance(args[0], (list, tuple)):
                if tree.nested:
                    raise InputTypeError(
                        f"this model takes one list, model({tree.describe()}); got {len(args)} argument(s)"
                    )
                raise InputTypeError(f"this model takes one list of {count} tensors, model([...])")
            items = list(args[0])
        else:
            items = list(args)
        if len(items) != count:
            if tree.nested:
                unit = "argument(s)" if conv is Convention.TUPLE else "item(s) in the list"
                raise InputTypeError(
                    f"this model takes {tree.describe()} ({conv.call_form('model')}), {count} {unit}; "
                    f"got {len(items)}"
                )
            raise InputTypeError(
                f"this model takes {count} input tensor(s) ({conv.call_form('model')}); got {len(items)}"
            )
        for i, (child, item) in enumerate(zip(tree.children, items, strict=True)):
            child.collect(item, f"inputs[{i}]", leaves)
        return leaves

    def pack(self, flat: Sequence[Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Rebuild ``(args, kwargs)`` for ``func`` from flat tensors."""
        if len(flat) != len(self.specs):
            raise ValueError(f"{len(flat)} tensors for a layout of {len(self.specs)} inputs")
        tree, leaves = self.tree, iter(flat)
        if self.convention is Convention.TUPLE:
            return tuple(child.build(leaves) for child in tree.children), {}
        if self.convention is Convention.DICT:
            return (), {key: child.build(leaves) for key, child in zip(tree.keys, tree.children, strict=True)}
        return (tree.build(leaves),), {}


@dataclass(frozen=True)
class Examples:
    """The user's ``example_inputs``, split once: the structure and the leaves in flat order.

    Leaves are kept as the user gave them (tensors, numpy arrays, or anything else, which capture then
    refuses with the leaf's path).
    """

    tree: Tree
    leaves: tuple[Any, ...]
    #: the type name of the user's structure (``dict``, ``tuple``, ...), for error messages
    container: str = "Tensor"

    @classmethod
    def of(cls, example_inputs: Any) -> Examples:
        """Split ``example_inputs`` (an :class:`Examples` is returned as is); a ``CaptureError`` for a
        structure a traced model could not rebuild (non-string dict keys, a nested namedtuple, nesting
        deeper than :data:`MAX_DEPTH`).
        """
        if isinstance(example_inputs, Examples):
            return example_inputs
        leaves: list[Any] = []
        tree = _split(example_inputs, (), leaves)
        return cls(tree, tuple(leaves), type(example_inputs).__name__)

    @property
    def convention(self) -> Convention:
        return self.tree.kind

    @property
    def keys(self) -> tuple[str, ...]:
        return self.tree.keys

    @property
    def paths(self) -> tuple[str, ...]:
        """Each leaf's path as the user would write it (``example_inputs['ids']``), for error messages."""
        return tuple(_format("example_inputs", path) for path in self.tree.leaf_paths)

    def first_rows(self, rows: int) -> Examples:
        """The same examples cut to their first ``rows`` rows (a micro-batch)."""
        cut = tuple(leaf[:rows] for leaf in self.leaves)
        return Examples(self.tree, cut, self.container)

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


def _split(value: Any, path: tuple[Step, ...], leaves: list[Any]) -> Tree:
    """The tree of ``value`` (at ``path`` in ``example_inputs``), appending its leaves to ``leaves``.

    Lists, tuples and dicts (any ``Mapping``) are containers, everything else a leaf: what ``tf.nest``
    splits, but for a namedtuple below the top level, which a saved model could not rebuild (a top-level
    one is a tuple spread into arguments, so its class does not matter).
    """
    where = _format("example_inputs", path)
    if len(path) > MAX_DEPTH:
        raise CaptureValueError(
            f"{where} nests deeper than {MAX_DEPTH} levels (does a list contain itself?); pass a flatter "
            "structure of tensors"
        )
    if isinstance(value, Mapping):
        keys = tuple(value)
        for key in keys:
            if not isinstance(key, str):
                if not path:
                    raise CaptureTypeError(
                        f"example_inputs is a dict, so it is passed as func(**example_inputs); its keys must "
                        f"be strings, got {key!r} ({type(key).__name__})"
                    )
                raise CaptureTypeError(
                    f"{where} is a dict with the key {key!r} ({type(key).__name__}); the keys of a dict in "
                    "example_inputs must be strings (a traced model names and saves its inputs by them)"
                )
        children = tuple(_split(value[k], (*path, k), leaves) for k in keys)
        return Tree(Convention.DICT, children, keys)
    if isinstance(value, (list, tuple)):
        if path and isinstance(value, tuple) and hasattr(value, "_fields"):
            raise CaptureTypeError(
                f"{where} is a namedtuple ({type(value).__name__}); nested example inputs may be lists, "
                "tuples and dicts, which a saved model rebuilds without your class: pass a tuple or a dict"
            )
        kind = Convention.TUPLE if isinstance(value, tuple) else Convention.LIST
        return Tree(kind, tuple(_split(v, (*path, i), leaves) for i, v in enumerate(value)))
    leaves.append(value)
    return Tree(Convention.TENSOR)
