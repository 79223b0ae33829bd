"""`python -m heygem tasks list|show CODE|cancel CODE`: ops commands on the task store, app running or not.

The supervisor's modules are imported inside the handlers: every command builds this parser, and `generate` would
otherwise pay for them at start-up (0.05-0.1 s of the CLI's imports).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import TYPE_CHECKING

from heygem.config import load_config

if TYPE_CHECKING:
    from heygem.supervisor.states import TaskRecord
    from heygem.supervisor.store import TaskStore


def register(subparsers: argparse._SubParsersAction) -> None:
    tasks = subparsers.add_parser("tasks", help="list, show or cancel tasks in the task store")
    actions = tasks.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="one line per task, newest first")
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(handler=list_tasks)
    show = actions.add_parser("show", help="one task as JSON")
    show.add_argument("code")
    show.set_defaults(handler=show_task)
    cancel = actions.add_parser("cancel", help="cancel a queued or running task")
    cancel.add_argument("code")
    cancel.set_defaults(handler=cancel_task)


def open_store(args: argparse.Namespace) -> TaskStore:
    from heygem.supervisor.store import TaskStore

    return TaskStore(load_config(args.config).paths.db_path)


def format_row(record: TaskRecord) -> str:
    created = datetime.fromtimestamp(record.created_at).strftime("%Y-%m-%d %H:%M:%S")
    detail = record.message or record.warning
    state = record.state.value
    return f"{record.code:<34} {created}  {state:<12} {record.progress:5.1f} %  {record.engine:<9} {detail}"


def list_tasks(args: argparse.Namespace) -> int:
    records = open_store(args).newest(args.limit)
    print(f"{'CODE':<34} {'CREATED':<19}  {'STATE':<12} {'PROGRESS':>7}  {'ENGINE':<9} MESSAGE")
    for record in records:
        print(format_row(record))
    return 0


def show_task(args: argparse.Namespace) -> int:
    print(json.dumps(open_store(args).require(args.code).to_dict(), indent=2))
    return 0


def cancel_task(args: argparse.Namespace) -> int:
    """The API's cancel: a running service's supervisor carries it out (heygem.supervisor.ops.cancel_task)."""
    from heygem.supervisor import ops

    record = ops.cancel_task(load_config(args.config), args.code)
    if record.state.is_final:
        print(f"task {record.code} {record.message}")
        return 0
    print(f"task {record.code}: cancel asked; the service has not carried it out yet ({record.state.value})",
          file=sys.stderr)
    return 1
