"""The TaskSupervisor with real spawned workers doing real subprocess work (ffmpeg), no mocks."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from heygem.api.easy_answers import heygem_data
from heygem.api.tasks_view import task_json
from heygem.config import Config
from heygem.errors import HeyGemError, InputError, QueueFullError, TaskNotFoundError
from heygem.supervisor import TaskRequest, TaskState, TaskSupervisor
from heygem.supervisor.processes import group_members
from heygem.supervisor.states import AttemptOutcome
from heygem.supervisor.store import TaskStore
from tests.conftest import REPO_ROOT, SUPERVISOR_TEST_SETTINGS, ConfigFactory
from tests.supervision import SCRIPTED, submit, wait_final, wait_running, wait_until

pytestmark = pytest.mark.slow

# For the tests of the error window that do not measure the init grace: errors count only once the grace is over.
INIT_GRACE_UNDER_LOAD_S = 5


def test_a_successful_task_records_its_report(start_supervisor, inputs) -> None:
    supervisor = start_supervisor()
    code = submit(supervisor, inputs, [["render", 1]])
    record = wait_final(supervisor, code)
    assert record.state is TaskState.SUCCEEDED, record.message
    assert record.progress == 100
    assert record.report == {"steps": 1}
    assert Path(record.result_path).stat().st_size > 0
    assert record.attempts == 1
    log = supervisor.config.paths.logs_dir / "tasks" / f"{code}.log"
    assert "task finished" in log.read_text()
    # Read any number of times.
    assert supervisor.status(code) == supervisor.status(code)


@pytest.mark.parametrize(("kind", "expected"), [
    ("runtime", "run: RuntimeError: the engine broke on purpose"),
    ("empty", "run: ValueError (raised without a message)"),
    ("unpicklable", "run: UnpicklableError: holds a lock"),
])
def test_a_raising_worker_fails_with_a_message(start_supervisor, inputs, kind: str, expected: str) -> None:
    supervisor = start_supervisor()
    record = wait_final(supervisor, submit(supervisor, inputs, [["raise", kind]]))
    assert record.state is TaskState.FAILED
    assert record.message == expected
    log = (supervisor.config.paths.logs_dir / "tasks" / f"{record.code}.log").read_text()
    assert "Traceback" in log


def test_sigkill_is_seen_within_two_seconds_and_the_queue_moves_on(start_supervisor, inputs) -> None:
    supervisor = start_supervisor(poll_interval_s=3)
    victim = submit(supervisor, inputs, [["render", 20]])
    follower = submit(supervisor, inputs, [["render", 0.5]])
    running = wait_running(supervisor, victim, min_progress=1)
    assert supervisor.status(follower).state is TaskState.QUEUED
    assert supervisor.status(follower).queue_position == 1

    os.kill(running.worker_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(lambda: supervisor.status(victim).state is TaskState.FAILED, 2, "the killed task to fail")
    assert time.monotonic() - killed_at < 2
    message = supervisor.status(victim).message
    assert "worker killed by signal 9 (SIGKILL), often the out-of-memory killer, during stage render at" in message
    assert wait_final(supervisor, follower).state is TaskState.SUCCEEDED


def test_progress_reaches_every_reader_through_the_store(start_supervisor, inputs) -> None:
    supervisor = start_supervisor()
    code = submit(supervisor, inputs, [["render", 3]])
    wait_until(lambda: supervisor.status(code).progress > 0, 10, "progress recorded at a poll")
    first = supervisor.status(code)
    wait_until(lambda: supervisor.status(code).progress > first.progress, 5, "progress to move on")
    # What the supervisor answers is the store's record as it is, as another process (the CLI) reads it too.
    other_reader = TaskStore(supervisor.config.paths.db_path)
    moved = supervisor.status(code)
    assert moved.version > first.version and other_reader.require(code).version >= moved.version
    assert next(record.progress for record in supervisor.list_tasks() if record.code == code) >= moved.progress
    assert wait_final(supervisor, code).state is TaskState.SUCCEEDED


def test_a_nonzero_exit_without_a_word_names_the_exit_code(start_supervisor, inputs) -> None:
    supervisor = start_supervisor()
    record = wait_final(supervisor, submit(supervisor, inputs, [["stage", "encode"], ["progress", 40], ["exit", 3]]))
    assert record.state is TaskState.FAILED
    assert record.message == "worker exited with code 3 during stage encode at 40 %"


def test_an_error_that_recovers_inside_the_window_ends_succeeded(start_supervisor, inputs) -> None:
    # init_grace_s: long enough for a worker to start on a busy machine (spawning it takes about a second there, and
    # more than 2 s at a load of 8 on 2 cores); a grace that ran out first would fail the task for its init instead.
    supervisor = start_supervisor(init_grace_s=INIT_GRACE_UNDER_LOAD_S, error_confirm_s=4)
    code = submit(supervisor, inputs, [["stage", "render"], ["error", "CUDA out of memory; retrying at half batch"],
                                       ["sleep", 2], ["clear", None], ["render", 1]])
    wait_until(lambda: "recovering from: CUDA out of memory" in supervisor.status(code).message, 10,
               "the error to show while recovering")
    record = wait_final(supervisor, code)
    assert record.state is TaskState.SUCCEEDED, record.message


def test_an_error_that_persists_past_the_window_fails_the_task(start_supervisor, inputs) -> None:
    supervisor = start_supervisor(init_grace_s=INIT_GRACE_UNDER_LOAD_S, error_confirm_s=1.5)
    code = submit(supervisor, inputs, [["stage", "render"], ["error", "decoder stalled"], ["sleep", 60]])
    record = wait_final(supervisor, code, timeout_s=15)
    assert record.state is TaskState.FAILED
    assert record.message.startswith("render: decoder stalled (reported for ")


def test_a_worker_hanging_in_init_fails_with_the_init_reason(start_supervisor, inputs) -> None:
    # A grace long enough for a spawned worker to import and reach its stage on a busy machine (2 s was not, at load 7).
    supervisor = start_supervisor(init_grace_s=6)
    code = submit(supervisor, inputs, [], engine="tests.scripted_engine:HangingLoadEngine")
    wait_until(lambda: supervisor.status(code).state is TaskState.INITIALIZING, 10, "initialising")
    record = wait_final(supervisor, code, timeout_s=20)
    assert record.state is TaskState.FAILED
    assert record.message == ("initialisation did not finish within 6 s (stage load model): "
                              "model file is locked by another process")


def test_a_task_past_its_timeout_is_killed_with_its_whole_group(start_supervisor, inputs) -> None:
    supervisor = start_supervisor(task_timeout_s=3)
    code = submit(supervisor, inputs, [["child", 120], ["render", 60]])
    pid = wait_running(supervisor, code, min_progress=0.5).worker_pid
    assert len(group_members(pid)) >= 3  # the worker, its idle ffmpeg child, its rendering ffmpeg
    record = wait_final(supervisor, code, timeout_s=15)
    assert record.state is TaskState.FAILED
    assert record.message.startswith("timed out after 3 s in stage render at ")
    wait_until(lambda: not group_members(pid), 5, "every process of the worker's group to end")


def test_a_result_that_exists_despite_an_error_status_succeeds_with_a_warning(start_supervisor, inputs) -> None:
    # An init grace long enough for a spawned worker to start on a busy machine (0.5 s was not, under load).
    supervisor = start_supervisor(init_grace_s=INIT_GRACE_UNDER_LOAD_S, error_confirm_s=1)
    code = submit(supervisor, inputs, [["render", 1], ["error", "face enhancer crashed"], ["sleep", 3600]])
    record = wait_final(supervisor, code, timeout_s=20)
    assert record.state is TaskState.SUCCEEDED
    assert "face enhancer crashed" in record.warning
    assert "its result is a valid video and was kept" in record.warning


def test_a_frozen_worker_is_killed_when_its_heartbeat_stops(start_supervisor, inputs) -> None:
    supervisor = start_supervisor(heartbeat_timeout_s=2)
    code = submit(supervisor, inputs, [["stage", "track"], ["freeze", None]])
    record = wait_final(supervisor, code, timeout_s=15)
    assert record.state is TaskState.FAILED
    assert record.message.startswith("no heartbeat for ")
    assert "(worker frozen) in stage track" in record.message


def ffmpeg_children(pid: int) -> list[int]:
    """The ffmpeg processes whose parent is `pid` (Linux /proc)."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            command = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0]
        except (OSError, IndexError):
            continue
        if parent == pid and os.path.basename(command).startswith(b"ffmpeg"):
            found.append(int(entry))
    return found


