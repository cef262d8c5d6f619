#!/usr/bin/env python3
"""Mutation check: break the code on purpose, one curated change at a time, and see the tests fail.

Why: a green suite only says the tests pass, not that they would fail if the code were wrong. Issue 21
found whole features whose deliberate breaks passed every test (the op ignoring the precision, padding
rows of garbage, a pipeline without micro-batches). This script keeps those breaks, and new ones, as data
(:data:`MUTATIONS`) and re-applies them on demand, so a test that stops guarding its feature shows up as a
SURVIVED row instead of going unnoticed.

How: the commit (``--rev``, default HEAD) is exported with ``git archive`` into a temporary directory, so
uncommitted edits never leak in. Each mutation gets its own copy of that tree, in which its ``find`` text
must occur exactly once (else the mutation is STALE: the code moved and the mutation must be updated, never
silently skipped). The tests named by the mutation then run in the copy with ``PYTHONPATH`` pointing at the
copy's ``src`` (ahead of the editable install), and the copy's own ``tests/conftest.py`` hands that path to
every subprocess, server and console script the tests start. A mutation of the OpenVINO op's C++ source
gets a private op-library cache, so its library is rebuilt (20-40 s) and never pollutes the user's cache;
that library must build and load before its tests run (a build failure is an ERROR, not a kill).

Before the mutations, the unmutated copy is checked: ``tfaccel`` must resolve to the copy, and every named
test must be collected (a renamed test is an ERROR, not a mutation that "survives" by running nothing).
The ``sanity-copy-imported`` mutation proves the first point end to end: it breaks the copy's package
import, so it can only be killed if the copy is what the tests import.

Exit status: 0 when every mutation is killed, 1 otherwise (any SURVIVED, STALE, ERROR or TIMEOUT).
It is a slow job, not part of the default test run; ``tests/test_mutation_tool.py`` keeps the list
well-formed and every ``find`` text current. See ``docs/testing.md``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: pytest options for every run: stop at the first failure, no cache written into the copy
PYTEST_ARGS = ("-x", "-q", "-p", "no:cacheprovider")


@dataclass(frozen=True)
class Mutation:
    """One deliberate break: replace ``find`` (which must occur exactly once in ``file``) by ``replace``,
    then run ``tests`` (pytest node ids or files, relative to the repository root), which must fail.
    """

    name: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]
    why: str
    #: optional pytest ``-k`` expression, to run a subset of the files in ``tests``
    select: str | None = None
    timeout: int = 900


@dataclass
class Result:
    mutation: Mutation
    status: str  # KILLED, SURVIVED, STALE, ERROR, TIMEOUT
    seconds: float = 0.0
    detail: str = ""  # the failing test (KILLED), or why (STALE, ERROR)
    output: str = field(default="", repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "KILLED"


_OP = "src/tfaccel/native/openvino_op.cc"
_OV_TESTS = "tests/test_openvino.py"
_MANAGER = "src/tfaccel/serving/manager.py"
_LIFECYCLE = "tests/robustness/test_server_lifecycle.py"

#: The curated mutations. Add one whenever a bug is fixed (see docs/testing.md): the break the bug was,
#: and the tests that now catch it.
MUTATIONS: tuple[Mutation, ...] = (
    Mutation(
        "sanity-copy-imported",
        "src/tfaccel/__init__.py",
        "from typing import TYPE_CHECKING, Any\n",
        'raise ImportError("mutation check sanity: the copy\'s tfaccel is imported")\n',
        ("tests/test_selection.py::test_nothing_measured_stays_on_tf",),
        "proves the tests import the mutated copy, not the editable install (must always be killed)",
    ),
    # -- the deliberate breaks of issue 21 ----------------------------------------------------------------
    Mutation(
        "op-ignores-precision",
        _OP,
        'ov::hint::inference_precision(precision == "bf16" ? ov::element::bf16 : ov::element::f32)',
        "ov::hint::inference_precision(ov::element::f32)",
        (
            "tests/test_fp32_cast.py::test_openvino_computes_in_bfloat16",
            f"{_OV_TESTS}::test_fp32_cast_runs_openvino_in_bf16",
        ),
        "--fp32-cast on openvino really computes in bf16 (observable only where OpenVINO's CPU plugin has "
        "BF16; elsewhere the hint changes nothing and the tests skip)",
    ),
    Mutation(
        "op-returns-zeros",
        _OP,
        "if (bytes > 0 && result.data() != out->tensor_data().data()) {\n"
        "          std::memcpy(const_cast<char*>(out->tensor_data().data()), result.data(), bytes);",
        "if (bytes > 0) {\n          std::memset(const_cast<char*>(out->tensor_data().data()), 0, bytes);",
        (f"{_OV_TESTS}::test_whole_cnn_runs_in_one_openvino_subgraph_with_equal_answers",),
        "every openvino answer is compared with the original model",
    ),
    Mutation(
        "op-one-infer-request",
        _OP,
        "request_ = std::move(compiled_->pool.back());\n      compiled_->pool.pop_back();",
        "request_ = compiled_->pool.back();  // shared by every call",
        (f"{_OV_TESTS}::test_concurrent_calls_are_bit_identical_to_serial",),
        "concurrent calls must never share one infer request",
    ),
    Mutation(
        "op-skips-shape-check",
        _OP,
        "OP_REQUIRES(ctx, expected.compatible(ov::PartialShape(shape)),",
        "OP_REQUIRES(ctx, true,",
        (f"{_OV_TESTS}::test_the_kernel_refuses_a_wrong_shape_naming_the_input",),
        "the op refuses an input of the wrong shape with InvalidArgument naming the input",
    ),
    Mutation(
        "dynamic-batch-pads-with-minus-7",
        "src/tfaccel/runtime/batching.py",
        "tf.reshape(tf.gather(x, rows), tf.concat([[chunks, batch], tf.shape(x)[1:]], axis=0))",
        "tf.reshape(tf.concat([x, tf.fill(tf.concat([[chunks * batch - n], tf.shape(x)[1:]], 0), "
        "tf.cast(-7, x.dtype))], 0), tf.concat([[chunks, batch], tf.shape(x)[1:]], axis=0))",
        ("tests/test_dynamic_batch.py::test_xla_runs_chunks_padded_by_repeating_the_last_row",),
        "the last chunk is padded by repeating the last row (valid data), never with made-up values",
    ),
    Mutation(
        "dynamic-batch-wrong-rows",
        "src/tfaccel/runtime/batching.py",
        "tf.shape(r)[2:]], axis=0))[:n] for r in results]",
        "tf.shape(r)[2:]], axis=0))[-n:] for r in results]",
        (
            "tests/test_dynamic_batch.py::test_xla_runs_chunks_padded_by_repeating_the_last_row",
            "tests/test_dynamic_batch.py::test_any_batch_size_equals_the_original",
        ),
        "the chunked path (xla, or a model that fixes its batch) returns rows 0..n-1, not the padded tail",
    ),
    Mutation(
        "pipeline-one-micro-batch-in-flight",
        "src/tfaccel/runtime/batching.py",
        "parallel_iterations=in_flight,",
        "parallel_iterations=1,",
        ("tests/test_pipeline.py::test_stages_run_on_micro_batches_with_several_in_flight",),
        "with N pipeline stages, N micro-batches are in flight (stage k of one overlaps k+1 of another)",
    ),
    Mutation(
        "pipeline-stages-on-whole-batch",
        "src/tfaccel/compiler/examples.py",
        "return batch, self.first_rows(-(-batch // stages))",
        "return batch, self.first_rows(batch)",
        (
            "tests/test_pipeline.py::test_stages_run_on_micro_batches_with_several_in_flight",
            "tests/test_pipeline.py::test_pipeline_on_xla_with_dynamic_batch_runs_micro_batches",
        ),
        "pipelined stages are compiled for, and run on, micro-batches of ceil(B / N) rows",
    ),
    Mutation(
        "extract-weights-ignored",
        "src/tfaccel/compiler/frontend.py",
        "    extract = opts.extract_weights\n",
        "    extract = False\n",
        ("tests/test_extract_weights.py",),
        "--extract-weights keeps the weights out of the graph (as variables), on every backend",
    ),
    Mutation(
        "server-loads-unsettled-version",
        _MANAGER,
        "settled = fingerprint == record.fingerprint and complete",
        "settled = complete",
        (f"{_LIFECYCLE}::test_a_version_copied_in_steps_is_loaded_only_once_settled",),
        "a version directory is loaded only once its files stop changing between two polls",
    ),
    Mutation(
        "partition-skips-cycle-check",
        "src/tfaccel/compiler/partition.py",
        "        if self.reachable(a, b):\n            self.succ[a].add(b)",
        "        if False:\n            self.succ[a].add(b)",
        ("tests/test_partition.py",),
        "two groups joined by another path are never merged (the merged call would wait on itself)",
    ),
    # -- capture ------------------------------------------------------------------------------------------
    Mutation(
        "capture-keras-in-training-mode",
        "src/tfaccel/compiler/capture.py",
        'kwargs["training"] = False',
        'kwargs["training"] = True',
        ("tests/test_capture.py::test_keras_model_is_traced_in_inference_mode",),
        "a Keras model is traced for inference (dropout off, batch norm on its moving statistics)",
    ),
    Mutation(
        "capture-shares-the-original-weights",
        "src/tfaccel/compiler/capture.py",
        "weights += tuple(tf.Variable(v.read_value(), trainable=False) for _, v in lifted)",
        "weights += tuple(v for _, v in lifted)",
        ("tests/test_extract_weights.py::test_traced_model_keeps_its_own_copy_of_the_weights",),
        "with --extract-weights the traced model owns a copy: the original's weights may change",
    ),
    Mutation(
        "fp32-cast-silent-when-it-changes-nothing",
        "src/tfaccel/compiler/capture.py",
        'if fp32_cast != "none" and count == 0:',
        "if False:",
        ("tests/test_fp32_cast.py::test_a_cast_that_changes_nothing_is_logged_and_reported",),
        "a --fp32-cast that changes nothing (no fp32 matmul, or no bf16 on the CPU) is logged and reported",
    ),
    # -- assembly -----------------------------------------------------------------------------------------
    Mutation(
        "assemble-reads-output-0-only",
        "src/tfaccel/compiler/assemble.py",
        "replaced[ref] = TensorRef(cluster.name, k)",
        "replaced[ref] = TensorRef(cluster.name, 0)",
        ("tests/test_dynamic_batch.py::test_any_batch_size_equals_the_original",),
        "a consumer of a subgraph's k-th output reads output k of the call that replaced it",
    ),
    Mutation(
        "assemble-swaps-subgraph-inputs",
        "src/tfaccel/compiler/assemble.py",
        "input_index = {ref: i for i, ref in enumerate(cluster.inputs)}",
        "input_index = {ref: len(cluster.inputs) - 1 - i for i, ref in enumerate(cluster.inputs)}",
        ("tests/test_dynamic_batch.py::test_any_batch_size_equals_the_original",),
        "a subgraph's i-th input Placeholder is fed the i-th boundary tensor (two inputs of one shape)",
    ),
    # -- placement, selection, partition determinism ------------------------------------------------------
    Mutation(
        "selection-ignores-the-noise-margin",
        "src/tfaccel/compiler/selection.py",
        "    if backend.low_ms - tf.high_ms > margin:",
        "    if backend.ms - tf.ms > 0:",
        ("tests/test_selection.py",),
        "TF keeps a subgraph only when faster than the backend by the margin, intervals apart",
    ),
    Mutation(
        "placement-prefers-the-last-backend",
        "src/tfaccel/compiler/placement.py",
        "chosen = next((d for d in options if d.accelerated), None)",
        "chosen = next((d for d in reversed(options) if d.accelerated), None)",
        ("tests/test_mixed.py::test_static_placement_puts_each_node_on_the_first_backend_that_takes_it",),
        "a node goes to the first backend, in the order of preference, that takes it",
    ),
    Mutation(
        "partition-boundary-order-not-reproducible",
        "src/tfaccel/compiler/partition.py",
        "inputs=tuple(inputs),",
        "inputs=tuple(set(inputs)),",
        ("tests/test_mutation_guards.py", "tests/test_partition.py"),
        "a cluster's inputs come in a fixed order, so the same graph gives the same call (and saved bytes) "
        "in every process",
    ),
    # -- options ------------------------------------------------------------------------------------------
    Mutation(
        "options-precedence-reversed",
        "src/tfaccel/compiler/options.py",
        'ENV_VARS = ("NEURON_CC_FLAGS", "TFACCEL_CC_FLAGS")',
        'ENV_VARS = ("TFACCEL_CC_FLAGS", "NEURON_CC_FLAGS")',
        ("tests/test_options.py::test_precedence_keyword_over_tfaccel_over_neuron",),
        "TFACCEL_CC_FLAGS overrides NEURON_CC_FLAGS (and keywords override both)",
    ),
    Mutation(
        "options-min-segment-size-ignored",
        "src/tfaccel/compiler/compilation.py",
        "min_size=run.options.min_segment_size,",
        "min_size=2,",
        (
            "tests/test_mutation_guards.py::test_min_segment_size_decides_whether_a_small_subgraph_compiles",
            "tests/test_options.py",
        ),
        "--min-segment-size is obeyed, not parsed and then silently ignored",
    ),
    # -- the server: batching and version lifecycle -------------------------------------------------------
    Mutation(
        "server-loads-incomplete-version",
        _MANAGER,
        "settled = fingerprint == record.fingerprint and complete",
        "settled = fingerprint == record.fingerprint",
        (f"{_LIFECYCLE}::test_completeness_is_judged_by_the_index",),
        "a version directory missing a file its SavedModel announces (a shard, the index) is not loaded",
    ),
    Mutation(
        "server-unloads-before-the-new-version-loads",
        _MANAGER,
        "if gone or (settled and any_available):",
        "if gone or True:",
        (
            f"{_LIFECYCLE}::test_a_version_copied_in_steps_is_loaded_only_once_settled",
            "tests/test_server.py::test_version_roll_over_under_load",
        ),
        "the old version serves until the new one is available (no NOT_FOUND during a roll-over)",
    ),
    Mutation(
        "server-batching-misroutes-rows",
        "src/tfaccel/serving/batching.py",
        "                start += task.rows\n",
        "",
        ("tests/test_server.py::test_batching_merges_concurrent_requests",),
        "each batched request gets its own rows of the merged answer",
    ),
    Mutation(
        "server-batching-never-merges",
        "src/tfaccel/serving/batching.py",
        "            while rows < self.limit:",
        "            while False:",
        ("tests/test_server.py::test_batching_merges_concurrent_requests",),
        "concurrent requests are merged into one model call",
    ),
    Mutation(
        "server-batching-queue-unbounded",
        "src/tfaccel/serving/batching.py",
        "if len(self.tasks) >= self.params.max_enqueued_batches * self.limit:",
        "if False:",
        ("tests/test_server.py::test_a_full_batching_queue_answers_503",),
        "a full batching queue answers UNAVAILABLE (HTTP 503) at once instead of growing without bound",
    ),
)


# -- applying ------------------------------------------------------------------------------------------
class StaleMutation(Exception):
    """The mutation's ``find`` text does not occur exactly once: the code changed, update the mutation."""


