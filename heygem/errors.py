"""Errors a user sees. Each carries one plain sentence; the CLI prints it without a traceback."""


class HeyGemError(Exception):
    """An expected failure with a message meant for the user."""


class ConfigError(HeyGemError):
    """The configuration is invalid; the message names the key."""


class InputError(HeyGemError):
    """An input file or parameter is unusable; the message says which and why."""


class QueueFullError(HeyGemError):
    """The task queue holds queue_max tasks already."""


class TaskNotFoundError(HeyGemError):
    """No task has this code."""


class EngineUnavailableError(HeyGemError):
    """The engine cannot run here (missing model file, missing package, no GPU); the message says why."""
