"""The copy of a result in the folder HeyGem's desktop client shares with the service (paths.input_dir).

Made by the HeyGem API layer's completion hook (heygem.api.shared_result), before a task submitted with
shared_result is recorded as succeeded; removed with the task (delete) or before it runs again (retry). Anything
else at its name (a person's own video, a symlink) is never replaced, followed or removed: a submit whose code
would need it is refused, and a task that finds it in the way fails with its result kept.
Real supervisor, real workers (scripted engines).
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from heygem.api.shared_result import place_shared_copy, share_results
from heygem.errors import InputError
from heygem.supervisor import TaskRecord, TaskRequest, TaskState, TaskSupervisor
from heygem.supervisor.lifecycle import Outcome
from heygem.supervisor.states import check_task_code
from heygem.supervisor.store import TaskStore
from tests.supervision import SCRIPTED, script_file, wait_final

pytestmark = pytest.mark.slow

StartSupervisor = Callable[..., TaskSupervisor]
# The task table as version 0.1 wrote it.
OLD_SCHEMA = """CREATE TABLE tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, code TEXT NOT NULL UNIQUE, state TEXT NOT NULL,
    stage TEXT NOT NULL DEFAULT '', progress REAL NOT NULL DEFAULT 0, message TEXT NOT NULL DEFAULT '',
    warning TEXT NOT NULL DEFAULT '', engine TEXT NOT NULL, audio_path TEXT NOT NULL, video_path TEXT NOT NULL,
    options TEXT NOT NULL DEFAULT '{}', result_path TEXT, worker_pid INTEGER, created_at REAL NOT NULL,
    queued_at REAL NOT NULL, started_at REAL, finished_at REAL, updated_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, report TEXT NOT NULL DEFAULT '{}')"""


@pytest.fixture
def result(tmp_path: Path) -> Path:
    path = tmp_path / "results" / "abc-r.mp4"
    path.parent.mkdir()
    path.write_bytes(b"a finished video")
    return path


def test_the_copy_is_a_hard_link_made_in_one_step(result: Path, tmp_path: Path) -> None:
    target = tmp_path / "shared" / "abc-r.mp4"
    place_shared_copy(result, target)
    assert target.stat().st_ino == result.stat().st_ino
    place_shared_copy(result, target)  # again, onto a link to the same file
    assert sorted(path.name for path in target.parent.iterdir()) == ["abc-r.mp4"]


def test_without_hard_links_the_copy_is_a_copy(result: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def cross_device(source: Path, target: Path) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    target = tmp_path / "abc-r.mp4"
    place_shared_copy(result, target)
    assert target.read_bytes() == result.read_bytes() and target.stat().st_ino != result.stat().st_ino
    assert sorted(path.name for path in tmp_path.iterdir()) == ["abc-r.mp4", "results"]


def test_a_file_or_symlink_at_the_target_is_left_alone_not_followed(result: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    link, video = tmp_path / "abc-r.mp4", tmp_path / "mine-r.mp4"
    link.symlink_to(victim)
    video.write_bytes(b"a person's own video")
    for target in (link, video):
        with pytest.raises(FileExistsError, match="not this task's result is there, and is left as it is"):
            place_shared_copy(result, target)
    assert link.is_symlink() and victim.read_text() == "untouched" and video.read_bytes() == b"a person's own video"
    assert not list(tmp_path.glob(".*.partial"))


def submit(supervisor: TaskSupervisor, inputs: tuple[Path, Path], code: str, shared: bool,
           gate: Path | None = None) -> TaskRequest:
    """A task that renders 0.3 s of video; with a `gate`, only once the test has created that file."""
    audio, video = inputs
    steps = [["await", str(gate)]] if gate else []
    request = TaskRequest(audio, script_file(video.parent, [*steps, ["render", 0.3]]), engine=SCRIPTED, code=code,
                          shared_result=shared)
    supervisor.submit(request)
    return request


def sharing(start_supervisor: StartSupervisor) -> TaskSupervisor:
    """A supervisor with the HeyGem API layer's completion hook, as the app registers it."""
    supervisor = start_supervisor()
    share_results(supervisor)
    return supervisor


def in_the_way(supervisor: TaskSupervisor, code: str) -> Path:
    """Where the task's shared copy goes, the shared folder created."""
    path = supervisor.config.paths.input_dir / f"{code}-r.mp4"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_only_tasks_that_ask_get_a_shared_copy_and_delete_removes_it(start_supervisor: StartSupervisor,
                                                                     inputs: tuple[Path, Path]) -> None:
    supervisor = sharing(start_supervisor)
    shared_folder = supervisor.config.paths.input_dir
    submit(supervisor, inputs, "for-the-client", shared=True)
    submit(supervisor, inputs, "for-the-studio", shared=False)
    client_task, studio_task = (wait_final(supervisor, code) for code in ("for-the-client", "for-the-studio"))
    assert client_task.state is studio_task.state is TaskState.SUCCEEDED
    assert client_task.shared_result_path == str(shared_folder / "for-the-client-r.mp4")
    assert Path(client_task.shared_result_path).stat().st_ino == Path(str(client_task.result_path)).stat().st_ino
    assert studio_task.shared_result_path is None and not (shared_folder / "for-the-studio-r.mp4").exists()

    supervisor.delete("for-the-client")
    assert not Path(client_task.shared_result_path).exists() and not Path(str(client_task.result_path)).exists()