def apply(mutation: Mutation, tree: Path) -> None:
    """Apply ``mutation`` to the copy at ``tree``; raises :class:`StaleMutation` unless it matches once."""
    path = tree / mutation.file
    if not path.is_file():
        raise StaleMutation(f"{mutation.file} does not exist")
    text = path.read_text()
    count = text.count(mutation.find)
    if count != 1:
        raise StaleMutation(f"the find text occurs {count} times in {mutation.file} (must be exactly once)")
    path.write_text(text.replace(mutation.find, mutation.replace))


def export_tree(rev: str, target: Path) -> str:
    """Export ``rev``'s tracked files into ``target`` (``git archive``); returns the full commit id."""
    commit = _git("rev-parse", "--verify", f"{rev}^{{commit}}").strip()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit], capture_output=True, check=True
    ).stdout
    target.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12: refuse links and paths leaving target
            tar.extractall(target, filter="data")
        else:
            tar.extractall(target)
    return commit


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout


def copy_env(tree: Path, op_cache: Path | None = None) -> dict[str, str]:
    """The environment that makes Python import ``tree``'s code (and its own op library when given)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree / "src")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if op_cache is not None:
        env["TFACCEL_CACHE_DIR"] = str(op_cache)
    return env


def check_copy_is_imported(tree: Path) -> None:
    """``tfaccel`` and ``tfaccel_cli`` must resolve to ``tree`` (no import of TensorFlow needed)."""
    code = (
        "import importlib.util as u\n"
        "print(u.find_spec('tfaccel').origin)\n"
        "print(u.find_spec('tfaccel_cli').origin)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=copy_env(tree), cwd=tree, capture_output=True, text=True, check=True
    )
    for origin in proc.stdout.split():
        if not Path(origin).resolve().is_relative_to(tree.resolve()):
            raise SystemExit(f"mutation check: the copy's code is not what Python imports ({origin})")


def pytest_command(tests: Sequence[str], select: str | None) -> list[str]:
    command = [sys.executable, "-m", "pytest", *PYTEST_ARGS, *tests]
    if select:
        command += ["-k", select]
    return command


def check_tests_collect(tree: Path, mutations: Sequence[Mutation]) -> dict[str, str]:
    """Mutation name -> why its tests cannot run on the unmutated copy: a test file that does not import,
    a node id that no longer exists (renamed), a ``-k`` expression that selects nothing. One collection
    run over every file named (pytest's start-up and TensorFlow's import are paid once).
    """
    files = sorted({t.split("::")[0] for m in mutations for t in m.tests})
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files]
    proc = subprocess.run(command, cwd=tree, env=copy_env(tree), capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    # one node id per line (parametrized ids may hold spaces), then a summary line
    collected = [
        line.strip() for line in proc.stdout.splitlines() if line.startswith("tests/") and "::" in line
    ]
    broken = set(re.findall(r"^ERROR (tests/\S+\.py)", output, re.MULTILINE))
    problems: dict[str, str] = {}
    for mutation in mutations:
        why = None
        selected: list[str] = []
        for test in mutation.tests:
            path = test.split("::")[0]
            if path in broken:
                why = f"{path} does not import unmutated (pytest --collect-only {path})"
                break
            matching = [
                n for n in collected if n == test or n.startswith(test + ("[" if "::" in test else "::"))
            ]
            if not matching:
                why = f"{test} collects no test unmutated (renamed or removed?)"
                break
            selected += matching
        if why is None and mutation.select and not any(_k_matches(mutation.select, n) for n in selected):
            why = f"-k {mutation.select!r} selects none of its tests"
        if why is not None:
            problems[mutation.name] = why
    return problems


def _k_matches(expression: str, node_id: str) -> bool:
    """Whether pytest's ``-k`` (case-insensitive substrings, and/or/not) selects ``node_id``, roughly."""
    words = re.findall(r"\w+", expression)
    python = expression
    for word in sorted(set(words) - {"and", "or", "not"}, key=len, reverse=True):
        python = re.sub(rf"\b{re.escape(word)}\b", repr(word.lower() in node_id.lower()), python)
    try:
        return bool(eval(python, {"__builtins__": {}}))  # only True/False/and/or/not/parentheses remain
    except SyntaxError:
        return True  # an expression this approximation cannot read: let pytest decide


