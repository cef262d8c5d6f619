"""The model ``trace`` returns: an inference-only Keras model around the partitioned graph.

Why two layers: :class:`Executable` is plain TensorFlow (a ``tf.function`` over flat inputs returning the
original output structure, plus input checks) and is what gets saved; the Keras class on top only adapts
it to whichever Keras the user runs (tf_keras with ``TF_USE_LEGACY_KERAS=1``, Keras 3 otherwise), so the
reference's ``model.save(dir)`` / ``tf.keras.models.load_model(dir)`` flow keeps working on tf_keras.
"""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import tensorflow as tf

from tfaccel.compiler.examples import InputLayout
from tfaccel.compiler.report import PlacementReport
from tfaccel.errors import ExportError, InputTypeError, InputValueError, KerasFormatError
from tfaccel.runtime import restore, saving
from tfaccel.runtime.batching import BatchPlan
from tfaccel.runtime.direct import DirectCall, DirectUnavailable
from tfaccel.runtime.metadata import FORMAT, check_format

__all__ = [
    "Executable",
    "TracedModel",
    "checked_inputs",
    "keras_module",
    "loose_specs",
    "make_model",
    "uses_legacy_keras",
]

logger = logging.getLogger(__name__)


def uses_legacy_keras() -> bool:
    """True when ``TF_USE_LEGACY_KERAS`` selects tf_keras, as it does for ``tf.keras`` itself."""
    return os.environ.get("TF_USE_LEGACY_KERAS", "").strip().lower() in ("1", "true", "yes")


def keras_module() -> Any:
    if uses_legacy_keras():
        import tf_keras

        return tf_keras
    import keras

    return keras


def input_where(layout: InputLayout, index: int) -> str:
    """How errors name flat input ``index``: ``input 'ids' (inputs['ids'])``."""
    return f"input {layout.specs[index].name!r} ({layout.where(index).replace('example_inputs', 'inputs')})"


def loose_specs(layout: InputLayout) -> list[tf.TensorSpec]:
    """The input signature of ``call_flat``: the dtypes, with unknown shapes (not even the rank).

    Why not the traced shapes: a caller whose own shapes are unknown (an outer ``tf.function`` with
    ``[None, 4]``, or with an unknown rank) binds to a static signature without any check, and inside a
    function with static argument shapes (or a static rank) TensorFlow folds ``tf.shape`` (or its size) to
    a constant, so an in-graph check would be folded away too. With unknown shapes the check in
    :func:`checked_inputs` survives, in the SavedModel as well.
    """
    return [tf.TensorSpec(None, tf.as_dtype(s.dtype), name=s.name) for s in layout.specs]


def checked_inputs(flat: Sequence[tf.Tensor], layout: InputLayout, dynamic_batch: bool) -> list[tf.Tensor]:
    """``flat`` after in-graph checks of each input's shape against the traced one (any dim 0 with
    ``dynamic_batch``).

    The Python check in :meth:`Executable.flatten` gives the eager caller a ``tfaccel`` error before any
    graph runs; this one runs inside the graph (so in every saved and restored function, and for callers
    whose shapes are only known at run time) and raises ``InvalidArgumentError`` naming the input and both
    shapes. Strings and int32 only in the Assert's data, so TensorFlow adds no ``cond`` around it; no
    quotes in its text (the Assert would escape them). No ``tf.ensure_shape`` after it: grappler may run
    that first, and its message names neither the input nor the model's shape.
    """
    checked = []
    for tensor, spec in zip(flat, layout.specs, strict=True):
        rank = len(spec.shape)
        first = 1 if dynamic_batch and rank else 0
        traced = [None if d < first else n for d, n in enumerate(spec.shape)]
        shape = tf.shape(tensor, out_type=tf.int32)
        padded = tf.concat([shape, tf.fill([rank], -1)], axis=0)[:rank]  # a wrong rank must not raise here
        ok = tf.logical_and(
            tf.equal(tf.size(shape), rank),
            tf.reduce_all(tf.equal(padded[first:], tf.constant(spec.shape[first:], tf.int32))),
        )
        remedy = (
            "only dim 0 (the batch) may differ"
            if first
            else "it takes its traced batch only (its report says why): trace again with example inputs of "
            "this shape"
        )
        check = tf.debugging.Assert(
            ok,
            [
                f"input {spec.name} has shape",
                shape,
                f"but the model was traced for {traced}; {remedy}",
            ],
            summarize=64,
        )
        with tf.control_dependencies([check]):
            checked.append(tf.identity(tensor))
    return checked