def test_a_stalled_encoder_fails_its_task_naming_the_stage_and_dies_with_its_group(start_supervisor, inputs) -> None:
    supervisor = start_supervisor(stall_s=1.5)
    code = submit(supervisor, inputs, [["render", 60]])
    pid = wait_running(supervisor, code, min_progress=0.5).worker_pid
    (encoder,) = ffmpeg_children(pid)
    os.kill(encoder, signal.SIGSTOP)  # the worker's heartbeat thread beats on; its progress stops
    record = wait_final(supervisor, code, timeout_s=20)
    assert record.state is TaskState.FAILED
    assert record.message.startswith("stalled: no progress for "), record.message
    assert "s in stage render at " in record.message
    assert record.message.endswith("(supervisor.stall_s is 1.5 s); the worker and its processes were killed")
    wait_until(lambda: not group_members(pid), 5, "the worker and its stopped ffmpeg to be killed")
    assert record.history[-1].outcome is not None and record.history[-1].message == record.message


def test_a_long_analysis_without_a_progress_figure_is_not_a_stall(start_supervisor, inputs) -> None:
    """Phones of a long speech or tracking a long template take minutes with no percentage to show: the stage says
    it goes on (Reporter.advance), so supervisor.stall_s does not end it."""
    supervisor = start_supervisor(stall_s=1.5)
    code = submit(supervisor, inputs, [["stage", "analysing video"], ["compute", 4], ["stage", "render"]],
                  engine="tests.scripted_engine:AnalysingEngine")
    record = wait_final(supervisor, code, timeout_s=30)
    assert record.state is TaskState.SUCCEEDED, record.message


