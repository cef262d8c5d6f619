"""Trace options: one model for ``NEURON_CC_FLAGS``, ``TFACCEL_CC_FLAGS`` and ``trace(...)`` keywords.

Why one model: code written for the reference passes options through ``NEURON_CC_FLAGS`` and must keep
working, while new code wants keywords. Every source is parsed into the same :class:`TraceOptions`, with a
fixed precedence (keyword > ``TFACCEL_CC_FLAGS`` > ``NEURON_CC_FLAGS``), and every value remembers where it
came from so an error can say "NEURON_CC_FLAGS: --min-segment-size=0 must be a positive integer".
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from tfaccel.errors import OptionsError

__all__ = [
    "ENV_VARS",
    "FLAGS",
    "MAX_STREAMS",
    "PERFORMANCE_HINTS",
    "NAN_SEMANTICS",
    "PLACEMENT_MODES",
    "QUANTIZE_MODES",
    "TraceOptions",
    "resolve_options",
]

#: Environment variables read, lowest precedence first.
ENV_VARS = ("NEURON_CC_FLAGS", "TFACCEL_CC_FLAGS")


@dataclass(frozen=True)
class TraceOptions:
    """Every option ``trace`` understands, with its default."""

    workdir: str | None = None
    dynamic_batch_size: bool = False
    extract_weights: bool = False
    neuroncore_pipeline_cores: int = 1
    #: the reference's default: a lone supported op is compiled (measurement may still keep it on TF)
    min_segment_size: int = 1
    verbose: int = 0
    backend: str = "auto"
    fp32_cast: str = "none"
    placement: str = "profile"
    #: measured times: None = the tfaccel cache folder, ``off``, or a file (see compiler.timing_cache)
    timing_cache: str | None = None
    #: OpenVINO's performance hint for every openvino subgraph: ``latency`` or ``throughput``
    performance_hint: str = "latency"
    #: OpenVINO execution streams per openvino subgraph; 0: the hint decides (1 for latency)
    num_streams: int = 0
    #: post-training quantization of openvino subgraphs: ``none`` or ``int8`` (needs calibration inputs)
    quantize: str = "none"
    #: the largest error a quantized subgraph may show against fp32 on held-out calibration inputs
    quantize_tolerance: float = 0.05
    #: ``tensorflow``: NaN and infinity give TF's answers (backends' NaN-losing ops guarded); ``relaxed``:
    #: the backends' own NaN handling, unguarded and faster (see backends.openvino_semantics)
    nan_semantics: str = "tensorflow"
    #: where each non-default value came from, e.g. ``{"workdir": "NEURON_CC_FLAGS"}``
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)
    #: what parsing accepted but wants the user to know (the report shows them)
    remarks: tuple[str, ...] = field(default=(), compare=False)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["sources"] = dict(self.sources)
        data["remarks"] = list(self.remarks)
        return data

    @property
    def openvino_streams(self) -> int:
        """The openvino op's ``streams`` attribute these options give (the one place it is derived).

        1: the latency hint (one call at a time, every core on it); N > 1: the throughput hint with N
        execution streams (N calls at once, each on its share of the cores); 0: the throughput hint with the
        stream count OpenVINO chooses for the machine the model runs on (decided when it is loaded there).
        """
        if self.num_streams >= 1:
            return self.num_streams
        return 0 if self.performance_hint == "throughput" else 1

    def flag_text(self) -> str:
        """The options as flags, the way a user would write them (defaults left out)."""
        parts = []
        for spec in FLAGS.values():
            value = getattr(self, spec.attr)
            if value == spec.default:
                continue
            if spec.kind is bool:
                parts.append(f"--{spec.flag}")
            else:
                parts.append(f"--{spec.flag}={shlex.quote(str(value))}")
        return " ".join(parts)


@dataclass(frozen=True)
class _Flag:
    flag: str  # spelled as on the command line, without the dashes
    attr: str  # TraceOptions field
    kind: type
    help: str
    default: Any = None
    check: Callable[[Any], str | None] | None = None  # returns an error message, or None
    #: a switch the reference also spells with an instance type after it (``--extract-weights inf1.2xlarge``)
    takes_instance_type: bool = False

    def accepted(self) -> str:
        if self.kind is bool:
            return f"--{self.flag}"
        return f"--{self.flag}=<{self.kind.__name__}>"


def _positive(value: int) -> str | None:
    return None if value >= 1 else "must be a positive integer"


def _non_negative(value: int) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def _fp32_mode(value: str) -> str | None:
    from tfaccel.compiler.precision import FP32_CAST_MODES

    return None if value in FP32_CAST_MODES else f"must be one of {', '.join(FP32_CAST_MODES)}"


#: ``--placement`` values: ``profile`` times every candidate subgraph on each backend and on TF and keeps
#: the fastest; ``static`` places by the support rules alone (no timing, deterministic)
PLACEMENT_MODES = ("profile", "static")


def _placement(value: str) -> str | None:
    return None if value in PLACEMENT_MODES else f"must be one of {', '.join(PLACEMENT_MODES)}"


#: ``--performance-hint`` values (OpenVINO's ``PERFORMANCE_HINT``)
PERFORMANCE_HINTS = ("latency", "throughput")
#: the most execution streams a subgraph may ask for (the op refuses more): more than any CPU has cores
MAX_STREAMS = 256


def _hint(value: str) -> str | None:
    return None if value in PERFORMANCE_HINTS else f"must be one of {', '.join(PERFORMANCE_HINTS)}"


def _streams(value: int) -> str | None:
    return None if 0 <= value <= MAX_STREAMS else f"must be from 0 (the hint decides) to {MAX_STREAMS}"


#: ``--quantize`` values
QUANTIZE_MODES = ("none", "int8")


def _quantize(value: str) -> str | None:
    return None if value in QUANTIZE_MODES else f"must be one of {', '.join(QUANTIZE_MODES)}"


#: ``--nan-semantics`` values: ``tensorflow`` (the default, exact) or ``relaxed`` (the backends' own)
NAN_SEMANTICS = ("tensorflow", "relaxed")


def _nan_semantics(value: str) -> str | None:
    return None if value in NAN_SEMANTICS else f"must be one of {', '.join(NAN_SEMANTICS)}"


def _tolerance(value: float) -> str | None:
    return None if 0.0 < value <= 1.0 else "must be more than 0 and at most 1"


def _backend(value: str) -> str | None:
    from tfaccel.backends import available_backends

    names = ("auto", *available_backends())
    return None if value in names else f"must be one of the backends: {', '.join(names)}"


FLAGS: dict[str, _Flag] = {
    spec.flag: spec
    for spec in (
        _Flag("workdir", "workdir", str, "keep every artifact of the trace in this directory"),
        _Flag("dynamic-batch-size", "dynamic_batch_size", bool, "allow any batch size (dim 0)", False),
        _Flag(
            "extract-weights",
            "extract_weights",
            bool,
            "keep weights as variables, not in the graph",
            False,
            takes_instance_type=True,
        ),
        _Flag(
            "neuroncore-pipeline-cores",
            "neuroncore_pipeline_cores",
            int,
            "split each subgraph into N pipelined stages",
            1,
            _positive,
        ),
        _Flag("min-segment-size", "min_segment_size", int, "smallest subgraph worth compiling", 1, _positive),
        _Flag("verbose", "verbose", int, "0 quiet, 1 print the placement summary", 0, _non_negative),
        _Flag(
            "backend",
            "backend",
            str,
            "accelerator backend: openvino (fast), xla (portable) or auto (every available one)",
            "auto",
            _backend,
        ),
        _Flag("fp32-cast", "fp32_cast", str, "none | matmult | all", "none", _fp32_mode),
        _Flag(
            "placement",
            "placement",
            str,
            "profile (time each subgraph on every backend and on TF, keep the fastest) | static "
            "(support rules only, no timing)",
            "profile",
            _placement,
        ),
        _Flag(
            "timing-cache",
            "timing_cache",
            str,
            "file keeping the measured times for --placement=profile (default: in the tfaccel cache folder; "
            "off: measure every time)",
        ),
        _Flag(
            "performance-hint",
            "performance_hint",
            str,
            "latency (one call at a time on every core) | throughput (openvino subgraphs run several calls "
            "at once, for concurrent callers and the model server's batching)",
            "latency",
            _hint,
        ),
        _Flag(
            "num-streams",
            "num_streams",
            int,
            "OpenVINO execution streams per openvino subgraph (0: the hint decides; more than 1 means the "
            "throughput hint)",
            0,
            _streams,
        ),
        _Flag(
            "quantize",
            "quantize",
            str,
            "none | int8 (post-training int8 of openvino subgraphs with NNCF; needs calibration inputs)",
            "none",
            _quantize,
        ),
        _Flag(
            "quantize-tolerance",
            "quantize_tolerance",
            float,
            "largest relative error (RMS) a quantized subgraph may show against fp32 on held-out "
            "calibration inputs; above it the subgraph stays fp32",
            0.05,
            _tolerance,
        ),
        _Flag(
            "nan-semantics",
            "nan_semantics",
            str,
            "tensorflow (NaN and infinity give TensorFlow's answers) | relaxed (the backends' own handling, "
            "unguarded: faster, but e.g. OpenVINO's ReLU turns a NaN into 0 and a softmax row holding +inf "
            "is not NaN; for models whose inputs and intermediate values are always finite)",
            "tensorflow",
            _nan_semantics,
        ),
    )
}
_BY_ATTR = {spec.attr: spec for spec in FLAGS.values()}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
#: an instance type as the reference's flags name one (``inf1.2xlarge``, ``inf2.xlarge``, ``trn1.32xlarge``)
_INSTANCE_TYPE = re.compile(r"(inf|trn)[0-9]+[a-z]*\.[0-9]*x?large")


def _accepted_list() -> str:
    return ", ".join(spec.accepted() for spec in FLAGS.values())


def parse_flags(text: str, source: str, remarks: list[str] | None = None) -> dict[str, Any]:
    """Parse shell-style flags (``--a=1 --b 2 --c``) into ``{attr: value}``; errors name ``source``.

    What is accepted only for the reference's sake is appended to ``remarks`` (for the report).
    """
    try:
        tokens = shlex.split(text)
    except ValueError as err:
        raise OptionsError(f"{source} cannot be parsed ({err}): {text!r}") from err
    values: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not token.startswith("--"):
            raise OptionsError(
                f"{source}: {token!r} is not a flag; flags start with '--'. Accepted: {_accepted_list()}"
            )
        name, has_value, raw = token[2:].partition("=")
        spec = FLAGS.get(name)
        if spec is None:
            raise OptionsError(f"{source}: unknown flag --{name}. Accepted: {_accepted_list()}")
        if spec.kind is bool:
            value: Any = True
            instance = raw if has_value else tokens[i] if i < len(tokens) else ""
            if spec.takes_instance_type and _INSTANCE_TYPE.fullmatch(instance):
                i += 0 if has_value else 1
                if remarks is not None:
                    remarks.append(
                        f"{source}: --{name} {instance}: the instance type the reference compiles for has no "
                        "meaning here (tfaccel compiles for this machine's CPU); it is ignored"
                    )
            elif has_value:
                value = _parse_bool(raw, spec, source)
        else:
            if not has_value:
                if i >= len(tokens) or tokens[i].startswith("--"):
                    raise OptionsError(f"{source}: --{name} needs a value, e.g. {spec.accepted()}")
                raw = tokens[i]
                i += 1
            value = _convert(raw, spec, source)
        values[spec.attr] = value
    return values


def _parse_bool(raw: str, spec: _Flag, source: str) -> bool:
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise OptionsError(
        f"{source}: --{spec.flag}={raw} is not a boolean; write --{spec.flag} or --{spec.flag}=false"
    )


def _convert(raw: Any, spec: _Flag, source: str) -> Any:
    if spec.kind is int:
        try:
            if isinstance(raw, (bool, float)):
                raise ValueError(raw)
            value: Any = int(raw)
        except (TypeError, ValueError):
            raise OptionsError(
                f"{source}: --{spec.flag}={raw} is not an integer ({spec.accepted()})"
            ) from None
    elif spec.kind is float:
        try:
            if isinstance(raw, bool):
                raise ValueError(raw)
            value = float(raw)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError(raw)
        except (TypeError, ValueError):
            raise OptionsError(f"{source}: --{spec.flag}={raw} is not a number ({spec.accepted()})") from None
    elif spec.kind is bool:
        if not isinstance(raw, bool):
            raise OptionsError(f"{source}: {spec.attr}={raw!r} must be True or False")
        value = raw
    else:
        if isinstance(raw, os.PathLike):
            raw = os.fspath(raw)
        if not isinstance(raw, str) or not raw:
            raise OptionsError(f"{source}: --{spec.flag} needs a non-empty string, got {raw!r}")
        value = raw
    if spec.check is not None and (problem := spec.check(value)) is not None:
        raise OptionsError(f"{source}: --{spec.flag}={value} {problem}")
    return value


def resolve_options(keywords: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> TraceOptions:
    """Merge ``NEURON_CC_FLAGS`` < ``TFACCEL_CC_FLAGS`` < keyword arguments into one :class:`TraceOptions`."""
    env = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    remarks: list[str] = []
    for var in ENV_VARS:
        for attr, value in parse_flags(env.get(var, ""), var, remarks).items():
            merged[attr], sources[attr] = value, var
    for key, raw in keywords.items():
        spec = _BY_ATTR.get(key)
        if spec is None:
            accepted = ", ".join(sorted(_BY_ATTR))
            raise OptionsError(f"trace() got an unknown option {key}=; accepted keyword options: {accepted}")
        if raw is None and key in ("workdir", "timing_cache"):
            merged[key], sources[key] = None, "keyword"
            continue
        merged[key], sources[key] = _convert(raw, spec, f"trace({key}=...)"), "keyword"
    hint = merged.get("performance_hint", "latency")
    if merged.get("num_streams", 0) > 1 and hint == "latency" and "performance_hint" in sources:

        def where(attr: str) -> str:
            return f"trace({attr}=...)" if sources[attr] == "keyword" else sources[attr]

        raise OptionsError(
            f"{where('num_streams')}: --num-streams={merged['num_streams']} runs several calls at once, "
            f"which is the throughput hint, but {where('performance_hint')} asks for "
            "--performance-hint=latency; drop one of them"
        )
    names = {f.name for f in fields(TraceOptions)} - {"sources"}
    return TraceOptions(
        **{k: v for k, v in merged.items() if k in names}, sources=sources, remarks=tuple(remarks)
    )
