"""NomadProvider end to end against the Nomad simulator over real HTTP, with MemorySink as egw."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme

from egw.config import NomadConfig, RetryConfig
from egw.core.model import Observation, Task, TaskState
from egw.errors import Conflict, InvalidRequest, ProviderError, ProviderUnavailable
from egw.providers.base import Provider, WebhookProvider
from egw.providers.nomad import NomadProvider
from egw.testing.nomad import NomadSimulator
from egw.testing.sink import MemorySink

S = TaskState
SEED = {"job_id": "demo-job-1", "image": "busybox:latest", "command": "echo", "args": ["hello"]}
RETRY = RetryConfig(attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05, deadline_s=5.0)
SCALE = 0.02  # one simulated second is 20 ms


class Harness:
    """One simulated Nomad, one MemorySink (egw's store) and the providers that use them."""

    def __init__(self, sim: NomadSimulator, base: str, session: aiohttp.ClientSession) -> None:
        self.sim, self.base, self.session = sim, base, session
        self.sink = MemorySink()
        self.providers: list[NomadProvider] = []

    def config(self, **kw: Any) -> NomadConfig:
        defaults: dict[str, Any] = {
            "enabled": True,
            "address": self.base,
            "stream_idle_timeout_s": 10.0,
            "blocking_wait_s": 5.0,
            "stream_retry_s": 30.0,
            "log_grace_s": 2.0,
        }
        return NomadConfig(**{**defaults, **kw})

    async def provider(self, *, retry: RetryConfig = RETRY, **kw: Any) -> NomadProvider:
        provider = NomadProvider(self.config(**kw), session=self.session, retry=retry)
        self.providers.append(provider)
        await provider.start(self.sink)
        return provider

    async def connected(self, provider: NomadProvider, ns: str = "default") -> None:
        async with asyncio.timeout(5):
            while not provider.health()["namespaces"].get(ns, {}).get("connected"):
                await asyncio.sleep(0.005)

    async def submit(
        self, provider: NomadProvider, task: dict[str, Any], timeout_s: float | None = None
    ) -> Task:
        """What egw's service does: validate, record, submit, record the acceptance."""
        record = self.sink.add_task("nomad", provider.validate(task).to_json(), timeout_s=timeout_s)
        sub = await provider.submit(record, idempotency_key=record.id)
        await self.accept(record, sub)
        return self.sink.tasks[record.id]

    async def accept(self, record: Task, sub: Any) -> None:
        await self.sink.set_upstream(
            record.id, upstream_id=sub.upstream_id, upstream_url=sub.upstream_url, data=sub.upstream
        )
        await self.sink.observe(record.id, sub.observation, source="service")

    async def cancel(self, provider: NomadProvider, task_id: str, *, force: bool = False) -> None:
        """What egw does on POST /v1/tasks/{id}/cancel."""
        await self.sink.observe(
            task_id, Observation(state=S.CANCELLING, reason="cancel requested"), source="api"
        )
        result = await provider.cancel(self.sink.tasks[task_id], force=force)
        if result is not None:
            await self.sink.observe(task_id, result, source="nomad")

    def observations(self, task_id: str) -> list[dict[str, Any]]:
        return [
            e.data
            for e in self.sink.events
            if e.task_id == task_id and e.kind == "observe" and e.data["source"] == "nomad"
        ]

    async def close(self) -> None:
        for provider in self.providers:
            await provider.close()


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    sim = NomadSimulator(time_scale=SCALE)
    base = await sim.start()
    async with aiohttp.ClientSession() as session:
        harness = Harness(sim, base, session)
        try:
            yield harness
        finally:
            await harness.close()
            await sim.close()


async def test_seed_example_runs_over_the_event_stream(h: Harness) -> None:
    provider = await h.provider()
    assert isinstance(provider, Provider)
    await h.connected(provider)
    task = await h.submit(provider, SEED)
    assert task.upstream_id == "demo-job-1"
    assert task.upstream_url == f"{h.base}/ui/jobs/demo-job-1@default"
    assert task.upstream["namespace"] == "default" and task.upstream["job_modify_index"] > 0
    done = await h.sink.wait_for(task.id, logs=True)
    assert done.status is S.SUCCEEDED and done.exit_code == 0
    assert h.sink.states(task.id) == ["queued", "running", "succeeded"]
    assert h.sink.output(task.id, "stdout") == b"hello\n"
    assert h.sink.output(task.id, "stderr") == b""
    # driven by the stream: no allocation or evaluation reads at all; the job was read once,
    # before registering (is it already there?)
    assert h.sim.count("GET", r"^/v1/(allocation/|evaluation/|job/.*/allocations)") == 0
    assert h.sim.count("GET", r"^/v1/job/demo-job-1$") == 1
    segments = [e.data for e in h.sink.events if e.kind == "nomad.allocation"]
    assert len(segments) == 1 and segments[0]["segment"] == 1
    # the registered job: one batch task group, egw's mark, the driver config as given
    job = h.sim.cluster.jobs[("default", "demo-job-1")]
    assert job["Type"] == "batch" and job["Meta"] == {"egw_task_id": task.id}
    assert job["TaskGroups"][0]["Tasks"][0]["Config"] == {
        "image": "busybox:latest",
        "command": "echo",
        "args": ["hello"],
    }
    health = provider.health()["namespaces"]["default"]
    assert health["mode"] == "stream" and health["last_index"] == h.sim.cluster.index
    assert h.sink.cursors["nomad:event_index:default"] == str(h.sim.cluster.index)
    assert provider.health()["tracked_tasks"] == 0


async def test_bad_job_id_is_invalid_request(h: Harness) -> None:
    provider = await h.provider()
    with pytest.raises(InvalidRequest) as err:
        provider.validate({**SEED, "job_id": "../../v1/acl"})
    assert err.value.field == "task.job_id" and err.value.details["field"] == "task.job_id"
    assert h.sim.count("POST", r".") == 0


async def test_failing_job_ends_failed_with_its_exit_code(h: Harness) -> None:
    h.sim.script("fails", stdout=b"working\n", stderr=b"boom\n", exit_code=3)
    provider = await h.provider()
    task = await h.submit(provider, {**SEED, "job_id": "fails"})
    done = await h.sink.wait_for(task.id, logs=True)
    assert done.status is S.FAILED and done.exit_code == 3
    assert done.reason == "task 'main' exited with code 3"
    assert h.sink.states(task.id) == ["queued", "running", "failed"]
    assert h.sink.output(task.id, "stderr") == b"boom\n"
    assert h.sink.output(task.id, "stdout") == b"working\n"


async def test_placement_failure_ends_failed_and_stops_the_job(h: Harness) -> None:
    provider = await h.provider()
    task = await h.submit(provider, {**SEED, "resources": {"memory_mb": 100_000}})
    done = await h.sink.wait_for(task.id, logs=True)
    assert done.status is S.FAILED and done.exit_code is None
    assert done.reason == (
        "placement failed: task group 'main': resources exhausted on "
        "1 node(s); dimension 'memory' exhausted on 1 node(s)"
    )
    assert h.sink.states(task.id) == ["queued", "failed"]
    async with asyncio.timeout(5):  # the blocked evaluation must never place it later
        while not h.sim.cluster.jobs[("default", "demo-job-1")]["Stop"]:
            await asyncio.sleep(0.01)
    assert h.sink.output(task.id) == b""


async def test_driver_failure(h: Harness) -> None:
    h.sim.script("demo-job-1", driver_failure="Failed to pull `busybox:nope`: not found")
    provider = await h.provider()
    task = await h.submit(provider, SEED)
    done = await h.sink.wait_for(task.id, logs=True)
    assert done.status is S.FAILED
    assert done.reason == "task 'main': Driver Failure: Failed to pull `busybox:nope`: not found"
    assert h.sink.states(task.id) == ["queued", "failed"]  # it never ran


async def test_cancel_a_running_job(h: Harness) -> None:
    h.sim.script("demo-job-1", stdout=b"tick\n", duration_s=1000)
    provider = await h.provider()
    task = await h.submit(provider, SEED)
    await h.sink.wait_for(task.id, state=S.RUNNING)
    await h.cancel(provider, task.id)
    done = await h.sink.wait_for(task.id, logs=True)
    assert done.status is S.CANCELLED
    assert "stopped" in (done.reason or "")
    assert h.sink.states(task.id) == ["queued", "running", "cancelling", "cancelled"]
    assert h.sink.output(task.id) == b"tick\n"
    (delete,) = [r for r in h.sim.requests if r.method == "DELETE"]
    assert delete.path == "/v1/job/demo-job-1" and ("purge", "true") not in delete.query
    assert h.sim.cluster.jobs[("default", "demo-job-1")]["Stop"] is True


async def test_force_cancel_purges_and_a_queued_job_is_cancelled(h: Harness) -> None:
    h.sim.script("demo-job-1", start_delay_s=1000)  # stays pending
    provider = await h.provider()
    task = await h.submit(provider, SEED)
    async with asyncio.timeout(5):
        while not h.sim.cluster.allocs:
            await asyncio.sleep(0.01)
    await h.cancel(provider, task.id, force=True)
    done = await h.sink.wait_for(task.id, logs=True)
    assert done.status is S.CANCELLED
    assert ("purge", "true") in next(r for r in h.sim.requests if r.method == "DELETE").query
    assert ("default", "demo-job-1") not in h.sim.cluster.jobs


async def test_dropped_event_stream_misses_nothing_and_doubles_nothing(h: Harness) -> None:
    h.sim.script("demo-job-1", stdout=b"one\ntwo\n", duration_s=25)
    provider = await h.provider()
    task = await h.submit(provider, SEED)
    await h.sink.wait_for(task.id, state=S.RUNNING)
    assert h.sim.drop_event_streams() == 1
    done = await h.sink.wait_for(task.id, logs=True)
    assert done.status is S.SUCCEEDED
    assert h.sink.states(task.id) == ["queued", "running", "succeeded"]
    # no stale or repeated report either: each state was reported exactly once
    assert [o["status"] for o in h.observations(task.id)] == ["running", "succeeded"]
    assert h.sink.output(task.id) == b"one\ntwo\n"
    health = provider.health()["namespaces"]["default"]
    assert health["reconnects"] >= 1 and health["gaps"] == 0
    streams = [dict(r.query) for r in h.sim.requests if r.path == "/v1/event/stream"]
    assert len(streams) >= 2 and "index" in streams[1]  # resumed, at last + 1


async def test_resume_drops_the_repeated_last_event(h: Harness) -> None:
    h.sim.script("demo-job-1", duration_s=1000)
    provider = await h.provider()
    task = await h.submit(provider, SEED)
    await h.sink.wait_for(task.id, state=S.RUNNING)
    await asyncio.sleep(0.05)  # everything up to "running" is in
    last = provider.health()["namespaces"]["default"]["last_index"]
    assert last == h.sim.cluster.index
    h.sim.drop_event_streams()
    async with asyncio.timeout(5):
        while provider.health()["namespaces"]["default"]["repeated_dropped"] < 1:
            await asyncio.sleep(0.005)
    resumed = [dict(r.query) for r in h.sim.requests if r.path == "/v1/event/stream"][-1]
    assert resumed["index"] == str(last + 1)
    assert provider.health()["namespaces"]["default"]["gaps"] == 0
    assert [o["status"] for o in h.observations(task.id)] == ["running"]


async def test_aged_out_index_forces_reconciliation(h: Harness) -> None:
    h.sim.script("demo-job-1", duration_s=10)
    provider = await h.provider()
    task = await h.submit(provider, SEED)
    await h.sink.wait_for(task.id, state=S.RUNNING)
    gate = h.sim.hold(r"^/v1/event/stream$")  # the reconnect waits...
    h.sim.drop_event_streams()
    async with asyncio.timeout(5):  # ...while the job ends...
        while not any(a["ClientStatus"] == "complete" for a in h.sim.cluster.allocs.values()):
            await asyncio.sleep(0.01)
    async with h.session.post(
        h.base + "/v1/jobs",
        json={
            "Job": {  # ...another job runs...
                "ID": "other",
                "Type": "batch",
                "Datacenters": ["*"],
                "TaskGroups": [
                    {
                        "Name": "g",
                        "Tasks": [{"Name": "t", "Driver": "exec", "Config": {"command": "true"}}],
                    }
                ],
            }
        },
    ) as resp:
        assert resp.status == 200
    await asyncio.sleep(0.05)
    h.sim.age_out_events(keep=1)  # ...and Nomad forgets everything but its last event
    reads_before = h.sim.count("GET", r"^/v1/allocations$")  # the namespace's listing
    gate.set()
    done = await h.sink.wait_for(task.id, logs=True)
    assert done.status is S.SUCCEEDED
    assert h.sink.states(task.id) == ["queued", "running", "succeeded"]
    assert h.sink.output(task.id) == b"hello\n"
    assert provider.health()["namespaces"]["default"]["gaps"] == 1
    assert h.sim.count("GET", r"^/v1/allocations$") == reads_before + 1


async def test_gateway_restart_picks_up_running_jobs(h: Harness) -> None:
    lines = b"".join(f"line {i}\n".encode() for i in range(8))
    h.sim.script("demo-job-1", stdout=lines, duration_s=40)
    h.sim.script("second", stdout=b"other\n", duration_s=40)
    first = await h.provider()
    a = await h.submit(first, SEED)
    b = await h.submit(first, {**SEED, "job_id": "second"})
    await h.sink.wait_for(a.id, state=S.RUNNING)
    async with asyncio.timeout(5):  # some output is in before the "restart"
        while not h.sink.output(a.id):
            await asyncio.sleep(0.005)
    await first.close()
    cursor = int(h.sink.cursors["nomad:event_index:default"])
    await asyncio.sleep(10 * SCALE)  # the jobs go on while egw is down
    second = await h.provider()  # same store: a restarted gateway
    for task in (a, b):
        done = await h.sink.wait_for(task.id, logs=True)
        assert done.status is S.SUCCEEDED
        assert h.sink.states(task.id) == ["queued", "running", "succeeded"]
    assert h.sink.output(a.id) == lines  # every line once: resumed at the stored offsets
    assert h.sink.output(b.id) == b"other\n"
    resumed = [dict(r.query) for r in h.sim.requests if r.path == "/v1/event/stream"][-1]
    assert resumed["index"] == str(cursor + 1)
    assert second.health()["tracked_tasks"] == 0


async def test_resubmit_after_restart_adopts_the_job(h: Harness) -> None:
    h.sim.script("demo-job-1", duration_s=5)
    first = await h.provider()
    record = h.sink.add_task("nomad", first.validate(SEED).to_json())
    await first.submit(record, idempotency_key=record.id)  # the answer is lost with the gateway
    await first.close()
    second = await h.provider()  # the task is still pending: egw submits it again
    sub = await second.submit(h.sink.tasks[record.id], idempotency_key=record.id)
    await h.accept(record, sub)
    done = await h.sink.wait_for(record.id, logs=True)
    assert done.status is S.SUCCEEDED
    assert h.sim.count("POST", r"^/v1/jobs$") == 1
    assert h.sim.cluster.jobs[("default", "demo-job-1")]["Version"] == 0


async def test_5xx_is_retried_within_the_budget(h: Harness) -> None:
    provider = await h.provider()
    h.sim.fail(r"^/v1/jobs$", method="POST", status=500, body="rpc error: no leader", times=2)
    task = await h.submit(provider, SEED)
    assert (await h.sink.wait_for(task.id, logs=True)).status is S.SUCCEEDED
    assert h.sim.count("POST", r"^/v1/jobs$") == 3
    # before each new attempt the job was looked for (a 5xx may hide a registration)
    assert h.sim.count("GET", r"^/v1/job/demo-job-1$") == 3


async def test_5xx_beyond_the_budget_is_provider_unavailable(h: Harness) -> None:
    provider = await h.provider()
    h.sim.fail(r"^/v1/jobs$", method="POST", status=503, body="No cluster leader", times=10)
    record = h.sink.add_task("nomad", provider.validate(SEED).to_json())
    with pytest.raises(ProviderUnavailable) as err:
        await provider.submit(record, idempotency_key=record.id)
    assert err.value.message == "nomad: No cluster leader"
    assert err.value.upstream_status == 503
    assert h.sim.count("POST", r"^/v1/jobs$") == RETRY.attempts
    assert provider.health()["tracked_tasks"] == 0


async def test_lost_answer_is_not_registered_twice(h: Harness) -> None:
    provider = await h.provider()
    h.sim.fail(r"^/v1/jobs$", method="POST", after_commit=True)
    task = await h.submit(provider, SEED)
    assert (await h.sink.wait_for(task.id, logs=True)).status is S.SUCCEEDED
    assert h.sim.count("POST", r"^/v1/jobs$") == 1
    assert h.sink.states(task.id) == ["queued", "running", "succeeded"]


async def test_read_errors_are_retried(h: Harness) -> None:
    provider = await h.provider()
    h.sim.fail(r"^/v1/job/demo-job-1$", method="GET", status=502, times=2)
    task = await h.submit(provider, SEED)
    assert (await h.sink.wait_for(task.id, logs=True)).status is S.SUCCEEDED


async def test_a_live_job_egw_did_not_start_is_a_conflict(h: Harness) -> None:
    h.sim.script("demo-job-1", duration_s=1000)
    async with h.session.post(
        h.base + "/v1/jobs",
        json={
            "Job": {
                "ID": "demo-job-1",
                "Type": "batch",
                "Datacenters": ["*"],
                "TaskGroups": [
                    {
                        "Name": "g",
                        "Tasks": [{"Name": "t", "Driver": "exec", "Config": {"command": "sleep"}}],
                    }
                ],
            }
        },
    ) as resp:
        assert resp.status == 200
    provider = await h.provider()
    record = h.sink.add_task("nomad", provider.validate(SEED).to_json())
    with pytest.raises(Conflict) as err:
        await provider.submit(record, idempotency_key=record.id)
    assert "already exists" in err.value.message and err.value.details["field"] == "task.job_id"
    assert h.sim.count("POST", r"^/v1/jobs$") == 1


async def test_reusing_a_job_id_after_it_finished(h: Harness) -> None:
    provider = await h.provider()
    first = await h.submit(provider, SEED)
    assert (await h.sink.wait_for(first.id, logs=True)).status is S.SUCCEEDED
    h.sim.script("demo-job-1", stdout=b"again\n", exit_code=1)
    second = await h.submit(provider, SEED)
    done = await h.sink.wait_for(second.id, logs=True)
    assert done.status is S.FAILED and done.exit_code == 1
    assert h.sink.states(second.id) == ["queued", "running", "failed"]
    assert h.sink.output(second.id) == b"again\n"
    assert h.sink.tasks[first.id].status is S.SUCCEEDED
    assert h.sim.cluster.jobs[("default", "demo-job-1")]["Version"] == 1


async def test_timeout_becomes_max_run_duration(h: Harness) -> None:
    h.sim.script("demo-job-1", duration_s=1000)
    provider = await h.provider()
    task = await h.submit(provider, SEED, timeout_s=3)
    group = h.sim.cluster.jobs[("default", "demo-job-1")]["TaskGroups"][0]
    assert group["MaxRunDuration"] == 3_000_000_000
    done = await h.sink.wait_for(task.id, logs=True)
    assert done.status is S.TIMED_OUT
    assert "allocation exceeded max_run_duration" in (done.reason or "")


async def test_stream_refused_falls_back_to_blocking_queries(h: Harness) -> None:
    h.sim.fail(r"^/v1/event/stream$", status=403, body="Permission denied", times=1000)
    provider = await h.provider()
    task = await h.submit(provider, {**SEED, "args": ["polled"]})
    done = await h.sink.wait_for(task.id, logs=True)
    assert done.status is S.SUCCEEDED
    assert h.sink.states(task.id) == ["queued", "running", "succeeded"]
    assert h.sink.output(task.id) == b"polled\n"
    assert provider.health()["namespaces"]["default"]["mode"] == "poll"
    blocking = [
        dict(r.query)
        for r in h.sim.requests
        if r.path == "/v1/job/demo-job-1/allocations" and "index" in dict(r.query)
    ]
    assert blocking and all(q["wait"] == "5000ms" for q in blocking)


async def test_the_stream_is_tried_again_after_polling(h: Harness) -> None:
    h.sim.fail(r"^/v1/event/stream$", status=403, body="Permission denied", times=1)
    h.sim.script("demo-job-1", duration_s=1000)
    provider = await h.provider(stream_retry_s=0.2)
    task = await h.submit(provider, SEED)
    await h.sink.wait_for(task.id, state=S.RUNNING)
    await h.connected(provider)  # the retry succeeded: polling stops, the stream takes over
    assert provider.health()["namespaces"]["default"]["mode"] == "stream"
    await h.cancel(provider, task.id)
    assert (await h.sink.wait_for(task.id, logs=True)).status is S.CANCELLED


async def test_a_task_cancelled_while_registering_is_stopped_in_nomad(h: Harness) -> None:
    h.sim.script("demo-job-1", duration_s=1000)
    provider = await h.provider()
    gate = h.sim.hold(r"^/v1/jobs$", method="POST")
    record = h.sink.add_task("nomad", provider.validate(SEED).to_json())
    submitting = asyncio.ensure_future(provider.submit(record, idempotency_key=record.id))
    async with asyncio.timeout(5):
        while h.sim.count("POST", r"^/v1/jobs$") == 0:
            await asyncio.sleep(0.005)
    # egw cancels the pending task at once (nothing known upstream yet)...
    await h.sink.observe(
        record.id, Observation(state=S.CANCELLED, reason="cancel requested"), source="api"
    )
    gate.set()  # ...and only then does Nomad answer the registration
    await h.accept(record, await submitting)
    await h.sink.wait_for(record.id, logs=True)
    assert h.sink.tasks[record.id].status is S.CANCELLED
    async with asyncio.timeout(5):  # the job egw no longer wants is stopped
        while not h.sim.cluster.jobs[("default", "demo-job-1")]["Stop"]:
            await asyncio.sleep(0.005)


async def test_nomad_plain_text_errors_become_provider_errors() -> None:
    sim = NomadSimulator(time_scale=SCALE, acl=True)
    sim.add_token("reader-only-token", namespaces={"default": {"read-job"}})
    base = await sim.start()
    try:
        async with aiohttp.ClientSession() as session:
            h = Harness(sim, base, session)
            provider = await h.provider(token="reader-only-token")
            record = h.sink.add_task("nomad", provider.validate(SEED).to_json())
            with pytest.raises(ProviderError) as err:
                await provider.submit(record, idempotency_key=record.id)
            assert err.value.message == "nomad: Permission denied"
            assert err.value.upstream_status == 403 and err.value.status == 502
            assert not isinstance(err.value, ProviderUnavailable)
            assert {r.token for r in sim.requests} == {"reader-only-token"}
            await h.close()
    finally:
        await sim.close()


async def test_tls_with_ca_client_certificate_server_name_and_token(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_cert = ca.issue_cert("nomad.test")
    client_cert = ca.issue_cert("egw-client")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(server_ctx)
    ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED  # mutual TLS
    ca_file, cert_file, key_file = (tmp_path / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca.cert_pem.write_to_path(str(ca_file))
    client_cert.cert_chain_pems[0].write_to_path(str(cert_file))
    client_cert.private_key_pem.write_to_path(str(key_file))
    sim = NomadSimulator(time_scale=SCALE, acl=True)
    sim.add_token(
        "a-long-secret-token", namespaces={"default": {"read-job", "submit-job", "read-logs"}}
    )
    base = await sim.start(ssl_context=server_ctx)
    assert base.startswith("https://127.0.0.1:")
    try:
        async with aiohttp.ClientSession() as session:
            h = Harness(sim, base, session)
            tls = {
                "ca_file": str(ca_file),
                "client_cert_file": str(cert_file),
                "client_key_file": str(key_file),
                "token": "a-long-secret-token",
            }
            provider = await h.provider(server_name="nomad.test", **tls)
            task = await h.submit(provider, SEED)
            done = await h.sink.wait_for(task.id, logs=True)
            assert done.status is S.SUCCEEDED and h.sink.output(task.id) == b"hello\n"
            # without the server name the certificate does not match 127.0.0.1
            wrong = await h.provider(**tls)
            record = h.sink.add_task("nomad", wrong.validate({**SEED, "job_id": "x"}).to_json())
            with pytest.raises(ProviderUnavailable) as err:
                await wrong.submit(record, idempotency_key=record.id)
            assert "certificate" in err.value.message.lower() or "ssl" in err.value.message.lower()
            await h.close()
    finally:
        await sim.close()


async def test_status_reads_the_allocations(h: Harness) -> None:
    h.sim.script("demo-job-1", exit_code=4)
    provider = await h.provider()
    task = await h.submit(provider, SEED)
    await h.sink.wait_for(task.id, logs=True)
    obs = await provider.status(h.sink.tasks[task.id])
    assert obs.state is S.FAILED and obs.exit_code == 4
    assert h.sim.count("GET", r"^/v1/job/demo-job-1/allocations$") == 1
    pending = h.sink.add_task("nomad", provider.validate(SEED).to_json())
    assert (await provider.status(pending)).state is S.PENDING


async def test_multibyte_output_split_across_frames(h: Harness) -> None:
    text = ("a" * (64 * 1024 - 1) + "é€ok\n").encode()  # a frame ends inside "é"
    h.sim.script("demo-job-1", stdout=text)
    provider = await h.provider()
    task = await h.submit(provider, SEED)
    await h.sink.wait_for(task.id, logs=True)
    chunks = [d for s, d in h.sink.logs[task.id]]
    assert len(chunks) >= 2
    for chunk in chunks:
        chunk.decode("utf-8")  # every chunk stands alone
    assert h.sink.output(task.id) == text


async def test_full_job_passthrough_with_two_tasks(h: Harness) -> None:
    h.sim.script("pair", stdout=b"both\n")
    provider = await h.provider()
    job = {
        "ID": "pair",
        "Datacenters": ["*"],
        "TaskGroups": [
            {
                "Name": "g",
                "Tasks": [
                    {"Name": "a", "Driver": "raw_exec", "Config": {"command": "echo"}},
                    {"Name": "b", "Driver": "raw_exec", "Config": {"command": "echo"}},
                ],
            }
        ],
    }
    task = await h.submit(provider, {"job": job})
    done = await h.sink.wait_for(task.id, logs=True)
    assert done.status is S.SUCCEEDED
    assert h.sink.output(task.id) == b"both\nboth\n"  # one follower per task and stream


async def test_a_rescheduled_allocation_is_a_new_log_segment(h: Harness) -> None:
    h.sim.script("retry", stdout=b"attempt\n", exit_codes=(1, 0))
    provider = await h.provider()
    job = {
        "ID": "retry",
        "Datacenters": ["*"],
        "TaskGroups": [
            {
                "Name": "g",
                "ReschedulePolicy": {"Attempts": 1, "Unlimited": False, "Delay": 1_000_000_000},
                "Tasks": [{"Name": "t", "Driver": "exec", "Config": {"command": "flaky"}}],
            }
        ],
    }
    task = await h.submit(provider, {"job": job})
    done = await h.sink.wait_for(task.id, logs=True)
    assert done.status is S.SUCCEEDED and done.exit_code == 0
    assert h.sink.states(task.id) == ["queued", "running", "succeeded"]
    first, second = (
        a["ID"] for a in sorted(h.sim.cluster.allocs.values(), key=lambda a: a["CreateIndex"])
    )
    segments = [e.data for e in h.sink.events if e.kind == "nomad.allocation"]
    assert [(s["alloc_id"], s["segment"], s["previous_alloc"]) for s in segments] == [
        (first, 1, None),
        (second, 2, first),
    ]
    assert h.sink.output(task.id) == b"attempt\nattempt\n"
    failed_then = [o for o in h.observations(task.id) if o["status"] == "failed"]
    assert failed_then == []  # the first failure was not final: a replacement was planned


async def test_no_webhooks_and_start_required(h: Harness) -> None:
    provider = NomadProvider(h.config(), session=h.session, retry=RETRY)
    record = h.sink.add_task("nomad", provider.validate(SEED).to_json())
    with pytest.raises(ProviderUnavailable):
        await provider.submit(record, idempotency_key=record.id)
    assert not isinstance(provider, WebhookProvider) and provider.name == "nomad"


async def test_cancelling_a_job_nomad_no_longer_has_ends_cancelled(h: Harness) -> None:
    # hashicorp/nomad nomad/job_endpoint.go Deregister answers a missing job with 200,
    # EvalID "" and JobModifyIndex 0, and no event follows: the provider reads to confirm
    h.sim.script("demo-job-1", stdout=b"tick\n", duration_s=1000)
    provider = await h.provider()
    await h.connected(provider)
    task = await h.submit(provider, SEED)
    await h.sink.wait_for(task.id, state=S.RUNNING)
    h.sim.garbage_collect("demo-job-1")
    await h.cancel(provider, task.id)
    done = await h.sink.wait_for(task.id, state=S.CANCELLED, timeout_s=5)
    assert done.reason == "cancelled; the job is no longer in Nomad (purged or garbage-collected)"
    assert h.sink.states(task.id) == ["queued", "running", "cancelling", "cancelled"]


async def test_a_stream_closed_before_any_line_counts_as_refused(h: Harness) -> None:
    # Nomad 1.11.2+/2.0.0+ (command/agent/event_endpoint.go) answers a subscription its token
    # may not make with 200 and closes it with no body and no heartbeat: after a few such
    # closes in a row, with backoff, the provider polls and says why
    h.sim.event_stream_denied = True
    assert h.sim.stream_answers_before_auth
    provider = await h.provider()
    task = await h.submit(provider, {**SEED, "args": ["polled"]})
    done = await h.sink.wait_for(task.id, logs=True)
    assert done.status is S.SUCCEEDED and h.sink.output(task.id) == b"polled\n"
    health = provider.health()["namespaces"]["default"]
    assert health["mode"] == "poll" and health["stream_refused"] is True
    assert "before any event or heartbeat" in health["refused"]
    assert health["silent_closes"] == 3
    subscriptions = h.sim.count("GET", r"^/v1/event/stream$")
    await asyncio.sleep(0.3)  # no reconnect storm while polling (stream_retry_s is 30 s)
    assert h.sim.count("GET", r"^/v1/event/stream$") == subscriptions == 3


MIB = 1024 * 1024


def rotating_job(job_id: str) -> dict[str, Any]:
    """A job whose task keeps 2 log files of 1 MiB (hashicorp/nomad LogConfig, the smallest)."""
    task = {
        "Name": "main",
        "Driver": "raw_exec",
        "Config": {"command": "print"},
        "LogConfig": {"MaxFiles": 2, "MaxFileSizeMB": 1},
    }
    return {"ID": job_id, "Datacenters": ["*"], "TaskGroups": [{"Name": "g", "Tasks": [task]}]}


def numbered_lines(count: int, size: int) -> bytes:
    """``count`` distinct lines of ``size`` bytes: a skip or a repeat shows in a comparison."""
    return b"".join(f"{n:08d}".encode() * (size // 8 - 1) + b"-------\n" for n in range(count))


def log_gaps(h: Harness, task_id: str) -> list[dict[str, Any]]:
    return [e.data for e in h.sink.events if e.task_id == task_id and e.kind == "nomad.log_gap"]


async def test_live_follow_across_rotation_resumes_in_the_right_file(h: Harness) -> None:
    """hashicorp/nomad client/fs_endpoint.go logsImpl/findClosest: ``origin=start&offset=N``
    counts from the lowest log file still on disk. A follow that reconnects after ``.0`` was
    rotated away resumes from its (file, offset) cursor, not N bytes into what is left."""
    out = numbered_lines(40, 128 * 1024)  # 5 MiB through 2 files of 1 MiB
    h.sim.script("rot-live", stdout=out, duration_s=120)
    provider = await h.provider()
    task = await h.submit(provider, {"job": rotating_job("rot-live")})
    async with asyncio.timeout(10):  # followed in time, past a rotation that deleted .0
        while len(h.sink.output(task.id)) < 2 * MIB + 256 * 1024:
            await asyncio.sleep(0.005)
    assert h.sim.drop_log_streams() >= 1  # the follow reconnects mid-output
    done = await h.sink.wait_for(task.id, logs=True)
    assert done.status is S.SUCCEEDED
    assert h.sink.output(task.id) == out  # nothing skipped, nothing twice
    assert log_gaps(h, task.id) == []
    stored = h.sink.cursors[f"nomad:log:{next(iter(h.sim.cluster.allocs))}:main:stdout"]
    assert stored == f"4:{len(out) - 4 * MIB}"  # (file index, offset in it)


async def test_restart_after_rotation_records_the_bytes_lost_once(h: Harness) -> None:
    """The gateway is down while the task rotates its cursor's file away: the restarted
    follower says how many bytes are gone (rotated files are exactly MaxFileSizeMB MiB,
    client/logmon/logging/rotator.go), then stores exactly what is still on disk."""
    out = numbered_lines(20, 256 * 1024)  # 5 MiB
    h.sim.script("rot-down", stdout=out, duration_s=150)
    first = await h.provider()
    task = await h.submit(provider=first, task={"job": rotating_job("rot-down")})
    async with asyncio.timeout(10):
        while len(h.sink.output(task.id)) < 256 * 1024:
            await asyncio.sleep(0.005)
    await first.close()
    head = h.sink.output(task.id)
    assert len(head) < MIB and out.startswith(head)
    async with asyncio.timeout(10):  # the task ends while egw is down
        while not any(a["ClientStatus"] == "complete" for a in h.sim.cluster.allocs.values()):
            await asyncio.sleep(0.01)
    (log,) = [v for (_, _, kind), v in h.sim.cluster.logs.items() if kind == "stdout"]
    lowest = min(log.files)
    assert lowest > 1  # .0, where the cursor is, and more are gone
    await h.provider()  # a restarted gateway, same store
    done = await h.sink.wait_for(task.id, logs=True)
    assert done.status is S.SUCCEEDED
    assert h.sink.output(task.id) == head + out[lowest * MIB :]
    alloc_id = next(iter(h.sim.cluster.allocs))
    assert log_gaps(h, task.id) == [
        {
            "alloc_id": alloc_id,
            "stream": "stdout",
            "bytes_lost": lowest * MIB - len(head),
            "from_file": "alloc/logs/main.stdout.0",
            "to_file": f"alloc/logs/main.stdout.{lowest}",
        }
    ]


async def test_a_byte_count_cursor_of_an_older_version_still_resumes(h: Harness) -> None:
    """Cursors stored as a plain byte count (before file positions) are read as a count
    from the start of the output and mapped onto the files on disk."""
    out = numbered_lines(24, 128 * 1024)  # 3 MiB: .1 and .2 stay on disk
    h.sim.script("rot-old", stdout=out, duration_s=2, start_delay_s=50)
    first = await h.provider()
    task = await h.submit(first, {"job": rotating_job("rot-old")})
    await first.close()  # before the task starts: no follower has stored anything
    async with asyncio.timeout(10):
        while not any(a["ClientStatus"] == "complete" for a in h.sim.cluster.allocs.values()):
            await asyncio.sleep(0.01)
    alloc_id = next(iter(h.sim.cluster.allocs))
    h.sink.cursors[f"nomad:log:{alloc_id}:main:stdout"] = str(MIB + 1000)
    await h.provider()
    done = await h.sink.wait_for(task.id, logs=True)
    assert done.status is S.SUCCEEDED
    assert h.sink.output(task.id) == out[MIB + 1000 :]
    assert log_gaps(h, task.id) == []
