"""The local runner: tasks are subprocesses of the gateway host.

The argv runs without a shell, in its own session (process group) so that a
cancel stops it and everything it started: SIGTERM to the group, SIGKILL after
``kill_grace_s``. stdout and stderr are read as they are written and go to the
log store chunk by chunk (never splitting a UTF-8 character), so tailers see
output live. At most ``max_concurrent`` run at once; the rest wait ``queued``.

The child gets a small, clean environment (PATH, HOME, LANG, TZ and the task's
own ``env``), never the gateway's: the gateway's environment holds its tokens.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import re
import signal
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import structlog

from egw.config import LocalConfig
from egw.core.model import Observation, Task, TaskState
from egw.errors import EgwError, Forbidden, InvalidRequest
from egw.providers.base import ProviderSink, Submission, WebhookResult

log = structlog.get_logger("egw.providers.local")

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PASS_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
_READ_SIZE = 64 * 1024


@dataclass(eq=False)
class _Run:
    task: Task
    proc: asyncio.subprocess.Process | None = None
    cancelled: bool = False
    stopping: str | None = None  # why the gateway stopped it, if it did
    watcher: asyncio.Task[None] | None = None
    killer: asyncio.TimerHandle | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class LocalProvider:
    name: ClassVar[str] = "local"
    webhook_source: ClassVar[str | None] = None

    def __init__(self, cfg: LocalConfig) -> None:
        self.cfg = cfg
        self._sink: ProviderSink | None = None
        self._running: dict[str, _Run] = {}
        self._queue: deque[_Run] = deque()
        self._watchers: set[asyncio.Task[None]] = set()
        self._closing = False

    # --- validation (pure) -------------------------------------------------------------------

    def validate(self, task: Mapping[str, Any]) -> dict[str, Any]:
        command = task.get("command")
        if not isinstance(command, str) or not command.strip() or "\0" in command:
            raise InvalidRequest("task.command must be a non-empty string", field="task.command")
        args = task.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) and "\0" not in a for a in args):
            raise InvalidRequest("task.args must be a list of strings", field="task.args")
        env = task.get("env", {})
        if not isinstance(env, dict):
            raise InvalidRequest("task.env must be an object of strings", field="task.env")
        for key, value in env.items():
            if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
                raise InvalidRequest(f"task.env has a bad variable name {key!r}", field="task.env")
            if not isinstance(value, str) or "\0" in value:
                raise InvalidRequest(f"task.env.{key} must be a string", field=f"task.env.{key}")
        cwd = task.get("cwd")
        if cwd is not None and (not isinstance(cwd, str) or not cwd or "\0" in cwd):
            raise InvalidRequest("task.cwd must be a non-empty string", field="task.cwd")
        unknown = set(task) - {"command", "args", "env", "cwd"}
        if unknown:
            raise InvalidRequest(
                f"unknown field task.{sorted(unknown)[0]}", field=f"task.{sorted(unknown)[0]}"
            )
        allowed = self.cfg.allowed_commands
        if allowed is not None and command not in allowed:
            raise Forbidden(
                f"command {command!r} is not in providers.local.allowed_commands",
                details={"field": "task.command"},
            )
        spec: dict[str, Any] = {"command": command, "args": list(args), "env": dict(env)}
        if cwd is not None:
            spec["cwd"] = cwd
        return spec

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, sink: ProviderSink) -> None:
        """Tasks of a previous gateway cannot be re-attached: their pipes died with it."""
        self._sink = sink
        for task in await sink.active_tasks(self.name):
            if not task.status.terminal:
                _kill_leftover(task)
                await sink.observe(
                    task.id,
                    Observation(state=TaskState.FAILED, reason="gateway restarted"),
                    source=self.name,
                )
            await sink.logs_complete(task.id)

    async def close(self) -> None:
        """Stop every process this gateway started, recording why."""
        self._closing = True
        for run in list(self._queue):
            self._queue.remove(run)
            await self._finish_unstarted(run, "gateway stopped before the task started")
        runs = list(self._running.values())
        for run in runs:
            run.stopping = "gateway stopped while the task ran"
            self._signal(run, signal.SIGTERM)
            self._arm_kill(run)
        # every watcher, also those past their process's exit still recording it
        if self._watchers:
            await asyncio.gather(*self._watchers, return_exceptions=True)

    # --- the provider API --------------------------------------------------------------------

    async def submit(self, task: Task, *, idempotency_key: str) -> Submission:
        if task.id in self._running or any(r.task.id == task.id for r in self._queue):
            return Submission(upstream_id=None, observation=None)
        run = _Run(task)
        if len(self._running) >= self.cfg.max_concurrent:
            self._queue.append(run)
            return Submission(
                upstream_id=None,
                observation=Observation(
                    state=TaskState.QUEUED,
                    reason=f"waiting for a free slot ({self.cfg.max_concurrent} running)",
                ),
            )
        failure = await self._spawn(run)
        if failure is not None:
            return Submission(upstream_id=None, observation=failure)
        assert run.proc is not None
        return Submission(
            upstream_id=str(run.proc.pid),
            upstream={"pid": run.proc.pid, "start_ticks": _start_ticks(run.proc.pid)},
            observation=Observation(state=TaskState.RUNNING),
        )

    async def cancel(self, task: Task, *, force: bool = False) -> Observation | None:
        for waiting in self._queue:
            if waiting.task.id == task.id:
                self._queue.remove(waiting)
                if self._sink is not None:
                    await self._sink.logs_complete(task.id)
                return Observation(state=TaskState.CANCELLED, reason="cancelled before it started")
        run = self._running.get(task.id)
        if run is None:
            # not ours (any more): nothing runs, so it is stopped
            return Observation(state=TaskState.CANCELLED, reason="no process was running")
        run.cancelled = True
        if force:
            self._signal(run, signal.SIGKILL)
        else:
            self._signal(run, signal.SIGTERM)
            self._arm_kill(run)
        return None

    async def status(self, task: Task) -> Observation:
        if task.id in self._running:
            return Observation(state=TaskState.RUNNING)
        if any(r.task.id == task.id for r in self._queue):
            return Observation(state=TaskState.QUEUED)
        return Observation(state=task.status, reason=task.reason, exit_code=task.exit_code)

    async def handle_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookResult:
        return WebhookResult(status=404, body={"error": "the local runner takes no webhooks"})

    def health(self) -> Mapping[str, Any]:
        return {"running": len(self._running), "queued": len(self._queue)}

    # --- processes ---------------------------------------------------------------------------

    async def _spawn(self, run: _Run) -> Observation | None:
        spec = run.task.spec
        env = {k: os.environ[k] for k in _PASS_ENV if k in os.environ}
        env.update(spec.get("env", {}))
        env["EGW_TASK_ID"] = run.task.id
        cwd = spec.get("cwd")
        try:
            proc = await asyncio.create_subprocess_exec(
                spec["command"],
                *spec.get("args", []),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            if self._sink is not None:
                await self._sink.logs_complete(run.task.id)
            where = f" in {cwd}" if cwd and not Path(cwd).is_dir() else ""
            return Observation(
                state=TaskState.FAILED,
                reason=f"cannot start {spec['command']!r}{where}: {exc.strerror or exc}",
            )
        run.proc = proc
        self._running[run.task.id] = run
        run.watcher = asyncio.create_task(self._watch(run), name=f"egw-local-{run.task.id}")
        self._watchers.add(run.watcher)
        run.watcher.add_done_callback(self._watchers.discard)
        return None

    async def _watch(self, run: _Run) -> None:
        proc, sink = run.proc, self._sink
        assert proc is not None and proc.stdout is not None and proc.stderr is not None
        assert sink is not None
        try:
            await asyncio.gather(
                self._pump(run.task.id, "stdout", proc.stdout),
                self._pump(run.task.id, "stderr", proc.stderr),
            )
            code = await proc.wait()
        finally:
            if run.killer is not None:
                run.killer.cancel()
            self._running.pop(run.task.id, None)
        try:
            await sink.logs_complete(run.task.id)
            await sink.observe(run.task.id, self._outcome(run, code), source=self.name)
        except EgwError as exc:
            # the store is gone (gateway stopping): the next start records the task
            log.warning("local_outcome_not_recorded", task_id=run.task.id, error=exc.message)
            return
        await self._next()

    def _outcome(self, run: _Run, code: int) -> Observation:
        if run.stopping is not None:
            return Observation(state=TaskState.FAILED, reason=run.stopping, exit_code=code)
        if run.cancelled:
            return Observation(state=TaskState.CANCELLED, reason="cancelled", exit_code=code)
        if code == 0:
            return Observation(state=TaskState.SUCCEEDED, exit_code=0)
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            return Observation(state=TaskState.FAILED, reason=f"killed by {name}", exit_code=code)
        return Observation(state=TaskState.FAILED, reason=f"exit code {code}", exit_code=code)

    async def _pump(self, task_id: str, stream: str, reader: asyncio.StreamReader) -> None:
        sink = self._sink
        assert sink is not None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while True:
            data = await reader.read(_READ_SIZE)
            text = decoder.decode(data, final=not data)
            if text:
                await sink.append_log(task_id, stream, text.encode())
            if not data:
                return

    async def _next(self) -> None:
        while self._queue and len(self._running) < self.cfg.max_concurrent and not self._closing:
            run = self._queue.popleft()
            failure = await self._spawn(run)
            assert self._sink is not None
            if failure is not None:
                await self._sink.observe(run.task.id, failure, source=self.name)
                continue
            assert run.proc is not None
            await self._sink.set_upstream(
                run.task.id,
                upstream_id=str(run.proc.pid),
                data={"pid": run.proc.pid, "start_ticks": _start_ticks(run.proc.pid)},
            )
            await self._sink.observe(run.task.id, Observation(state=TaskState.RUNNING), source=self.name)

    async def _finish_unstarted(self, run: _Run, reason: str) -> None:
        if self._sink is not None:
            await self._sink.logs_complete(run.task.id)
            await self._sink.observe(
                run.task.id, Observation(state=TaskState.FAILED, reason=reason), source=self.name
            )

    def _signal(self, run: _Run, sig: signal.Signals) -> None:
        if run.proc is None or run.proc.returncode is not None:
            return
        try:
            os.killpg(run.proc.pid, sig)
        except ProcessLookupError:
            pass

    def _arm_kill(self, run: _Run) -> None:
        if run.killer is None:
            loop = asyncio.get_running_loop()
            run.killer = loop.call_later(
                self.cfg.kill_grace_s, self._signal, run, signal.SIGKILL
            )


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks (Linux), to recognise it after a restart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    return int(stat.rsplit(")", 1)[1].split()[19])


def _kill_leftover(task: Task) -> None:
    """A task's process group may outlive a gateway killed with SIGKILL: stop it,
    but only if the pid still names the same process (same start time)."""
    pid, ticks = task.upstream.get("pid"), task.upstream.get("start_ticks")
    if not isinstance(pid, int) or ticks is None or _start_ticks(pid) != ticks:
        return
    try:
        os.killpg(pid, signal.SIGKILL)
        log.info("leftover_killed", task_id=task.id, pid=pid)
    except (ProcessLookupError, PermissionError):
        pass
