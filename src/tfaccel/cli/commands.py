"""The ``tfaccel`` sub-commands that run TensorFlow (``report`` reads JSON only: ``report_command``).

Each takes the parsed arguments and returns an exit code; failures are raised as tfaccel errors (one line
each) and turned into exit codes by :func:`tfaccel.cli.main`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from typing import Any

import numpy as np

import tfaccel
from tfaccel.cli import loadtest
from tfaccel.compiler.options import parse_flags
from tfaccel.compiler.progress import TerminalProgress, reporting
from tfaccel.compiler.sources import Signature, check_savedmodel_dir, example_inputs, open_signature, read_npz
from tfaccel.errors import SourceError
from tfaccel.runtime.export import verify_traced

__all__ = ["analyze", "bench", "run", "show", "trace"]


def _source(args: argparse.Namespace, path: str) -> tuple[Signature, dict[str, np.ndarray]]:
    sig = open_signature(path, args.signature, args.tags)
    arrays = read_npz(args.inputs) if args.inputs else None
    return sig, example_inputs(sig, batch_size=args.batch_size, arrays=arrays)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return parse_flags(args.flags, "--flags")


def _contains(outer: str, inner: str) -> bool:
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def trace(args: argparse.Namespace) -> int:
    # real paths: a symlink must not make DST_DIR (which --overwrite deletes) the source in disguise
    src, dst = os.path.realpath(args.src), os.path.realpath(args.dst)
    if _contains(src, dst) or _contains(dst, src):
        raise SourceError(
            f"DST_DIR {args.dst!r} and SRC_SAVEDMODEL {args.src!r} overlap (one is, or holds, the other); "
            "write the traced model to a separate directory"
        )
    if os.path.exists(dst) and not os.path.isdir(dst):
        raise SourceError(f"DST_DIR {args.dst!r} is a file; give a directory path")
    if os.path.isdir(dst) and os.listdir(dst) and not args.overwrite:
        raise SourceError(f"DST_DIR {args.dst!r} exists and is not empty; pass --overwrite to replace it")
    options = _options(args)
    check_savedmodel_dir(src)
    sig, examples = _source(args, src)
    calibration = _calibration(args.calibration_inputs, examples) if args.calibration_inputs else None
    with reporting(TerminalProgress(sys.stderr)):
        traced = tfaccel.trace(sig.function, examples, calibration_inputs=calibration, **options)
    _save_replacing(traced, dst)
    expected = sig.function(**examples)
    got = traced(**examples)
    report = traced.placement_report
    if args.json:
        print(json.dumps(report.to_json(), indent=1, sort_keys=True))
        return 0
    traced.summary()
    print(f"traced signature {sig.describe()}")
    print(f"on_neuron_ratio: {traced.on_neuron_ratio:.3f}")
    for name in sorted(expected):
        diff = _max_abs_diff(expected[name], got[name])
        print(f"output {name!r}: max |traced - original| = {diff:.3g} on the example inputs")
    fixed = [k for k, s in sig.inputs.items() if s.shape.rank and s.shape[0] is None]
    plan = traced.tfaccel_executable.batch_plan
    if fixed and not plan.any_batch:
        batch = examples[fixed[0]].shape[0]
        print(
            f"note: the source accepts any batch size; the traced model takes batch {batch} only: {plan.why}"
        )
    print(f"wrote {args.dst}")
    return 0


def _calibration(path: str, examples: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """``--calibration-inputs FILE.npz``: per input name, the samples stacked on a new first axis
    (``numpy.savez(path, x=np.stack(samples))``), split into one input dict per sample.
    """
    arrays = read_npz(path)
    if set(arrays) != set(examples):
        raise SourceError(
            f"--calibration-inputs {path!r} holds {sorted(arrays)}, the signature takes {sorted(examples)}; "
            "store each input's samples stacked under its name: numpy.savez(path, name=np.stack(samples))"
        )
    counts = {name: (len(value) if value.ndim else 0) for name, value in arrays.items()}
    if len(set(counts.values())) != 1:
        raise SourceError(
            f"--calibration-inputs {path!r}: the inputs hold different numbers of samples (first axis): "
            f"{counts}; stack the same samples for every input"
        )
    total = next(iter(counts.values()))
    return [{name: arrays[name][i] for name in examples} for i in range(total)]  # the examples' key order


def _max_abs_diff(a: Any, b: Any) -> float:
    x, y = np.asarray(a), np.asarray(b)
    if x.dtype.kind in "SUOb" or x.size == 0:
        return 0.0 if np.array_equal(x, y) else float("inf")
    return float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64))))


def _save_replacing(traced: Any, dst: str) -> None:
    """Save to a sibling directory, then swap it into place: DST is never half-written, and an old DST
    is only deleted once the new one is in place (it is put back if the swap fails).
    """
    parent = os.path.dirname(dst) or "."
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".{os.path.basename(dst)}.tfaccel-{os.getpid()}")
    old = staging + ".old"
    for leftover in (staging, old):
        shutil.rmtree(leftover, ignore_errors=True)  # our own names, from an interrupted run
    try:
        traced.save(staging)
        if os.path.isdir(dst):
            os.replace(dst, old)
        try:
            os.replace(staging, dst)
        except OSError:
            if os.path.isdir(old):
                os.replace(old, dst)
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def analyze(args: argparse.Namespace) -> int:
    options = _options(args)
    sig, examples = _source(args, args.src)
    results = tfaccel.analyze_model(sig.function, examples, print_fn=None if args.json else print, **options)
    if args.json:
        print(json.dumps(results, indent=1, sort_keys=True))
    return 0


def bench(args: argparse.Namespace) -> int:
    verify_traced(args.dir)  # a traced model's files against their recorded digests, as tfaccel.load does
    sig = open_signature(args.dir, args.signature)
    arrays = read_npz(args.inputs) if args.inputs else None
    examples = example_inputs(sig, batch_size=args.batch_size, arrays=arrays)
    models = {"model": _caller(sig, examples)}
    label = {"model": args.dir}
    if args.baseline:
        base = open_signature(args.baseline, args.signature)
        _check_same_inputs(base, sig, examples, args.baseline)
        models["baseline"] = _caller(base, examples)
        label["baseline"] = args.baseline
    batch = _batch_of(examples)
    first: dict[str, float] = {}
    for key, fn in models.items():  # before any warm-up: what a user waits for after loading
        try:
            first[key] = loadtest.first_call_ms(fn)
        except Exception as err:  # the model fails on its inputs: said like a failed load-test call
            raise SourceError(f"the first call of {label[key]} failed: {type(err).__name__}: {err}") from err
    levels: tuple[int, ...] = args.concurrency
    rows: list[dict[str, Any]] = []
    ratios: dict[str, dict[str, float]] = {}
    failures: list[tuple[str, loadtest.LoadResult]] = []
    for level in levels:
        results = loadtest.run(models, batch, level, args.duration, warmup=args.warmup)
        by_key = {
            key: {**result.summary(), "path": label[key], "first_call_ms": first[key]}
            for key, result in results.items()
        }
        rows.extend(by_key.values())
        failures.extend((key, r) for key, r in results.items() if r.errors)
        if "baseline" in by_key and by_key["model"]["calls"] and by_key["baseline"]["calls"]:
            ours, theirs = by_key["model"], by_key["baseline"]
            ratios[str(level)] = {
                "throughput": ours["inferences_per_s"] / theirs["inferences_per_s"],
                "p50": theirs["p50_ms"] / ours["p50_ms"],
                "p99": theirs["p99_ms"] / ours["p99_ms"],
            }
    if args.json:
        data: dict[str, Any] = {"results": rows, "speedup_by_concurrency": ratios}
        if len(levels) == 1:
            data["speedup"] = ratios.get(str(levels[0]), {})
        print(json.dumps(data, indent=1))
    else:
        print(
            f"signature {sig.describe()}: batch {batch}, concurrency {','.join(map(str, levels))}, "
            f"{args.duration:g} s per model and concurrency"
        )
        print(
            f"  {'model':<40} {'threads':>7} {'calls':>7} {'infer/s':>9} {'mean ms':>8} {'min ms':>8} "
            f"{'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}"
        )
        for row in rows:
            name = row["path"] if len(row["path"]) <= 40 else "..." + row["path"][-37:]
            if not row["calls"]:
                print(f"  {name:<40} {row['concurrency']:>7} no successful call")
                continue
            print(
                f"  {name:<40} {row['concurrency']:>7} {row['calls']:>7} {row['inferences_per_s']:>9.1f} "
                f"{row['mean_ms']:>8.2f} {row['min_ms']:>8.2f} {row['p50_ms']:>8.2f} {row['p90_ms']:>8.2f} "
                f"{row['p99_ms']:>8.2f} {row['max_ms']:>8.2f}"
            )
        for key, ms in first.items():
            print(f"  first call of {label[key]} (after loading; compiling included): {ms:.2f} ms")
        for threads, ratio in ratios.items():
            print(
                f"  speed-up vs baseline at concurrency {threads}: throughput {ratio['throughput']:.2f}x, "
                f"p50 latency {ratio['p50']:.2f}x, p99 latency {ratio['p99']:.2f}x"
            )
    if failures:
        key, result = failures[0]
        raise SourceError(f"{result.errors} calls of {label[key]} failed; the first: {result.first_error}")
    return 0


def show(args: argparse.Namespace) -> int:
    """Every signature's inputs and outputs (saved_model_cli show --all), and the placement of a traced
    model (its ratio, subgraphs and the versions that made it) from its saved report.
    """
    import tensorflow as tf

    check_savedmodel_dir(args.dir)
    try:
        loaded = tf.saved_model.load(args.dir, tags=args.tags)
    except Exception as err:  # TF's errors, protobuf's: the model cannot be read
        raise SourceError(f"{args.dir!r} could not be loaded as a SavedModel: {_first_line(err)}") from err
    signatures: dict[str, Any] = {}
    for key in sorted(getattr(loaded, "signatures", {}) or {}):
        function = loaded.signatures[key]
        _, kwargs = function.structured_input_signature
        signatures[key] = {
            "inputs": {name: _spec_json(spec) for name, spec in sorted(kwargs.items())},
            "outputs": {name: _spec_json(spec) for name, spec in sorted(function.structured_outputs.items())},
        }
    traced = _traced_summary(args.dir)
    if args.json:
        print(json.dumps({"signatures": signatures, "tfaccel": traced}, indent=1, sort_keys=True))
        return 0
    print(f"SavedModel {args.dir}: {len(signatures)} signature(s)")
    for key, sig in signatures.items():
        print(f"signature_def[{key!r}]:")
        for side in ("inputs", "outputs"):
            print(f"  {side}:")
            for name, spec in sig[side].items():
                print(f"    {name}: {spec['dtype']} {spec['shape']}")
    if traced is None:
        print("not traced by tfaccel (no assets.extra/tfaccel.json)")
    else:
        print(
            f"traced by tfaccel: {traced['accelerated_ops']}/{traced['total_ops']} ops on the accelerator "
            f"in {traced['subgraphs']} subgraph(s) ({traced['backend']}); made with {_versions(traced)}"
        )
        print(f"  (tfaccel report {args.dir} prints the whole placement)")
    return 0


def _versions(traced: dict[str, Any]) -> str:
    made = traced["made_with"]
    return ", ".join(f"{k} {v}" for k, v in made.items()) if made else "versions not recorded"


def _spec_json(spec: Any) -> dict[str, Any]:
    shape = None if spec.shape.rank is None else [d for d in spec.shape.as_list()]
    return {"dtype": spec.dtype.name, "shape": shape}


def _traced_summary(path: str) -> dict[str, Any] | None:
    """What the saved report says of a traced model, or None for a SavedModel tfaccel did not write."""
    from tfaccel.runtime.metadata import METADATA_FILE, read_metadata

    if not os.path.isfile(os.path.join(path, METADATA_FILE)):
        return None
    meta = read_metadata(path)
    report = tfaccel.load_report(path)
    made = meta.get("made_with")
    return {
        "backend": report.backend,
        "accelerated_ops": report.accelerated_ops,
        "total_ops": report.total_ops,
        "subgraphs": len(report.subgraphs),
        "made_with": dict(sorted(made.items())) if isinstance(made, dict) else None,
    }


def run(args: argparse.Namespace) -> int:
    """Call a signature on inputs from an .npz (or made from the signature) and print each output."""
    import tensorflow as tf

    verify_traced(args.dir)  # a traced model's files against their recorded digests, as tfaccel.load does
    sig = open_signature(args.dir, args.signature, args.tags)
    arrays = read_npz(args.inputs) if args.inputs else None
    inputs = example_inputs(sig, batch_size=args.batch_size, arrays=arrays)
    outputs = {
        name: value.numpy()
        for name, value in sig.function(**{k: tf.constant(v) for k, v in inputs.items()}).items()
    }
    for name in sorted(outputs):
        value = outputs[name]
        print(f"{name}: {value.dtype} {list(value.shape)}")
        print(np.array2string(value, threshold=50, edgeitems=3, max_line_width=110))
    if args.output:
        _write_npz(args.output, outputs)
        print(f"saved {len(outputs)} output(s) to {args.output}")
    return 0


def _write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """``numpy.savez`` by name, for any names (an output called ``file`` would clash with its keyword)."""
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, value in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def _check_same_inputs(base: Signature, sig: Signature, examples: dict[str, np.ndarray], path: str) -> None:
    """The baseline must take exactly the inputs the model is called with (names, dtypes, shapes)."""
    problems = []
    if set(base.inputs) != set(examples):
        problems.append(f"inputs {sorted(base.inputs)} vs {sorted(examples)}")
    for name, value in examples.items():
        spec = base.inputs.get(name)
        if spec is None:
            continue
        if spec.dtype.as_numpy_dtype != value.dtype:
            problems.append(f"{name!r} is {spec.dtype.name} there, {value.dtype} here")
        elif not spec.shape.is_compatible_with(value.shape):
            problems.append(f"{name!r} takes {spec.shape} there, not {list(value.shape)}")
    if problems:
        raise SourceError(
            f"--baseline {path!r} cannot take the inputs of {sig.describe()}: {'; '.join(problems)}; give "
            "the SavedModel the traced model came from"
        )


def _batch_of(examples: dict[str, np.ndarray]) -> int:
    """The batch of a call: the first dimension the inputs share (1 when they share none)."""
    firsts = {value.shape[0] for value in examples.values() if value.ndim}
    return firsts.pop() if len(firsts) == 1 else 1


def _caller(sig: Signature, examples: dict[str, np.ndarray]) -> Any:
    import tensorflow as tf

    tensors = {name: tf.constant(value) for name, value in examples.items()}
    function = sig.function

    def call() -> None:
        for value in function(**tensors).values():
            value.numpy()

    return call
