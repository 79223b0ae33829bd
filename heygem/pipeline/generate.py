"""One job from input files to the result file, streamed with bounded memory, for the lip-sync engines it drives
(heygem.pipeline.engine.LipSyncEngine): the pipeline does media, tracking and encoding; an engine only turns audio
into per-frame features and renders batches of frames.

How a job runs (`generate`):
1. probe the video, read the audio as 16 kHz mono float32, plan which video frame each output frame shows;
2. `audio_features(audio, fps, frame_count, options)` once: anything indexed by output frame (mel chunks, cues);
3. for each batch of output frames, `render(batch, features)`: full BGR frames plus the tracked
   landmarks of each frame (None where no face was found; return those frames unchanged);
4. the rendered frames are encoded with the original audio and moved atomically onto job.result_path.

A producer thread decodes and tracks frames (PyAV and MediaPipe release the GIL for their heavy parts) while the
calling thread renders batches and feeds ffmpeg, which encodes in its own process: both cores stay busy, and
at most a few batches of frames are held at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import cv2
import numpy as np
from loguru import logger

from heygem.config import MediaConfig
from heygem.errors import InputError
from heygem.options import TaskOptions
from heygem.pipeline import compositing
from heygem.pipeline.analysis import AnalysisCache, FrameTail
from heygem.pipeline.engine import FrameBatch, Job, LipSyncEngine, Reporter
from heygem.pipeline.live import LiveStream
from heygem.pipeline.media import (
    SAMPLE_RATE,
    LiveOutput,
    VideoInfo,
    VideoReader,
    VideoWriter,
    output_size,
    probe_video,
)
from heygem.pipeline.phones import read_speech
from heygem.pipeline.silence import silence_warning
from heygem.pipeline.tracking import FaceTracker, TrackerSettings

NO_FACE_MESSAGE = "no face found in the video"
_DONE = object()


@dataclasses.dataclass(frozen=True)
class Segment:
    """Grid frames [start, stop) of the input video, played forward or backward."""

    start: int
    stop: int
    reverse: bool = False

    def __len__(self) -> int:
        return self.stop - self.start


def plan_segments(video_frames: int, output_frames: int, loop_mode: str) -> list[Segment]:
    """Which input frames fill the output: cut when the audio is shorter, ping-pong or loop when longer.

    Ping-pong never shows a turning-point frame twice: 0..n-1, n-2..1, 0..n-1, ...
    """
    segments: list[Segment] = []
    remaining = output_frames
    forward = True
    while remaining > 0:
        if video_frames == 1 or loop_mode == "loop" or forward:
            segment = Segment(0, min(video_frames, remaining))
        else:
            stop = video_frames - 1
            segment = Segment(max(1, stop - remaining), stop, reverse=True)
        if len(segment) > 0:
            segments.append(segment)
            remaining -= len(segment)
        forward = not forward
    return segments


def generate(job: Job, engine: LipSyncEngine, reporter: Reporter) -> dict[str, Any]:
    """Writes job.result_path (atomically) and returns the task report."""
    # The pipeline's own threads and ffmpeg already keep every core busy; OpenCV's worker threads on top of
    # them only add synchronisation (they cost about 3 ms of CPU per 720p frame, for no gain).
    previous_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        return _generate(job, engine, reporter)
    finally:
        cv2.setNumThreads(previous_threads)


@contextlib.contextmanager
def working(reporter: Reporter, interval_s: float = 1.0) -> Iterator[None]:
    """Tells the supervisor every `interval_s` that a stage computing in this process goes on.

    The analyses (phones of a 10-minute speech, tracking a long template video, or waiting while another worker
    analyses the same video) run for minutes with no progress figure, and supervisor.stall_s would end them. A stall
    is a stopped child or a stopped pipe (the encoder), which only the rendering stage has; the task's deadline
    still bounds these stages.
    """
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(interval_s):
            reporter.advance()

    ticker = threading.Thread(target=tick, name="working", daemon=True)
    ticker.start()
    try:
        yield
    finally:
        stop.set()
        ticker.join()


def in_background(function: Callable[..., Any], *args: Any) -> Future[Any]:
    """Calls `function(*args)` in a daemon thread; its result or exception arrives through the future."""
    future: Future[Any] = Future()

    def call() -> None:
        try:
            future.set_result(function(*args))
        except BaseException as exc:  # re-raised by future.result() in the job's thread
            future.set_exception(exc)

    threading.Thread(target=call, name=getattr(function, "__name__", "background"), daemon=True).start()
    return future


def _generate(job: Job, engine: LipSyncEngine, reporter: Reporter) -> dict[str, Any]:
    started = time.monotonic()
    media = job.config.media
    options = job.options  # resolved at submit: loop_mode, ai_label and watermark are set
    reporter.stage("reading inputs")
    video = probe_video(job.video_path, media.max_input_side)
    size = output_size(video, media.max_frame_side, media.oversize_policy)
    audio = read_speech(job.audio_path, media.max_audio_duration_s, media.max_input_side)
    duration = audio.size / SAMPLE_RATE
    silence = silence_warning(audio)
    if silence:
        reporter.warn(silence)
    frame_count = max(1, round(duration * video.fps))
    segments = plan_segments(video.frame_count, frame_count, str(options.loop_mode))
    logger.info("{}: {} video, {} frames at {:.3f} fps, rotation {}, {}x{} -> {} output frames ({:.2f} s, {})",
                job.code, video.codec, video.frame_count, video.fps, video.rotation, *size, frame_count, duration,
                options.loop_mode)
    reporter.stage("analysing audio")
    # The speech is analysed in a thread while the video is analysed and the first frames are decoded (the phone
    # recogniser runs in a child process, so it holds no GIL: both cores work).
    speech = in_background(engine.audio_features, audio, video.fps, frame_count, options)
    buffer_bytes = int(media.frame_buffer_mb * 2**20)
    tail = FrameTail(buffer_bytes)
    with working(reporter):
        analysis = None
        bank_settings = engine.bank_settings()
        if bank_settings is not None:
            reporter.stage("analysing video")
            analysis = AnalysisCache(job.config.paths.analysis_dir, media.analysis_cache_mb).analysis(
                video, size, tracker_settings(media), bank_settings, tail)
        # Frames decoded ahead while the speech is still analysed: the buffer's share the tail does not hold.
        ahead = max(0, buffer_bytes - tail.nbytes) // (3 * size[0] * size[1])
        feed = FrameFeed(video, size, segments, media, None if analysis is None else analysis.landmarks, tail,
                         engine.frames_per_render() + ahead)
        try:
            if not speech.done() or speech.exception() is not None:
                reporter.stage("analysing audio")  # what the job waits for, and what a failure names
            features = speech.result()
            # Rendering starts now and takes frames as fast as the producer decodes them: the frames decoded while
            # waiting are enough of a lead, and more would only keep memory busy (fresh pages cost system time).
            feed.keep_ahead(engine.frames_per_render())
            if analysis is not None:
                features = engine.attach_video(features, analysis, shown_frames(segments))
        except BaseException:
            feed.close()
            raise
    reporter.stage("rendering")
    job.result_path.parent.mkdir(parents=True, exist_ok=True)
    job.work_dir.mkdir(parents=True, exist_ok=True)
    # The file grows in the task's work folder, which nothing serves and which goes with the task (delete,
    # restart); the finished file is renamed onto the result (both folders lie in data_dir, one file system).
    temporary = job.work_dir / f"{job.result_path.stem}.partial{job.result_path.suffix}"
    live = None
    if job.live_dir is not None:
        # Like a stream the encoder cannot write (see media.output_args), one without a folder never costs the task.
        try:
            job.live_dir.mkdir(parents=True, exist_ok=True)
            live = LiveOutput(LiveStream(job.live_dir), job.config.live.segment_s)
        except OSError as exc:
            logger.warning("{}: no live stream: {} cannot be made ({})", job.code, job.live_dir, exc.strerror or exc)
    try:
        writer = VideoWriter(temporary, size, video.rate, job.audio_path, duration, media.encoder_preset,
                             media.encoder_crf, media.audio_bitrate, live)
    except BaseException:
        feed.close()
        raise
    try:
        faceless = _render_all(job, engine, reporter, writer, feed, segments, features, options)
        reporter.stage("finishing")
        writer.close()
    except BaseException:
        writer.abort()
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, job.result_path)
    wall = time.monotonic() - started
    report: dict[str, Any] = {} if analysis is None else {
        "video_analysis": "cached" if analysis.cached else "computed", "mouth_bank_frames": len(analysis.bank)}
    return report | {"engine": engine.name, "frames": frame_count, "frames_without_face": faceless,
            "duration": round(duration, 3), "fps": round(video.fps, 3), "width": size[0], "height": size[1],
            "video_frames": video.frame_count, "loop_mode": options.loop_mode,
            "wall_s": round(wall, 2), "speed_x": round(duration / max(wall, 1e-6), 2)}


def tracker_settings(media: MediaConfig) -> TrackerSettings:
    return TrackerSettings(min_confidence=media.detect_confidence, crop_scale=media.mesh_crop_scale,
                           mesh_size=media.mesh_size, smooth_min_cutoff=media.smooth_min_cutoff,
                           smooth_beta=media.smooth_beta)


def shown_frames(segments: list[Segment]) -> np.ndarray:
    """The grid frame each output frame shows."""
    parts = [np.arange(segment.start, segment.stop)[::-1 if segment.reverse else 1] for segment in segments]
    return np.concatenate(parts).astype(np.int64)


def _render_all(job: Job, engine: LipSyncEngine, reporter: Reporter, writer: VideoWriter, feed: FrameFeed,
                segments: list[Segment], features: Any, options: TaskOptions) -> int:
    """Renders every output frame of the feed into the writer (and closes the feed); returns how many frames had
    no face."""
    batch_frames = engine.frames_per_render()
    total = sum(len(segment) for segment in segments)
    # Later segments replay the first one's frames: no face there means no face anywhere.
    first_pass = len(segments[0])
    faces_in_first_pass = 0
    faceless = 0
    done = 0
    try:
        for batch in _batches(feed.frames, batch_frames):
            found = [points is not None for points in batch.landmarks]
            faceless += found.count(False)
            faces_in_first_pass += sum(hit for index, hit in zip(batch.indices, found, strict=True)
                                       if index < first_pass)
            rendered = engine.render(batch, features) if any(found) else batch.frames
            for frame in rendered:
                _draw_overlays(frame, options)
                writer.write(frame)
            done += len(rendered)
            if done >= first_pass and faces_in_first_pass == 0:
                raise InputError(NO_FACE_MESSAGE)
            reporter.progress(100.0 * done / total)
    finally:
        feed.close()
    return faceless


def _batches(frames: queue.Queue[Any], size: int) -> Iterator[FrameBatch]:
    """Groups the producer's (index, frame, landmarks) items; re-raises the producer's failure here.

    The first batch is a quarter of the others so the encoder starts early instead of idling meanwhile.
    """
    items: list[tuple[int, np.ndarray, np.ndarray | None]] = []
    wanted = max(1, size // 4)
    while True:
        item = frames.get()
        if item is _DONE or isinstance(item, BaseException):
            if items:
                yield _batch(items)
            if isinstance(item, BaseException):
                raise item
            return
        items.append(item)
        if len(items) == wanted:
            yield _batch(items)
            items = []
            wanted = size


def _batch(items: list[tuple[int, np.ndarray, np.ndarray | None]]) -> FrameBatch:
    return FrameBatch(indices=np.array([index for index, _, _ in items]), frames=[frame for _, frame, _ in items],
                      landmarks=[points for _, _, points in items])


class FrameFeed:
    """The output frames in order, with their landmarks, from a thread that decodes (and, without the video's
    analysis, tracks) ahead of the renderer: at most `ahead` frames wait in its queue, after the frames of `tail`."""

    def __init__(self, video: VideoInfo, size: tuple[int, int], segments: list[Segment], media: MediaConfig,
                 landmarks: list[np.ndarray | None] | None, tail: FrameTail, ahead: int) -> None:
        self.frames: queue.Queue[Any] = queue.Queue(maxsize=max(1, ahead))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=_produce, name="decode-track", daemon=True,
                                        args=(video, size, segments, media, self.frames, self._stop, landmarks, tail))
        self._thread.start()

    def keep_ahead(self, frames: int) -> None:
        """From now on, at most `frames` more wait in the queue (those already there stay)."""
        with self.frames.mutex:
            self.frames.maxsize = max(1, frames)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _produce(video: VideoInfo, size: tuple[int, int], segments: list[Segment], media: MediaConfig,
             frames: queue.Queue[Any], stop: threading.Event, landmarks: list[np.ndarray | None] | None,
             tail: FrameTail) -> None:
    """Decodes and tracks in output order; a grid frame shown again reuses its landmarks instead of re-tracking,
    and with the video's analysis nothing is tracked at all."""
    tracker: FaceTracker | None = None
    try:
        known: dict[int, np.ndarray | None] = {} if landmarks is None else dict(enumerate(landmarks))
        if landmarks is None:
            tracker = FaceTracker(video.fps, tracker_settings(media))
        reader = VideoReader(video, size)
        replays = len(segments) > 1
        chunk = max(4, media.reverse_buffer_mb * 2**20 // (size[0] * size[1] * 3))
        output_index = 0
        for segment in segments:
            for grid_index, frame in _segment_frames(reader, segment, chunk, tail):
                if grid_index in known:
                    points = known[grid_index]
                else:
                    assert tracker is not None
                    points = tracker.track(frame)
                    if replays:
                        known[grid_index] = points
                if not _put(frames, (output_index, frame, points), stop):
                    return
                output_index += 1
            tail.clear()  # only the first segment plays the video's end from the start on
        _put(frames, _DONE, stop)
    except BaseException as exc:
        _put(frames, exc, stop)
    finally:
        tail.clear()
        if tracker is not None:
            tracker.close()


def _segment_frames(reader: VideoReader, segment: Segment, chunk: int,
                    tail: FrameTail) -> Iterator[tuple[int, np.ndarray]]:
    """A segment's frames; backward ones are decoded chunk by chunk from the end, so memory stays bounded.

    A forward segment that reaches into the `tail` the analysis kept takes those frames from it instead of
    decoding them."""
    if not segment.reverse:
        kept = tail.start()
        decoded_until = segment.stop if kept is None else min(segment.stop, max(segment.start, kept))
        yield from reader.frames(segment.start, decoded_until)
        for _ in range(decoded_until, segment.stop):
            grid_index, frame = tail.take()
            while grid_index < decoded_until:  # kept before the segment's start: not shown here
                grid_index, frame = tail.take()
            yield grid_index, frame
        return
    end = segment.stop
    while end > segment.start:
        begin = max(segment.start, end - chunk)
        yield from reversed(list(reader.frames(begin, end)))
        end = begin


def _put(frames: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Blocks until there is room, unless the consumer has stopped; False then."""
    while not stop.is_set():
        try:
            frames.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _draw_overlays(frame: np.ndarray, options: TaskOptions) -> None:
    if options.ai_label:
        compositing.draw_badge(frame, "AI-generated", "bottom-left", opacity=0.85)
    if options.watermark:
        compositing.draw_badge(frame, "HeyGem", "bottom-right", opacity=0.45)
