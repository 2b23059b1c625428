"""The plumbing every provider shares: background tasks, the sink slot, the retry policy."""

from __future__ import annotations

import asyncio

import pytest
import structlog

from egw.background import BackgroundTasks, cancel_and_wait
from egw.config import RetryConfig
from egw.errors import ProviderError, ProviderUnavailable
from egw.providers.base import SinkSlot
from egw.providers.http import parse_retry_after
from egw.providers.retry import backoff_s, retrying, with_retries

FAST = RetryConfig(attempts=3, initial_backoff_s=0.001, max_backoff_s=0.002, deadline_s=5.0)


async def test_background_tasks_log_failures_and_close_cancels() -> None:
    bg = BackgroundTasks("test")

    async def boom() -> None:
        raise RuntimeError("bug")

    async def refused() -> None:
        raise ProviderError("no", provider="x")

    forever = bg.spawn(asyncio.sleep(3600), name="sleeper")
    with structlog.testing.capture_logs() as logs:
        await asyncio.gather(bg.spawn(boom()), bg.spawn(refused()), return_exceptions=True)
        await asyncio.sleep(0)
    levels = sorted((e["log_level"], e["event"]) for e in logs)
    assert levels == [("error", "background_failed"), ("warning", "background_failed")]
    assert len(bg) == 1
    await bg.close()
    assert forever.cancelled() and len(bg) == 0
    await cancel_and_wait(None)


async def test_sink_slot_refuses_before_start() -> None:
    slot = SinkSlot("nomad")
    assert not slot.started
    with pytest.raises(ProviderUnavailable, match="nomad: the provider is not started"):
        slot()


async def test_bounded_policy_retries_only_unavailable_and_reraises() -> None:
    calls = 0

    async def flaky() -> int:
        nonlocal calls
        calls += 1
        raise ProviderUnavailable("down", provider="x")

    with pytest.raises(ProviderUnavailable):
        await with_retries(FAST, flaky, provider="x", operation="op")
    assert calls == 3

    calls = 0

    async def final() -> int:
        nonlocal calls
        calls += 1
        raise ProviderError("no", provider="x", upstream_status=404)

    with pytest.raises(ProviderError):
        await with_retries(FAST, final, provider="x", operation="op")
    assert calls == 1


async def test_forever_policy_outlasts_attempts_and_long_retry_after_stops() -> None:
    calls = 0
    async for attempt in retrying(FAST, provider="x", operation="stream", forever=True):
        with attempt:
            calls += 1
            if calls < 10:  # far past FAST.attempts
                raise ProviderUnavailable("reconnect", provider="x")
    assert calls == 10

    hinted = 0

    async def limited() -> None:
        nonlocal hinted
        hinted += 1
        raise ProviderUnavailable("rate", provider="x", retry_after_s=3600)

    with pytest.raises(ProviderUnavailable):
        await with_retries(FAST, limited, provider="x", operation="op", max_retry_after_s=60)
    assert hinted == 1


def test_backoff_is_full_jitter_and_capped() -> None:
    cfg = RetryConfig(attempts=5, initial_backoff_s=1.0, max_backoff_s=4.0, deadline_s=60)
    waits = [backoff_s(cfg, 10) for _ in range(200)]
    assert all(0 <= w <= 4.0 for w in waits) and max(waits) > 2.0
    assert parse_retry_after("7") == 7.0 and parse_retry_after("nan") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
