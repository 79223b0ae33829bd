"""The built-in engine with a gate: it holds its render once HOLD_AT_S seconds of video are done, until the test
writes a word into the file `gate` in the task's data folder: "go" renders on, "fail" raises (a failing task).

So a test can look at a task that is certainly still rendering, however fast or slow the machine is.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from heygem.engines.meshwarp import MeshWarpEngine
from heygem.pipeline.engine import FrameBatch

GATED = "tests.gated_engine:GatedMeshWarp"
HOLD_AT_S = 6.0
GATE_TIMEOUT_S = 120.0


class GatedMeshWarp(MeshWarpEngine):
    def render(self, batch: FrameBatch, features: Any) -> list[np.ndarray]:
        if batch.indices[-1] >= HOLD_AT_S * 25:  # the test clips run at 25 fps
            self._wait_for_gate()
        return super().render(batch, features)

    def _wait_for_gate(self) -> None:
        gate = self.config.paths.data_dir / "gate"
        deadline = time.monotonic() + GATE_TIMEOUT_S
        while time.monotonic() < deadline:
            word = gate.read_text().strip() if gate.exists() else ""
            if word == "go":
                return
            if word == "fail":
                raise RuntimeError("the test failed this task at its gate")
            time.sleep(0.05)
        raise TimeoutError(f"nobody opened {gate} within {GATE_TIMEOUT_S} s")
