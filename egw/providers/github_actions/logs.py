"""Job logs: fetch each completed job's log into egw's log store, then end the task's log.

GitHub has no live log stream: a completed job's log is fetched (a 302 to a
short-lived plain-text URL); once the run is completed and every job's log is
in, the task's logs are complete (or given up after a few failed tries)."""

from __future__ import annotations

import functools
from collections.abc import Mapping

from egw.providers.base import SinkSlot
from egw.providers.github_actions.api import GitHubAPI
from egw.providers.github_actions.state import Follow, Tracked
from egw.wire import github as gh


class JobLogs:
    def __init__(self, api: GitHubAPI, follow: Follow, sink: SinkSlot) -> None:
        self.api = api
        self.follow = follow
        self.sink = sink

    async def fetch(self, tracked: Tracked, job: gh.Job) -> None:
        """Fetch a completed job's log (a 302 to a short-lived plain-text URL)."""
        if job.id in tracked.fetched or tracked.logs_done:
            return
        sink = self.sink()
        api = self.api
        path = gh.job_path(tracked.spec, job.id) + "/logs"
        resp = await api.retried(
            lambda: api.request("GET", path, allow_redirects=False), "job_logs"
        )
        text: str | None = None
        if resp.status in (301, 302, 303, 307) and resp.headers.get("location"):
            location = resp.headers["location"]
            blob = await api.retried(lambda: api.get_blob(location), "job_logs_download")
            if blob.status == 200:
                text = blob.body.decode("utf-8", "replace")
        elif resp.status == 200:
            text = resp.body.decode("utf-8", "replace")
        tracked.fetched.add(job.id)
        head = f"[github] ----- log of job {job.name or job.id} (job {job.id}) -----\n"
        if text is None:
            head = f"[github] log of job {job.name or job.id} not available (HTTP {resp.status})\n"
            text = ""
        elif text and not text.endswith("\n"):
            text += "\n"
        for chunk in gh.text_chunks(head + text):
            await sink.append_log(tracked.task_id, "stdout", chunk)

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
                        await sink.append_log(
                            tracked.task_id, "stdout", ("\n".join(lines) + "\n").encode()
                        )
                if job.status == "completed":
                    await self.fetch(tracked, job)
            tracked.logs_done = True
            await sink.logs_complete(tracked.task_id)
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
