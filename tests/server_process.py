"""One real ``tfaccel-model-server`` process for a test: free loopback ports for both APIs, a kept log, a
wait until it answers, and a stop. The server test modules subclass it with the request helpers each
needs (they check different things: conformance, operations, hostile requests), so how a server is
started and stopped is written once.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from conftest import free_ports, installed_script, stop_process

SERVER = installed_script(
    "tfaccel-model-server", ["-c", "import sys, tfaccel_cli; sys.exit(tfaccel_cli.serve_main())"]
)


class ServerProcess:
    """The server started with ``args`` (both APIs on 127.0.0.1, free ports), stderr into ``log``.

    ``ready(self)`` is asked every 0.3 s until it returns true (an ``OSError``: not listening yet); the
    process exiting first, or 180 s passing, fails the test with the log. ``keep_env`` false drops
    variables a test wants the server to decide itself (e.g. ``TF_CPP_MIN_LOG_LEVEL``).
    """

    def __init__(
        self,
        args: Sequence[str],
        log: Path,
        ready: Callable[[Any], bool],
        drop_env: Sequence[str] = (),
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.grpc_port, self.rest_port = free_ports(2)
        self.log = log
        dropped = {"TF_USE_LEGACY_KERAS", *drop_env}
        env = {k: v for k, v in os.environ.items() if k not in dropped}
        self.proc = subprocess.Popen(
            [
                *SERVER,
                f"--port={self.grpc_port}",
                f"--rest_api_port={self.rest_port}",
                "--grpc_bind_address=127.0.0.1",
                "--rest_api_bind_address=127.0.0.1",
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(log, "w"),  # noqa: SIM115 - closed with the process
            env=env,
        )
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}", options=list(channel_options))
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited ({self.proc.returncode}):\n{log.read_text()}")
            try:
                if ready(self):
                    return
            except OSError:
                pass
            time.sleep(0.3)
        stop_process(self.proc)
        raise AssertionError(f"the server did not start:\n{log.read_text()}")

    def stop(self) -> str:
        """SIGTERM (the server drains), a kill after 30 s; the log's text."""
        self.channel.close()
        if self.proc.poll() is None:
            stop_process(self.proc)
        return self.log.read_text()
