"""Time left of a task, from how far it is and how fast it got there: the one estimate the studio and the API give."""

from __future__ import annotations


def remaining_s(progress: float, elapsed_s: float, progress_at_start: float = 0.0) -> float | None:
    """Seconds left at `progress` (percent), `elapsed_s` after the task stood at `progress_at_start`.

    The rate is the one measured over that stretch (this machine, this video, this engine); feed it the stretch
    that rendering alone fills (not the worker's start-up), or the figure runs long. None until progress moves."""
    done = progress - progress_at_start
    if done <= 0 or elapsed_s <= 0:
        return None
    return max(0.0, elapsed_s * (100.0 - progress) / done)
