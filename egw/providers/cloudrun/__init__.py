"""The Cloud Run Jobs provider: run executions, poll them, tail their Cloud Logging logs.

Contracts: tests/samples/cloudrun/run-v2-jobs.md and logging-entries-list.md; the wire formats
are in `egw.wire.cloudrun`.

Theory of operation, one module per part
----------------------------------------
* **Submit** (`executions`). ``jobs:run`` has no request id, so egw makes it idempotent itself:
  ``run_attempted`` is recorded before the POST, and every execution carries ``EGW_TASK_ID``; after
  a lost answer egw lists the job's executions and adopts the one carrying the task's id.
* **Status** (`poller`). Cloud Run pushes nothing: one poller per job reads its non-terminal
  executions together (``executions.list`` in pages, ``executions.get`` only for what the list
  did not show), its interval adaptive with jitter; only a change of state is reported, with a
  delivery id that makes a report after a restart a no-op.
* **Logs** (`logs`). One reader per project reads ``entries:list`` oldest first for many
  executions at once (their labels OR-ed in one filter), routes each entry to its execution's
  persisted cursor, inside the project's `ReadBudget`, and gives each execution a last read once
  the settle time after its end has passed.
* **Auth** (`credentials`). A static token, or google-auth credentials refreshed in a thread.
* `api` is the one HTTP helper they share; `watch` holds what the poller and the reader of one
  execution share; `provider` ties it all together and owns the background loops.
"""

from egw.providers.cloudrun.logs import ReadBudget
from egw.providers.cloudrun.provider import CloudRunProvider

__all__ = ["CloudRunProvider", "ReadBudget"]
