"""The exit codes of the client commands, and the errors that choose them.

A task's own exit code passes through (1-119); egw keeps 120 and above for its own
outcomes, as timeout(1) and ssh keep theirs, so that a script can tell "the task
said 3" from "egw could not ask". The README's exit-code table is this one.
"""

from __future__ import annotations

from typing import Any

OK = 0
USAGE = 120  # bad arguments, a local file or JSON the command could not read
REFUSED = 121  # the gateway answered with an error (4xx): unauthorized, not found, conflict...
UNREACHABLE = 122  # the gateway could not be reached, lost the connection, or failed (5xx)
TASK_FAILED = 123  # the task failed without an exit code of its own in 1-119
TIMED_OUT = 124  # the task timed out (timeout(1)'s code)
CANCELLED = 125  # the task was cancelled
CANCEL_FAILED = 126  # egw cancel: upstream refused the cancel, or never confirmed it
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
BROKEN_PIPE = 141  # the reader of our output went away (128 + SIGPIPE), quietly

#: the largest task exit code passed through as it is
TASK_CODE_MAX = 119


class CLIError(Exception):
    """A one-line error for stderr, with the exit code it ends the command with."""

    def __init__(self, message: str, code: int = USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def outcome(task: dict[str, Any]) -> int:
    """The exit code that tells a script how the task ended."""
    status = task["status"]
    if status == "succeeded":
        return OK
    if status == "timed_out":
        return TIMED_OUT
    if status == "cancelled":
        return CANCELLED
    code = task.get("exit_code")
    if isinstance(code, int) and 1 <= code <= TASK_CODE_MAX:
        return code
    return TASK_FAILED
