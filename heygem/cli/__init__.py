"""`heygem COMMAND` (or `python -m heygem COMMAND`): each concern registers its own subcommands from its own module."""

from __future__ import annotations

import argparse
import importlib
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
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except HeyGemError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
