"""tfaccel's warnings name their level and logger when the application configured no logging, and step
aside (printed once, in the application's format) when it did (tfaccel/_logging.py). Fresh processes:
logging's configuration is per process, and pytest configures its own."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import SRC

WARN = "import logging, tfaccel; log = logging.getLogger('tfaccel.fallback_test'); "


def _stderr(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": SRC, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def test_without_configuration_a_warning_names_its_level_and_logger():
    err = _stderr(WARN + "log.warning('backend unavailable'); log.info('not shown')")
    lines = [line for line in err.splitlines() if "backend unavailable" in line]
    assert lines == ["WARNING tfaccel.fallback_test: backend unavailable"], err
    assert "not shown" not in err  # info stays quiet unless the application asks for it


def test_a_configured_application_prints_it_once_in_its_own_format():
    err = _stderr(
        "import logging; logging.basicConfig(format='APP %(levelname)s %(name)s %(message)s'); "
        + WARN
        + "log.warning('backend unavailable')"
    )
    lines = [line for line in err.splitlines() if "backend unavailable" in line]
    assert lines == ["APP WARNING tfaccel.fallback_test backend unavailable"], err
