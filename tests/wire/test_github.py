"""Pure tests of egw.wire.github: validation, dispatch, signatures, payloads, states, order."""

from __future__ import annotations

import json
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from egw.core.model import TaskState
from egw.errors import InvalidRequest, ProviderError
from egw.wire import github as gh

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "github"
EXAMPLES_DIR = SAMPLES / "webhooks" / "examples"
EXAMPLES = sorted((SAMPLES / "webhooks" / "examples").glob("*/*.json"))

S = TaskState


def spec(**over: Any) -> gh.GitHubSpec:
    task = {"workflow_id": "deploy.yml", "ref": "main", "inputs": {"env": "prod"}}
    task.update(over)
    return gh.validate_task(
        task, default_owner="octo-org", default_repo="octo-repo", default_correlation_input=None
    )


# --- validation -----------------------------------------------------------------------------


def test_seed_task_is_normalised_with_the_default_repository() -> None:
    stored = {
        "owner": "octo-org",
        "repo": "octo-repo",
        "workflow_id": "deploy.yml",
        "ref": "main",
        "inputs": {"env": "prod"},
        "correlation_input": None,
    }
    assert spec().to_json() == stored
    # the stored spec reads back as the same typed spec, checked again
    assert gh.GitHubSpec.from_json(stored) == spec()
    with pytest.raises(InvalidRequest):
        gh.GitHubSpec.from_json({**stored, "ref": "a..b"})


def test_input_values_carry_no_nul() -> None:
    with pytest.raises(InvalidRequest) as err:
        gh.validate_inputs({"env": "pr\x00od"})
    assert err.value.field == "task.inputs.env"


@pytest.mark.parametrize("owner", ["octocat", "octo-org", "a", "A1-b2", "mona_acme", "x" * 39])
def test_good_owners(owner: str) -> None:
    assert gh.validate_owner(owner) == owner


@pytest.mark.parametrize(
    "owner", ["", "-octo", "octo-", "octo/org", "..", "o%2Fx", "a b", "x" * 40, "o?x", 7, None]
)
def test_bad_owners(owner: Any) -> None:
    with pytest.raises(InvalidRequest) as err:
        gh.validate_owner(owner)
    assert err.value.field == "task.owner"


@pytest.mark.parametrize("repo", ["octo-repo", ".github", "a.b_c-d", "r" * 100])
def test_good_repos(repo: str) -> None:
    assert gh.validate_repo(repo) == repo


@pytest.mark.parametrize("repo", ["", ".", "..", "a/b", "r%2e", "x.git", "r" * 101, "a b"])
def test_bad_repos(repo: str) -> None:
    with pytest.raises(InvalidRequest):
        gh.validate_repo(repo)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("deploy.yml", "deploy.yml"), ("ci.yaml", "ci.yaml"), (161335, "161335"), ("42", "42")],
)
def test_good_workflow_ids(value: Any, expected: str) -> None:
    assert gh.validate_workflow_id(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "deploy",
        "../deploy.yml",
        ".github/workflows/deploy.yml",
        "a%2F.yml",
        "d?.yml",
        "",
        0,
        -3,
        True,
        "0",
        ".hidden.yml",
    ],
)
def test_bad_workflow_ids(value: Any) -> None:
    with pytest.raises(InvalidRequest):
        gh.validate_workflow_id(value)


@pytest.mark.parametrize("ref", ["main", "release/v1.2", "refs/heads/main", "v1.0.0", "feat_x"])
def test_good_refs(ref: str) -> None:
    assert gh.validate_ref(ref) == ref


@pytest.mark.parametrize(
    "ref",
    [
        "",
        "a..b",
        "a b",
        "a~1",
        "a^",
        "a:b",
        "a?",
        "a*",
        "a[b",
        "a\\b",
        "/a",
        "a/",
        "a.",
        "a.lock",
        "@",
        "a@{1}",
        "a//b",
        "a/.b",
        "-x",
        "\x01",
    ],
)
def test_bad_refs(ref: str) -> None:
    with pytest.raises(InvalidRequest):
        gh.validate_ref(ref)


