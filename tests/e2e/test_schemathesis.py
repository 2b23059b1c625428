"""A property-based run of schemathesis against a live `egw serve` on loopback.

The gateway runs as a real process on a free port, on a config from `support.config_dict`
with only the local runner, restricted to ``echo`` and ``true`` (fuzzed submits run nothing
harmful). Its own ``GET /v1/openapi.json`` is loaded, and for every operation schemathesis
draws schema-valid (positive) and schema-violating (negative) requests, sends them with the
admin token, and checks each answer:

* no 5xx (``not_a_server_error``);
* the answer conforms: its status, content type, headers and body are documented
  (``status_code_conformance``, ``content_type_conformance``, ``response_headers_conformance``,
  ``response_schema_conformance``; an SSE body event by event);
* no schema-violating request is accepted (``negative_data_rejection``) and no schema-valid
  one refused with a 400 (``positive_data_acceptance``);
* an operation that declares bearer auth refuses the same request without or with a wrong
  token (``ignored_auth``).

Operations on a task run twice: with drawn ids (unknown tasks) and pinned to a real, finished
task. Bounded: at most ``MAX_EXAMPLES`` requests per operation and mode, a short request
timeout (event streams are read until it passes), no shrinking, hypothesis derandomized (the
same requests every run), and a time budget for the whole run.

A second run does the same with two tokens of two namespaces (``team-a``, ``team-b``): it
sends ``team-a``'s token, pins the operations on a task to a finished task of ``team-b`` and
``cursor`` to a cursor ``team-b`` was handed, and a check of its own
(``no_other_namespace``) fails any answer whose body shows a task, an event or an id of a
namespace the token may not read (an id the request itself named, echoed in a 404, aside).

Two narrowings of the served document, both because a schema cannot say them:
``SubmitRequest`` is narrowed to ``LocalSubmit`` (only the local runner is enabled here, and
the other providers' task shapes are theirs), and ``cursor`` is pinned to a real ``next_cursor``
for positive requests (a cursor is opaque: any string is schema-valid, few are cursors).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi import checks as openapi_checks
from support import ADMIN_TOKEN, GatewayProcess, config_dict

MAX_EXAMPLES = 30
BUDGET_S = 75.0  # for the whole run; the test's own timeout is above it
REQUEST_TIMEOUT_S = 2.0
STREAM_TIMEOUT_S = 0.3  # an event stream is read this long, then cut short
CHECKS = [
    not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.negative_data_rejection,
    openapi_checks.positive_data_acceptance,
    openapi_checks.ignored_auth,
]

pytestmark = [
    pytest.mark.timeout(150),
]


class Gateway(GatewayProcess):
    """`egw serve` with only harmless local commands, and short blocking queries."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(
            tmp_path,
            {
                "providers": {"local": {"allowed_commands": ["echo", "true"], "max_concurrent": 8}},
                # a blocking query on a real task waits at most this long
                "server": {"max_wait_s": 0.2},
                "logging": {"level": "warning"},
            },
        )


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    gw = Gateway(tmp_path)
    gw.start()
    yield gw
    gw.stop()


def real_task_and_cursor(url: str, token: str = ADMIN_TOKEN) -> tuple[str, str]:
    """A finished task (for the operations on a task) and a real cursor (for listing)."""
    headers = {"Authorization": f"Bearer {token}"}
    ids = []
    for word in ("one", "two"):
        body = {"provider": "local", "task": {"command": "echo", "args": [word]}}
        resp = requests.post(f"{url}/v1/tasks", json=body, headers=headers, timeout=10)
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["id"])
    for task_id in ids:
        for _ in range(100):
            task = requests.get(f"{url}/v1/tasks/{task_id}", headers=headers, timeout=10).json()
            if task["status"] in ("succeeded", "failed", "cancelled", "timed_out"):
                break
            time.sleep(0.05)
    page = requests.get(f"{url}/v1/tasks?limit=1", headers=headers, timeout=10).json()
    assert page["next_cursor"], page
    return ids[0], page["next_cursor"]