def _build_op_library(tree: Path, op_cache: Path, timeout: int) -> str | None:
    """Build and load the copy's (mutated) op library into ``op_cache``; None when it loads, else why not."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "tfaccel.native"],
            cwd=tree,
            env=copy_env(tree, op_cache),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return f"the mutated op library did not build within {timeout} s"
    if proc.returncode != 0 or not Path(proc.stdout.strip() or "/").resolve().is_relative_to(
        op_cache.resolve()
    ):
        return f"the mutated op library does not build or load: {_summary(proc.stderr or proc.stdout)}"
    return None


_FAILED = re.compile(r"^(FAILED|ERROR) (.+?)(?: - .*)?$", re.MULTILINE)  # node ids may hold spaces


def run_mutation(mutation: Mutation, base: Path, workdir: Path, keep: bool = False) -> Result:
    """Copy ``base``, apply ``mutation``, run its tests; the result says whether they caught it."""
    tree = workdir / mutation.name
    shutil.copytree(base, tree, symlinks=True)
    start = time.monotonic()
    try:
        try:
            apply(mutation, tree)
        except StaleMutation as err:
            return Result(mutation, "STALE", 0.0, str(err))
        op_cache = tree / ".op-cache" if mutation.file.endswith(".cc") else None
        if op_cache is not None:  # a library that fails to build would fail the tests: not a kill
            built = _build_op_library(tree, op_cache, mutation.timeout)
            if built is not None:
                return Result(mutation, "ERROR", time.monotonic() - start, built)
        command = pytest_command(mutation.tests, mutation.select)
        try:
            proc = subprocess.run(
                command,
                cwd=tree,
                env=copy_env(tree, op_cache),
                capture_output=True,
                text=True,
                timeout=mutation.timeout,
            )
        except subprocess.TimeoutExpired as err:
            out = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
            return Result(mutation, "TIMEOUT", time.monotonic() - start, f"> {mutation.timeout} s", out)
        seconds = time.monotonic() - start
        output = proc.stdout + proc.stderr
        if proc.returncode == 0:
            return Result(mutation, "SURVIVED", seconds, _summary(output), output)
        # 1: a test failed; 2: collection failed. 4 with a collection error: a node id whose module no
        # longer imports. The unmutated copy collected every one of these tests, so the mutation did it.
        broke_import = proc.returncode == 4 and _FAILED.search(output) is not None
        if proc.returncode in (1, 2) or broke_import:
            failed = _FAILED.search(output)
            detail = failed.group(2) if failed else _summary(output)
            if failed and failed.group(1) == "ERROR" and "::" not in detail:
                detail = f"{detail} (its import fails)"
            return Result(mutation, "KILLED", seconds, detail, output)
        return Result(
            mutation, "ERROR", seconds, f"pytest exit {proc.returncode}: {_summary(output)}", output
        )
    finally:
        if not keep:
            shutil.rmtree(tree, ignore_errors=True)


def _summary(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    return lines[-1][:160] if lines else ""


# -- reporting -----------------------------------------------------------------------------------------
def table(results: Sequence[Result]) -> str:
    """The kill table, as Markdown (readable in a terminal, pasted as is into docs/testing.md)."""
    rows = [
        "| mutation | file | tests run | result | caught by / detail | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        m = r.mutation
        tests = ", ".join(t.removeprefix("tests/") for t in m.tests)
        if m.select:
            tests += f" `-k '{m.select}'`"
        detail = r.detail.replace("|", "\\|").removeprefix("tests/")
        rows.append(
            f"| {m.name} | {m.file.removeprefix('src/tfaccel/')} | {tests} | {r.status} | {detail} | "
            f"{r.seconds:.0f} |"
        )
    return "\n".join(rows)


def list_mutations(mutations: Sequence[Mutation]) -> str:
    lines = []
    for m in mutations:
        select = f" -k '{m.select}'" if m.select else ""
        lines.append(f"{m.name}\n    {m.file}: {m.why}\n    tests: {' '.join(m.tests)}{select}")
    return "\n".join(lines)


def select_mutations(names: Sequence[str]) -> list[Mutation]:
    if not names:
        return list(MUTATIONS)
    wanted = [n for name in names for n in name.split(",") if n]
    known = {m.name: m for m in MUTATIONS}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise SystemExit(f"unknown mutation(s): {', '.join(unknown)} (see --list)")
    return [known[n] for n in wanted]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument(
        "--only", action="append", default=[], metavar="NAME", help="run only these (repeatable)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="mutations run at once (default 1)")
    parser.add_argument("--rev", default="HEAD", help="the commit to mutate (default HEAD)")
    parser.add_argument("--keep", action="store_true", help="keep the mutated copies (to debug a mutation)")
    parser.add_argument("--verbose", action="store_true", help="print each run's pytest output")
    parser.add_argument("--log-dir", type=Path, help="write each mutation's pytest output to DIR/NAME.log")
    args = parser.parse_args(argv)
    mutations = select_mutations(args.only)
    if args.list:
        print(list_mutations(mutations))
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="tfaccel-mutation-"))
    base = workdir / "_base"
    commit = export_tree(args.rev, base)
    started = datetime.datetime.now(datetime.timezone.utc)
    print(f"mutation check of {commit[:12]} ({len(mutations)} mutations, {args.jobs} at a time) in {workdir}")
    try:
        check_copy_is_imported(base)
        problems = check_tests_collect(base, mutations)
        lock = threading.Lock()
        done: dict[str, Result] = {}

        def one(mutation: Mutation) -> Result:
            if mutation.name in problems:
                result = Result(mutation, "ERROR", 0.0, problems[mutation.name])
            else:
                result = run_mutation(mutation, base, workdir, keep=args.keep)
            if args.log_dir is not None:
                args.log_dir.mkdir(parents=True, exist_ok=True)
                (args.log_dir / f"{mutation.name}.log").write_text(result.output)
            with lock:
                done[mutation.name] = result
                print(
                    f"  {result.status:8} {mutation.name} ({result.seconds:.0f} s) {result.detail}",
                    flush=True,
                )
                if args.verbose or result.status in ("ERROR", "TIMEOUT"):
                    print(result.output[-3000:], flush=True)
            return result

        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            list(pool.map(one, mutations))
        results = [done[m.name] for m in mutations]
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
    killed = sum(r.ok for r in results)
    print()
    print(
        f"Mutation check of commit {commit[:12]}, {started:%Y-%m-%d %H:%M} UTC: {killed} of {len(results)} "
        f"killed in {elapsed / 60:.0f} min"
    )
    print()
    print(table(results))
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
