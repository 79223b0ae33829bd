"""The task supervisor: states, worker protocol, admission, and the TaskSupervisor that ties them."""

from heygem.supervisor.states import TaskRecord, TaskRequest, TaskState
from heygem.supervisor.supervisor import TaskSupervisor

__all__ = ["TaskRecord", "TaskRequest", "TaskState", "TaskSupervisor"]
