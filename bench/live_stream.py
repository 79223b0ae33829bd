"""The live stream's cost and latency: time from `running` to the first playable segment, and each task's total
time and result size with the stream on and off, for 10 s, 60 s and 300 s of speech at 720p.

    python -m bench.live_stream                       # 3 rounds of each length, stream off and on alternating
    python -m bench.live_stream --lengths 10 60 --rounds 5 --segment-s 1

Tasks run one at a time through real supervisors (the built-in engine in spawned workers), one with live.enabled
true and one with false; each round runs the same task on both, in alternating order, so that drift of a shared
machine falls on both alike. The clip is the real talking-head clip video_head_motion.mp4 from ../shared/media scaled
and padded to 1280x720 (8 s, played forward and backward for longer speech; the synthetic portrait without
../shared/media), driven by real speech (espeak-ng) of each length.

Nothing is polled while a task runs, so the measurement costs the task nothing: `running` is the time of the
worker's "stage run begins" line in the task's log, the first segment's time is the modification time of its file
(the encoder renames it complete, and lists it in the playlist at once), and the total is the task's started_at to
finished_at. Results: stdout (Markdown) and bench/results/live_stream.json.

Before the tasks, `--muxing-s` seconds of the same clip (looped) and speech are encoded by ffmpeg alone three ways,
to compare the design with its alternative: the result alone (as with the stream off), the result and the stream
from one encode through the tee muxer (the shipped arguments, heygem.pipeline.media.output_args), and the stream
alone followed by a remux of its segments into the result.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.engine_speed import RESULTS, baseline_command, make_clip, run_ffmpeg, timed
from heygem.config import load_config
from heygem.logs import task_log_path
from heygem.pipeline.live import INIT_NAME, SEGMENT_PATTERN, LiveStream, live_stream
from heygem.pipeline.media import LiveOutput, ffmpeg_exe, output_args
from heygem.supervisor import TaskRecord, TaskRequest, TaskState, TaskSupervisor
from tests.media import spoken_wav

RUN_LINE = "stage run begins"


def start(data_dir: Path, live: bool, segment_s: float | None) -> TaskSupervisor:
    overrides: dict[str, dict[str, Any]] = {"paths": {"data_dir": str(data_dir), "input_dir": str(data_dir)},
                                            "supervisor": {"task_timeout_s": 1800}, "live": {"enabled": live}}
    if segment_s is not None:
        overrides["live"]["segment_s"] = segment_s
    config = load_config(overrides=overrides)
    return TaskSupervisor(config).start()


def running_at(supervisor: TaskSupervisor, code: str) -> float:
    """When the worker entered `running`, from its log line (loguru's local time, to the millisecond)."""
    for line in task_log_path(supervisor.config, code).read_text(encoding="utf-8").splitlines():
        if RUN_LINE in line:
            return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").timestamp()
    raise RuntimeError(f"task {code} logged no '{RUN_LINE}'")


def run_task(supervisor: TaskSupervisor, video: Path, audio: Path, code: str) -> dict[str, Any]:
    record: TaskRecord = supervisor.wait(supervisor.submit(TaskRequest(audio, video, engine="meshwarp", code=code)),
                                         1800)
    if record.state is not TaskState.SUCCEEDED:
        raise RuntimeError(f"task {code} {record.state.value}: {record.message}")
    assert record.started_at is not None and record.finished_at is not None and record.result_path
    run = running_at(supervisor, code)
    row = {"total_s": record.finished_at - record.started_at, "running_to_end_s": record.finished_at - run,
           "result_mb": Path(record.result_path).stat().st_size / 1e6}
    stream = live_stream(supervisor.config, code)
    if stream.folder.exists():
        first = stream.folder / "live-00000.m4s"
        row["first_segment_s"] = first.stat().st_mtime - run
        row["stream_mb"] = sum(path.stat().st_size for path in stream.folder.iterdir()) / 1e6
    supervisor.delete(code)
    return row


def measure_muxing(video: Path, audio: Path, seconds: float, segment_s: float, rounds: int,
                   folder: Path) -> dict[str, list[float]]:
    """Seconds to encode the clip: the MP4 alone, MP4 and stream through tee, the stream alone then a remux."""
    looped = folder / f"looped_{seconds:g}s.mp4"
    run_ffmpeg("-stream_loop", "-1", "-i", str(video), "-t", f"{seconds:g}", "-c", "copy", str(looped))
    result = folder / "muxing.mp4"
    plain = baseline_command(looped, audio, result)
    assert plain[-3:] == ["-movflags", "+faststart", str(result)]
    encode = plain[:-3]
    stream = LiveStream(folder / "muxing-live")
    hls_alone = ["-force_key_frames", f"expr:gte(t,n_forced*{segment_s:g})", "-f", "hls", "-hls_time", f"{segment_s:g}",
                 "-hls_playlist_type", "event", "-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", INIT_NAME,
                 "-hls_segment_filename", str(stream.folder / SEGMENT_PATTERN), str(stream.playlist)]
    remux = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-y", "-i", str(stream.playlist), "-c", "copy",
             "-movflags", "+faststart", str(result)]
    times: dict[str, list[float]] = {"mp4 alone": [], "tee: mp4 + stream": [], "stream, then remux": []}
    for _ in range(rounds):
        times["mp4 alone"].append(timed([*encode, *output_args(result, None)])[0])
        stream.remove()
        stream.folder.mkdir(parents=True)
        times["tee: mp4 + stream"].append(timed([*encode, *output_args(result, LiveOutput(stream, segment_s))])[0])
        stream.remove()
        stream.folder.mkdir(parents=True)
        times["stream, then remux"].append(timed([*encode, *hls_alone])[0] + timed(remux)[0])
    return times


