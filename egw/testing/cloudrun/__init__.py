"""A Cloud Run Jobs + Cloud Logging simulator over real HTTP, for tests and ``egw dev``.

One aiohttp app serves, on one base URL (point both ``run_api_url`` and ``logging_api_url`` at it):

* Cloud Run Admin v2: ``POST v2/{job}:run`` (with ``overrides``; answers a long-running operation
  whose ``metadata`` is the new Execution; once done it holds ``error`` if the execution failed,
  else ``response``), ``GET v2/{job}/executions`` (paged; newest first unless told otherwise),
  ``GET v2/{execution}``, ``POST v2/{execution}:cancel``, ``GET v2/{execution}/tasks`` and
  ``GET v2/{task}``, ``GET v2/{operation}`` and ``POST v2/{operation}:wait``;
* Cloud Logging v2: ``POST v2/entries:list`` (``resourceNames``, ``filter`` in the query language
  as `egw.testing.cloudrun.filters` parses it, ``orderBy`` ``timestamp asc|desc``, ties broken by
  ``insertId`` only within one ``logName``, ``pageSize``/``pageToken``); timestamps are proto3
  JSON (0, 3, 6 or 9 fractional digits);
* ``POST /token``: an OAuth2 token endpoint for service-account keys (set a key file's
  ``token_uri`` to ``<url>/token``; google-auth then signs a JWT and gets a token here).

Every API call needs ``Authorization: Bearer <token>`` (the ``token`` given, or one issued by
``/token``); errors are Google's ``{"error": {"code", "message", "status"}}``.

Scripting API::

    sim = CloudRunSimulator(token="sim-token", time_scale=0.01)   # 10 simulated s = 0.1 real s
    url = await sim.start()                                       # ... await sim.close()
    sim.add_job("my-project", "asia-east1", "my-job")             # default: prints args, exits 0
    sim.add_job("p", "us-central1", "etl", args=["run"], task_count=3, script=JobScript(
        stdout=["line 1", {"message": "structured", "rows": 3}],  # as textPayload / jsonPayload
        stderr=["warning!"], exit_code=2, failing_tasks=frozenset({1}),
        duration_s=10, start_delay_s=2, cancel_delay_s=1,
        ingest_delay_s=1, ingest_jitter_s=0.5,                    # Logging shows entries late
        timestamp_resolution_s=1,                                 # many entries share a timestamp
        per_task=None,                                            # or ctx -> TaskOutput(...)
    ))
    sim.fail("run", 429, times=3)            # next 3 jobs:run calls answer 429 RESOURCE_EXHAUSTED
    sim.fail("run", 500, apply=True)         # starts the execution, then answers 500
    sim.fail("list_entries", 503, skip=1)    # the second entries:list call fails
    sim.fail("*", 503)                       # next call of any operation: 503 UNAVAILABLE
    sim.delay("run", 2.0)                    # starts the execution, answers 2 s (real) late
    sim.empty_log_pages = 2                  # entries:list pages: no entries but a nextPageToken
    sim.logging_quota_per_minute = 60        # 429 once a project reads more often
    sim.trusted_keys = {kid: public_pem}     # verify service-account JWT signatures
    sim.list_order = "oldest_first"          # or "shuffled": no order is documented
    sim.cancel_finished_status = 409         # cancelling a finished execution: this error, or
                                             # None: a done operation (no source says which)
    sim.run_operation_errors.append((9, "msg"))  # next jobs:run: a done operation with `error`
    sim.grant("inv-token", "roles/run.invoker")  # a token with only these roles' permissions:
                                             # 403 PERMISSION_DENIED (ErrorInfo names it)
    sim.count("list_entries"); sim.requests  # what was called
    sim.executions_of("my-project", "asia-east1", "my-job")

Operations named in ``fail``/``delay``/``count``: run, get_execution, list_executions, cancel,
list_tasks, get_task, get_operation, wait_operation, list_entries, token.
"""

from egw.testing.cloudrun.model import JobScript, SimExecution, SimJob, TaskContext, TaskOutput
from egw.testing.cloudrun.server import OPERATIONS, PERMISSIONS, ROLES, CloudRunSimulator

__all__ = [
    "OPERATIONS",
    "PERMISSIONS",
    "ROLES",
    "CloudRunSimulator",
    "JobScript",
    "SimExecution",
    "SimJob",
    "TaskContext",
    "TaskOutput",
]
