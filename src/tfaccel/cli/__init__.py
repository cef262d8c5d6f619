"""The ``tfaccel`` command: trace, analyze, report and bench SavedModel directories.

Exit codes: 0 success; 2 bad usage (a missing or malformed argument, an unknown flag in ``--flags``);
1 failure, with a one-line reason on stderr (the Python traceback only with ``--verbose``). The command
calls tfaccel's public API (``trace``, ``analyze_model``, ``load_report``), so it can do nothing a
script could not.

Arguments are parsed before TensorFlow is imported (its import takes seconds): ``--help``, a usage error
and ``report`` (a JSON read) never import it; the other commands import it, with tfaccel's op library,
through :func:`tfaccel.cli.startup.load_tensorflow` once parsed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from tfaccel.errors import OptionsError, TraceError

__all__ = ["main"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

_TRACE_EXAMPLES = """examples:
  tfaccel trace resnet_savedmodel resnet_traced
  tfaccel trace bert_savedmodel bert_traced --batch-size 8 --flags "--dynamic-batch-size"
  tfaccel trace model model_traced --signature serving_default --inputs examples.npz \\
      --flags "--backend=xla --workdir=/tmp/tfaccel_work"
  tfaccel trace resnet_savedmodel resnet_int8 --calibration-inputs samples.npz --flags "--quantize=int8"

Example inputs come from the signature: an unknown first dimension becomes --batch-size (default 1);
floats are uniform in [0, 1), integers zeros. For other unknown dimensions, string inputs or real data,
give an .npz file whose array names are the signature's input names (numpy.savez(path, name=array)).
--calibration-inputs stacks N samples per input name: numpy.savez(path, name=np.stack(samples)).
--flags takes the flags of NEURON_CC_FLAGS / TFACCEL_CC_FLAGS and overrides them."""

_ANALYZE_EXAMPLES = """examples:
  tfaccel analyze resnet_savedmodel
  tfaccel analyze bert_savedmodel --batch-size 8 --flags "--backend=openvino" --json"""

_REPORT_EXAMPLES = """examples:
  tfaccel report resnet_traced
  tfaccel report resnet_traced --json > placement.json
  tfaccel report resnet_traced --html placement.html"""

_SHOW_EXAMPLES = """examples:
  tfaccel show resnet_traced                  every signature's inputs and outputs, and the placement
  tfaccel show resnet_traced --json

saved_model_cli's show, for models with openvino subgraphs too (it registers tfaccel's op first)."""

_RUN_EXAMPLES = """examples:
  tfaccel run resnet_traced --inputs images.npz
  tfaccel run bert_traced --signature serving_default --inputs batch.npz --output answers.npz

saved_model_cli's run: the .npz holds one array per input name (numpy.savez(path, name=array)); without
--inputs, inputs are made from the signature as for trace (--batch-size). Each output is printed (its
name, dtype, shape and values); --output saves them all to an .npz."""

_BENCH_EXAMPLES = """examples:
  tfaccel bench resnet_traced
  tfaccel bench resnet_traced --baseline resnet_savedmodel --concurrency 4 --duration 20
  tfaccel bench bert_traced --batch-size 8   (a model traced with --dynamic-batch-size)

