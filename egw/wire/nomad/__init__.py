"""Nomad's wire formats, pure: task object, job JSON, event-stream lines, states, log frames.

Theory of operation
-------------------
Contracts: Nomad's API docs and wire facts, copied in tests/samples/nomad/*.md with the
samples the tests use. Nothing here does I/O; `egw.providers.nomad` feeds it bytes and objects.

* `task`: a user's ``task`` object is either egw's short form (``job_id``, ``image``,
  ``command``...) or ``{"job": {...}}``, a Nomad JSON job passed through. `validate_task`
  checks it and returns a `NomadSpec`: the job without egw's marks plus what the provider
  needs later.
* `spec`: `register_body` adds egw's marks at submit time: ``Meta.egw_task_id`` (so a
  re-submit can recognise the job it already registered) and the group's ``MaxRunDuration``.
  A job ID goes into URL paths, so egw accepts a URL-safe subset of Nomad's rule (Nomad only
  forbids empty IDs, spaces and NUL): 1-128 of ``A-Z a-z 0-9 . _ -``, starting alphanumeric.
* `states`: a task's state is derived from *all* it knows about the job (`job_observation`):
  the latest allocation of each slot (allocation ``Name``), the evaluations (placement
  failures) and the job itself (stopped, purged). Only allocations created after egw's
  registration (``CreateIndex > JobModifyIndex`` of the register answer) count, so an older
  run of the same job ID never leaks in.
* `events`: the event stream is NDJSON with ``{}`` heartbeats (`NdjsonSplitter`,
  `parse_stream_line`; `peek_stream_line` skips, undecoded, a line about no job of egw's).
* `logs`: the log stream is undelimited JSON frames with base64 ``Data`` (`FrameDecoder`);
  the provider stores the bytes as they are, cut at character boundaries
  (`egw.core.chunks.Utf8Boundary`). A read resumes at a `LogPosition` (file index, offset
  in it), mapped onto Nomad's offsets that count from the lowest file still on disk.
"""

from egw.wire.nomad.events import (
    NdjsonSplitter,
    StreamEvent,
    StreamLine,
    parse_stream_line,
    peek_stream_line,
)
from egw.wire.nomad.logs import (
    FrameDecoder,
    LogFrame,
    LogPosition,
    bytes_between,
    disk_files,
    file_index,
    full_size,
    parse_cursor,
    parse_frame,
    start_offset,
)
from egw.wire.nomad.spec import (
    ENFORCE_INDEX_ERROR,
    META_TASK_ID,
    NomadSpec,
    check_job_id,
    register_body,
)
from egw.wire.nomad.states import (
    CLIENT_STATUS,
    MAX_RUN_EXCEEDED,
    TERMINAL_CLIENT,
    alloc_observation,
    describe_placement_failure,
    job_observation,
    kept_alloc,
    kept_eval,
    task_started,
)
from egw.wire.nomad.task import DRIVERS, GROUP, TASK, validate_task

__all__ = [
    "CLIENT_STATUS",
    "DRIVERS",
    "ENFORCE_INDEX_ERROR",
    "GROUP",
    "MAX_RUN_EXCEEDED",
    "META_TASK_ID",
    "TASK",
    "TERMINAL_CLIENT",
    "FrameDecoder",
    "LogFrame",
    "LogPosition",
    "NdjsonSplitter",
    "NomadSpec",
    "StreamEvent",
    "StreamLine",
    "alloc_observation",
    "bytes_between",
    "check_job_id",
    "describe_placement_failure",
    "disk_files",
    "file_index",
    "full_size",
    "job_observation",
    "kept_alloc",
    "kept_eval",
    "parse_cursor",
    "parse_frame",
    "parse_stream_line",
    "peek_stream_line",
    "register_body",
    "start_offset",
    "task_started",
    "validate_task",
]
