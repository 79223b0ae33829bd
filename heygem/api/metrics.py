"""GET /metrics in the Prometheus text exposition format (version 0.0.4), written by hand: it is a few gauges."""

from __future__ import annotations

from collections.abc import Iterable

from heygem.supervisor import TaskSupervisor
from heygem.supervisor.states import TaskState

GIB = 1024**3


def render_metrics(supervisor: TaskSupervisor) -> str:
    info = supervisor.system_info()
    lines: list[str] = []
    gauge(lines, "heygem_tasks", "Tasks in the store, by state.",
          ((f'state="{state.value}"', info["tasks_by_state"].get(state.value, 0)) for state in TaskState))
    gauge(lines, "heygem_queue_length", "Tasks waiting for a worker.", [("", info["queue_length"])])
    gauge(lines, "heygem_workers_busy", "Workers running a task.", [("", info["workers_busy"])])
    gauge(lines, "heygem_workers_max", "Workers that may run at once (supervisor.max_workers).",
          [("", info["max_workers"])])
    for name, key, help_text in (("total", "memory_total_gb", "Memory of each GPU."),
                                 ("used", "memory_used_gb", "GPU memory in use (all processes)."),
                                 ("free", "memory_free_gb", "GPU memory free.")):
        gauge(lines, f"heygem_gpu_memory_{name}_bytes", help_text,
              ((gpu_labels(gpu), round(gpu[key] * GIB)) for gpu in info["gpus"]))
    nodes = [node for node in info["nodes"] if node["alive"]]
    if info["nodes"]:  # the ray backend
        gauge(lines, "heygem_cluster_nodes_alive", "Ray nodes alive.", [("", len(nodes))])
        for key, help_text in (("cpus", "CPUs of each alive Ray node."),
                               ("cpus_free", "CPUs free on each alive Ray node."),
                               ("gpus", "GPUs of each alive Ray node."),
                               ("gpus_free", "GPUs (and shares of one) free on each alive Ray node."),
                               ("tasks", "This server's tasks running on each alive Ray node.")):
            gauge(lines, f"heygem_node_{key}", help_text, ((node_labels(node), node[key]) for node in nodes))
        gauge(lines, "heygem_node_memory_bytes", "Ray's schedulable memory of each alive Ray node.",
              ((node_labels(node), round(node["memory_gb"] * GIB)) for node in nodes))
    gauge(lines, "heygem_info", "Version of this server and where its workers run.",
          [(f'version="{escape(info["version"])}",backend="{info["backend"]}"', 1)])
    return "\n".join(lines) + "\n"


def gauge(lines: list[str], name: str, help_text: str, samples: Iterable[tuple[str, float]]) -> None:
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    lines += [f"{name}{{{labels}}} {value}" if labels else f"{name} {value}" for labels, value in samples]


def node_labels(node: dict) -> str:
    head = "true" if node["head"] else "false"
    return f'node="{escape(node["id"][:12])}",address="{escape(node["address"])}",head="{head}"'


def gpu_labels(gpu: dict) -> str:
    return f'gpu="{gpu["index"]}",name="{escape(str(gpu["name"]))}"'


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
