"""The submit request as the service takes it, and its fingerprint for ``Idempotency-Key``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitRequest:
    provider: str
    task: Mapping[str, Any]
    name: str | None = None
    labels: Mapping[str, str] | None = None
    timeout_s: float | None = None
    namespace: str | None = None

    def fingerprint(self) -> str:
        """A hash of the request, to tell a replayed Idempotency-Key from a reused one."""
        body = {
            "provider": self.provider,
            "task": self.task,
            "name": self.name,
            "labels": dict(self.labels or {}),
            "timeout_s": self.timeout_s,
        }
        if self.namespace != "default":  # the keys stored before namespaces still match
            body["namespace"] = self.namespace
        raw = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(raw.encode()).hexdigest()