def test_inputs_at_most_25_and_scalars_become_strings() -> None:
    ok = {f"in_{i}": i for i in range(25)}
    assert gh.validate_inputs(ok)["in_3"] == "3"
    assert gh.validate_inputs({"flag": True, "n": 1.5}) == {"flag": "true", "n": "1.5"}
    with pytest.raises(InvalidRequest, match="at most 25"):
        gh.validate_inputs({f"in_{i}": "x" for i in range(26)})
    # the correlation input takes one of the 25 places and its name
    with pytest.raises(InvalidRequest, match="at most 24"):
        gh.validate_inputs(ok, reserved="egw_id")
    with pytest.raises(InvalidRequest, match="reserved"):
        gh.validate_inputs({"egw_id": "x"}, reserved="egw_id")
    for bad in ({"1x": "a"}, {"a b": "a"}, {"x": None}, {"x": [1]}, {"x": {"y": 1}}, ["x"]):
        with pytest.raises(InvalidRequest):
            gh.validate_inputs(bad)
    with pytest.raises(InvalidRequest, match="characters"):
        gh.validate_inputs({"big": "x" * 70000})


def test_task_errors_name_the_field() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"workflow_id": "d.yml", "ref": "main", "extra": 1}, "task.extra"),
        ({"ref": "main"}, "task.workflow_id"),
        ({"workflow_id": "d.yml"}, "task.ref"),
        ({"workflow_id": "d.yml", "ref": "main", "owner": "a/b"}, "task.owner"),
        (
            {"workflow_id": "d.yml", "ref": "main", "correlation_input": "9x"},
            "task.correlation_input",
        ),
    ]
    for task, field in cases:
        with pytest.raises(InvalidRequest) as err:
            gh.validate_task(
                task, default_owner="o", default_repo="r", default_correlation_input=None
            )
        assert err.value.field == field, task
    with pytest.raises(InvalidRequest) as err:
        gh.validate_task(
            {"workflow_id": "d.yml", "ref": "main"},
            default_owner=None,
            default_repo=None,
            default_correlation_input=None,
        )
    assert err.value.field == "task.owner"


def test_paths_are_built_from_validated_parts() -> None:
    s = spec()
    assert (
        gh.dispatch_path(s) == "/repos/octo-org/octo-repo/actions/workflows/deploy.yml/dispatches"
    )
    assert gh.run_path(s, "30433642") == "/repos/octo-org/octo-repo/actions/runs/30433642"
    assert gh.job_path(s, 7) == "/repos/octo-org/octo-repo/actions/jobs/7"
    for bad in ("../1", "1/cancel", "", "１"):
        with pytest.raises(InvalidRequest):
            gh.run_path(s, bad)


# --- dispatch -------------------------------------------------------------------------------


def test_dispatch_body_per_api_version() -> None:
    s = spec(correlation_input="egw_id")
    corr = gh.correlation_id("t_abc")
    assert corr == "egw-t_abc"
    assert gh.dispatch_body(
        s, api_version="2022-11-28", return_run_details=True, correlation=corr
    ) == {
        "ref": "main",
        "inputs": {"env": "prod", "egw_id": "egw-t_abc"},
        "return_run_details": True,
    }
    # 2026-03-10 removed the field (breaking-changes-2026-03-10.json): always 200
    assert "return_run_details" not in gh.dispatch_body(
        s, api_version="2026-03-10", return_run_details=True, correlation=corr
    )
    # without a correlation input, no extra input is sent (GitHub rejects undeclared ones)
    plain = gh.dispatch_body(
        spec(), api_version="2022-11-28", return_run_details=False, correlation=corr
    )
    assert plain == {"ref": "main", "inputs": {"env": "prod"}}


def test_dispatch_answers() -> None:
    body = json.dumps(
        {
            "workflow_run_id": 1,
            "run_url": "https://api.github.com/repos/o/r/actions/runs/1",
            "html_url": "https://github.com/o/r/actions/runs/1",
        }
    ).encode()
    assert gh.parse_dispatch_response(200, body) == gh.DispatchResult(
        1,
        "https://api.github.com/repos/o/r/actions/runs/1",
        "https://github.com/o/r/actions/runs/1",
    )
    assert gh.parse_dispatch_response(204, b"") == gh.DispatchResult(None)
    with pytest.raises(ProviderError):
        gh.parse_dispatch_response(200, b'{"oops": 1}')
    with pytest.raises(ProviderError):
        gh.parse_dispatch_response(201, b"")


