"""A local task's spec: the submit's ``task`` object checked, as a frozen `LocalSpec`."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from egw.core import fields
from egw.errors import InvalidRequest
from egw.providers.local.policy import Policy

_KEYS = ("command", "args", "env", "cwd")


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalSpec:
    """What to run: ``command`` with ``args`` (no shell), the task's own ``env``, in ``cwd``."""

    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The stored form: ``cwd`` only when set."""
        out: dict[str, Any] = {
            "command": self.command,
            "args": list(self.args),
            "env": dict(self.env),
        }
        if self.cwd is not None:
            out["cwd"] = self.cwd
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LocalSpec:
        """A spec as submitted or stored (a stored spec is input too: it is checked again)."""
        command = fields.text(data.get("command"), "task.command", allow_empty=False)
        args = fields.argv(data.get("args", []), "task.args")
        env = fields.env(data.get("env", {}), "task.env", names=fields.POSIX_ENV_NAME)
        cwd = data.get("cwd")
        if cwd is not None:
            cwd = fields.text(cwd, "task.cwd", allow_empty=False)
        fields.known_keys(data, _KEYS)
        return cls(command=command, args=tuple(args), env=env, cwd=cwd)


class FoundCommands:
    """Commands recently found on the gateway's PATH, each trusted for ``ttl_s``.

    ``shutil.which`` stats each PATH entry: about 22 us, a tenth of a queued submit (bench
    "submits"), paid again by every submit of the same command. Only a command found is
    kept (one not found is looked up every time, so installing it takes effect at once),
    keyed by the PATH it was found on. A command removed from the host within ``ttl_s`` of
    a lookup is still accepted: its task then fails to start, with the runner's error.
    With an allowlist this is not used: the `Policy` resolves the command itself.
    """

    def __init__(self, ttl_s: float = 1.0, size: int = 256) -> None:
        self._ttl_s = ttl_s
        self._size = size
        self._found: dict[tuple[str, str], float] = {}

    def on_path(self, command: str, path: str) -> bool:
        key = (command, path)
        now = time.monotonic()
        until = self._found.get(key)
        if until is not None and now < until:
            return True
        if shutil.which(command, path=path) is None:
            self._found.pop(key, None)
            return False
        if len(self._found) >= self._size:
            self._found.clear()
        self._found[key] = now + self._ttl_s
        return True


def validate_task(
    task: Mapping[str, Any], policy: Policy | None, found: FoundCommands
) -> LocalSpec:
    """Check a submit's ``task`` object; with an allowlist (`Policy`), a command outside
    it, a denied ``env`` name or a ``cwd`` outside the allowed roots is `Forbidden`."""
    spec = LocalSpec.from_json(task)
    if policy is not None:
        policy.executable(spec.command)
        policy.check_env(dict(spec.env))
        policy.cwd(spec.cwd)
    else:
        _check_found(spec, found)
    return spec


def _check_found(spec: LocalSpec, found: FoundCommands) -> None:
    """A command that is not there is a 400 at submit, not a task that fails at once:
    looked up as the runner will, on the gateway's PATH (a path with a slash: relative to
    the task's ``cwd``). A task that sets its own PATH is left to it; with an allowlist,
    the policy resolves the command instead."""
    command = spec.command
    if "/" in command:
        path = os.path.join(spec.cwd or os.getcwd(), command)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return
        where = "in the task's cwd" if spec.cwd else "on the gateway"
    elif "PATH" in spec.env or found.on_path(command, os.environ.get("PATH", os.defpath)):
        return
    else:
        where = "on the gateway's PATH"
    raise InvalidRequest(
        f"command {command!r} is not an executable file {where}", field="task.command"
    )
