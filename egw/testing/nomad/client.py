"""The simulated Nomad client node: runs allocations, writes their logs, kills, reschedules.

Each allocation pulls its image for ``start_delay_s``, runs for ``duration_s`` writing the
scripted output into its log files (allocation, task, stream), and exits with the scripted
code, with the task events Nomad records (allocations.md "Field Reference"). A stop, the
group's ``MaxRunDuration`` or a lost node cut it short; a failure the group's
``ReschedulePolicy`` allows is replaced by a new allocation linked to the old one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from egw.testing.nomad.logs import TaskLog
from egw.testing.nomad.script import NS, Script, new_uuid

if TYPE_CHECKING:
    from egw.testing.nomad.cluster import Cluster


class Client:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def event(self, kind: str, message: str = "", **fields: Any) -> dict[str, Any]:
        ev: dict[str, Any] = {
            "Type": kind,
            "Time": self.cluster.now_ns(),
            "DisplayMessage": message,
            "Message": "",
            "Details": {},
            "FailsTask": False,
            "RestartReason": "",
            "SetupError": "",
            "DriverError": "",
            "ExitCode": 0,
            "Signal": 0,
            "KillTimeout": 0,
            "KillError": "",
            "KillReason": "",
            "StartDelay": 0,
            "DownloadError": "",
            "ValidationError": "",
            "DiskLimit": 0,
            "FailedSibling": "",
            "VaultError": "",
            "TaskSignalReason": "",
            "TaskSignal": "",
            "DriverMessage": "",
            "GenericSource": "",
        }
        ev.update(fields)
        return ev

    def all_tasks(self, alloc: dict[str, Any], fn: Callable[[str, dict[str, Any]], None]) -> None:
        for name, ts in alloc["TaskStates"].items():
            fn(name, ts)

    async def wait_kill(self, alloc: dict[str, Any], sim_s: float) -> bool:
        """Sleep ``sim_s``; True if the allocation was told to stop meanwhile."""
        kill = self.cluster.kill_events[alloc["ID"]]
        try:
            await asyncio.wait_for(kill.wait(), timeout=max(0.0, sim_s) * self.cluster.time_scale)
        except TimeoutError:
            return False
        return True

    async def run_alloc(self, job: dict[str, Any], alloc: dict[str, Any], script: Script) -> None:
        self.all_tasks(
            alloc,
            lambda n, ts: ts["Events"].append(self.event("Received", "Task received by client")),
        )
        await self.cluster.commit("AllocationUpdated", [("Allocation", alloc)])
        if await self.wait_kill(alloc, script.start_delay_s):
            await self.killed(alloc, grace_s=script.kill_timeout_s)
            return
        if script.driver_failure:

            def fail(name: str, ts: dict[str, Any]) -> None:
                ts["Events"] += [
                    self.event(
                        "Driver Failure",
                        script.driver_failure or "",
                        FailsTask=True,
                        DriverError=script.driver_failure,
                    ),
                    self.event("Not Restarting", "Error was unrecoverable", FailsTask=True),
                ]
                ts.update(State="dead", Failed=True, FinishedAt=self.cluster.now_rfc3339())

            self.all_tasks(alloc, fail)
            alloc.update(ClientStatus="failed", ClientDescription="Failed tasks")
            self.settle(alloc)
            await self.cluster.commit("AllocationUpdated", [("Allocation", alloc)])
            return
        started = self.cluster.now_rfc3339()
        for name, ts in alloc["TaskStates"].items():
            ts["Events"] += [
                self.event("Task Setup", "Building Task Directory"),
                self.event("Started", "Task started by client"),
            ]
            ts.update(State="running", StartedAt=started)
            spec = next((t for t in alloc["_tasks"] if t.get("Name") == name), {"Name": name})
            for stream in ("stdout", "stderr"):
                self.cluster.logs[(alloc["ID"], name, stream)] = TaskLog.for_task(spec, stream)
        alloc.update(ClientStatus="running", ClientDescription="Tasks are running")
        await self.cluster.commit("AllocationUpdated", [("Allocation", alloc)])
        await self.work(job, alloc, script)

    def output(self, alloc: dict[str, Any], script: Script) -> list[tuple[str, bytes]]:
        stdout = script.stdout
        if stdout is None:
            config = (alloc["_tasks"][0].get("Config") or {}) if alloc["_tasks"] else {}
            words = [str(a) for a in config.get("args") or []] or [str(config.get("command") or "")]
            stdout = (" ".join(words) + "\n").encode() if any(words) else b""
        out = [("stdout", line) for line in stdout.splitlines(keepends=True)]
        out += [("stderr", line) for line in script.stderr.splitlines(keepends=True)]
        return out

    async def work(self, job: dict[str, Any], alloc: dict[str, Any], script: Script) -> None:
        duration = script.duration_s
        limit = alloc["_max_run_ns"] / NS if alloc["_max_run_ns"] else None
        lost_at = script.lost_after_s
        ends = [(duration, "exit")]
        if limit is not None:
            ends.append((limit, "timeout"))
        if lost_at is not None:
            ends.append((lost_at, "lost"))
        at, why = min(ends)
        # output is written over the first half of the run, one line at a time
        chunks = self.output(alloc, script)
        step = (duration / 2) / max(1, len(chunks))
        elapsed = 0.0
        for stream, data in chunks:
            if elapsed >= at:
                break
            for name in alloc["TaskStates"]:
                self.cluster.logs[(alloc["ID"], name, stream)].write(data)
            await self.cluster.notify()
            pause = min(step, at - elapsed)
            if await self.wait_kill(alloc, pause):
                await self.killed(alloc, grace_s=script.kill_timeout_s)
                return
            elapsed += pause
        if await self.wait_kill(alloc, at - elapsed):
            await self.killed(alloc, grace_s=script.kill_timeout_s)
            return
        if why == "timeout":
            await self.killed(alloc, description="allocation exceeded max_run_duration")
            return
        if why == "lost":
            alloc.update(
                ClientStatus="lost",
                DesiredStatus="stop",
                DesiredDescription="alloc is lost since its node is down",
            )
            self.settle(alloc)
            await self.cluster.commit("AllocationUpdated", [("Allocation", alloc)])
            return
        attempt = alloc["_attempt"]
        code = (
            script.exit_codes[min(attempt, len(script.exit_codes) - 1)]
            if script.exit_codes
            else script.exit_code
        )
        again = bool(code) and self.reschedules(alloc) > attempt

        def finish(name: str, ts: dict[str, Any]) -> None:
            ts["Events"].append(self.event("Terminated", f"Exit Code: {code}", ExitCode=code))
            if code:
                ts["Events"].append(
                    self.event(
                        "Not Restarting",
                        'Exceeded allowed attempts 0 in interval 30m0s and mode is "fail"',
                        FailsTask=True,
                    )
                )
            ts.update(State="dead", Failed=code != 0, FinishedAt=self.cluster.now_rfc3339())

        self.all_tasks(alloc, finish)
        alloc.update(
            ClientStatus="failed" if code else "complete",
            ClientDescription="Failed tasks" if code else "All tasks have completed",
        )
        if again:
            alloc["FollowupEvalID"] = new_uuid()  # a delayed reschedule is planned
        self.settle(alloc)
        await self.cluster.commit("AllocationUpdated", [("Allocation", alloc)])
        if again:
            self.cluster.spawn(self.reschedule(job, alloc, script))

    def reschedules(self, alloc: dict[str, Any]) -> int:
        """How many reschedules the group's ``ReschedulePolicy`` allows (not its timing)."""
        policy = alloc["_reschedule"] or {}
        return 1_000_000 if policy.get("Unlimited") else int(policy.get("Attempts") or 0)

    async def reschedule(self, job: dict[str, Any], old: dict[str, Any], script: Script) -> None:
        delay_ns = (old["_reschedule"] or {}).get("Delay") or NS // 2
        await self.cluster.sleep(delay_ns / NS)
        group = next(g for g in job["TaskGroups"] if g["Name"] == old["TaskGroup"])
        ev = self.cluster.evals.get(old["EvalID"]) or self.cluster.new_eval(job, "alloc-failure")
        new = self.cluster.new_alloc(job, group, ev, int(old["Name"].rsplit("[", 1)[1].rstrip("]")))
        new.update(
            PreviousAllocation=old["ID"],
            _attempt=old["_attempt"] + 1,
            RescheduleTracker={
                "Events": [
                    {
                        "PrevAllocID": old["ID"],
                        "PrevNodeID": old["NodeID"],
                        "RescheduleTime": self.cluster.now_ns(),
                        "Delay": delay_ns,
                    }
                ]
            },
        )
        old["NextAllocation"] = new["ID"]
        await self.cluster.commit("PlanResult", [("Allocation", old), ("Allocation", new)])
        await self.run_alloc(job, new, script)

    def settle(self, alloc: dict[str, Any]) -> None:
        """A job whose allocations all ended is ``dead`` (jobs.md "Field Reference")."""
        job = self.cluster.jobs.get((alloc["Namespace"], alloc["JobID"]))
        if job is not None and all(
            a["ClientStatus"] in ("complete", "failed", "lost")
            for a in self.cluster.job_allocs(job["Namespace"], job["ID"])
        ):
            job["Status"] = "dead"

    async def killed(
        self,
        alloc: dict[str, Any],
        *,
        description: str = "All tasks have completed",
        grace_s: float = 0.0,
    ) -> None:
        """The allocation's tasks are killed (after ``grace_s`` simulated seconds if they
        ignore the interrupt: `Script.kill_timeout_s`)."""
        if grace_s:
            await asyncio.sleep(grace_s * self.cluster.time_scale)
        if alloc.get("_reaped"):
            return  # garbage-collected: nothing is left to report on

        def kill(name: str, ts: dict[str, Any]) -> None:
            ts["Events"] += [
                self.event(
                    "Killing", "Sent interrupt. Waiting 5s before force killing", KillTimeout=5 * NS
                ),
                self.event("Killed", "Task successfully killed"),
            ]
            ts.update(State="dead", Failed=False, FinishedAt=self.cluster.now_rfc3339())

        self.all_tasks(alloc, kill)
        alloc.update(ClientStatus="complete", ClientDescription=description)
        self.settle(alloc)
        await self.cluster.commit("AllocationUpdated", [("Allocation", alloc)])
