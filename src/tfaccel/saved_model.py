"""The legacy ``saved_model.compile`` API: a SavedModel in, a traced SavedModel out, called like the input.

The reference keeps ``tensorflow.neuron.saved_model.compile`` available under TF 2.x, with the limited
capabilities of ``trace``; so does tfaccel, built on :func:`tfaccel.trace` (one code path, one set of
placement rules and flags) with a ``DeprecationWarning`` pointing there. New code should call ``trace``
on the model object, or use the ``tfaccel trace`` command on a SavedModel directory.

Why the compiled SavedModel gets a ``__call__``: code that loads a SavedModel calls it the way its object
was called, ``tf.saved_model.load(dir)(x)`` for a ``tf.Module`` with a ``tf.function`` ``__call__`` or a
tf_keras model (``.serve(x)`` for Keras 3's ``model.export``), not only through
``signatures['serving_default'](**inputs)``. Only the signature is traced (its input and output names stay
exactly as they were), so each form of the source's call is mapped onto it: which signature input each of
the call's tensors is and which signature output each of its results is. The mapping is read from names where
they say it and is always confirmed by running the source's call and its signature on the example inputs (a
swapped pair of same-shaped inputs gives other answers). A form that cannot be mapped, or that computes
something else than the signature (``training=True`` with dropout), stays callable and fails with an error
saying so, never with another function's answer.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import os
import shlex
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from tfaccel.compiler.options import parse_flags
from tfaccel.compiler.sources import Signature, example_inputs, open_signature
from tfaccel.errors import ExportError, OptionsError
from tfaccel.runtime import saving

if TYPE_CHECKING:
    from tfaccel.runtime.model import Executable

__all__ = ["compile"]

logger = logging.getLogger(__name__)

#: keywords of the reference's compile that tfaccel has no equivalent for; passing one raises with advice
_NOT_SUPPORTED = {
    "no_fuse_ops": "use tfaccel.trace(..., subgraph_builder_function=lambda node: node.name not in ops)",
    "force_fuse_ops": "use tfaccel.trace(..., subgraph_builder_function=lambda node: node.name in ops)",
    "compiler_timeout": "tfaccel's backends compile in-process; there is no compiler timeout",
    "compiler_recovery": "a subgraph a backend cannot compile always goes back to TensorFlow",
    "convert_constants_to_variables": "use --extract-weights (compiler_args='--extract-weights')",
}

#: the source's functions kept: ``loaded(x)`` (a ``tf.Module``'s or a tf_keras model's ``__call__``) and
#: ``loaded.serve(x)`` (what Keras 3's ``model.export`` writes)
_ENDPOINTS = ("__call__", "serve")
#: at most this many orders of a call's inputs are tried when their names do not match the signature's
_MAX_ORDERS = 24
#: how closely the source's call must agree with its signature on the examples to be the same function
#: (the same graph traced twice: only a different op order could make them differ at all)
_SAME_RTOL, _SAME_ATOL = 1e-4, 1e-5


def compile(
    model_dir: str | os.PathLike[str],
    new_model_dir: str | os.PathLike[str],
    batch_size: int = 1,
    model_shape_feed_dict: Mapping[str, Sequence[int]] | None = None,
    model_feed_dict: Mapping[str, Any] | None = None,
    tags: Any = None,
    signature_def_key: str | None = None,
    minimum_segment_size: int | None = None,
    compiler_workdir: str | os.PathLike[str] | None = None,
    compiler_args: str | Sequence[str] | None = None,
    **unsupported: Any,
) -> dict[str, Any]:
    """Trace the SavedModel at ``model_dir`` and save the traced model at ``new_model_dir``.

    Deprecated: use :func:`tfaccel.trace` (or ``tfaccel trace SRC DST`` on the command line).
    Example inputs come from ``model_feed_dict`` (arrays by input name), else from
    ``model_shape_feed_dict`` (shapes by input name), else from the signature with an unknown first
    dimension set to ``batch_size``. ``compiler_args`` are trace flags (``"--backend=xla"`` or a list of
    them); ``compiler_workdir`` is ``--workdir``. Returns ``{"OnNeuronRatio": ratio, "report": the
    placement report as JSON}``.

    The new SavedModel has the compiled signature (as ``serving_default`` and under its own key) with the
    same input and output keys, and, when the loaded source was callable (``loaded(x)``, or Keras 3's
    ``loaded.serve(x)``), the same function taking the same arguments and returning the same structure.

    Example::

        import tfaccel as tfn
        result = tfn.saved_model.compile("resnet_savedmodel", "resnet_traced", batch_size=4)
        print(result["OnNeuronRatio"])
    """
    warnings.warn(
        "tfaccel.saved_model.compile is deprecated; use tfaccel.trace(model, example_inputs) and "
        "model.save(dir), or the `tfaccel trace SRC DST` command",
        DeprecationWarning,
        stacklevel=2,
    )
    if unsupported:
        name = sorted(unsupported)[0]
        advice = _NOT_SUPPORTED.get(name)
        if advice is None:
            raise TypeError(f"saved_model.compile() got an unexpected keyword argument {name!r}")
        raise OptionsError(f"saved_model.compile(): {name}= is not supported by tfaccel; {advice}")
    from tfaccel.compiler.pipeline import trace  # compile is a thin layer over trace

    options: dict[str, Any] = {}
    if compiler_args is not None:
        text = compiler_args if isinstance(compiler_args, str) else shlex.join(compiler_args)
        options.update(parse_flags(text, "saved_model.compile(compiler_args=...)"))
    if compiler_workdir is not None:
        options["workdir"] = os.fspath(compiler_workdir)
    if minimum_segment_size is not None:
        options["min_segment_size"] = minimum_segment_size
    sig = open_signature(model_dir, signature_def_key, tags)
    examples = example_inputs(
        sig,
        batch_size=None if batch_size == 1 else batch_size,  # 1 is the default, not a demand
        arrays=dict(model_feed_dict) if model_feed_dict is not None else None,
        shapes=model_shape_feed_dict,
    )
    traced = trace(sig.function, examples, **options)
    executable = traced.tfaccel_executable
    endpoints: dict[str, Any] = {}
    for name in _ENDPOINTS:
        source = _source_function(sig.loaded, name)
        kept = None if source is None else _call_like(source, name, sig, examples, executable)
        if kept is not None:
            endpoints[name] = kept
    others = sorted(set(sig.loaded.signatures) - {sig.name})
    if others:
        logger.warning(
            "saved_model.compile: %s has more signatures than the compiled %r (%s); the new SavedModel "
            "has only that one: compile each signature into its own directory to keep the others",
            sig.path,
            sig.name,
            ", ".join(others),
        )
    keys = () if sig.name == "serving_default" else (sig.name,)
    saving.save(executable, os.fspath(new_model_dir), endpoints=endpoints, signature_keys=keys)
    report = executable.report
    return {"OnNeuronRatio": report.ratio, "report": report.to_json()}


# -- the source's call, kept -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Route:
    """One form of the source's call (a concrete function of its ``__call__``) and how the compiled
    signature answers it: ``input_keys`` names the signature input of each tensor of ``form`` (flatten
    order), ``output_keys`` the signature output of each tensor of ``outputs``; or ``refusal``, why not.
    """

    form: tuple[tuple[Any, ...], dict[str, Any]]  # (args, kwargs): TensorSpecs and Python values
    outputs: Any  # the source's output structure: TensorSpecs and Python values
    input_keys: tuple[str, ...] = ()
    output_keys: tuple[str, ...] = ()
    refusal: str = ""

    @property
    def traceable(self) -> bool:
        """False for a composite (ragged, sparse) input or output: no stand-in can be made, so that form
        is left out (calling it finds no matching function).
        """
        leaves = tf.nest.flatten((self.form, self.outputs))
        return all(isinstance(leaf, tf.TensorSpec) or not isinstance(leaf, tf.TypeSpec) for leaf in leaves)


def _source_function(loaded: Any, name: str) -> Any:
    """The source's restored ``tf.function`` ``name`` (``__call__``: what ``loaded(...)`` runs), or None."""
    function = getattr(loaded, name, None)
    if isinstance(function, tf.types.experimental.PolymorphicFunction) and getattr(
        function, "concrete_functions", None
    ):
        return function
    return None


