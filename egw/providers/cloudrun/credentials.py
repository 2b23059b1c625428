"""`TokenSource`: the bearer token for Google's APIs, static or from google-auth credentials.

A static ``access_token`` (tests), or google-auth credentials (key file, ADC, metadata server).
google-auth is synchronous, so loading and refreshing run in a worker thread, under a lock,
whenever the token is missing or close to expiry (google-auth's own refresh threshold).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from egw.config import CloudRunConfig
from egw.errors import ProviderUnavailable
from egw.wire import cloudrun as wire


class TokenSource:
    """A bearer token: static, or from google-auth credentials refreshed before they expire."""

    def __init__(self, cfg: CloudRunConfig) -> None:
        self._static = cfg.access_token
        self._file = cfg.credentials_file
        self._creds: Any = None
        self._request: Any = None
        self._lock = asyncio.Lock()
        self.kind = (
            "access_token"
            if self._static
            else "credentials_file"
            if self._file
            else "application_default"
        )

    def _load(self) -> Any:
        import google.auth
        import google.auth.transport.requests
        import google.oauth2.credentials
        import google.oauth2.service_account

        if self._file:  # load only the kinds we expect (google-auth's advice for key files)
            kind = json.loads(Path(self._file).read_text(encoding="utf-8")).get("type")
            # google-auth's constructors are not annotated: hence the two ignores below
            if kind == "service_account":
                sa = google.oauth2.service_account.Credentials
                creds: Any = sa.from_service_account_file(  # type: ignore[no-untyped-call]
                    self._file, scopes=[wire.SCOPE]
                )
            elif kind == "authorized_user":
                user = google.oauth2.credentials.Credentials
                creds = user.from_authorized_user_file(  # type: ignore[no-untyped-call]
                    self._file, scopes=[wire.SCOPE]
                )
            else:
                raise ValueError(
                    f"credentials_file: type {kind!r} is not supported (use a"
                    f" service_account or authorized_user file, or ADC)"
                )
        else:  # ADC: GOOGLE_APPLICATION_CREDENTIALS, gcloud's file, or the metadata server
            creds, _ = google.auth.default(scopes=[wire.SCOPE])
        self._request = google.auth.transport.requests.Request()
        return creds

    async def token(self, *, force: bool = False) -> str:
        """The token to send now (``force``: refresh it first, after a 401)."""
        if self._static:
            return self._static
        async with self._lock:
            try:
                if self._creds is None:
                    self._creds = await asyncio.to_thread(self._load)
                if force or not self._creds.valid:
                    await asyncio.to_thread(self._creds.refresh, self._request)
            except Exception as exc:  # google-auth raises its own tree (and OSError, ValueError)
                raise ProviderUnavailable(
                    f"cloud_run: cannot get Google credentials: {type(exc).__name__}: {exc}",
                    provider="cloud_run",
                ) from exc
            return str(self._creds.token)

    def expiry(self) -> str | None:
        when = getattr(self._creds, "expiry", None)
        return when.replace(tzinfo=UTC).isoformat() if isinstance(when, datetime) else None

    def close(self) -> None:
        session = getattr(self._request, "session", None)
        if session is not None:
            session.close()
