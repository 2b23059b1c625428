"""The local runner: tasks are subprocesses of the gateway host.

The argv runs without a shell, in its own session (process group) so that a
cancel stops it and everything it started: SIGTERM to the group, SIGKILL after
``kill_grace_s``. A task ends when the last of its processes has: leftovers of a
command that exited get ``kill_grace_s``, then SIGKILL, and only then is its
slot free. stdout and stderr are read as they are written and go to the log
store chunk by chunk (never splitting a UTF-8 character), so tailers see output
live. At most ``max_concurrent`` run at once; the rest wait ``queued``. A
restarted gateway runs the tasks that never started; it cannot re-attach to a
previous one's processes: it stops them and records their tasks failed.

Modules: `spec` (the checked ``task`` object, `LocalSpec`), `policy` (what an
allowlist lets a task choose), `process` (one task's process: start, output,
signals), `group` (all of a task's processes, subreaping), `leftovers`
(processes a previous gateway left behind), `provider` (the queue and the
provider API).
"""

from egw.providers.local.provider import LocalProvider
from egw.providers.local.spec import LocalSpec

__all__ = ["LocalProvider", "LocalSpec"]
