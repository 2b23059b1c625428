"""Processes a previous gateway left behind: recognised by pid and start time, and stopped."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import structlog

from egw.core.model import Task

log = structlog.get_logger("egw.providers.local")


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks (Linux), to recognise it after a restart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    return int(stat.rsplit(")", 1)[1].split()[19])


def kill_leftover(task: Task) -> None:
    """A task's process group may outlive a gateway killed with SIGKILL: stop it,
    but only if the pid still names the same process (same start time)."""
    pid, ticks = task.upstream.get("pid"), task.upstream.get("start_ticks")
    if not isinstance(pid, int) or ticks is None or start_ticks(pid) != ticks:
        return
    try:
        os.killpg(pid, signal.SIGKILL)
        log.info("leftover_killed", task_id=task.id, pid=pid)
    except (ProcessLookupError, PermissionError):
        pass
