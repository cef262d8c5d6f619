"""The placement report as one self-contained HTML page: what ran where, why, and what to do about it.

Why a page of tables and not a drawing of the graph: a drawn graph of a deep model is one very tall
column (MobileNetV2: 230 x 5,672 px) whose reasons hide in hover text, and it says less than ``summary()``.
A reader asks, in order: how much runs compiled and how fast (the summary line, the whole-model check),
which subgraphs there are (one row each, labelled and in its own colour, with its op types counted and its
nodes folded away), what measurement decided, what stayed on TensorFlow and why (grouped, with a suggested
fix where one is known), and what went wrong (every fallback, with the compiler's whole output). All of it
is visible without hovering, and the page needs no script, no network and no TensorFlow: it is built from
the :class:`~tfaccel.compiler.report.PlacementReport` alone, so ``tfaccel report DIR --html`` can write it
for any saved model.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tfaccel.compiler.hints import compile_hint
from tfaccel.compiler.notes import sentence_kind

if TYPE_CHECKING:  # the report offers to_html(): a runtime import would be a cycle
    from tfaccel.compiler.report import PlacementReport

__all__ = ["FailureDetail", "render_html", "subgraph_colour"]


@dataclass(frozen=True)
class FailureDetail:
    """A subgraph the compiler rejected, as the page shows it (the trace's ``CompileFailure``)."""

    subgraph: str
    backend: str
    log: str
    hint: str | None = None


def subgraph_colour(index: int) -> str:
    """A distinct colour for subgraph ``index``: hues a golden angle apart stay apart for hundreds of
    subgraphs, so eighteen subgraphs get eighteen colours (a fixed palette of nine reused them).
    """
    hue = (index * 137.508) % 360
    return f"hsl({hue:.0f}, 70%, 78%)"


_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1200px; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 8px 0; width: 100%; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.label { display: inline-block; padding: 1px 8px; border-radius: 4px; font-weight: 600; }
.note { color: #225; } .fallback { color: #8a1c00; } .hint { color: #155724; }
pre { background: #f7f7f7; padding: 8px; overflow-x: auto; white-space: pre-wrap; }
.muted { color: #666; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _label(name: str, colours: dict[str, str]) -> str:
    colour = colours.get(name)
    if colour is None:
        return f'<span class="label" style="background:#eee">{_e(name)}</span>'
    return f'<span class="label" style="background:{colour}">{_e(name)}</span>'


def render_html(
    report: PlacementReport, failures: Sequence[FailureDetail] = (), title: str = "tfaccel placement"
) -> str:
    """The whole page (see the module docstring)."""
    colours = {s.name: subgraph_colour(i) for i, s in enumerate(report.subgraphs)}
    ops_of = report.op_types()
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<p><b>{report.accelerated_ops} of {report.total_ops} ops</b> on the accelerator "
        f"({100 * report.ratio:.1f}%, the reference's <code>on_neuron_ratio</code>) in "
        f"<b>{len(report.subgraphs)} compiled subgraph(s)</b>; backend {_e(report.backend)}; placement "
        f"{_e(report.placement)}.</p>",
    ]
    if report.options:
        parts.append(f"<p>Options: <code>{_e(report.options)}</code></p>")
    if report.batch:
        parts.append(f"<p>Batch: {_e(report.batch)}</p>")
    if report.guard is not None:
        parts.append(f"<p>Whole model: {_e(report.guard.sentence())}</p>")

    parts.append("<h2>Compiled subgraphs</h2>")
    if report.subgraphs:
        parts.append(
            "<table><tr><th>subgraph</th><th>backend</th><th>ops</th><th>inputs</th><th>outputs</th>"
            "<th>op types (count)</th></tr>"
        )
        for s in report.subgraphs:
            counts = ops_of.get(s.name)
            kinds = ", ".join(f"{_e(op)} &times;{n}" for op, n in counts.most_common()) if counts else ""
            nodes = "<br>".join(_e(n) for n in s.nodes)
            parts.append(
                f'<tr id="{_e(s.name)}"><td>{_label(s.name, colours)}</td><td>{_e(s.backend)}</td>'
                f'<td class="num">{s.op_count}</td><td class="num">{s.inputs}</td>'
                f'<td class="num">{s.outputs}</td><td>{kinds}<details><summary>{len(s.nodes)} nodes'
                f"</summary>{nodes}</details></td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p>None: every op runs on TensorFlow (see below why).</p>")

    if report.measurements:
        columns = report.measured_backends()
        added = f"{report.profile_seconds:.1f} s" if report.profile_seconds is not None else "?"
        parts.append(
            f"<h2>Measured placement</h2><p class='muted'>Each candidate timed alone on TF and on the "
            f"backends (ms per call, lower quartile); measuring added {added} to the trace.</p>"
        )
        heads = "".join(f"<th>{_e(c)} ms</th>" for c in columns)
        parts.append(f"<table><tr><th>candidate</th><th>ops</th><th>TF ms</th>{heads}<th>source</th>")
        parts.append("<th>chosen</th><th>why</th></tr>")
        for m in report.measurements:
            times = m.times_ms
            cells = "".join(
                f'<td class="num">{times[c]:.3f}</td>' if c in times else "<td>-</td>" for c in columns
            )
            tf_ms = f"{times['tf']:.3f}" if "tf" in times else "-"
            parts.append(
                f"<tr><td>{_label(m.subgraph, colours)}</td><td class='num'>{m.ops}</td>"
                f"<td class='num'>{tf_ms}</td>{cells}<td>{_e(m.source)}</td><td>{_e(m.chosen or 'TF')}</td>"
                f"<td>{_e(m.why)}</td></tr>"
            )
        parts.append("</table>")

    kept = report.kept_groups()
    parts.append(f"<h2>Kept on TensorFlow ({sum(len(g.nodes) for g in kept)} ops)</h2>")
    if kept:
        parts.append("<table><tr><th>op</th><th>count</th><th>reason</th><th>why</th><th>nodes</th></tr>")
        for group in kept:
            members = group.nodes
            hint = compile_hint(group.detail)
            fix = f'<div class="hint">suggested fix: {_e(hint)}</div>' if hint else ""
            shown = "<br>".join(_e(n) for n in members[:20]) + (
                f"<br>... {len(members) - 20} more" if len(members) > 20 else ""
            )
            parts.append(
                f"<tr><td>{_e(group.op)}</td><td class='num'>{len(members)}</td>"
                f"<td>{_e(group.reason.name.lower())}</td><td>{_e(group.detail)}{fix}</td><td><details>"
                f"<summary>{_e(members[0])}{' ...' if len(members) > 1 else ''}</summary>{shown}"
                "</details></td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p>None.</p>")

    parts.append("<h2>Notes and fallbacks</h2>")
    if report.fallbacks or failures:
        parts.append("<ul>")
        for sentence in report.fallbacks:
            kind = sentence_kind(sentence)
            parts.append(f'<li class="{kind}"><b>{kind}:</b> {_e(sentence)}</li>')
        parts.append("</ul>")
        for failure in failures:
            hint = f'<p class="hint">suggested fix: {_e(failure.hint)}</p>' if failure.hint else ""
            parts.append(
                f"<details open><summary>{_e(failure.subgraph)} on {_e(failure.backend)}: the compiler's "
                f"full output</summary>{hint}<pre>{_e(failure.log)}</pre></details>"
            )
    else:
        parts.append("<p>None: everything went as asked.</p>")

    parts.append(f"<h2>Every node ({len(report.decisions)})</h2><details><summary>show the table</summary>")
    parts.append("<table><tr><th>node</th><th>op</th><th>runs on</th><th>reason</th><th>detail</th></tr>")
    for row in report.decisions:
        where = _label(row.subgraph, colours) if row.subgraph is not None else "TF"
        parts.append(
            f"<tr><td>{_e(row.node)}</td><td>{_e(row.op)}</td><td>{where}</td>"
            f"<td>{_e(row.reason.name.lower())}</td><td>{_e(row.detail)}</td></tr>"
        )
    parts.append("</table></details></body></html>")
    return "\n".join(parts) + "\n"
