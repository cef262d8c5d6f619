"""``tfaccel.auto_multicore``: a copy of a traced SavedModel whose openvino subgraphs serve N callers at once.

Why: the reference (tensorflow-neuron) replicates a compiled model over N NeuronCores, so that N calls run
at the same time. On a CPU the same effect comes from OpenVINO's execution streams: a model compiled with
the latency hint (tfaccel's default, right for one caller) spends every core on each call, so concurrent
callers queue behind each other; compiled with N streams and the throughput hint, each stream runs one
call on its share of the cores, so N callers are served in parallel (one call alone is then slower: it has
fewer cores).

Why a rewrite of the saved files rather than a trace: nothing compiled changes. The op that runs an
openvino subgraph compiles its model when it first runs, with the number of streams its ``streams``
attribute says (1 by default), so the copy differs from the source only in that attribute on every such
op of ``saved_model.pb``; the file digests, the fingerprint and the report are written again to match.
XLA subgraphs have no such setting: they are left as they are, and the report says so.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
from typing import TYPE_CHECKING, Any, overload

from tfaccel.compiler.options import MAX_STREAMS
from tfaccel.compiler.report import PlacementReport
from tfaccel.errors import ExportError, OptionsError
from tfaccel.runtime.metadata import METADATA_FILE, fspath, read_metadata

if TYPE_CHECKING:
    from tfaccel.runtime.model import TracedModel

__all__ = ["MAX_CORES", "auto_multicore"]

logger = logging.getLogger(__name__)

#: the most execution streams a model may ask for (the op refuses more): the trace option's limit
MAX_CORES = MAX_STREAMS
#: how the sentence this module adds to the report begins (a second rewrite replaces the first's)
_NOTE_PREFIX = "auto_multicore("


@overload
def auto_multicore(
    compiled_model_dir: str | os.PathLike[str], new_model_dir: str | os.PathLike[str], num_cores: int = 1
) -> None: ...


@overload
def auto_multicore(
    compiled_model_dir: TracedModel, new_model_dir: Any = None, num_cores: int = 1
) -> TracedModel: ...


def auto_multicore(compiled_model_dir: Any, new_model_dir: Any = None, num_cores: int = 1) -> Any:
    """Copy the traced SavedModel ``compiled_model_dir`` to ``new_model_dir`` so that its openvino
    subgraphs run with ``num_cores`` parallel execution streams: ``num_cores`` concurrent calls (threads,
    server requests) are then served at the same time instead of one after the other.

    ``new_model_dir`` must not exist or be empty. The copy loads with :func:`tfaccel.load` (or serves) like
    the source and gives the same answers; its report (``tfaccel report DIR``) says how many streams each
    openvino subgraph runs with and which subgraphs (xla) are unchanged. A single call is slower than with
    the source (it has ``1/num_cores`` of the cores): use it for concurrent callers. ``num_cores`` is the
    number of streams (1 gives the source's latency setting back); more than this machine's cores is
    allowed (the model may serve elsewhere) and logged.

    As in the reference's Python API (``tfn.auto_multicore(model, example_inputs, num_cores=N)``), the
    first argument may instead be a traced model (from :func:`tfaccel.trace` or :func:`tfaccel.load`); the
    second is then its example inputs, which are not needed (the traced model knows its inputs), and the
    rewritten model is returned.

    Example::

        tfaccel.trace(model, x).save("traced")
        tfaccel.auto_multicore("traced", "traced_2cores", num_cores=2)
        served = tfaccel.load("traced_2cores")  # two threads calling it now run in parallel
    """
    cores = _checked_cores(num_cores)
    if getattr(compiled_model_dir, "tfaccel_executable", None) is not None:
        if isinstance(new_model_dir, (str, bytes, os.PathLike)):
            raise ExportError(
                f"auto_multicore: given a traced model, the second argument is its example inputs (as in the "
                f"reference), not a directory ({new_model_dir!r}); to write a copy, save the model and give "
                "directories: auto_multicore(model_dir, new_model_dir, num_cores=N)"
            )
        return _rewritten_model(compiled_model_dir, cores)
    source = fspath(compiled_model_dir, "auto_multicore")
    if new_model_dir is None:
        raise ExportError(
            "auto_multicore: give the directory to write the copy to: "
            "auto_multicore(compiled_model_dir, new_model_dir, num_cores=N)"
        )
    _rewrite(source, fspath(new_model_dir, "auto_multicore"), cores)
    return None


def _checked_cores(num_cores: object) -> int:
    if isinstance(num_cores, bool) or not isinstance(num_cores, int) or not 1 <= num_cores <= MAX_CORES:
        raise OptionsError(
            f"auto_multicore: num_cores must be a whole number from 1 to {MAX_CORES} (the calls to run in "
            f"parallel), got {num_cores!r}"
        )
    cpus = os.cpu_count()
    if cpus is not None and num_cores > cpus:
        logger.warning(
            "auto_multicore: num_cores=%d is more than this machine's %d cores: the streams beyond %d "
            "share cores with the others",
            num_cores,
            cpus,
            cpus,
        )
    return num_cores


def _rewritten_model(model: Any, cores: int) -> TracedModel:
    """The reference's form: the traced model saved, rewritten and loaded back (its variables are read
    into memory by the load, so the temporary directory can go).
    """
    from tfaccel.runtime.export import load

    with tempfile.TemporaryDirectory(prefix="tfaccel-multicore-") as tmp:
        source, target = os.path.join(tmp, "source"), os.path.join(tmp, "multicore")
        model.save(source)
        _rewrite(source, target, cores)
        return load(target)


def _rewrite(source: str, target: str, cores: int) -> None:
    """Write the ``cores``-stream copy of the traced SavedModel ``source`` at ``target``."""
    from tfaccel.runtime.export import verify_files
    from tfaccel.runtime.saving import write_saved_model

    _check_target(source, target)
    meta = read_metadata(source)  # a tfaccel SavedModel, or a clear error
    graph_path = os.path.join(source, "saved_model.pb")
    if not os.path.isfile(graph_path):
        raise ExportError(
            f"{source!r} has no saved_model.pb; auto_multicore rewrites a SavedModel saved by tfaccel "
            "(model.save(dir) of a traced model)"
        )
    report = _report(source, meta)
    verify_files(source, meta)  # a damaged or edited source must not get digests of its own

    def write(staging: str) -> None:
        _copy_files(source, staging)
        ops = _set_streams(os.path.join(staging, "saved_model.pb"), cores)
        _check_against_report(source, report, ops)
        if ops and os.path.exists(os.path.join(staging, "fingerprint.pb")):
            from tfaccel import _tf_compat

            _tf_compat.write_fingerprint(staging)
        _write_metadata(staging, meta, report, cores, ops)

    write_saved_model(target, write)
    logger.info("auto_multicore: wrote %s (openvino subgraphs with %d streams)", target, cores)


def _check_target(source: str, target: str) -> None:
    """``target`` is new or an empty directory, and neither ``source`` nor inside it."""
    real_source, real_target = os.path.realpath(source), os.path.realpath(target)
    if real_target == real_source or real_target.startswith(real_source.rstrip(os.sep) + os.sep):
        raise ExportError(
            f"auto_multicore: new_model_dir {target!r} is {'' if real_target == real_source else 'inside '}"
            f"the source model {source!r}; write the copy to a new directory elsewhere"
        )
    if os.path.lexists(target):
        if not os.path.isdir(target):
            raise ExportError(f"auto_multicore: new_model_dir {target!r} is a file; give a new directory")
        if os.listdir(target):
            raise ExportError(
                f"auto_multicore: new_model_dir {target!r} is not empty; give a new or empty directory (the "
                "copy never replaces files)"
            )


def _report(source: str, meta: dict[str, Any]) -> PlacementReport:
    try:
        return PlacementReport.from_json(meta["report"])
    except (KeyError, TypeError, ValueError) as err:
        raise ExportError(
            f"the placement report in {os.path.join(source, METADATA_FILE)} is malformed "
            f"({type(err).__name__}: {err}); save the traced model again"
        ) from err


def _copy_files(source: str, staging: str) -> None:
    """Every directory and regular file of ``source`` into ``staging``; anything else (a symbolic link, a
    device) is refused: the source is untrusted, and a link could pull in any file of this machine.
    """
    for root, dirs, files in os.walk(source):
        dirs.sort()
        relative = os.path.relpath(root, source)
        for name in [*dirs, *files]:
            full = os.path.join(root, name)
            mode = os.lstat(full).st_mode
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
                raise ExportError(
                    f"auto_multicore: {full} is {kind}; a saved model holds only directories and files "
                    "(copy the model with its links resolved, e.g. cp -rL, and try again)"
                )
        os.makedirs(os.path.join(staging, relative), exist_ok=True)
        for name in sorted(files):
            shutil.copyfile(os.path.join(root, name), os.path.join(staging, relative, name))


def _set_streams(graph_path: str, cores: int) -> list[str]:
    """Set ``streams`` on every op of tfaccel's OpenVINO kernel in the SavedModel graph at ``graph_path``
    (top-level graph and function library); returns their names (function/node). Without any, the file is
    left byte for byte as it was.
    """
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    from tfaccel import native

    with open(graph_path, "rb") as handle:
        data = handle.read()
    try:
        proto = saved_model_pb2.SavedModel.FromString(data)
    except DecodeError as err:
        raise ExportError(
            f"{graph_path} is not a SavedModel graph ({err}); save the traced model again"
        ) from err
    found = []
    for meta_graph in proto.meta_graphs:
        graph = meta_graph.graph_def
        places = [("", graph.node), *((f.signature.name, f.node_def) for f in graph.library.function)]
        for function, nodes in places:
            for node in nodes:
                if node.op == native.OP_TYPE:
                    node.attr["streams"].i = cores
                    found.append(f"{function}/{node.name}" if function else node.name)
    if found:
        with open(graph_path, "wb") as handle:
            handle.write(proto.SerializeToString())
    return found


def _ops_of(report: PlacementReport) -> list[str]:
    """The report's openvino subgraphs (the ones the op runs)."""
    return [s.name for s in report.subgraphs if s.backend == "openvino"]


