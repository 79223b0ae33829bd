"""The authoritative task record, in SQLite under data_dir: it survives restarts and any number of reads."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from heygem.errors import TaskNotFoundError, quote_input
from heygem.options import TaskOptions
from heygem.supervisor.states import (
    CANCELLABLE,
    Attempt,
    Operation,
    TaskRecord,
    TaskState,
    WorkerNode,
    can_transition,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    code TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    stage TEXT NOT NULL DEFAULT '',
    progress REAL NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    warning TEXT NOT NULL DEFAULT '',
    engine TEXT NOT NULL,
    audio_path TEXT NOT NULL,
    video_path TEXT NOT NULL,
    options TEXT NOT NULL DEFAULT '{}',
    result_path TEXT,
    shared_result_path TEXT,
    worker_pid INTEGER,
    created_at REAL NOT NULL,
    queued_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    updated_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    report TEXT NOT NULL DEFAULT '{}',
    node TEXT,
    version INTEGER NOT NULL DEFAULT 0,
    history TEXT NOT NULL DEFAULT '[]',
    audio_duration_s REAL,
    cancel_asked_at REAL,
    moving_since REAL,
    progress_when_moving REAL NOT NULL DEFAULT 0,
    progress_rose_at REAL
);
CREATE INDEX IF NOT EXISTS tasks_queue ON tasks (state, queued_at, seq);
"""
# Columns added after a release, with their definitions: a store written by an older version gains them at open.
_ADDED_COLUMNS = {"shared_result_path": "TEXT", "node": "TEXT", "version": "INTEGER NOT NULL DEFAULT 0",
                  "history": "TEXT NOT NULL DEFAULT '[]'", "audio_duration_s": "REAL",
                  "cancel_asked_at": "REAL", "moving_since": "REAL",
                  "progress_when_moving": "REAL NOT NULL DEFAULT 0", "progress_rose_at": "REAL"}
_COLUMNS = ("code", "state", "stage", "progress", "message", "warning", "engine", "audio_path", "video_path",
            "options", "result_path", "worker_pid", "created_at", "started_at", "finished_at", "updated_at",
            "attempts", "report", "shared_result_path", "node", "version", "history", "audio_duration_s",
            "cancel_asked_at", "moving_since", "progress_when_moving", "progress_rose_at")
# What a transition may write; the state itself comes from the operation's own argument.
_CHANGEABLE = frozenset({"stage", "progress", "message", "warning", "worker_pid", "started_at", "finished_at",
                         "attempts", "report", "queued_at", "node", "history", "cancel_asked_at",
                         "moving_since", "progress_when_moving", "progress_rose_at"})
# The fields of a transition, or a function that works them out from the record as it was.
Fields = Mapping[str, Any] | Callable[[TaskRecord], Mapping[str, Any]]


class TransitionError(Exception):
    """A change states.TRANSITIONS does not allow (e.g. a late update to a cancelled task)."""

    def __init__(self, code: str, operation: Operation, old: TaskState, new: TaskState) -> None:
        super().__init__(f"task {code}: {operation.value} cannot take it from {old.value} to {new.value}")
        self.code = code
        self.operation = operation
        self.old = old
        self.new = new


