"""The README's complete example, copied out of the README and run as a newcomer would: the first block in
one fresh process, the second (load and predict) in another, in an empty folder.

Why from the README itself: a newcomer copies these blocks, so the test must run the text they copy, not
a copy of it that can drift. The blocks are the first two ``python`` blocks under "## A complete example".
"""

from __future__ import annotations

import re
from pathlib import Path

from conftest import SRC, run_python

README = Path(__file__).resolve().parents[1] / "README.md"


def _example_blocks() -> list[str]:
    text = README.read_text()
    start = text.index("\n## A complete example\n")
    end = text.index("\n## ", start + 1)
    blocks = re.findall(r"```python\n(.*?)```", text[start:end], flags=re.DOTALL)
    assert len(blocks) >= 2, "the README's complete example lost its two python blocks"
    return blocks[:2]


def test_the_readme_example_traces_saves_and_reloads_in_a_fresh_process(tmp_path):
    trace_block, load_block = _example_blocks()
    out = run_python(trace_block, cwd=tmp_path, env={"PYTHONPATH": SRC})
    ratio = float(out.splitlines()[0])
    assert ratio == 1.0, out  # every op of the example compiles
    assert "tfaccel_sg_0" in out  # summary() printed the subgraph
    assert (tmp_path / "traced_model" / "saved_model.pb").is_file()
    out = run_python(load_block, cwd=tmp_path, env={"PYTHONPATH": SRC})
    shape, loaded_ratio = out.splitlines()[:2]
    assert shape == "(4, 10)", out  # the comment in the README says so: any batch size
    assert float(loaded_ratio) == ratio
