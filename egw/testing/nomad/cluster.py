"""The simulated Nomad cluster: jobs, evaluations, allocations, task logs and the event buffer.

Theory of operation
-------------------
One raft index counter orders everything. Every change is one "raft operation": it bumps
the index, stamps the objects it touches (``ModifyIndex``) and publishes their events at that
index, typed after the operation as Nomad does (event-stream.md; nomad/state/events.go):
a register publishes ``JobRegistered`` for the job *and* its evaluation, a plan
``PlanResult`` for the allocations, a client update ``AllocationUpdated``.

A registration starts an evaluation; after ``schedule_delay_s`` the "scheduler" places one
allocation per ``Count`` (or fails placement: ``FailedTGAllocs`` and a blocked evaluation),
and the client node (`egw.testing.nomad.client`) runs it. A stop marks live allocations
``DesiredStatus: stop`` and the client kills them.
All delays are simulated seconds, multiplied by ``time_scale`` to get wall-clock seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from typing import Any

from egw.testing.nomad.client import Client
from egw.testing.nomad.logs import TaskLog
from egw.testing.nomad.script import NS, Script, SimError, new_uuid, public


class Cluster:
    """A one-node Nomad cluster in memory (node ``sim-node-1`` in datacenter ``dc1``)."""

    def __init__(
        self,
        *,
        time_scale: float = 1.0,
        buffer_size: int = 100,
        datacenter: str = "dc1",
        cpu: int = 4000,
        memory_mb: int = 8192,
    ) -> None:
        self.time_scale = time_scale
        self.buffer_size = buffer_size
        self.index = 1
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.evals: dict[str, dict[str, Any]] = {}
        self.allocs: dict[str, dict[str, Any]] = {}
        #: (alloc id, task, "stdout"|"stderr") -> the stream's log files, rotated
        self.logs: dict[tuple[str, str, str], TaskLog] = {}
        #: table -> the last raft index that wrote it (``state.Index("jobs")``...): the
        #: ``X-Nomad-Index`` of a list over the whole table
        self.table_index: dict[str, int] = {}
        #: (raft index, events) still buffered for /v1/event/stream, oldest first
        self.buffer: list[tuple[int, list[dict[str, Any]]]] = []
        #: the highest index dropped from the buffer (a subscriber behind it has a gap)
        self.dropped_upto = 0
        self.scripts: dict[str, Script] = {}
        #: a group's ``MaxRunDuration`` is honoured (Nomad 2.0.3 on; before, an unknown field)
        self.max_run_duration = True
        self.default_script = Script()
        self.node: dict[str, Any] = {
            "ID": new_uuid(),
            "Name": "sim-node-1",
            "Datacenter": datacenter,
            "CPU": cpu,
            "MemoryMB": memory_mb,
        }
        self.changed = asyncio.Condition()
        self.kill_events: dict[str, asyncio.Event] = {}
        self.client = Client(self)
        self._tasks: set[asyncio.Task[None]] = set()
        self._epoch = time.time()
        self._t0 = time.monotonic()

    # --- time and bookkeeping -------------------------------------------------------------

    def now_ns(self) -> int:
        """Simulated wall-clock time in Unix nanoseconds."""
        return int((self._epoch + (time.monotonic() - self._t0) / self.time_scale) * NS)

    def now_rfc3339(self) -> str:
        ns = self.now_ns()
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // NS)) + f".{ns % NS:09d}Z"

    async def sleep(self, sim_s: float) -> None:
        await asyncio.sleep(max(0.0, sim_s) * self.time_scale)

    def spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def commit(self, kind: str, objects: list[tuple[str, dict[str, Any]]]) -> int:
        """One raft operation: stamp the objects with a new index and publish their events."""
        self.index += 1
        index = self.index
        events = []
        for topic, obj in objects:
            table = {"Job": "jobs", "Evaluation": "evals", "Allocation": "allocs"}.get(topic, topic)
            self.table_index[table] = index
            if not obj.get("_deleted"):
                obj["ModifyIndex"] = index
            if topic == "Allocation":
                obj["AllocModifyIndex"] = index
                obj["ModifyTime"] = self.now_ns()
                payload: dict[str, Any] = {"Allocation": {**public(obj), "Job": None}}
                keys: list[str] | None = [obj["JobID"], obj.get("DeploymentID") or ""]
                key = obj["ID"]
            elif topic == "Evaluation":
                obj["ModifyTime"] = self.now_ns()
                payload = {"Evaluation": public(obj)}
                keys = [obj["JobID"], obj.get("DeploymentID") or ""]
                key = obj["ID"]
            elif obj.get("_deleted"):
                payload = {"Job": public(obj), "Deleted": True}  # as it was: not stamped
                keys = None
                key = obj["ID"]
            else:
                payload = {"Job": public(obj)}
                keys = None
                key = obj["ID"]
            # keys in Nomad's order (nomad/structs/event.go, type Event)
            events.append(
                {
                    "Topic": topic,
                    "Type": kind,
                    "Key": key,
                    "Namespace": obj.get("Namespace", ""),
                    "FilterKeys": keys,
                    "Index": index,
                    "Payload": payload,
                }
            )
        self.buffer.append((index, events))
        while len(self.buffer) > self.buffer_size:
            self.dropped_upto = self.buffer.pop(0)[0]
        await self.notify()
        return index

    def age_out(self, keep: int = 0) -> None:
        """Forget all but the newest ``keep`` buffered event batches."""
        while len(self.buffer) > keep:
            self.dropped_upto = self.buffer.pop(0)[0]

    # --- jobs --------------------------------------------------------------------------------

    def job(self, namespace: str, job_id: str) -> dict[str, Any]:
        job = self.jobs.get((namespace, job_id))
        if job is None:
            raise SimError(404, "job not found")
        return job

    def allocs_index(self) -> int:
        """The last raft index that touched the allocations table (``state.Index("allocs")``):
        the ``X-Nomad-Index`` of every allocation list, whichever job it is filtered to."""
        return max((a["ModifyIndex"] for a in self.allocs.values()), default=1)

    def job_allocs(self, namespace: str, job_id: str) -> list[dict[str, Any]]:
        job = self.jobs.get((namespace, job_id))
        return sorted(
            (
                a
                for a in self.allocs.values()
                if a["Namespace"] == namespace
                and a["JobID"] == job_id
                and (job is None or a["_job_create_index"] == job["CreateIndex"])
            ),
            key=lambda a: a["CreateIndex"],
        )

    async def register(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/jobs`` (jobs.md "Create Job"), with ``EnforceIndex`` check-and-set."""
        job = body.get("Job")
        if not isinstance(job, dict):
            raise SimError(400, "Job must be specified")
        job = copy.deepcopy(job)
        ns: str = job.get("Namespace") or namespace
        job_id: str = job.get("ID") or ""
        problems = []
        if not job_id:
            problems.append("Missing job ID")
        elif " " in job_id:
            problems.append("Job ID contains a space")
        if job.get("Type", "service") not in ("service", "batch", "system", "sysbatch"):
            problems.append(f"Invalid job type: {job.get('Type')!r}")
        if not job.get("Datacenters"):
            # canonicalisation fills it before validation (hashicorp/nomad api/jobs.go
            # Job.Canonicalize and nomad/structs Job.Canonicalize: DefaultDatacenters ["*"])
            job["Datacenters"] = ["*"]
        if not job.get("TaskGroups"):
            problems.append("Missing job task groups")
        if problems:
            raise SimError(
                500,
                f"{len(problems)} error occurred:\n"
                + "".join(f"\t* {p}\n" for p in problems)
                + "\n",
            )
        existing = self.jobs.get((ns, job_id))
        if body.get("EnforceIndex"):
            # nomad/job_endpoint.go Register: these answers are HTTP 500
            jmi = int(body.get("JobModifyIndex") or 0)
            if existing is not None and jmi == 0:
                raise SimError(500, "Enforcing job modify index 0: job already exists")
            if existing is not None and jmi != existing["JobModifyIndex"]:
                raise SimError(
                    500,
                    f"Enforcing job modify index {jmi}: job exists with "
                    f"conflicting job modify index: {existing['JobModifyIndex']}",
                )
            if existing is None and jmi != 0:
                raise SimError(500, f"Enforcing job modify index {jmi}: job does not exist")
        # a change of Meta counts too: hashicorp/nomad scheduler/util.go ``tasksUpdated``
        # compares ``CombinedTaskMeta`` (job, group and task meta), so a new egw_task_id (a
        # resubmitted attempt) is a destructive update: the live allocations of the previous
        # version are stopped below and new ones placed, never updated in place
        spec_keys = ("TaskGroups", "Meta", "Datacenters", "Type", "Priority", "Constraints")
        changed = (
            existing is None
            or existing.get("Stop")
            or any(existing.get(k) != job.get(k) for k in spec_keys)
        )
        for key, default in (
            ("AllAtOnce", False),
            ("NodePool", "default"),
            ("Constraints", None),
            ("Affinities", None),
            ("Spreads", None),
            ("Update", None),
            ("Periodic", None),
            ("ParameterizedJob", None),
            ("Payload", None),
            ("Meta", None),
            ("Multiregion", None),
            ("Dispatched", False),
        ):
            if job.get(key) is None:
                job[key] = default
        job.update(
            {
                "Namespace": ns,
                "Region": job.get("Region") or "global",
                "Name": job.get("Name") or job_id,
                "Type": job.get("Type") or "service",
                "Priority": job.get("Priority") or 50,
                "Stop": False,
                "Status": "pending",
                "StatusDescription": "",
                "ParentID": job.get("ParentID") or "",
                "SubmitTime": self.now_ns(),
                "Stable": False,
            }
        )
        for group in job["TaskGroups"]:
            group.setdefault("Count", 1)
        job["CreateIndex"] = existing["CreateIndex"] if existing else self.index + 1
        job["Version"] = (existing["Version"] + (1 if changed else 0)) if existing else 0
        job["JobModifyIndex"] = (
            self.index + 1 if changed or existing is None else existing["JobModifyIndex"]
        )
        self.jobs[(ns, job_id)] = job
        ev = self.new_eval(job, "job-register")
        index = await self.commit("JobRegistered", [("Job", job), ("Evaluation", ev)])
        self.spawn(self._schedule(job, ev, stop_old=True))
        return {
            "EvalID": ev["ID"],
            "EvalCreateIndex": index,
            "JobModifyIndex": job["JobModifyIndex"],
            "Warnings": "",
            "Index": index,
            "LastContact": 0,
            "KnownLeader": True,
        }

    async def deregister(self, namespace: str, job_id: str, *, purge: bool) -> dict[str, Any]:
        """``DELETE /v1/job/:job_id`` (jobs.md "Stop a Job").

        A job that does not exist (never registered, purged, garbage-collected) is not an
        error: hashicorp/nomad nomad/job_endpoint.go ``Deregister`` does ``if job == nil {
        return nil }`` before any raft apply (the same from v1.6.0 to v2.0.5), so the answer
        is 200 with the reply's zero values: ``EvalID`` "" and ``JobModifyIndex`` 0.
        """
        job = self.jobs.get((namespace, job_id))
        if job is None:
            return {"EvalID": "", "EvalCreateIndex": 0, "JobModifyIndex": 0}
        if purge:
            # the job is deleted, not updated: its JobDeregistered event carries the job as it
            # was, plus "Deleted": true (nomad/state/events.go, as reviewed for v1.6.0 to
            # v2.0.5; the stored copy of that file we could read predates the field)
            del self.jobs[(namespace, job_id)]
            ev = self.new_eval(job, "job-deregister")
            index = await self.commit(
                "JobDeregistered", [("Job", {**job, "_deleted": True}), ("Evaluation", ev)]
            )
            job["Stop"] = True  # what the scheduler below acts on (the job is gone)
            self.spawn(self._schedule(job, ev, stop_old=True))
            return {"EvalID": ev["ID"], "EvalCreateIndex": index, "JobModifyIndex": index}
        job["Stop"] = True
        job["Version"] += 1
        job["JobModifyIndex"] = self.index + 1
        ev = self.new_eval(job, "job-deregister")
        index = await self.commit("JobDeregistered", [("Job", job), ("Evaluation", ev)])
        self.spawn(self._schedule(job, ev, stop_old=True))
        return {
            "EvalID": ev["ID"],
            "EvalCreateIndex": index,
            "JobModifyIndex": job["JobModifyIndex"],
        }

    def garbage_collect(self, namespace: str, job_id: str) -> None:
        """Forget the job, its evaluations and allocations, as Nomad's core GC does
        (hashicorp/nomad nomad/core_sched.go, ``jobReap`` and ``evalReap``). Nothing is
        published here: it models a subscriber that was away, or whose buffer aged the GC's
        events out, and finds the job gone."""
        self.jobs.pop((namespace, job_id), None)
        for table in (self.evals, self.allocs):
            for key, obj in list(table.items()):
                if obj["Namespace"] == namespace and obj["JobID"] == job_id:
                    del table[key]
                    if table is self.allocs:
                        # Nomad reaps only terminal allocations; one still running here
                        # stops quietly (the client reports nothing for it)
                        obj["_reaped"] = True
                        self.kill_events[key].set()

    def new_eval(self, job: dict[str, Any], trigger: str) -> dict[str, Any]:
        ev = {
            "ID": new_uuid(),
            "Namespace": job["Namespace"],
            "Priority": job["Priority"],
            "Type": job["Type"],
            "TriggeredBy": trigger,
            "JobID": job["ID"],
            "JobModifyIndex": job["JobModifyIndex"],
            "Status": "pending",
            "StatusDescription": "",
            "DeploymentID": "",
            "NodeID": "",
            "NextEval": "",
            "PreviousEval": "",
            "BlockedEval": "",
            "FailedTGAllocs": None,
            "CreateIndex": self.index + 1,
            "CreateTime": self.now_ns(),
            "SnapshotIndex": self.index,
        }
        self.evals[ev["ID"]] = ev
        return ev

    # --- the scheduler -------------------------------------------------------------------------

    def script_for(self, job: dict[str, Any]) -> Script:
        return self.scripts.get(job["ID"], self.default_script)

    async def _schedule(self, job: dict[str, Any], ev: dict[str, Any], *, stop_old: bool) -> None:
        script = self.script_for(job)
        await self.sleep(script.schedule_delay_s)
        allocs = self.job_allocs(job["Namespace"], job["ID"])
        live = [
            a
            for a in allocs
            if a["DesiredStatus"] == "run"
            and a["ClientStatus"] not in ("complete", "failed", "lost")
        ]
        stale = [a for a in live if job.get("Stop") or a["JobVersion"] != job["Version"]]
        if stop_old and stale:
            for alloc in stale:
                alloc["DesiredStatus"] = "stop"
                alloc["DesiredDescription"] = "alloc not needed due to job update"
            await self.commit("PlanResult", [("Allocation", a) for a in stale])
            for alloc in stale:
                self.kill_events[alloc["ID"]].set()
        # a batch job's allocations of its current version, even finished ones, are kept:
        # re-registering an unchanged job runs nothing (a stop or a change makes a new version)
        current = [a for a in allocs if a["JobVersion"] == job["Version"]]
        if job.get("Stop") or current:
            if job.get("Stop") and not stale:
                job["Status"] = "dead"
            ev["Status"] = "complete"
            await self.commit("EvaluationUpdated", [("Evaluation", ev)])
            return
        failures = {g["Name"]: self._placement_metric(job, g, script) for g in job["TaskGroups"]}
        failures = {name: m for name, m in failures.items() if m is not None}
        if failures:
            blocked = self.new_eval(job, "queued-allocs")
            blocked.update(
                Status="blocked",
                PreviousEval=ev["ID"],
                StatusDescription="created to place remaining allocations",
                FailedTGAllocs=copy.deepcopy(failures),
            )
            ev.update(Status="complete", BlockedEval=blocked["ID"], FailedTGAllocs=failures)
            job["Status"] = "pending"
            await self.commit("EvaluationUpdated", [("Evaluation", ev), ("Evaluation", blocked)])
            return
        created = []
        for group in job["TaskGroups"]:
            for i in range(int(group.get("Count", 1))):
                created.append(self.new_alloc(job, group, ev, i))
        if created:
            await self.commit("PlanResult", [("Allocation", a) for a in created])
        ev["Status"] = "complete"
        job["Status"] = "running" if created else "dead"
        await self.commit("EvaluationUpdated", [("Evaluation", ev)])
        for alloc in created:
            self.spawn(self.client.run_alloc(job, alloc, script))

    def _placement_metric(
        self, job: dict[str, Any], group: dict[str, Any], script: Script
    ) -> dict[str, Any] | None:
        cpu = sum(int((t.get("Resources") or {}).get("CPU") or 100) for t in group["Tasks"])
        mem = sum(int((t.get("Resources") or {}).get("MemoryMB") or 300) for t in group["Tasks"])
        dc = self.node["Datacenter"]
        metric: dict[str, Any] = {
            "NodesEvaluated": 1,
            "NodesFiltered": 0,
            "NodesInPool": 1,
            "NodesAvailable": {dc: 1},
            "ClassFiltered": None,
            "ConstraintFiltered": None,
            "NodesExhausted": 0,
            "ClassExhausted": None,
            "DimensionExhausted": None,
            "QuotaExhausted": None,
            "ResourcesExhausted": None,
            "ScoreMetaData": None,
            "Scores": None,
            "AllocationTime": 4111,
            "CoalescedFailures": max(0, int(group.get("Count", 1)) - 1),
        }
        wanted = script.placement_failure
        dcs = job.get("Datacenters") or []
        if wanted == "datacenter" or not any(d in ("*", dc) for d in dcs):
            metric.update(NodesEvaluated=0, NodesInPool=0, NodesAvailable=dict.fromkeys(dcs, 0))
            return metric
        if wanted == "constraint":
            metric.update(NodesFiltered=1, ConstraintFiltered={"${attr.kernel.name} = windows": 1})
            return metric
        if wanted in ("memory", "cpu") or mem > self.node["MemoryMB"] or cpu > self.node["CPU"]:
            dim = wanted or ("memory" if mem > self.node["MemoryMB"] else "cpu")
            metric.update(NodesExhausted=1, DimensionExhausted={dim: 1})
            return metric
        return None

    def new_alloc(
        self, job: dict[str, Any], group: dict[str, Any], ev: dict[str, Any], i: int
    ) -> dict[str, Any]:
        alloc = {
            "ID": new_uuid(),
            "EvalID": ev["ID"],
            "Name": f"{job['ID']}.{group['Name']}[{i}]",
            "Namespace": job["Namespace"],
            "NodeID": self.node["ID"],
            "NodeName": self.node["Name"],
            "JobID": job["ID"],
            "JobType": job["Type"],
            "JobVersion": job["Version"],
            "_job_create_index": job["CreateIndex"],
            "TaskGroup": group["Name"],
            "DesiredStatus": "run",
            "DesiredDescription": "",
            "DesiredTransition": {"Migrate": None, "Reschedule": None, "ForceReschedule": None},
            "ClientStatus": "pending",
            "ClientDescription": "No tasks have started",
            "DeploymentID": "",
            "FollowupEvalID": "",
            "PreviousAllocation": "",
            "NextAllocation": "",
            "RescheduleTracker": None,
            "PreemptedAllocations": None,
            "PreemptedByAllocation": "",
            "DeploymentStatus": None,
            "TaskStates": {
                t["Name"]: {
                    "State": "pending",
                    "Failed": False,
                    "Restarts": 0,
                    "LastRestart": None,
                    "StartedAt": None,
                    "FinishedAt": None,
                    "TaskHandle": None,
                    "Events": [],
                }
                for t in group["Tasks"]
            },
            "CreateIndex": self.index + 1,
            "CreateTime": self.now_ns(),
            "_max_run_ns": group.get("MaxRunDuration") if self.max_run_duration else None,
            "_reschedule": group.get("ReschedulePolicy"),
            "_attempt": 0,
            "_resources": self._resources(group),
            "_tasks": copy.deepcopy(group["Tasks"]),
        }
        self.allocs[alloc["ID"]] = alloc
        self.kill_events[alloc["ID"]] = asyncio.Event()
        return alloc

    def _resources(self, group: dict[str, Any]) -> dict[str, Any]:
        """What the full allocation read adds (allocations.md "Read Allocation")."""
        per_task: dict[str, dict[str, Any]] = {
            t["Name"]: {
                "CPU": int((t.get("Resources") or {}).get("CPU") or 100),
                "MemoryMB": int((t.get("Resources") or {}).get("MemoryMB") or 300),
                "DiskMB": 0,
                "Networks": None,
            }
            for t in group["Tasks"]
        }
        total = {
            "CPU": sum(r["CPU"] for r in per_task.values()),
            "MemoryMB": sum(r["MemoryMB"] for r in per_task.values()),
            "DiskMB": 300,
            "Networks": None,
        }
        dc = self.node["Datacenter"]
        return {
            "Resources": total,
            "TaskResources": per_task,
            "SharedResources": {"CPU": 0, "MemoryMB": 0, "DiskMB": 300, "Networks": None},
            "Metrics": {
                "NodesEvaluated": 1,
                "NodesFiltered": 0,
                "NodesAvailable": {dc: 1},
                "NodesInPool": 1,
                "ClassFiltered": None,
                "ConstraintFiltered": None,
                "NodesExhausted": 0,
                "ClassExhausted": None,
                "DimensionExhausted": None,
                "Scores": {f"{self.node['ID']}.binpack": 0.5},
                "AllocationTime": 31729,
                "CoalescedFailures": 0,
            },
        }