def _call_like(
    source: Any, name: str, sig: Signature, examples: Mapping[str, Any], executable: Executable
) -> Any:
    """A ``tf.function`` called like ``source`` (same parameters, one concrete function per form of it)
    that runs the compiled signature: the new SavedModel's ``name`` (``__call__``), or None when no form
    of it can be traced.
    """
    caller = "loaded" if name == "__call__" else f"loaded.{name}"
    try:
        signature = inspect.signature(source)
    except (TypeError, ValueError):  # no recorded parameters: the forms are matched as they are
        signature = inspect.Signature(
            [
                inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL),
                inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD),
            ]
        )
    feeds = {name: tf.constant(value) for name, value in examples.items()}
    want = {key: np.asarray(value) for key, value in sig.function(**feeds).items()}
    # forms passing True (training=True) run last: their side effects (batch norm statistics) must not
    # change what the others are compared with
    concretes = sorted(
        source.concrete_functions,
        key=lambda c: bool(_flags(signature, _canonical(signature, *c.structured_input_signature))),
    )
    routes = [_route(source, caller, concrete, signature, sig, feeds, want) for concrete in concretes]
    kept = [f"{caller}({_describe(signature, r.form)})" for r in routes if not r.refusal]
    for route in routes:
        if route.refusal:
            logger.warning("%s", route.refusal)
    advice = (
        f"call it as {' or '.join(kept)}, or through signatures[{sig.name}](**inputs)"
        if kept
        else f"call signatures[{sig.name}](**inputs), or trace the model object with tfaccel.trace"
    )
    names = executable.output_names

    def call(*args: Any, **kwargs: Any) -> Any:
        canonical = _canonical(signature, args, kwargs)
        route = next((r for r in routes if _marks(canonical) == _marks(r.form)), None)
        if route is None:  # only the routes' forms are traced and saved; no other reaches the SavedModel
            raise ExportError(f"{caller}({_text(canonical)}) is no form of the source's {name}; {advice}")
        if route.refusal:
            stop = tf.debugging.Assert(tf.constant(False), [f"{route.refusal}; {advice}"])
            with tf.control_dependencies([stop]):
                return tf.nest.map_structure(_never_returned, route.outputs)
        tensors = [leaf for leaf in tf.nest.flatten(canonical) if isinstance(leaf, tf.Tensor)]
        flat = executable.layout.split_call((), dict(zip(route.input_keys, tensors, strict=True)))
        results = dict(zip(names, tf.nest.flatten(executable.call_flat(*flat)), strict=True))
        picked = iter([results[key] for key in route.output_keys])
        return tf.nest.map_structure(
            lambda leaf: next(picked) if isinstance(leaf, tf.TensorSpec) else leaf, route.outputs
        )

    call.__signature__ = signature  # type: ignore[attr-defined]  # tf.function binds calls as the source did
    function = tf.function(call, autograph=False)
    traceable = [route for route in routes if route.traceable]
    for route in traceable:
        args, kwargs = route.form
        function.get_concrete_function(*args, **kwargs)
    return function if traceable else None


