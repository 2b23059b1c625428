"""Nomad's HTTP API as egw uses it: register, read, stop a job; read its allocations; streams.

Every call carries the token, the namespace and the region, goes over the configured TLS,
and maps Nomad's plain-text errors (common.md) onto egw's error tree. Registration is
check-and-set (``EnforceIndex`` on the job's current ``JobModifyIndex``); after an
ambiguous failure (5xx, lost answer) the job is read again before another attempt, and a
job already marked with this task's id is adopted, never registered twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import quote

import aiohttp
import structlog

from egw.config import NomadConfig, RetryConfig
from egw.errors import Conflict, ProviderError, ProviderUnavailable
from egw.providers.base import split_key
from egw.providers.circuit import Breakers
from egw.providers.http import HTTPResponse, http_request, raise_for_status, streamed_get
from egw.providers.nomad.tls import tls_context
from egw.providers.nomad.tracked import Tracked, idx
from egw.providers.retry import backoff_s, with_retries
from egw.wire import nomad as wire

log = structlog.get_logger("egw.providers.nomad")

SOURCE = "nomad"


def check(resp: HTTPResponse) -> None:
    """Nomad's errors are plain text (common.md): that text becomes the egw error's message."""
    if resp.status < 400:
        return
    text = resp.body.decode("utf-8", "replace").strip() or f"HTTP {resp.status}"
    message = f"nomad: {text}"
    if resp.status == 409:
        raise Conflict(message, details={"provider": SOURCE, "upstream_status": 409})
    raise_for_status(resp, provider=SOURCE, message=message)


def job_path(job_id: str) -> str:
    return f"/v1/job/{quote(job_id, safe='')}"


class JobClient:
    """One Nomad cluster's API, with the provider's token, TLS and retry policy."""

    def __init__(
        self,
        cfg: NomadConfig,
        *,
        session: aiohttp.ClientSession,
        retry: RetryConfig,
        circuit: Breakers,
    ) -> None:
        self.cfg = cfg
        self.circuit = circuit
        self.retry = retry
        self.base = cfg.address.rstrip("/")
        self._session = session
        self._ssl = tls_context(cfg)
        self._headers = {"X-Nomad-Token": cfg.token} if cfg.token else {}

    def ui_url(self, job_id: str, namespace: str) -> str:
        return f"{self.base}/ui/jobs/{quote(job_id, safe='')}@{quote(namespace, safe='')}"

    def target(self, region: str | None) -> str:
        """The breaker a call counts against: its region's (``default``: the agent's own)."""
        return region or self.cfg.region or "default"

    def params(
        self, ns: str | None, region: str | None, extra: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        params = {"namespace": ns} if ns else {}
        if region or self.cfg.region:
            params["region"] = str(region or self.cfg.region)
        params.update(extra or {})
        return params

    async def request(
        self,
        method: str,
        path: str,
        *,
        ns: str | None,
        region: str | None = None,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        timeout_s: float | None = None,
    ) -> HTTPResponse:
        """One call, no retry; Nomad's error answers raised as egw errors."""
        resp = await http_request(
            self._session,
            method,
            self.base + path,
            provider=SOURCE,
            headers=self._headers,
            json_body=json_body,
            params=self.params(ns, region, params),
            timeout_s=timeout_s or self.cfg.request_timeout_s,
            ssl=self._ssl,
            circuit=self.circuit,
            target=self.target(region),
        )
        check(resp)
        return resp

    async def read(
        self, operation: str, path: str, *, ns: str, region: str | None
    ) -> dict[str, Any] | None:
        """GET with retries; None for Nomad's 404 (``job not found``, ``eval not found``)."""
        try:
            resp = await with_retries(
                self.retry,
                lambda: self.request("GET", path, ns=ns, region=region),
                provider=SOURCE,
                operation=operation,
            )
        except ProviderError as exc:
            if exc.upstream_status == 404:
                return None
            raise
        body = resp.json()
        return body if isinstance(body, dict) else None

    async def stop_attempt(self, tracked: Tracked) -> bool:
        """Stop the job if it is still ``tracked``'s attempt (its ``egw_task_id`` is the
        attempt's key): never the registration of a later attempt of the same job ID."""
        path = job_path(tracked.job_id)
        current = await self.read("read_job", path, ns=tracked.namespace, region=tracked.region)
        if current is None or (current.get("Meta") or {}).get(wire.META_TASK_ID) != tracked.key:
            return False
        return await self.stop_job(tracked)

    async def stop_job(self, tracked: Tracked, *, purge: bool = False) -> bool:
        """``DELETE /v1/job/:id`` (``purge`` removes it at once), with retries; False when
        Nomad no longer had the job.

        hashicorp/nomad nomad/job_endpoint.go ``Deregister`` answers a job that does not
        exist (purged, garbage-collected) with 200 and the reply's zero values, ``EvalID``
        "" and ``JobModifyIndex`` 0 (``if job == nil { return nil }``, v1.6.0 to v2.0.5); a
        stop that did something always has a ``JobModifyIndex``. A 404 (a proxy, an older
        agent) means the same.
        """
        try:
            resp = await with_retries(
                self.retry,
                lambda: self.request(
                    "DELETE",
                    job_path(tracked.job_id),
                    ns=tracked.namespace,
                    region=tracked.region,
                    params={"purge": "true"} if purge else None,
                ),
                provider=SOURCE,
                operation="stop_job",
            )
        except ProviderError as exc:
            if exc.upstream_status != 404:
                raise
            return False
        body = resp.json()
        return isinstance(body, dict) and (
            bool(body.get("EvalID")) or idx(body, "JobModifyIndex") > 0
        )

    def stream(
        self,
        path: str,
        *,
        what: str,
        params: Sequence[tuple[str, str]] | Mapping[str, str],
        session: aiohttp.ClientSession | None = None,
    ) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """A long-lived GET (the event stream, a followed log), idle-timed by the config;
        ``session``: another connection pool than the API calls' (the log streams')."""
        return streamed_get(
            session or self._session,
            self.base + path,
            provider=SOURCE,
            what=what,
            params=params,
            headers=self._headers,
            connect_timeout_s=self.cfg.connect_timeout_s,
            idle_timeout_s=self.cfg.stream_idle_timeout_s,
            ssl=self._ssl,
            circuit=self.circuit,
            target=self.target(None),
        )

    async def refresh(
        self, tracked: Tracked, *, index: int | None = None, wait_s: float | None = None
    ) -> int:
        """Read the job's allocations (a blocking query when ``index`` is given), the job, and
        the evaluation while nothing is placed; returns the allocations' ``X-Nomad-Index``."""
        ns, region, path = tracked.namespace, tracked.region, job_path(tracked.job_id)
        job = tracked.job
        params, timeout = None, None
        # a blocking query waits up to wait_s for its answer: never the probe of a breaker
        if index and wait_s and self.circuit.closed(self.target(region)):
            params = {"index": str(index), "wait": f"{int(wait_s * 1000)}ms"}
            timeout = wait_s * 17 / 16 + self.cfg.request_timeout_s
        resp = await with_retries(
            self.retry,
            lambda: self.request(
                "GET", f"{path}/allocations", ns=ns, region=region, params=params, timeout_s=timeout
            ),
            provider=SOURCE,
            operation="list_allocations",
        )
        current = await self.read("read_job", path, ns=ns, region=region)
        job.absorb(resp.json() or [], current)
        await self.read_eval(tracked)
        try:
            return int(resp.headers.get("x-nomad-index") or 0)
        except ValueError:
            return 0

    async def read_eval(self, tracked: Tracked) -> None:
        """While nothing of this run is placed, its evaluation says why (placement failures)."""
        job = tracked.job
        if job.eval_id and not job.own_allocs():
            ev = await self.read(
                "read_evaluation",
                f"/v1/evaluation/{quote(job.eval_id)}",
                ns=tracked.namespace,
                region=tracked.region,
            )
            if ev is not None:
                job.merge(job.evals, ev, wire.kept_eval)

    async def list_namespace(
        self, ns: str, region: str | None
    ) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
        """Every job (``GET /v1/jobs``, JobListStubs) and allocation (``GET /v1/allocations``,
        AllocListStubs: the same rows ``/v1/job/:id/allocations`` answers) of a namespace, by
        job id: two reads instead of two per task when many tasks are read again at once."""
        jobs: dict[str, dict[str, Any]] = {}
        allocs: dict[str, list[dict[str, Any]]] = {}
        for path, operation in (("/v1/jobs", "list_jobs"), ("/v1/allocations", "list_allocs")):
            resp = await with_retries(
                self.retry,
                lambda path=path: self.request("GET", path, ns=ns, region=region),  # type: ignore[misc]
                provider=SOURCE,
                operation=operation,
            )
            for row in resp.json() or []:
                if not isinstance(row, dict):
                    continue
                if path == "/v1/jobs":
                    jobs[str(row.get("ID"))] = row
                else:
                    allocs.setdefault(str(row.get("JobID")), []).append(row)
        return jobs, allocs

    async def register(
        self, tracked: Tracked, spec: wire.NomadSpec, *, key: str, timeout_s: float | None
    ) -> None:
        """Register the job for task ``key`` (or adopt the one an earlier submit registered);
        sets ``tracked.job.since`` and ``eval_id``."""
        ns, region, job_id = tracked.namespace, tracked.region, tracked.job_id
        current = await self.read("read_job", job_path(job_id), ns=ns, region=region)
        started = time.monotonic()
        attempt = 0
        replaced = False  # a replaced attempt's live job was stopped (once)
        while True:
            if current is not None and (current.get("Meta") or {}).get(wire.META_TASK_ID) == key:
                self._adopt(tracked, current)
                return
            if current is not None and not current.get("Stop") and current.get("Status") != "dead":
                owner = (current.get("Meta") or {}).get(wire.META_TASK_ID)
                if _earlier_attempt(owner, key) and not replaced:
                    # this task's replaced attempt, whose stop a restart interrupted (or Nomad
                    # refused): stopped now, then replaced by check-and-set on its stop's index
                    log.info("nomad_replaced_attempt_stopped", job_id=job_id, attempt=owner)
                    replaced = await self.stop_job(tracked)
                    current = await self.read("read_job", job_path(job_id), ns=ns, region=region)
                    continue
                whose = f"egw task {owner}" if owner else "a job egw did not start"
                raise Conflict(
                    f"nomad: job {job_id!r} already exists in namespace {ns!r} and is "
                    f"{current.get('Status') or 'pending'} ({whose}); egw does not replace a live "
                    "job (stop it, or choose another job_id)",
                    details={"provider": SOURCE, "field": "task.job_id"},
                )
            attempt += 1
            body = wire.register_body(
                spec, task_id=key, timeout_s=timeout_s, enforce_index=idx(current, "JobModifyIndex")
            )
            try:
                resp = await self.request("POST", "/v1/jobs", ns=ns, region=region, json_body=body)
            except ProviderUnavailable as exc:
                # a 5xx or a lost answer may have registered the job, and a check-and-set
                # miss means someone else did: look before anything else
                cas = wire.ENFORCE_INDEX_ERROR in exc.message
                log.warning("nomad_register_retry", job_id=job_id, attempt=attempt, error=str(exc))
                if attempt >= self.retry.attempts or (
                    time.monotonic() - started >= self.retry.deadline_s
                ):
                    current = await self.read("read_job", job_path(job_id), ns=ns, region=region)
                    if current is not None and (
                        (current.get("Meta") or {}).get(wire.META_TASK_ID) == key
                    ):
                        self._adopt(tracked, current)
                        return
                    raise
                if not cas:
                    await asyncio.sleep(backoff_s(self.retry, attempt))
                current = await self.read("read_job", job_path(job_id), ns=ns, region=region)
                continue
            data = resp.json()
            tracked.job.since = idx(data, "JobModifyIndex")
            tracked.job.eval_id = data.get("EvalID") or None
            log.info(
                "nomad_registered",
                task_id=tracked.task_id,
                job_id=job_id,
                namespace=ns,
                eval_id=tracked.job.eval_id,
                job_modify_index=tracked.job.since,
            )
            return

    @staticmethod
    def _adopt(tracked: Tracked, job: Mapping[str, Any]) -> None:
        """The job is already this task's (an earlier submit whose answer was lost)."""
        tracked.job.since = (
            idx(job, "CreateIndex") if job.get("Stop") else idx(job, "JobModifyIndex")
        )
        tracked.adopted = True
        log.info(
            "nomad_adopted",
            task_id=tracked.task_id,
            job_id=tracked.job_id,
            job_modify_index=tracked.job.since,
        )


def _earlier_attempt(owner: object, key: str) -> bool:
    """Whether ``owner`` (a job's ``egw_task_id``) is an earlier attempt of the task whose
    attempt's key is ``key``."""
    if not isinstance(owner, str):
        return False
    (task_id, attempt), (mine, now) = split_key(owner), split_key(key)
    return task_id == mine and attempt < now