def test_run_details_refusal_is_recognised_only_when_it_names_the_field() -> None:
    msg = 'Invalid request.\n\n"return_run_details" is not a permitted key.'
    assert gh.rejects_run_details(422, msg)
    assert gh.rejects_run_details(400, msg)
    assert not gh.rejects_run_details(422, 'Unexpected inputs provided: ["x"]')
    assert not gh.rejects_run_details(404, msg)


def test_error_message_reads_basic_error() -> None:
    assert (
        gh.error_message(b'{"message": "Not Found", "documentation_url": "x"}', 404) == "Not Found"
    )
    assert gh.error_message(b"<html>bad gateway</html>", 502) == "<html>bad gateway</html>"
    assert gh.error_message(b"", 500) == "HTTP 500"


# --- signatures -----------------------------------------------------------------------------


def test_githubs_documented_signature_test_vector() -> None:
    # docs: content/webhooks/using-webhooks/validating-webhook-deliveries.md
    secret, payload = "It's a Secret to Everybody", b"Hello, World!"
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert gh.sign(secret, payload) == expected
    assert gh.verify_signature(secret, payload, expected)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256=",
        "sha1=757107ea0eb2509fc211221cce984b8a37570b6d",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e18",
        "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
    ],
)
def test_bad_signatures_fail(header: str | None) -> None:
    assert not gh.verify_signature("It's a Secret to Everybody", b"Hello, World!", header)
    assert not gh.verify_signature("", b"x", gh.sign("k", b"x"))


# --- payloads -------------------------------------------------------------------------------


def deliver(path: Path) -> gh.Delivery:
    event = path.parent.name
    return gh.parse_delivery(
        {"x-github-event": event, "X-GitHub-Delivery": "d-1"}, path.read_bytes()
    )


def test_samples_are_present() -> None:
    assert len(EXAMPLES) == 14


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_example_parses_and_maps(path: Path) -> None:
    delivery = deliver(path)
    raw = json.loads(path.read_bytes())
    assert delivery.delivery_id == "d-1"
    if path.parent.name == "ping":
        assert delivery.zen == raw["zen"]
        return
    if path.parent.name == "workflow_run":
        run = delivery.run
        assert run is not None and run.id == raw["workflow_run"]["id"]
        state, reason = gh.run_state(run.status, run.conclusion)
        expected = {
            "requested.payload.json": (S.QUEUED, "queued"),
            "requested.with-conclusion.payload.json": (S.FAILED, "action_required"),
            "completed.payload.json": (S.SUCCEEDED, None),
            "completed.with-pull-requests.payload.json": (S.SUCCEEDED, None),
        }[path.name]
        assert (state, reason) == expected
        return
    job = delivery.job
    assert job is not None
    assert (job.id, job.run_id) == (raw["workflow_job"]["id"], raw["workflow_job"]["run_id"])
    assert len(job.steps) == len(raw["workflow_job"]["steps"])
    assert gh.job_progress_lines(None, job)[0].startswith(f"[github] job {job.name}")


def test_older_payloads_without_newer_fields_and_newer_with_unknown_ones() -> None:
    raw = json.loads(
        (SAMPLES / "webhooks/examples/workflow_run/completed.payload.json").read_bytes()
    )
    for key in ("run_attempt", "display_title", "run_started_at", "triggering_actor", "path"):
        del raw["workflow_run"][key]
    raw["workflow_run"]["brand_new_field"] = {"x": 1}
    raw["unknown_top_level"] = True
    d = gh.parse_delivery({"X-GitHub-Event": "workflow_run"}, json.dumps(raw).encode())
    assert d.run is not None and d.run.attempt == 1 and d.run.display_title is None
    assert d.delivery_id.startswith("sha256:")  # no GUID: dedupe on the body


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({}, b"{}"),
        ({"X-GitHub-Event": "workflow_run"}, b"not json"),
        ({"X-GitHub-Event": "workflow_run"}, b"[1, 2]"),
        ({"X-GitHub-Event": "workflow_run"}, b'{"action": "completed"}'),
        ({"X-GitHub-Event": "workflow_run"}, b'{"workflow_run": {"id": "x"}}'),
        ({"X-GitHub-Event": "workflow_job"}, b'{"workflow_job": {"id": 1}}'),
        ({"X-GitHub-Event": "workflow_job"}, b"\xff\xfe"),
    ],
)
def test_malformed_deliveries_are_invalid_requests(headers: dict[str, str], body: bytes) -> None:
    with pytest.raises(InvalidRequest):
        gh.parse_delivery(headers, body)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_form_delivery_parses_as_its_json(path: Path) -> None:
    """``content_type: form`` (GitHub's default for a new hook: github/rest-api-description,
    schema ``webhook-config-content-type``) posts ``payload=<urlencoded JSON>``."""
    raw = path.read_bytes()
    form = urllib.parse.urlencode({"payload": raw.decode()}).encode()
    event = {"X-GitHub-Event": path.parent.name}
    as_json = gh.parse_delivery(event, raw)
    for media in ("application/x-www-form-urlencoded", "application/x-www-form-urlencoded; x=1"):
        as_form = gh.parse_delivery({**event, "Content-Type": media}, form)
        assert (as_form.payload, as_form.run, as_form.job) == (
            as_json.payload,
            as_json.run,
            as_json.job,
        )
    # no Content-Type at all: a body that starts ``payload=`` is a form
    assert gh.parse_delivery(event, form).payload == as_json.payload


