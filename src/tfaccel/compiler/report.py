"""The placement report: what ran where and why, as data (JSON) and as a table for people.

One record serves ``summary()``, the low-ratio warning, the saved model's metadata and (later) the
workdir, so they can never disagree with each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tfaccel.compiler.placement import Decision, Placement, Reason, reasons_summary

__all__ = ["PlacementReport", "SubgraphSummary"]


@dataclass(frozen=True)
class SubgraphSummary:
    """One compiled subgraph: its name, backend, member nodes and counts."""

    name: str
    backend: str
    nodes: tuple[str, ...]
    op_count: int  # counted ops (what on_neuron_ratio counts)
    inputs: int
    outputs: int

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backend": self.backend,
            "nodes": list(self.nodes),
            "op_count": self.op_count,
            "inputs": self.inputs,
            "outputs": self.outputs,
        }


@dataclass(frozen=True)
class PlacementReport:
    """Every node's decision plus the compiled subgraphs and the ratio they give."""

    backend: str
    decisions: tuple[dict[str, Any], ...]  # {"node", "op", "placement", "reason", "detail", "subgraph"}
    subgraphs: tuple[SubgraphSummary, ...]
    accelerated_ops: int
    total_ops: int
    fallbacks: tuple[str, ...]  # human sentences: compile failures that were put back on the runtime
    options: str = ""  # the trace options as flags (defaults left out)
    placement: str = "static"  # "profile" when subgraphs were placed by measurement
    #: ``--placement=profile``: per candidate subgraph, the measured times and the choice
    #: (:meth:`tfaccel.compiler.selection.Measurement.to_json` records)
    measurements: tuple[dict[str, Any], ...] = ()
    profile_seconds: float | None = None  # trace time the measurements added

    @property
    def ratio(self) -> float:
        return self.accelerated_ops / self.total_ops if self.total_ops else 0.0

    @classmethod
    def build(
        cls,
        backend: str,
        decisions: Mapping[str, Decision],
        subgraphs: Iterable[SubgraphSummary],
        counted: Mapping[str, bool],
        fallbacks: Iterable[str],
        options: str = "",
    ) -> PlacementReport:
        subs = tuple(subgraphs)
        owner = {n: s.name for s in subs for n in s.nodes}
        rows = tuple(
            {
                "node": d.node,
                "op": d.op,
                "placement": "accelerator" if d.node in owner else "runtime",
                "reason": d.reason.name.lower(),
                "detail": d.detail,
                "subgraph": owner.get(d.node),
                "counted": counted[d.node],
            }
            for d in decisions.values()
        )
        accelerated = sum(1 for r in rows if r["counted"] and r["subgraph"])
        total = sum(1 for r in rows if r["counted"])
        return cls(backend, rows, subs, accelerated, total, tuple(fallbacks), options)

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "on_neuron_ratio": self.ratio,
            "accelerated_ops": self.accelerated_ops,
            "total_ops": self.total_ops,
            "subgraphs": [s.to_json() for s in self.subgraphs],
            "nodes": list(self.decisions),
            "fallbacks": list(self.fallbacks),
            "options": self.options,
            "placement": self.placement,
            "measurements": list(self.measurements),
            "profile_seconds": self.profile_seconds,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlacementReport:
        subs = tuple(
            SubgraphSummary(
                s["name"], s["backend"], tuple(s["nodes"]), s["op_count"], s["inputs"], s["outputs"]
            )
            for s in data["subgraphs"]
        )
        return cls(
            data["backend"],
            tuple(data["nodes"]),
            subs,
            data["accelerated_ops"],
            data["total_ops"],
            tuple(data.get("fallbacks", ())),
            data.get("options", ""),
            data.get("placement", "static"),
            tuple(data.get("measurements", ())),
            data.get("profile_seconds"),
        )

    def why_low(self) -> str:
        """The main reasons ops stayed on the runtime, for the low-ratio warning."""
        runtime = {
            r["node"]: Decision(
                r["node"], r["op"], Placement.RUNTIME, Reason[r["reason"].upper()], r["detail"]
            )
            for r in self.decisions
            if r["counted"] and not r["subgraph"]
        }
        return reasons_summary(runtime)

    def render(self, print_fn: Callable[[str], Any] = print, max_rows: int = 30) -> None:
        """Print the placement table: subgraphs, then ops kept on the runtime grouped by reason."""
        pct = 100.0 * self.ratio
        print_fn(
            f"tfaccel placement ({self.backend}): {self.accelerated_ops}/{self.total_ops} ops on the "
            f"accelerator ({pct:.1f}%), {len(self.subgraphs)} compiled subgraph(s)"
        )
        if self.options:
            print_fn(f"  options: {self.options}")
        if self.subgraphs:
            print_fn(f"  {'subgraph':<22} {'backend':<8} {'ops':>5} {'inputs':>6} {'outputs':>7}  op types")
            for s in self.subgraphs:
                ops = sorted({r["op"] for r in self.decisions if r["subgraph"] == s.name and r["counted"]})
                shown = ", ".join(ops[:6]) + (", ..." if len(ops) > 6 else "")
                print_fn(
                    f"  {s.name:<22} {s.backend:<8} {s.op_count:>5} {s.inputs:>6} {s.outputs:>7}  {shown}"
                )
        if self.measurements:
            self._render_measurements(print_fn)
        kept = [r for r in self.decisions if r["counted"] and not r["subgraph"]]
        if kept:
            print_fn(f"  ops kept on the TensorFlow runtime: {len(kept)}")
            groups: dict[tuple[str, str], list[str]] = {}
            for r in kept:
                groups.setdefault((r["op"], r["detail"]), []).append(r["node"])
            ranked = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
            for (op, detail), nodes in ranked[:max_rows]:
                example = nodes[0] + (f" (+{len(nodes) - 1} more)" if len(nodes) > 1 else "")
                print_fn(f"    {op:<24} x{len(nodes):<4} {detail}  e.g. {example}")
            if len(ranked) > max_rows:
                print_fn(f"    ... {len(ranked) - max_rows} more groups")
        for sentence in self.fallbacks:
            print_fn(f"  fallback: {sentence}")

    def _render_measurements(self, print_fn: Callable[[str], Any]) -> None:
        """The profiled placement: each candidate's median ms on TF and each backend, and the choice."""
        from tfaccel.compiler.selection import ABS_MARGIN_MS, REL_MARGIN

        columns = list(dict.fromkeys(k for m in self.measurements for k in m["times_ms"] if k != "tf"))
        added = f"{self.profile_seconds:.1f} s" if self.profile_seconds is not None else "?"
        print_fn(
            f"  measured placement ({added} added to the trace; a backend must beat TF by "
            f"{100 * REL_MARGIN:.0f}% and {ABS_MARGIN_MS} ms):"
        )
        header = "".join(f" {c + ' ms':>12}" for c in columns)
        print_fn(f"  {'candidate':<22} {'ops':>5} {'TF ms':>10}{header}  chosen")
        for m in self.measurements:
            times = m["times_ms"]
            cells = "".join(f" {times[c]:>12.3f}" if c in times else f" {'-':>12}" for c in columns)
            tf_ms = f"{times['tf']:.3f}" if "tf" in times else "-"
            chosen = m["chosen"] or "TF"
            print_fn(f"  {m['subgraph']:<22} {m['ops']:>5} {tf_ms:>10}{cells}  {chosen}")
            for backend, why in m["failed"].items():
                print_fn(f"    {backend}: {why}")
