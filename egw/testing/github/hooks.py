"""Webhook deliveries of the GitHub simulator: signed POSTs to one URL, with faults.

Headers follow the ``x-webhooks`` parameters of ``webhooks-workflow.openapi.json``
and tests/samples/github/NOTES.md ("Delivery"). Each delivery is recorded in `Deliverer.deliveries`;
rules can drop, delay or hold deliveries, and any recorded delivery can be sent
again (a redelivery reuses its ``X-GitHub-Delivery`` GUID and body, as GitHub's
does). Deliveries go out one at a time, in order, unless delayed or released
in another order; GitHub itself never retries a failed delivery.

A hook's ``content_type`` is ``json`` or ``form`` (GitHub's default for a new hook:
github/rest-api-description, schema ``webhook-config-content-type``). A ``form`` hook
posts ``application/x-www-form-urlencoded`` with one field, ``payload=<the JSON>``
(github/docs ``data/reusables/webhooks/content_type.md``), and signs that body as posted.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import urllib.parse
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

FORM = "application/x-www-form-urlencoded"


@dataclass
class SentDelivery:
    guid: str
    event: str
    action: str | None
    body: bytes
    headers: dict[str, str]
    run_id: int | None = None
    #: the receiver's HTTP answers, one per attempt (None: connection failed)
    answers: list[int | None] = field(default_factory=list)
    dropped: bool = False

    @property
    def payload(self) -> Any:
        if self.headers.get("Content-Type") == FORM:
            return json.loads(urllib.parse.parse_qs(self.body.decode())["payload"][0])
        return json.loads(self.body)


@dataclass
class Rule:
    kind: str  # drop | delay | hold
    event: str | None
    action: str | None
    count: int
    delay_s: float = 0.0

    def matches(self, event: str, action: str | None) -> bool:
        return (self.event in (None, event)) and (self.action in (None, action))


class Deliverer:
    """Signs and POSTs deliveries to ``url`` (when set) in order."""

    def __init__(
        self,
        *,
        secret: str | None,
        hook_id: int,
        target_id: int,
        time_scale: float,
        content_type: str = "json",
    ):
        if content_type not in ("json", "form"):
            raise ValueError("content_type is json or form")
        self.url: str | None = None
        self.content_type = content_type
        self.secret = secret
        self.hook_id = hook_id
        self.target_id = target_id
        self.time_scale = time_scale
        self.deliveries: list[SentDelivery] = []
        self.rules: list[Rule] = []
        self.held: list[SentDelivery] = []
        self._holding = False
        self._queue: asyncio.Queue[SentDelivery] = asyncio.Queue()
        self._delayed: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        self._worker = asyncio.create_task(self._run())

    async def close(self) -> None:
        for task in [*self._delayed, *([self._worker] if self._worker else [])]:
            task.cancel()
        for task in [*self._delayed, *([self._worker] if self._worker else [])]:
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self._session is not None:
            await self._session.close()

    def build(self, event: str, payload: dict[str, Any], run_id: int | None) -> SentDelivery:
        body = json.dumps(payload, separators=(",", ":")).encode()
        media = "application/json"
        if self.content_type == "form":
            body, media = urllib.parse.urlencode({"payload": body.decode()}).encode(), FORM
        guid = str(uuid.uuid4())
        headers = {
            "Content-Type": media,
            "User-Agent": "GitHub-Hookshot/5e1f2a3",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": guid,
            "X-GitHub-Hook-ID": str(self.hook_id),
            "X-GitHub-Hook-Installation-Target-ID": str(self.target_id),
            "X-GitHub-Hook-Installation-Target-Type": "repository",
        }
        if self.secret:
            key = self.secret.encode()
            headers["X-Hub-Signature"] = "sha1=" + hmac.new(key, body, hashlib.sha1).hexdigest()
            headers["X-Hub-Signature-256"] = (
                "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
            )
        return SentDelivery(guid, event, payload.get("action"), body, headers, run_id)

    def submit(self, delivery: SentDelivery) -> None:
        """Record and send (or drop, delay, hold) one delivery by the rules."""
        self.deliveries.append(delivery)
        for rule in self.rules:
            if rule.count > 0 and rule.matches(delivery.event, delivery.action):
                rule.count -= 1
                if rule.kind == "drop":
                    delivery.dropped = True
                    return
                if rule.kind == "delay":
                    task = asyncio.create_task(self._later(delivery, rule.delay_s))
                    self._delayed.add(task)
                    task.add_done_callback(self._delayed.discard)
                    return
                if rule.kind == "hold":
                    self.held.append(delivery)
                    return
        if self._holding:
            self.held.append(delivery)
        else:
            self._queue.put_nowait(delivery)

    def hold(self) -> None:
        self._holding = True

    def release(self, order: str | Sequence[str] | None = None) -> None:
        """Send held deliveries: in order, ``"reverse"``, or in the given GUID order."""
        self._holding = False
        held, self.held = self.held, []
        if order == "reverse":
            held.reverse()
        elif order is not None and not isinstance(order, str):
            by_guid = {d.guid: d for d in held}
            held = [by_guid.pop(g) for g in order if g in by_guid] + list(by_guid.values())
        for delivery in held:
            self._queue.put_nowait(delivery)

    def resend(self, delivery: SentDelivery) -> None:
        self._queue.put_nowait(delivery)

    async def idle(self) -> None:
        """Wait until no delivery is queued, delayed or on the wire."""
        while self._delayed:
            await asyncio.gather(*list(self._delayed), return_exceptions=True)
        await self._queue.join()

    async def _later(self, delivery: SentDelivery, delay_s: float) -> None:
        await asyncio.sleep(delay_s * self.time_scale)
        self._queue.put_nowait(delivery)

    async def _run(self) -> None:
        while True:
            delivery = await self._queue.get()
            try:
                await self._post(delivery)
            finally:
                self._queue.task_done()

    async def _post(self, delivery: SentDelivery) -> None:
        if self.url is None or self._session is None:
            delivery.answers.append(None)
            return
        try:
            # GitHub gives up after 10 s (handling-failed-webhook-deliveries)
            async with self._session.post(
                self.url,
                data=delivery.body,
                headers=delivery.headers,
                timeout=aiohttp.ClientTimeout(total=10),
            ) as resp:
                await resp.read()
                delivery.answers.append(resp.status)
        except (aiohttp.ClientError, TimeoutError):
            delivery.answers.append(None)
