"""Where a subgraph runs, chosen from measured times: the rule of ``--placement=profile`` (no TensorFlow).

Why a rule of its own: the measurement (compile on each backend, time next to TF) is noisy and costly,
the decision is not. Kept apart, the decision can be tested on any numbers (property tests), and the
report can show the numbers every decision was made from.

The rule, in full:

* **Each variant is summarised by its lower quartile** (:func:`estimate`), with a distribution-free
  confidence interval from order statistics. Interference from other work only ever adds time, so the
  low part of the distribution is the variant's own cost; a quartile rather than the minimum, so that one
  lucky run does not decide.
* **The burden of proof is on TF.** A subgraph a backend compiled runs on that backend unless TF is
  faster by a clear, significant margin: even the most favourable reading of the backend's interval
  (its low end) is slower than the least favourable of TF's (its high end) by more than
  ``max(TF_REL_MARGIN * tf_ms, TF_ABS_MARGIN_MS)``. An inconclusive measurement keeps the backend, which is
  the reference's semantics: what compiles runs on the accelerator. The absolute part is about the cost of
  one compiled call on this machine (0.1-0.4 ms measured): a loss smaller than that is the call's, not the
  compiled code's, and the whole-model guard still reports a model that came out slower.
* **Between backends that may keep it,** the first in the order of preference (openvino, then xla) is kept
  unless another is clearly faster than it (intervals apart) by more than ``BACKEND_REL_MARGIN`` of its
  time and the same per-call floor. So the choice between two backends within noise of each other, or a
  fraction of a call apart, does not flip between traces, and agrees with the static choice.

:func:`settled` says when more samples cannot change the verdicts (the measurement stops there);
``benchmarks/bench_placement.py`` measures how often a placement differs between traces.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tfaccel.compiler.json_fields import (
    integer,
    number,
    number_map,
    optional_text,
    record,
    required,
    text,
    text_map,
)

__all__ = [
    "BACKEND_REL_MARGIN",
    "CONFIDENCE",
    "GUARD_REL_NOISE",
    "QUANTILE",
    "TF_ABS_MARGIN_MS",
    "TF_REL_MARGIN",
    "Estimate",
    "Measurement",
    "Verdict",
    "WholeModelCheck",
    "choose",
    "compare",
    "estimate",
    "guard_settled",
    "settled",
    "slower_beyond_noise",
    "suspects",
    "tf_margin_ms",
]

#: the quantile each variant is summarised by (see the module docstring)
QUANTILE = 0.25
#: the confidence of each variant's interval
CONFIDENCE = 0.90
#: TF keeps a subgraph only if faster than the backend by this share of TF's time ...
TF_REL_MARGIN = 0.10
#: ... and by at least this many milliseconds per call
TF_ABS_MARGIN_MS = 0.5
#: a backend other than the preferred one must be faster than it by this share of its time
BACKEND_REL_MARGIN = 0.10


@dataclass(frozen=True)
class Estimate:
    """One variant's time per call: the lower quartile of ``samples`` timed calls, and its interval."""

    ms: float
    low_ms: float
    high_ms: float
    samples: int

    def to_json(self) -> dict[str, Any]:
        return {"ms": self.ms, "low_ms": self.low_ms, "high_ms": self.high_ms, "samples": self.samples}

    @classmethod
    def from_json(cls, data: object, where: str) -> Estimate:
        fields = record(data, where)
        ms, low, high = (
            number(required(fields, k, where), f"{where}.{k}") for k in ("ms", "low_ms", "high_ms")
        )
        result = cls(ms, low, high, integer(required(fields, "samples", where), f"{where}.samples"))
        if not 0 <= result.low_ms <= result.ms <= result.high_ms:
            raise ValueError(f"{where}: expected 0 <= low_ms <= ms <= high_ms, got {result}")
        return result

    def text(self) -> str:
        return f"{self.ms:.3f} ms [{self.low_ms:.3f}, {self.high_ms:.3f}] of {self.samples}"


