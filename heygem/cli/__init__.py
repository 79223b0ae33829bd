"""`heygem COMMAND` (or `python -m heygem COMMAND`): each concern registers its own subcommands from its own module."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from heygem.errors import HeyGemError

# Modules with register(subparsers); each sets `handler` (args -> exit code) on its parsers.
COMMAND_MODULES = (
    "heygem.cli.tasks",
    "heygem.cli.models",
    "heygem.cli.generate",
)


def build_parser() -> argparse.ArgumentParser:
    # `heygem` is the console script pip installs; `python -m heygem` runs the same from a checkout.
    prog = "heygem" if Path(sys.argv[0]).name == "heygem" else "python -m heygem"
    parser = argparse.ArgumentParser(prog=prog, description="HeyGem lip-sync studio")
    parser.add_argument("--config", help="YAML file with settings that override configs/default.yaml")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return _main(argv)[0]


def run() -> None:
    """The `heygem` command and `python -m heygem`: main(), then the process ends.

    A command whose parser sets `teardown=False` (a render: `generate`) ends without the interpreter's teardown
    once it succeeded: freeing every module (NumPy, OpenCV, PyAV, pydantic) takes 0.1-0.2 s of a 4 s render, and by
    then its result is renamed into place, its child processes waited for and its words printed (flushed here)."""
    code, teardown = _main(None)
    if not teardown:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _main(argv: Sequence[str] | None) -> tuple[int, bool]:
    """The exit code, and whether the process should still tear the interpreter down."""
    args = build_parser().parse_args(argv)
    try:
        code = int(args.handler(args) or 0)
    except HeyGemError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2, True
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130, True
    return code, code != 0 or getattr(args, "teardown", True)
