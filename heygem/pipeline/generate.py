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

Where the engine's render box serves and the video's boxes are cached (`plan_box`, heygem.pipeline.crops), steps
3 and 4 take only that box of each frame: ffmpeg decodes the video itself and lays the rendered boxes over it
(`BoxedRender`), and nothing is decoded here.
"""

from __future__ import annotations

import collections
import contextlib
import copy
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
from heygem.pipeline.analysis import AnalysisCache, FrameTail, VideoAnalysis
from heygem.pipeline.crops import (
    CropRecorder,
    CropStore,
    StaleCrops,
    StoredCrops,
    check_sum,
    crop_bytes,
    crop_to_bgr,
    merged_i420,
    read_check_sums,
)
from heygem.pipeline.engine import FrameBatch, Job, LipSyncEngine, Reporter
from heygem.pipeline.live import LiveStream
from heygem.pipeline.media import (
    SAMPLE_RATE,
    BoxedVideo,
    EncoderError,
    LiveOutput,
    VideoInfo,
    VideoReader,
    VideoWriter,
    grid_sources,
    output_size,
    probe_video,
    to_bgr,
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
    output = Output(job, video, size, duration)
    with working(reporter):
        analysis = None
        bank_settings = engine.bank_settings()
        if bank_settings is not None:
            reporter.stage("analysing video")
            analysis = AnalysisCache(job.config.paths.analysis_dir, media.analysis_cache_mb).analysis(
                video, size, tracker_settings(media), bank_settings, tail)
        plan = plan_box(job, engine, video, size, segments, analysis)
        boxed = None
        if plan is not None and plan.crops is not None:
            # Nothing to decode here: the encoder starts on the video now, while the speech is still analysed.
            tail.clear()
            assert analysis is not None
            boxed = BoxedRender(plan, output, segments, analysis.landmarks)
            feed: FrameFeed | None = None
        else:
            # Frames decoded ahead while the speech is still analysed: the buffer's share the tail does not hold.
            ahead = max(0, buffer_bytes - tail.nbytes) // (3 * size[0] * size[1])
            recorder = None if plan is None else plan.store.recorder(len(segments[0]), size)
            feed = FrameFeed(video, size, segments, media, None if analysis is None else analysis.landmarks, tail,
                             engine.frames_per_render() + ahead, recorder)
        try:
            if not speech.done() or speech.exception() is not None:
                reporter.stage("analysing audio")  # what the job waits for, and what a failure names
            features = speech.result()
            if feed is not None:
                # Rendering starts now and takes frames as fast as the producer decodes them: the frames decoded
                # while waiting are enough of a lead, and more would only keep memory busy (fresh pages cost system
                # time).
                feed.keep_ahead(engine.frames_per_render())
            if analysis is not None:
                features = engine.attach_video(features, analysis, shown_frames(segments))
        except BaseException:
            if feed is not None:
                feed.close()
            if boxed is not None:
                boxed.abort()
            raise
    reporter.stage("rendering")
    faceless = None
    if boxed is not None:
        # The render changes the features' running state: a render again from whole frames starts from the same.
        faceless = boxed.render(engine, reporter, copy.copy(features))
        if faceless is None:
            assert plan is not None and analysis is not None
            logger.warning("{}: {}; rendering again from the video's whole frames", job.code, boxed.failure)
            plan.store.discard()
            feed = FrameFeed(video, size, segments, media, analysis.landmarks, tail, engine.frames_per_render(),
                             plan.store.recorder(len(segments[0]), size))
    if faceless is None:
        assert feed is not None
        faceless = _render_whole(job, engine, reporter, output, feed, segments, features, options)
    os.replace(output.temporary, job.result_path)
    wall = time.monotonic() - started
    report: dict[str, Any] = {} if analysis is None else {
        "video_analysis": "cached" if analysis.cached else "computed", "mouth_bank_frames": len(analysis.bank)}
    if plan is not None:
        x0, y0, x1, y1 = plan.store.box
        report["render_box"] = {"box": [x0, y0, x1, y1], "frames": "cached" if boxed is not None and
                                feed is None else "decoded"}
    return report | {"engine": engine.name, "frames": frame_count, "frames_without_face": faceless,
            "duration": round(duration, 3), "fps": round(video.fps, 3), "width": size[0], "height": size[1],
            "video_frames": video.frame_count, "loop_mode": options.loop_mode,
            "wall_s": round(wall, 2), "speed_x": round(duration / max(wall, 1e-6), 2)}


class Output:
    """Where a job's result grows and the encoder that writes it: the file grows in the task's work folder, which
    nothing serves and which goes with the task (delete, restart); the finished file is renamed onto the result
    (both folders lie in data_dir, one file system)."""

    def __init__(self, job: Job, video: VideoInfo, size: tuple[int, int], duration: float) -> None:
        self.job, self.video, self.size, self.duration = job, video, size, duration
        self.temporary = job.work_dir / f"{job.result_path.stem}.partial{job.result_path.suffix}"

    def writer(self, boxed: BoxedVideo | None = None) -> VideoWriter:
        job, media = self.job, self.job.config.media
        job.result_path.parent.mkdir(parents=True, exist_ok=True)
        job.work_dir.mkdir(parents=True, exist_ok=True)
        live = None
        if job.live_dir is not None:
            # Like a stream the encoder cannot write (see media.output_args), one without a folder never costs the
            # task.
            try:
                job.live_dir.mkdir(parents=True, exist_ok=True)
                live = LiveOutput(LiveStream(job.live_dir), job.config.live.segment_s)
            except OSError as exc:
                logger.warning("{}: no live stream: {} cannot be made ({})", job.code, job.live_dir,
                               exc.strerror or exc)
        return VideoWriter(self.temporary, self.size, self.video.rate, job.audio_path, self.duration,
                           media.encoder_preset, media.encoder_crf, media.audio_bitrate, live, boxed)

    def encode(self, writer: VideoWriter, render: Callable[[], int], reporter: Reporter) -> int:
        """Runs `render` (which feeds `writer`), then finishes the file; a failure anywhere removes it."""
        try:
            faceless = render()
            reporter.stage("finishing")
            writer.close()
        except BaseException:
            writer.abort()
            self.temporary.unlink(missing_ok=True)
            raise
        return faceless


@dataclasses.dataclass(frozen=True)
class BoxPlan:
    """A job whose video the render box serves (see plan_box): its cached boxes, if they hold every frame shown."""

    store: CropStore
    crops: StoredCrops | None


def plan_box(job: Job, engine: LipSyncEngine, video: VideoInfo, size: tuple[int, int], segments: list[Segment],
             analysis: VideoAnalysis | None) -> BoxPlan | None:
    """Whether the encoder can lay rendered boxes over the video as it decodes it (heygem.pipeline.crops): the
    engine renders a box, the video's analysis is cached (the boxes are kept beside it), the video is shown as
    stored (upright, at its own size, one stored frame per output frame), forward from its start, and no badge is
    drawn over whole frames. None: whole frames are decoded, rendered and encoded."""
    options = job.options
    if analysis is None or analysis.key is None or options.ai_label or options.watermark:
        return None
    if video.rotation or size != (video.width, video.height) or len(video.frame_times) != video.frame_count:
        return None
    if any(segment.reverse or segment.start != 0 for segment in segments):
        return None
    if not np.array_equal(grid_sources(video), np.arange(video.frame_count)):
        return None
    box = engine.render_box(analysis.landmarks, size)
    # Boxes of longer videos than a quarter of the analysis cache holds would push the analyses themselves out.
    if box is None or crop_bytes(box) * len(segments[0]) > job.config.media.analysis_cache_mb * 2**20 / 4:
        return None
    store = CropStore(job.config.paths.analysis_dir, analysis.key, box)
    return BoxPlan(store, store.load(len(segments[0])))


class BoxedRender:
    """A render over cached boxes: the encoder decodes the video and lays each rendered box over its frame."""

    def __init__(self, plan: BoxPlan, output: Output, segments: list[Segment],
                 landmarks: list[np.ndarray | None]) -> None:
        assert plan.crops is not None
        self.plan, self.output, self.landmarks = plan, output, landmarks
        self.crops: StoredCrops = plan.crops
        self.shown = shown_frames(segments)
        self.first_pass = len(segments[0])
        self.check_path = output.job.work_dir / f"{output.job.result_path.stem}.boxes.crc"
        self.failure = ""  # why render gave up on the boxes
        self.writer = output.writer(BoxedVideo(output.video, plan.store.box, len(self.shown), len(segments) > 1,
                                               self.check_path))

    def abort(self) -> None:
        self.writer.abort()
        self.crops.close()
        self.output.temporary.unlink(missing_ok=True)

    def render(self, engine: LipSyncEngine, reporter: Reporter, features: Any) -> int | None:
        """Renders and encodes every output frame; returns how many had no face, or None when the frames the
        encoder decoded were not those of the cached boxes (the file is then removed)."""
        box, crops, shown, landmarks = self.plan.store.box, self.crops, self.shown, self.landmarks
        offset = np.array(box[:2], np.float32)

        # Each box as decoded and as it was before rendering (to tell which pixels the render changed), and the sum
        # ffmpeg's framecrc gives the box of the frame it decodes under it.
        pending: collections.deque[tuple[np.ndarray, np.ndarray]] = collections.deque()
        sums: list[int] = []

        def items() -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
            for index, grid_index in enumerate(shown):
                crop = crops[grid_index]
                sums.append(check_sum(crop))
                frame = crop_to_bgr(crop, box)
                pending.append((crop, frame.copy()))
                points = landmarks[grid_index]
                yield index, frame, None if points is None else points - offset

        def write(_: int, frame: np.ndarray) -> None:
            crop, before = pending.popleft()
            self.writer.write_planar(merged_i420(crop, before, frame, box))

        try:
            faceless = self.output.encode(self.writer, lambda: _render_all(
                engine, reporter, items(), write, len(shown), self.first_pass, features), reporter)
        except (StaleCrops, EncoderError) as exc:
            # Whole frames do not need what failed here (the cached boxes, ffmpeg reading the video itself); if
            # they fail too, that failure is the task's.
            self.failure = str(exc)
            return None
        finally:
            crops.close()
        try:
            matched = read_check_sums(self.check_path) == sums
        except (OSError, ValueError, IndexError):  # no checksums to go by: as good as none matching
            matched = False
        self.check_path.unlink(missing_ok=True)
        if not matched:
            self.output.temporary.unlink(missing_ok=True)
            self.failure = "the cached frame boxes did not match the video's frames"
            return None
        return faceless


def tracker_settings(media: MediaConfig) -> TrackerSettings:
    return TrackerSettings(min_confidence=media.detect_confidence, crop_scale=media.mesh_crop_scale,
                           mesh_size=media.mesh_size, smooth_min_cutoff=media.smooth_min_cutoff,
                           smooth_beta=media.smooth_beta)


def shown_frames(segments: list[Segment]) -> np.ndarray:
    """The grid frame each output frame shows."""
    parts = [np.arange(segment.start, segment.stop)[::-1 if segment.reverse else 1] for segment in segments]
    return np.concatenate(parts).astype(np.int64)


def _render_whole(job: Job, engine: LipSyncEngine, reporter: Reporter, output: Output, feed: FrameFeed,
                  segments: list[Segment], features: Any, options: TaskOptions) -> int:
    """Renders whole frames decoded by `feed` (and closes it); commits the boxes it recorded on the way."""
    try:
        writer = output.writer()

        def write(_: int, frame: np.ndarray) -> None:
            _draw_overlays(frame, options)
            writer.write(frame)

        total = sum(len(segment) for segment in segments)
        faceless = output.encode(writer, lambda: _render_all(engine, reporter, feed.items(), write, total,
                                                             len(segments[0]), features), reporter)
    finally:
        feed.close()
    if feed.recorder is not None:
        feed.recorder.commit()
        AnalysisCache(job.config.paths.analysis_dir, job.config.media.analysis_cache_mb).evict(
            keep=feed.recorder.store.path)
    return faceless


def _render_all(engine: LipSyncEngine, reporter: Reporter, items: Iterator[tuple[int, np.ndarray, np.ndarray | None]],
                write: Callable[[int, np.ndarray], None], total: int, first_pass: int, features: Any) -> int:
    """Renders every output frame of `items` (index, frame, landmarks) into `write`; returns how many frames had
    no face. The first `first_pass` frames show each of the video's frames once: later ones replay them, so no face
    there means no face anywhere."""
    batch_frames = engine.frames_per_render()
    faces_in_first_pass = 0
    faceless = 0
    done = 0
    for batch in _batches(items, batch_frames):
        found = [points is not None for points in batch.landmarks]
        faceless += found.count(False)
        faces_in_first_pass += sum(hit for index, hit in zip(batch.indices, found, strict=True) if index < first_pass)
        rendered = engine.render(batch, features) if any(found) else batch.frames
        for index, frame in zip(batch.indices, rendered, strict=True):
            write(int(index), frame)
        done += len(rendered)
        if done >= first_pass and faces_in_first_pass == 0:
            raise InputError(NO_FACE_MESSAGE)
        reporter.progress(100.0 * done / total)
    return faceless


def _batches(items: Iterator[tuple[int, np.ndarray, np.ndarray | None]], size: int) -> Iterator[FrameBatch]:
    """Groups (index, frame, landmarks) items.

    The first batch is a quarter of the others so the encoder starts early instead of idling meanwhile.
    """
    batch: list[tuple[int, np.ndarray, np.ndarray | None]] = []
    wanted = max(1, size // 4)
    for item in items:
        batch.append(item)
        if len(batch) == wanted:
            yield _batch(batch)
            batch = []
            wanted = size
    if batch:
        yield _batch(batch)


def _batch(items: list[tuple[int, np.ndarray, np.ndarray | None]]) -> FrameBatch:
    return FrameBatch(indices=np.array([index for index, _, _ in items]), frames=[frame for _, frame, _ in items],
                      landmarks=[points for _, _, points in items])


class FrameFeed:
    """The output frames in order, with their landmarks, from a thread that decodes (and, without the video's
    analysis, tracks) ahead of the renderer: at most `ahead` frames wait in its queue, after the frames of `tail`.
    A `recorder` gets the frames as decoded too (heygem.pipeline.crops)."""

    def __init__(self, video: VideoInfo, size: tuple[int, int], segments: list[Segment], media: MediaConfig,
                 landmarks: list[np.ndarray | None] | None, tail: FrameTail, ahead: int,
                 recorder: CropRecorder | None = None) -> None:
        self.frames: queue.Queue[Any] = queue.Queue(maxsize=max(1, ahead))
        self.recorder = recorder
        self._stop = threading.Event()
        self._thread = threading.Thread(target=_produce, name="decode-track", daemon=True,
                                        args=(video, size, segments, media, self.frames, self._stop, landmarks, tail,
                                              recorder))
        self._thread.start()

    def items(self) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        """The producer's (index, frame, landmarks) items; re-raises the producer's failure here."""
        while True:
            item = self.frames.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def keep_ahead(self, frames: int) -> None:
        """From now on, at most `frames` more wait in the queue (those already there stay)."""
        with self.frames.mutex:
            self.frames.maxsize = max(1, frames)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _produce(video: VideoInfo, size: tuple[int, int], segments: list[Segment], media: MediaConfig,
             frames: queue.Queue[Any], stop: threading.Event, landmarks: list[np.ndarray | None] | None,
             tail: FrameTail, recorder: CropRecorder | None) -> None:
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
            for grid_index, compact in _segment_frames(reader, segment, chunk, tail):
                if recorder is not None:
                    recorder.add(grid_index, compact)
                frame = to_bgr(compact)
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
    """A segment's frames as decoded (VideoReader.compact_frames); backward ones are decoded chunk by chunk from
    the end, so memory stays bounded.

    A forward segment that reaches into the `tail` the analysis kept takes those frames from it instead of
    decoding them."""
    if not segment.reverse:
        kept = tail.start()
        decoded_until = segment.stop if kept is None else min(segment.stop, max(segment.start, kept))
        yield from reader.compact_frames(segment.start, decoded_until)
        for _ in range(decoded_until, segment.stop):
            grid_index, frame = tail.take()
            while grid_index < decoded_until:  # kept before the segment's start: not shown here
                grid_index, frame = tail.take()
            yield grid_index, frame
        return
    end = segment.stop
    while end > segment.start:
        begin = max(segment.start, end - chunk)
        yield from reversed(list(reader.compact_frames(begin, end)))
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
