"""Time left of a task, from how far it is and how fast it got there: the one estimate the studio and the API give."""

from __future__ import annotations


def remaining_s(progress: float, stretch_s: float, progress_at_start: float = 0.0,
                since_s: float = 0.0) -> float | None:
    """Seconds left at `progress` (percent), reached `stretch_s` after the task stood at `progress_at_start`, and
    `since_s` ago.

    The rate is the one measured over that stretch (this machine, this video, this engine); feed it the stretch
    that rendering alone fills (not the worker's start-up), or the figure runs long. The stretch must end when
    `progress` was reached, not when someone looks: a look between two reports would otherwise count time that
    has no progress yet, and a short render's first estimate would come out several times too long.
    None until progress moves."""
    done = progress - progress_at_start
    if done <= 0 or stretch_s <= 0:
        return None
    return max(0.0, stretch_s * (100.0 - progress) / done - since_s)
