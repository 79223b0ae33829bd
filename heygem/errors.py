"""Errors a user sees. Each carries one plain sentence; the CLI prints it without a traceback."""


class HeyGemError(Exception):
    """An expected failure with a message meant for the user."""


class ConfigError(HeyGemError):
    """The configuration is invalid; the message names the key."""


class InputError(HeyGemError):
    """An input file or parameter is unusable; the message says which and why."""


class QueueFullError(HeyGemError):
    """The task queue holds queue_max tasks already."""


class StorageFullError(QueueFullError):
    """Free space in the data folder is below storage.min_free_mb: no new uploads until space is freed."""


class TaskNotFoundError(HeyGemError):
    """No task has this code."""


class EngineUnavailableError(HeyGemError):
    """The engine cannot run here (missing model file, missing package, no GPU); the message says why."""


# Messages quote what a caller sent; a value of any size must not come back whole (a 100 KB "code" would).
QUOTE_LIMIT = 60


def quote_input(value: object) -> str:
    """repr() of a caller's value for a message, cut to QUOTE_LIMIT characters with its full length noted."""
    text = repr(value)
    if len(text) <= QUOTE_LIMIT:
        return text
    length = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return f"{text[:QUOTE_LIMIT]}…{length}"


def one_line(text: str) -> str:
    """A multi-line text (ffmpeg's stderr holds one error per line) as one line: a task's message is one line."""
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())
