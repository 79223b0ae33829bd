"""An engine that does nothing but stamp times: what remains is the supervisor's own overhead."""

from __future__ import annotations

import time
from typing import Any

from heygem.pipeline.engine import Engine, Job, Reporter


class NoopEngine(Engine):
    name = "noop"

    def run(self, job: Job, reporter: Reporter) -> dict[str, Any]:
        started = time.time()
        job.result_path.write_bytes(b"")
        return {"run_started_at": started, "run_ended_at": time.time()}
