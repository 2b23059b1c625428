"""The Nomad backend: register batch jobs, follow their event stream and logs, stop them.

Theory of operation
-------------------
Contracts: tests/samples/nomad/*.md (Nomad's API docs and wire facts). Formats and state
mapping are in `egw.wire.nomad` (pure); this package does the I/O, one seam per module:

* `client` (the job client): register, read and stop jobs, read allocations; token,
  namespace, region, TLS (`tls`) and Nomad's plain-text errors. Submit reads the job first:
  a job already marked with this task's id (``Meta.egw_task_id``) is adopted, never
  registered twice; a live job egw did not start is a `Conflict`. The register answer's
  ``JobModifyIndex`` marks which allocations are this task's (``CreateIndex`` above it), so
  a reused job ID never mixes two runs.
* `watcher` (status): one event-stream subscription per namespace, resumed from a persisted
  index, with blocking queries per task when the stream is refused or keeps failing.
* `state`: the task's state recomputed from everything known about its job and reported
  when it moves; the stops egw makes on its own (placement failure, a task egw ended).
* `logs` (the log follower): one follower per (allocation, task, stream), resumable from a
  persisted offset, a segment per allocation, ``logs_complete`` once all is in.
* `tracked`: what is known of each task (`Tracked`: its `JobView` and `LogState`), and the
  `Registry` of tasks by id and by job.
* `provider`: `NomadProvider`, the Provider protocol over the parts above.
"""

from egw.providers.nomad.provider import NomadProvider
from egw.providers.nomad.tls import tls_context

__all__ = ["NomadProvider", "tls_context"]