def _binomial_cdf(k: int, n: int, p: float) -> float:
    """P(B <= k) for B ~ Binomial(n, p)."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(0, k + 1))


def estimate(samples: Sequence[float]) -> Estimate:
    """The lower quartile of ``samples`` (ms) and its order-statistic interval at :data:`CONFIDENCE`.

    The interval is [x_(l), x_(u)] with ranks such that P(l <= B < u) >= CONFIDENCE for B ~ Bin(n, QUANTILE),
    clamped to the smallest and largest sample when there are too few samples for that confidence (the
    interval is then honest about being wide).
    """
    if not samples:
        raise ValueError("estimate() needs at least one sample")
    ordered = sorted(float(s) for s in samples)
    n = len(ordered)
    tail = (1 - CONFIDENCE) / 2
    # x_(l) <= Q < x_(u) exactly when l <= B <= u - 1, B the number of samples below the true quantile Q
    lower = 1  # the largest l with P(B < l) <= tail (the valid l form a prefix of 1..n)
    for rank in range(2, n + 1):
        if _binomial_cdf(rank - 1, n, QUANTILE) > tail:
            break
        lower = rank
    upper = n  # the smallest u with P(B >= u) <= tail (the valid u form a suffix of 1..n)
    for rank in range(n - 1, 0, -1):
        if 1 - _binomial_cdf(rank - 1, n, QUANTILE) > tail:
            break
        upper = rank
    point = ordered[round(QUANTILE * (n - 1))]
    return Estimate(point, min(ordered[lower - 1], point), max(ordered[upper - 1], point), n)


def tf_margin_ms(tf_ms: float) -> float:
    """How much faster than a backend TF must be to keep a subgraph (see the module docstring)."""
    return max(TF_REL_MARGIN * tf_ms, TF_ABS_MARGIN_MS)


class Verdict(enum.Enum):
    """A backend's measurement against TF's."""

    TF_FASTER = "TF faster"  # the backend's best case is slower than TF's worst by more than the margin
    KEEP = "not slower"  # even the worst case leaves the backend within the margin of TF, or faster
    INCONCLUSIVE = "inconclusive"  # neither yet: more samples may tell (until then the backend keeps it)


def compare(tf: Estimate, backend: Estimate) -> Verdict:
    """The verdict on ``backend`` against ``tf`` (intervals and margin as the module docstring says)."""
    margin = tf_margin_ms(tf.ms)
    if backend.low_ms - tf.high_ms > margin:
        return Verdict.TF_FASTER
    if backend.high_ms - tf.low_ms <= margin:
        return Verdict.KEEP
    return Verdict.INCONCLUSIVE


def settled(tf: Estimate, backends: Mapping[str, Estimate]) -> bool:
    """True when no backend's verdict is inconclusive: more samples would not change the choice's basis."""
    return all(compare(tf, b) is not Verdict.INCONCLUSIVE for b in backends.values())


def _clearly_faster(a: Estimate, b: Estimate) -> bool:
    """``a`` beats ``b`` with the intervals apart and by more than ``max(BACKEND_REL_MARGIN * b,
    TF_ABS_MARGIN_MS)``: the same per-call floor as against TF, so two backends a fraction of a call apart
    never trade a subgraph between traces (or against the static choice a busy machine falls back to).
    """
    return a.high_ms < b.low_ms and b.ms - a.ms > max(BACKEND_REL_MARGIN * b.ms, TF_ABS_MARGIN_MS)


def choose(tf: Estimate, backends: Mapping[str, Estimate], order: Sequence[str]) -> tuple[str | None, str]:
    """The backend to run a subgraph on (``None``: TF) and the sentence saying why, by the rule above.

    ``order`` is the order of preference; backends missing from it come after it, by name.
    """
    if not backends:
        return None, "no backend could run it"
    rank = {name: i for i, name in enumerate(order)}
    ranked = sorted(backends, key=lambda b: (rank.get(b, len(rank)), b))
    verdicts = {b: compare(tf, backends[b]) for b in ranked}
    margin = tf_margin_ms(tf.ms)
    keepers = [b for b in ranked if verdicts[b] is not Verdict.TF_FASTER]
    if not keepers:
        fastest = min(ranked, key=lambda b: (backends[b].ms, rank.get(b, len(rank)), b))
        return None, (
            f"speed decision (it compiled): TF {tf.ms:.3f} ms is faster than {fastest} "
            f"{backends[fastest].ms:.3f} ms by more than the margin ({margin:.3f} ms), intervals apart"
        )
    chosen = keepers[0]
    for other in keepers[1:]:
        if _clearly_faster(backends[other], backends[chosen]):
            chosen = other
    verdict = verdicts[chosen]
    ratio = tf.ms / max(backends[chosen].ms, 1e-9)
    why = f"{chosen} {backends[chosen].ms:.3f} ms vs TF {tf.ms:.3f} ms ({ratio:.2f}x)"
    if verdict is Verdict.INCONCLUSIVE:
        why += "; TF not shown faster by the margin, so the backend keeps it"
    others = ", ".join(f"{b} {backends[b].ms:.3f} ms" for b in ranked if b != chosen)
    return chosen, why + (f"; {others}" if others else "")


@dataclass(frozen=True)
class Measurement:
    """One candidate subgraph's measured times and the choice made from them.

    ``estimates`` has ``"tf"`` and one entry per backend that compiled it (:class:`Estimate`, ms per
    call); ``times_ms`` is their point estimates. ``failed`` says why a backend has no time (it cannot
    take every node, or its compiler refused). ``chosen`` is a backend name, or ``None`` for TF.
    ``source`` says where the times came from: ``"measured"`` now, or ``"timing cache"``.
    """

    subgraph: str
    ops: int
    times_ms: Mapping[str, float]
    failed: Mapping[str, str] = field(default_factory=dict)
    chosen: str | None = None
    why: str = ""
    runs: int = 0
    estimates: Mapping[str, Estimate] = field(default_factory=dict)
    source: str = "measured"

    @classmethod
    def of(
        cls,
        subgraph: str,
        ops: int,
        estimates: Mapping[str, Estimate],
        failed: Mapping[str, str],
        chosen: str | None,
        why: str,
        source: str = "measured",
    ) -> Measurement:
        """A measurement whose ``times_ms`` and ``runs`` are read from ``estimates``."""
        return cls(
            subgraph,
            ops,
            {k: e.ms for k, e in estimates.items()},
            dict(failed),
            chosen,
            why,
            min((e.samples for e in estimates.values()), default=0),
            dict(estimates),
            source,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "subgraph": self.subgraph,
            "ops": self.ops,
            "times_ms": dict(self.times_ms),
            "failed": dict(self.failed),
            "chosen": self.chosen,
            "why": self.why,
            "runs": self.runs,
            "estimates": {k: e.to_json() for k, e in self.estimates.items()},
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: object, where: str = "measurement") -> Measurement:
        """The record :meth:`to_json` wrote (all but ``subgraph``, ``ops`` and ``times_ms`` may be absent:
        older files); ``TypeError``/``ValueError`` naming ``where`` when it has another shape.
        """
        fields = record(data, where)
        estimates = record(fields.get("estimates", {}), f"{where}.estimates")
        return cls(
            text(required(fields, "subgraph", where), f"{where}.subgraph"),
            integer(required(fields, "ops", where), f"{where}.ops"),
            number_map(required(fields, "times_ms", where), f"{where}.times_ms"),
            text_map(fields.get("failed", {}), f"{where}.failed"),
            optional_text(fields.get("chosen"), f"{where}.chosen"),
            text(fields.get("why", ""), f"{where}.why"),
            integer(fields.get("runs", 0), f"{where}.runs"),
            {k: Estimate.from_json(v, f"{where}.estimates.{k}") for k, v in estimates.items()},
            text(fields.get("source", "measured"), f"{where}.source"),
        )


#: the whole-model guard calls a traced model slower when its interval is above the original's and its
#: time is above the original's by more than this share (run-to-run noise of a whole model here: ~5-8%)
GUARD_REL_NOISE = 0.05


@dataclass(frozen=True)
class WholeModelCheck:
    """The whole-model guard's measurement: the traced model against the original, per call.

    ``slower`` when the traced model is slower beyond noise (:func:`slower_beyond_noise`); ``suspects``
    names the subgraphs most likely responsible, worst first. ``basis``: ``"timed"`` (both models timed
    whole) or ``"subgraph"`` (one compiled subgraph holds every op, so its measurement against TF is the
    whole model's, and timing it again would only cost trace time).
    """

    original: Estimate
    traced: Estimate
    slower: bool
    suspects: tuple[str, ...] = ()
    basis: str = "timed"

    @classmethod
    def judge(
        cls, original: Estimate, traced: Estimate, measurements: Sequence[Measurement], basis: str
    ) -> WholeModelCheck:
        """The check of these two estimates: slower or not, and if slower, the suspects."""
        slower = slower_beyond_noise(original, traced)
        return cls(original, traced, slower, suspects(measurements) if slower else (), basis)

    @property
    def speedup(self) -> float:
        return self.original.ms / max(self.traced.ms, 1e-9)

    def sentence(self) -> str:
        head = (
            f"the traced model runs {self.traced.ms:.3f} ms per call, the original {self.original.ms:.3f} ms "
            f"({self.speedup:.2f}x)"
        )
        if not self.slower:
            return head
        blamed = ", ".join(self.suspects) if self.suspects else "the calls between the subgraphs and TF"
        return f"{head}: SLOWER than the original beyond noise; most likely responsible: {blamed}"

    def to_json(self) -> dict[str, Any]:
        return {
            "original": self.original.to_json(),
            "traced": self.traced.to_json(),
            "slower": self.slower,
            "suspects": list(self.suspects),
            "basis": self.basis,
        }

    @classmethod
    def from_json(cls, data: object, where: str = "guard") -> WholeModelCheck:
        fields = record(data, where)
        slower = required(fields, "slower", where)
        if not isinstance(slower, bool):
            raise TypeError(f"{where}.slower must be true or false, got {slower!r}")
        suspects = fields.get("suspects", [])
        if not isinstance(suspects, list):
            raise TypeError(f"{where}.suspects must be a list, got {type(suspects).__name__}")
        return cls(
            Estimate.from_json(required(fields, "original", where), f"{where}.original"),
            Estimate.from_json(required(fields, "traced", where), f"{where}.traced"),
            slower,
            tuple(text(s, f"{where}.suspects[{i}]") for i, s in enumerate(suspects)),
            text(fields.get("basis", "timed"), f"{where}.basis"),
        )


def slower_beyond_noise(original: Estimate, traced: Estimate) -> bool:
    """The traced model is slower: intervals apart and more than :data:`GUARD_REL_NOISE` slower."""
    return traced.low_ms > original.high_ms and traced.ms > (1 + GUARD_REL_NOISE) * original.ms


def guard_settled(original: Estimate, traced: Estimate) -> bool:
    """More samples would not change the guard's verdict: the intervals are apart, either way round."""
    return traced.low_ms > original.high_ms or traced.high_ms < original.low_ms


def suspects(measurements: Sequence[Measurement]) -> tuple[str, ...]:
    """The subgraphs a backend kept although it measured slower than TF, largest loss first."""
    losses = []
    for m in measurements:
        if m.chosen is not None and "tf" in m.times_ms and m.chosen in m.times_ms:
            loss = m.times_ms[m.chosen] - m.times_ms["tf"]
            if loss > 0:
                losses.append((-loss, m.subgraph, f"{m.subgraph} (+{loss:.3f} ms on {m.chosen})"))
    return tuple(label for _, _, label in sorted(losses))
