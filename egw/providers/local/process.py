"""One task's process: started without a shell in its own session, its output pumped to
the sink as it is written, stopped by signals to its whole process group (`group`); the task
ends when the last of its processes has.

The child gets a small, clean environment (PATH, HOME, LANG, TZ and the task's
own ``env``), never the gateway's: the gateway's environment holds its tokens.
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from egw.core.chunks import Utf8Boundary
from egw.core.model import Observation, Task, TaskState
from egw.providers.base import ProviderSink, attempt_key
from egw.providers.local import group
from egw.providers.local.leftovers import start_ticks
from egw.providers.local.spec import LocalSpec

_PASS_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
_READ_SIZE = 64 * 1024
#: once every process of a task is gone, how long its pipes may take to reach end of file
#: (longer only if a process outside the task's reach holds them)
_PIPE_DRAIN_S = 2.0
#: how long processes may survive a SIGKILL (uninterruptible sleep) before the task ends anyway
_AFTER_KILL_S = 5.0

log = structlog.get_logger("egw.providers.local")


@dataclass(eq=False)
class Run:
    """A task on its way through the runner: waiting, then its processes until all end."""

    task: Task
    spec: LocalSpec
    proc: asyncio.subprocess.Process | None = None
    cancelled: bool = False
    stopping: str | None = None  # why the gateway stopped it, if it did
    killer: asyncio.TimerHandle | None = None
    #: the task's processes are all gone: its group id may be reused, signal nothing more
    gone: bool = False
    #: SIGKILL was sent: whatever of the task still appears gets one too
    killed: bool = False
    #: resolves when the command itself exits (``proc.wait()`` waits for its pipes too)
    exited: asyncio.Future[None] | None = None
    #: replaced by a new attempt (``on_stuck: resubmit``): its output and end are not the task's
    retired: bool = False
    #: the watcher that follows the process and records its end (`LocalProvider._watch`)
    watcher: asyncio.Task[None] | None = None

    @property
    def key(self) -> str:
        """The attempt's key: the value of its processes' ``EGW_TASK_ID`` (`group`)."""
        return attempt_key(self.task)

    async def start(self, executable: str | None = None, cwd: str | None = None) -> None:
        """Start the process (an `OSError` if it cannot be: see `start_failure`).

        ``executable`` is the pinned path of an allowlisted command (argv[0] stays the
        command's name), ``cwd`` the checked directory; without an allowlist, the spec's.
        """
        env = {k: os.environ[k] for k in _PASS_ENV if k in os.environ}
        env.update(self.spec.env)
        env["EGW_TASK_ID"] = self.key
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.subprocess_exec(
            lambda: _Protocol(limit=_READ_SIZE, loop=loop),
            self.spec.command,
            *self.spec.args,
            executable=executable,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=self.spec.cwd if cwd is None else cwd,
            start_new_session=True,
        )
        self.exited = protocol.exited
        self.proc = asyncio.subprocess.Process(transport, protocol, loop)

    def start_failure(self, exc: OSError) -> Observation:
        cwd = self.spec.cwd
        where = f" in {cwd}" if cwd and not Path(cwd).is_dir() else ""
        return Observation(
            state=TaskState.FAILED,
            reason=f"cannot start {self.spec.command!r}{where}: {exc.strerror or exc}",
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the process is not started"
        return self.proc.pid

    def upstream(self) -> dict[str, Any]:
        """What identifies the process after a restart (see `leftovers.kill_leftover`)."""
        return {"pid": self.pid, "start_ticks": start_ticks(self.pid)}

    async def follow(self, sink: ProviderSink, grace_s: float) -> int:
        """Pump stdout and stderr into the sink while the command runs; once it exits,
        wait for the rest of its processes (SIGKILL after ``grace_s``); the exit code."""
        proc = self.proc
        assert proc is not None and proc.stdout is not None and proc.stderr is not None
        pumps: asyncio.Future[Any] = asyncio.ensure_future(
            asyncio.gather(
                _pump(sink, self, "stdout", proc.stdout),
                _pump(sink, self, "stderr", proc.stderr),
            )
        )
        exited: asyncio.Future[Any] | None = self.exited
        assert exited is not None
        try:
            await asyncio.wait((pumps, exited), return_when=asyncio.FIRST_COMPLETED)
            if pumps.done() and pumps.exception() is not None:
                # the output cannot be stored: stop the task rather than run it blind
                self.send_signal(signal.SIGKILL)
            await exited
            code = proc.returncode
            assert code is not None
            await self._until_gone(grace_s)
            # every writer of the pipes is gone: what remains in them is read to the end
            done, _ = await asyncio.wait({pumps}, timeout=_PIPE_DRAIN_S)
            if done:
                await pumps
            else:
                log.warning("local_pipe_held", task_id=self.task.id)
            return code
        finally:
            pumps.cancel()
            if self.killer is not None:
                self.killer.cancel()

    async def _until_gone(self, grace_s: float) -> None:
        """Wait until no process of the task is left; after its command exited, the rest
        get ``grace_s`` (or what is left of a cancel's grace), then SIGKILL."""
        pgid, task_id, key = self.pid, self.task.id, self.key
        strays = group.remaining(pgid, key, [])
        if strays is None:
            self.gone = True
            return
        log.info("local_processes_left", task_id=task_id, escapees=len(strays))
        self.arm_kill(grace_s)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + grace_s + _AFTER_KILL_S
        delay = 0.01
        while strays is not None:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)
            if self.killed:
                self.send_signal(signal.SIGKILL)  # again: also what started since
            strays = group.remaining(pgid, key, strays)
            if strays is not None and loop.time() > give_up:
                log.warning("local_processes_survive_sigkill", task_id=task_id)
                break
        self.gone = True

    def outcome(self, code: int) -> Observation:
        """How the attempt ended (about its own attempt: egw never applies it to another)."""
        attempt = self.task.attempt
        if self.stopping is not None:
            return Observation(
                state=TaskState.FAILED, reason=self.stopping, exit_code=code, attempt=attempt
            )
        if self.cancelled:
            return Observation(
                state=TaskState.CANCELLED, reason="cancelled", exit_code=code, attempt=attempt
            )
        if code == 0:
            return Observation(state=TaskState.SUCCEEDED, exit_code=0, attempt=attempt)
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            reason = f"killed by {name}"
        else:
            reason = f"exit code {code}"
        return Observation(state=TaskState.FAILED, reason=reason, exit_code=code, attempt=attempt)

    def send_signal(self, sig: signal.Signals) -> None:
        """Signal every process of the task: its group, whether or not the command itself
        still runs, and those that left the group."""
        if self.proc is None or self.gone:
            return
        self.killed = self.killed or sig is signal.SIGKILL
        group.signal_all(self.proc.pid, self.key, sig)

    def arm_kill(self, grace_s: float) -> None:
        """SIGKILL the task's processes after ``grace_s`` unless they end first (armed once)."""
        if self.killer is None:
            loop = asyncio.get_running_loop()
            self.killer = loop.call_later(grace_s, self.send_signal, signal.SIGKILL)


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """asyncio's subprocess protocol, telling when the process exits, pipes or not."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


async def _pump(sink: ProviderSink, run: Run, stream: str, reader: asyncio.StreamReader) -> None:
    """Copy one pipe to the log store byte for byte, chunk by chunk, never splitting a
    UTF-8 character (bytes that are not UTF-8 are stored as they are); a retired run's
    output is read and dropped (it is not the task's any more)."""
    chunker = Utf8Boundary()
    while True:
        data = await reader.read(_READ_SIZE)
        chunk = chunker.feed(data) if data else chunker.flush()
        if chunk and not run.retired:
            await sink.append_log(run.task.id, stream, chunk)
        if not data:
            return
