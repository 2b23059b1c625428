"""Webhook intake: verify a delivery's ``X-Hub-Signature-256``, store it, answer at once.

A delivery is stored with ``sink.progress`` keyed on ``X-GitHub-Delivery`` (a
redelivery is a duplicate) and applied by a background task under the task's
lock. A delivery that beats the dispatch's own answer is held a while and
replayed once the run is known.

What is stored of a delivery is what egw read of it (`delivery_record`): its event,
action, hook, and the run or job as parsed, not the whole payload. Nothing reads a
stored delivery back (a delivery whose apply a dead gateway lost is made good by the
reconciler's poll, not by replaying it), and the payload is mostly the repository and
the sender: 19.5 KB for GitHub's ``workflow_run`` example, whose storing was a third of
an own run's delivery (bench part "webhooks"). GitHub keeps every delivery, headers and
body, and can redeliver it for 3 days (docs.github.com, webhooks/testing-and-
troubleshooting-webhooks/redelivering-webhooks).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import structlog

from egw.background import BackgroundTasks
from egw.config import GitHubActionsConfig
from egw.errors import EgwError, ProviderUnavailable, Unauthorized
from egw.providers.base import Delivery, SinkSlot, WebhookOutcome
from egw.providers.github_actions.api import PROVIDER
from egw.providers.github_actions.dispatch import Dispatcher
from egw.providers.github_actions.logs import JobLogs
from egw.providers.github_actions.reports import Reports
from egw.providers.github_actions.state import Follow
from egw.wire import github as gh

log = structlog.get_logger("egw.providers.github_actions")

#: deliveries for a run not known yet (its dispatch answer is still on the way) are held
#: this long, at most this many, and replayed once the run is known
ORPHAN_TTL_S = 120.0
MAX_ORPHANS = 1000


class WebhookIntake:
    def __init__(
        self,
        cfg: GitHubActionsConfig,
        follow: Follow,
        sink: SinkSlot,
        reports: Reports,
        logs: JobLogs,
        dispatcher: Dispatcher,
        background: BackgroundTasks,
    ) -> None:
        self.cfg = cfg
        self.follow = follow
        self.sink = sink
        self.reports = reports
        self.logs = logs
        self.background = background
        self.dispatcher = dispatcher
        self._orphans: dict[int, list[tuple[float, gh.Delivery]]] = {}

    async def handle(self, headers: Mapping[str, str], body: bytes) -> WebhookOutcome:
        """Verify and take one delivery; raises `Unauthorized` (bad signature),
        `InvalidRequest` (malformed) or `ProviderUnavailable` (the store failed)."""
        secret = self.cfg.webhook_secret
        if not secret or not gh.verify_signature(
            secret, body, gh.header(headers, "X-Hub-Signature-256")
        ):
            raise Unauthorized("missing or bad X-Hub-Signature-256")
        delivery = gh.parse_delivery(headers, body)
        if delivery.event == "ping":
            return WebhookOutcome(delivery=Delivery.PONG, detail=delivery.zen)
        if delivery.run is None and delivery.job is None:
            return WebhookOutcome(delivery=Delivery.IGNORED, detail=f"event {delivery.event}")
        try:
            return await self.take(delivery)
        except EgwError:
            raise
        except Exception as exc:  # the sink failed: say so without a 500 (GitHub gives up)
            log.exception("github_webhook_store_failed", delivery=delivery.delivery_id)
            raise ProviderUnavailable(
                f"could not store the delivery: {exc}", provider=PROVIDER
            ) from exc

    async def take(self, delivery: gh.Delivery) -> WebhookOutcome:
        sink = self.sink()
        follow = self.follow
        run_id = _run_id(delivery)
        busy = bool(follow.dispatching or follow.pending)
        task_id = await self._task_for_run(run_id, delivery.run)
        if task_id is None and run_id in follow.runs:  # adopted while we looked
            task_id = follow.runs[run_id].task_id
        if task_id is None:
            if busy or follow.dispatching or follow.pending or follow.shared:
                # GitHub may deliver before egw has the dispatch's answer (this replica's,
                # or another's: replayed when its commit is heard): hold it a while
                self._hold(run_id, delivery)
                return WebhookOutcome(
                    delivery=Delivery.IGNORED, detail="run not known yet", held=True
                )
            return WebhookOutcome(delivery=Delivery.IGNORED, detail="not a run egw started")
        stored = await sink.progress(
            task_id,
            "github.delivery",
            delivery_record(delivery, run_id),
            source="github",
            delivery_id=delivery.delivery_id,
        )
        if not stored:
            return WebhookOutcome(delivery=Delivery.DUPLICATE, task_id=task_id)
        if not follow.standby:  # else the lease's holder applies it, heard from the feed
            self.apply_later(task_id, delivery)
        return WebhookOutcome(delivery=Delivery.ACCEPTED, task_id=task_id)

    def apply_later(self, task_id: str, delivery: gh.Delivery) -> None:
        """Apply a stored delivery in the background, under the task's lock."""
        _ = self.background.spawn(self._apply(task_id, delivery), name=f"github_apply:{task_id}")

    async def apply_stored(self, task_id: str, record: Mapping[str, Any]) -> None:
        """Apply a delivery another replica stored (this one holds the reconciler's lease):
        follow its run if this replica does not yet, then apply it as if it came here."""
        delivery = delivery_from_record(record)
        if delivery is None or self.follow.standby:
            return
        if await self._task_for_run(_run_id(delivery), None) == task_id:
            self.apply_later(task_id, delivery)

    def _hold(self, run_id: int, delivery: gh.Delivery) -> None:
        now = time.monotonic()
        for old in [r for r, items in self._orphans.items() if items[0][0] < now - ORPHAN_TTL_S]:
            del self._orphans[old]
        if sum(len(items) for items in self._orphans.values()) < MAX_ORPHANS:
            self._orphans.setdefault(run_id, []).append((now, delivery))

    def holds(self, run_id: int) -> bool:
        """Whether deliveries for the run are held, waiting for it to be known."""
        return run_id in self._orphans

    async def replay(self, run_id: int) -> None:
        """Take the deliveries held for a run that is now known."""
        for _, delivery in self._orphans.pop(run_id, []):
            await self.take(delivery)

    async def _task_for_run(self, run_id: int, run: gh.Run | None) -> str | None:
        follow = self.follow
        tracked = follow.runs.get(run_id)
        if tracked is not None:
            return tracked.task_id
        task = await self.sink().find_task(PROVIDER, str(run_id))
        if task is not None and follow.standby:
            return task.id  # stored here, followed and applied by the lease's holder
        if task is not None:
            follow.track_stored(task, run_id)
            return task.id
        if run is not None:
            for pending in list(follow.pending.values()):
                if pending.correlation and gh.matches_correlation(run, pending.correlation):
                    await self.dispatcher.matched(pending, run)
                    return pending.task_id
        return None

    async def _apply(self, task_id: str, delivery: gh.Delivery) -> None:
        async with self.follow.lock(task_id):
            tracked = self.follow.runs.get(_run_id(delivery))
            if tracked is None:
                return
            self.follow.schedule(tracked, self.cfg.poll_max_s)  # webhooks flow: poll rarely
            if delivery.run is not None:
                await self.reports.apply_run(tracked, delivery.run, f"{delivery.delivery_id}:state")
            elif delivery.job is not None:
                await self.reports.apply_job(
                    tracked, delivery.job, delivery.delivery_id, environment=delivery.environment
                )
        if tracked.completed and not tracked.logs_done:
            await self.logs.finish(tracked)


