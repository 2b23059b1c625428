"""GitHub Actions wire format (pure): no I/O, no clock (callers pass ``now``).

The provider (`egw.providers.github_actions`) does the talking; these modules
say what is sent and what an answer means:

* `spec`: a task's validation into a `GitHubSpec`, and the API paths it names;
* `dispatch`: the create-workflow-dispatch body and answer, GitHub's error messages;
* `delivery`: webhook signatures and deliveries;
* `runs`: runs and jobs, their egw states, their order, run matching, log lines;
* `logs`: a job log's download answers (not there yet) and the runner's line format;
* `rates`: rate limits and pagination.

Everything is re-exported here, so that ``from egw.wire import github as gh`` reads
``gh.parse_run``, ``gh.sign``...
"""

from egw.wire.github.delivery import Delivery, parse_delivery, sign, verify_signature
from egw.wire.github.dispatch import (
    API_VERSIONS,
    PROVIDER,
    DispatchResult,
    correlation_id,
    dispatch_body,
    error_message,
    parse_dispatch_response,
    rejects_run_details,
)
from egw.wire.github.logs import RUNNER_LINE, blob_error_code, log_not_yet, log_text
from egw.wire.github.rates import (
    MAX_WAIT_S,
    SECONDARY_WAIT_S,
    RateLimit,
    next_link,
    parse_rate_limit,
    rate_limit_wait,
)
from egw.wire.github.runs import (
    CONCLUSIONS,
    Job,
    Run,
    Step,
    created_filter,
    is_newer,
    job_is_newer,
    job_progress_lines,
    matches_correlation,
    order_key,
    parse_job,
    parse_run,
    pick_run,
    run_observation,
    run_state,
    text_chunks,
)
from egw.wire.github.spec import (
    MAX_INPUTS,
    MAX_INPUTS_CHARS,
    TASK_KEYS,
    GitHubSpec,
    dispatch_path,
    job_path,
    repo_path,
    run_path,
    validate_inputs,
    validate_owner,
    validate_ref,
    validate_repo,
    validate_run_id,
    validate_task,
    validate_workflow_id,
    workflow_runs_path,
)
from egw.wire.github.values import header, parse_time

__all__ = [
    "API_VERSIONS",
    "CONCLUSIONS",
    "MAX_INPUTS",
    "MAX_INPUTS_CHARS",
    "MAX_WAIT_S",
    "PROVIDER",
    "RUNNER_LINE",
    "SECONDARY_WAIT_S",
    "TASK_KEYS",
    "Delivery",
    "DispatchResult",
    "GitHubSpec",
    "Job",
    "RateLimit",
    "Run",
    "Step",
    "blob_error_code",
    "correlation_id",
    "created_filter",
    "dispatch_body",
    "dispatch_path",
    "error_message",
    "header",
    "is_newer",
    "job_is_newer",
    "job_path",
    "job_progress_lines",
    "log_not_yet",
    "log_text",
    "matches_correlation",
    "next_link",
    "order_key",
    "parse_delivery",
    "parse_dispatch_response",
    "parse_job",
    "parse_rate_limit",
    "parse_run",
    "parse_time",
    "pick_run",
    "rate_limit_wait",
    "rejects_run_details",
    "repo_path",
    "run_observation",
    "run_path",
    "run_state",
    "sign",
    "text_chunks",
    "validate_inputs",
    "validate_owner",
    "validate_ref",
    "validate_repo",
    "validate_run_id",
    "validate_task",
    "validate_workflow_id",
    "verify_signature",
    "workflow_runs_path",
]