def status_manager_pid() -> int | None:
    """The supervisor's live status Manager: a child of this test process, named after its class by multiprocessing."""
    return next((child.pid for child in multiprocessing.active_children() if child.name.startswith("StatusManager")),
                None)


def test_killing_the_manager_loses_no_task(start_supervisor, inputs) -> None:
    supervisor = start_supervisor()
    code = submit(supervisor, inputs, [["render", 5]])
    wait_running(supervisor, code, min_progress=5)
    old_manager = status_manager_pid()
    assert old_manager is not None
    os.kill(old_manager, signal.SIGKILL)
    wait_until(lambda: status_manager_pid() not in (None, old_manager), 10, "a new Manager")
    progress_after_restart = supervisor.status(code).progress
    wait_until(lambda: supervisor.status(code).progress > progress_after_restart
               or supervisor.status(code).state.is_final, 10, "progress through the new Manager")
    assert wait_final(supervisor, code).state is TaskState.SUCCEEDED
    assert wait_final(supervisor, submit(supervisor, inputs, [["render", 0.3]])).state is TaskState.SUCCEEDED


def test_twenty_tasks_with_two_workers_run_fifo_never_more_than_two(start_supervisor, inputs) -> None:
    supervisor = start_supervisor(max_workers=2)
    alive_counts: list[int] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            alive_counts.append(supervisor.system_info()["workers_busy"])
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    codes = [submit(supervisor, inputs, [["render", 0.3]], code=f"task-{index:02d}") for index in range(20)]
    records = [wait_final(supervisor, code, timeout_s=120) for code in codes]
    sampling.set()
    sampler.join()
    assert [record.state for record in records] == [TaskState.SUCCEEDED] * 20
    assert max(alive_counts) == 2
    starts = [record.started_at for record in records]
    assert starts == sorted(starts), "tasks did not start in submission order"
    for index, record in enumerate(records):
        overlapping = sum(1 for other in records if other.started_at <= record.started_at < other.finished_at)
        assert overlapping <= 2, f"task {index} started while {overlapping} others were running"


