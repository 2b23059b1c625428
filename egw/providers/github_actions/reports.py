"""Apply what GitHub reports about a followed run (by webhook or poll) to its task.

Run reports in order (`gh.is_newer`), re-run attempts, job progress as events and
log lines."""

from __future__ import annotations

import structlog

from egw.core.model import Observation, TaskState
from egw.providers.base import SinkSlot
from egw.providers.github_actions.logs import JobLogs
from egw.providers.github_actions.state import Tracked
from egw.wire import github as gh

log = structlog.get_logger("egw.providers.github_actions")


class Reports:
    """Callers hold the task's lock (`Follow.lock`) around each apply."""

    def __init__(self, sink: SinkSlot, logs: JobLogs) -> None:
        self.sink = sink
        self.logs = logs

    async def apply_run(self, tracked: Tracked, run: gh.Run, delivery_id: str) -> bool:
        """Apply a run report if it is newer than the last one; True if it was."""
        sink = self.sink()
        if not gh.is_newer(run, tracked.last):
            # debug: GitHub delivers a run's state more than once (each hook, each redelivery)
            # and the poll reads it too; a line each was 2% of a delivery (bench "webhooks")
            log.debug("github_stale_run_report", run_id=run.id, status=run.status)
            return False
        if run.attempt > tracked.attempt:
            tracked.attempt = run.attempt
            await sink.progress(
                tracked.task_id,
                "github.attempt",
                {"run_id": run.id, "run_attempt": run.attempt},
                source="github",
                delivery_id=f"{delivery_id}:attempt",
            )
            await sink.set_upstream(tracked.task_id, data={"run_attempt": run.attempt})
            if not tracked.logs_done:
                line = f"[github] run attempt {run.attempt} started\n"
                await sink.append_log(tracked.task_id, "stdout", line.encode())
            tracked.completed = False
        tracked.last = run
        await sink.observe(
            tracked.task_id, gh.run_observation(run), source="github", delivery_id=delivery_id
        )
        if run.status == "completed" or run.conclusion:
            tracked.completed = True
        return True

    async def apply_job(
        self, tracked: Tracked, job: gh.Job, delivery_id: str, *, environment: str | None = None
    ) -> None:
        """Apply a job report; ``environment``: the one its ``deployment`` targets (a job
        ``waiting`` for that environment's protection rules)."""
        sink = self.sink()
        previous = tracked.jobs.get(job.id)
        if not gh.job_is_newer(job, previous):
            return
        tracked.jobs[job.id] = job
        data = job.to_json() | ({"environment": environment} if environment else {})
        await sink.progress(
            tracked.task_id, "github.job", data, source="github", delivery_id=f"{delivery_id}:job"
        )
        lines = gh.job_progress_lines(previous, job, environment=environment)
        if lines and not tracked.logs_done:
            text = ("\n".join(lines) + "\n").encode()
            marks = {"job_marks": tracked.job_marks()}
            await sink.append_output(tracked.task_id, [("stdout", text)], upstream=marks)
        if job.status == "in_progress" and (
            tracked.last is None or tracked.last.attempt <= job.run_attempt
        ):
            await sink.observe(
                tracked.task_id,
                Observation(
                    state=TaskState.RUNNING,
                    at=job.started_at,
                    detail={"run_id": job.run_id, "job_id": job.id, "via": "job"},
                ),
                source="github",
                delivery_id=f"{delivery_id}:state",
            )
        if job.status == "completed":
            self.logs.fetch(tracked, job)