def delivery_record(delivery: gh.Delivery, run_id: int) -> dict[str, Any]:
    """The ``github.delivery`` event's data: the delivery as egw read it (see the module's
    docstring for why not its whole payload)."""
    record: dict[str, Any] = {
        "event": delivery.event,
        "action": delivery.action,
        "run_id": run_id,
        "hook_id": delivery.hook_id,
        "delivery_id": delivery.delivery_id,
    }
    if delivery.run is not None:
        record["run"] = delivery.run.to_json()
    if delivery.job is not None:
        record["job"] = delivery.job.to_json()
        if delivery.environment is not None:
            record["environment"] = delivery.environment
    return record


def delivery_from_record(record: Mapping[str, Any]) -> gh.Delivery | None:
    """The delivery a ``github.delivery`` event's data describes (`delivery_record`), as
    the replica that stored it read it; None for a record of an earlier version (no
    delivery id: the holder's poll makes it good)."""
    delivery_id = record.get("delivery_id")
    if not isinstance(delivery_id, str):
        return None
    run, job = record.get("run"), record.get("job")
    return gh.Delivery(
        event=str(record.get("event")),
        delivery_id=delivery_id,
        hook_id=record.get("hook_id"),
        action=record.get("action"),
        run=gh.parse_run(run) if run else None,
        job=gh.parse_job({**job, "id": job.get("job_id")}) if job else None,
        environment=record.get("environment"),
    )


def _run_id(delivery: gh.Delivery) -> int:
    """The run a workflow_run or workflow_job delivery is about."""
    if delivery.run is not None:
        return delivery.run.id
    assert delivery.job is not None, "only run and job deliveries are taken"
    return delivery.job.run_id
