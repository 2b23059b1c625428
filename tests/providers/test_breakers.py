"""A provider's `Breakers`: targets, the /readyz summary, listeners, and the refusal."""

from __future__ import annotations

import aiohttp
import pytest

from egw.config import CircuitConfig
from egw.errors import CircuitOpen
from egw.providers.circuit import Breakers, CircuitChange, Circuits, host_of
from egw.providers.http import http_request, streamed_get


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_a_target_is_the_host_and_port_of_the_url() -> None:
    assert host_of("https://api.github.com/repos/o/r") == "api.github.com"
    assert host_of("http://user:pw@127.0.0.1:4646/v1/jobs?x=1") == "127.0.0.1:4646"
    assert host_of("HTTPS://Run.GoogleAPIs.com") == "run.googleapis.com"


def test_the_summary_is_the_worst_target_and_moves_reach_every_listener() -> None:
    clock = Clock()
    board = Circuits(clock=clock)
    heard: list[CircuitChange] = []

    def broken(change: CircuitChange) -> None:
        raise RuntimeError("a listener's bug")

    board.listeners.extend([broken, heard.append])
    b = board.breakers("github_actions", CircuitConfig(failures=2, open_s=10, max_open_s=40))
    assert b.health() == {"state": "closed", "failures": 0, "retry_after_s": 0.0, "targets": {}}
    b.success("api", b.admit("api"))
    b.failure("blobs", b.admit("blobs"), "HTTP 502")
    b.failure("blobs", b.admit("blobs"), "HTTP 503")  # the listener's bug does not stop this
    clock.now += 4
    summary = board.health()["github_actions"]
    assert (summary["state"], summary["failures"], summary["retry_after_s"]) == ("open", 2, 6.0)
    assert summary["targets"]["api"]["state"] == "closed"
    assert summary["targets"]["blobs"]["last_error"] == "HTTP 503"
    assert summary["targets"]["blobs"]["transitions"] == {"closed": 0, "half_open": 0, "open": 1}
    assert [(c.target, c.transition.after.value) for c in heard] == [("blobs", "open")]
    with pytest.raises(CircuitOpen) as err:
        b.admit("blobs")
    assert err.value.status == 503 and err.value.retry_after_s == 6.0
    details = {"provider": "github_actions", "target": "blobs", "retry_after_s": 6.0}
    assert err.value.details == details
    assert "last failure: HTTP 503" in err.value.message


async def test_an_open_breaker_refuses_calls_and_streams_without_connecting() -> None:
    b = Breakers("nomad", CircuitConfig(failures=1, open_s=30, max_open_s=30), clock=Clock())
    b.failure("default", b.admit("default"), "refused")
    async with aiohttp.ClientSession() as session:
        # port 9 (discard) on loopback: a call that went out would fail differently
        url = "http://127.0.0.1:9/v1/jobs"
        with pytest.raises(CircuitOpen):
            await http_request(session, "GET", url, provider="nomad", circuit=b, target="default")
        with pytest.raises(CircuitOpen):
            async with streamed_get(
                session, url, provider="nomad", what="event stream", circuit=b, target="default"
            ):
                pass
