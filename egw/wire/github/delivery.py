"""A webhook delivery (pure): its ``X-Hub-Signature-256``, and its parsing once verified.

A hook delivers its payload in one of two content types (github/rest-api-description,
schema ``webhook-config-content-type``: "Supported values include ``json`` and ``form``.
The default is ``form``"; github/docs ``data/reusables/webhooks/content_type.md``):
``application/json`` posts the JSON itself; ``application/x-www-form-urlencoded`` posts
``payload=<the JSON, URL-encoded>``. The signature covers the raw body as posted in
both cases (docs: validating-webhook-deliveries: the HMAC of "the request body"), so it
is checked before the form is decoded.
"""

from __future__ import annotations

import hashlib
import hmac
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from egw.errors import InvalidRequest
from egw.wire.github.runs import Job, Run, parse_job, parse_run
from egw.wire.github.values import as_str, header

#: the largest run or job id taken (GitHub's ids are 64-bit integers)
MAX_ID = 2**63 - 1


def sign(secret: str | bytes, body: bytes) -> str:
    """``X-Hub-Signature-256`` for ``body``: ``sha256=`` + hex HMAC-SHA256
    (docs: content/webhooks/using-webhooks/validating-webhook-deliveries.md)."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(secret: str | bytes, body: bytes, header: str | None) -> bool:
    """Constant-time check of the raw body against the signature header."""
    if not header or not secret:
        return False
    return hmac.compare_digest(sign(secret, body).encode(), header.strip().encode())


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """One webhook delivery; ``run``/``job`` are set for workflow_run/workflow_job."""

    event: str
    delivery_id: str
    hook_id: str | None
    action: str | None
    payload: Mapping[str, Any] = field(default_factory=dict)
    run: Run | None = None
    job: Job | None = None
    zen: str | None = None
    #: the environment a workflow_job's ``deployment`` targets (a job waiting for its
    #: protection rules: contracts ``workflow_job/queued.with-deployment.payload.json``)
    environment: str | None = None


#: the media type of a hook configured with ``content_type: form``
FORM = "application/x-www-form-urlencoded"


def _json_bytes(headers: Mapping[str, str], body: bytes) -> bytes:
    """The JSON of a delivery: the body itself, or its ``payload`` field when the hook
    posts a form (by ``Content-Type``; without one, a body that starts ``payload=``)."""
    media = (header(headers, "Content-Type") or "").split(";", 1)[0].strip().lower()
    if media != FORM and (media or not body.startswith(b"payload=")):
        return body
    try:
        fields = urllib.parse.parse_qs(
            body.decode("ascii"), keep_blank_values=True, strict_parsing=True, errors="strict"
        )
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"body is not a form: {exc}") from None
    values = fields.get("payload")
    if not values or len(values) != 1:
        raise InvalidRequest("a form delivery carries exactly one payload field", field="payload")
    return values[0].encode()


def parse_delivery(headers: Mapping[str, str], body: bytes) -> Delivery:
    """Parse a *verified* delivery; raises `InvalidRequest` (400) when malformed.

    Events other than workflow_run/workflow_job/ping are returned with only the
    event name, for the caller to ignore.
    """
    event = header(headers, "X-GitHub-Event")
    if not event:
        raise InvalidRequest("missing X-GitHub-Event header", field="X-GitHub-Event")
    # GitHub always sends a delivery GUID; a hash of the body keeps dedupe working without one
    delivery_id = header(headers, "X-GitHub-Delivery") or (
        "sha256:" + hashlib.sha256(body).hexdigest()
    )
    hook_id = header(headers, "X-GitHub-Hook-ID")
    try:
        # orjson, parsed once: a 19.5 KB delivery decodes several times faster than with
        # json (bench part "webhooks"); it reads integers past 64 bits as floats, which
        # no id GitHub sends is (ids past MAX_ID are refused below either way)
        payload = orjson.loads(_json_bytes(headers, body))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"body is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise InvalidRequest("body must be a JSON object")
    try:
        run = parse_run(payload.get("workflow_run")) if event == "workflow_run" else None
        job = parse_job(payload.get("workflow_job")) if event == "workflow_job" else None
    except ValueError as exc:  # a number spelled as no number is (such as "--5")
        raise InvalidRequest(f"{event} holds a malformed number: {exc}") from None
    # the ids are 64-bit integers upstream, in URLs and in the store: nothing else is a run
    ids = {"workflow_run.id": run.id} if run else {}
    if job:
        ids |= {"workflow_job.id": job.id, "workflow_job.run_id": job.run_id}
    for name, value in ids.items():
        if not 0 < value <= MAX_ID:
            raise InvalidRequest(f"{name} must be a positive 64-bit integer", field=name)
    return Delivery(
        event=event,
        delivery_id=delivery_id,
        hook_id=hook_id,
        action=as_str(payload.get("action")),
        payload=payload,
        run=run,
        job=job,
        zen=as_str(payload.get("zen")) if event == "ping" else None,
        environment=_environment(payload) if job else None,
    )


def _environment(payload: Mapping[str, Any]) -> str | None:
    deployment = payload.get("deployment")
    return as_str(deployment.get("environment")) if isinstance(deployment, Mapping) else None
