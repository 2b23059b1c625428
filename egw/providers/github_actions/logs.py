"""Job logs: fetch each completed job's log into egw's log store, then end the task's log.

GitHub has no live log stream: a completed job's log is fetched (a 302 to a
short-lived plain-text URL); once the run is completed and every job's log is
in, the task's logs are complete (or given up after a few failed tries).

A job's log is uploaded by its runner after the job completed: until it lands, the
logs endpoint still answers 302 and the download URL answers 404 ``BlobNotFound``
(`egw.wire.github.logs` has the sources). Each job's log is therefore fetched by a
background task that asks again, with backoff (the retry policy's
``initial_backoff_s`` doubling to ``max_backoff_s``), until the log is there or
``log_wait_s`` has passed; only then does the job's log say "not available". The
fetch runs outside the task's lock (reports keep flowing) and takes the lock only to
write; `finish` waits for the fetches before it ends the task's log.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Mapping

from egw.background import BackgroundTasks
from egw.errors import EgwError
from egw.providers.base import SinkSlot
from egw.providers.github_actions.api import GitHubAPI
from egw.providers.github_actions.state import Follow, Tracked
from egw.wire import github as gh


class JobLogs:
    def __init__(
        self, api: GitHubAPI, follow: Follow, sink: SinkSlot, background: BackgroundTasks
    ) -> None:
        self.api = api
        self.follow = follow
        self.sink = sink
        self.background = background
        self.wait_s = api.cfg.log_wait_s
        self._fetching: dict[tuple[str, int], asyncio.Task[None]] = {}

    def fetch(self, tracked: Tracked, job: gh.Job) -> None:
        """Start fetching a completed job's log (once per job) in the background."""
        if job.id in tracked.fetched or tracked.logs_done:
            return
        tracked.fetched.add(job.id)
        key = (tracked.task_id, job.id)
        task = self.background.spawn(self._fetch(tracked, job), name=f"github_log:{job.id}")
        self._fetching[key] = task
        task.add_done_callback(lambda _: self._fetching.pop(key, None))

    async def _fetch(self, tracked: Tracked, job: gh.Job) -> None:
        text, why = await self._download(tracked, job)
        name = job.name or job.id
        if text is None:
            out = f"[github] log of job {name} not available ({why})\n"
        else:
            out = f"[github] ----- log of job {name} (job {job.id}) -----\n" + text
            if text and not text.endswith("\n"):
                out += "\n"
        async with self.follow.lock(tracked.task_id):
            if tracked.logs_done or job.id in tracked.logged:
                return
            # the log and the note that it is in, in one commit: written once, whatever
            # process (a restart, the next holder of the reconciler's lease) reads on
            logged = sorted({*tracked.logged, job.id})
            chunks = [("stdout", chunk) for chunk in gh.text_chunks(out)]
            await self.sink().append_output(
                tracked.task_id, chunks, upstream={"logged_jobs": logged}
            )
            tracked.logged.add(job.id)

    async def _download(self, tracked: Tracked, job: gh.Job) -> tuple[str | None, str]:
        """The job's log, asked for again until it exists or ``wait_s`` passed; else None
        and why."""
        api, retry = self.api, self.api.retry
        path = gh.job_path(tracked.spec, job.id) + "/logs"
        deadline = time.monotonic() + self.wait_s
        backoff = retry.initial_backoff_s
        while True:
            try:
                resp = await api.retried(
                    lambda: api.request("GET", path, allow_redirects=False), "job_logs"
                )
                why = f"HTTP {resp.status}"
                if resp.status in (301, 302, 303, 307) and resp.headers.get("location"):
                    location = resp.headers["location"]
                    blob = await api.retried(
                        functools.partial(api.get_blob, location), "job_logs_download"
                    )
                    if blob.status == 200:
                        return gh.log_text(blob.body), ""
                    code = gh.blob_error_code(blob.headers, blob.body)
                    why = f"download HTTP {blob.status}" + (f" {code}" if code else "")
                    if not gh.log_not_yet(blob.status, blob.headers, blob.body):
                        return None, why
                elif resp.status == 200:
                    return gh.log_text(resp.body), ""
                else:  # no such job (404), or logs gone (410): asking again will not help
                    return None, why
            except EgwError as exc:  # GitHub or the blob host failing, time after time
                why = exc.message
            left = deadline - time.monotonic()
            if left <= 0:
                return None, f"{why}, still after {self.wait_s:g}s"
            await asyncio.sleep(min(left, backoff * random.uniform(0.8, 1.0)))
            backoff = min(retry.max_backoff_s, backoff * 2)

    async def _fetched(self, tracked: Tracked) -> None:
        """Wait for every job log of the task still being fetched."""
        while pending := [t for (tid, _), t in self._fetching.items() if tid == tracked.task_id]:
            await asyncio.gather(*pending, return_exceptions=True)

    async def finish(self, tracked: Tracked) -> None:
        """The run completed: fetch every job's log not yet fetched, then logs_complete."""
        async with self.follow.lock(tracked.task_id):
            if tracked.logs_done:
                return
            sink = self.sink()
            url: str | None = gh.run_path(tracked.spec, tracked.run_id) + "/jobs"
            params: Mapping[str, str] | None = {"filter": "latest", "per_page": "100"}
            jobs: list[gh.Job] = []
            while url is not None:
                resp = await self.api.retried(
                    functools.partial(self.api.request, "GET", url, params=params), "list_jobs"
                )
                self.api.raise_for(resp)
                jobs.extend(gh.parse_job(j) for j in resp.json().get("jobs") or [])
                url, params = gh.next_link(resp.headers.get("link")), None
            for job in jobs:
                if gh.job_is_newer(job, tracked.jobs.get(job.id)):
                    lines = gh.job_progress_lines(tracked.jobs.get(job.id), job)
                    tracked.jobs[job.id] = job
                    if lines:
                        text = ("\n".join(lines) + "\n").encode()
                        marks = {"job_marks": tracked.job_marks()}
                        await sink.append_output(
                            tracked.task_id, [("stdout", text)], upstream=marks
                        )
                if job.status == "completed":
                    self.fetch(tracked, job)
        await self._fetched(tracked)  # outside the lock: each fetch takes it to write
        async with self.follow.lock(tracked.task_id):
            if tracked.logs_done:
                return
            tracked.logs_done = True
            await self.sink().logs_complete(tracked.task_id)
        self.follow.drop_lock(tracked.task_id)
        self.follow.forget(tracked)

    async def give_up(self, tracked: Tracked, why: str) -> None:
        """The run's jobs or logs could not be read, time after time: end its log anyway."""
        async with self.follow.lock(tracked.task_id):
            if tracked.logs_done:
                return
            sink = self.sink()
            note = f"[github] the run's logs could not be read: {why}\n"
            await sink.append_log(tracked.task_id, "stdout", note.encode())
            tracked.logs_done = True
            await sink.logs_complete(tracked.task_id)
        self.follow.forget(tracked)
