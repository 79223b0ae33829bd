"""`python -m heygem tasks list|show CODE|cancel CODE`: ops commands on the task store, app running or not."""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime

from heygem.config import load_config
from heygem.errors import InputError, TaskNotFoundError
from heygem.supervisor.processes import kill_group
from heygem.supervisor.states import TaskRecord, TaskState
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
    return TaskStore(load_config(args.config).paths.db_path)


def find_task(store: TaskStore, code: str) -> TaskRecord:
    record = store.get(code)
    if record is None:
        raise TaskNotFoundError(f"no task with code {code!r}")
    return record


def format_row(record: TaskRecord) -> str:
    created = datetime.fromtimestamp(record.created_at).strftime("%Y-%m-%d %H:%M:%S")
    detail = record.message or record.warning
    state = record.state.value
    return f"{record.code:<34} {created}  {state:<12} {record.progress:5.1f} %  {record.engine:<9} {detail}"


def list_tasks(args: argparse.Namespace) -> int:
    records = open_store(args).list(args.limit)
    print(f"{'CODE':<34} {'CREATED':<19}  {'STATE':<12} {'PROGRESS':>7}  {'ENGINE':<9} MESSAGE")
    for record in records:
        print(format_row(record))
    return 0


def show_task(args: argparse.Namespace) -> int:
    print(json.dumps(find_task(open_store(args), args.code).to_dict(), indent=2))
    return 0


def cancel_task(args: argparse.Namespace) -> int:
    store = open_store(args)
    record = find_task(store, args.code)
    if record.state.is_final:
        raise InputError(f"task {args.code} has already ended ({record.state.value})")
    where = "while queued" if record.state is TaskState.QUEUED else f"during stage {record.stage}"
    store.update(args.code, TaskState.CANCELLED, message=f"cancelled from the command line {where}",
                 finished_at=time.time())
    if record.state.is_active and record.worker_pid:
        kill_group(record.worker_pid)
    print(f"task {args.code} cancelled")
    return 0
