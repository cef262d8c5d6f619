"""``TraceRun``: what one call of ``trace`` knows besides the artefact in flight.

Why one object: the options, the candidate backends, the user's callback and the examples are needed by
several stages, and the sentences a trace owes its user (every fallback, every option that could not be
honoured) used to be collected in six places in three styles. A stage reads what it needs from the run and
says what happened with :meth:`TraceRun.note`; the report lists the notes in a fixed order of kinds.
"""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tfaccel.backends import candidate_backends
from tfaccel.backends.base import Backend, BackendSettings
from tfaccel.compiler.calibration import calibration_examples
from tfaccel.compiler.examples import Examples
from tfaccel.compiler.ir import Node
from tfaccel.compiler.options import TraceOptions
from tfaccel.compiler.partition import Cluster
from tfaccel.errors import OptionsError
from tfaccel.runtime.batching import BatchPlan

if TYPE_CHECKING:
    from tfaccel.backends.base import CompiledSubgraph
    from tfaccel.compiler.machine import LoadReading
    from tfaccel.compiler.timing_cache import TimingCache

__all__ = ["CHECK_STAGES_ENV", "NoteKind", "TraceRun"]

logger = logging.getLogger("tfaccel.compiler.pipeline")

#: set to 1 to check every stage's pre- and postconditions (the test suite does; costs a little time)
CHECK_STAGES_ENV = "TFACCEL_CHECK_STAGES"


class NoteKind(enum.Enum):
    """What a note is about; the report lists notes in this order, then in the order they were made."""

    OPTIONS = "options"  # a flag was accepted for the reference's sake but means nothing here
    BACKEND = "backend"  # a candidate backend cannot do what was asked on this machine
    BATCH = "dynamic batch fallback"  # --dynamic-batch-size could not trace one graph for any batch
    PLACEMENT = "placement fallback"  # --placement=profile did not measure
    CAPTURE = "capture"  # capture decided something (e.g. --fp32-cast had no effect)
    COMPILE = "compile fallback"  # a backend refused a subgraph: nodes went back to TF
    PIPELINE = "pipeline fallback"  # a subgraph could not be cut into pipeline stages
    QUANTIZE = "int8 quantization"  # what --quantize=int8 did with each subgraph, and why
    GUARD = "whole-model check"  # the traced model against the original (the guard stage)