def test_a_copy_that_cannot_be_placed_fails_the_task_and_retry_places_it(start_supervisor: StartSupervisor,
                                                                         inputs: tuple[Path, Path],
                                                                         tmp_path: Path) -> None:
    supervisor = sharing(start_supervisor)
    gate = tmp_path / "gate"
    submit(supervisor, inputs, "blocked", shared=True, gate=gate)
    blocker = in_the_way(supervisor, "blocked")
    blocker.mkdir()  # a folder where the copy goes, made while the task runs (one there before is refused at submit)
    gate.touch()
    record = wait_final(supervisor, "blocked")
    assert record.state is TaskState.FAILED
    assert record.message.startswith(f"finishing: the result could not be placed in the shared folder as {blocker} (")
    assert record.message.endswith(f"it is kept as {record.result_path}")
    assert Path(str(record.result_path)).is_file()

    blocker.rmdir()
    supervisor.retry("blocked")
    again = wait_final(supervisor, "blocked")
    assert again.state is TaskState.SUCCEEDED and blocker.is_file()


def test_a_code_whose_shared_name_is_taken_is_refused_and_the_file_kept(start_supervisor: StartSupervisor,
                                                                        inputs: tuple[Path, Path]) -> None:
    supervisor = sharing(start_supervisor)
    theirs = in_the_way(supervisor, "holiday")
    theirs.write_bytes(b"a person's own video")
    with pytest.raises(InputError, match=f"code 'holiday' cannot be used: {theirs} already exists in the shared "
                                         "folder, where this task's result would go; choose another code"):
        submit(supervisor, inputs, "holiday", shared=True)
    submit(supervisor, inputs, "holiday", shared=False)  # the studio's tasks place no copy: any code will do
    assert wait_final(supervisor, "holiday").state is TaskState.SUCCEEDED
    supervisor.delete("holiday")
    assert theirs.read_bytes() == b"a person's own video"


def test_a_file_put_in_the_way_meanwhile_fails_the_task_and_stays_through_retry_and_delete(
        start_supervisor: StartSupervisor, inputs: tuple[Path, Path], tmp_path: Path) -> None:
    supervisor = sharing(start_supervisor)
    gate = tmp_path / "gate"
    submit(supervisor, inputs, "planted", shared=True, gate=gate)
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    link = in_the_way(supervisor, "planted")
    link.symlink_to(victim)  # after the submit, before the result is placed
    gate.touch()
    record = wait_final(supervisor, "planted")
    assert record.state is TaskState.FAILED
    assert record.message.startswith(f"finishing: the result could not be placed in the shared folder as {link} (a "
                                     "file that is not this task's result is there, and is left as it is); it is kept")
    supervisor.retry("planted")
    assert wait_final(supervisor, "planted").state is TaskState.FAILED
    supervisor.delete("planted")
    assert link.is_symlink() and victim.read_text() == "untouched"


def test_a_success_hook_that_raises_fails_the_task_saying_so(start_supervisor: StartSupervisor,
                                                             inputs: tuple[Path, Path]) -> None:
    supervisor = start_supervisor()
    seen: list[str] = []

    def broken(record: TaskRecord, outcome: Outcome) -> Outcome:
        seen.append(record.code)
        raise RuntimeError("the shared folder's disk went away")

    supervisor.on_success(broken)
    submit(supervisor, inputs, "hooked", shared=False)
    record = wait_final(supervisor, "hooked")
    assert seen == ["hooked"], "the hook saw the task before its success was recorded"
    assert record.state is TaskState.FAILED
    assert record.message == "finishing: RuntimeError: the shared folder's disk went away"


def test_a_store_of_an_older_version_gains_the_column(tmp_path: Path) -> None:
    db_path = tmp_path / "tasks.sqlite3"
    with sqlite3.connect(db_path) as db:  # the 0.1 schema, one finished task in it
        db.execute(OLD_SCHEMA)
        db.execute("INSERT INTO tasks (code, state, engine, audio_path, video_path, result_path, created_at, queued_at,"
                   " updated_at) VALUES ('old', 'succeeded', 'meshwarp', '/a.wav', '/v.mp4', '/old-r.mp4', 1, 1, 1)")
    store = TaskStore(db_path)
    try:
        old = store.require("old")
        assert old.state is TaskState.SUCCEEDED and old.result_path == "/old-r.mp4" and old.shared_result_path is None
    finally:
        store.close()


@pytest.mark.parametrize("code", ["null", "undefined"])
def test_the_codes_the_desktop_client_asks_for_before_its_submit_are_reserved(code: str) -> None:
    with pytest.raises(InputError, match=f"task code '{code}' is reserved"):
        check_task_code(code)
