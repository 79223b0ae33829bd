"""Where a task's worker runs: `local` (a process on this machine) or `ray` (a node of a Ray cluster).

heygem.supervisor.backends.base holds the seam; each backend's module is imported only when it is chosen, so
an app on the local backend never imports Ray.
"""

from __future__ import annotations

from heygem.config import Config
from heygem.supervisor.backends.base import ExecutionBackend


def create_backend(config: Config) -> ExecutionBackend:
    if config.supervisor.backend == "ray":
        from heygem.supervisor.backends.ray_head import RayBackend

        return RayBackend(config)
    from heygem.supervisor.backends.local import LocalBackend

    return LocalBackend(config)