@pytest.mark.parametrize(
    "body", [b"", b"payload=%7B", b"nopayload=1", b"payload=1&payload=2", b"payload=%FF", b"\xff"]
)
def test_malformed_form_deliveries_are_invalid_requests(body: bytes) -> None:
    headers = {
        "X-GitHub-Event": "workflow_run",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    with pytest.raises(InvalidRequest):
        gh.parse_delivery(headers, body)


def test_other_events_parse_without_run() -> None:
    d = gh.parse_delivery({"X-GitHub-Event": "push"}, b'{"ref": "refs/heads/main"}')
    assert d.event == "push" and d.run is None and d.job is None


# --- states ---------------------------------------------------------------------------------

STATE_TABLE = [
    # status, conclusion, state, reason
    ("requested", None, S.QUEUED, "requested"),
    ("queued", None, S.QUEUED, "queued"),
    ("pending", None, S.QUEUED, "pending"),
    ("waiting", None, S.QUEUED, "waiting"),
    ("in_progress", None, S.RUNNING, None),
    ("completed", "success", S.SUCCEEDED, None),
    ("completed", "neutral", S.SUCCEEDED, "neutral"),
    ("completed", "skipped", S.SUCCEEDED, "skipped"),
    ("completed", "cancelled", S.CANCELLED, "cancelled"),
    ("completed", "failure", S.FAILED, "failure"),
    ("completed", "timed_out", S.FAILED, "timed_out"),
    ("completed", "startup_failure", S.FAILED, "startup_failure"),
    ("completed", "action_required", S.FAILED, "action_required"),
    ("completed", "stale", S.FAILED, "stale"),
    ("completed", "some_future_value", S.FAILED, "some_future_value"),
    ("completed", None, S.FAILED, "completed without a conclusion"),
    ("requested", "action_required", S.FAILED, "action_required"),
    (None, None, S.QUEUED, None),
]


@pytest.mark.parametrize(("status", "conclusion", "state", "reason"), STATE_TABLE)
def test_run_state_table(
    status: str | None, conclusion: str | None, state: TaskState, reason: str | None
) -> None:
    assert gh.run_state(status, conclusion) == (state, reason)


def test_run_observation_carries_attempt_and_time() -> None:
    run = gh.Run(
        id=9,
        attempt=2,
        status="completed",
        conclusion="failure",
        updated_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    obs = gh.run_observation(run)
    assert obs.state is S.FAILED and obs.reason == "failure" and obs.at == run.updated_at
    assert obs.detail["run_attempt"] == 2 and obs.detail["run_id"] == 9


def _run(status: str, second: int, attempt: int = 1, conclusion: str | None = None) -> gh.Run:
    return gh.Run(
        id=1,
        attempt=attempt,
        status=status,
        conclusion=conclusion,
        updated_at=datetime(2026, 1, 1, 0, 0, second, tzinfo=UTC),
    )


def test_ordering_by_attempt_then_time_then_terminal_on_tie() -> None:
    queued, running, done = (
        _run("queued", 1),
        _run("in_progress", 2),
        _run("completed", 3, conclusion="success"),
    )
    assert gh.is_newer(queued, None)
    assert gh.is_newer(running, queued) and not gh.is_newer(queued, running)
    assert not gh.is_newer(running, done)  # a late in_progress never overrides completed
    # same second (updated_at has second resolution): the terminal state wins the tie
    tie_run, tie_done = _run("in_progress", 5), _run("completed", 5, conclusion="success")
    assert gh.is_newer(tie_done, tie_run) and not gh.is_newer(tie_run, tie_done)
    assert not gh.is_newer(tie_done, tie_done)  # the same report twice is no news
    # a re-run is a new attempt, newer whatever its clock says
    rerun = _run("queued", 0, attempt=2)
    assert gh.is_newer(rerun, done) and not gh.is_newer(done, rerun)


def test_job_ordering_and_progress_lines() -> None:
    raw = json.loads(
        (
            SAMPLES / "webhooks/examples/workflow_job/in_progress.with-queued-steps.payload.json"
        ).read_bytes()
    )
    running = gh.parse_job(raw["workflow_job"])
    lines = gh.job_progress_lines(None, running)
    assert lines[0] == "[github] job Do examples need to be regenerated?: in_progress"
    assert len(lines) == 4  # the job, two completed steps and the running one; queued ones wait
    done_raw = dict(
        raw["workflow_job"],
        status="completed",
        conclusion="success",
        steps=[
            dict(s, status="completed", conclusion="success") for s in raw["workflow_job"]["steps"]
        ],
    )
    done = gh.parse_job(done_raw)
    assert gh.job_is_newer(done, running) and not gh.job_is_newer(running, done)
    later = gh.job_progress_lines(running, done)
    assert later[0].endswith("completed (success)")
    assert all("step" in line for line in later[1:]) and len(later) == 1 + 7


def test_pick_run_by_correlation_or_window() -> None:
    since = datetime(2026, 1, 1, tzinfo=UTC)
    runs = [
        gh.Run(
            id=3,
            event="workflow_dispatch",
            head_branch="main",
            display_title="deploy egw-t_b",
            created_at=datetime(2026, 1, 1, 0, 0, 9, tzinfo=UTC),
        ),
        gh.Run(
            id=2,
            event="workflow_dispatch",
            head_branch="main",
            display_title="deploy egw-t_a",
            created_at=datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC),
        ),
        gh.Run(
            id=1,
            event="push",
            head_branch="main",
            created_at=datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC),
        ),
    ]
    assert gh.pick_run(runs, correlation="egw-t_a", ref="main", since=since).id == 2  # type: ignore[union-attr]
    assert gh.pick_run(runs, correlation="egw-t_z", ref="main", since=since) is None
    assert gh.pick_run(runs, correlation=None, ref="refs/heads/main", since=since).id == 2  # type: ignore[union-attr]
    assert gh.pick_run(runs, correlation=None, ref="main", since=since, claimed={2}).id == 3  # type: ignore[union-attr]
    assert gh.pick_run(runs, correlation=None, ref="dev", since=since) is None


