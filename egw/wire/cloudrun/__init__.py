"""Cloud Run Jobs and Cloud Logging wire formats (pure): names, task spec, executions, log entries.

Contracts: tests/samples/cloudrun/run-v2-jobs.md and logging-entries-list.md (copied, with the
discovery documents they summarise, into tests/samples/cloudrun/).

One module per part of the two Google APIs the provider speaks (Run Admin v2 and Logging v2):

* `names`: resource names, checked before they go into a URL path (ours and upstream's);
* `spec`: a submit's ``task`` checked into a `CloudRunSpec`, and its ``RunJobRequest``, which
  carries ``EGW_TASK_ID`` so a lost answer can be matched to its execution;
* `executions`: operations, and THE mapping of an Execution to an egw observation;
* `logquery` and `entries`: the Logging query of one execution, entries rendered as lines, and
  the `LogCursor` that reads no line twice and skips none;
* `google`: the OAuth scope and Google's error bodies.

This package re-exports them all, so ``from egw.wire import cloudrun as wire`` reads as one API.
"""

from egw.wire.cloudrun.entries import LogCursor, LogLine, format_line, render_entry
from egw.wire.cloudrun.executions import (
    RunOperation,
    execution_observation,
    execution_task_id,
    parse_operation,
)
from egw.wire.cloudrun.google import (
    REQUIRED_PERMISSIONS,
    SCOPE,
    GoogleError,
    parse_error,
    permission_hint,
)
from egw.wire.cloudrun.logquery import (
    LABEL_EXECUTION,
    LABEL_TASK_INDEX,
    LOG_RESOURCE_TYPE,
    MAX_FILTER_CHARS,
    batch_entries_request,
    batch_filter,
    batch_filter_length,
    execution_key,
    list_entries_request,
    log_filter,
    normalize_timestamp,
    shift_timestamp,
    timestamp_from,
)
from egw.wire.cloudrun.names import (
    ExecutionRef,
    JobRef,
    check_job,
    check_operation_name,
    check_project,
    check_region,
    parse_execution_name,
)
from egw.wire.cloudrun.spec import (
    CORRELATION_ENV,
    MAX_ARG_BYTES,
    MAX_ARGS,
    MAX_TASK_COUNT,
    MAX_TIMEOUT_S,
    CloudRunSpec,
    run_job_request,
    validate_task,
)

__all__ = [
    "CORRELATION_ENV",
    "LABEL_EXECUTION",
    "LABEL_TASK_INDEX",
    "LOG_RESOURCE_TYPE",
    "MAX_ARGS",
    "MAX_ARG_BYTES",
    "MAX_FILTER_CHARS",
    "MAX_TASK_COUNT",
    "MAX_TIMEOUT_S",
    "REQUIRED_PERMISSIONS",
    "SCOPE",
    "CloudRunSpec",
    "ExecutionRef",
    "GoogleError",
    "JobRef",
    "LogCursor",
    "LogLine",
    "RunOperation",
    "batch_entries_request",
    "batch_filter",
    "batch_filter_length",
    "check_job",
    "check_operation_name",
    "check_project",
    "check_region",
    "execution_key",
    "execution_observation",
    "execution_task_id",
    "format_line",
    "list_entries_request",
    "log_filter",
    "normalize_timestamp",
    "parse_error",
    "parse_execution_name",
    "parse_operation",
    "permission_hint",
    "render_entry",
    "run_job_request",
    "shift_timestamp",
    "timestamp_from",
    "validate_task",
]