def median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=float, nargs="+", default=[10.0, 60.0, 300.0], metavar="SECONDS")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--segment-s", type=float, help="live.segment_s (default: configs/default.yaml's)")
    parser.add_argument("--muxing-s", type=float, default=60.0, help="length of the ffmpeg-only comparison (0: none)")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    media = RESULTS / "live_stream_media"
    media.mkdir(exist_ok=True)
    video, _, clip = make_clip(media, 8.0)
    load = os.getloadavg()
    segment_s = args.segment_s or load_config().live.segment_s
    report: dict[str, Any] = {"machine": f"{os.cpu_count()} CPU cores", "load_average_before": load,
                              "video": clip.split(" + ")[0], "speech": "espeak-ng (tests.media.spoken_wav)",
                              "segment_s": segment_s, "lengths": {}}
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.muxing_s:
        muxing_audio = media / f"spoken_{args.muxing_s:g}s.wav"
        if not muxing_audio.exists():
            spoken_wav(muxing_audio, args.muxing_s)
        with tempfile.TemporaryDirectory() as folder:
            report["muxing"] = measure_muxing(video, muxing_audio, args.muxing_s, segment_s, args.rounds, Path(folder))
        for way, times in report["muxing"].items():
            print(f"  ffmpeg alone, {args.muxing_s:g} s: {way}: median {statistics.median(times):.2f} s "
                  f"({', '.join(f'{value:.2f}' for value in times)})", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        supervisors = {live: start(Path(folder) / f"live-{live}", live, args.segment_s) for live in (False, True)}
        try:
            for seconds in args.lengths:
                audio = media / f"spoken_{seconds:g}s.wav"
                if not audio.exists():
                    spoken_wav(audio, seconds)
                rows: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
                for index in range(args.rounds):
                    order = (False, True) if index % 2 == 0 else (True, False)
                    for live in order:
                        row = run_task(supervisors[live], video, audio, f"bench-{seconds:g}-{index}-{int(live)}")
                        rows[live].append(row)
                        print(f"  {seconds:g} s, stream {'on ' if live else 'off'}, round {index + 1}: "
                              f"{json.dumps({key: round(value, 3) for key, value in row.items()})}", flush=True)
                report["lengths"][f"{seconds:g}"] = rows
        finally:
            for supervisor in supervisors.values():
                supervisor.shutdown()
    report["load_average_after"] = os.getloadavg()
    (RESULTS / "live_stream.json").write_text(json.dumps(report, indent=2))
    print(f"\nmedians of {args.rounds} rounds; load average before {load[0]:.2f}, after "
          f"{report['load_average_after'][0]:.2f}")
    print("| speech | running → first segment | total, stream off | total, stream on | added | result MB off / on "
          "| stream MB |\n|---|---|---|---|---|---|---|")
    for seconds, rows in report["lengths"].items():
        off, on = rows[False], rows[True]
        added = statistics.median(b["total_s"] / a["total_s"] - 1 for a, b in zip(off, on, strict=True))
        print(f"| {seconds} s | {median(on, 'first_segment_s'):.2f} s (max {max(r['first_segment_s'] for r in on):.2f})"
              f" | {median(off, 'total_s'):.2f} s | {median(on, 'total_s'):.2f} s | {100 * added:+.1f} % "
              f"| {median(off, 'result_mb'):.2f} / {median(on, 'result_mb'):.2f} | {median(on, 'stream_mb'):.2f} |")


if __name__ == "__main__":
    main()
