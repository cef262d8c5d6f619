"""The placement report: what ran where and why, as data (JSON) and as a table for people.

One record serves ``summary()``, the low-ratio warning, the saved model's metadata and the workdir, so they
can never disagree with each other. It is built once, when the trace has decided everything it holds, and
its rows are typed (:class:`DecisionRow`, :class:`SubgraphSummary`,
:class:`~tfaccel.compiler.selection.Measurement`): a reader gets an attribute or a type error from mypy,
never a misspelt dict key. ``from_json`` reads a file anyone can edit (a saved model's
``assets.extra/tfaccel.json``), so it checks every field and names the wrong one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from tfaccel.compiler.json_fields import (
    boolean,
    integer,
    items,
    optional_number,
    optional_text,
    record,
    required,
    text,
)
from tfaccel.compiler.notes import sentence_kind
from tfaccel.compiler.placement import Decision, Placement, Reason, reasons_summary
from tfaccel.compiler.selection import TF_ABS_MARGIN_MS, TF_REL_MARGIN, Measurement, WholeModelCheck

__all__ = ["DecisionRow", "KeptGroup", "PlacementReport", "SubgraphSummary"]

#: a row's ``"reason"`` as saved (the :class:`Reason` member's name in lower case) to the member
_REASONS = {r.name.lower(): r for r in Reason}


@dataclass(frozen=True)
class DecisionRow:
    """One node's final placement: the decision that stood once compilation and measurement were done.

    ``subgraph`` is the compiled subgraph that holds the node (``None``: it runs on the TensorFlow
    runtime); ``counted`` says whether ``on_neuron_ratio`` counts it (inputs, constants, identities and
    ordering nodes are not counted). Where a node runs is its subgraph, so :attr:`placement` is derived
    from it rather than stored twice.
    """

    node: str
    op: str
    reason: Reason
    detail: str
    subgraph: str | None
    counted: bool

    @property
    def placement(self) -> Placement:
        return Placement.ACCELERATOR if self.subgraph is not None else Placement.RUNTIME

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "op": self.op,
            "placement": self.placement.value,
            "reason": self.reason.name.lower(),
            "detail": self.detail,
            "subgraph": self.subgraph,
            "counted": self.counted,
        }

    @classmethod
    def from_json(cls, data: object, where: str = "node row") -> DecisionRow:
        """The record :meth:`to_json` wrote; ``TypeError``/``ValueError`` naming ``where`` otherwise."""
        fields = record(data, where)
        reason = text(required(fields, "reason", where), f"{where}.reason")
        if reason not in _REASONS:
            raise ValueError(f"{where}.reason is {reason!r}, not one of {', '.join(_REASONS)}")
        row = cls(
            text(required(fields, "node", where), f"{where}.node"),
            text(required(fields, "op", where), f"{where}.op"),
            _REASONS[reason],
            text(required(fields, "detail", where), f"{where}.detail"),
            optional_text(required(fields, "subgraph", where), f"{where}.subgraph"),
            boolean(required(fields, "counted", where), f"{where}.counted"),
        )
        placement = text(required(fields, "placement", where), f"{where}.placement")
        if placement != row.placement.value:
            raise ValueError(
                f"{where}.placement is {placement!r} but its subgraph is {row.subgraph!r} (a node runs on "
                "the accelerator exactly when a subgraph holds it)"
            )
        return row


@dataclass(frozen=True)
class KeptGroup:
    """Ops kept on the TensorFlow runtime of one type for one reason: a row of ``summary()`` and of the
    HTML page (:meth:`PlacementReport.kept_groups` makes them once, so the two list the same groups).
    """

    op: str
    reason: Reason
    detail: str
    nodes: tuple[str, ...]


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
        return {**asdict(self), "nodes": list(self.nodes)}  # the fields in order, the nodes as a list

    @classmethod
    def from_json(cls, data: object, where: str = "subgraph") -> SubgraphSummary:
        """The record :meth:`to_json` wrote; ``TypeError``/``ValueError`` naming ``where`` otherwise."""
        fields = record(data, where)
        nodes = items(required(fields, "nodes", where), f"{where}.nodes")
        return cls(
            text(required(fields, "name", where), f"{where}.name"),
            text(required(fields, "backend", where), f"{where}.backend"),
            tuple(text(n, f"{where}.nodes[{i}]") for i, n in enumerate(nodes)),
            integer(required(fields, "op_count", where), f"{where}.op_count"),
            integer(required(fields, "inputs", where), f"{where}.inputs"),
            integer(required(fields, "outputs", where), f"{where}.outputs"),
        )


@dataclass(frozen=True)
class PlacementReport:
    """Every node's decision plus the compiled subgraphs and the ratio they give."""

    backend: str
    decisions: tuple[DecisionRow, ...]  # one per node of the optimized graph, in graph order
    subgraphs: tuple[SubgraphSummary, ...]
    accelerated_ops: int
    total_ops: int
    fallbacks: tuple[str, ...]  # human sentences: compile failures that were put back on the runtime
    options: str = ""  # the trace options as flags (defaults left out)
    placement: str = "static"  # "profile" when subgraphs were placed by measurement
    #: ``--placement=profile``: per candidate subgraph, the measured times and the choice
    measurements: tuple[Measurement, ...] = ()
    profile_seconds: float | None = None  # trace time the measurements added
    #: ``--placement=profile``: the whole traced model timed against the original (the guard stage)
    guard: WholeModelCheck | None = None
    #: which batch sizes the traced model takes, and why (:meth:`BatchPlan.describe`)
    batch: str = ""

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
        *,
        options: str,
        placement: str,
        measurements: Iterable[Measurement] = (),
        profile_seconds: float | None = None,
        batch: str = "",
    ) -> PlacementReport:
        """The report of a finished trace: ``decisions`` are the final ones (after fallbacks and
        measurement), ``counted`` says which nodes ``on_neuron_ratio`` counts.
        """
        subs = tuple(subgraphs)
        owner = {n: s.name for s in subs for n in s.nodes}
        rows = tuple(
            DecisionRow(d.node, d.op, d.reason, d.detail, owner.get(d.node), counted[d.node])
            for d in decisions.values()
        )
        return cls(
            backend,
            rows,
            subs,
            accelerated_ops=sum(1 for r in rows if r.counted and r.subgraph is not None),
            total_ops=sum(1 for r in rows if r.counted),
            fallbacks=tuple(fallbacks),
            options=options,
            placement=placement,
            measurements=tuple(measurements),
            profile_seconds=profile_seconds,
            batch=batch,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "on_neuron_ratio": self.ratio,
            "accelerated_ops": self.accelerated_ops,
            "total_ops": self.total_ops,
            "subgraphs": [s.to_json() for s in self.subgraphs],
            "nodes": [r.to_json() for r in self.decisions],
            "fallbacks": list(self.fallbacks),
            "options": self.options,
            "placement": self.placement,
            "measurements": [m.to_json() for m in self.measurements],
            "profile_seconds": self.profile_seconds,
            "guard": None if self.guard is None else self.guard.to_json(),
            "batch": self.batch,
        }

    @classmethod
    def from_json(cls, data: object) -> PlacementReport:
        """The record :meth:`to_json` wrote, also by an older tfaccel (the keys after ``fallbacks`` came
        later and may be absent; ``on_neuron_ratio`` is derived, so it is not read back). A field of
        another type or shape is a ``TypeError``/``ValueError`` that names it, such as
        ``report.nodes[3].op must be a string, got int 5``.
        """
        where = "report"
        fields = record(data, where)
        subgraphs = items(required(fields, "subgraphs", where), "report.subgraphs")
        nodes = items(required(fields, "nodes", where), "report.nodes")
        fallbacks = items(fields.get("fallbacks", []), "report.fallbacks")
        measured = items(fields.get("measurements", []), "report.measurements")
        return cls(
            text(required(fields, "backend", where), "report.backend"),
            tuple(DecisionRow.from_json(r, f"report.nodes[{i}]") for i, r in enumerate(nodes)),
            tuple(SubgraphSummary.from_json(s, f"report.subgraphs[{i}]") for i, s in enumerate(subgraphs)),
            integer(required(fields, "accelerated_ops", where), "report.accelerated_ops"),
            integer(required(fields, "total_ops", where), "report.total_ops"),
            tuple(text(f, f"report.fallbacks[{i}]") for i, f in enumerate(fallbacks)),
            text(fields.get("options", ""), "report.options"),
            text(fields.get("placement", "static"), "report.placement"),
            tuple(Measurement.from_json(m, f"report.measurements[{i}]") for i, m in enumerate(measured)),
            optional_number(fields.get("profile_seconds"), "report.profile_seconds"),
            None
            if fields.get("guard") is None
            else WholeModelCheck.from_json(fields["guard"], "report.guard"),
            text(fields.get("batch", ""), "report.batch"),
        )

    def to_html(self, title: str = "tfaccel placement") -> str:
        """The report as one self-contained HTML page (:mod:`tfaccel.compiler.report_html`)."""
        from tfaccel.compiler.report_html import render_html

        return render_html(self, title=title)

    def why_low(self) -> str:
        """The main reasons ops stayed on the runtime, for the low-ratio warning."""
        runtime = {
            r.node: Decision(r.node, r.op, Placement.RUNTIME, r.reason, r.detail)
            for r in self.decisions
            if r.counted and r.subgraph is None
        }
        return reasons_summary(runtime)

    def kept_groups(self) -> list[KeptGroup]:
        """The counted ops kept on the runtime, grouped by op type and reason, largest group first."""
        groups: dict[tuple[str, str, Reason], list[str]] = {}
        for r in self.decisions:
            if r.counted and r.subgraph is None:
                groups.setdefault((r.op, r.detail, r.reason), []).append(r.node)
        ranked = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0][0], kv[0][1], kv[0][2].name))
        return [KeptGroup(op, reason, detail, tuple(nodes)) for (op, detail, reason), nodes in ranked]

    def op_types(self) -> dict[str, Counter[str]]:
        """Per compiled subgraph, how many counted ops of each type it holds."""
        found: dict[str, Counter[str]] = {s.name: Counter() for s in self.subgraphs}
        for r in self.decisions:
            if r.subgraph is not None and r.counted:
                found.setdefault(r.subgraph, Counter())[r.op] += 1
        return found

    def measured_backends(self) -> list[str]:
        """The backends the measured placement timed, in the order first met (the table's columns)."""
        return list(dict.fromkeys(k for m in self.measurements for k in m.times_ms if k != "tf"))

    def render(self, print_fn: Callable[[str], Any] = print, max_rows: int = 30) -> None:
        """Print the placement table: subgraphs, then ops kept on the runtime grouped by reason."""
        pct = 100.0 * self.ratio
        print_fn(
            f"tfaccel placement ({self.backend}): {self.accelerated_ops}/{self.total_ops} ops on the "
            f"accelerator ({pct:.1f}%), {len(self.subgraphs)} compiled subgraph(s)"
        )
        if self.options:
            print_fn(f"  options: {self.options}")
        if self.batch:
            print_fn(f"  batch: {self.batch}")
        if self.subgraphs:
            print_fn(f"  {'subgraph':<22} {'backend':<8} {'ops':>5} {'inputs':>6} {'outputs':>7}  op types")
            op_types = self.op_types()
            for s in self.subgraphs:
                ops = sorted(op_types.get(s.name, ()))
                shown = ", ".join(ops[:6]) + (", ..." if len(ops) > 6 else "")
                print_fn(
                    f"  {s.name:<22} {s.backend:<8} {s.op_count:>5} {s.inputs:>6} {s.outputs:>7}  {shown}"
                )
        if self.measurements:
            self._render_measurements(print_fn)
        if self.guard is not None:
            print_fn(f"  whole model: {self.guard.sentence()}")
        ranked = self.kept_groups()
        if ranked:
            print_fn(f"  ops kept on the TensorFlow runtime: {sum(len(g.nodes) for g in ranked)}")
            for g in ranked[:max_rows]:
                nodes = g.nodes
                example = nodes[0] + (f" (+{len(nodes) - 1} more)" if len(nodes) > 1 else "")
                print_fn(f"    {g.op:<24} x{len(nodes):<4} {g.detail}  e.g. {example}")
            if len(ranked) > max_rows:
                print_fn(f"    ... {len(ranked) - max_rows} more groups")
        for sentence in self.fallbacks:
            # what an option did is not a fallback (the sentence names the option it reports on)
            label = sentence_kind(sentence)
            print_fn(f"  {label}: {sentence}")

    def _render_measurements(self, print_fn: Callable[[str], Any]) -> None:
        """The profiled placement: each candidate's time per call on TF and each backend, and the choice."""
        columns = self.measured_backends()
        added = f"{self.profile_seconds:.1f} s" if self.profile_seconds is not None else "?"
        print_fn(
            f"  measured placement ({added} added to the trace; ms per call, lower quartile of the samples; "
            f"TF keeps a subgraph only if faster by {100 * TF_REL_MARGIN:.0f}% and {TF_ABS_MARGIN_MS} ms, "
            "intervals apart):"
        )
        header = "".join(f" {c + ' ms':>12}" for c in columns)
        print_fn(f"  {'candidate':<22} {'ops':>5} {'TF ms':>10}{header}  source        chosen")
        for m in self.measurements:
            times = m.times_ms
            cells = "".join(f" {times[c]:>12.3f}" if c in times else f" {'-':>12}" for c in columns)
            tf_ms = f"{times['tf']:.3f}" if "tf" in times else "-"
            chosen = m.chosen or "TF"
            print_fn(f"  {m.subgraph:<22} {m.ops:>5} {tf_ms:>10}{cells}  {m.source:<13} {chosen}")
            print_fn(f"    why: {m.why}")
            for variant, value in m.estimates.items():
                print_fn(f"    {variant}: {value.text()}")
            for backend, why in m.failed.items():
                print_fn(f"    {backend}: {why}")
