"""egw.wire.cloudrun: names, task spec, RunJobRequest, the state mapping, log reading, errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from egw.core.model import TaskState
from egw.errors import InvalidRequest, ProviderError
from egw.wire import cloudrun as w

SEED = {"project": "my-project", "region": "asia-east1", "job": "my-job"}
EXEC = "projects/my-project/locations/asia-east1/jobs/my-job/executions/my-job-x7k2p"


# --- names and the spec -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field,value",
    [
        ("project", "../other"),
        ("project", "my-project/locations/x"),
        ("project", "my%2Fproject"),
        ("project", "example.com:proj"),
        ("project", "MyProject"),
        ("project", "ab"),
        ("project", "my-project-"),
        ("project", "my-project\n"),
        ("project", ""),
        ("project", 42),
        ("region", "asia-east1/../us"),
        ("region", "asia-east1:run"),
        ("region", "ASIA-EAST1"),
        ("region", "%2E%2E"),
        ("job", "../../other-job"),
        ("job", "my-job/executions/x"),
        ("job", "my-job:run"),
        ("job", "my-job%2F..%2Fx"),
        ("job", "-job"),
        ("job", "job-"),
        ("job", "1job"),
        ("job", "a" * 64),
        ("job", "my job"),
        ("job", "jöb"),
        ("job", None),
    ],
)
def test_names_that_could_steer_a_request_are_refused(field: str, value: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        w.validate_task({**SEED, field: value})
    assert info.value.field == f"task.{field}"
    assert info.value.status == 400


@pytest.mark.parametrize(
    "field,value",
    [
        ("project", "my-project"),
        ("project", "123456789012"),
        ("project", "a23456"),
        ("region", "us-central1"),
        ("region", "northamerica-northeast2"),
        ("region", "europe-west10"),
        ("job", "j"),
        ("job", "a" * 63),
        ("job", "etl-2024-nightly"),
    ],
)
def test_valid_names_pass(field: str, value: str) -> None:
    assert w.validate_task({**SEED, field: value}).to_json()[field] == value


def test_seed_task_normalises_with_overrides() -> None:
    spec = w.validate_task(
        {
            **SEED,
            "args": ["--date", "2026-11-27"],
            "env": {"MODE": "full"},
            "container": "worker",
            "task_count": 3,
            "timeout_s": 600,
        }
    )
    assert spec.to_json() == {
        **SEED,
        "args": ["--date", "2026-11-27"],
        "env": {"MODE": "full"},
        "container": "worker",
        "task_count": 3,
        "timeout_s": 600,
    }
    assert w.validate_task(SEED).to_json() == {
        **SEED,
        "args": None,
        "env": {},
        "container": None,
        "task_count": None,
        "timeout_s": None,
    }


def test_project_and_region_default_from_config() -> None:
    spec = w.validate_task(
        {"job": "my-job"}, default_project="p-default", default_region="us-east1"
    )
    assert (spec.project, spec.region) == ("p-default", "us-east1")
    with pytest.raises(InvalidRequest, match="no default project") as info:
        w.validate_task({"job": "my-job", "region": "us-east1"})
    assert info.value.field == "task.project"
    with pytest.raises(InvalidRequest) as info:
        w.validate_task({"project": "my-project", "job": "my-job"})
    assert info.value.field == "task.region"
    with pytest.raises(InvalidRequest) as info:
        w.validate_task({"project": "my-project", "region": "us-east1"})
    assert info.value.field == "task.job"


@pytest.mark.parametrize(
    "extra,field",
    [
        ({"image": "x"}, "task.image"),
        ({"args": "echo hi"}, "task.args"),
        ({"args": ["ok", 3]}, "task.args[1]"),
        ({"args": ["a\x00b"]}, "task.args[0]"),
        ({"env": ["A=1"]}, "task.env"),
        ({"env": {"A": 1}}, "task.env.A"),
        ({"env": {"A=B": "1"}}, "task.env.A=B"),
        ({"env": {"EGW_TASK_ID": "spoof"}}, "task.env.EGW_TASK_ID"),
        ({"env": {"CLOUD_RUN_TASK_INDEX": "3"}}, "task.env.CLOUD_RUN_TASK_INDEX"),
        ({"container": "Worker/../x"}, "task.container"),
        ({"task_count": 0}, "task.task_count"),
        ({"task_count": 1.5}, "task.task_count"),
        ({"task_count": True}, "task.task_count"),
        ({"task_count": 10001}, "task.task_count"),
        ({"timeout_s": float("inf")}, "task.timeout_s"),
        ({"timeout_s": 168 * 3600 + 1}, "task.timeout_s"),
        ({"timeout_s": "600"}, "task.timeout_s"),
    ],
)
def test_bad_overrides_name_their_field(extra: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        w.validate_task({**SEED, **extra})
    assert info.value.field == field


def test_task_must_be_an_object() -> None:
    with pytest.raises(InvalidRequest) as info:
        w.validate_task(["my-job"])  # type: ignore[arg-type]
    assert info.value.field == "task"


def test_job_ref_rechecks_a_stored_spec() -> None:
    spec = w.CloudRunSpec.from_json(SEED)
    assert spec.job_ref.name == "projects/my-project/locations/asia-east1/jobs/my-job"
    with pytest.raises(InvalidRequest):
        w.CloudRunSpec.from_json({**SEED, "job": "../x"})


def test_a_stored_spec_round_trips() -> None:
    spec = w.validate_task({**SEED, "args": [], "env": {"MODE": "full"}, "task_count": 2})
    assert w.CloudRunSpec.from_json(spec.to_json()) == spec
    assert w.CloudRunSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


@pytest.mark.parametrize("field", ["task_count", "timeout_s"])
def test_a_huge_number_is_a_400_not_an_overflow(field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        w.validate_task({**SEED, field: 10**400})
    assert info.value.field == f"task.{field}" and info.value.status == 400


# --- RunJobRequest ------------------------------------------------------------------------------


def test_run_job_request_carries_overrides_and_the_task_id() -> None:
    spec = w.validate_task(
        {
            **SEED,
            "args": ["a", "b"],
            "env": {"MODE": "full"},
            "container": "worker",
            "task_count": 4,
            "timeout_s": 900,
        }
    )
    assert w.run_job_request(spec, "t_1") == {
        "overrides": {
            "containerOverrides": [
                {
                    "name": "worker",
                    "args": ["a", "b"],
                    "env": [
                        {"name": "MODE", "value": "full"},
                        {"name": "EGW_TASK_ID", "value": "t_1"},
                    ],
                }
            ],
            "taskCount": 4,
            "timeout": "900s",
        }
    }


def test_run_job_request_minimal_and_clear_args() -> None:
    assert w.run_job_request(w.validate_task(SEED), "t_2") == {
        "overrides": {"containerOverrides": [{"env": [{"name": "EGW_TASK_ID", "value": "t_2"}]}]}
    }
    body = w.run_job_request(w.validate_task({**SEED, "args": []}), "t_3")
    assert body["overrides"]["containerOverrides"][0]["clearArgs"] is True
    assert "args" not in body["overrides"]["containerOverrides"][0]


# --- operations and executions ------------------------------------------------------------------


def _execution(**fields: Any) -> dict[str, Any]:
    return {"name": EXEC, "createTime": "2026-11-27T10:00:00.123456789Z", "taskCount": 1, **fields}


def test_parse_operation_reads_the_execution_from_metadata() -> None:
    op = {
        "name": "projects/my-project/locations/asia-east1/operations/0f1e2d",
        "metadata": {
            "@type": "type.googleapis.com/google.cloud.run.v2.Execution",
            **_execution(logUri="https://console.cloud.google.com/x"),
        },
    }
    parsed = w.parse_operation(op)
    assert parsed.name == op["name"] and parsed.done is False and parsed.error is None
    assert parsed.execution is not None and "@type" not in parsed.execution
    assert parsed.execution["logUri"] == "https://console.cloud.google.com/x"
    done = w.parse_operation({**op, "done": True, "error": {"code": 9, "message": "no"}})
    assert done.done and done.error == "FAILED_PRECONDITION: no"
    assert w.parse_operation({"name": "x"}).execution is None
    with pytest.raises(ProviderError):
        w.parse_operation(["not", "an", "operation"])


@pytest.mark.parametrize(
    "name",
    [
        EXEC + "/../../jobs/x",
        "projects/my-project/locations/asia-east1/jobs/my-job",
        "projects/a%2Fb/locations/asia-east1/jobs/my-job/executions/e",
        "projects/my-project/locations/asia-east1/jobs/my-job/executions/E:cancel",
        None,
        3,
    ],
)
def test_upstream_execution_names_are_checked_before_use(name: Any) -> None:
    with pytest.raises(ProviderError):
        w.parse_execution_name(name)


def test_execution_name_parts() -> None:
    ref = w.parse_execution_name(EXEC)
    assert (ref.project, ref.region, ref.job, ref.execution) == (
        "my-project",
        "asia-east1",
        "my-job",
        "my-job-x7k2p",
    )
    assert ref.name == EXEC
    assert w.parse_execution_name(EXEC.replace("my-project", "123456789012")).project == (
        "123456789012"
    )
    with pytest.raises(ProviderError):
        w.check_operation_name("projects/p/locations/l/operations/../x")
    name = "projects/my-project/locations/asia-east1/operations/5d7e-9a"
    assert w.check_operation_name(name) == name


def test_execution_task_id_reads_the_override_env() -> None:
    ex = _execution(
        template={
            "containers": [
                {"env": [{"name": "MODE", "value": "x"}, {"name": "EGW_TASK_ID", "value": "t_9"}]}
            ]
        }
    )
    assert w.execution_task_id(ex) == "t_9"
    assert w.execution_task_id(_execution()) is None


def _completed(state: str, **extra: str) -> list[dict[str, str]]:
    return [
        {"type": "Started", "state": "CONDITION_SUCCEEDED"},
        {"type": "Completed", "state": state, **extra},
    ]


# The mapping table (run-v2-jobs.md "Execution state"): fields -> (state, reason prefix, exit code)
MAPPING: list[tuple[str, dict[str, Any], TaskState, str, int | None]] = [
    (
        "just created",
        {"conditions": [{"type": "Completed", "state": "CONDITION_PENDING"}]},
        TaskState.QUEUED,
        "execution created",
        None,
    ),
    ("no conditions yet", {}, TaskState.QUEUED, "execution created", None),
    (
        "started",
        {
            "startTime": "2026-11-27T10:00:01Z",
            "runningCount": 1,
            "conditions": _completed("CONDITION_RECONCILING"),
        },
        TaskState.RUNNING,
        "1/1 tasks running",
        None,
    ),
    (
        "running count without start time",
        {"runningCount": 2, "taskCount": 3},
        TaskState.RUNNING,
        "2/3 tasks running",
        None,
    ),
    (
        "succeeded",
        {
            "startTime": "2026-11-27T10:00:01Z",
            "succeededCount": 1,
            "completionTime": "2026-11-27T10:00:09Z",
            "conditions": _completed("CONDITION_SUCCEEDED"),
        },
        TaskState.SUCCEEDED,
        "1/1 tasks succeeded",
        0,
    ),
    (
        "non-zero exit",
        {
            "failedCount": 1,
            "conditions": _completed(
                "CONDITION_FAILED",
                executionReason="NON_ZERO_EXIT_CODE",
                message="Task my-job-x7k2p-task0 failed with message: exit 3",
            ),
        },
        TaskState.FAILED,
        "NON_ZERO_EXIT_CODE: Task my-job-x7k2p-task0 failed",
        None,
    ),
    (
        "failed without execution reason",
        {
            "conditions": _completed(
                "CONDITION_FAILED", reason="CONTAINER_MISSING", message="image not found"
            )
        },
        TaskState.FAILED,
        "CONTAINER_MISSING: image not found",
        None,
    ),
    (
        "failed, nothing said",
        {"conditions": _completed("CONDITION_FAILED")},
        TaskState.FAILED,
        "FAILED",
        None,
    ),
    (
        "deleted",
        {"conditions": _completed("CONDITION_FAILED", executionReason="DELETED")},
        TaskState.FAILED,
        "DELETED",
        None,
    ),
    (
        "cancelling",
        {
            "startTime": "2026-11-27T10:00:01Z",
            "runningCount": 1,
            "conditions": _completed("CONDITION_RECONCILING", executionReason="CANCELLING"),
        },
        TaskState.CANCELLING,
        "cancelling",
        None,
    ),
    (
        "cancelled",
        {
            "cancelledCount": 1,
            "conditions": _completed(
                "CONDITION_FAILED",
                executionReason="CANCELLED",
                message="The execution was cancelled.",
            ),
        },
        TaskState.CANCELLED,
        "cancelled: The execution was cancelled.",
        None,
    ),
]


@pytest.mark.parametrize("case,fields,state,reason,exit_code", MAPPING, ids=[m[0] for m in MAPPING])
def test_execution_observation(
    case: str, fields: dict[str, Any], state: TaskState, reason: str, exit_code: int | None
) -> None:
    obs = w.execution_observation(_execution(**fields))
    assert obs.state is state
    assert obs.reason is not None and obs.reason.startswith(reason)
    assert obs.exit_code == exit_code
    assert obs.detail["execution"] == EXEC


def test_failed_exit_code_comes_from_the_first_failed_task() -> None:
    ex = _execution(
        failedCount=2,
        conditions=_completed("CONDITION_FAILED", executionReason="NON_ZERO_EXIT_CODE"),
    )
    tasks = [
        {"index": 2, "lastAttemptResult": {"exitCode": 7}},
        {"index": 0, "lastAttemptResult": {"exitCode": 0}},
        {"index": 1, "lastAttemptResult": {"exitCode": 3}},
    ]
    assert w.execution_observation(ex, tasks).exit_code == 3
    assert w.execution_observation(ex, [{"index": 0}]).exit_code is None


def test_observation_times_and_counts() -> None:
    obs = w.execution_observation(
        _execution(
            taskCount=3,
            succeededCount="2",
            failedCount=1,
            completionTime="2026-11-27T10:01:00Z",
            conditions=_completed("CONDITION_FAILED", executionReason="NON_ZERO_EXIT_CODE"),
        )
    )
    assert obs.at is not None and obs.at.isoformat() == "2026-11-27T10:01:00+00:00"
    assert obs.detail["succeeded"] == 2 and obs.detail["failed"] == 1
    assert obs.detail["execution_reason"] == "NON_ZERO_EXIT_CODE"


# --- Cloud Logging ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,normal",
    [
        ("2026-11-27T10:00:00Z", "2026-11-27T10:00:00.000000000Z"),
        ("2026-11-27T10:00:00.5Z", "2026-11-27T10:00:00.500000000Z"),
        ("2026-11-27T10:00:00.123456789Z", "2026-11-27T10:00:00.123456789Z"),
        ("2026-11-27T12:00:00.1+02:00", "2026-11-27T10:00:00.100000000Z"),
    ],
)
def test_normalize_timestamp(text: str, normal: str) -> None:
    assert w.normalize_timestamp(text) == normal


def test_normalize_timestamp_refuses_junk() -> None:
    with pytest.raises(ValueError):
        w.normalize_timestamp('2026-11-27" OR true')


def test_log_filter_and_request() -> None:
    ref = w.parse_execution_name(EXEC)
    assert w.log_filter(ref) == (
        'resource.type="cloud_run_job" AND resource.labels.job_name="my-job" AND '
        'resource.labels.location="asia-east1" AND '
        'labels."run.googleapis.com/execution_name"="my-job-x7k2p"'
    )
    body = w.list_entries_request(
        ref, since="2026-11-27T10:00:00.5Z", until="2026-11-27T10:00:09Z", page_token="tok"
    )
    assert body["filter"].endswith(
        ' AND timestamp>="2026-11-27T10:00:00.500000000Z"'
        ' AND timestamp<="2026-11-27T10:00:09.000000000Z"'
    )
    assert body["resourceNames"] == ["projects/my-project"]
    assert body["orderBy"] == "timestamp asc" and body["pageToken"] == "tok"
    assert body["pageSize"] == 1000


def _entry(
    ts: str, iid: str, log: str = "stdout", index: str = "0", **payload: Any
) -> dict[str, Any]:
    return {
        "insertId": iid,
        "timestamp": ts,
        "logName": f"projects/my-project/logs/run.googleapis.com%2F{log.replace('/', '%2F')}",
        "labels": {w.LABEL_EXECUTION: "my-job-x7k2p", w.LABEL_TASK_INDEX: index},
        **(payload or {"textPayload": f"line {iid}"}),
    }


RENDER = [
    (_entry("2026-11-27T10:00:00Z", "a", textPayload="hello"), "stdout", "hello"),
    (_entry("2026-11-27T10:00:00Z", "a", log="stderr", textPayload="oops\n"), "stderr", "oops"),
    (
        _entry("2026-11-27T10:00:00Z", "a", jsonPayload={"message": "done", "rows": 3, "ok": True}),
        "stdout",
        'done {"ok":true,"rows":3}',
    ),
    (_entry("2026-11-27T10:00:00Z", "a", jsonPayload={"rows": 3}), "stdout", '{"rows":3}'),
    (
        _entry("2026-11-27T10:00:00Z", "a", jsonPayload={"message": "slow"}, severity="WARNING"),
        "stdout",
        "WARNING slow",
    ),
    (
        _entry(
            "2026-11-27T10:00:00Z",
            "a",
            jsonPayload={"message": "m", "logging.googleapis.com/trace": "t"},
        ),
        "stdout",
        "m",
    ),
    (
        _entry(
            "2026-11-27T10:00:00Z",
            "a",
            log="varlog/system",
            textPayload="Container called exit(0).",
        ),
        "stderr",
        "[cloud run] Container called exit(0).",
    ),
    (_entry("2026-11-27T10:00:00Z", "a", textPayload="héllo ✓"), "stdout", "héllo ✓"),
]


@pytest.mark.parametrize("entry,stream,text", RENDER)
def test_render_entry(entry: dict[str, Any], stream: str, text: str) -> None:
    line = w.render_entry(entry)
    assert (line.stream, line.text, line.task_index) == (stream, text, 0)


def test_format_line_keeps_the_task_index_when_there_are_several() -> None:
    line = w.render_entry(_entry("2026-11-27T10:00:00Z", "a", index="3", textPayload="a\nb"))
    assert w.format_line(line, multi_task=True) == "[task 3] a\n[task 3] b\n"
    assert w.format_line(line, multi_task=False) == "a\nb\n"


def test_log_cursor_drops_what_it_has_seen() -> None:
    t1, t2 = "2026-11-27T10:00:01.000000001Z", "2026-11-27T10:00:02Z"
    first = [_entry(t1, "a"), _entry(t1, "b"), _entry(t2, "c")]
    lines, cursor = w.LogCursor().accept(first)
    assert [x.insert_id for x in lines] == ["a", "b", "c"]
    assert cursor.timestamp == "2026-11-27T10:00:02.000000000Z"
    # the next read starts at the cursor's timestamp: c again, d new at the same instant, e later
    again = [
        _entry("2026-11-27T10:00:02.0Z", "c"),
        _entry(t2, "d"),
        _entry("2026-11-27T10:00:03Z", "e"),
        _entry(t1, "late"),
    ]
    lines, cursor2 = cursor.accept(again)
    assert [x.insert_id for x in lines] == ["d", "e"]
    restored = w.LogCursor.from_json(cursor2.to_json())
    assert restored == cursor2
    assert restored.accept([_entry("2026-11-27T10:00:03Z", "e")])[0] == []
    assert w.LogCursor.from_json("not json") == w.LogCursor()
    assert w.LogCursor.from_json(None) == w.LogCursor()


def test_shift_and_format_timestamps() -> None:
    assert w.shift_timestamp("2026-11-27T10:00:00.5Z", -1.25) == "2026-11-27T09:59:59.250000000Z"


# --- errors -------------------------------------------------------------------------------------


def test_parse_error_reads_googles_body() -> None:
    body = json.dumps(
        {
            "error": {
                "code": 404,
                "status": "NOT_FOUND",
                "message": (
                    "Resource 'nope' of kind 'JOB' in region 'asia-east1' in project"
                    " 'my-project' does not exist."
                ),
            }
        }
    ).encode()
    err = w.parse_error(404, body)
    assert err.status == "NOT_FOUND" and "does not exist" in err.message
    assert w.parse_error(429, b'{"error": {"code": 8, "message": "quota"}}').status == (
        "RESOURCE_EXHAUSTED"
    )
    html = w.parse_error(502, b"<html>Bad Gateway</html>")
    assert html.status == "HTTP 502" and "Bad Gateway" in html.message
    assert w.parse_error(503, b"").message == "HTTP 503 with no body"