def _check_against_report(source: str, report: PlacementReport, ops: list[str]) -> None:
    """The graph holds openvino ops exactly when the report lists openvino subgraphs (a mismatch means the
    metadata belongs to another model: the copy would claim what it does not do).
    """
    if bool(ops) != bool(_ops_of(report)):
        has = f"{len(ops)} openvino op(s)" if ops else "no openvino op"
        listed = ", ".join(_ops_of(report)) or "none"
        raise ExportError(
            f"{source!r}: its graph holds {has} but its report lists openvino subgraphs: {listed}; the "
            "directory mixes two models: save the traced model again"
        )


def _write_metadata(
    staging: str, meta: dict[str, Any], report: PlacementReport, cores: int, ops: list[str]
) -> None:
    """The source's metadata with the report's sentence on streams, the ``multicore`` record and the
    digests of the copy's files.
    """
    from tfaccel.runtime.saving import write_metadata_record

    ov = _ops_of(report)
    others = [f"{s.name} ({s.backend})" for s in report.subgraphs if s.backend != "openvino"]
    if not ov:
        note = f"auto_multicore(num_cores={cores}): no openvino subgraph, so nothing was changed"
    elif cores == 1:
        note = (
            f"auto_multicore(num_cores=1): {len(ov)} openvino subgraph(s) run with one OpenVINO execution "
            "stream (the latency hint)"
        )
    else:
        note = (
            f"auto_multicore(num_cores={cores}): {len(ov)} openvino subgraph(s) run with {cores} parallel "
            f"OpenVINO execution streams (throughput hint): up to {cores} concurrent calls run at once, each "
            "on its share of the cores"
        )
    if others:
        note += (
            f"; {len(others)} subgraph(s) unchanged: {', '.join(others)} (XLA has no execution streams: "
            "concurrent calls share TensorFlow's thread pools as before)"
        )
    # this sentence replaces an earlier rewrite's and the trace's own (--performance-hint): both said streams
    notes = tuple(s for s in report.fallbacks if not s.startswith((_NOTE_PREFIX, "--performance-hint=")))
    record = {k: v for k, v in meta.items() if k not in ("format", "sha256")}
    # the saved report as it was but for the sentence (a field this tfaccel does not know is kept too)
    record["report"] = {**meta["report"], "fallbacks": [*notes, note]}
    record["multicore"] = {
        "num_cores": cores,
        "openvino_subgraphs": ov,
        "openvino_ops": len(ops),
        "unchanged_subgraphs": [s.name for s in report.subgraphs if s.backend != "openvino"],
    }
    write_metadata_record(staging, record)