@dataclass
class TraceRun:
    """One trace: inputs, options, candidate backends, the batch plan once decided, and the notes."""

    func: Callable[..., Any]
    examples: Examples
    options: TraceOptions
    backends: tuple[Backend, ...]
    #: the user's ``subgraph_builder_function(NodeDef) -> bool`` as given (None: automatic placement)
    user_callback: Callable[[Any], bool] | None = None
    #: the same adapted to IR nodes with clear errors, by the place stage (which checks it)
    callback: Callable[[Node], bool] | None = None
    batch_plan: BatchPlan = field(default_factory=BatchPlan)
    #: ``calibration_inputs`` for ``--quantize=int8``, checked against the examples (compiler/quantize.py)
    calibration: tuple[Examples, ...] = ()
    #: the examples the graph was traced on when not the user's (a micro-batch of them, for pipelining)
    traced_examples: Examples | None = None
    #: check each stage's pre- and postconditions (``TFACCEL_CHECK_STAGES=1``)
    check_stages: bool = False
    #: compilations by cluster contents and backend (see :mod:`tfaccel.compiler.compilation`)
    compile_cache: dict[Cluster, CompiledSubgraph] = field(default_factory=dict)
    #: subgraphs a backend's compiler rejected, in order (``--workdir`` keeps each one's graph and log)
    compile_failures: list[CompileFailure] = field(default_factory=list)
    #: the measured times kept across traces (opened by the measure stage; ``--timing-cache``)
    timings: TimingCache | None = None
    #: what made the measure stage distrust its timings (other processes' load), if anything did
    busy: LoadReading | None = None
    #: the captured graph's content hash (the timing cache's keys), computed once when first needed
    model_digest: str | None = None
    _notes: list[tuple[NoteKind, str]] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        func: Callable[..., Any],
        example_inputs: Any,
        options: TraceOptions,
        subgraph_builder_function: Callable[[Any], bool] | None = None,
        calibration_inputs: Any = None,
    ) -> TraceRun:
        """A run of ``func`` on ``example_inputs`` with the candidate backends ``options`` name (what
        :func:`tfaccel.backends.candidate_backends` left out is the first note).
        """
        examples = Examples.of(example_inputs)
        calibration = calibration_examples(
            calibration_inputs, examples, options.quantize, options.dynamic_batch_size
        )
        if calibration and options.neuroncore_pipeline_cores > 1:
            raise OptionsError(
                "--quantize=int8 and --neuroncore-pipeline-cores > 1 cannot be combined yet (the pipelined "
                "stages are traced on micro-batches); drop one of them"
            )
        settings = BackendSettings(
            fp32_cast=options.fp32_cast,
            streams=options.openvino_streams,
            nan_guards=options.nan_semantics == "tensorflow",
        )
        backends, left_out = candidate_backends(options.backend, settings)
        check = os.environ.get(CHECK_STAGES_ENV, "") not in ("", "0")
        run = cls(
            func,
            examples,
            options,
            tuple(backends),
            user_callback=subgraph_builder_function,
            check_stages=check,
            calibration=calibration,
        )
        for sentence in options.remarks:
            run.note(NoteKind.OPTIONS, sentence)
        if options.openvino_streams != 1:
            run.note(NoteKind.OPTIONS, streams_sentence(options.openvino_streams), log=False)
        if not settings.nan_guards:
            run.note(NoteKind.OPTIONS, RELAXED_NAN_SENTENCE, log=False)
        for sentence in left_out:
            run.note(NoteKind.BACKEND, sentence)
        return run

    @property
    def examples_as_traced(self) -> Examples:
        """The examples the captured graph was traced on (what measuring feeds it)."""
        return self.traced_examples or self.examples

    @property
    def workdir(self) -> str | None:
        return self.options.workdir

    @property
    def backend_by_name(self) -> dict[str, Backend]:
        return {b.name: b for b in self.backends}

    def note(self, kind: NoteKind, sentence: str, log: bool = True) -> None:
        """Record a sentence for the report (and log it as a warning unless already logged)."""
        self._notes.append((kind, sentence))
        if log:
            logger.warning("%s: %s", kind.value, sentence)

    def mark(self) -> tuple[int, int]:
        """A point to :meth:`rollback` to (the notes and compile failures recorded so far)."""
        return len(self._notes), len(self.compile_failures)

    def rollback(self, mark: tuple[int, int]) -> None:
        """Forget the notes and compile failures recorded since ``mark`` (a step whose outcome was
        discarded: its failures are not the model's, so no workdir folder either).
        """
        notes, failures = mark
        del self._notes[notes:]
        del self.compile_failures[failures:]

    @property
    def notes(self) -> list[str]:
        """The notes, grouped by kind in :class:`NoteKind` order (the report's fallbacks)."""
        order = list(NoteKind)
        return [s for _, s in sorted(self._notes, key=lambda item: order.index(item[0]))]


@dataclass(frozen=True)
class CompileFailure:
    """One subgraph a backend's compiler rejected: which, where it went, and everything the compiler said."""

    cluster: Cluster
    message: str
    log: str
    #: the suggested fix (:func:`tfaccel.compiler.hints.compile_hint`), if the log shows a known cause
    hint: str | None
    #: its folder under ``--workdir``, ``failed/<n>-<cluster>-<backend>`` (numbered: a re-partitioned
    #: graph may reuse a cluster's name)
    folder: str


#: what the report says of ``--nan-semantics=relaxed`` (a choice the user made, so a note, not a fallback)
RELAXED_NAN_SENTENCE = (
    "--nan-semantics=relaxed: compiled subgraphs use their backend's own NaN handling (no NaN guards): a "
    "NaN, in the inputs or arising inside (0/0, inf - inf), may come out as a number (OpenVINO's ReLU, "
    "max and exp turn NaN into numbers; XLA's min/max ignore NaN), and so may an infinity TF turns into "
    "NaN or a bound (a softmax row holding +inf, a max-pool window of only -inf); finite values give the "
    "same answers as without it"
)


def streams_sentence(streams: int) -> str:
    """What the report says of a throughput setting (``--performance-hint``/``--num-streams``)."""
    count = (
        "the number of streams OpenVINO picks for the machine that loads the model"
        if streams == 0
        else (f"{streams} execution streams")
    )
    return (
        f"--performance-hint=throughput: openvino subgraphs run with OpenVINO's throughput hint and {count}, "
        "so concurrent calls (threads, the model server's batching) run in parallel and one call alone is "
        "slower; measured placement times one call with the latency setting and the whole-model check is not "
        "run; xla subgraphs have no streams"
    )