def test_a_full_queue_refuses_only_the_extra_task(start_supervisor, inputs) -> None:
    supervisor = start_supervisor(queue_max=2)
    running = submit(supervisor, inputs, [["render", 2]])
    wait_running(supervisor, running)
    waiting = [submit(supervisor, inputs, [["render", 0.2]]) for _ in range(2)]
    with pytest.raises(QueueFullError, match=r"queue full: 2 tasks are waiting \(queue_max 2\)"):
        submit(supervisor, inputs, [["render", 0.2]])
    for code in [running, *waiting]:
        assert wait_final(supervisor, code).state is TaskState.SUCCEEDED


def test_cancel_a_queued_and_a_running_task(start_supervisor, inputs) -> None:
    supervisor = start_supervisor()
    running = submit(supervisor, inputs, [["child", 60], ["render", 30]])
    queued = submit(supervisor, inputs, [["render", 0.2]])
    pid = wait_running(supervisor, running).worker_pid

    cancelled = supervisor.cancel(queued)
    assert cancelled.state is TaskState.CANCELLED
    assert cancelled.message == "cancelled while queued"
    record = supervisor.cancel(running)
    assert record.state is TaskState.CANCELLED
    assert record.message.startswith("cancelled during stage render at ")
    wait_until(lambda: not group_members(pid), 5, "the cancelled worker's group to end")
    # A task queued after it runs once the slot is free: had the cancelled one stayed in the queue, it went first.
    assert wait_final(supervisor, submit(supervisor, inputs, [["render", 0.2]])).state is TaskState.SUCCEEDED
    assert supervisor.status(queued).started_at is None
    with pytest.raises(InputError, match="has already ended"):
        supervisor.cancel(running)
    retried = supervisor.retry(queued)
    assert retried.state is TaskState.QUEUED
    assert wait_final(supervisor, queued).state is TaskState.SUCCEEDED


def test_delete_removes_the_task_and_its_files(start_supervisor, inputs) -> None:
    supervisor = start_supervisor()
    code = submit(supervisor, inputs, [["render", 0.3]])
    result = Path(wait_final(supervisor, code).result_path)
    assert result.is_file()
    supervisor.delete(code)
    assert not result.exists()
    assert not (supervisor.config.paths.logs_dir / "tasks" / f"{code}.log").exists()
    with pytest.raises(TaskNotFoundError):
        supervisor.status(code)


@pytest.mark.parametrize(("change", "message"), [
    ({"code": "../etc"}, "task code '../etc' is invalid"),
    ({"engine": "no-such-engine"}, "engine 'no-such-engine' is unavailable: unknown engine"),
    ({"audio": "missing.wav"}, "audio file not found: "),
])
def test_bad_submissions_are_refused_with_a_reason(start_supervisor, inputs, change: dict[str, str],
                                                   message: str) -> None:
    supervisor = start_supervisor()
    audio, video = inputs
    request = TaskRequest(audio.parent / change["audio"] if "audio" in change else audio, video,
                          engine=change.get("engine", SCRIPTED), code=change.get("code"))
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        supervisor.submit(request)


def test_a_duplicate_code_is_refused(start_supervisor, inputs) -> None:
    supervisor = start_supervisor()
    submit(supervisor, inputs, [], code="same")
    with pytest.raises(InputError, match="a task with code 'same' already exists"):
        submit(supervisor, inputs, [], code="same")


APP_SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from heygem.config import load_config
    from heygem.supervisor import TaskSupervisor
    from tests.supervision import submit
    supervisor = TaskSupervisor(load_config()).start()
    inputs = (Path(sys.argv[1]), Path(sys.argv[2]))
    long = submit(supervisor, inputs, [["render", 60]], code="long")
    for index in range(2):
        submit(supervisor, inputs, [["render", 0.3]], code=f"queued-{index}")
    while supervisor.status(long).progress < 2:
        time.sleep(0.1)
    print(supervisor.status(long).worker_pid, flush=True)
    time.sleep(3600)
""")


def crash_an_app_mid_task(config: Config, inputs: tuple[Path, Path]) -> int:
    """Run a supervisor in a separate app process, SIGKILL it mid-task; returns its worker's pid."""
    environment = {**os.environ, "HEYGEM_PATHS__DATA_DIR": str(config.paths.data_dir),
                   "HEYGEM_SUPERVISOR__POLL_INTERVAL_S": "0.2", "PYTHONPATH": str(REPO_ROOT)}
    app = subprocess.Popen([sys.executable, "-c", APP_SCRIPT, *map(str, inputs)], cwd=REPO_ROOT,
                           env=environment, stdout=subprocess.PIPE, text=True)
    assert app.stdout is not None
    worker_pid = int(app.stdout.readline())
    app.kill()
    app.wait()
    return worker_pid