def _route(
    source: Any,
    caller: str,
    concrete: Any,
    signature: inspect.Signature,
    sig: Signature,
    feeds: Mapping[str, tf.Tensor],
    want: Mapping[str, np.ndarray],
) -> _Route:
    form = _canonical(signature, *concrete.structured_input_signature)
    outputs = concrete.structured_outputs
    call = f"saved_model.compile of {sig.path}: {caller}({_describe(signature, form)})"

    def refused(reason: str) -> _Route:
        return _Route(form, outputs, refusal=f"tfaccel: {call} {reason}")

    specs = [leaf for leaf in tf.nest.flatten(form) if isinstance(leaf, tf.TypeSpec)]
    results = [leaf for leaf in tf.nest.flatten(outputs) if isinstance(leaf, tf.TypeSpec)]
    if not all(isinstance(spec, tf.TensorSpec) for spec in (*specs, *results)):
        return refused(
            "takes or returns a composite tensor (ragged or sparse), which a signature cannot: the compiled "
            "model has no such form"
        )
    matches: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
    ran = False
    for order in _input_orders(specs, sig, feeds):
        got = _probe(source, form, order, feeds)
        ran = ran or got is not None
        keys = None if got is None else _output_keys(got, want)
        if keys is not None:
            matches.append((order, keys))
    if not ran:
        return refused(
            f"does not take the example inputs the model was compiled with ({_feeds_text(feeds)}): compile "
            "again with example inputs this call takes (model_feed_dict= or model_shape_feed_dict=)"
        )
    flags = _flags(signature, form)
    if not matches and flags:  # e.g. training=True with dropout: not what the signature computes
        return refused(
            f"passes {', '.join(f'{name}=True' for name in flags)} and then computes something else than "
            f"signature {sig.name} (compared on the example inputs): the compiled model runs inference only, "
            "as that signature does"
        )
    if not matches:
        return refused(
            f"does not compute what signature {sig.name} computes (compared on the example inputs), and "
            "only that signature was compiled"
        )
    if len({order for order, _ in matches}) > 1:
        return refused(
            f"cannot be matched to the inputs of signature {sig.name}: the example inputs give the same "
            "answers with its tensors in more than one order; compile with distinct example values "
            "(model_feed_dict=)"
        )
    order, keys = matches[0]
    return _Route(form, outputs, order, keys)


