"""A task's processes: its process group, and those of its processes that left the group.

Every task runs in a session and process group of its own (its leader's pid is the
group's id), so one ``killpg`` reaches everything the command started, also after the
command itself has exited: a group id is not reused while any member lives. A task ends
only when its group is empty (`TaskProcesses.alive`), so a background child can neither
outlive a cancel nor keep a ``max_concurrent`` slot after its task ended.

A process may leave the group with ``setsid``/``setpgid``. Every task's processes inherit
``EGW_TASK_ID`` in their environment, so those are found in ``/proc`` by that marker
(`escapees`) and signalled one by one. Its value is the attempt's key (the task id, then
``<task id>.<attempt>`` after a resubmit: `egw.providers.base.attempt_key`), so what a
replaced attempt left is never taken for the new attempt's. That covers any process that
keeps the environment it was started with; one that clears it (``env -i``, a daemon that
re-executes itself with a fresh environment) and leaves the group is out of reach (README,
"Security model").

On Linux the gateway makes itself a child subreaper (`become_subreaper`): orphans of its
tasks are re-parented to the gateway instead of init, so the gateway reaps them (`reap`)
and an orphaned group member never lingers as a zombie the group would still count.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from pathlib import Path

import structlog

log = structlog.get_logger("egw.providers.local")

_PR_SET_CHILD_SUBREAPER = 36
#: reads of an empty environment before it counts as empty (1 ms apart; an exec takes less)
_ENVIRON_READS = 20


def become_subreaper() -> bool:
    """Linux: adopt the orphans of this process's descendants (idempotent)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        ok: int = libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        return False
    if ok != 0:
        log.warning("local_subreaper_refused", errno=ctypes.get_errno())
        return False
    return True


def escapees(key: str, pgid: int) -> list[int]:
    """The attempt's processes outside its group, found by ``EGW_TASK_ID=<key>`` in their
    environment (Linux ``/proc``; elsewhere none are found)."""
    marker = f"EGW_TASK_ID={key}".encode()
    found = []
    for pid in _pids():
        try:
            if marker not in _environ(pid).split(b"\0"):
                continue
            if os.getpgid(pid) != pgid:
                found.append(pid)
        except (OSError, ValueError):
            continue  # gone, or not ours to read
    return found


def marked() -> dict[str, list[int]]:
    """Every live process carrying an ``EGW_TASK_ID``, by its value (an attempt's key): at
    start, what the tasks of a gateway that died are still running (one look at ``/proc``
    for all of them)."""
    found: dict[str, list[int]] = {}
    for pid in _pids():
        try:
            for item in _environ(pid).split(b"\0"):
                if item.startswith(b"EGW_TASK_ID=") and alive(pid):
                    found.setdefault(item[12:].decode(errors="replace"), []).append(pid)
        except OSError:
            continue
    return found


def kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _pids() -> list[int]:
    try:
        return [int(e) for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return []


def _environ(pid: int) -> bytes:
    """A process's environment. It reads empty for an instant while the process executes a
    new program (``setsid`` becoming ``sleep``), so an empty one is read again while the
    process has a program at all (kernel threads and zombies have none)."""
    data = b""
    for _ in range(_ENVIRON_READS):
        data = Path(f"/proc/{pid}/environ").read_bytes()
        if data:
            return data
        os.readlink(f"/proc/{pid}/exe")  # OSError: no program, nothing to wait for
        time.sleep(0.001)
    return data


def reap(pids: list[int], pgid: int) -> None:
    """Collect the exit of those of the task's processes that are this process's
    children (orphans adopted as subreaper). Only called once the leader's own exit was
    collected by asyncio's child watcher, so that exit is never taken from it."""
    try:
        while os.waitpid(-pgid, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting for another parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return state != "Z"


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_all(pgid: int, key: str, sig: int) -> None:
    """Send ``sig`` to the group, then to each process that left it (looked for after the
    group is signalled, so that one leaving meanwhile is found)."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in escapees(key, pgid):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def remaining(pgid: int, key: str, known: list[int]) -> list[int] | None:
    """None once no process of the attempt is left; else those outside the group (maybe none).

    The group is checked before the others are looked for: a process that leaves the group
    after the check is found by the look, and none can join the group again from outside,
    so an empty group and an empty look mean that nothing is left."""
    reap(known, pgid)
    grouped = group_alive(pgid)
    strays = escapees(key, pgid)
    reap(strays, pgid)
    strays = [pid for pid in strays if alive(pid)]
    return strays if grouped or strays else None
