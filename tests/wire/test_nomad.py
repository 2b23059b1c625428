"""egw.wire.nomad: task validation, job JSON, event-stream lines, state mapping, log frames."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from egw.core.model import TaskState
from egw.errors import InvalidRequest
from egw.wire import nomad as wire

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "nomad"
S = TaskState
SEED = {"job_id": "demo-job-1", "image": "busybox:latest", "command": "echo", "args": ["hello"]}
DEFAULTS: dict[str, Any] = {"namespace": "default", "region": None, "datacenters": ["*"]}


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


def validate(task: Any) -> dict[str, Any]:
    return wire.validate_task(task, **DEFAULTS).to_json()  # the spec as egw stores it


# --- the task object ---------------------------------------------------------------------------


def test_seed_task_becomes_a_batch_job_with_one_docker_task() -> None:
    spec = validate(SEED)
    assert spec["job_id"] == "demo-job-1"
    assert spec["namespace"] == "default" and spec["region"] is None
    assert spec["tasks"] == [["main", "main"]] and spec["expected"] == 1
    job = spec["job"]
    assert job["ID"] == job["Name"] == "demo-job-1"
    assert job["Type"] == "batch" and job["Datacenters"] == ["*"]
    (group,) = job["TaskGroups"]
    assert group["Count"] == 1
    assert group["RestartPolicy"]["Attempts"] == 0 and group["ReschedulePolicy"]["Attempts"] == 0
    (task,) = group["Tasks"]
    assert task == {
        "Name": "main",
        "Driver": "docker",
        "Config": {"image": "busybox:latest", "command": "echo", "args": ["hello"]},
    }
    json.dumps(spec)  # the spec is stored as JSON


def test_all_short_form_fields() -> None:
    spec = validate(
        {
            **SEED,
            "env": {"A_B": "1"},
            "datacenters": ["dc1", "dc2"],
            "namespace": "team-a",
            "region": "eu-west",
            "resources": {"cpu": 250, "memory_mb": 64},
            "meta": {"owner": "ci"},
            "timeout_s": 30,
        }
    )
    job = spec["job"]
    task = job["TaskGroups"][0]["Tasks"][0]
    assert task["Env"] == {"A_B": "1"}
    assert task["Resources"] == {"CPU": 250, "MemoryMB": 64}
    assert job["Namespace"] == spec["namespace"] == "team-a"
    assert job["Region"] == spec["region"] == "eu-west"
    assert job["Datacenters"] == ["dc1", "dc2"] and job["Meta"] == {"owner": "ci"}
    assert spec["timeout_s"] == 30.0


def test_exec_and_raw_exec_take_a_command_and_no_image() -> None:
    for driver in ("exec", "raw_exec"):
        spec = validate({"job_id": "x", "driver": driver, "command": "/bin/date"})
        assert spec["job"]["TaskGroups"][0]["Tasks"][0]["Config"] == {"command": "/bin/date"}


def test_register_body_marks_the_job_and_maps_the_timeout() -> None:
    spec = validate(SEED)
    typed = wire.NomadSpec.from_json(spec)
    body = wire.register_body(typed, task_id="t_1", timeout_s=90.5, enforce_index=7)
    assert body["EnforceIndex"] is True and body["JobModifyIndex"] == 7
    assert body["Job"]["Meta"] == {wire.META_TASK_ID: "t_1"}
    assert body["Job"]["TaskGroups"][0]["MaxRunDuration"] == 90_500_000_000
    assert "MaxRunDuration" not in spec["job"]["TaskGroups"][0]  # the spec is not changed
    plain = wire.register_body(typed, task_id="t_1", timeout_s=None, enforce_index=0)
    assert "MaxRunDuration" not in plain["Job"]["TaskGroups"][0]


@pytest.mark.parametrize("job_id", ["demo-job-1", "A", "a.b_c-9", "x" * 128, "9lives"])
def test_good_job_ids(job_id: str) -> None:
    assert validate({**SEED, "job_id": job_id})["job_id"] == job_id


@pytest.mark.parametrize(
    "job_id",
    [
        "",
        "has space",
        "a/b",
        "../etc",
        "a?b=1",
        "a#b",
        "%2F",
        "x" * 129,
        "-lead",
        ".hidden",
        "é",
        "nul\x00",
        5,
        None,
        ["a"],
    ],
)
def test_bad_job_ids_name_the_field(job_id: Any) -> None:
    with pytest.raises(InvalidRequest) as err:
        validate({**SEED, "job_id": job_id})
    assert err.value.field == "task.job_id"
    assert err.value.status == 400


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"driver": "podman"}, "task.driver"),
        ({"image": ""}, "task.image"),
        ({"image": "busy box"}, "task.image"),
        ({"image": None}, "task.image"),
        ({"driver": "exec", "command": "x"}, "task.image"),
        ({"command": ""}, "task.command"),
        ({"args": "hello"}, "task.args"),
        ({"args": ["ok", 3]}, "task.args[1]"),
        ({"env": {"1BAD": "x"}}, "task.env.1BAD"),
        ({"env": {"OK": 1}}, "task.env.OK"),
        ({"meta": {"egw_task_id": "x"}}, "task.meta.egw_task_id"),
        ({"meta": []}, "task.meta"),
        ({"namespace": "no_underscore"}, "task.namespace"),
        ({"region": "a b"}, "task.region"),
        ({"datacenters": []}, "task.datacenters"),
        ({"datacenters": ["dc 1"]}, "task.datacenters[0]"),
        ({"resources": {"cpu": 0}}, "task.resources.cpu"),
        ({"resources": {"memory_mb": 5}}, "task.resources.memory_mb"),
        ({"resources": {"memory_mb": True}}, "task.resources.memory_mb"),
        ({"resources": {"gpu": 1}}, "task.resources.gpu"),
        ({"resources": 3}, "task.resources"),
        ({"timeout_s": 0}, "task.timeout_s"),
        ({"timeout_s": "10"}, "task.timeout_s"),
        ({"comand": "echo"}, "task.comand"),
    ],
)
def test_bad_fields_name_the_field(patch: dict[str, Any], field: str) -> None:
    task = {**SEED, **patch}
    if patch.get("image", 1) is None:
        del task["image"]
    with pytest.raises(InvalidRequest) as err:
        validate(task)
    assert err.value.field == field


def test_exec_without_command_and_a_non_object_task() -> None:
    with pytest.raises(InvalidRequest) as err:
        validate({"job_id": "x", "driver": "exec"})
    assert err.value.field == "task.command"
    with pytest.raises(InvalidRequest) as err:
        validate(["not", "an", "object"])
    assert err.value.field == "task"


def test_full_job_passthrough_from_the_contract_sample() -> None:
    job = sample("jobs.create.request.json")["Job"]
    spec = validate({"job": job})
    assert spec["job_id"] == "cache"
    assert spec["tasks"] == [["cache", "redis"]] and spec["expected"] == 1
    out = spec["job"]
    # egw runs batch jobs; the rest passes through untouched
    assert out["Type"] == "batch" and out["NodePool"] == "prod" and out["Datacenters"] == ["dc1"]
    assert out["TaskGroups"][0]["Services"] == job["TaskGroups"][0]["Services"]
    assert out["Namespace"] == "default" and out["Meta"] == {}
    assert "Type" not in job  # the input is not changed


def test_passthrough_counts_allocations_and_keeps_namespace() -> None:
    job = copy.deepcopy(sample("job.syntax.json")["Job"])
    job["Type"] = "batch"
    job["Namespace"] = "apps"
    job["TaskGroups"][0]["Count"] = 3
    spec = validate({"job": job, "timeout_s": 5})
    assert spec["expected"] == 3 and spec["namespace"] == "apps" and spec["timeout_s"] == 5.0


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"Type": "service"}, "task.job.Type"),
        ({"ID": "a b"}, "task.job.ID"),
        ({"TaskGroups": []}, "task.job.TaskGroups"),
        ({"TaskGroups": [{"Name": "g", "Tasks": []}]}, "task.job.TaskGroups[0].Tasks"),
        (
            {"TaskGroups": [{"Name": "g", "Count": -1, "Tasks": [{"Name": "t", "Driver": "x"}]}]},
            "task.job.TaskGroups[0].Count",
        ),
        (
            {"TaskGroups": [{"Name": "g", "Tasks": [{"Name": "t"}]}]},
            "task.job.TaskGroups[0].Tasks[0].Driver",
        ),
        ({"Periodic": {"Enabled": True}}, "task.job.Periodic"),
        ({"Meta": {"egw_task_id": "x"}}, "task.job.Meta.egw_task_id"),
    ],
)
def test_bad_passthrough_jobs(patch: dict[str, Any], field: str) -> None:
    job = {**sample("jobs.create.request.json")["Job"], **patch}
    with pytest.raises(InvalidRequest) as err:
        validate({"job": job})
    assert err.value.field == field
    with pytest.raises(InvalidRequest) as err:
        validate(
            {"job": job | {"ID": "ok"}, "image": "x"}
            if field == "task.job.Type"
            else {"job": "not an object"}
        )
    assert err.value.field in ("task.image", "task.job")


# --- the event stream ------------------------------------------------------------------------


def illustrative_lines() -> list[str]:
    # the contract writes "\n" as two characters and "..." for the rest of the allocation
    text = (SAMPLES / "event_stream.illustrative.txt").read_text()
    return [line.replace(",...", "") for line in text.split("\\n\n") if line.strip()]


def test_event_stream_lines_of_the_contract() -> None:
    heartbeat, data, heartbeat2 = (wire.parse_stream_line(x) for x in illustrative_lines())
    assert heartbeat.heartbeat and heartbeat2.heartbeat and heartbeat.index is None
    assert data.index == 12 and not data.heartbeat
    (ev,) = data.events
    assert (ev.topic, ev.type, ev.namespace, ev.index) == (
        "Allocation",
        "AllocationUpdated",
        "default",
        12,
    )
    assert ev.key == "5fc98185-17ff-26bc-a802-0c74fa471c99"
    assert ev.job_id == "example"
    assert ev.object["ClientStatus"] == "running" and ev.object["Job"] is None


def test_job_and_evaluation_events_name_their_job() -> None:
    line = wire.parse_stream_line(
        json.dumps(
            {
                "Index": 3,
                "Events": [
                    {
                        "Topic": "Job",
                        "Type": "JobRegistered",
                        "Key": "web",
                        "Namespace": "default",
                        "FilterKeys": None,
                        "Index": 3,
                        "Payload": {"Job": {"ID": "web"}},
                    },
                    {
                        "Topic": "Evaluation",
                        "Type": "JobRegistered",
                        "Key": "e1",
                        "Namespace": "default",
                        "FilterKeys": ["web", ""],
                        "Index": 3,
                        "Payload": {"Evaluation": {"JobID": "web"}},
                    },
                    {
                        "Topic": "Node",
                        "Type": "NodeEvent",
                        "Key": "n1",
                        "Namespace": "",
                        "FilterKeys": None,
                        "Index": 3,
                        "Payload": {"Node": {"ID": "n1"}},
                    },
                ],
            }
        )
    )
    assert [e.job_id for e in line.events] == ["web", "web", None]


@pytest.mark.parametrize("raw", ["[]", '{"Index": "3"}', '{"Index": 3, "Events": [1]}', "{"])
def test_malformed_stream_lines(raw: str) -> None:
    with pytest.raises(ValueError):
        wire.parse_stream_line(raw)


def test_ndjson_splitter_reassembles_lines_split_anywhere() -> None:
    raw = b"".join(x.encode() + b"\n" for x in illustrative_lines())
    for size in (1, 2, 7, len(raw)):
        splitter = wire.NdjsonSplitter()
        lines: list[bytes] = []
        for i in range(0, len(raw), size):
            lines += splitter.feed(raw[i : i + size])
        assert [wire.parse_stream_line(x).index for x in lines] == [None, 12, None]
    with pytest.raises(ValueError):
        wire.NdjsonSplitter(max_line=8).feed(b"0123456789")


# --- allocations, evaluations, jobs -> state ------------------------------------------------------


def alloc(client: str = "running", desired: str = "run", **extra: Any) -> dict[str, Any]:
    base = copy.deepcopy(sample("job.allocations.response.json")[0])
    base.update(
        ClientStatus=client, DesiredStatus=desired, NextAllocation="", PreviousAllocation=""
    )
    base.update(extra)
    return base


def task_events(
    *events: dict[str, Any], failed: bool = False, state: str = "dead"
) -> dict[str, Any]:
    started = {"Type": "Started"}
    return {"redis": {"State": state, "Failed": failed, "Events": [started, *events]}}


@pytest.mark.parametrize(("client", "state"), sorted(wire.CLIENT_STATUS.items()))
def test_client_status_table(client: str, state: TaskState) -> None:
    assert wire.alloc_observation(alloc(client, TaskStates={})).state is state


def test_contract_allocation_samples_are_running() -> None:
    for name in (
        "job.allocations.response.json",
        "allocations.list.response.json",
        "evaluation.allocations.response.json",
    ):
        obs = wire.alloc_observation(sample(name)[0])
        assert obs.state is S.RUNNING and obs.detail["started"] is True
    assert wire.alloc_observation(sample("allocation.read.response.json")).state is S.RUNNING


@pytest.mark.parametrize(
    ("a", "state", "code", "reason"),
    [
        (
            alloc("pending", TaskStates={"redis": {"State": "pending", "Events": []}}),
            S.QUEUED,
            None,
            "pending",
        ),
        (
            alloc("complete", TaskStates=task_events({"Type": "Terminated", "ExitCode": 0})),
            S.SUCCEEDED,
            0,
            "complete",
        ),
        (
            alloc(
                "failed",
                TaskStates=task_events(
                    {"Type": "Terminated", "ExitCode": 3}, {"Type": "Not Restarting"}, failed=True
                ),
            ),
            S.FAILED,
            3,
            "task 'redis' exited with code 3",
        ),
        (
            alloc(
                "failed",
                TaskStates={
                    "redis": {
                        "State": "dead",
                        "Failed": True,
                        "Events": [{"Type": "Driver Failure", "DriverError": "image not found"}],
                    }
                },
            ),
            S.FAILED,
            None,
            "task 'redis': Driver Failure: image not found",
        ),
        (
            alloc(
                "complete",
                "stop",
                DesiredDescription="alloc not needed due to job update",
                TaskStates=task_events({"Type": "Killing"}, {"Type": "Killed"}),
            ),
            S.CANCELLED,
            None,
            "stopped: alloc not needed due to job update",
        ),
        (
            alloc("complete", "evict", TaskStates=task_events({"Type": "Killed"})),
            S.FAILED,
            None,
            "evicted",
        ),
        (
            alloc("lost", "stop", DesiredDescription="alloc is lost since its node is down"),
            S.FAILED,
            None,
            "lost: alloc is lost since its node is down",
        ),
        (
            alloc(
                "complete",
                ClientDescription=wire.MAX_RUN_EXCEEDED,
                TaskStates=task_events({"Type": "Killed"}),
            ),
            S.TIMED_OUT,
            None,
            "max_run_duration",
        ),
        # the server's timeout watcher: DesiredDescription, ClientStatus failed
        (
            alloc(
                "failed",
                "stop",
                DesiredDescription=wire.MAX_RUN_EXCEEDED,
                TaskStates=task_events({"Type": "Killed"}),
            ),
            S.TIMED_OUT,
            None,
            "max_run_duration",
        ),
        # stopped, but the task had already exited by itself: its own outcome counts
        (
            alloc(
                "complete", "stop", TaskStates=task_events({"Type": "Terminated", "ExitCode": 0})
            ),
            S.SUCCEEDED,
            0,
            "complete",
        ),
    ],
)
def test_alloc_observation(
    a: dict[str, Any], state: TaskState, code: int | None, reason: str
) -> None:
    obs = wire.alloc_observation(a)
    assert obs.state is state
    assert obs.exit_code == code
    assert reason in (obs.reason or "")
    assert obs.detail["alloc_id"] == a["ID"]
    assert wire.alloc_observation(wire.kept_alloc(a)) == obs  # what egw keeps is enough


def test_what_egw_keeps_of_an_allocation() -> None:
    for name in ("job.allocations.response.json", "allocations.list.response.json"):
        full = sample(name)[0]
        kept = wire.kept_alloc(full)
        assert len(json.dumps(kept)) * 2 < len(json.dumps(full))
        assert set(kept) <= {*wire.states.ALLOC_FIELDS, "TaskStates"}
        assert wire.alloc_observation(kept) == wire.alloc_observation(full)
        for name_, ts in kept["TaskStates"].items():
            assert wire.task_started(ts) == wire.task_started(full["TaskStates"][name_])
    a = alloc("failed", TaskStates=task_events({"Type": "Received"}, failed=True))
    a["TaskStates"]["redis"]["Events"].append({"Type": "Terminated", "ExitCode": 3, "Time": 9})
    kept = wire.kept_alloc(a)
    assert [e["Type"] for e in kept["TaskStates"]["redis"]["Events"]] == ["Started", "Terminated"]
    assert kept["TaskStates"]["redis"]["Events"][1] == {"Type": "Terminated", "ExitCode": 3}
    many = [alloc(ID=f"a{n}", Name=f"job.web[{n}]", CreateIndex=10 + n) for n in range(3)]
    assert observe(many) == observe([wire.kept_alloc(x) for x in many])
    evaluation = sample("evaluation.read.response.json")
    assert set(wire.kept_eval(evaluation)) <= set(wire.states.EVAL_FIELDS)
    assert observe(evals=[evaluation], since=0) == observe(
        evals=[wire.kept_eval(evaluation)], since=0
    )


def observe(
    allocs: tuple[dict[str, Any], ...] | list[dict[str, Any]] = (),
    evals: tuple[dict[str, Any], ...] | list[dict[str, Any]] = (),
    **kw: Any,
) -> Any:
    return wire.job_observation(
        allocs=allocs, evals=evals, since=kw.pop("since", 5), expected=kw.pop("expected", 1), **kw
    )


def test_job_observation_without_allocations() -> None:
    assert observe().state is S.QUEUED
    assert observe(stopped=True).state is S.CANCELLED
    gone = observe(gone=True)
    assert gone.state is S.FAILED and "no longer exists" in (gone.reason or "")
    assert observe(gone=True, cancel_requested=True).state is S.CANCELLED


def test_placement_failure_from_the_contract_evaluation() -> None:
    ev = sample("evaluation.read.response.json")  # blocked, FailedTGAllocs for "cache"
    obs = observe(evals=[ev], since=20)
    assert obs.state is S.FAILED
    assert obs.reason == (
        "placement failed: task group 'cache': no nodes are available in datacenter(s) dc1"
    )
    assert obs.detail["placement_failed"] is True
    # an evaluation from before egw's registration is not this task's
    assert observe(evals=[ev], since=29).state is S.QUEUED


def test_describe_placement_failure() -> None:
    text = wire.describe_placement_failure(
        {
            "g": {
                "NodesEvaluated": 3,
                "NodesExhausted": 2,
                "DimensionExhausted": {"memory": 2},
                "ConstraintFiltered": {"${attr.kernel.name} = windows": 1},
                "CoalescedFailures": 4,
                "ClassFiltered": {"gpu": 1},
                "QuotaExhausted": ["cpu exhausted (500 > 400)"],
            }
        }
    )
    assert text == (
        "placement failed: task group 'g': class 'gpu' filtered 1 node(s); "
        "constraint '${attr.kernel.name} = windows' filtered 1 node(s); "
        "resources exhausted on 2 node(s); dimension 'memory' exhausted on 2 node(s); "
        "quota limit hit 'cpu exhausted (500 > 400)'; "
        "4 more allocation(s) failed the same way"
    )
    assert "no nodes were eligible" in wire.describe_placement_failure({"g": {}})


def test_evaluation_failed() -> None:
    ev = {
        "ID": "e",
        "Status": "failed",
        "StatusDescription": "maximum attempts reached",
        "CreateIndex": 6,
    }
    obs = observe(evals=[ev])
    assert obs.state is S.FAILED and obs.reason == "evaluation failed: maximum attempts reached"


def test_only_allocations_created_after_the_registration_count() -> None:
    old = alloc(
        "failed",
        CreateIndex=4,
        TaskStates=task_events({"Type": "Terminated", "ExitCode": 1}, failed=True),
    )
    new = alloc("running", ID="b", CreateIndex=9)
    assert observe([old]).state is S.QUEUED
    assert observe([old, new]).state is S.RUNNING


def test_latest_allocation_of_a_slot_wins_and_rescheduling_keeps_running() -> None:
    failed = alloc(
        "failed",
        ID="a",
        CreateIndex=6,
        NextAllocation="b",
        TaskStates=task_events({"Type": "Terminated", "ExitCode": 1}, failed=True),
    )
    assert observe([failed]).state is S.RUNNING  # a replacement is on its way
    replacement = alloc(
        "complete",
        ID="b",
        CreateIndex=8,
        PreviousAllocation="a",
        TaskStates=task_events({"Type": "Terminated", "ExitCode": 0}),
    )
    obs = observe([failed, replacement])
    assert obs.state is S.SUCCEEDED and obs.detail["allocations"] == ["a", "b"]
    delayed = alloc(
        "failed",
        ID="a",
        CreateIndex=6,
        FollowupEvalID="e2",
        TaskStates=task_events({"Type": "Terminated", "ExitCode": 1}, failed=True),
    )
    assert observe([delayed]).state is S.RUNNING


def test_several_slots() -> None:
    ok = alloc(
        "complete",
        ID="a",
        Name="j.g[0]",
        CreateIndex=6,
        TaskStates=task_events({"Type": "Terminated", "ExitCode": 0}),
    )
    bad = alloc(
        "failed",
        ID="b",
        Name="j.g[1]",
        CreateIndex=6,
        TaskStates=task_events({"Type": "Terminated", "ExitCode": 2}, failed=True),
    )
    assert observe([ok], expected=2).state is S.RUNNING  # one slot still to come
    obs = observe([ok, bad], expected=2)
    assert obs.state is S.FAILED and obs.exit_code == 2


def test_stopped_job() -> None:
    live = alloc("running", CreateIndex=6)
    assert observe([live], stopped=True).state is S.CANCELLING
    killed = alloc(
        "complete",
        "stop",
        CreateIndex=6,
        TaskStates=task_events({"Type": "Killing"}, {"Type": "Killed"}),
    )
    assert observe([killed], stopped=True).state is S.CANCELLED


def test_started_flag_lets_the_provider_fill_in_running() -> None:
    done = alloc(
        "complete", CreateIndex=6, TaskStates=task_events({"Type": "Terminated", "ExitCode": 0})
    )
    assert observe([done]).detail["started"] is True
    never = alloc(
        "failed",
        CreateIndex=6,
        TaskStates={
            "redis": {"State": "dead", "Failed": True, "Events": [{"Type": "Driver Failure"}]}
        },
    )
    assert observe([never]).detail["started"] is False


# --- the log stream -------------------------------------------------------------------------------


def test_frames_of_the_contract_byte_by_byte() -> None:
    raw = (SAMPLES / "logs.framed.illustrative.txt").read_bytes().rstrip(b"\n")
    for size in (1, 3, len(raw)):
        decoder = wire.FrameDecoder()
        frames: list[wire.LogFrame] = []
        for i in range(0, len(raw), size):
            frames += decoder.feed(raw[i : i + size])
        data, hb1, hb2 = frames
        assert (data.offset, data.data, data.file) == (6, b"hello\n", "alloc/logs/web.stdout.0")
        assert not data.heartbeat and hb1.heartbeat and hb2.heartbeat


def test_file_event_frame_of_the_docs_sample() -> None:
    text = (SAMPLES / "logs.docs.sample.txt").read_text()
    second = text[text.index("},") + 2 :].strip().rstrip(")")  # the display wraps frames in ( , )
    (frame,) = wire.FrameDecoder().feed(second.encode())
    assert frame.file_event == "file deleted" and frame.data == b"" and not frame.heartbeat


def test_braces_and_quotes_inside_strings() -> None:
    tricky = json.dumps({"Offset": 1, "Data": "e30=", "File": 'a}{"\\b'}).encode()
    frames = wire.FrameDecoder().feed(tricky + b"{}" + tricky[:5])
    assert [f.data for f in frames] == [b"{}", b""]
    assert frames[0].file == 'a}{"\\b'


@pytest.mark.parametrize("raw", [b"x{}", b"}", b'{"Data":"***"}'])
def test_bad_frames(raw: bytes) -> None:
    with pytest.raises(ValueError):
        wire.FrameDecoder().feed(raw)


def test_the_typed_spec_round_trips_through_its_json() -> None:
    spec = wire.validate_task({**SEED, "timeout_s": 30}, **DEFAULTS)
    assert wire.NomadSpec.from_json(spec.to_json()) == spec
    assert list(spec.to_json()) == [
        "job_id",
        "namespace",
        "region",
        "job",
        "tasks",
        "expected",
        "timeout_s",
    ]
    with pytest.raises(ValueError, match="stored Nomad spec"):
        wire.NomadSpec.from_json({**spec.to_json(), "tasks": "main"})


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"resources": {"cpu": 10**400}}, "task.resources.cpu"),
        ({"timeout_s": 1e400}, "task.timeout_s"),
        ({"timeout_s": float("nan")}, "task.timeout_s"),
    ],
)
def test_huge_numbers_are_refused_before_conversion(patch: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        validate({**SEED, **patch})
    assert err.value.field == field


def test_a_users_cancel_reads_as_a_cancel_not_as_nomads_job_update() -> None:
    killed = alloc(
        "complete",
        "stop",
        CreateIndex=6,
        DesiredDescription="alloc not needed due to job update",
        TaskStates=task_events({"Type": "Killing"}, {"Type": "Killed"}),
    )
    obs = observe([killed], stopped=True, cancel_requested=True)
    assert obs.state is S.CANCELLED
    assert obs.reason == f"cancelled: Nomad stopped allocation {killed['ID'][:8]}"
    assert "job update" not in obs.reason
    # stopped by someone else: Nomad's words stay
    assert "job update" in (observe([killed], stopped=True).reason or "")


def test_a_purge_event_marks_the_job_gone() -> None:
    from egw.providers.nomad.tracked import JobView

    view = JobView(since=5)
    line = wire.parse_stream_line(
        json.dumps(
            {
                "Index": 9,
                "Events": [
                    {
                        "Topic": "Job",
                        "Type": "JobDeregistered",
                        "Key": "demo",
                        "Namespace": "default",
                        "FilterKeys": None,
                        "Index": 9,
                        "Payload": {"Job": {"ID": "demo", "JobModifyIndex": 5}, "Deleted": True},
                    }
                ],
            }
        )
    )
    assert view.apply(line.events[0]) and view.stopped and view.gone


def test_log_positions_map_onto_offsets_from_the_lowest_file_on_disk() -> None:
    """hashicorp/nomad client/fs_endpoint.go findClosest: ``origin=start`` offsets count from
    the lowest file still on disk; fs/ls names the files, rotated ones are full."""
    listing = [
        {"Name": "main.stdout.3", "IsDir": False, "Size": 100},
        {"Name": "main.stdout.2", "IsDir": False, "Size": 100},
        {"Name": "main.stderr.0", "IsDir": False, "Size": 7},
        {"Name": "main.stdout.x", "IsDir": False, "Size": 1},
        {"Name": "other.stdout.9", "IsDir": False, "Size": 1},
    ]
    files = wire.disk_files(listing, "main", "stdout")
    assert files == {2: 100, 3: 100}
    assert wire.full_size(files) == 100 and wire.full_size({0: 5}) is None
    assert wire.start_offset(wire.LogPosition(3, 10), files) == 110
    assert wire.start_offset(wire.LogPosition(1, 10), files) is None  # rotated away
    gone = wire.bytes_between(wire.LogPosition(0, 30), wire.LogPosition(2, 0), files, 100)
    assert gone == 170
    assert wire.bytes_between(wire.LogPosition(0, 30), wire.LogPosition(2, 0), {}, None) is None
    assert wire.file_index("alloc/logs/main.stdout.12") == 12
    assert wire.file_index("alloc/logs/main") is None and wire.file_index(None) is None


def test_log_cursors_old_and_new() -> None:
    assert wire.parse_cursor("1234") == 1234  # a byte count, as stored before
    assert wire.parse_cursor("3:17") == wire.LogPosition(3, 17)
    assert wire.LogPosition(3, 17).encode() == "3:17"
    assert wire.parse_cursor(None) is None and wire.parse_cursor("x:1") is None