def _canonical(
    signature: inspect.Signature, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``(args, kwargs)`` bound to ``signature`` with its defaults: one form however the call spelled it."""
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return tuple(args), dict(kwargs)
    bound.apply_defaults()
    return tuple(bound.args), dict(bound.kwargs)


def _arguments(
    signature: inspect.Signature, form: tuple[Sequence[Any], Mapping[str, Any]]
) -> list[tuple[str, Any]]:
    try:
        return list(signature.bind(*form[0], **form[1]).arguments.items())
    except TypeError:
        return [(f"argument {i}", value) for i, value in enumerate(tf.nest.flatten(form))]


def _marks(form: Any) -> Any:
    """``form`` with each tensor (or spec) replaced by its dtype and shape: how a call picks its route."""

    def mark(leaf: Any) -> Any:
        if isinstance(leaf, (tf.Tensor, tf.TensorSpec)):
            dims = None if leaf.shape.rank is None else tuple(leaf.shape.as_list())
            return ("tensor", leaf.dtype.name, dims)
        return leaf

    return tf.nest.map_structure(mark, form)


def _input_orders(
    specs: Sequence[tf.TensorSpec], sig: Signature, feeds: Mapping[str, tf.Tensor]
) -> list[tuple[str, ...]]:
    """Which signature input each of the call's tensors may be: by name when the names are the
    signature's, else every order that fits the dtypes and the examples' shapes (each is then run).
    """
    names = list(sig.inputs)
    if len(specs) != len(names):
        return []
    given = tuple(str(spec.name) for spec in specs)
    if all(spec.name for spec in specs) and sorted(given) == sorted(names):
        return [given]

    def fits(spec: tf.TensorSpec, name: str) -> bool:
        return bool(spec.dtype == sig.inputs[name].dtype and spec.shape.is_compatible_with(feeds[name].shape))

    orders = itertools.permutations(names)
    fitting = (order for order in orders if all(fits(s, n) for s, n in zip(specs, order, strict=True)))
    return list(itertools.islice(fitting, _MAX_ORDERS))


def _probe(source: Any, form: Any, order: Sequence[str], feeds: Mapping[str, tf.Tensor]) -> Any:
    """The source's call on the examples, its tensors fed in ``order``; None when it does not take them."""
    names = iter(order)
    filled = [
        feeds[next(names)] if isinstance(leaf, tf.TensorSpec) else leaf for leaf in tf.nest.flatten(form)
    ]
    args, kwargs = tf.nest.pack_sequence_as(form, filled)
    try:
        return source(*args, **kwargs)
    except (tf.errors.OpError, TypeError, ValueError) as err:
        logger.debug("the source's call did not take the examples in order %s: %s", order, err)
        return None


def _output_keys(got: Any, want: Mapping[str, np.ndarray]) -> tuple[str, ...] | None:
    """The signature output each tensor of ``got`` is (the one with its values), or None.

    Where several outputs have the same values, the key TensorFlow gives a signature made from this
    structure decides (a dict's key, a namedtuple's field, ``output_<i>``).
    """
    leaves = tf.nest.flatten(got)
    tensors = [leaf for leaf in leaves if isinstance(leaf, tf.Tensor)]
    if isinstance(got, tf.Tensor):
        named: list[Any] = ["output_0"]
    elif hasattr(got, "_fields"):
        named = list(got._fields)
    elif isinstance(got, Mapping):
        named = sorted(got)
    elif isinstance(got, (list, tuple)):
        named = [f"output_{i}" for i in range(len(got))]
    else:
        named = []
    if len(named) != len(tensors) or len(leaves) != len(tensors):
        named = [None] * len(tensors)
    keys = []
    for tensor, name in zip(tensors, named, strict=True):
        same = [key for key, value in want.items() if _same(tensor.numpy(), value)]
        if name in same:
            keys.append(str(name))
        elif len(same) == 1:
            keys.append(same[0])
        else:
            return None
    return tuple(keys)


def _same(got: np.ndarray, want: np.ndarray) -> bool:
    if got.shape != want.shape or got.dtype != want.dtype:
        return False
    if got.dtype.kind in "fc":
        return bool(np.allclose(got, want, rtol=_SAME_RTOL, atol=_SAME_ATOL, equal_nan=True))
    return bool(np.array_equal(got, want))


def _never_returned(leaf: Any) -> Any:
    """A stand-in output of a refused form (its Assert fails first): the structure needs tensors."""
    if not isinstance(leaf, tf.TensorSpec):
        return leaf
    dims = [] if leaf.shape.rank is None else [d or 0 for d in leaf.shape.as_list()]
    return tf.identity(tf.zeros(dims, leaf.dtype))


def _spec_text(spec: tf.TensorSpec) -> str:
    dims = "?" if spec.shape.rank is None else ",".join("?" if d is None else str(d) for d in spec.shape)
    return f"{spec.dtype.name}[{dims}]"


def _text(value: Any) -> str:
    """A call's argument as the errors show it (no quotes: an Assert's message would escape them)."""
    if isinstance(value, tf.TensorSpec):
        return _spec_text(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    return str(value)


def _describe(signature: inspect.Signature, form: tuple[Sequence[Any], Mapping[str, Any]]) -> str:
    """``x=float32[?,6], training=False``: a form of the call, by parameter name."""
    return ", ".join(f"{name}={_text(value)}" for name, value in _arguments(signature, form))


def _feeds_text(feeds: Mapping[str, tf.Tensor]) -> str:
    return ", ".join(f"{name}: {_spec_text(tf.TensorSpec.from_tensor(t))}" for name, t in feeds.items())


def _flags(signature: inspect.Signature, form: tuple[Sequence[Any], Mapping[str, Any]]) -> list[str]:
    """The parameters a form passes ``True`` (``training``): such a form may compute something else."""
    return [name for name, value in _arguments(signature, form) if value is True]
