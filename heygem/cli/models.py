"""`python -m heygem models list|verify|fetch|convert-wav2lip`: the model files engines need."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from heygem.config import Config, load_config
from heygem.engines.models import (
    MODELS,
    ModelState,
    ModelStatus,
    check_model,
    fetch_model,
    get_spec,
    model_statuses,
    models_dir,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    models = subparsers.add_parser("models", help="list, verify, fetch or convert model files")
    actions = models.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="each registered model: present, missing or corrupt, and its path")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(handler=list_models)
    verify = actions.add_parser("verify", help="check sizes and checksums; exit 1 when a file is refused")
    verify.add_argument("names", nargs="*", help="models to check (default: every file present)")
    verify.set_defaults(handler=verify_models)
    fetch = actions.add_parser("fetch", help="download a model from its registered source")
    fetch.add_argument("name", choices=[spec.name for spec in MODELS])
    fetch.set_defaults(handler=fetch_command)
    convert = actions.add_parser("convert-wav2lip", help="convert an original Wav2Lip .pth checkpoint to ONNX")
    convert.add_argument("checkpoint", type=Path, help="wav2lip.pth or wav2lip_gan.pth")
    convert.add_argument("output", type=Path, help="the .onnx file to write (e.g. the models folder's)")
    convert.set_defaults(handler=convert_command)


def list_models(args: argparse.Namespace) -> int:
    from heygem.engines.registry import list_engines

    config = load_config(args.config)
    statuses = model_statuses(config)
    engines = list_engines(config)
    if args.json:
        print(json.dumps({"models_dir": str(models_dir(config)), "models": [s.to_dict() for s in statuses],
                          "engines": {name: dataclasses.asdict(a) for name, a in engines.items()}}, indent=2))
        return 0
    print(f"models folder: {models_dir(config)}  (set HEYGEM_MODELS__DIR to change it)")
    for status in statuses:
        print(format_status(status))
    print()
    for name, availability in engines.items():
        state = "available" if availability.available else "unavailable"
        print(f"engine {name:<10} {state}{': ' + availability.reason if availability.reason else ''}")
    return 0


def format_status(status: ModelStatus) -> str:
    spec = status.spec
    return (f"{spec.name:<16} {status.state.value:<10} {spec.engine:<8} {spec.size_bytes / 1e6:6.0f} MB  "
            f"{status.path}\n{'':<16} {status.detail}")


def verify_models(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    statuses = select_for_verify(config, args.names)
    if not statuses:
        print(f"no model files in {models_dir(config)}; `python -m heygem models list` shows where each goes")
        return 0
    for status in statuses:
        print(format_status(status))
        if status.sha256:
            print(f"{'':<16} sha256 {status.sha256}")
    refused = [s.spec.name for s in statuses if not s.usable]
    if refused:
        print(f"refused: {', '.join(refused)}", file=sys.stderr)
        return 1
    return 0


def select_for_verify(config: Config, names: list[str]) -> list[ModelStatus]:
    """Named models (missing ones included, as failures), or else every file that is present."""
    if names:
        return [check_model(get_spec(name), config, with_hash=True) for name in names]
    return [s for s in model_statuses(config, with_hash=True) if s.state is not ModelState.MISSING]


def fetch_command(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    status = fetch_model(get_spec(args.name), config, on_progress=print_progress)
    print(f"\n{format_status(status)}")
    return 0


def print_progress(done: int, total: int | None) -> None:
    share = f" ({done / total:.0%})" if total else ""
    print(f"\r{done / 1e6:8.1f} MB{share}", end="", file=sys.stderr, flush=True)


def convert_command(args: argparse.Namespace) -> int:
    # torch is only needed here; importing it lazily keeps every other command fast.
    from heygem.engines.wav2lip_torch import convert_checkpoint

    report = convert_checkpoint(args.checkpoint, args.output)
    step = f", trained {report.global_step:,} steps" if report.global_step is not None else ""
    print(f"wrote {report.onnx_path} ({report.parameters:,} parameters{step}); "
          f"max |onnx - torch| on a random batch: {report.max_abs_error:.2e}")
    return 0
