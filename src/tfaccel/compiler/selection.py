"""Where a subgraph runs, chosen from measured times: the rule of ``--placement=profile`` (no TensorFlow).

Why a rule of its own: the measurement (compile on each backend, time next to TF) is noisy and costly,
the decision is not. Kept apart, the decision can be tested on any numbers (property tests), and the
report can show the numbers every decision was made from.

The rule, in full:

* A backend wins a subgraph only if its median time beats TF's by more than the noise margin,
  ``max(REL_MARGIN * tf_ms, ABS_MARGIN_MS)``. Otherwise the subgraph stays on TF: a tie goes to TF,
  because the promise is "never slower than the original", and a call that saves less than the margin
  is a call whose gain is below its own overhead.
* Among the backends that win, the first in the order of preference (openvino, then xla) is kept
  unless another one is faster than it by more than the margin (of its time). So the choice between
  two backends within noise of each other does not flip from one trace to the next.

Re-tracing gives the same placement unless a measured time moves across a threshold by more than the
run-to-run noise; ``benchmarks/bench_placement.py`` measures how often that happens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tfaccel.compiler.json_fields import integer, number_map, optional_text, record, required, text, text_map

__all__ = ["ABS_MARGIN_MS", "REL_MARGIN", "Measurement", "choose", "margin_ms"]

#: a backend must beat TF by at least this share of TF's time ...
REL_MARGIN = 0.05
#: ... and by at least this many milliseconds (the spread of a sub-millisecond call on this machine)
ABS_MARGIN_MS = 0.02


def margin_ms(reference_ms: float) -> float:
    """The smallest difference from ``reference_ms`` that counts as faster rather than noise."""
    return max(REL_MARGIN * reference_ms, ABS_MARGIN_MS)


@dataclass(frozen=True)
class Measurement:
    """One candidate subgraph's measured times (median ms per call) and the choice made from them.

    ``times_ms`` has ``"tf"`` and one entry per backend that compiled it; ``failed`` says why a backend
    has no time (it cannot take every node, or its compiler refused). ``chosen`` is a backend name, or
    ``None`` for TF.
    """

    subgraph: str
    ops: int
    times_ms: Mapping[str, float]
    failed: Mapping[str, str] = field(default_factory=dict)
    chosen: str | None = None
    why: str = ""
    runs: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "subgraph": self.subgraph,
            "ops": self.ops,
            "times_ms": dict(self.times_ms),
            "failed": dict(self.failed),
            "chosen": self.chosen,
            "why": self.why,
            "runs": self.runs,
        }

    @classmethod
    def from_json(cls, data: object, where: str = "measurement") -> Measurement:
        """The record :meth:`to_json` wrote (``failed``, ``chosen``, ``why`` and ``runs`` may be absent);
        ``TypeError``/``ValueError`` naming ``where`` when it has another shape (it is read from a file).
        """
        fields = record(data, where)
        return cls(
            text(required(fields, "subgraph", where), f"{where}.subgraph"),
            integer(required(fields, "ops", where), f"{where}.ops"),
            number_map(required(fields, "times_ms", where), f"{where}.times_ms"),
            text_map(fields.get("failed", {}), f"{where}.failed"),
            optional_text(fields.get("chosen"), f"{where}.chosen"),
            text(fields.get("why", ""), f"{where}.why"),
            integer(fields.get("runs", 0), f"{where}.runs"),
        )


def choose(tf_ms: float, backend_ms: Mapping[str, float], order: Sequence[str]) -> tuple[str | None, str]:
    """The backend to run a subgraph on (``None``: TF) and the sentence saying why, by the rule above.

    ``order`` is the order of preference; backends missing from it come after it, by name.
    """
    if not backend_ms:
        return None, "no backend could run it"
    rank = {name: i for i, name in enumerate(order)}
    ranked = sorted(backend_ms, key=lambda b: (rank.get(b, len(rank)), b))
    fastest = min(ranked, key=lambda b: (backend_ms[b], rank.get(b, len(rank)), b))
    best_ms = backend_ms[fastest]
    needed = margin_ms(tf_ms)
    if tf_ms - best_ms <= needed:
        return None, (
            f"{fastest} {best_ms:.3f} ms vs TF {tf_ms:.3f} ms: not faster by more than the margin "
            f"({needed:.3f} ms), so it stays on TF"
        )
    winners = [b for b in ranked if tf_ms - backend_ms[b] > needed]
    chosen = winners[0]
    for other in winners[1:]:
        if backend_ms[chosen] - backend_ms[other] > margin_ms(backend_ms[chosen]):
            chosen = other
    others = ", ".join(f"{b} {backend_ms[b]:.3f} ms" for b in ranked if b != chosen)
    speedup = tf_ms / max(backend_ms[chosen], 1e-9)
    return chosen, (
        f"{chosen} {backend_ms[chosen]:.3f} ms vs TF {tf_ms:.3f} ms ({speedup:.2f}x)"
        + (f"; {others}" if others else "")
    )
