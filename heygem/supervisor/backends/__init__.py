"""Where a task's worker runs: `local` (a process on this machine) or `ray` (a node of a Ray cluster).

heygem.supervisor.backends.base holds the seam. Nothing is imported here at the top: a backend's module only when
it is chosen (an app on the local backend never imports Ray), and the node guard, which lives in this package,
starts in a few milliseconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from heygem.config import Config
    from heygem.supervisor.backends.base import ExecutionBackend


def create_backend(config: Config) -> ExecutionBackend:
    if config.supervisor.backend == "ray":
        from heygem.supervisor.backends.ray_head import RayBackend

        return RayBackend(config)
    from heygem.supervisor.backends.local import LocalBackend

    return LocalBackend(config)