class Executable:
    """Flat, checked calls into the traced graph, with the user's calling convention on top.

    ``call_flat`` takes the flat input tensors in signature order and returns the original output
    structure; it is a ``tf.function`` in the tracing process and the restored function after loading.
    """

    def __init__(
        self,
        call_flat: Callable[..., Any],
        layout: InputLayout,
        output_names: Sequence[str],
        report: PlacementReport,
        graph_def: Any = None,
        batch_plan: BatchPlan | None = None,
        weights: Sequence[Any] = (),
        direct: DirectCall | None = None,
        output_structure: Any = None,
        direct_why: str = "",
    ) -> None:
        self.call_flat = call_flat
        #: eager calls of a small one-subgraph openvino model skip the TF function (:mod:`.direct`)
        self.direct = direct if output_structure is not None else None
        self.output_structure = output_structure
        #: why eager calls go through ``call_flat`` ("" when they are direct)
        self.direct_why = "" if self.direct is not None else (direct_why or "not a traced graph")
        #: how the model takes its batch (any dim 0 is accepted when ``batch_plan.any_batch``)
        self.batch_plan = batch_plan or BatchPlan()
        #: the variables ``call_flat`` reads (saved as SavedModel variables): ``--extract-weights``
        #: weights and the compiled OpenVINO models (string variables)
        self.weights = list(weights)
        #: the partitioned GraphDef, in the tracing process only (not restored by ``load``)
        self.graph_def = graph_def
        self.layout = layout
        #: per input: its dtype and the exact shape the fast path of ``_check`` accepts as is
        self._expected = [(tf.as_dtype(s.dtype), tf.TensorShape(s.shape)) for s in layout.specs]
        self.output_names = tuple(output_names)
        self.report = report

    @classmethod
    def from_restored(
        cls, call_flat: Any, weights: Sequence[Any], saved: restore.SavedMetadata, where: str
    ) -> Executable:
        """The executable of a loaded model: its restored ``tfaccel_call_flat`` (checked against the saved
        inputs) and the variables it reads, described by the metadata saved with it (``where`` it came
        from, for errors).
        """
        restore.check_call_flat(call_flat, saved.layout, where)
        with tf.init_scope():  # the direct path's analysis runs the graph's constants: eagerly, even when
            # the first use of a model tf_keras revived is inside a tf.function or predict()
            direct, structure, why = restore.direct_call(call_flat, saved.layout, saved.plan)
        return cls(
            call_flat,
            saved.layout,
            saved.output_names,
            saved.report,
            batch_plan=saved.plan,
            weights=weights,
            direct=direct,
            output_structure=structure,
            direct_why=why,
        )

    def call_eager(self, flat: Sequence[tf.Tensor]) -> Any:
        """An eager call on inputs :meth:`flatten` checked: direct when it applies, else ``call_flat``."""
        direct = self.direct
        if direct is not None and direct.accepts(flat):
            try:
                return tf.nest.pack_sequence_as(self.output_structure, direct(flat))
            except DirectUnavailable as err:  # never silently: one warning, then the graph for good
                self.direct, self.direct_why = None, str(err)
                logger.warning(
                    "direct eager calls are off for this model (%s); it runs through its graph", err
                )
        return self.call_flat(*flat)

    # -- inputs ------------------------------------------------------------------------------------------
    def flatten(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[tf.Tensor]:
        """The flat input tensors for ``call_flat``, checked against the traced signature."""
        leaves = self.layout.split_call(args, kwargs)
        tensors = [self._check(i, leaf) for i, leaf in enumerate(leaves)]
        if self.batch_plan.any_batch:
            self._check_same_batch(tensors)
        return tensors

    def _check_same_batch(self, tensors: Sequence[tf.Tensor]) -> None:
        specs = self.layout.specs
        first = tensors[0].shape
        for spec, tensor in zip(specs[1:], tensors[1:], strict=True):
            if first[0] is not None and tensor.shape[0] is not None and tensor.shape[0] != first[0]:
                raise InputValueError(
                    f"input {spec.name!r} has shape {tensor.shape.as_list()} and input "
                    f"{specs[0].name!r} has shape {first.as_list()}: all inputs must have the same batch "
                    "size (dim 0)",
                )

    def _check(self, index: int, leaf: Any) -> tf.Tensor:
        spec = self.layout.specs[index]
        want, expected = self._expected[index]
        if isinstance(leaf, tf.Tensor) and leaf.dtype == want and leaf.shape == expected:
            return leaf  # the common case, kept cheap: it is paid on every call of a small model
        where = input_where(self.layout, index)
        if isinstance(leaf, np.ndarray) or np.isscalar(leaf):
            array = np.asarray(leaf)
            got = tf.as_dtype(array.dtype) if array.dtype.kind != "U" else tf.string
            if got != want:
                raise InputTypeError(
                    f"{where} must be {want.name}, got {array.dtype}; convert it first "
                    f"(e.g. x.astype(np.{want.as_numpy_dtype.__name__}))"
                )
            tensor = tf.convert_to_tensor(array, dtype=want)
        elif isinstance(leaf, (tf.Tensor, tf.Variable)):
            tensor = tf.convert_to_tensor(leaf)
            if tensor.dtype != want:
                raise InputTypeError(
                    f"{where} must be {want.name}, got {tensor.dtype.name}; cast it with tf.cast"
                )
        else:
            raise InputTypeError(f"{where} must be a tf.Tensor or numpy array, got {type(leaf).__name__}")
        if tensor.shape.rank is None or expected.is_compatible_with(tensor.shape):
            return tensor
        if self.batch_plan.any_batch:
            if tensor.shape.rank == expected.rank and expected[1:].is_compatible_with(tensor.shape[1:]):
                return tensor
            raise InputValueError(
                f"{where} has shape {tensor.shape.as_list()} but the model was traced for "
                f"{list(spec.shape)}; only dim 0 (the batch) may differ"
            )
        why = self.batch_plan.why
        takes = f"it takes batch {spec.shape[0] if spec.shape else ''} only: {why}; " if why else ""
        raise InputValueError(
            f"{where} has shape {tensor.shape.as_list()} but the model was traced for {list(spec.shape)}; "
            f"{takes}trace again with example inputs of this shape"
        )

    # -- signature ---------------------------------------------------------------------------------------
    def serving_function(self) -> Any:
        """``serving_default``: the signature's inputs by name, outputs as a flat dict by name."""
        specs = [s.tensor_spec(dynamic_batch=self.batch_plan.any_batch) for s in self.layout.specs]
        names = self.output_names
        if len(set(names)) != len(names):
            raise ExportError(f"the serving signature's output names are not distinct: {list(names)}")
        call_flat = self.call_flat

        def serve(*flat: tf.Tensor) -> dict[str, tf.Tensor]:
            outputs = tf.nest.flatten(call_flat(*flat))
            return dict(zip(names, outputs, strict=True))

        return tf.function(serve, input_signature=specs, autograph=False)


@runtime_checkable
class TracedModel(Protocol):
    """The model :func:`tfaccel.trace` returns, as type checkers (and ``isinstance``) see it.

    Why a protocol and not the class: the class is a Keras model defined at run time for the Keras in use
    (tf_keras with ``TF_USE_LEGACY_KERAS=1``, Keras 3 otherwise; :func:`make_model`), so no class can be
    named before then. It has these members, and Keras' own (not listed here).
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the model; called like the original (``model(x)``, ``model(*x)`` or ``model(**x)``)."""

    @property
    def on_neuron_ratio(self) -> float:
        """Ops in compiled subgraphs / all ops (Placeholder, Identity, NoOp, Const not counted)."""

    @property
    def on_accelerator_ratio(self) -> float:
        """Backend-neutral name of :attr:`on_neuron_ratio`."""

    @property
    def placement_report(self) -> PlacementReport:
        """What ran where and why (``render``, ``to_json``)."""

    @property
    def tfaccel_executable(self) -> Executable:
        """The plain-TensorFlow function behind the model (what is saved)."""

    @property
    def aws_neuron_function(self) -> Any:
        """The reference's attribute: the ``tf`` ConcreteFunction that runs the partitioned graph (flat
        input tensors in, the model's outputs out); the accelerator ops are in its graph's library.
        """

    def summary(self, *args: Any, print_fn: Callable[[str], Any] | None = None, **kwargs: Any) -> None:
        """Print the placement table: subgraphs, op counts and the ops kept on TF with reasons."""

    def save(self, filepath: str | os.PathLike[str], *args: Any, **kwargs: Any) -> None:
        """Write a SavedModel directory (``serving_default`` signature plus tfaccel metadata)."""

    def export(self, filepath: str | os.PathLike[str], format: str = "tf_saved_model", **kwargs: Any) -> None:
        """Keras 3's ``export``: the same SavedModel as :meth:`save`."""


_CLASSES: dict[str, Callable[[Executable], TracedModel]] = {}


def make_model(executable: Executable) -> TracedModel:
    """Wrap ``executable`` in the Keras model class of the active Keras flavour."""
    return _model_class(keras_module())(executable)


def _model_class(keras: Any) -> Callable[[Executable], TracedModel]:
    """The model class for ``keras`` (tf_keras or Keras 3), defined once per process."""
    flavour = keras.__name__
    if flavour not in _CLASSES:
        _CLASSES[flavour] = _define_model_class(keras)
    return _CLASSES[flavour]


def _define_model_class(keras: Any) -> Callable[[Executable], TracedModel]:
    legacy = keras.__name__ == "tf_keras"

    # named as the protocol it implements: the name users see (repr, Keras' saved metadata)
    class TracedModel(keras.Model):  # type: ignore[misc,name-defined]
        """An inference-only model produced by :func:`tfaccel.trace`.

        Call it like the original (``model(x)``, ``model(*x)`` or ``model(**x)``). ``on_neuron_ratio`` is
        the share of ops in compiled subgraphs; ``summary()`` prints what ran where and why.
        """

        def __init__(self, executable: Executable | None, saved: restore.SavedMetadata | None = None) -> None:
            super().__init__(name="tfaccel_traced_model", autocast=False)
            self._tfaccel_executable = executable
            #: set instead of the executable while tf_keras revives a saved model (:meth:`from_config`)
            self._tfaccel_saved = saved
            if executable is not None:
                # tracked so that a tf_keras SavedModel carries them, which tfaccel.load() uses; a revived
                # model gets the restored ones from tf_keras' loader
                self.tfaccel_call_flat = executable.call_flat
                self.tfaccel_weights = executable.weights
            self._convert_input_args = False
            self._tfaccel_called = False
            self.trainable = False
            self.built = True

        def _executable(self) -> Executable:
            executable = self._tfaccel_executable
            if executable is None:  # revived by tf_keras: its loader has set the restored function by now
                saved = self._tfaccel_saved
                assert saved is not None
                call_flat = getattr(self, "tfaccel_call_flat", None)
                if call_flat is None:
                    raise ExportError(f"{_REVIVED} lacks the tfaccel_call_flat function; save it again")
                weights = list(getattr(self, "tfaccel_weights", None) or ())
                executable = Executable.from_restored(call_flat, weights, saved, _REVIVED)
                self._tfaccel_executable = executable
            return executable

        def _report(self) -> PlacementReport:
            # a revived model knows its report before its function is restored
            saved = self._tfaccel_saved
            return saved.report if saved is not None else self._executable().report

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            # Check the inputs against the traced signature before Keras sees them (so the error is ours
            # and numpy keeps its dtype), then hand Keras one structure: call() takes a single argument.
            executable = self._executable()
            kwargs.pop("training", None)
            flat = executable.flatten(args, kwargs)
            if self._tfaccel_called and tf.executing_eagerly():
                # After the first call (which lets tf_keras record the save spec) Keras' call machinery
                # adds nothing to an inference-only graph but per-call overhead: go straight to the graph
                # (or straight to the compiled model, runtime/direct.py).
                return executable.call_eager(flat)
            self._tfaccel_called = True
            return super().__call__(executable.layout.keras_structure(flat))

        def call(self, inputs: Any, training: Any = None) -> Any:
            executable = self._executable()
            return executable.call_flat(*executable.layout.flatten_keras(inputs))

        @property
        def on_neuron_ratio(self) -> float:
            """Ops in compiled subgraphs / all ops (Placeholder, Identity, NoOp, Const not counted)."""
            return self._report().ratio

        @property
        def on_accelerator_ratio(self) -> float:
            """Backend-neutral name of :attr:`on_neuron_ratio`."""
            return self.on_neuron_ratio

        @property
        def placement_report(self) -> PlacementReport:
            return self._report()

        @property
        def tfaccel_executable(self) -> Executable:
            return self._executable()

        @property
        def aws_neuron_function(self) -> Any:
            """The reference's name for the concrete function of ``tfaccel_call_flat`` (no second copy)."""
            if self._tfaccel_executable is None and getattr(self, "tfaccel_call_flat", None) is None:
                # tf_keras' loader is still reviving this model (it reads the attribute before setting it)
                raise AttributeError("aws_neuron_function: the model is still being loaded")
            call_flat: Any = self._executable().call_flat  # a tf.function, or the restored one
            restored = getattr(call_flat, "concrete_functions", None)  # a restored function: concrete already
            return restored[0] if restored else call_flat.get_concrete_function()

        @aws_neuron_function.setter
        def aws_neuron_function(self, value: Any) -> None:
            # tf_keras' loader sets the saved copy on a revived model; it is derived from tfaccel_call_flat
            if self._tfaccel_executable is not None or self._tfaccel_saved is None:
                raise AttributeError("aws_neuron_function is read-only")

        def summary(self, *args: Any, print_fn: Callable[[str], Any] | None = None, **kwargs: Any) -> None:
            """Print the placement table: subgraphs, op counts and the ops kept on TF with reasons."""
            self._report().render(print_fn or print)

        def get_config(self) -> dict[str, Any]:
            # Keras' own formats (.keras, .h5) serialize the config first: refuse there, before they write
            # a file that cannot be loaded. A tf_keras SavedModel written by save() carries the metadata
            # instead, from which from_config() revives this class with its report.
            if _SAVING.get() is self:
                record = {**saving.metadata_record(self._executable()), "format": FORMAT}
                return {"name": self.name, "tfaccel": record}
            raise KerasFormatError(
                "a traced model cannot be saved in Keras' format (.keras, .h5) or rebuilt from a config: "
                "it is a compiled graph, not Keras layers; call model.save(dir) to write a "
                "SavedModel directory, and tfaccel.load(dir) to load it"
            )

        @classmethod
        def from_config(cls, config: Any, custom_objects: Any = None) -> Any:
            """The model tf_keras' ``load_model`` revives from a SavedModel :meth:`save` wrote: the report
            and calling convention from the config, the function from the SavedModel (set by the loader).
            """
            return cls(None, revived_metadata(config))

        def save_weights(self, *args: Any, **kwargs: Any) -> None:
            raise KerasFormatError(
                "a traced model's weights are part of its compiled graph and cannot be saved alone; call "
                "model.save(dir) to write the whole model as a SavedModel directory"
            )

        def export(self, filepath: Any, format: str = "tf_saved_model", **kwargs: Any) -> None:
            """Keras 3's ``export``: the same SavedModel as :meth:`save` (``serving_default`` included)."""
            if format != "tf_saved_model":
                raise ExportError(
                    f"export(format={format!r}): a traced model exports only format='tf_saved_model' (the "
                    "same SavedModel as model.save(dir))"
                )
            self.save(filepath)

        def save(self, filepath: Any, *args: Any, **kwargs: Any) -> None:
            """Write a SavedModel directory (``serving_default`` signature plus tfaccel metadata)."""
            from tfaccel.runtime.metadata import fspath

            path = fspath(filepath, "save")
            executable = self._executable()
            if legacy and not path.endswith((".h5", ".keras")):
                kwargs.setdefault("save_format", "tf")
                kwargs.setdefault("signatures", {"serving_default": executable.serving_function()})

                def write(staging: str) -> None:
                    token = _SAVING.set(self)  # get_config() gives the config load_model revives from
                    try:
                        keras.Model.save(self, staging, *args, **kwargs)
                    finally:
                        _SAVING.reset(token)
                    saving.write_metadata(staging, executable)

                saving.write_saved_model(path, write)
                return
            saving.save(executable, path)

    TracedModel.__qualname__ = TracedModel.__name__
    TracedModel.__module__ = __name__
    if legacy:  # saved under this name, which tfaccel's import registers for load_model (tfaccel/__init__)
        keras.saving.register_keras_serializable(package="tfaccel")(TracedModel)
    return TracedModel


#: the model whose ``save(dir)`` is writing a tf_keras SavedModel in this thread (or task): only its
#: ``get_config`` answers, and only there, so Keras' own formats stay refused, also from another thread
_SAVING: contextvars.ContextVar[Any] = contextvars.ContextVar("tfaccel_saving", default=None)

#: where a model revived by tf_keras' load_model came from, for errors and warnings
_REVIVED = "the tfaccel config in keras_metadata.pb (tf.keras.models.load_model)"


def revived_metadata(config: Any) -> restore.SavedMetadata:
    """The saved metadata in a tf_keras config :meth:`TracedModel.get_config` wrote, checked.

    A malformed one is logged before the error goes up: tf_keras then loads the SavedModel as a plain
    Keras model (callable, without the report), and the warning says why the report is missing.
    """
    try:
        meta = config.get("tfaccel") if isinstance(config, dict) else None
        if not isinstance(meta, dict):
            raise ExportError(f"{_REVIVED} is missing; save the traced model again")
        check_format(meta, _REVIVED)
        saved = restore.parse_metadata(meta, _REVIVED)
    except ExportError as err:
        logger.warning("%s; tf_keras loads the model without its placement report", err)
        raise
    restore.warn_versions(saved, "tf.keras.models.load_model")
    return saved


def revive(config: Any) -> TracedModel:
    """``TracedModel.from_config`` of the tf_keras class, for the loader tfaccel registers on import."""
    import tf_keras

    model: TracedModel = _model_class(tf_keras).from_config(config)  # type: ignore[attr-defined]
    return model
