"""`generate`, `eval` and `demo`: the lip-sync pipeline in this process, without the task service.

Heavy modules (MediaPipe, OpenCV, PyAV) are imported inside the handlers, so other commands start fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from heygem.config import Config, load_config
from heygem.errors import InputError
from heygem.files import require_regular_file
from heygem.options import LOOP_MODES, MOUTH_INTENSITY, SPEECH_LANGUAGES, TaskOptions

DEMO_TEXT = ("Hello! I am a digital human, made by HeyGem on an ordinary computer. "
             "My lips follow every word I say, and when I pause, my mouth closes.")


class ConsoleReporter:
    """The engine Reporter for a terminal: stage names and a progress bar on stderr."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self._interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_shown = -1.0
        self._stages_shown: set[str] = set()

    def stage(self, name: str) -> None:
        self._end_line()
        # The job comes back to a stage it began in the background (the speech is analysed beside the video):
        # said twice alike, it would read as the work starting over.
        print(f"still {name}..." if name in self._stages_shown else f"{name}...", file=self.stream, flush=True)
        self._stages_shown.add(name)

    def progress(self, percent: float) -> None:
        if self._interactive:
            bar = "#" * int(percent / 5)
            print(f"\r  [{bar:<20}] {percent:5.1f}%", end="", file=self.stream, flush=True)
            self._last_shown = percent
        elif percent - self._last_shown >= 10 or percent >= 100:
            print(f"  {percent:.0f}%", file=self.stream, flush=True)
            self._last_shown = percent

    def error(self, message: str) -> None:
        self._end_line()
        print(f"problem: {message}", file=self.stream, flush=True)

    def clear_error(self) -> None:
        """Nothing to withdraw on a console: the line stays in the scrollback."""

    def warn(self, message: str) -> None:
        self._end_line()
        print(f"warning: {message}", file=self.stream, flush=True)

    def advance(self) -> None:
        """The console shows stages and percentages only."""

    def _end_line(self) -> None:
        if self._interactive and self._last_shown >= 0:
            print(file=self.stream)
            self._last_shown = -1.0


def register(subparsers: argparse._SubParsersAction) -> None:
    generate = subparsers.add_parser("generate", help="lip-sync a video to a speech recording, in this process")
    generate.add_argument("--audio", required=True, type=Path, help="speech: any audio file or a video's audio")
    generate.add_argument("--video", required=True, type=Path, help="a video of a person facing the camera")
    generate.add_argument("--out", required=True, type=Path, help="the result, an .mp4 file")
    generate.add_argument("--engine", help="engine name (default: the configured default, meshwarp)")
    # No argparse `choices` or range here: TaskOptions refuses a bad value with the message every way in gives.
    generate.add_argument("--loop-mode", metavar="{" + ",".join(LOOP_MODES) + "}",
                          help="when the audio is longer than the video (default from config: media.loop_mode)")
    generate.add_argument("--mouth-intensity", type=float, metavar=f"{MOUTH_INTENSITY.low:g}..{MOUTH_INTENSITY.high:g}",
                          help="how far the mouth opens, 1 natural (default from config: meshwarp.mouth_intensity)")
    generate.add_argument("--speech-language", metavar="{" + ",".join(SPEECH_LANGUAGES) + "}",
                          help="the speech's language: en reads English phones for the lips, other keeps only lip "
                               "closures (default from config: meshwarp.speech_language)")
    generate.add_argument("--ai-label", action=argparse.BooleanOptionalAction, default=None,
                          help="draw a small 'AI-generated' label")
    generate.add_argument("--watermark", action=argparse.BooleanOptionalAction, default=None,
                          help="draw a small 'HeyGem' watermark")
    generate.set_defaults(handler=run_generate, teardown=False)

    evaluate = subparsers.add_parser("eval", help="quality figures of a lip-synced video, as JSON")
    evaluate.add_argument("--video", required=True, type=Path, help="the lip-synced video")
    evaluate.add_argument("--audio", required=True, type=Path, help="the speech it was made from")
    evaluate.add_argument("--reference", type=Path, help="the input video, for PSNR outside the lower face")
    evaluate.set_defaults(handler=run_eval)

    demo = subparsers.add_parser("demo", help="render a lip-synced demo video into ./demo/")
    demo.add_argument("--out-dir", type=Path, default=Path("demo"), help="where to write (default ./demo)")
    demo.set_defaults(handler=run_demo)


def generate_video(config: Config, audio: Path, video: Path, out: Path, engine_name: str | None,
                   options: TaskOptions) -> dict[str, Any]:
    """Runs one job in this process with a console reporter; returns the engine's report."""
    from loguru import logger

    from heygem.engines.registry import DEFAULT_ENGINE, recognise_phones_ahead, resolve_engine
    from heygem.errors import EngineUnavailableError
    from heygem.pipeline.engine import Job

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    for path, kind in ((audio, "audio"), (video, "video")):
        require_regular_file(path, f"{kind} file", str(path))
    if out.suffix.lower() != ".mp4":
        raise InputError(f"the output must be an .mp4 file, got {out.name}")
    recognise_phones_ahead(engine_name or DEFAULT_ENGINE, audio.resolve(), config)
    engine_cls = resolve_engine(engine_name or DEFAULT_ENGINE)
    options = engine_cls.accept_options(options).resolve(config.option_defaults)
    availability = engine_cls.availability(config)
    if not availability.available:
        raise EngineUnavailableError(f"engine {engine_cls.name!r} cannot run here: {availability.reason}")
    reporter = ConsoleReporter()
    engine = engine_cls(config)
    engine.load(reporter)
    with tempfile.TemporaryDirectory(prefix="heygem-") as work_dir:
        job = Job(code=f"cli-{time.strftime('%Y%m%d-%H%M%S')}", audio_path=audio.resolve(),
                  video_path=video.resolve(), result_path=out.resolve(), work_dir=Path(work_dir),
                  options=options, config=config)
        return engine.run(job, reporter)


def run_generate(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    options = TaskOptions(**{name: getattr(args, name) for name in TaskOptions.names()})
    report = generate_video(config, args.audio, args.video, args.out, args.engine, options)
    reused = ", the video's analysis from the cache" if report.get("video_analysis") == "cached" else ""
    if report.get("render_box", {}).get("frames") == "cached":
        reused += " and only its mouth's box rendered"
    print(f"done: {report['frames']} frames, {report['duration']:.2f} s in {report['wall_s']:.2f} s "
          f"({report['frames_without_face']} without a face{reused})", file=sys.stderr)
    print(args.out)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from loguru import logger

    from heygem.pipeline.evaluate import evaluate

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    config = load_config(args.config)
    print(json.dumps(evaluate(args.video, args.audio, args.reference, config), indent=2))
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from heygem.pipeline import samples

    config = load_config(args.config)
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    speech = out_dir / "demo_speech.wav"
    if samples.espeak_speech(DEMO_TEXT, speech):
        source = "espeak-ng"
    else:
        samples.write_wav(speech, samples.speech_like_audio(6.0, breath_at=2.8))
        source = "synthetic speech-like audio (espeak-ng not installed)"
    fps = 25.0
    portrait = samples.write_video(out_dir / "demo_portrait.mp4", samples.moving_portrait_frames(int(4 * fps), fps),
                                   (512, 512), fps)
    print(f"demo inputs: {portrait} and {speech} ({source})", file=sys.stderr)
    result = out_dir / "heygem_demo.mp4"
    generate_video(config, speech, portrait, result, None, TaskOptions(ai_label=True))
    print(result.resolve())
    return 0