def load_schema(url: str, token: str = ADMIN_TOKEN) -> Any:
    raw = requests.get(f"{url}/v1/openapi.json", timeout=10).json()
    raw["components"]["schemas"]["SubmitRequest"] = {"$ref": "#/components/schemas/LocalSubmit"}
    config = schemathesis.Config.from_dict(
        {
            "base-url": url,
            "request-timeout": REQUEST_TIMEOUT_S,
            "max-stream-events": 50,
            "auth": {"openapi": {"bearerAuth": {"bearer": token}}},
            "operations": [
                {"include-path": path, "request-timeout": STREAM_TIMEOUT_S}
                for path in ("/v1/events", "/v1/tasks/{id}/events", "/v1/tasks/{id}/logs")
            ],
        }
    )
    return schemathesis.openapi.from_dict(raw, config=config)


def has_inputs(operation: Any) -> bool:
    """Whether there is anything to make invalid (a parameter or a body)."""
    return bool(list(operation.iter_parameters())) or bool(operation.body)


def test_schemathesis_finds_no_failure(gateway: Gateway) -> None:
    schema = load_schema(gateway.url)
    task_id, cursor = real_task_and_cursor(gateway.url)
    fuzz_every_operation(gateway, schema, task_id, cursor, CHECKS, MAX_EXAMPLES)


def fuzz_every_operation(
    gateway: GatewayProcess,
    schema: Any,
    task_id: str,
    cursor: str,
    checks: list[Callable[..., Any]],
    max_examples: int,
) -> None:
    """Every operation in both modes (and pinned to ``task_id``), each answer checked."""
    started = time.monotonic()
    failures: dict[tuple[str, ...], str] = {}
    sent: dict[str, int] = {}
    planned: set[str] = set()

    def run(operation: Any, mode: GenerationMode, label: str, **fixed: Any) -> None:
        if mode is GenerationMode.NEGATIVE and not has_inputs(operation):
            return  # nothing to make invalid (healthz, readyz, metrics, this document)
        planned.add(f"{label} {mode.value}")

        @settings(
            max_examples=max_examples,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode, **fixed))
        def fuzz(case: Any) -> None:
            if time.monotonic() - started > BUDGET_S:
                failures.setdefault(("budget",), f"the {BUDGET_S:.0f} s budget ran out at {label}")
                return
            key = f"{label} {mode.value}"
            sent[key] = sent.get(key, 0) + 1
            try:
                case.call_and_validate(checks=checks)
            except FailureGroup as group:
                for failure in group.exceptions:
                    status = getattr(failure, "status_code", "")
                    failures.setdefault(
                        (label, mode.value, failure.title, str(status)), str(group)[:2500]
                    )
            except requests.exceptions.RequestException as exc:
                failures.setdefault(
                    (label, mode.value, type(exc).__name__),
                    f"{exc!r}"[:500] + f"\n\nReproduce with:\n\n    {case.as_curl_command()}",
                )

        try:
            fuzz()
        except Unsatisfiable:
            failures.setdefault(
                (label, mode.value, "unsatisfiable"), "schemathesis could not draw a request"
            )

    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fixed: dict[str, Any] = {}
            if operation.label == "GET /v1/tasks" and mode is GenerationMode.POSITIVE:
                fixed["query"] = {"cursor": cursor}
            run(operation, mode, operation.label, **fixed)
            if "{id}" in operation.path:
                run(
                    operation,
                    mode,
                    f"{operation.label} (a real task)",
                    path_parameters={"id": task_id},
                )

    elapsed = time.monotonic() - started
    report = "\n\n".join(f"=== {' | '.join(key)}\n{text}" for key, text in sorted(failures.items()))
    server_errors = [key for key in failures if "Server error" in " ".join(key)]
    assert not failures, (
        f"{len(failures)} distinct failures in {elapsed:.1f} s, {sum(sent.values())} requests:\n\n"
        f"{report}" + (f"\n\n--- gateway log (tail) ---\n{gateway.tail()}" if server_errors else "")
    )
    assert elapsed < BUDGET_S
    # every operation of the document was exercised, in both modes where it has inputs
    assert set(sent) == planned, sorted(planned - set(sent))


