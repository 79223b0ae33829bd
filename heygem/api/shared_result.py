"""The copy of a finished result that HeyGem's desktop client opens in the folder it shares with the service
(paths.input_dir): a completion hook this API layer registers with the supervisor (TaskSupervisor.on_success), run
for tasks submitted through /easy with TaskRequest.shared_result before their success is recorded. The client opens
the copy as soon as it hears "done", and gives the video up for good if it is not there."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from heygem.supervisor.lifecycle import Outcome
from heygem.supervisor.results import is_hard_link_of
from heygem.supervisor.states import TaskRecord
from heygem.supervisor.supervisor import TaskSupervisor


def share_results(supervisor: TaskSupervisor) -> None:
    """Register the hook: done once, where the app builds the HeyGem API on its supervisor."""
    supervisor.on_success(place_for_desktop_client)


def place_for_desktop_client(record: TaskRecord, outcome: Outcome) -> Outcome:
    """The success as it is once the task's shared copy is in place; a failure that says why when it cannot be."""
    if not record.shared_result_path or not record.result_path:
        return outcome
    try:
        place_shared_copy(Path(record.result_path), Path(record.shared_result_path))
    except OSError as exc:
        return Outcome.failed(f"finishing: the result could not be placed in the shared folder as "
                              f"{record.shared_result_path} ({exc.strerror or exc}); it is kept as "
                              f"{record.result_path}", warning=outcome.warning)
    return outcome


def place_shared_copy(result: Path, target: Path) -> None:
    """Put the finished `result` at `target` as well: a hard link where the file system allows it (instant, no
    extra space), else a copy. It is made under a hidden name beside `target` and renamed onto it, so a client
    never opens a partial file. A file already at `target` that is not this result (a person's video, a symlink) is
    never replaced or followed: a FileExistsError says so, and the caller keeps the result where it is."""
    if is_hard_link_of(target, result):
        return  # placed already
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, "a file that is not this task's result is there, and is left as it is")
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.partial")
    temporary.unlink(missing_ok=True)
    try:
        try:
            os.link(result, temporary)
        except OSError:  # another file system (EXDEV), or one without hard links: a copy does the same job
            shutil.copyfile(result, temporary)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)  # left behind only when the rename failed