Each worker thread calls the signature in a loop; latency is per call, throughput counts inferences
(calls x batch). With --baseline the two models run in alternating slices of the duration, so both see
the same machine load, and the ratios are printed."""


class _Parser(argparse.ArgumentParser):
    """argparse, with bad usage exiting 2 after a one-line reason (and the usage)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _concurrency_levels(text: str) -> tuple[int, ...]:
    """``4`` or ``1,2,4``: the numbers of client threads to measure, in order, each once."""
    levels: list[int] = []
    for part in text.split(","):
        level = _positive_int(part.strip())
        if level not in levels:
            levels.append(level)
    return tuple(levels)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):  # inf would never end a timed run
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from tfaccel import __version__

    common = _Parser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", help="show TensorFlow's logs and tracebacks of failures"
    )
    source = _Parser(add_help=False)
    source.add_argument("--signature", metavar="NAME", help="signature to use (default: serving_default)")
    source.add_argument(
        "--tag", action="append", dest="tags", metavar="TAG", help="MetaGraph tag to load (repeatable)"
    )
    source.add_argument(
        "--batch-size", type=_positive_int, metavar="N", help="fills an unknown first dimension (default 1)"
    )
    source.add_argument("--inputs", metavar="FILE.npz", help="example inputs by input name")
    flags = _Parser(add_help=False)
    flags.add_argument(
        "--flags", default="", metavar='"--flag ..."', help='trace flags, e.g. "--backend=xla --workdir=w"'
    )

    parser = _Parser(
        prog="tfaccel",
        description="Trace TensorFlow SavedModels: run what an accelerator backend compiles, keep the "
        "rest on TensorFlow.",
        epilog="exit codes: 0 success, 1 failure (one-line reason on stderr), 2 bad usage. "
        "Run 'tfaccel COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"tfaccel {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", dest="verbose_all", help="as --verbose on the command"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    fmt = argparse.RawDescriptionHelpFormatter

    trace = commands.add_parser(
        "trace",
        parents=[common, source, flags],
        help="trace a SavedModel's signature, write the traced SavedModel, print the placement",
        description="Trace a SavedModel's signature and write the traced SavedModel to DST_DIR.",
        epilog=_TRACE_EXAMPLES,
        formatter_class=fmt,
    )
    trace.add_argument("src", metavar="SRC_SAVEDMODEL")
    trace.add_argument("dst", metavar="DST_DIR")
    trace.add_argument("--overwrite", action="store_true", help="replace DST_DIR if it exists")
    trace.add_argument("--json", action="store_true", help="print the placement report as JSON")
    trace.add_argument(
        "--calibration-inputs",
        metavar="FILE.npz",
        help="samples for --flags=--quantize=int8: per input name, the samples stacked on a new first axis",
    )

    analyze = commands.add_parser(
        "analyze",
        parents=[common, source, flags],
        help="which ops the backends can take, and why not (no compilation)",
        description="Analyze a SavedModel's signature: which ops each backend would take, and why not.",
        epilog=_ANALYZE_EXAMPLES,
        formatter_class=fmt,
    )
    analyze.add_argument("src", metavar="SRC_SAVEDMODEL")
    analyze.add_argument("--json", action="store_true", help="print the result as JSON")

    report = commands.add_parser(
        "report",
        parents=[common],
        help="the placement table of a traced SavedModel",
        description="Print the placement report saved with a traced SavedModel (without loading it).",
        epilog=_REPORT_EXAMPLES,
        formatter_class=fmt,
    )
    report.add_argument("dir", metavar="DIR")
    report.add_argument("--json", action="store_true", help="print the report as JSON")
    report.add_argument(
        "--html", metavar="OUT.html", help="write the report as an HTML page (subgraphs, reasons, fallbacks)"
    )

    show = commands.add_parser(
        "show",
        parents=[common],
        help="a SavedModel's signatures (inputs, outputs) and, if traced, its placement summary",
        description="Show a SavedModel's signatures, like saved_model_cli show, for traced models too.",
        epilog=_SHOW_EXAMPLES,
        formatter_class=fmt,
    )
    show.add_argument("dir", metavar="DIR")
    show.add_argument(
        "--tag", action="append", dest="tags", metavar="TAG", help="MetaGraph tag to load (repeatable)"
    )
    show.add_argument("--json", action="store_true", help="print the signatures as JSON")

    run = commands.add_parser(
        "run",
        parents=[common, source],
        help="run a SavedModel's signature on inputs from an .npz and print the outputs",
        description="Run a SavedModel's signature, like saved_model_cli run, for traced models too.",
        epilog=_RUN_EXAMPLES,
        formatter_class=fmt,
    )
    run.add_argument("dir", metavar="DIR")
    run.add_argument("--output", metavar="FILE.npz", help="also save the outputs, by name, to this file")

    bench = commands.add_parser(
        "bench",
        parents=[common],
        help="latency (p50/p90/p99) and throughput of a SavedModel, optionally next to the original",
        description="Load-test a (traced) SavedModel's signature from concurrent threads.",
        epilog=_BENCH_EXAMPLES,
        formatter_class=fmt,
    )
    bench.add_argument("dir", metavar="DIR")
    bench.add_argument("--baseline", metavar="SRC", help="the original SavedModel, run alongside")
    bench.add_argument("--signature", metavar="NAME", help="signature to call (default: serving_default)")
    bench.add_argument(
        "--batch-size", type=_positive_int, metavar="N", help="batch of each call (when the model allows)"
    )
    bench.add_argument("--inputs", metavar="FILE.npz", help="inputs by input name")
    bench.add_argument(
        "--concurrency",
        type=_concurrency_levels,
        default=(1,),
        metavar="N[,N...]",
        help="client threads; a list (1,2,4) measures each level in turn",
    )
    bench.add_argument(
        "--duration", type=_positive_float, default=10.0, metavar="S", help="seconds per model (default 10)"
    )
    bench.add_argument("--warmup", type=_positive_int, default=5, metavar="N", help="untimed calls first")
    bench.add_argument("--json", action="store_true", help="print the results as JSON")

    serve = commands.add_parser(
        "serve",
        add_help=False,
        help="the model server (tensorflow_model_server's flags; see 'tfaccel serve --help')",
        description="Same as tfaccel-model-server.",
    )
    serve.add_argument("server_flags", nargs=argparse.REMAINDER)
    serve.set_defaults(verbose=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tfaccel`` command; returns the exit code."""
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:1] == ["serve"]:  # the server parses its own flags (tensorflow_model_server's)
        from tfaccel.serving.server import main as serve

        try:
            return serve(raw[1:], prog="tfaccel serve")
        except SystemExit as done:
            return int(done.code or 0)
    args_list = _join_flags_value(raw)
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as done:  # --help, --version (0) or bad usage (2)
        return int(done.code or 0)
    args.verbose = args.verbose or args.verbose_all
    _configure_logging(args.verbose)
    prog = f"tfaccel {args.command}"
    if args.command == "report":  # the saved JSON alone: no TensorFlow
        from tfaccel.cli.report_command import report as handler
    else:
        from tfaccel.cli.startup import load_tensorflow

        if not load_tensorflow(prog, args.verbose):
            return EXIT_FAILURE
        from tfaccel.cli import commands

        handlers = {
            "trace": commands.trace,
            "analyze": commands.analyze,
            "bench": commands.bench,
            "show": commands.show,
            "run": commands.run,
        }
        handler = handlers[args.command]
    try:
        return handler(args)
    except OptionsError as err:
        return _fail(prog, err, args.verbose, EXIT_USAGE)
    except (TraceError, OSError) as err:
        return _fail(prog, err, args.verbose, EXIT_FAILURE)
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return 130
    except BrokenPipeError:  # the reader went away (e.g. `| head`): stop quietly, as shell tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as err:
        if _is_tensorflow_error(err):  # the model itself failed on the inputs: the user's to fix
            return _fail(
                prog, err, args.verbose, EXIT_FAILURE, prefix="TensorFlow failed running the model: "
            )
        return _fail(prog, err, args.verbose, EXIT_FAILURE, internal=True)  # a bug: still one line


def _join_flags_value(argv: list[str]) -> list[str]:
    """``--flags "--backend=xla"`` as ``--flags=--backend=xla``: argparse would take a value that starts
    with ``--`` for an option of its own.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--flags" and i + 1 < len(argv):
            out.append(f"--flags={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def _is_tensorflow_error(err: BaseException) -> bool:
    tf = sys.modules.get("tensorflow")  # not imported (``report``): the error cannot be TensorFlow's
    return tf is not None and isinstance(err, tf.errors.OpError)


def _fail(
    prog: str, err: BaseException, verbose: bool, code: int, internal: bool = False, prefix: str = ""
) -> int:
    if verbose:
        traceback.print_exception(err, file=sys.stderr)
    text = err.message if hasattr(err, "message") and isinstance(err.message, str) else str(err)
    message = prefix + (" ".join(text.split()) or type(err).__name__)
    if internal:
        message = f"internal error ({type(err).__name__}: {message}); please report it" + (
            "" if verbose else " (run with --verbose for the traceback)"
        )
    sys.stderr.write(f"{prog}: error: {message}\n")
    return code


class _ClearingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Erases a progress line before writing a record, so the two never share a line."""

    def emit(self, record: logging.LogRecord) -> None:
        from tfaccel.compiler import progress

        progress.clear()
        super().emit(record)


class _LowerLevelFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        record = logging.makeLogRecord(record.__dict__)
        record.levelname = record.levelname.lower()
        return super().format(record)


def _configure_logging(verbose: bool) -> None:
    """Tfaccel's warnings (fallbacks, low ratios) as ``tfaccel: warning: ...`` lines on stderr; other
    libraries' Python logs only with ``--verbose``.
    """
    handler = _ClearingHandler(sys.stderr)
    handler.setFormatter(_LowerLevelFormatter("tfaccel: %(levelname)s: %(message)s"))
    ours = logging.getLogger("tfaccel")
    ours.addHandler(handler)
    ours.setLevel(logging.INFO if verbose else logging.WARNING)
    ours.propagate = False
    if not verbose:
        for name in ("tensorflow", "absl", "openvino"):
            logging.getLogger(name).setLevel(logging.ERROR)
        import warnings

        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="tf_keras")
