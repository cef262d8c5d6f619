"""Progress events of a trace, and the terminal line that shows them (only on a terminal)."""

from __future__ import annotations

import io

import numpy as np
import tf_keras as keras

import tfaccel
from conftest import skip_if_busy
from tfaccel.compiler.progress import Event, TerminalProgress, reporting


class _Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.closed = False

    def update(self, event: Event) -> None:
        self.events.append(event)

    def clear(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _two_subgraph_model() -> keras.Model:
    inp = keras.Input((8,))
    x = keras.layers.Dense(8, activation="relu")(inp)
    x = keras.layers.Lambda(lambda t: keras.backend.cast(keras.backend.cast(t, "float64") * 2, "float32"))(x)
    return keras.Model(inp, keras.layers.Dense(4)(x))


def test_trace_announces_each_compile_and_measurement() -> None:
    model = _two_subgraph_model()
    x = np.ones((1, 8), np.float32)
    with reporting(_Recorder()) as sink:
        traced = tfaccel.trace(model, x, backend="openvino", placement="profile")
    assert sink.closed
    skip_if_busy(traced.placement_report)  # then nothing is measured
    compiles = [e for e in sink.events if e.phase == "compiling"]
    measures = [e for e in sink.events if e.phase == "measuring"]
    assert compiles and measures
    first_round = compiles[: compiles[0].total]
    assert [e.index for e in first_round] == list(range(1, compiles[0].total + 1))
    assert all(e.backend == "openvino" and e.nodes > 0 for e in first_round)
    assert [e.index for e in measures] == list(range(1, measures[0].total + 1))
    assert {e.subgraph for e in measures} == {m.subgraph for m in traced.placement_report.measurements}


def test_terminal_line_only_on_a_terminal() -> None:
    ticks = iter([0.0, 1.5, 2.25])
    screen = _Terminal()
    progress = TerminalProgress(screen, clock=lambda: next(ticks))
    progress.update(Event("compiling", 1, 2, "tfaccel_sg_0", "xla", 12))
    progress.update(Event("compiling", 2, 2, "sg_1", "xla", 3))
    progress.close()
    text = screen.getvalue()
    assert "\r[   1.5 s] compiling subgraph 1/2: tfaccel_sg_0 on xla (12 nodes)" in text
    assert "\r[   2.2 s] compiling subgraph 2/2: sg_1 on xla (3 nodes)" in text
    assert text.endswith("\r")  # erased: the next output starts on a clean line
    pipe = io.StringIO()
    quiet = TerminalProgress(pipe)
    quiet.update(Event("compiling", 1, 1, "tfaccel_sg_0", "xla", 1))
    quiet.close()
    assert pipe.getvalue() == ""


def test_the_tqdm_sink_shows_each_phase_with_the_current_subgraph() -> None:
    from tfaccel.compiler.progress import TqdmProgress

    out = io.StringIO()
    sink = TqdmProgress(file=out)
    for index in (1, 2, 3):
        sink.update(Event("compiling", index, 3, f"tfaccel_sg_{index - 1}", "openvino", 10 * index))
    sink.update(Event("measuring", 1, 2, "tfaccel_sg_0", "openvino+xla", 10))
    sink.close()
    text = out.getvalue()
    assert "compiling" in text and "tfaccel_sg_2 on openvino (30 nodes)" in text and "2/3" in text, text
    assert "measuring" in text and "tfaccel_sg_0 on openvino+xla (10 nodes)" in text, text


def test_outside_a_notebook_trace_installs_no_sink_of_its_own() -> None:
    from tfaccel.compiler import progress

    assert not progress.in_notebook()  # pytest is no Jupyter kernel
    with progress.automatic() as sink:
        assert sink is None  # contextlib.nullcontext: a script stays silent
