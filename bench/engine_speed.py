"""Whole-CLI speed of the built-in engine against a plain ffmpeg transcode of the same clip, and peak memory.

    python -m bench.engine_speed                  # 8 s 1280x720 25 fps talking head, 5 rounds
    python -m bench.engine_speed --rounds 7 --engine meshwarp
    python -m bench.engine_speed --memory         # also: peak memory on 1080p clips of 20 s and 60 s
    python -m bench.engine_speed --rounds 1 --memory --memory-lengths 600   # the 10-minute 1080p case

Each round times, back to back, (a) `ffmpeg` decoding the clip and encoding it with the configured
libx264 preset/crf plus AAC, and (b) `python -m heygem generate` on the same clip (interpreter start-up,
imports, tracking, rendering and encoding included) with an empty analysis cache, then (c) a second
render of the same clip with other speech, which finds the video's analysis cached. Medians over the rounds
are reported, because the
machine is shared. Peak memory is the largest summed resident size of the process tree (Python and its
ffmpeg children), sampled every 50 ms. The clip is the real talking-head clip video_head_motion.mp4 from
../shared/media scaled and padded to 1280x720 with speech_en_1.wav; without ../shared/media it is the
synthetic portrait with speech-like audio. Results: stdout (Markdown) and bench/results/engine_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from heygem.config import load_config
from heygem.pipeline import samples
from heygem.pipeline.media import ffmpeg_exe, probe_audio

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SHARED_MEDIA = ROOT.parent / "shared" / "media"
WIDTH, HEIGHT, FPS = 1280, 720, 25


def run_ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-y", *args], check=True)


def other_speech(folder: Path, seconds: float) -> Path:
    """A second speech of the same length, for rendering the same video again (the analysis cache's case)."""
    audio, real_audio = folder / f"other_speech_{seconds:g}s.wav", SHARED_MEDIA / "speech_en_2.wav"
    if real_audio.is_file():
        run_ffmpeg("-i", str(real_audio), "-af", "apad", "-t", f"{seconds}", str(audio))
    else:
        bursts = tuple((start + 0.5, start + 1.2) for start in range(0, int(seconds) - 1, 2))
        samples.write_wav(audio, samples.speech_like_audio(seconds, bursts))
    return audio


def make_clip(folder: Path, seconds: float) -> tuple[Path, Path, str]:
    """A 1280x720 25 fps talking-head clip and its speech; returns (video, audio, description)."""
    video, audio = folder / f"talking_head_{seconds:g}s.mp4", folder / f"speech_{seconds:g}s.wav"
    real_video, real_audio = SHARED_MEDIA / "video_head_motion.mp4", SHARED_MEDIA / "speech_en_1.wav"
    if seconds <= 8 and real_video.is_file() and real_audio.is_file():
        layout = f"scale=-2:{HEIGHT},pad={WIDTH}:{HEIGHT}:(ow-iw)/2:0"
        run_ffmpeg("-i", str(real_video), "-t", f"{seconds}", "-vf", layout, "-r", str(FPS), "-c:v", "libx264",
                   "-preset", "medium", "-crf", "18", "-pix_fmt", "yuv420p", "-an", str(video))
        run_ffmpeg("-i", str(real_audio), "-t", f"{seconds}", str(audio))
        return video, audio, "video_head_motion.mp4 scaled to 1280x720 + speech_en_1.wav"
    frames = samples.moving_portrait_frames(round(seconds * FPS), FPS, (WIDTH, HEIGHT))
    samples.write_video(video, frames, (WIDTH, HEIGHT), FPS,
                        codec_args=("-c:v", "libx264", "-preset", "medium", "-crf", "18", "-pix_fmt", "yuv420p"))
    bursts = tuple((start, start + 0.9) for start in range(0, int(seconds) - 1, 2))
    samples.write_wav(audio, samples.speech_like_audio(seconds, bursts))
    return video, audio, "synthetic portrait (skimage astronaut) + speech-like audio"


def tree_rss_bytes(root: int) -> int:
    """Resident memory of a process and all its descendants, from /proc (cheap enough to sample often)."""
    total, pending = 0, [root]
    while pending:
        pid = pending.pop()
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for children in Path(f"/proc/{pid}/task").glob("*/children"):
                pending.extend(int(child) for child in children.read_text().split())
        except (OSError, ValueError):
            continue
    return total


def timed(command: list[str]) -> tuple[float, int, float]:
    """Wall seconds, peak memory (bytes) and CPU seconds (user + system) of the process tree of `command`.

    CPU time barely moves with the machine's load, where wall time doubles: on a shared machine it is the steadier
    of the two figures.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss_bytes(process.pid))
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, errors = process.communicate()
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"{command[0]} failed: {errors.decode(errors='replace')[-800:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, peak, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def baseline_command(video: Path, audio: Path, out: Path) -> list[str]:
    media = load_config().media
    return [ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-y", "-i", str(video), "-i", str(audio),
            "-map", "0:v:0", "-map", "1:a:0", "-c:v", "libx264", "-preset", media.encoder_preset,
            "-crf", str(media.encoder_crf), "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", media.audio_bitrate,
            "-movflags", "+faststart", str(out)]


def generate_command(video: Path, audio: Path, out: Path, engine: str) -> list[str]:
    return [sys.executable, "-m", "heygem", "generate", "--video", str(video), "--audio", str(audio),
            "--out", str(out), "--engine", engine]


def measure_speed(rounds: int, engine: str, folder: Path) -> dict[str, Any]:
    """Each round: ffmpeg, a first render (empty analysis cache), a second render of the video with other speech."""
    video, audio, description = make_clip(folder, 8.0)
    other = other_speech(folder, 8.0)
    duration = probe_audio(audio).duration
    plain, ours, again, peaks, cpu = [], [], [], [], []
    data_dir = folder / "data"
    os.environ["HEYGEM_PATHS__DATA_DIR"] = str(data_dir)
    for index in range(rounds):
        shutil.rmtree(data_dir, ignore_errors=True)
        base_wall, _, base_cpu = timed(baseline_command(video, audio, folder / "plain.mp4"))
        plain.append(base_wall)
        wall, peak, first_cpu = timed(generate_command(video, audio, folder / "lipsynced.mp4", engine))
        ours.append(wall)
        peaks.append(peak)
        second_wall, _, second_cpu = timed(generate_command(video, other, folder / "lipsynced_again.mp4", engine))
        again.append(second_wall)
        cpu.append((base_cpu, first_cpu, second_cpu))
        print(f"  round {index + 1}: ffmpeg {plain[-1]:.2f} s, heygem generate {wall:.2f} s, "
              f"peak {peak / 2**20:.0f} MB, second render {again[-1]:.2f} s (CPU s: {base_cpu:.2f}, "
              f"{first_cpu:.2f}, {second_cpu:.2f}; load average {os.getloadavg()[0]:.1f})", file=sys.stderr)
    ratios = [run / base for run, base in zip(ours, plain, strict=True)]
    second_ratios = [run / base for run, base in zip(again, plain, strict=True)]
    return {"clip": description, "size": f"{WIDTH}x{HEIGHT}", "fps": FPS, "duration_s": round(duration, 2),
            "engine": engine, "rounds": rounds,
            "ffmpeg_median_s": round(statistics.median(plain), 2),
            "generate_median_s": round(statistics.median(ours), 2),
            "generate_over_duration": round(statistics.median(ours) / duration, 3),
            "generate_over_ffmpeg_median_of_ratios": round(statistics.median(ratios), 2),
            "second_render_median_s": round(statistics.median(again), 2),
            "second_render_over_ffmpeg_median_of_ratios": round(statistics.median(second_ratios), 2),
            "cpu_s_medians": {name: round(statistics.median(column), 2) for name, column in
                              zip(("ffmpeg", "first_render", "second_render"), zip(*cpu, strict=True), strict=True)},
            # CPU time over the transcode's, per round: the floor of the wall ratios on two busy cores.
            "cpu_over_ffmpeg_medians": {name: round(statistics.median(row[column] / row[0] for row in cpu), 2)
                                        for column, name in ((1, "first_render"), (2, "second_render"))},
            "peak_memory_mb_median": round(statistics.median(peaks) / 2**20),
            "peak_memory_mb_max": round(max(peaks) / 2**20),
            "all_generate_s": [round(value, 2) for value in ours], "all_ffmpeg_s": [round(value, 2) for value in plain]}


def measure_memory(engine: str, folder: Path, lengths: list[float]) -> list[dict[str, Any]]:
    """Peak memory on 1080p clips of several lengths: with streaming it must not grow with the length."""
    results = []
    for seconds in lengths:
        video, audio = folder / f"portrait_1080p_{seconds:g}s.mp4", folder / f"speech_{seconds:g}s.wav"
        if not video.exists():
            frames = samples.moving_portrait_frames(round(seconds * FPS), FPS, (1920, 1080))
            samples.write_video(video, frames, (1920, 1080), FPS,
                                codec_args=("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"))
            bursts = tuple((start, start + 0.9) for start in range(0, int(seconds) - 1, 2))
            samples.write_wav(audio, samples.speech_like_audio(seconds, bursts))
        wall, peak, _ = timed(generate_command(video, audio, folder / "long.mp4", engine))
        results.append({"size": "1920x1080", "duration_s": seconds, "wall_s": round(wall, 1),
                        "peak_memory_mb": round(peak / 2**20)})
        print(f"  1080p {seconds:g} s: {wall:.1f} s, peak {peak / 2**20:.0f} MB", file=sys.stderr)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--engine", default="meshwarp")
    parser.add_argument("--memory", action="store_true", help="also measure peak memory on long 1080p clips")
    parser.add_argument("--memory-lengths", type=float, nargs="+", default=[20.0, 60.0], metavar="SECONDS",
                        help="lengths of the 1080p clips for --memory (600: the 10-minute case)")
    args = parser.parse_args()
    folder = RESULTS / "engine_speed_media"
    folder.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"machine": f"{os.cpu_count()} CPU cores", "load_average": os.getloadavg(),
                              "speed": measure_speed(args.rounds, args.engine, folder)}
    if args.memory:
        report["memory"] = measure_memory(args.engine, folder, args.memory_lengths)
    (RESULTS / "engine_speed.json").write_text(json.dumps(report, indent=2))
    speed = report["speed"]
    print(f"| measure | result (median of {speed['rounds']}) |\n|---|---|")
    print(f"| clip | {speed['clip']}, {speed['size']}, {speed['fps']:g} fps, {speed['duration_s']} s |")
    print(f"| plain ffmpeg decode + encode | {speed['ffmpeg_median_s']} s |")
    print(f"| `heygem generate` whole CLI run | {speed['generate_median_s']} s |")
    print(f"| wall / media duration (goal <= 0.5) | {speed['generate_over_duration']} |")
    print(f"| wall / plain ffmpeg, first render of the video (goal <= 2.2) | "
          f"{speed['generate_over_ffmpeg_median_of_ratios']} |")
    print(f"| wall / plain ffmpeg, same video with other speech (goal <= 1.6) | "
          f"{speed['second_render_over_ffmpeg_median_of_ratios']} |")
    cpu = speed["cpu_s_medians"]
    print(f"| CPU seconds, process tree: ffmpeg / first render / second render | {cpu['ffmpeg']} / "
          f"{cpu['first_render']} / {cpu['second_render']} |")
    cpu_ratios = speed["cpu_over_ffmpeg_medians"]
    print(f"| CPU / plain ffmpeg's CPU: first render / second render | {cpu_ratios['first_render']} / "
          f"{cpu_ratios['second_render']} |")
    print(f"| peak memory (Python + ffmpeg) | {speed['peak_memory_mb_median']} MB "
          f"(max {speed['peak_memory_mb_max']}) |")
    for row in report.get("memory", []):
        print(f"| peak memory, {row['size']} {row['duration_s']:g} s | {row['peak_memory_mb']} MB |")


if __name__ == "__main__":
    main()
