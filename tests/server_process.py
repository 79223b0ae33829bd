"""`python app.py` as a real subprocess on a free port, with its data in a temporary folder."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import REPO_ROOT
from tests.supervision import wait_until

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 40.0
# Fast polling so lean tests finish in seconds, and a stop or restart that waits 1 s, not 5, for connections a
# client left open (a module's gradio_client, a page's stream); everything else is the shipped default.
FAST_SETTINGS = {
    "HEYGEM_SUPERVISOR__POLL_INTERVAL_S": "0.3",
    "HEYGEM_SUPERVISOR__HEARTBEAT_INTERVAL_S": "0.5",
    "HEYGEM_SERVER__UI_REFRESH_S": "0.5",
    "HEYGEM_SERVER__SHUTDOWN_GRACE_S": "1",
    "HEYGEM_LOGGING__LEVEL": "INFO",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """One studio+API server. `restart()` keeps the data folder, as an operator's restart would. `args`: more
    command-line arguments of app.py; `settings`: environment variables."""

    def __init__(self, root: Path, args: Sequence[str] = (), **settings: Any) -> None:
        self.root = root
        self.args = list(args)
        self.data_dir = root / "data"
        self.input_dir = root / "inputs"
        self.input_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.settings = {key: str(value) for key, value in settings.items()}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = root / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        # A clean HEYGEM_* slate: the developer's own overrides must not leak into the test server.
        env = {key: value for key, value in os.environ.items() if not key.startswith(("HEYGEM_", "GRADIO_"))}
        env.update(FAST_SETTINGS)
        env.update({"HEYGEM_PATHS__DATA_DIR": str(self.data_dir), "HEYGEM_PATHS__INPUT_DIR": str(self.input_dir),
                    "PYTHONUNBUFFERED": "1"})
        env.update(self.settings)
        return env

    def start(self) -> ServerProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, str(REPO_ROOT / "app.py"), "--port", str(self.port),
                                             *self.args],
                                            cwd=REPO_ROOT, env=self.environment(), stdout=log,
                                            stderr=subprocess.STDOUT)
        self.wait_healthy()
        return self

    def wait_healthy(self) -> None:
        def healthy() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
            return False

        try:
            wait_until(healthy, START_TIMEOUT_S, "the server to answer /healthz", interval_s=0.3)
        except AssertionError as exc:
            raise RuntimeError(f"{exc}:\n{self.log_tail()}") from None

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        try:
            return self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise RuntimeError(f"the server ignored {sig.name} for {STOP_TIMEOUT_S} s:\n{self.log_tail()}") from None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
