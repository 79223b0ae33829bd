"""Our own JSON API (/api/v1/*), the health check and the Prometheus metrics.

Unlike /easy/*, these answer with real HTTP status codes; errors are {"error": "<plain sentence>"}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, PlainTextResponse

from heygem.api.context import ConfigDep, SupervisorDep
from heygem.api.metrics import render_metrics
from heygem.api.served_files import OpenFileResponse
from heygem.api.tasks_view import task_json
from heygem.errors import InputError
from heygem.files import open_regular_file
from heygem.supervisor.states import TaskState

router = APIRouter(tags=["HeyGem studio"])
tasks = APIRouter(prefix="/api/v1/tasks")


@router.api_route("/healthz", methods=["GET", "HEAD"])  # HEAD: the probes that send it
def healthz(supervisor: SupervisorDep) -> JSONResponse:
    info = supervisor.system_info()
    return JSONResponse({"status": "ok", "version": info["version"], "backend": info["backend"],
                         "device": info["device"], "workers_busy": info["workers_busy"],
                         "max_workers": info["max_workers"], "queue_length": info["queue_length"],
                         "cluster": cluster_health(info["nodes"])})


def cluster_health(nodes: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ray backend's nodes, without their addresses: /healthz answers without credentials. None for local."""
    if not nodes:
        return None
    alive = [node for node in nodes if node["alive"]]
    return {"nodes_alive": len(alive), "nodes_lost": len(nodes) - len(alive),
            "nodes": [{key: value for key, value in node.items() if key not in ("address", "alive")}
                      for node in alive]}


@router.get("/metrics")
def metrics(supervisor: SupervisorDep) -> PlainTextResponse:
    return PlainTextResponse(render_metrics(supervisor), media_type="text/plain; version=0.0.4")


@tasks.get("")
def list_tasks(supervisor: SupervisorDep,
               config: ConfigDep,
               limit: Annotated[int | None, Query(ge=1)] = None) -> dict[str, Any]:
    records = supervisor.list_tasks(limit=min(limit or config.server.task_list_limit, config.server.task_list_limit))
    return {"tasks": [task_json(record) for record in records]}


@tasks.get("/{code}")
def get_task(code: str, supervisor: SupervisorDep) -> dict[str, Any]:
    return task_json(supervisor.status(code))


@tasks.get("/{code}/result")
def get_result(code: str, supervisor: SupervisorDep) -> OpenFileResponse:
    """The output video itself, for clients on another machine, opened before the answer (heygem.api.served_files)."""
    record = supervisor.status(code)
    result = record.result_path if record.state is TaskState.SUCCEEDED else None
    opened = open_regular_file(Path(result)) if result else None
    if opened is None:
        # A delete between the look-up and the open took the file: the task is gone, not resultless (404).
        record = supervisor.status(code)
        raise InputError(f"task {code} has no result (state: {record.state.value})")
    return OpenFileResponse(opened, media_type="video/mp4", filename=Path(str(result)).name)


@tasks.post("/{code}/cancel")
def cancel_task(code: str, supervisor: SupervisorDep) -> dict[str, Any]:
    return task_json(supervisor.cancel(code))


@tasks.post("/{code}/retry")
def retry_task(code: str, supervisor: SupervisorDep) -> dict[str, Any]:
    return task_json(supervisor.retry(code))


@tasks.delete("/{code}")
def delete_task(code: str, supervisor: SupervisorDep) -> dict[str, Any]:
    supervisor.delete(code)
    return {"deleted": code}


router.include_router(tasks)
