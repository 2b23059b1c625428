"""One task's process: started without a shell in its own session, its output pumped to
the sink as it is written, stopped by signals to its whole process group.

The child gets a small, clean environment (PATH, HOME, LANG, TZ and the task's
own ``env``), never the gateway's: the gateway's environment holds its tokens.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from egw.core.model import Observation, Task, TaskState
from egw.providers.base import ProviderSink
from egw.providers.local.leftovers import start_ticks
from egw.providers.local.spec import LocalSpec

_PASS_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
_READ_SIZE = 64 * 1024


@dataclass(eq=False)
class Run:
    """A task on its way through the runner: waiting, then its process until it ends."""

    task: Task
    spec: LocalSpec
    proc: asyncio.subprocess.Process | None = None
    cancelled: bool = False
    stopping: str | None = None  # why the gateway stopped it, if it did
    killer: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        """Start the process (an `OSError` if it cannot be: see `start_failure`)."""
        env = {k: os.environ[k] for k in _PASS_ENV if k in os.environ}
        env.update(self.spec.env)
        env["EGW_TASK_ID"] = self.task.id
        self.proc = await asyncio.create_subprocess_exec(
            self.spec.command,
            *self.spec.args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=self.spec.cwd,
            start_new_session=True,
        )

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

    async def follow(self, sink: ProviderSink) -> int:
        """Pump stdout and stderr into the sink until both close; the exit code."""
        proc = self.proc
        assert proc is not None and proc.stdout is not None and proc.stderr is not None
        try:
            await asyncio.gather(
                _pump(sink, self.task.id, "stdout", proc.stdout),
                _pump(sink, self.task.id, "stderr", proc.stderr),
            )
            return await proc.wait()
        finally:
            if self.killer is not None:
                self.killer.cancel()

    def outcome(self, code: int) -> Observation:
        if self.stopping is not None:
            return Observation(state=TaskState.FAILED, reason=self.stopping, exit_code=code)
        if self.cancelled:
            return Observation(state=TaskState.CANCELLED, reason="cancelled", exit_code=code)
        if code == 0:
            return Observation(state=TaskState.SUCCEEDED, exit_code=0)
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            return Observation(state=TaskState.FAILED, reason=f"killed by {name}", exit_code=code)
        return Observation(state=TaskState.FAILED, reason=f"exit code {code}", exit_code=code)

    def send_signal(self, sig: signal.Signals) -> None:
        """Signal the process group, if the process still runs."""
        if self.proc is None or self.proc.returncode is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def arm_kill(self, grace_s: float) -> None:
        """SIGKILL the group after ``grace_s`` unless it ends first (armed once)."""
        if self.killer is None:
            loop = asyncio.get_running_loop()
            self.killer = loop.call_later(grace_s, self.send_signal, signal.SIGKILL)


async def _pump(
    sink: ProviderSink, task_id: str, stream: str, reader: asyncio.StreamReader
) -> None:
    """Copy one pipe to the log store chunk by chunk, never splitting a UTF-8 character."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while True:
        data = await reader.read(_READ_SIZE)
        text = decoder.decode(data, final=not data)
        if text:
            await sink.append_log(task_id, stream, text.encode())
        if not data:
            return
