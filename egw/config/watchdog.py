"""The watchdog keys every provider section shares: cancel confirmation and stuck deadlines."""

from __future__ import annotations

from dataclasses import dataclass

from egw.config.checks import positive
from egw.errors import ConfigError

ON_STUCK = ("flag", "cancel", "resubmit")


@dataclass(frozen=True, slots=True)
class WatchdogConfig:
    """A base of the provider sections (its keys sit beside the provider's own)."""

    #: a cancel upstream has not confirmed after this long is ``cancel_failed`` (null: never)
    cancel_timeout_s: float | None = 120.0
    #: a task still ``pending`` (not accepted upstream) after this long is flagged stuck
    pending_timeout_s: float | None = None
    #: a task still ``queued`` upstream after this long is flagged stuck
    queued_timeout_s: float | None = None
    #: what else happens to a stuck task: ``flag`` only, ``cancel`` it, or ``resubmit`` it
    #: (every provider can: a new attempt replaces the stuck one, see README "Stuck tasks")
    on_stuck: str = "flag"
    #: with ``resubmit``: submissions of one task in all, the first one included
    max_attempts: int = 2

    def check_watchdog(self, path: str) -> None:
        for name in ("cancel_timeout_s", "pending_timeout_s", "queued_timeout_s"):
            value = getattr(self, name)
            if value is not None:
                positive(value, f"{path}.{name}")
        if self.on_stuck not in ON_STUCK:
            raise ConfigError(f"{path}.on_stuck", f"one of {', '.join(ON_STUCK)}")
        if not 1 <= self.max_attempts <= 10:
            raise ConfigError(f"{path}.max_attempts", "must be between 1 and 10")


@dataclass(frozen=True, slots=True)
class LiveWatchdogConfig(WatchdogConfig):
    """The watchdog keys of a provider whose output arrives while the task runs."""

    #: a ``running`` task that wrote no output for this long is flagged stuck
    silent_timeout_s: float | None = None

    def check_watchdog(self, path: str) -> None:
        WatchdogConfig.check_watchdog(self, path)
        if self.silent_timeout_s is not None:
            positive(self.silent_timeout_s, f"{path}.silent_timeout_s")