class TaskStore:
    """Thread-safe access to the task table. The ops CLI opens the same file from another process."""

    def __init__(self, db_path: Path) -> None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(db_path, check_same_thread=False, timeout=30, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """Migrate a store of an older version in place; in one transaction, so the ops CLI and the app opening
        the same old file at once cannot both add a column."""
        with self._transaction() as db:
            present = {row["name"] for row in db.execute("PRAGMA table_info(tasks)")}
            for name, definition in _ADDED_COLUMNS.items():
                if name not in present:
                    db.execute(f"ALTER TABLE tasks ADD COLUMN {name} {definition}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def insert(self, code: str, engine: str, audio_path: str, video_path: str, options: TaskOptions,
               result_path: str, message: str, shared_result_path: str | None = None,
               audio_duration_s: float | None = None) -> None:
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO tasks (code, state, engine, audio_path, video_path, options, result_path,"
                " shared_result_path, message, created_at, queued_at, updated_at, audio_duration_s)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (code, TaskState.QUEUED.value, engine, audio_path, video_path, json.dumps(options.to_json()),
                 result_path, shared_result_path, message, now, now, now, audio_duration_s))

    def exists(self, code: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM tasks WHERE code = ?", (code,)).fetchone() is not None

    def get(self, code: str) -> TaskRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM tasks WHERE code = ?", (code,)).fetchone()
            if row is None:
                return None
            return self._record(row, self._queue_position(row))

    def require(self, code: str) -> TaskRecord:
        record = self.get(code)
        if record is None:
            raise TaskNotFoundError(f"no task with code {quote_input(code)}")
        return record

    def newest(self, limit: int | None = None) -> list[TaskRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM tasks ORDER BY created_at DESC, seq DESC LIMIT ?",
                                    (-1 if limit is None else limit,)).fetchall()
            positions = {code: index + 1 for index, code in enumerate(self.queued_codes())}
            return [self._record(row, positions.get(row["code"])) for row in rows]

    def queued_codes(self) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT code FROM tasks WHERE state = ? ORDER BY queued_at, seq",
                                    (TaskState.QUEUED.value,)).fetchall()
            return [row["code"] for row in rows]

    def codes_in(self, *states: TaskState) -> list[str]:
        marks = ",".join("?" for _ in states)
        with self._lock:
            rows = self._db.execute(f"SELECT code FROM tasks WHERE state IN ({marks}) ORDER BY seq",
                                    [state.value for state in states]).fetchall()
            return [row["code"] for row in rows]

    def cancels_asked(self) -> list[str]:
        """Tasks not ended yet that another process asked to cancel (TaskLifecycle.ask_cancel)."""
        with self._lock:
            rows = self._db.execute("SELECT code FROM tasks WHERE cancel_asked_at IS NOT NULL AND state IN (?, ?, ?)"
                                    " ORDER BY seq", [state.value for state in CANCELLABLE]).fetchall()
            return [row["code"] for row in rows]

    def count_by_state(self) -> dict[TaskState, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) AS n FROM tasks GROUP BY state").fetchall()
        counts = dict.fromkeys(TaskState, 0)
        counts.update({TaskState(row["state"]): row["n"] for row in rows})
        return counts

    def transition(self, code: str, operation: Operation, state: TaskState | None, fields: Fields) -> TaskRecord:
        """Check the change against states.TRANSITIONS and write the state with its fields, in one transaction.

        `state` None keeps the task's state as it is in that transaction (still checked against the table).
        heygem.supervisor.lifecycle is the only caller: it names the operation and its whole set of fields.
        A write that changes nothing is not made; every other one raises the record's version by one.
        """
        with self._transaction() as db:
            row = db.execute("SELECT * FROM tasks WHERE code = ?", (code,)).fetchone()
            if row is None:
                raise TaskNotFoundError(f"no task with code {quote_input(code)}")
            old = self._record(row, None)
            state = old.state if state is None else state
            if not can_transition(operation, old.state, state):
                raise TransitionError(code, operation, old.state, state)
            values = dict(fields(old) if callable(fields) else fields)
            unknown = set(values) - _CHANGEABLE
            if unknown:
                raise ValueError(f"{operation.value} writes fields a transition may not change: {sorted(unknown)}")
            if state is old.state and "queued_at" not in values and all(
                    getattr(old, name) == value for name, value in values.items()):
                return self._record(row, self._queue_position(row))
            if "history" in values:
                values["history"] = json.dumps([attempt.to_json() for attempt in values["history"]])
            if "report" in values:
                values["report"] = json.dumps(values["report"])
            if "node" in values:
                values["node"] = json.dumps(values["node"].to_json()) if values["node"] else None
            values["state"] = state.value
            values["updated_at"] = time.time()
            values["version"] = old.version + 1
            assignments = ", ".join(f"{name} = ?" for name in values)
            db.execute(f"UPDATE tasks SET {assignments} WHERE code = ?", [*values.values(), code])
        return self.require(code)

    def delete(self, code: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM tasks WHERE code = ?", (code,))

    def _queue_position(self, row: sqlite3.Row) -> int | None:
        if row["state"] != TaskState.QUEUED.value:
            return None
        ahead = self._db.execute(
            "SELECT COUNT(*) FROM tasks WHERE state = ? AND (queued_at < ? OR (queued_at = ? AND seq < ?))",
            (TaskState.QUEUED.value, row["queued_at"], row["queued_at"], row["seq"])).fetchone()[0]
        return int(ahead) + 1

    @staticmethod
    def _record(row: sqlite3.Row, queue_position: int | None) -> TaskRecord:
        values = {name: row[name] for name in _COLUMNS}
        values["options"] = TaskOptions.from_json(json.loads(values["options"]))
        values["report"] = json.loads(values["report"])
        values["state"] = TaskState(values["state"])
        values["node"] = WorkerNode.from_json(json.loads(values["node"])) if values["node"] else None
        values["history"] = tuple(Attempt.from_json(attempt) for attempt in json.loads(values["history"]))
        return TaskRecord(queue_position=queue_position, **values)
