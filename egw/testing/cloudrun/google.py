"""Google's REST conventions as the simulator speaks them: AIP-193 error bodies, page tokens,
ESF's refusal of unknown JSON fields, and the OAuth2 JWT-bearer grant's answers."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
UNAUTHENTICATED_MESSAGE = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie"
    " or other valid authentication credential. See"
    " https://developers.google.com/identity/sign-in/web/devconsole-project."
)
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"


class GoogleError(Exception):
    """An API error, answered as ``{"error": {"code", "message", "status", "details"?}}``."""

    def __init__(
        self, status: int, message: str, details: list[Any] | None = None, name: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.details = status, message, details
        self.name = name or STATUS_NAMES.get(status, "UNKNOWN")

    def response(self) -> web.Response:
        err: dict[str, Any] = {"code": self.status, "message": self.message, "status": self.name}
        if self.details:
            err["details"] = self.details
        headers = (
            {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'}
            if self.status == 401
            else None
        )
        return web.json_response({"error": err}, status=self.status, headers=headers)


def oauth_error(code: str, description: str) -> web.Response:
    return web.json_response({"error": code, "error_description": description}, status=400)


def jwt_claims(assertion: str) -> dict[str, Any]:
    parts = assertion.split(".")
    if len(parts) != 3:
        raise ValueError("not a JWT")
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("bad JWT payload") from exc
    if not isinstance(claims, dict):
        raise TypeError("bad JWT payload")
    return claims


def known_fields(body: Mapping[str, Any], allowed: Mapping[str, set[str]], where: str) -> None:
    """Google rejects unknown JSON fields with 400 (ESF's 'Cannot find field')."""
    for key, value in body.items():
        if key not in allowed.get(where, set()):
            at = f" at '{where}'" if where else ""
            raise GoogleError(
                400, f'Invalid JSON payload received. Unknown name "{key}"{at}: Cannot find field.'
            )
        sub = f"{where}.{key}" if where else key
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, Mapping) and sub in allowed:
                known_fields(item, allowed, sub)


def page(request: web.Request, items: list[Any], scope: str) -> tuple[list[Any], str | None]:
    """Offset paging for Cloud Run list methods (``pageSize``, ``pageToken``)."""
    try:
        size = int(request.query.get("pageSize") or 100)
    except ValueError:
        raise GoogleError(400, "Invalid value for pageSize.") from None
    if size < 0:
        raise GoogleError(400, "page_size must not be negative.")
    size = min(size or 100, 1000)
    start = 0
    token = request.query.get("pageToken")
    if token:
        try:
            data = json.loads(base64.urlsafe_b64decode(token))
            start, ok = int(data["o"]), data["s"] == scope
        except (ValueError, KeyError, TypeError, binascii.Error):
            ok = False
        if not ok:
            raise GoogleError(400, "The page token is invalid.")
    end = start + size
    next_token = (
        base64.urlsafe_b64encode(json.dumps({"o": end, "s": scope}).encode()).decode()
        if end < len(items)
        else None
    )
    return items[start:end], next_token


#: where an entries:list page ended: (timestamp in ns, logName, insertId)
EntryKey = tuple[int, str, str]


def encode_token(after: EntryKey | None, digest: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"a": after, "h": digest}).encode()).decode()


def decode_token(token: Any, digest: str) -> EntryKey | None:
    if not token:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(str(token)))
        if data["h"] != digest:
            raise ValueError("request changed")
        after = data["a"]
        return (int(after[0]), str(after[1]), str(after[2])) if after else None
    except (ValueError, KeyError, TypeError, IndexError, binascii.Error):
        raise GoogleError(400, "The page token is invalid or does not match the request.") from None