# --- rate limits and paging -----------------------------------------------------------------


def test_rate_limit_headers() -> None:
    headers = {
        "x-ratelimit-limit": "5000",
        "x-ratelimit-remaining": "4999",
        "x-ratelimit-used": "1",
        "x-ratelimit-reset": "1700000000",
        "x-ratelimit-resource": "core",
    }
    assert gh.parse_rate_limit(headers) == gh.RateLimit(5000, 4999, 1, 1700000000, "core")
    assert gh.parse_rate_limit({"content-type": "application/json"}) is None


def test_rate_limit_waits_follow_the_documented_order() -> None:
    now = 1_700_000_000.0
    primary = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(now) + 30)}
    assert gh.rate_limit_wait(403, primary, "API rate limit exceeded", now=now) == 31.0
    assert gh.rate_limit_wait(429, {**primary, "retry-after": "7"}, "x", now=now) == 7.0
    secondary = {"x-ratelimit-remaining": "12"}
    msg = "You have exceeded a secondary rate limit."
    assert gh.rate_limit_wait(403, secondary, msg, now=now) == 60.0
    assert gh.rate_limit_wait(403, secondary, msg, now=now, attempt=3) == 240.0
    assert gh.rate_limit_wait(429, {}, "", now=now) == 60.0
    # a 403 that is no rate limit (a permission error), and other statuses
    assert (
        gh.rate_limit_wait(403, secondary, "Resource not accessible by integration", now=now)
        is None
    )
    assert gh.rate_limit_wait(404, primary, "Not Found", now=now) is None
    assert gh.rate_limit_wait(429, {"retry-after": "99999"}, "", now=now) == gh.MAX_WAIT_S


