"""Nomad's allocations, evaluations and job, mapped onto egw's task states (common.md)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any

from egw.core.model import Observation, TaskState

S = TaskState

TERMINAL_CLIENT = frozenset({"complete", "failed", "lost"})
#: the kill message Nomad gives a timed-out allocation: batch groups' ``max_run_duration``
#: shipped in 2.0.3, not 2.0.2 (hashicorp/nomad CHANGELOG.md)
MAX_RUN_EXCEEDED = "allocation exceeded max_run_duration"

#: an allocation's ClientStatus -> the egw state before refinement (common.md "Status values")
CLIENT_STATUS: Mapping[str, TaskState] = {
    "pending": S.QUEUED,
    "running": S.RUNNING,
    "unknown": S.RUNNING,  # the client is disconnected; the work may still run
    "complete": S.SUCCEEDED,
    "failed": S.FAILED,
    "lost": S.FAILED,
}
_FAILURE_EVENTS = {
    "Driver Failure": "DriverError",
    "Setup Failure": "SetupError",
    "Failed Validation": "ValidationError",
    "Failed Artifact Download": "DownloadError",
    "Sibling Task Failed": "FailedSibling",
}


#: the allocation fields egw reads (here, in `job_observation` and in the provider's log
#: followers); Nomad's allocation also carries its whole job, resources and metrics
ALLOC_FIELDS = (
    "ID",
    "Name",
    "NodeID",
    "PreviousAllocation",
    "NextAllocation",
    "FollowupEvalID",
    "ClientStatus",
    "ClientDescription",
    "DesiredStatus",
    "DesiredDescription",
    "CreateIndex",
    "ModifyIndex",
)
#: the task events egw reads (`task_started`, `_task_failure`, `alloc_observation`), and
#: their fields
_KEPT_EVENTS = frozenset(("Started", "Terminated", "Killing", "Killed", *_FAILURE_EVENTS))
_EVENT_FIELDS = ("Type", "DisplayMessage", "Message", *_FAILURE_EVENTS.values())


def kept_alloc(alloc: Mapping[str, Any]) -> dict[str, Any]:
    """What egw keeps of an allocation it follows: `ALLOC_FIELDS` and, of each task state,
    its ``State``, ``Failed`` and the events it reads. An allocation as the event stream
    sends it is several kilobytes, and egw keeps one per task in flight."""
    kept = {
        k: _shared(alloc[k]) if k in _REPEATED else alloc[k] for k in ALLOC_FIELDS if k in alloc
    }
    states = alloc.get("TaskStates")
    if isinstance(states, Mapping):
        kept["TaskStates"] = {
            name: {
                "State": _shared(ts.get("State")),
                "Failed": ts.get("Failed"),
                "Events": [_kept_event(e) for e in _events(ts) if e.get("Type") in _KEPT_EVENTS],
            }
            for name, ts in states.items()
            if isinstance(ts, Mapping)
        }
    return kept


#: fields whose values repeat in every allocation or evaluation ("running", "Tasks are running")
_REPEATED = frozenset(
    ("ClientStatus", "ClientDescription", "DesiredStatus", "DesiredDescription", "Status")
)


def _shared(value: Any) -> Any:
    """A short string as one shared copy (a decoded one is a copy of its own)."""
    return sys.intern(value) if isinstance(value, str) and len(value) <= 64 else value


#: the evaluation fields `job_observation` reads
EVAL_FIELDS = ("ID", "Status", "StatusDescription", "FailedTGAllocs", "CreateIndex", "ModifyIndex")


def kept_eval(evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """What egw keeps of an evaluation of a job it follows: `EVAL_FIELDS`."""
    return {
        k: _shared(evaluation[k]) if k in _REPEATED else evaluation[k]
        for k in EVAL_FIELDS
        if k in evaluation
    }


def _kept_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """Of a task event, what `_task_failure` reads: the exit of a ``Terminated`` one, the
    messages of a failure, the type alone of the others."""
    kind = _shared(event.get("Type"))
    if kind == "Terminated":
        return {"Type": kind, **{k: event[k] for k in ("ExitCode", "Signal") if k in event}}
    if kind in _FAILURE_EVENTS:
        return {k: event[k] for k in _EVENT_FIELDS if k in event}
    return {"Type": kind}


def _events(ts: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [e for e in ts.get("Events") or [] if isinstance(e, Mapping)]


def task_started(ts: Mapping[str, Any]) -> bool:
    """Whether a task state shows the task was started (so it may have written logs)."""
    return ts.get("State") == "running" or any(e.get("Type") == "Started" for e in _events(ts))


def _task_failure(name: str, ts: Mapping[str, Any]) -> tuple[str, int | None]:
    """Why a task failed, and its exit code if it ran."""
    exit_code: int | None = None
    why: str | None = None
    for ev in _events(ts):
        kind = ev.get("Type")
        if kind == "Terminated":
            exit_code = int(ev.get("ExitCode") or 0)
            signal = int(ev.get("Signal") or 0)
            why = f"task {name!r} exited with code {exit_code}" + (
                f" (signal {signal})" if signal else ""
            )
        elif kind in _FAILURE_EVENTS:
            detail = ev.get(_FAILURE_EVENTS[kind]) or ev.get("DisplayMessage") or ev.get("Message")
            why = f"task {name!r}: {kind}" + (f": {detail}" if detail else "")
    return why or f"task {name!r} failed", exit_code


def alloc_observation(alloc: Mapping[str, Any]) -> Observation:
    """The egw state one allocation shows (table `CLIENT_STATUS`, then refined).

    * stopped by Nomad (``DesiredStatus`` stop/evict) and its tasks killed -> cancelled
      (evicted -> failed: preempted);
    * complete with ``ClientDescription`` "allocation exceeded max_run_duration" -> timed_out;
    * failed -> the failing task's exit code or driver error; lost -> failed.
    """
    client = str(alloc.get("ClientStatus") or "pending")
    desired = str(alloc.get("DesiredStatus") or "run")
    states = alloc.get("TaskStates") or {}
    detail: dict[str, Any] = {
        "alloc_id": alloc.get("ID"),
        "client_status": client,
        "desired_status": desired,
        "node_id": alloc.get("NodeID") or None,
        "started": any(task_started(ts) for ts in states.values() if isinstance(ts, Mapping)),
    }
    state = CLIENT_STATUS.get(client, S.RUNNING)
    short = str(alloc.get("ID") or "")[:8]
    if state is S.QUEUED:
        return Observation(state=S.QUEUED, reason=f"allocation {short} pending", detail=detail)
    if state is S.RUNNING:
        return Observation(state=S.RUNNING, reason=f"allocation {short} {client}", detail=detail)
    killed = any(
        e.get("Type") in ("Killing", "Killed")
        for ts in states.values()
        if isinstance(ts, Mapping)
        for e in _events(ts)
    )
    description = str(alloc.get("ClientDescription") or "")
    if client == "lost":
        return Observation(
            state=S.FAILED,
            reason=f"allocation {short} lost: "
            f"{alloc.get('DesiredDescription') or description or 'node down'}",
            detail=detail,
        )
    # hashicorp/nomad: the server's batch timeout watcher stops the allocation with
    # structs.AllocTimeoutReasonMaxRunDuration as its DesiredDescription (ClientStatus
    # failed), the client reports it as ClientDescription (ClientStatus complete, as the
    # e2e test expects): either names a timeout. No Timeout/TimeoutReason field was found.
    if MAX_RUN_EXCEEDED in description or MAX_RUN_EXCEEDED in str(
        alloc.get("DesiredDescription") or ""
    ):
        return Observation(
            state=S.TIMED_OUT,
            reason=f"Nomad stopped allocation {short}: {MAX_RUN_EXCEEDED}",
            detail=detail,
        )
    if desired == "evict" and killed:
        return Observation(
            state=S.FAILED, reason=f"allocation {short} evicted (preempted)", detail=detail
        )
    if desired == "stop" and killed:
        why = alloc.get("DesiredDescription") or "stopped"
        return Observation(
            state=S.CANCELLED, reason=f"allocation {short} stopped: {why}", detail=detail
        )
    failed = [
        (n, ts) for n, ts in sorted(states.items()) if isinstance(ts, Mapping) and ts.get("Failed")
    ]
    if client == "failed" or failed:
        name, ts = failed[0] if failed else (next(iter(sorted(states)), "?"), {})
        why, code = _task_failure(name, ts)
        return Observation(state=S.FAILED, reason=why, exit_code=code, detail=detail)
    codes = [_task_failure(n, ts)[1] for n, ts in states.items() if isinstance(ts, Mapping)]
    code = next((c for c in codes if c is not None), 0)
    return Observation(
        state=S.SUCCEEDED, reason=f"allocation {short} complete", exit_code=code, detail=detail
    )


def describe_placement_failure(failed: Mapping[str, Any]) -> str:
    """A readable reason from an evaluation's ``FailedTGAllocs`` (allocations.md), in the
    words of ``nomad job status``."""
    parts: list[str] = []
    for group, metric in sorted(failed.items()):
        m = metric if isinstance(metric, Mapping) else {}
        bits: list[str] = []
        available = m.get("NodesAvailable") or {}
        if not m.get("NodesEvaluated"):
            if available and not any(available.values()):
                names = ", ".join(sorted(available))
                bits.append(f"no nodes are available in datacenter(s) {names}")
            else:
                bits.append("no nodes were eligible for evaluation")
        for cls, n in sorted((m.get("ClassFiltered") or {}).items()):
            bits.append(f"class {cls!r} filtered {n} node(s)")
        for constraint, n in sorted((m.get("ConstraintFiltered") or {}).items()):
            bits.append(f"constraint {constraint!r} filtered {n} node(s)")
        if m.get("NodesExhausted"):
            bits.append(f"resources exhausted on {m['NodesExhausted']} node(s)")
        for dim, n in sorted((m.get("DimensionExhausted") or {}).items()):
            bits.append(f"dimension {dim!r} exhausted on {n} node(s)")
        for quota in m.get("QuotaExhausted") or []:
            bits.append(f"quota limit hit {quota!r}")
        if m.get("CoalescedFailures"):
            bits.append(f"{m['CoalescedFailures']} more allocation(s) failed the same way")
        parts.append(f"task group {group!r}: " + "; ".join(bits or ["not placed"]))
    return "placement failed: " + " | ".join(parts)


def _index(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def job_observation(
    *,
    allocs: Iterable[Mapping[str, Any]],
    evals: Iterable[Mapping[str, Any]],
    since: int,
    expected: int,
    stopped: bool = False,
    gone: bool = False,
    cancel_requested: bool = False,
) -> Observation:
    """The task's state from everything known about its job.

    ``since`` is the ``JobModifyIndex`` of egw's registration; ``expected`` the number of
    allocations the job places; ``stopped``: the job was stopped (``Stop`` or
    ``JobDeregistered``); ``gone``: the job no longer exists (404). Placement failures are
    final for egw (the provider then stops the job, so a blocked evaluation never runs it
    later); allocations being rescheduled keep the task running.
    """
    latest: dict[str, Mapping[str, Any]] = {}
    seen: list[str] = []
    for alloc in allocs:
        if _index(alloc, "CreateIndex") <= since:
            continue
        seen.append(str(alloc.get("ID")))
        slot = str(alloc.get("Name") or alloc.get("ID"))
        if slot not in latest or _index(alloc, "CreateIndex") > _index(latest[slot], "CreateIndex"):
            latest[slot] = alloc
    slots = {slot: alloc_observation(a) for slot, a in sorted(latest.items())}
    for slot, obs in list(slots.items()):
        alloc = latest[slot]
        if obs.state is S.FAILED and (alloc.get("NextAllocation") or alloc.get("FollowupEvalID")):
            slots[slot] = Observation(
                state=S.RUNNING,
                reason=f"{obs.reason}; rescheduling",
                exit_code=obs.exit_code,
                detail={**obs.detail, "rescheduling": True},
            )
    placement: dict[str, Any] = {}
    eval_failure: Mapping[str, Any] | None = None
    for ev in evals:
        if _index(ev, "CreateIndex") < since:
            continue
        if ev.get("Status") == "failed":
            eval_failure = ev
        elif ev.get("Status") in ("complete", "blocked") and ev.get("FailedTGAllocs"):
            placement.update(ev["FailedTGAllocs"])
    started = any(o.detail.get("started") for o in slots.values())
    done = [o for o in slots.values() if o.state.terminal]
    live = [o for o in slots.values() if not o.state.terminal]
    base = {"allocations": sorted(seen), "started": started}

    if eval_failure is not None and not slots:
        return Observation(
            state=S.FAILED,
            reason="evaluation failed: "
            f"{eval_failure.get('StatusDescription') or 'scheduler error'}",
            detail={**base, "eval_id": eval_failure.get("ID")},
        )
    if placement and len(slots) < max(expected, 1):
        return Observation(
            state=S.FAILED,
            reason=describe_placement_failure(placement),
            detail={**base, "placement_failed": True, "failed_groups": sorted(placement)},
        )
    if slots and not live and (len(slots) >= expected or stopped or gone):
        for wanted in (S.FAILED, S.TIMED_OUT, S.CANCELLED, S.SUCCEEDED):
            match = [o for o in done if o.state is wanted]
            if match:
                first = match[0]
                reason = first.reason
                if wanted is S.CANCELLED and cancel_requested:
                    # Nomad's own words for the stop ("alloc not needed due to job update")
                    # describe its scheduler, not what happened: the task was cancelled
                    reason = (
                        f"cancelled: Nomad stopped allocation {str(first.detail['alloc_id'])[:8]}"
                    )
                return Observation(
                    state=wanted,
                    reason=reason,
                    exit_code=first.exit_code,
                    detail={**first.detail, **base},
                )
    if not slots and (stopped or gone):
        if gone and not stopped and not cancel_requested:
            return Observation(
                state=S.FAILED,
                detail=base,
                reason="the job no longer exists "
                "in Nomad (purged or garbage-collected); its outcome is unknown",
            )
        if gone and not stopped:
            return Observation(
                state=S.CANCELLED,
                detail=base,
                reason="cancelled; the job is no longer in Nomad (purged or garbage-collected)",
            )
        return Observation(
            state=S.CANCELLED, detail=base, reason="job stopped before an allocation was placed"
        )
    if stopped and live:
        return Observation(
            state=S.CANCELLING,
            detail=base,
            reason="job stopped in Nomad; waiting for its allocations to stop",
        )
    if any(o.state is S.RUNNING for o in live) or done:
        running = next((o for o in live if o.state is S.RUNNING), None)
        return Observation(
            state=S.RUNNING,
            detail={**base, "started": True},
            reason=running.reason if running else "allocations running",
        )
    if live:
        return Observation(state=S.QUEUED, reason=live[0].reason, detail=base)
    return Observation(state=S.QUEUED, reason="waiting for placement", detail=base)
