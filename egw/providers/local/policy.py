"""What an allowlisted local runner lets a task choose: the command, its ``env``, its ``cwd``.

With ``allowed_commands`` unset there is no policy: a ``tasks:write`` token runs anything
the gateway's user can (README, "Security model"). With it set, the allowlist must pin what
actually executes, so a task cannot reach around it:

- the command runs by the absolute path its name resolved to when the config was loaded
  (`LocalConfig.commands`), never through the task's ``PATH`` or ``cwd``;
- the task's ``env`` may not set a variable that changes which code the command, the
  dynamic loader or an interpreter the command starts loads or runs (`DENIED_ENV`);
- the task's ``cwd`` must lie under one of ``allowed_cwd`` after every symlink and ``..``
  is resolved, and the process starts in that resolved directory; without ``allowed_cwd``
  a task may not choose its ``cwd`` at all (it runs in the gateway's working directory).

Refusals are `Forbidden` (403) naming the field, like a command outside the allowlist.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from egw.config import LocalConfig
from egw.errors import Forbidden

#: Variables a task may not set while ``allowed_commands`` is set. Each one makes an
#: allowed program load or run code the allowlist did not name:
DENIED_ENV = frozenset(
    {
        # where programs are looked up: PATH for every exec the command makes itself
        # (a `make` running `cc`), CDPATH for a shell's `cd`
        "PATH",
        "CDPATH",
        # POSIX shells: ENV and BASH_ENV name a file sourced at start-up; IFS re-splits
        # words; SHELLOPTS/BASHOPTS switch on options (xtrace + PS4 runs PS4's $(...));
        # PROMPT_COMMAND runs on every prompt
        "ENV",
        "BASH_ENV",
        "IFS",
        "SHELLOPTS",
        "BASHOPTS",
        "PS4",
        "PROMPT_COMMAND",
        # glibc: GCONV_PATH loads iconv modules (shared objects), LOCPATH and NLSPATH
        # locale and message files, GLIBC_TUNABLES feeds the loader (CVE-2023-4911),
        # HOSTALIASES and RESOLV_HOST_CONF the resolver's files
        "GCONV_PATH",
        "LOCPATH",
        "NLSPATH",
        "GLIBC_TUNABLES",
        "HOSTALIASES",
        "RESOLV_HOST_CONF",
        # home and configuration directories: where git, ssh, npm, pip... read files that
        # may name programs to run (git's core.pager, aliases, hooks)
        "HOME",
        # interpreters' module paths and start-up options
        "PERLLIB",
        "PERL5LIB",
        "PERL5OPT",
        "PERL5DB",
        "RUBYLIB",
        "RUBYOPT",
        "NODE_OPTIONS",
        "NODE_PATH",
        "CLASSPATH",
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
        "JDK_JAVA_OPTIONS",
        # make reads extra makefiles (MAKEFILES) and options (MAKEFLAGS, -f / --eval)
        "MAKEFILES",
        "MAKEFLAGS",
        # git runs these programs, or reads config (GIT_CONFIG_*) that names programs
        "GIT_SSH",
        "GIT_SSH_COMMAND",
        "GIT_EXEC_PATH",
        "GIT_EXTERNAL_DIFF",
        "GIT_PAGER",
        "GIT_EDITOR",
        "GIT_ASKPASS",
        "GIT_PROXY_COMMAND",
        "GIT_TEMPLATE_DIR",
        "GIT_CONFIG",
        "EDITOR",
        "VISUAL",
        "PAGER",
    }
)
#: whole families: the dynamic loader (LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT; DYLD_* on
#: macOS), exported bash functions, glibc's malloc hooks, XDG configuration directories,
#: git's numbered config entries, and Python (PYTHONPATH, PYTHONHOME, PYTHONSTARTUP,
#: PYTHONBREAKPOINT and PYTHONWARNINGS import modules by name)
DENIED_ENV_PREFIXES = (
    "LD_",
    "DYLD_",
    "BASH_FUNC_",
    "MALLOC_",
    "XDG_",
    "GIT_CONFIG_",
    "PYTHON",
)
#: the PYTHON* variables that only change output and hashing, never what is imported
SAFE_PYTHON_ENV = frozenset(
    {"PYTHONUNBUFFERED", "PYTHONIOENCODING", "PYTHONUTF8", "PYTHONDONTWRITEBYTECODE"}
)


def env_denied(name: str) -> bool:
    if name in SAFE_PYTHON_ENV:
        return False
    return name in DENIED_ENV or name.startswith(DENIED_ENV_PREFIXES)


@dataclass(frozen=True, slots=True)
class Policy:
    """The allowlist as loaded: command name → absolute path, ``cwd`` roots, env names."""

    commands: dict[str, str]
    cwd_roots: tuple[str, ...] | None
    env_names: frozenset[str] | None

    @classmethod
    def from_config(cls, cfg: LocalConfig) -> Policy | None:
        commands = cfg.commands()
        if commands is None:
            return None
        roots = cfg.cwd_roots()
        env = cfg.allowed_env
        return cls(
            commands=commands,
            cwd_roots=None if roots is None else tuple(roots),
            env_names=None if env is None else frozenset(env),
        )

    def executable(self, command: str) -> str:
        """The absolute path to run for an allowed ``command`` (`Forbidden` otherwise)."""
        found = self.commands.get(command)
        if found is None and command in self.commands.values():
            found = command  # the pinned path itself, as submitted
        if found is None:
            raise Forbidden(
                f"command {command!r} is not in providers.local.allowed_commands",
                details={"field": "task.command"},
            )
        return found

    def check_env(self, env: dict[str, str] | None) -> None:
        for name in env or {}:
            if env_denied(name):
                raise Forbidden(
                    f"task.env may not set {name} while providers.local.allowed_commands is set:"
                    " it changes which code the command loads or runs",
                    details={"field": f"task.env.{name}"},
                )
            if self.env_names is not None and name not in self.env_names:
                raise Forbidden(
                    f"task.env may not set {name}: it is not in providers.local.allowed_env",
                    details={"field": f"task.env.{name}"},
                )

    def cwd(self, cwd: str | None) -> str | None:
        """The directory the task starts in: its ``cwd`` resolved, and under a root."""
        if cwd is None:
            return None
        if self.cwd_roots is None:
            raise Forbidden(
                "task.cwd may not be chosen while providers.local.allowed_commands is set"
                " and providers.local.allowed_cwd is not",
                details={"field": "task.cwd"},
            )
        real = os.path.realpath(cwd)
        for root in self.cwd_roots:
            if real == root or real.startswith(root.rstrip("/") + "/"):
                return real
        raise Forbidden(
            f"task.cwd {cwd!r} is not under providers.local.allowed_cwd",
            details={"field": "task.cwd"},
        )