def test_next_link_and_created_filter() -> None:
    link = (
        '<https://api.github.com/resource?page=2>; rel="next", '
        '<https://api.github.com/resource?page=5>; rel="last"'
    )
    assert gh.next_link(link) == "https://api.github.com/resource?page=2"
    assert gh.next_link('<https://x/?page=1>; rel="prev"') is None
    assert gh.next_link(None) is None
    assert (
        gh.created_filter(datetime(2026, 3, 1, 12, 0, 5, 123, tzinfo=UTC))
        == ">=2026-03-01T12:00:05Z"
    )


def test_text_chunks_never_split_a_character() -> None:
    text = "ünïcødé ✓ " * 5000
    chunks = gh.text_chunks(text, size=1001)
    assert b"".join(chunks).decode() == text
    for chunk in chunks:
        chunk.decode()  # each chunk is valid UTF-8 on its own


def test_as_int_takes_only_ascii_int64_digits() -> None:
    from egw.wire.github.values import as_int

    assert [as_int(v) for v in ("5", " -7 ", 3.0, 42)] == [5, -7, 3, 42]
    assert [as_int(v) for v in ("--5", "\u0661\u0662", "9" * 20, True, 2.5, "")] == [None] * 6


AZURE_404 = (
    b'<?xml version="1.0" encoding="utf-8"?><Error><Code>BlobNotFound</Code><Message>The '
    b"specified blob does not exist.\nRequestId:2c5cb273-801e-0012-38c1-7c2e2d000000\n"
    b"Time:2021-07-19T17:13:46.8208200Z</Message></Error>"
)


def test_a_blob_not_found_means_the_log_is_not_there_yet() -> None:
    """Azure's answer as recorded in Azure/WALinuxAgent#2311."""
    assert gh.blob_error_code({}, AZURE_404) == "BlobNotFound"
    assert gh.blob_error_code({"X-Ms-Error-Code": "BlobNotFound"}, b"") == "BlobNotFound"
    assert gh.log_not_yet(404, {}, AZURE_404)
    assert gh.log_not_yet(404, {}, b"")
    denied = b"<Error><Code>AuthenticationFailed</Code></Error>"
    assert not gh.log_not_yet(403, {}, denied)
    assert not gh.log_not_yet(404, {"x-ms-error-code": "ContainerNotFound"}, b"")
    assert not gh.log_not_yet(200, {}, b"log")


def test_runner_log_text() -> None:
    """actions/runner src/Runner.Common/Logging.cs: ``DateTime.UtcNow.ToString("O")``,
    written through ``Encoding.UTF8`` (a byte order mark first)."""
    body = "\ufeff2024-05-01T12:00:00.1234567Z ##[group]Run tests\n".encode()
    text = gh.log_text(body)
    assert text == "2024-05-01T12:00:00.1234567Z ##[group]Run tests\n"
    found = gh.RUNNER_LINE.fullmatch(text.rstrip("\n"))
    assert found is not None and found.group(2) == "##[group]Run tests"
    assert gh.RUNNER_LINE.fullmatch("2024-05-01T12:00:00Z second resolution") is None
    assert gh.log_text(b"\xff") == "\ufffd"


def test_a_job_waiting_for_an_environment_names_it() -> None:
    """contracts: workflow_job/queued.with-deployment (status ``waiting``, ``deployment``)."""
    path = EXAMPLES_DIR / "workflow_job" / "queued.with-deployment.payload.json"
    d = gh.parse_delivery({"X-GitHub-Event": "workflow_job"}, path.read_bytes())
    assert d.job is not None and (d.job.status, d.environment) == ("waiting", "Test")
    (line,) = gh.job_progress_lines(None, d.job, environment=d.environment)
    assert line.endswith(": waiting (environment Test needs an approval)")
    plain = EXAMPLES_DIR / "workflow_job" / "waiting.payload.json"
    assert (
        gh.parse_delivery({"X-GitHub-Event": "workflow_job"}, plain.read_bytes()).environment
        is None
    )