@pytest.mark.parametrize("requeue", [False, True])
def test_restart_after_a_crash_keeps_every_task(make_config: ConfigFactory, inputs, requeue: bool) -> None:
    config = make_config(supervisor={**SUPERVISOR_TEST_SETTINGS, "requeue_interrupted": requeue})
    worker_pid = crash_an_app_mid_task(config, inputs)
    wait_until(lambda: worker_pid not in group_members(worker_pid), 5, "the dead app's worker to die with it")

    supervisor = TaskSupervisor(config).start()
    try:
        wait_until(lambda: not group_members(worker_pid), 2, "the restarted app to end the dead worker's ffmpeg")
        interrupted = supervisor.status("long")
        if requeue:
            # The requeue message shows only until the task starts again, which can be at once.
            if interrupted.state is TaskState.QUEUED:
                assert interrupted.message.startswith("requeued: the service stopped during stage render")
            rerun = wait_running(supervisor, "long")
            assert rerun.attempts == 2, "the interrupted task did not run again"
            assert supervisor.status("queued-0").started_at is None, "the requeued task lost its place"
            # Its history tells both runs apart, and every reader says the rerun resumed after the loss.
            lost, current = rerun.history
            assert (lost.number, lost.worker_pid, lost.outcome) == (1, worker_pid, AttemptOutcome.REQUEUED)
            assert lost.message.startswith("the service stopped during stage render at ") and lost.ended_at
            assert (current.number, current.worker_pid, current.outcome) == (2, rerun.worker_pid, None)
            assert f"(attempt 2, resumed from the start after {lost.message})" in rerun.summary
            assert heygem_data(rerun, "en")["msg"] == rerun.summary
            assert f"（第 2 次运行，上次运行中断后从头重新开始：{lost.message}）" in heygem_data(rerun, "zh")["msg"]
            supervisor.cancel("long")
            ended = task_json(supervisor.status("long"))["history"]
            assert [(attempt["number"], attempt["outcome"]) for attempt in ended] == [(1, "requeued"), (2, "cancelled")]
        else:
            assert interrupted.state is TaskState.FAILED
            assert interrupted.message.startswith("interrupted: the service stopped during stage render at ")
            (only,) = interrupted.history
            assert (only.outcome, only.message, only.worker_pid) == (AttemptOutcome.FAILED, interrupted.message,
                                                                      worker_pid)
        for code in ("queued-0", "queued-1"):
            assert wait_final(supervisor, code, timeout_s=60).state is TaskState.SUCCEEDED
    finally:
        supervisor.shutdown()


def test_the_deadline_scales_with_the_audio_duration(start_supervisor, inputs, tmp_path: Path) -> None:
    from heygem.pipeline import samples

    speech = tmp_path / "three-seconds.wav"
    samples.write_wav(speech, samples.speech_like_audio(3.0))
    supervisor = start_supervisor(task_timeout_s=1, timeout_per_media_s=2, max_workers=1)
    long_enough = submit(supervisor, (speech, inputs[1]), [["render", 2]])
    too_long = submit(supervisor, (speech, inputs[1]), [["render", 30]])  # queued behind it
    # Measured once, at submit, and stored with the task: what the file becomes later changes no deadline.
    speech.write_bytes(b"no longer audio")
    assert supervisor.status(too_long).audio_duration_s == pytest.approx(3.0, abs=0.05)
    assert wait_final(supervisor, long_enough).state is TaskState.SUCCEEDED
    assert wait_final(supervisor, too_long).message.startswith("timed out after 6 s in stage render")


def test_a_second_supervisor_on_the_same_data_folder_is_refused(start_supervisor) -> None:
    first = start_supervisor()
    with pytest.raises(HeyGemError, match=rf"another HeyGem service \(pid {os.getpid()}\) is already using"):
        TaskSupervisor(first.config)
    first.shutdown()
    TaskSupervisor(first.config).start().shutdown()