# --- two tokens, two namespaces --------------------------------------------------------------

TEAM_A = "team-a-token-0123456789"
TEAM_B = "team-b-token-0123456789"
_TASK_ID = re.compile(r"t_[0-9a-f]{32}")
#: the tasks of team-b, seeded before the run (the gateway makes no others for it)
B_TASKS: set[str] = set()


class TwoTeams(GatewayProcess):
    def __init__(self, tmp_path: Path) -> None:
        tokens = config_dict(tmp_path)["auth"]["tokens"]
        super().__init__(
            tmp_path,
            {
                "providers": {"local": {"allowed_commands": ["echo", "true"], "max_concurrent": 8}},
                "server": {"max_wait_s": 0.2},
                "logging": {"level": "warning"},
                "namespaces": {"team-a": {}, "team-b": {}},
                "auth": {
                    "tokens": [
                        *tokens,
                        {"name": "a", "token": TEAM_A, "namespaces": ["team-a"]},
                        {"name": "b", "token": TEAM_B, "namespaces": ["team-b"]},
                    ]
                },
            },
        )


@schemathesis.check
def no_other_namespace(ctx: Any, response: Any, case: Any) -> bool | None:
    """No task, event or id of team-b in an answer to team-a (an id the request named aside;
    the OpenAPI document, whose examples are in ``default``, aside)."""
    if case.operation.path == "/v1/openapi.json":
        return None
    text = response.text or ""
    asked = json.dumps([case.path_parameters, case.query, case.headers, case.body], default=str)
    leaked = {i for i in _TASK_ID.findall(text) if i in B_TASKS and i not in asked}
    assert not leaked, f"team-b's tasks {sorted(leaked)} in an answer to team-a"
    for value in _json_values(text):
        for ns in _namespaces(value):
            assert ns == "team-a", f"an object of namespace {ns!r} in an answer to team-a"
    return None


def _json_values(text: str) -> list[Any]:
    """The body as JSON, or each SSE event's data as JSON (what is not JSON is skipped)."""
    candidates = [text] + [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    out = []
    for raw in candidates:
        try:
            out.append(json.loads(raw))
        except ValueError:
            continue
    return out


def _namespaces(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        if isinstance(value.get("namespace"), str) and (
            "task_id" in value or _TASK_ID.fullmatch(str(value.get("id", "")))
        ):
            yield value["namespace"]
        for item in value.values():
            yield from _namespaces(item)
    elif isinstance(value, list):
        for item in value:
            yield from _namespaces(item)


def test_schemathesis_two_tokens_find_no_cross_namespace_answer(tmp_path: Path) -> None:
    gateway = TwoTeams(tmp_path)
    gateway.start()
    try:
        b_task, b_cursor = real_task_and_cursor(gateway.url, TEAM_B)
        listed = requests.get(
            f"{gateway.url}/v1/tasks",
            headers={"Authorization": f"Bearer {TEAM_B}"},
            timeout=10,
        ).json()
        B_TASKS.update(t["id"] for t in listed["tasks"])
        assert b_task in B_TASKS and len(B_TASKS) == 2
        real_task_and_cursor(gateway.url, TEAM_A)  # team-a has tasks of its own to list
        schema = load_schema(gateway.url, TEAM_A)
        # fewer examples: the first run covers the schema, this one the namespaces
        fuzz_every_operation(
            gateway, schema, b_task, b_cursor, [*CHECKS, no_other_namespace], MAX_EXAMPLES // 2
        )
        # and the team-b task was never touched by team-a's requests
        mine = requests.get(
            f"{gateway.url}/v1/tasks/{b_task}/events",
            headers={"Authorization": f"Bearer {TEAM_B}"},
            timeout=10,
        ).json()
        kinds = {e["kind"] for e in mine["events"]}
        assert not kinds & {"cancel_requested", "rerun"}, kinds
    finally:
        B_TASKS.clear()
        gateway.stop()
