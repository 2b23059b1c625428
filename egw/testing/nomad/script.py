"""What the simulator shares: the scripting dataclass, Nomad's error, ids and wire copies."""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass
from typing import Any

NS = 1_000_000_000


class SimError(Exception):
    """A Nomad error answer: HTTP status and plain-text body (common.md)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


@dataclass
class Script:
    """What a job does when it runs (every time is in simulated seconds).

    ``stdout`` None means: print the task's args (or command) as one line, like ``echo``.
    """

    stdout: bytes | None = None
    stderr: bytes = b""
    exit_code: int = 0
    #: from the allocation running to the task's exit; output is spread over its first half
    duration_s: float = 1.0
    #: from the evaluation to the placement
    schedule_delay_s: float = 0.1
    #: from the placement to the task running (pulling the image)
    start_delay_s: float = 0.5
    #: "memory", "cpu", "datacenter" or "constraint": the scheduler cannot place the job
    placement_failure: str | None = None
    #: the driver cannot start the task (e.g. "image not found")
    driver_failure: str | None = None
    #: the node is lost this long after the task started
    lost_after_s: float | None = None
    #: exit code of the job's 1st, 2nd... allocation (the last one repeats); overrides exit_code
    exit_codes: tuple[int, ...] | None = None
    #: the task ignores the stop's interrupt: it keeps running this long (its job's
    #: ``kill_timeout``) before the client force-kills it. Nomad sends the kill signal
    #: (SIGINT by default), waits kill_timeout, then kills (Nomad docs, "Configure exit
    #: signals"; the client's Killing event: "Sent interrupt. Waiting 5s before force killing")
    kill_timeout_s: float = 0.0


def new_uuid() -> str:
    return str(uuid.uuid4())


def public(obj: dict[str, Any]) -> dict[str, Any]:
    """A deep copy without the simulator's private ``_`` keys (what goes on the wire)."""
    return {k: copy.deepcopy(v) for k, v in obj.items() if not k.startswith("_")}
